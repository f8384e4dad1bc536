//! Where a command points: a service's address and a channel on it (an HTTP room, a video or a
//! live room), and the paths of the services' routes.

use std::fmt;

use clap::Args;
use shared_model::ChannelId;

use crate::error::CliError;

/// A service's address, `host:port`. Plain HTTP and WebSocket only: put a TLS-terminating proxy's
/// plain side in front of this tool if the service sits behind TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// `host:port`, for connecting and for the `Host` header.
    pub authority: String,
}

impl Base {
    /// Parses `http://host:port`, `ws://host:port` or `host:port` (a trailing path is ignored).
    pub fn parse(raw: &str) -> Result<Self, CliError> {
        let rest = if let Some(rest) = raw
            .strip_prefix("http://")
            .or_else(|| raw.strip_prefix("ws://"))
        {
            rest
        } else if raw.starts_with("https://") || raw.starts_with("wss://") {
            return Err(CliError::Usage(format!(
                "{raw}: TLS is not supported; point the tool at the service's plain address"
            )));
        } else if raw.contains("://") {
            return Err(CliError::Usage(format!(
                "{raw}: expected an http:// or ws:// address"
            )));
        } else {
            raw
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let port_ok = authority
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(CliError::Usage(format!(
                "{raw}: expected an address with a port, like http://127.0.0.1:8081"
            )));
        }
        Ok(Self {
            authority: authority.to_owned(),
        })
    }

    /// The service's default local address for `kind`.
    pub fn default_for(kind: Kind) -> Self {
        Self {
            authority: format!("127.0.0.1:{}", kind.default_port()),
        }
    }

    /// `http://host:port`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.authority)
    }

    /// `ws://host:port`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.authority)
    }
}

impl fmt::Display for Base {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.authority)
    }
}

/// Which of the three services, by what it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A room of `http-danmaku` (polling).
    Room,
    /// A video of `ws-video` (WebSocket, comments pinned to a time).
    Video,
    /// A live room of `ws-stream` (WebSocket broadcast).
    Live,
}

impl Kind {
    /// The service's binary name.
    pub fn service(self) -> &'static str {
        match self {
            Self::Room => "http-danmaku",
            Self::Video => "ws-video",
            Self::Live => "ws-stream",
        }
    }

    /// The service's default port.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Room => 8081,
            Self::Video => 8082,
            Self::Live => 8083,
        }
    }

    /// A word for messages: "room", "video" or "live room".
    pub fn noun(self) -> &'static str {
        match self {
            Self::Room => "room",
            Self::Video => "video",
            Self::Live => "live room",
        }
    }
}

/// A channel on a service: what `send` and `tail` talk to.
#[derive(Debug, Clone)]
pub struct Target {
    /// Which service.
    pub kind: Kind,
    /// The room or video id.
    pub channel: ChannelId,
    /// The service's address.
    pub base: Base,
}

impl Target {
    /// The WebSocket path of a video or live room, with `query` (already encoded) appended.
    pub fn ws_path(&self, query: &str) -> String {
        let path = match self.kind {
            Kind::Video => format!("/ws/videos/{}", self.channel),
            Kind::Live | Kind::Room => format!("/ws/live/{}", self.channel),
        };
        if query.is_empty() {
            path
        } else {
            format!("{path}?{query}")
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} at {}", self.kind.noun(), self.channel, self.base)
    }
}

/// The channel flags shared by `send` and `tail`: exactly one of `--room`, `--video`, `--live`,
/// and the service's address when it is not the default.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// A room of the HTTP service (http-danmaku, default address 127.0.0.1:8081).
    #[arg(long, value_name = "ROOM", group = "channel")]
    pub room: Option<String>,
    /// A video of the video service (ws-video, default address 127.0.0.1:8082).
    #[arg(long, value_name = "VIDEO", group = "channel")]
    pub video: Option<String>,
    /// A live room of the live service (ws-stream, default address 127.0.0.1:8083).
    #[arg(long, value_name = "ROOM", group = "channel")]
    pub live: Option<String>,
    /// The service's address (http://host:port or ws://host:port); the default is the chosen
    /// service's local default port.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

impl TargetArgs {
    /// The target these flags name. clap's group makes sure at most one channel flag is given.
    pub fn resolve(&self) -> Result<Target, CliError> {
        let (kind, raw) = match (&self.room, &self.video, &self.live) {
            (Some(room), None, None) => (Kind::Room, room),
            (None, Some(video), None) => (Kind::Video, video),
            (None, None, Some(live)) => (Kind::Live, live),
            _ => {
                return Err(CliError::Usage(
                    "name exactly one channel: --room ROOM, --video VIDEO or --live ROOM".into(),
                ));
            }
        };
        let channel = ChannelId::parse(raw)
            .map_err(|e| CliError::Usage(format!("{raw:?}: {}", e.message)))?;
        let base = match &self.url {
            Some(url) => Base::parse(url)?,
            None => Base::default_for(kind),
        };
        Ok(Target {
            kind,
            channel,
            base,
        })
    }
}

/// Percent-encodes `raw` for a query-string value (everything but RFC 3986's unreserved
/// characters).
pub fn encode_query_value(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_accepts_http_ws_and_bare_addresses() {
        for raw in [
            "http://127.0.0.1:8081",
            "ws://127.0.0.1:8081/ws/live/x",
            "127.0.0.1:8081",
        ] {
            assert_eq!(
                Base::parse(raw).unwrap().authority,
                "127.0.0.1:8081",
                "{raw}"
            );
        }
        assert_eq!(
            Base::parse("http://localhost:9/").unwrap().http_url(),
            "http://localhost:9"
        );
    }

    #[test]
    fn base_refuses_tls_and_missing_ports() {
        for raw in [
            "https://example.com:443",
            "wss://x:1",
            "ftp://x:1",
            "http://host",
            "http://:80",
        ] {
            assert!(matches!(Base::parse(raw), Err(CliError::Usage(_))), "{raw}");
        }
    }

    #[test]
    fn target_needs_a_valid_channel_and_defaults_the_port_by_service() {
        let args = TargetArgs {
            room: None,
            video: None,
            live: Some("lobby".into()),
            url: None,
        };
        let target = args.resolve().unwrap();
        assert_eq!(target.kind, Kind::Live);
        assert_eq!(target.base.authority, "127.0.0.1:8083");
        assert_eq!(target.ws_path("name=ann"), "/ws/live/lobby?name=ann");
        let bad = TargetArgs {
            room: Some("no spaces".into()),
            live: None,
            ..args.clone()
        };
        assert!(matches!(bad.resolve(), Err(CliError::Usage(_))));
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode_query_value("ann"), "ann");
        assert_eq!(encode_query_value("a b&c=弹"), "a%20b%26c%3D%E5%BC%B9");
    }
}
