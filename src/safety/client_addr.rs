//! The client's address behind trusted proxies (`sse.trusted_proxies`).
//!
//! The peer's address is the client's unless the peer is a trusted proxy. Then the client
//! is the rightmost hop of `X-Forwarded-For` (else of `Forwarded: for=`) that is not itself
//! a trusted proxy: hops to its left were written by the client and prove nothing. A hop
//! that cannot be read ends the walk at the last trusted address. Pure functions, std only.

use std::net::IpAddr;

/// One `trusted_proxies` entry: an address or a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.1`, `10.0.0.0/8`, `::1` or `fd00::/8`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?}: the prefix length must be 0-{max}")),
            },
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    let rest = bits % 8;
    if a.get(..full) != b.get(..full) {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    match (a.get(full), b.get(full)) {
        (Some(x), Some(y)) => x & mask == y & mask,
        _ => false,
    }
}

/// One hop: `1.2.3.4`, `1.2.3.4:80`, `[::1]:80`, `::1`, optionally quoted.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let h = hop.trim().trim_matches('"');
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (a, port) = h.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    a.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The `for=` values of `Forwarded` header values, in order.
fn forwarded_for(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| v.trim().to_owned())
            })
        })
        .collect()
}

/// The client's address: `peer` unless it is trusted, then the rightmost untrusted hop of
/// `X-Forwarded-For` (values in header order), else of `Forwarded`.
pub fn client_addr(
    peer: IpAddr,
    x_forwarded_for: &[String],
    forwarded: &[String],
    trusted: &[Cidr],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<String> = if x_forwarded_for.iter().any(|v| !v.trim().is_empty()) {
        x_forwarded_for
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::to_owned)
            .collect()
    } else {
        forwarded_for(forwarded)
    };
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            break;
        };
        client = canonical(ip);
        if !is_trusted(client) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c = Cidr::parse("10.0.0.0/8").expect("cidr");
        assert!(c.contains(ip("10.1.2.3")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.0.0.1")), "mapped v4");
        assert!(Cidr::parse("192.168.1.7")
            .expect("ip")
            .contains(ip("192.168.1.7")));
        assert!(Cidr::parse("fd00::/8").expect("v6").contains(ip("fd12::1")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("example.com").is_err());
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("all")
            .contains(ip("8.8.8.8")));
        assert!(Cidr::parse("10.0.0.0/12")
            .expect("cidr")
            .contains(ip("10.15.0.1")));
        assert!(!Cidr::parse("10.0.0.0/12")
            .expect("cidr")
            .contains(ip("10.16.0.1")));
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_peers() {
        let lb = vec![Cidr::parse("10.0.0.0/8").expect("cidr")];
        let xff = v(&["203.0.113.9"]);
        assert_eq!(
            client_addr(ip("198.51.100.1"), &xff, &[], &lb),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_addr(ip("10.0.0.5"), &xff, &[], &lb),
            ip("203.0.113.9")
        );
        assert_eq!(client_addr(ip("10.0.0.5"), &xff, &[], &[]), ip("10.0.0.5"));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let lb = vec![Cidr::parse("10.0.0.0/8").expect("cidr")];
        // The client forged the first hop; the proxies appended the rest.
        let xff = v(&["1.1.1.1, 203.0.113.9", "10.0.0.7"]);
        assert_eq!(
            client_addr(ip("10.0.0.5"), &xff, &[], &lb),
            ip("203.0.113.9")
        );
        // Every hop trusted: the leftmost one.
        let xff = v(&["10.0.0.8, 10.0.0.7"]);
        assert_eq!(client_addr(ip("10.0.0.5"), &xff, &[], &lb), ip("10.0.0.8"));
        // An unreadable hop ends the walk at the last trusted address.
        let xff = v(&["203.0.113.9, garbage"]);
        assert_eq!(client_addr(ip("10.0.0.5"), &xff, &[], &lb), ip("10.0.0.5"));
        // Ports and brackets.
        let xff = v(&["203.0.113.9:4711"]);
        assert_eq!(
            client_addr(ip("10.0.0.5"), &xff, &[], &lb),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn forwarded_for_is_read_when_there_is_no_x_forwarded_for() {
        let lb = vec![Cidr::parse("10.0.0.0/8").expect("cidr")];
        let fwd = v(&[r#"for="[2001:db8::1]:443";proto=https, for=10.0.0.9"#]);
        assert_eq!(
            client_addr(ip("10.0.0.5"), &[], &fwd, &lb),
            ip("2001:db8::1")
        );
        let fwd = v(&["for=unknown"]);
        assert_eq!(client_addr(ip("10.0.0.5"), &[], &fwd, &lb), ip("10.0.0.5"));
    }
}
