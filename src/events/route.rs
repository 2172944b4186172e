//! Route patterns such as `PATCH /api/cards/{id}`: a method and a path whose segments are
//! literals or `{name}` parameters. Matching is pure and allocation-light; it runs for every
//! mutation the proxy sees. `normalize_path` gives the RFC 3986 form of a request path (what
//! a backend resolves `/a/../b` or `//b` to), so callers can tell a canonical path from one
//! that only reaches the same resource.

use std::borrow::Cow;
use std::collections::BTreeMap;

/// Longest pattern accepted in the config.
const MAX_PATTERN_LEN: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A compiled `METHOD /path/{param}` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    pub method: http::Method,
    segments: Vec<Segment>,
    source: String,
}

/// Path parameters captured by a match, by name.
pub type Params = BTreeMap<String, String>;

impl RoutePattern {
    /// Parses `"PATCH /api/cards/{id}"`. Errors say what is wrong in words fit for a config
    /// problem report.
    pub fn parse(s: &str) -> Result<RoutePattern, String> {
        if s.len() > MAX_PATTERN_LEN {
            return Err(format!("longer than {MAX_PATTERN_LEN} characters"));
        }
        let mut parts = s.split_whitespace();
        let (Some(method), Some(path), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err("expected \"METHOD /path\", e.g. \"PATCH /api/cards/{id}\"".into());
        };
        let method = http::Method::from_bytes(method.as_bytes())
            .ok()
            .filter(|m| method.bytes().all(|b| b.is_ascii_uppercase()) && !m.as_str().is_empty())
            .ok_or_else(|| format!("{method:?} is not an upper-case HTTP method"))?;
        if !path.starts_with('/') {
            return Err(format!("path {path:?} must start with '/'"));
        }
        if path.contains('?') || path.contains('#') {
            return Err("path must not contain a query or fragment".into());
        }
        let mut segments = Vec::new();
        let mut seen = Vec::new();
        for seg in path.split('/').skip(1) {
            if let Some(inner) = seg.strip_prefix('{') {
                let name = inner
                    .strip_suffix('}')
                    .ok_or_else(|| format!("segment {seg:?} opens '{{' without closing it"))?;
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!(
                        "parameter {{{name}}} must be letters, digits or '_'"
                    ));
                }
                if matches!(name, "query" | "request" | "response" | "header") {
                    return Err(format!(
                        "parameter name {name:?} is reserved for template sources"
                    ));
                }
                if seen.contains(&name.to_owned()) {
                    return Err(format!("parameter {{{name}}} appears twice"));
                }
                seen.push(name.to_owned());
                segments.push(Segment::Param(name.to_owned()));
            } else if seg.contains('{') || seg.contains('}') {
                return Err(format!(
                    "segment {seg:?}: a parameter must be a whole segment like {{id}}"
                ));
            } else {
                segments.push(Segment::Literal(seg.to_owned()));
            }
        }
        Ok(RoutePattern {
            method,
            segments,
            source: s.to_owned(),
        })
    }

    /// The names of the path parameters, in order.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(p) => Some(p.as_str()),
            Segment::Literal(_) => None,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether a request path could be served under this pattern's first segment: the
    /// first segments are equal, or the pattern's is a parameter.
    pub fn shares_first_segment(&self, path: &str) -> bool {
        let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
        match self.segments.first() {
            Some(Segment::Literal(l)) => l == first,
            Some(Segment::Param(_)) | None => true,
        }
    }

    /// Matches a request's method and path (no query). Parameters must be non-empty; they are
    /// percent-decoded only if the result is valid UTF-8, otherwise kept as sent.
    pub fn matches(&self, method: &http::Method, path: &str) -> Option<Params> {
        if *method != self.method {
            return None;
        }
        let mut params = Params::new();
        let mut parts = path.split('/').skip(1);
        for seg in &self.segments {
            let part = parts.next()?;
            match seg {
                Segment::Literal(l) => {
                    if l != part {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    if part.is_empty() {
                        return None;
                    }
                    params.insert(name.clone(), percent_decode(part));
                }
            }
        }
        if parts.next().is_some() {
            return None;
        }
        Some(params)
    }
}

/// The RFC 3986 normal form of a request path, as backends resolve it: percent-encoded
/// unreserved characters decoded (`%2E` is `.`, `%63` is `c`), dot segments removed
/// (section 5.2.4) and runs of slashes merged. A trailing slash is kept. Borrowed when the
/// path is already canonical; a path not starting with `/` is returned as is.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Cow::Borrowed(path);
    };
    let mut out: Vec<Cow<'_, str>> = Vec::new();
    let mut trailing = false;
    for raw in rest.split('/') {
        let seg = decode_unreserved(raw);
        trailing = true;
        match seg.as_ref() {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            _ => {
                out.push(seg);
                trailing = false;
            }
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if trailing || out.is_empty() {
        s.push('/');
    }
    if s == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(s)
    }
}

/// Decodes the percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`), which
/// RFC 3986 says are equivalent to the characters themselves; other escapes stay.
fn decode_unreserved(seg: &str) -> Cow<'_, str> {
    if !seg.contains('%') {
        return Cow::Borrowed(seg);
    }
    let b = seg.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                    out.push(v as char);
                    i += 3;
                    continue;
                }
            }
        }
        // Copy one whole character (the path may hold non-ASCII text).
        let ch_len = seg[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&seg[i..i + ch_len]);
        i += ch_len;
    }
    Cow::Owned(out)
}

/// Minimal percent-decoding of one path segment (`%2F` stays inside the segment). Written
/// here because it is six lines and the only decoding the sidecar needs.
pub fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

/// Splits a query string into decoded `(key, value)` pairs (`+` is a space).
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let p = RoutePattern::parse("PATCH /api/cards/{id}").expect("valid");
        let m = p
            .matches(&http::Method::PATCH, "/api/cards/42")
            .expect("match");
        assert_eq!(m.get("id").map(String::as_str), Some("42"));
        assert!(p.matches(&http::Method::POST, "/api/cards/42").is_none());
        assert!(p.matches(&http::Method::PATCH, "/api/cards/42/x").is_none());
        assert!(p.matches(&http::Method::PATCH, "/api/cards/").is_none());
        assert!(p.matches(&http::Method::PATCH, "/api/cards").is_none());
        let p = RoutePattern::parse("POST /api/boards/{board}/cards").expect("valid");
        let m = p
            .matches(&http::Method::POST, "/api/boards/b%201/cards")
            .expect("match");
        assert_eq!(m["board"], "b 1");
        assert_eq!(p.param_names().collect::<Vec<_>>(), vec!["board"]);
        assert!(p.shares_first_segment("/api/cards/1"));
        assert!(!p.shares_first_segment("/login"));
        let any = RoutePattern::parse("GET /{tenant}/cards").expect("valid");
        assert!(any.shares_first_segment("/login"));
    }

    #[test]
    fn refuses_bad_patterns() {
        for bad in [
            "",
            "PATCH",
            "patch /x",
            "PATCH x",
            "PATCH /a/{id",
            "PATCH /a/{}",
            "PATCH /a/x{id}",
            "PATCH /a/{id}/{id}",
            "PATCH /a?b",
            "PATCH /a b",
            "PATCH /a/{response}",
        ] {
            assert!(RoutePattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn normalizes_paths_like_a_backend_resolves_them() {
        for (raw, canon) in [
            ("/api/cards/c1", "/api/cards/c1"),
            ("/api/x/../cards/c1", "/api/cards/c1"),
            ("/api/x/%2e%2e/cards/c1", "/api/cards/c1"),
            ("/api/x/%2E%2E/cards/c1", "/api/cards/c1"),
            ("//api/cards/c1", "/api/cards/c1"),
            ("/api//cards/./c1", "/api/cards/c1"),
            ("/api/%63ards/c1", "/api/cards/c1"),
            ("/api/cards/c%201", "/api/cards/c%201"),
            ("/api/cards/a%2Fb", "/api/cards/a%2Fb"),
            ("/api/cards/", "/api/cards/"),
            ("/api/cards/..", "/api/"),
            ("/../..", "/"),
            ("/", "/"),
            ("/caf\u{e9}/%", "/caf\u{e9}/%"),
            ("*", "*"),
        ] {
            assert_eq!(normalize_path(raw), canon, "{raw}");
        }
        assert!(matches!(normalize_path("/api/cards/c1"), Cow::Borrowed(_)));
    }

    #[test]
    fn decodes_queries_and_segments() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%ff"), "%ff");
        assert_eq!(
            parse_query("topics=a%2Cb&x=1+2&flag"),
            vec![
                ("topics".into(), "a,b".into()),
                ("x".into(), "1 2".into()),
                ("flag".into(), "".into())
            ]
        );
    }
}
