//! The names a service answers to, against DNS rebinding.
//!
//! A page on `http://evil.example` can make its own name resolve to 127.0.0.1 and then talk to
//! a service on this machine as if it were its own origin: the browser's same-origin rule sees
//! `evil.example` on both sides. What gives it away is the `Host` header, which still names
//! `evil.example`. So every request must name a host the service answers to
//! ([`AllowedHosts`]), or it is refused with `421 host_not_allowed` before any route runs
//! ([`refuse_other_hosts`]).
//!
//! A service answers to `localhost`, `127.0.0.1`, `[::1]` and its bind address; bound to every
//! address (`0.0.0.0` or `::`), to any IP address, since a client may know the machine by any of
//! its addresses and an address, unlike a name, cannot be rebound to an attacker's page. Other
//! names are listed in `--allowed-hosts`; `*` answers to any (behind a proxy that checks the host
//! itself).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};
use shared_model::ErrorCode;

use crate::config::ServerArgs;
use crate::error::HttpError;

/// One entry of `--allowed-hosts`: a name or address, with or without a port, or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedHost {
    /// `*`: any host.
    Any,
    /// This host (lowercase, an IPv6 address in brackets), on any port unless one is given.
    Name {
        /// The name or address.
        host: String,
        /// The only port answered, if the entry named one.
        port: Option<u16>,
    },
}

impl FromStr for AllowedHost {
    type Err = String;

    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let entry = entry.trim();
        if entry == "*" {
            return Ok(Self::Any);
        }
        // An IPv6 address may be written without brackets here, though not in a Host header.
        if let Ok(ip) = entry.parse::<std::net::Ipv6Addr>() {
            return Ok(Self::Name {
                host: HostPort::ip_text(IpAddr::V6(ip)),
                port: None,
            });
        }
        let HostPort { host, port } = HostPort::parse(entry).ok_or_else(|| {
            format!(
                "{entry:?} is not a host name, with or without a port (such as danmaku.example \
                 or danmaku.example:8081), nor *"
            )
        })?;
        Ok(Self::Name { host, port })
    }
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Name { host, port: None } => f.write_str(host),
            Self::Name {
                host,
                port: Some(port),
            } => write!(f, "{host}:{port}"),
        }
    }
}

/// A `Host` value taken apart: the host, normalised (lowercase, no trailing dot, an IP address
/// in its usual form, IPv6 in brackets), and the port if one was given.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPort {
    host: String,
    port: Option<u16>,
}

impl HostPort {
    /// Parses `name`, `name:port`, `1.2.3.4[:port]` or `[v6][:port]`; `None` for anything else
    /// (a scheme, a path, user info, spaces, an empty name or a bad port).
    fn parse(value: &str) -> Option<Self> {
        let (host, port) = if let Some(rest) = value.strip_prefix('[') {
            let (inside, after) = rest.split_once(']')?;
            let ip: std::net::Ipv6Addr = inside.parse().ok()?;
            (Self::ip_text(IpAddr::V6(ip)), after)
        } else {
            // The port keeps its colon, so `name:` (an empty port) is refused below.
            let name = value.split(':').next().unwrap_or(value);
            let port = &value[name.len()..];
            let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
            let plain = name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            if name.is_empty() || !plain {
                return None;
            }
            let host = match name.parse::<IpAddr>() {
                Ok(ip) => Self::ip_text(ip),
                Err(_) => name,
            };
            (host, port)
        };
        let port = match port {
            "" => None,
            _ => Some(port.strip_prefix(':')?.parse().ok()?),
        };
        Some(Self { host, port })
    }

    /// How an address is written as a host: IPv6 in brackets.
    fn ip_text(ip: IpAddr) -> String {
        match ip {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        }
    }

    /// Whether the host is an IP address rather than a name.
    fn is_ip(&self) -> bool {
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>().is_ok()
    }
}

/// The hosts a service answers to: its own addresses and the `--allowed-hosts` entries.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    entries: Vec<AllowedHost>,
    /// Bound to every address: any IP address is one of the service's own.
    any_address: bool,
}

impl AllowedHosts {
    /// What `localhost`, `127.0.0.1` and `[::1]` are always answered as.
    const LOOPBACK: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

    /// The hosts of a service bound to `127.0.0.1` with nothing listed: its loopback names.
    pub fn loopback() -> Self {
        Self {
            entries: Self::LOOPBACK
                .iter()
                .map(|host| AllowedHost::Name {
                    host: (*host).to_owned(),
                    port: None,
                })
                .collect(),
            any_address: false,
        }
    }

    /// The hosts the settings allow: see [`AllowedHosts::new`].
    pub fn from_args(args: &ServerArgs) -> Self {
        Self::new(args.bind, &args.allowed_hosts)
    }

    /// The loopback names, the `bind` address (any IP address when it is `0.0.0.0` or `::`)
    /// and the `listed` entries.
    pub fn new(bind: IpAddr, listed: &[AllowedHost]) -> Self {
        let mut hosts = Self::loopback();
        if bind.is_unspecified() {
            hosts.any_address = true;
        } else {
            hosts.add(AllowedHost::Name {
                host: HostPort::ip_text(bind),
                port: None,
            });
        }
        for entry in listed {
            hosts.add(entry.clone());
        }
        hosts
    }

    fn add(&mut self, entry: AllowedHost) {
        if !self.entries.contains(&entry) {
            self.entries.push(entry);
        }
    }

    /// Whether `value` (a `Host` header: a name or address, maybe with a port) is a host this
    /// service answers to.
    pub fn allows(&self, value: &str) -> bool {
        if self.entries.contains(&AllowedHost::Any) {
            return true;
        }
        let Some(asked) = HostPort::parse(value) else {
            return false;
        };
        if self.any_address && asked.is_ip() {
            return true;
        }
        self.entries.iter().any(|entry| match entry {
            AllowedHost::Any => true,
            AllowedHost::Name { host, port } => {
                *host == asked.host && port.is_none_or(|port| Some(port) == asked.port)
            }
        })
    }

    /// The host a request names, if it is not one this service answers to (or names none):
    /// what to refuse it for. Both the `Host` header and a host in the request line (an
    /// absolute URI, or HTTP/2's `:authority`) count; forwarding headers do not, since a page
    /// can set those itself.
    fn refusal(&self, req: &ServiceRequest) -> Option<String> {
        let in_header = req.headers().get(header::HOST).map(|value| {
            value
                .to_str()
                .map_or_else(|_| "an unreadable Host".to_owned(), str::to_owned)
        });
        let in_uri = req.uri().authority().map(|a| a.as_str().to_owned());
        if in_header.is_none() && in_uri.is_none() {
            return Some("no host".to_owned());
        }
        in_header
            .into_iter()
            .chain(in_uri)
            .find(|host| !self.allows(host))
    }
}

impl fmt::Display for AllowedHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<String> = self.entries.iter().map(ToString::to_string).collect();
        if self.any_address {
            names.push("any IP address".to_owned());
        }
        f.write_str(&names.join(", "))
    }
}

/// Middleware (for `actix_web::middleware::from_fn`) refusing a request that names a host the
/// service does not answer to with `421 host_not_allowed`, before any route sees it. The hosts
/// are the app's `web::Data<AllowedHosts>`; without it, the loopback names.
pub async fn refuse_other_hosts<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let refused = match req.app_data::<web::Data<AllowedHosts>>() {
        Some(hosts) => hosts.refusal(&req),
        None => AllowedHosts::loopback().refusal(&req),
    };
    let Some(host) = refused else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    // Not at info: a page probing through rebinding could fill the log.
    log::debug!("refused a request for host {host:?}");
    let shown: String = host.chars().take(100).collect();
    let error = HttpError::new(
        ErrorCode::HostNotAllowed,
        format!(
            "this service does not answer to {shown:?}; its operator can add the name to \
             DANMAKU_ALLOWED_HOSTS"
        ),
    );
    Ok(req
        .into_response(error.error_response())
        .map_into_right_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(bind: &str, listed: &[&str]) -> AllowedHosts {
        let listed: Vec<AllowedHost> = listed.iter().map(|e| e.parse().unwrap()).collect();
        AllowedHosts::new(bind.parse().unwrap(), &listed)
    }

    #[test]
    fn host_values_are_normalised() {
        let parsed = |v| HostPort::parse(v).map(|h| (h.host, h.port));
        assert_eq!(
            parsed("LocalHost.:80"),
            Some(("localhost".into(), Some(80)))
        );
        assert_eq!(parsed("[0:0::1]"), Some(("[::1]".into(), None)));
        assert_eq!(parsed("[::1]:8081"), Some(("[::1]".into(), Some(8081))));
        assert_eq!(
            parsed("a-b_c.example"),
            Some(("a-b_c.example".into(), None))
        );
        for bad in [
            "",
            ":80",
            "a.example:",
            "a.example:x",
            "a.example:99999",
            "a.example:1:2",
            "::1",
            "[::1",
            "[::1]x",
            "[evil]",
            "user@a.example",
            "a.example/x",
            "http://a.example",
            "a example",
        ] {
            assert_eq!(parsed(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_loopback_names_and_the_bind_address_are_answered_on_any_port() {
        let hosts = allowed("10.0.0.5", &[]);
        for ok in [
            "localhost",
            "localhost:8081",
            "127.0.0.1:1",
            "[::1]:2",
            "10.0.0.5:8081",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for refused in [
            "evil.example",
            "10.0.0.6",
            "localhost.evil.example",
            "127.0.0.2",
        ] {
            assert!(!hosts.allows(refused), "{refused}");
        }
    }

    #[test]
    fn every_address_is_answered_when_bound_to_all_but_no_other_name() {
        let hosts = allowed("0.0.0.0", &[]);
        assert!(hosts.allows("192.0.2.1:8081"));
        assert!(hosts.allows("[2001:db8::1]"));
        assert!(!hosts.allows("evil.example:8081"));
        assert!(!hosts.allows("0x7f000001"));
    }

    #[test]
    fn listed_names_with_a_port_match_that_port_only_and_star_matches_all() {
        let hosts = allowed("127.0.0.1", &["danmaku.example", "other.example:9"]);
        assert!(hosts.allows("DANMAKU.example:443"));
        assert!(hosts.allows("other.example:9"));
        assert!(!hosts.allows("other.example"));
        assert!(!hosts.allows("other.example:10"));
        assert!(allowed("127.0.0.1", &["*"]).allows("anything.example"));
    }

    #[test]
    fn entries_refuse_what_is_not_a_host() {
        assert_eq!("*".parse(), Ok(AllowedHost::Any));
        assert_eq!(
            "::1".parse(),
            Ok(AllowedHost::Name {
                host: "[::1]".into(),
                port: None
            })
        );
        for bad in ["", "http://a.example", "a.example/", "*.example", "a b"] {
            assert!(bad.parse::<AllowedHost>().is_err(), "{bad:?}");
        }
    }
}
