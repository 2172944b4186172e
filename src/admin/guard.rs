//! Who may talk to the admin listener (CSRF and DNS-rebinding defence). Pure functions over
//! request headers, checked before the token:
//!
//! - `Host` must name this listener: its own IP, any loopback IP or `localhost`, each with the
//!   listener's port (a missing port means 80); when the listener is bound to an unspecified
//!   address (`0.0.0.0`, `[::]`), any IP literal with the listener's port (scrapers and probes
//!   use the address they connect to). Other names only through `admin.allowed_hosts`
//!   (`name` matches that name with any port, `name:port` only that port). A request without
//!   `Host` (HTTP/1.0, never a browser) passes. Otherwise 421.
//! - `Origin`, when present, must be `http://` or `https://` followed by an accepted Host;
//!   `Origin: null` or a foreign origin → 403.
//! - `Sec-Fetch-Site`, when present, must be `same-origin` or `none`: `cross-site` and
//!   `same-site` (another port of the same machine is the same site) → 403.
//! - A POST with a body must be `Content-Type: application/json` (else 415); a bodiless POST
//!   (`POST /admin/reload` from curl) may omit it.

use std::net::{IpAddr, SocketAddr};

/// Why a request is refused: status and a one-line explanation for the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

/// Whether `authority` (a Host value, or the authority of an Origin) names this listener.
pub fn host_allowed(authority: &str, listen: SocketAddr, allowed_hosts: &[String]) -> bool {
    let Some((name, port)) = crate::headers::split_authority(authority) else {
        return false;
    };
    let effective_port = port.unwrap_or(80);
    let listed = allowed_hosts
        .iter()
        .any(|entry| match crate::headers::split_authority(entry) {
            Some((n, None)) => n == name,
            Some((n, Some(p))) => n == name && p == effective_port,
            None => false,
        });
    if listed {
        return true;
    }
    if effective_port != listen.port() {
        return false;
    }
    if name == "localhost" {
        return true;
    }
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip == listen.ip() || listen.ip().is_unspecified(),
        Err(_) => false,
    }
}

/// The Host, Origin and Sec-Fetch-Site rules (see the module header).
pub fn check_request(
    host: Option<&str>,
    origin: Option<&str>,
    fetch_site: Option<&str>,
    listen: SocketAddr,
    allowed_hosts: &[String],
) -> Result<(), Refusal> {
    if let Some(h) = host {
        if !host_allowed(h, listen, allowed_hosts) {
            return Err(Refusal {
                status: 421,
                message: format!(
                    "Host {h:?} is not an address of this admin listener ({listen}): use http://{listen}/ (or http://localhost:{}/), or add the name to admin.allowed_hosts",
                    listen.port()
                ),
            });
        }
    }
    if let Some(o) = origin {
        let authority = o
            .strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"))
            .filter(|a| !a.contains('/'));
        let same = authority.is_some_and(|a| {
            host.is_some_and(|h| h.eq_ignore_ascii_case(a))
                || host_allowed(a, listen, allowed_hosts)
        });
        if !same {
            return Err(Refusal {
                status: 403,
                message: format!(
                    "cross-origin request refused: Origin {o:?} is not this admin listener's own origin"
                ),
            });
        }
    }
    if let Some(site) = fetch_site {
        let site = site.trim();
        if !(site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none")) {
            return Err(Refusal {
                status: 403,
                message: format!(
                    "cross-site request refused (Sec-Fetch-Site: {site}): open the dashboard from the admin listener itself"
                ),
            });
        }
    }
    Ok(())
}

/// The Content-Type rule for a POST: `application/json` (parameters allowed), or nothing
/// at all when the body is empty.
pub fn check_content_type(content_type: Option<&str>, body_empty: bool) -> Result<(), Refusal> {
    let json = content_type.is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if json || (content_type.is_none() && body_empty) {
        return Ok(());
    }
    Err(Refusal {
        status: 415,
        message: format!(
            "the body must be JSON sent with Content-Type: application/json (got {})",
            content_type.map_or("no Content-Type".to_string(), |c| format!("{c:?}"))
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn hosts_of_a_loopback_listener() {
        let l = addr("127.0.0.1:9090");
        for ok in [
            "127.0.0.1:9090",
            "localhost:9090",
            "LOCALHOST:9090",
            "[::1]:9090",
        ] {
            assert!(host_allowed(ok, l, &[]), "{ok}");
        }
        for bad in [
            "evil.example:9090",
            "127.0.0.1:9091",
            "127.0.0.1",
            "localhost",
            "10.0.0.5:9090",
            "127.0.0.1:9090/x",
            "",
            "127.0.0.1:",
            "::1:9090",
            "127.0.0.1:99999",
        ] {
            assert!(!host_allowed(bad, l, &[]), "{bad}");
        }
    }

    #[test]
    fn hosts_of_an_unspecified_listener_and_allowed_names() {
        let l = addr("0.0.0.0:9090");
        assert!(host_allowed("10.1.2.3:9090", l, &[]));
        assert!(host_allowed("[fd00::1]:9090", l, &[]));
        assert!(!host_allowed("10.1.2.3:80", l, &[]));
        assert!(!host_allowed("pod.internal:9090", l, &[]));
        let allowed = vec!["admin.example.com".to_string(), "ops.local:8443".into()];
        assert!(host_allowed("admin.example.com", l, &allowed));
        assert!(host_allowed("Admin.Example.com:443", l, &allowed));
        assert!(host_allowed("ops.local:8443", l, &allowed));
        assert!(!host_allowed("ops.local:9090", l, &allowed));
        let specific = addr("10.0.0.7:9090");
        assert!(host_allowed("10.0.0.7:9090", specific, &[]));
        assert!(!host_allowed("10.0.0.8:9090", specific, &[]));
    }

    #[test]
    fn origin_and_fetch_site() {
        let l = addr("127.0.0.1:9090");
        let h = Some("127.0.0.1:9090");
        assert!(check_request(
            h,
            Some("http://127.0.0.1:9090"),
            Some("same-origin"),
            l,
            &[]
        )
        .is_ok());
        assert!(check_request(h, None, Some("none"), l, &[]).is_ok());
        assert!(check_request(None, None, None, l, &[]).is_ok());
        let status =
            |host, origin, site| check_request(host, origin, site, l, &[]).map_err(|r| r.status);
        assert_eq!(status(Some("evil.example:9090"), None, None), Err(421));
        assert_eq!(status(h, Some("http://evil.example"), None), Err(403));
        assert_eq!(status(h, Some("null"), None), Err(403));
        assert_eq!(status(h, Some("http://127.0.0.1:9090/x"), None), Err(403));
        assert_eq!(status(h, None, Some("cross-site")), Err(403));
        assert_eq!(status(h, None, Some("same-site")), Err(403));
    }

    #[test]
    fn content_types() {
        assert!(check_content_type(Some("application/json"), false).is_ok());
        assert!(check_content_type(Some("Application/JSON; charset=utf-8"), false).is_ok());
        assert!(check_content_type(None, true).is_ok());
        for (ct, empty) in [
            (Some("text/plain"), false),
            (Some("text/plain"), true),
            (Some("application/x-www-form-urlencoded"), false),
            (Some("multipart/form-data; boundary=x"), false),
            (None, false),
        ] {
            assert_eq!(
                check_content_type(ct, empty).map_err(|r| r.status),
                Err(415)
            );
        }
    }
}
