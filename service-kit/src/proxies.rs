//! Who the client is behind a reverse proxy (`--trusted-proxies`, `DANMAKU_TRUSTED_PROXIES`).
//!
//! A client is its TCP peer address, unless that peer is a proxy the settings trust: then the
//! client is the address the proxy says it forwarded for, from `X-Forwarded-For` or, when that
//! header is absent, RFC 7239 `Forwarded` (`for=`). Budgets, connection caps, wrong check-in
//! codes and the access log all use that one address ([`crate::rate::peer_ip`]).
//!
//! Each proxy appends the address it received the request from to the right of the list, so
//! only the right end is written by proxies the settings trust; whatever stands to the left may
//! have been sent by the client itself. The list is therefore read from the right: addresses of
//! trusted proxies are skipped (a chain of proxies), and the first address that is not a trusted
//! proxy is the client. A client that sends its own `X-Forwarded-For: 1.2.3.4` only adds an
//! entry to the left of the one its proxy appends, and is still known by the latter.
//!
//! - An entry that is not an address (`unknown`, an obfuscated `_name`, garbage) ends the walk:
//!   what stands left of it cannot be vouched for, so the client is the last address read
//!   before it (the peer when it is the rightmost entry).
//! - When every entry is a trusted proxy, the leftmost is the client (a request from inside).
//! - `X-Forwarded-For` wins over `Forwarded` when a request has both: it is the header that
//!   nginx, HAProxy (`option forwardfor`) and most load balancers append, and a proxy that
//!   appends one passes the other through as the client sent it. A proxy that writes only
//!   `Forwarded` must remove the client's `X-Forwarded-For`.
//! - A peer that is not a trusted proxy is the client, whatever the headers say; with no
//!   trusted proxies (the default) the headers are never read.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use actix_web::http::header::{self, HeaderMap, HeaderName};
use ipnet::IpNet;

/// One entry of `--trusted-proxies`: an IP address or a CIDR network, IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy(IpNet);

impl FromStr for TrustedProxy {
    type Err = String;

    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err("an empty entry (to trust no proxy, leave the setting out)".to_owned());
        }
        let net = match entry.parse::<IpNet>() {
            Ok(net) => net.trunc(),
            Err(_) => entry.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
                format!(
                    "{entry:?} is not an IP address or a CIDR network (such as 127.0.0.1, \
                     10.0.0.0/8, ::1 or fd00::/8)"
                )
            })?,
        };
        Ok(Self(net))
    }
}

impl fmt::Display for TrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A single address reads better without its /32 or /128.
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// The proxies whose forwarding headers are believed (see the module docs). Empty by default:
/// every client is its TCP peer. Registered as app data by [`crate::server::serve`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    proxies: Vec<TrustedProxy>,
}

impl TrustedProxies {
    /// Trusts `proxies`.
    pub fn new(proxies: impl IntoIterator<Item = TrustedProxy>) -> Self {
        Self {
            proxies: proxies.into_iter().collect(),
        }
    }

    /// The proxies `--trusted-proxies` names.
    pub fn from_args(args: &crate::config::ServerArgs) -> Self {
        Self::new(args.trusted_proxies.iter().copied())
    }

    /// Whether no proxy is trusted (the headers are never read).
    pub fn is_empty(&self) -> bool {
        self.proxies.is_empty()
    }

    /// Whether `ip` is a trusted proxy. An IPv4 address mapped into IPv6 (a peer of a service
    /// bound to `::`) counts as the IPv4 address.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.proxies
            .iter()
            .any(|TrustedProxy(net)| net.contains(&ip))
    }

    /// The client of a request from `peer` with `headers`: `peer` itself unless it is a trusted
    /// proxy; then the first address, from the right, of the forwarding header that is not a
    /// trusted proxy (see the module docs).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        match forwarded_chain(headers) {
            Some(chain) => self.walk(peer, &chain),
            None => peer,
        }
    }

    /// Reads `chain` (as written, leftmost first; `None` for an entry that is not an address)
    /// from the right, past the trusted proxies; `peer` when its rightmost entry is unreadable.
    fn walk(&self, peer: IpAddr, chain: &[Option<IpAddr>]) -> IpAddr {
        let mut client = peer;
        for hop in chain.iter().rev() {
            let Some(ip) = *hop else { break };
            client = ip.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, proxy) in self.proxies.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{proxy}")?;
        }
        Ok(())
    }
}

/// Reads one line of a forwarding header into its entries (see [`forwarded_chain`]).
type ChainParser = fn(&str) -> Vec<Option<IpAddr>>;

/// The forwarding chain of `headers`, leftmost (the farthest hop) first, `None` for an entry
/// that is not an address: `X-Forwarded-For` if present, else `Forwarded`, else nothing. Several
/// lines of one header make one list, in order.
fn forwarded_chain(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let readers: [(HeaderName, ChainParser); 2] = [
        (header::X_FORWARDED_FOR, parse_x_forwarded_for),
        (header::FORWARDED, parse_forwarded),
    ];
    readers.into_iter().find_map(|(name, parse)| {
        let mut lines = headers.get_all(&name).peekable();
        lines.peek()?;
        let mut chain = Vec::new();
        for line in lines {
            match line.to_str() {
                Ok(text) => chain.extend(parse(text)),
                // Not text: one entry nobody can read, which ends the walk here.
                Err(_) => chain.push(None),
            }
        }
        Some(chain)
    })
}

/// The entries of one `X-Forwarded-For` line: addresses separated by commas, IPv6 bare or in
/// brackets, either with or without a port.
fn parse_x_forwarded_for(line: &str) -> Vec<Option<IpAddr>> {
    line.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(parse_node)
        .collect()
}

/// The `for=` of each element of one `Forwarded` line (RFC 7239): elements separated by commas,
/// pairs by semicolons, values a token or a quoted string (`for="[2001:db8::1]:4711"`). An
/// element without exactly one `for` is an entry that is not an address.
fn parse_forwarded(line: &str) -> Vec<Option<IpAddr>> {
    split_unquoted(line, ',')
        .into_iter()
        .filter(|element| !element.trim().is_empty())
        .map(|element| {
            let mut fors = split_unquoted(element, ';').into_iter().filter_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| unquote(value.trim()))
            });
            match (fors.next(), fors.next()) {
                (Some(Some(node)), None) => parse_node(&node),
                _ => None,
            }
        })
        .collect()
}

/// `text` cut at each `separator` outside double quotes (a backslash escapes inside them).
fn split_unquoted(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A token as it is, a quoted string without its quotes and escapes; `None` for a quoted string
/// that does not end where it should.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return Some(value.to_owned());
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return chars.as_str().is_empty().then_some(out),
            c => out.push(c),
        }
    }
    None
}

/// The address of a node: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]` or
/// `[2001:db8::1]:4711` (a port may also be RFC 7239's obfuscated `_name`). `None` for anything
/// else: `unknown`, an obfuscated node, a zone id, garbage.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        let (inside, port) = rest.split_once(']')?;
        return (port.is_empty() || is_port(port.strip_prefix(':')?))
            .then(|| inside.parse::<Ipv6Addr>().ok().map(IpAddr::V6))
            .flatten();
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    let (host, port) = node.split_once(':')?;
    is_port(port)
        .then(|| host.parse::<Ipv4Addr>().ok().map(IpAddr::V4))
        .flatten()
}

/// A port number, or an obfuscated one (`_` then letters, digits, `.`, `_` or `-`).
fn is_port(port: &str) -> bool {
    match port.strip_prefix('_') {
        Some(name) => {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        }
        None => port.parse::<u16>().is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn trusting(entries: &str) -> TrustedProxies {
        TrustedProxies::new(entries.split(',').map(|e| e.parse().unwrap()))
    }

    /// A header map with each `(name, value)` line appended in order.
    fn headers(lines: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn entries_are_addresses_or_networks_of_either_family() {
        let parsed = |e: &str| e.parse::<TrustedProxy>().map(|p| p.to_string());
        assert_eq!(parsed("127.0.0.1").unwrap(), "127.0.0.1");
        assert_eq!(parsed(" 10.0.0.0/8 ").unwrap(), "10.0.0.0/8");
        assert_eq!(
            parsed("10.1.2.3/8").unwrap(),
            "10.0.0.0/8",
            "host bits dropped"
        );
        assert_eq!(parsed("::1").unwrap(), "::1");
        assert_eq!(parsed("fd00::/8").unwrap(), "fd00::/8");
        assert!(parsed(" ").unwrap_err().contains("an empty entry"));
        for bad in [
            "localhost",
            "10.0.0.0/33",
            "::1/129",
            "1.2.3",
            "[::1]",
            "10.0.0.0/",
        ] {
            let err = bad.parse::<TrustedProxy>().unwrap_err();
            assert!(
                err.contains("not an IP address or a CIDR network"),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            trusting("127.0.0.1,10.0.0.0/8,::1").to_string(),
            "127.0.0.1, 10.0.0.0/8, ::1"
        );
    }

    #[test]
    fn trust_covers_networks_and_ipv4_mapped_peers() {
        let trusted = trusting("127.0.0.1,10.0.0.0/8,fd00::/8");
        assert!(trusted.trusts(ip("127.0.0.1")));
        assert!(trusted.trusts(ip("10.200.3.4")));
        assert!(
            trusted.trusts(ip("::ffff:10.0.0.1")),
            "a peer of a service on ::"
        );
        assert!(trusted.trusts(ip("fd12::1")));
        assert!(!trusted.trusts(ip("127.0.0.2")));
        assert!(!trusted.trusts(ip("11.0.0.1")));
        assert!(!trusted.trusts(ip("::1")));
        assert!(!TrustedProxies::default().trusts(ip("127.0.0.1")));
    }

    #[test]
    fn nodes_with_ports_brackets_and_ipv6() {
        assert_eq!(parse_node("192.0.2.60"), Some(ip("192.0.2.60")));
        assert_eq!(parse_node("192.0.2.60:4711"), Some(ip("192.0.2.60")));
        assert_eq!(parse_node("192.0.2.60:_hidden"), Some(ip("192.0.2.60")));
        assert_eq!(parse_node("2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_node("[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(parse_node("[2001:db8::1]:4711"), Some(ip("2001:db8::1")));
        assert_eq!(parse_node("::ffff:192.0.2.1"), Some(ip("::ffff:192.0.2.1")));
        for garbage in [
            "unknown",
            "_hidden",
            "",
            "example.com",
            "192.0.2.60:99999",
            "192.0.2.60:",
            "[2001:db8::1]4711",
            "[2001:db8::1",
            "[192.0.2.1]",
            "fe80::1%eth0",
            "1.2.3.4.5",
            "1.2.3.4:80:80",
        ] {
            assert_eq!(parse_node(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn x_forwarded_for_lists_entries_left_to_right() {
        assert_eq!(
            parse_x_forwarded_for(" 203.0.113.7 , 2001:db8::1,[2001:db8::2]:80,, unknown,"),
            [
                Some(ip("203.0.113.7")),
                Some(ip("2001:db8::1")),
                Some(ip("2001:db8::2")),
                None
            ]
        );
        assert!(parse_x_forwarded_for("").is_empty());
    }

    #[test]
    fn forwarded_reads_for_in_each_element_quoted_or_not() {
        assert_eq!(
            parse_forwarded(
                r#"for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711""#
            ),
            [Some(ip("192.0.2.60")), Some(ip("2001:db8:cafe::17"))]
        );
        // A comma or semicolon inside quotes does not split; escapes are undone.
        assert_eq!(
            parse_forwarded(r#"by="a,b;c";for="198.51.100.\1", for = "192.0.2.1:80""#),
            [Some(ip("198.51.100.1")), Some(ip("192.0.2.1"))]
        );
        assert_eq!(
            parse_forwarded(r#"for=unknown, for="_secret", proto=https, for=1.2.3.4;for=5.6.7.8"#),
            [None, None, None, None],
            "unknown, obfuscated, no for, two fors"
        );
        assert_eq!(
            parse_forwarded(r#"for="[2001:db8::1]:4711, for=192.0.2.1"#),
            [None],
            "an unterminated quote swallows the rest"
        );
        assert_eq!(parse_forwarded(r#"for="192.0.2.1"x"#), [None]);
        assert!(parse_forwarded(" , ").is_empty());
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let spoofed = headers(&[
            ("x-forwarded-for", b"203.0.113.7"),
            ("forwarded", b"for=203.0.113.8"),
        ]);
        assert_eq!(
            TrustedProxies::default().client(ip("127.0.0.1"), &spoofed),
            ip("127.0.0.1")
        );
        assert_eq!(
            trusting("10.0.0.0/8").client(ip("127.0.0.1"), &spoofed),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn the_chain_is_walked_from_the_right_past_trusted_proxies() {
        let trusted = trusting("127.0.0.1,10.0.0.0/8,fd00::/8");
        let peer = ip("127.0.0.1");
        let client = |lines: &[(&str, &[u8])]| trusted.client(peer, &headers(lines));
        assert_eq!(client(&[]), peer, "no header: the peer");
        assert_eq!(
            client(&[("x-forwarded-for", b"203.0.113.7")]),
            ip("203.0.113.7")
        );
        assert_eq!(
            client(&[("x-forwarded-for", b"198.51.100.66, 203.0.113.7")]),
            ip("203.0.113.7"),
            "what the client wrote itself is left of what its proxy appended"
        );
        assert_eq!(
            client(&[(
                "x-forwarded-for",
                b"198.51.100.66, 203.0.113.7, 10.1.1.1, fd00::5"
            )]),
            ip("203.0.113.7"),
            "a chain of trusted proxies is skipped"
        );
        assert_eq!(
            client(&[
                ("x-forwarded-for", b"198.51.100.66"),
                ("x-forwarded-for", b"203.0.113.7, 10.1.1.1"),
            ]),
            ip("203.0.113.7"),
            "several lines make one list"
        );
        assert_eq!(
            client(&[("x-forwarded-for", b"10.0.0.9, 10.1.1.1")]),
            ip("10.0.0.9"),
            "all trusted: the leftmost"
        );
        assert_eq!(
            client(&[("x-forwarded-for", b"[2001:db8::1]:4711")]),
            ip("2001:db8::1")
        );
        assert_eq!(
            client(&[("x-forwarded-for", b"::ffff:203.0.113.7")]),
            ip("203.0.113.7"),
            "an IPv4-mapped address is its IPv4 address"
        );
    }

    #[test]
    fn unreadable_entries_end_the_walk_at_the_last_address_read() {
        let trusted = trusting("127.0.0.1,10.0.0.0/8");
        let peer = ip("127.0.0.1");
        let client = |lines: &[(&str, &[u8])]| trusted.client(peer, &headers(lines));
        for garbage in [
            &b"not an address"[..],
            b"203.0.113.7, unknown",
            b"203.0.113.7, 10.0.0.0/8",
            b"",
            b"\xff\xfe",
        ] {
            assert_eq!(
                client(&[("x-forwarded-for", garbage)]),
                peer,
                "{}",
                String::from_utf8_lossy(garbage)
            );
        }
        assert_eq!(
            client(&[("x-forwarded-for", b"203.0.113.7, garbage, 10.1.1.1")]),
            ip("10.1.1.1"),
            "the proxy that could not say is the client"
        );
        assert_eq!(
            client(&[("forwarded", br#"for="[2001:db8::1"#)]),
            peer,
            "an unterminated quote"
        );
    }

    #[test]
    fn forwarded_counts_only_without_x_forwarded_for() {
        let trusted = trusting("127.0.0.1");
        let peer = ip("127.0.0.1");
        let client = |lines: &[(&str, &[u8])]| trusted.client(peer, &headers(lines));
        assert_eq!(
            client(&[(
                "forwarded",
                br#"for=198.51.100.66, for="[2001:db8:cafe::17]:4711";proto=https"#
            )]),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            client(&[
                ("forwarded", b"for=198.51.100.66"),
                ("x-forwarded-for", b"203.0.113.7"),
            ]),
            ip("203.0.113.7"),
            "X-Forwarded-For wins"
        );
        assert_eq!(
            client(&[
                ("forwarded", b"for=198.51.100.66"),
                ("x-forwarded-for", b"junk")
            ]),
            peer,
            "a present but unreadable X-Forwarded-For still wins"
        );
    }
}
