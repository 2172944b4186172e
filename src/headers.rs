//! Header names and header values every layer shares: which request headers are secrets
//! (never copied into events, logs or checks), the `host[:port]` grammar of `Host` and of
//! an `Origin`'s authority, and the tenant key a `Host` stands for (`upstream.tenancy`), and whether an
//! `Accept-Encoding` takes gzip.

/// The credential headers a check may forward. Nothing else of the subscriber's request
/// reaches the backend.
pub const CREDENTIAL_HEADERS: &[&str] = &["cookie", "authorization"];

/// Request headers that carry credentials: never copied into events or logs, and forwarded
/// only where a rule names them (authorization checks).
pub const SECRET_HEADERS: &[&str] = &["cookie", "authorization", "proxy-authorization"];

/// `host[:port]` or `[v6][:port]` → (lower-case name without brackets, port).
pub fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let a = authority.trim();
    let (name, port) = if let Some(rest) = a.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        match after {
            "" => (v6, None),
            p => (v6, Some(p.strip_prefix(':')?)),
        }
    } else {
        match a.rsplit_once(':') {
            Some((n, p)) if !n.contains(':') => (n, Some(p)),
            Some(_) => return None,
            None => (a, None),
        }
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
    {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    Some((name.to_ascii_lowercase(), port))
}

/// Whether an `admin.allowed_hosts` entry is a `name` or `name:port` (no scheme, no path).
pub fn valid_host_entry(entry: &str) -> bool {
    entry.trim() == entry && split_authority(entry).is_some()
}

/// The tenant a request belongs to under `upstream.tenancy: host`: its `Host` value,
/// normalized — lower-case, brackets of an IPv6 literal kept, the port kept when one was
/// sent (`A.Example` and `a.example` are one tenant; `a.example` and `a.example:8080` are
/// two, since a backend may serve them apart). `None` for a missing or unusable value
/// (empty, a path or userinfo, bad characters, a bad port): such a request is never
/// scoped to a guessed tenant.
pub fn tenant_key(host: Option<&str>) -> Option<String> {
    let raw = host?.trim();
    let (name, port) = split_authority(raw)?;
    let name = if name.contains(':') {
        format!("[{name}]")
    } else {
        name
    };
    Some(match port {
        Some(p) => format!("{name}:{p}"),
        None => name,
    })
}

/// Whether an `Accept-Encoding` value accepts gzip (a `q=0` refuses it).
pub fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|part| {
        let mut it = part.split(';').map(str::trim);
        let coding = it.next().unwrap_or("");
        let refused = it.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_is_read_with_q_values() {
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip("br, gzip;q=0.5"));
        assert!(accepts_gzip("*"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("br, deflate"));
        assert!(!accepts_gzip(""));
    }

    #[test]
    fn tenant_keys_are_lower_case_hosts_and_refuse_garbage() {
        assert_eq!(tenant_key(Some("A.Example")), Some("a.example".into()));
        assert_eq!(
            tenant_key(Some(" a.example:8080 ")),
            Some("a.example:8080".into())
        );
        assert_eq!(tenant_key(Some("[::1]:80")), Some("[::1]:80".into()));
        for bad in [
            "",
            " ",
            "a/b",
            "u@a.example",
            "a.example:x",
            "a.example:99999",
            "a b",
        ] {
            assert_eq!(tenant_key(Some(bad)), None, "{bad:?}");
        }
        assert_eq!(tenant_key(None), None);
    }
}
