//! Templates that fill topics, event data and invalidation keys from a confirmed mutation.
//!
//! A placeholder is `{source}` where source is a path parameter (`{id}`), a query parameter
//! (`{query.page}`), a request or response JSON field (`{request.card.title}`,
//! `{response.items.0.id}`) or a request header (`{header.x-tenant}`). `{{` and `}}` are
//! literal braces. A string that is exactly one placeholder keeps the JSON type of the value
//! (in `data` and `invalidate`); anywhere else the value is rendered as text, and only
//! strings, numbers and booleans can be rendered. A placeholder that cannot be filled makes
//! the whole template fail: an event is never derived half-filled.

use super::route::Params;
use serde_json::Value;

/// Longest template string accepted in the config.
const MAX_TEMPLATE_LEN: usize = 1024;
/// Deepest JSON path accepted (`response.a.b.c...`).
const MAX_PATH_DEPTH: usize = 16;

/// Where a placeholder's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Param(String),
    Query(String),
    Request(Vec<String>),
    Response(Vec<String>),
    Header(String),
}

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::Param(p) => format!("{{{p}}}"),
            Source::Query(q) => format!("{{query.{q}}}"),
            Source::Request(p) => format!("{{request.{}}}", p.join(".")),
            Source::Response(p) => format!("{{response.{}}}", p.join(".")),
            Source::Header(h) => format!("{{header.{h}}}"),
        }
    }

    fn parse(inner: &str) -> Result<Source, String> {
        let (head, rest) = match inner.split_once('.') {
            Some((h, r)) => (h, Some(r)),
            None => (inner, None),
        };
        let check_ident = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        };
        let json_path = |r: &str| -> Result<Vec<String>, String> {
            let parts: Vec<String> = r.split('.').map(str::to_owned).collect();
            if parts.len() > MAX_PATH_DEPTH {
                return Err(format!("JSON path deeper than {MAX_PATH_DEPTH}"));
            }
            if parts.iter().any(|p| !check_ident(p)) {
                return Err(format!("bad JSON path {r:?}"));
            }
            Ok(parts)
        };
        match (head, rest) {
            ("query", Some(q)) if check_ident(q) => Ok(Source::Query(q.to_owned())),
            ("header", Some(h)) if check_ident(h) => {
                let h = h.to_ascii_lowercase();
                if crate::headers::SECRET_HEADERS.contains(&h.as_str()) {
                    return Err(format!(
                        "{{header.{h}}} would copy credentials into events; it is not allowed"
                    ));
                }
                Ok(Source::Header(h))
            }
            ("request", Some(r)) => Ok(Source::Request(json_path(r)?)),
            ("response", Some(r)) => Ok(Source::Response(json_path(r)?)),
            ("request" | "response", None) => Ok(if head == "request" {
                Source::Request(vec![])
            } else {
                Source::Response(vec![])
            }),
            (p, None) if check_ident(p) && !matches!(p, "query" | "header") => {
                Ok(Source::Param(p.to_owned()))
            }
            _ => Err(format!(
                "{{{inner}}} is not a placeholder: use {{param}}, {{query.x}}, {{request.a.b}}, {{response.a.b}} or {{header.name}}"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Lit(String),
    Var(Source),
}

/// A string with placeholders.
#[derive(Debug, Clone, PartialEq)]
pub struct StrTemplate {
    pieces: Vec<Piece>,
}

/// A JSON value whose strings may hold placeholders.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueTemplate {
    /// A string that is exactly one placeholder: the value keeps its JSON type.
    Exact(Source),
    Str(StrTemplate),
    Array(Vec<ValueTemplate>),
    Object(Vec<(String, ValueTemplate)>),
    Const(Value),
}

/// The state of a captured body when templates read it.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Json(Value),
    Empty,
    NotJson,
    TooLarge,
}

impl Body {
    /// Parses a captured body. `overflowed` means the capture cap cut it.
    pub fn from_capture(bytes: &[u8], overflowed: bool) -> Body {
        if overflowed {
            return Body::TooLarge;
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Body::Empty;
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(v) => Body::Json(v),
            Err(_) => Body::NotJson,
        }
    }

    /// Parses a captured answer sent with `Content-Encoding: encoding`: gzip and deflate
    /// are inflated (at most `cap` bytes: past that the body reads as too large); an
    /// encoding the sidecar cannot read (br, zstd) reads as not JSON. The proxy asks the
    /// backend for `identity` on matched mutations, so this is for backends that compress
    /// anyway.
    pub fn from_encoded(
        bytes: &[u8],
        overflowed: bool,
        encoding: Option<&str>,
        cap: usize,
    ) -> Body {
        use std::io::Read;
        let encoding = encoding.map(|e| e.trim().to_ascii_lowercase());
        let mut out = Vec::new();
        let limit = cap as u64 + 1;
        let read = match encoding.as_deref() {
            None | Some("") | Some("identity") => return Body::from_capture(bytes, overflowed),
            _ if overflowed => return Body::TooLarge,
            Some("gzip") | Some("x-gzip") => flate2::read::MultiGzDecoder::new(bytes)
                .take(limit)
                .read_to_end(&mut out),
            Some("deflate") => {
                let zlib = flate2::read::ZlibDecoder::new(bytes)
                    .take(limit)
                    .read_to_end(&mut out);
                if zlib.is_err() {
                    // Some servers send raw deflate under this name.
                    out.clear();
                    flate2::read::DeflateDecoder::new(bytes)
                        .take(limit)
                        .read_to_end(&mut out)
                } else {
                    zlib
                }
            }
            Some(_) => return Body::NotJson,
        };
        match read {
            Ok(n) if n > cap => Body::TooLarge,
            Ok(_) => Body::from_capture(&out, false),
            Err(_) => Body::NotJson,
        }
    }
}

/// Everything a template can read.
pub struct Inputs<'a> {
    pub params: &'a Params,
    pub query: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    pub request: &'a Body,
    pub response: &'a Body,
}

/// Why a template could not be filled; the label is used as a metrics reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FillError {
    #[error("{0} is missing")]
    Missing(String),
    #[error("{0} is not a string, number or boolean")]
    NotScalar(String),
    #[error("the {0} body is not JSON")]
    NotJson(&'static str),
    #[error("the {0} body is empty")]
    EmptyBody(&'static str),
    #[error("the {0} body is larger than the capture limit")]
    TooLarge(&'static str),
}

impl FillError {
    pub fn reason(&self) -> &'static str {
        match self {
            FillError::Missing(_) => "template_missing_field",
            FillError::NotScalar(_) => "template_not_scalar",
            FillError::NotJson(_) => "body_not_json",
            FillError::EmptyBody(_) => "body_empty",
            FillError::TooLarge(_) => "body_over_capture_limit",
        }
    }
}

impl StrTemplate {
    pub fn parse(s: &str) -> Result<StrTemplate, String> {
        if s.len() > MAX_TEMPLATE_LEN {
            return Err(format!(
                "template longer than {MAX_TEMPLATE_LEN} characters"
            ));
        }
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut inner = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => {
                                return Err(format!("unclosed '{{' in {s:?}"));
                            }
                            Some(c) => inner.push(c),
                        }
                    }
                    if !lit.is_empty() {
                        pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                    }
                    pieces.push(Piece::Var(Source::parse(inner.trim())?));
                }
                '}' => {
                    return Err(format!(
                        "unmatched '}}' in {s:?} (write '}}}}' for a brace)"
                    ))
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(StrTemplate { pieces })
    }

    /// The placeholders used, to check them against the route's parameters.
    pub fn sources(&self) -> impl Iterator<Item = &Source> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var(s) => Some(s),
            Piece::Lit(_) => None,
        })
    }

    fn single_source(&self) -> Option<&Source> {
        match self.pieces.as_slice() {
            [Piece::Var(s)] => Some(s),
            _ => None,
        }
    }

    pub fn render(&self, inputs: &Inputs) -> Result<String, FillError> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Lit(l) => out.push_str(l),
                Piece::Var(src) => out.push_str(&scalar_text(src, &lookup(src, inputs)?)?),
            }
        }
        Ok(out)
    }
}

impl ValueTemplate {
    pub fn parse(v: &Value) -> Result<ValueTemplate, String> {
        Ok(match v {
            Value::String(s) => {
                let t = StrTemplate::parse(s)?;
                match t.single_source() {
                    Some(src) => ValueTemplate::Exact(src.clone()),
                    None if t.sources().next().is_none() => ValueTemplate::Const(v.clone()),
                    None => ValueTemplate::Str(t),
                }
            }
            Value::Array(items) => ValueTemplate::Array(
                items
                    .iter()
                    .map(ValueTemplate::parse)
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => ValueTemplate::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), ValueTemplate::parse(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => ValueTemplate::Const(other.clone()),
        })
    }

    pub fn sources(&self) -> Vec<&Source> {
        let mut out = Vec::new();
        self.collect_sources(&mut out);
        out
    }

    fn collect_sources<'a>(&'a self, out: &mut Vec<&'a Source>) {
        match self {
            ValueTemplate::Exact(s) => out.push(s),
            ValueTemplate::Str(t) => out.extend(t.sources()),
            ValueTemplate::Array(items) => items.iter().for_each(|i| i.collect_sources(out)),
            ValueTemplate::Object(fields) => {
                fields.iter().for_each(|(_, v)| v.collect_sources(out))
            }
            ValueTemplate::Const(_) => {}
        }
    }

    pub fn render(&self, inputs: &Inputs) -> Result<Value, FillError> {
        Ok(match self {
            ValueTemplate::Exact(src) => lookup(src, inputs)?,
            ValueTemplate::Str(t) => Value::String(t.render(inputs)?),
            ValueTemplate::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| i.render(inputs))
                    .collect::<Result<_, _>>()?,
            ),
            ValueTemplate::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.render(inputs)?)))
                    .collect::<Result<_, FillError>>()?,
            ),
            ValueTemplate::Const(v) => v.clone(),
        })
    }
}

fn scalar_text(src: &Source, v: &Value) -> Result<String, FillError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(FillError::NotScalar(src.describe())),
    }
}

fn body<'a>(b: &'a Body, which: &'static str) -> Result<&'a Value, FillError> {
    match b {
        Body::Json(v) => Ok(v),
        Body::Empty => Err(FillError::EmptyBody(which)),
        Body::NotJson => Err(FillError::NotJson(which)),
        Body::TooLarge => Err(FillError::TooLarge(which)),
    }
}

fn walk(root: &Value, path: &[String]) -> Option<Value> {
    let mut cur = root;
    for part in path {
        cur = match cur {
            Value::Object(m) => m.get(part)?,
            Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    (!cur.is_null()).then(|| cur.clone())
}

/// Looks a placeholder up; `null` counts as missing.
pub fn lookup(src: &Source, inputs: &Inputs) -> Result<Value, FillError> {
    let missing = || FillError::Missing(src.describe());
    match src {
        Source::Param(p) => inputs
            .params
            .get(p)
            .map(|v| Value::String(v.clone()))
            .ok_or_else(missing),
        Source::Query(q) => inputs
            .query
            .iter()
            .find(|(k, _)| k == q)
            .map(|(_, v)| Value::String(v.clone()))
            .ok_or_else(missing),
        Source::Header(h) => inputs
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(h))
            .map(|(_, v)| Value::String(v.clone()))
            .ok_or_else(missing),
        Source::Request(path) => walk(body(inputs.request, "request")?, path).ok_or_else(missing),
        Source::Response(path) => {
            walk(body(inputs.response, "response")?, path).ok_or_else(missing)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn compressed_answers_are_inflated_within_the_cap() {
        use std::io::Write;
        let json = br#"{"x": 1}"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(json).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zl.write_all(json).expect("zlib");
        let zl = zl.finish().expect("zlib");
        let want = Body::Json(serde_json::json!({"x": 1}));
        assert_eq!(Body::from_encoded(&gz, false, Some("gzip"), 64), want);
        assert_eq!(Body::from_encoded(&zl, false, Some("Deflate"), 64), want);
        assert_eq!(Body::from_encoded(json, false, None, 64), want);
        assert_eq!(
            Body::from_encoded(&gz, false, Some("gzip"), 4),
            Body::TooLarge
        );
        assert_eq!(
            Body::from_encoded(&gz, false, Some("br"), 64),
            Body::NotJson
        );
        assert_eq!(
            Body::from_encoded(b"junk", false, Some("gzip"), 64),
            Body::NotJson
        );
    }

    use super::*;
    use serde_json::json;

    fn inputs<'a>(
        params: &'a Params,
        req: &'a Body,
        resp: &'a Body,
        query: &'a [(String, String)],
        headers: &'a [(String, String)],
    ) -> Inputs<'a> {
        Inputs {
            params,
            query,
            headers,
            request: req,
            response: resp,
        }
    }

    #[test]
    fn fills_every_source() {
        let mut params = Params::new();
        params.insert("id".into(), "7".into());
        let req = Body::Json(json!({"title": "t", "n": 3}));
        let resp = Body::Json(json!({"board_id": 42, "tags": ["a", "b"], "ok": true}));
        let query = vec![("page".to_string(), "2".to_string())];
        let headers = vec![("x-tenant".to_string(), "acme".to_string())];
        let i = inputs(&params, &req, &resp, &query, &headers);
        let t = StrTemplate::parse("board:{response.board_id}:{id}:{query.page}:{header.X-Tenant}:{request.n}:{response.ok}")
            .expect("valid");
        assert_eq!(t.render(&i).expect("fills"), "board:42:7:2:acme:3:true");
        let v = ValueTemplate::parse(
            &json!({"card": "{id}", "tags": "{response.tags}", "x": "#{response.tags.1}", "k": 1}),
        )
        .expect("valid");
        assert_eq!(
            v.render(&i).expect("fills"),
            json!({"card": "7", "tags": ["a", "b"], "x": "#b", "k": 1})
        );
        assert_eq!(
            StrTemplate::parse("{{literal}}")
                .expect("valid")
                .render(&i)
                .expect("fills"),
            "{literal}"
        );
    }

    #[test]
    fn refuses_to_half_fill() {
        let params = Params::new();
        let resp = Body::Json(json!({"obj": {"a": 1}, "nil": null}));
        let i = inputs(&params, &Body::NotJson, &resp, &[], &[]);
        let render = |s: &str| StrTemplate::parse(s).expect("valid").render(&i);
        assert_eq!(
            render("{response.missing}").map_err(|e| e.reason()),
            Err("template_missing_field")
        );
        assert_eq!(
            render("{response.nil}").map_err(|e| e.reason()),
            Err("template_missing_field")
        );
        assert_eq!(
            render("{response.obj}").map_err(|e| e.reason()),
            Err("template_not_scalar")
        );
        assert_eq!(
            render("{request.a}").map_err(|e| e.reason()),
            Err("body_not_json")
        );
        assert_eq!(
            render("{id}").map_err(|e| e.reason()),
            Err("template_missing_field")
        );
        let big = inputs(&params, &Body::TooLarge, &Body::Empty, &[], &[]);
        let t = StrTemplate::parse("{request.a}").expect("valid");
        assert_eq!(
            t.render(&big).map_err(|e| e.reason()),
            Err("body_over_capture_limit")
        );
    }

    #[test]
    fn refuses_bad_templates() {
        for bad in [
            "{",
            "}",
            "{a",
            "{a b}",
            "{query}",
            "{header}",
            "{request.}",
            "{x.y}",
            "{re{x}}",
            "{header.Cookie}",
        ] {
            assert!(StrTemplate::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn classifies_bodies() {
        assert_eq!(Body::from_capture(b"", false), Body::Empty);
        assert_eq!(Body::from_capture(b"{", false), Body::NotJson);
        assert_eq!(Body::from_capture(b"{}", true), Body::TooLarge);
        assert_eq!(
            Body::from_capture(b"{\"a\":1}", false),
            Body::Json(json!({"a": 1}))
        );
    }
}
