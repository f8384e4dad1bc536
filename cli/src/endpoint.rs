//! Where a command points: a service's address and a channel on it (an HTTP room, a video or a
//! live room), and the paths of the services' routes.

use std::fmt;

use clap::Args;
use shared_model::ChannelId;
use url::Url;
use url::form_urlencoded;

use crate::error::CliError;

/// A service's address, `host:port`. Plain HTTP and WebSocket only: put a TLS-terminating proxy's
/// plain side in front of this tool if the service sits behind TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// `host:port`, for connecting and for the `Host` header (an IPv6 host in brackets).
    pub authority: String,
}

/// What [`Base::parse`] accepts, for its error messages.
const EXPECTED_ADDRESS: &str = "expected an address with a port, like http://127.0.0.1:8081";

impl Base {
    /// Parses `http://host:port`, `ws://host:port` or `host:port` (a path, query or fragment is
    /// ignored). The port must be written, even port 80; TLS schemes, other schemes and user
    /// names are refused with a [`CliError::Usage`] saying why.
    pub fn parse(raw: &str) -> Result<Self, CliError> {
        let text = if raw.contains("://") {
            raw.to_owned()
        } else {
            format!("http://{raw}")
        };
        let url = Url::parse(&text)
            .map_err(|e| CliError::Usage(format!("{raw}: {e}; {EXPECTED_ADDRESS}")))?;
        match url.scheme() {
            "http" | "ws" => {}
            "https" | "wss" => {
                return Err(CliError::Usage(format!(
                    "{raw}: TLS is not supported; point the tool at the service's plain address"
                )));
            }
            _ => {
                return Err(CliError::Usage(format!(
                    "{raw}: expected an http:// or ws:// address"
                )));
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(CliError::Usage(format!(
                "{raw}: a user name or password in the address is not supported"
            )));
        }
        match (url.host_str(), written_port(&url, &text)) {
            (Some(host), Some(port)) if !host.is_empty() => Ok(Self {
                authority: format!("{host}:{port}"),
            }),
            _ => Err(CliError::Usage(format!("{raw}: {EXPECTED_ADDRESS}"))),
        }
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

/// The port written in `text`, which parsed as `url`. [`Url::port`] leaves out a port equal to
/// the scheme's default (80 for http and ws), so for those the text tells a written `:80` from
/// no port at all.
fn written_port(url: &Url, text: &str) -> Option<u16> {
    url.port().or_else(|| {
        let (_, rest) = text.split_once("://")?;
        let authority = rest.split(['/', '?', '#']).next()?;
        let (host, port) = authority.rsplit_once(':')?;
        // `[::1]` has colons of its own; a written port follows the closing bracket.
        let is_port = !port.is_empty() && !port.contains(']') && !host.is_empty();
        is_port.then(|| url.port_or_known_default()).flatten()
    })
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
    /// The WebSocket path of a video or live room, with the `query` pairs appended,
    /// form-encoded (as the services' query parsers decode them).
    pub fn ws_path(&self, query: &[(&str, &str)]) -> String {
        let path = match self.kind {
            Kind::Video => format!("/ws/videos/{}", self.channel),
            Kind::Live | Kind::Room => format!("/ws/live/{}", self.channel),
        };
        if query.is_empty() {
            path
        } else {
            let query = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(query)
                .finish();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_accepts_http_ws_and_bare_addresses() {
        for raw in [
            "http://127.0.0.1:8081",
            "ws://127.0.0.1:8081/ws/live/x",
            "127.0.0.1:8081",
            "127.0.0.1:8081/path?q=1#top",
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
        assert_eq!(
            Base::parse("[::1]:8083").unwrap().ws_url(),
            "ws://[::1]:8083"
        );
    }

    #[test]
    fn base_keeps_a_written_default_port() {
        for raw in [
            "http://example.com:80",
            "ws://example.com:80/x",
            "example.com:80",
        ] {
            assert_eq!(
                Base::parse(raw).unwrap().authority,
                "example.com:80",
                "{raw}"
            );
        }
        assert_eq!(
            Base::parse("http://[::1]:80").unwrap().authority,
            "[::1]:80"
        );
    }

    #[test]
    fn base_refuses_tls_and_missing_ports() {
        let message = |raw: &str| match Base::parse(raw) {
            Err(CliError::Usage(message)) => message,
            other => panic!("{raw}: {other:?}"),
        };
        for raw in ["https://example.com:443", "wss://x:1"] {
            assert!(message(raw).contains("TLS is not supported"), "{raw}");
        }
        assert!(message("ftp://x:1").contains("expected an http:// or ws:// address"));
        for raw in [
            "http://host",
            "http://host:",
            "http://[::1]",
            "http://:80",
            "host",
            "http://host:99999",
            "",
        ] {
            assert!(
                message(raw).contains("expected an address with a port"),
                "{raw}"
            );
        }
        assert!(message("http://ann:secret@host:1").contains("user name"));
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
        assert_eq!(
            target.ws_path(&[("name", "ann")]),
            "/ws/live/lobby?name=ann"
        );
        assert_eq!(target.ws_path(&[]), "/ws/live/lobby");
        let bad = TargetArgs {
            room: Some("no spaces".into()),
            live: None,
            ..args.clone()
        };
        assert!(matches!(bad.resolve(), Err(CliError::Usage(_))));
    }

    #[test]
    fn query_values_are_form_encoded() {
        let target = Target {
            kind: Kind::Video,
            channel: ChannelId::parse("clip").unwrap(),
            base: Base::default_for(Kind::Video),
        };
        assert_eq!(
            target.ws_path(&[("name", "a b&c=弹"), ("since", "7")]),
            "/ws/videos/clip?name=a+b%26c%3D%E5%BC%B9&since=7"
        );
    }
}
