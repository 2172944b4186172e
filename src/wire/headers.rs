//! Header names and header values every layer shares: which request headers are secrets
//! (never copied into events, logs or checks), and the `host[:port]` grammar of `Host` and of
//! an `Origin`'s authority.

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
