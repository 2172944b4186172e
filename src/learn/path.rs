//! Path templates from concrete paths: which segments are parameters (numbers, uuids,
//! prefixed ids like `c12`, long tokens, and any segment whose value the request or the
//! answer carries as a field, which covers slugs) and what to call them (`id` when it
//! equals the body's `id`, `board` when it equals `board_id`, else the singular of the
//! segment before it).

use serde_json::Value;

/// One segment of a learned template.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    Lit(String),
    Param,
}

/// A path cut into a template, with the values and the suggested names of its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub segs: Vec<Seg>,
    pub values: Vec<String>,
    pub names: Vec<String>,
}

/// Whether a segment looks like an identifier whatever the body says.
pub fn is_id_like(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.is_empty() || b.len() > 128 {
        return false;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    if digits == b.len() {
        return true;
    }
    let hex = b.iter().all(|c| c.is_ascii_hexdigit() || *c == b'-');
    if hex && b.len() >= 12 && digits > 0 {
        return true; // uuids, hashes
    }
    // A short letter prefix and a number: c12, s3, msg_42, ord-7.
    let letters = b.iter().take_while(|c| c.is_ascii_alphabetic()).count();
    let rest = &b[letters..];
    let rest = rest
        .strip_prefix(b"_")
        .or_else(|| rest.strip_prefix(b"-"))
        .unwrap_or(rest);
    if (1..=4).contains(&letters) && !rest.is_empty() && rest.iter().all(u8::is_ascii_digit) {
        return true;
    }
    // Long random tokens: letters and digits mixed.
    b.len() >= 16 && digits > 0 && b.iter().all(u8::is_ascii_alphanumeric)
}

/// The text of a scalar JSON value, as a path segment would carry it.
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The top-level scalar fields of a body (of its first element when it is a list).
fn top_fields(body: Option<&Value>) -> Vec<(&str, String)> {
    let obj = match body {
        Some(Value::Object(m)) => Some(m),
        Some(Value::Array(items)) => items.first().and_then(Value::as_object),
        _ => None,
    };
    obj.into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.as_str(), scalar_text(v)?)))
        .collect()
}

/// `boards` → `board`, `activities` → `activity`, `status` stays.
pub fn singular(word: &str) -> String {
    if let Some(stem) = word.strip_suffix("ies") {
        return format!("{stem}y");
    }
    match word.strip_suffix('s') {
        Some(stem) if !stem.is_empty() && !stem.ends_with(['s', 'u']) => stem.to_owned(),
        _ => word.to_owned(),
    }
}

/// A parameter name from a field name: `id` stays, `board_id` / `boardId` → `board`.
fn name_of_field(field: &str) -> String {
    let stem = field
        .strip_suffix("_id")
        .or_else(|| field.strip_suffix("Id"))
        .filter(|s| !s.is_empty())
        .unwrap_or(field);
    sanitize(stem)
}

/// Keeps the characters a template placeholder accepts.
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if s.is_empty() {
        "param".into()
    } else {
        s
    }
}

/// The field carrying a segment's value: one named after the segment before it (`board_id`
/// after `boards`), then `id`, then any: card 1 on board 1 is `/cards/{id}` and
/// `/boards/{board}/cards`, whichever field comes first in the body.
fn carrier<'a>(fields: &[(&'a str, String)], seg: &str, before: Option<&str>) -> Option<&'a str> {
    let equal: Vec<&'a str> = fields
        .iter()
        .filter(|(_, v)| v == seg)
        .map(|(k, _)| *k)
        .collect();
    let named = |k: &&&str| before.is_some_and(|b| name_of_field(k) == sanitize(&singular(b)));
    equal
        .iter()
        .find(named)
        .or_else(|| equal.iter().find(|k| **k == "id"))
        .or_else(|| equal.first())
        .copied()
}

/// Cuts `path` (normalized, no query) into a template, reading the request and answer
/// bodies for segments they carry as fields.
pub fn cut(path: &str, request: Option<&Value>, response: Option<&Value>) -> Cut {
    let mut fields = top_fields(response);
    fields.extend(top_fields(request));
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    let mut out = Cut {
        segs: Vec::with_capacity(parts.len()),
        values: Vec::new(),
        names: Vec::new(),
    };
    for (i, seg) in parts.iter().enumerate() {
        let carried = carrier(&fields, seg, i.checked_sub(1).map(|k| parts[k]));
        let after_lit = i > 0 && !is_id_like(parts[i - 1]);
        if !(is_id_like(seg) || carried.is_some() && after_lit) {
            out.segs.push(Seg::Lit((*seg).to_owned()));
            continue;
        }
        let mut name = match (carried, i) {
            (Some(field), _) => name_of_field(field),
            (None, i) if i > 0 => sanitize(&singular(parts[i - 1])),
            _ => "param".into(),
        };
        if out.names.contains(&name) {
            name = format!("{name}{}", out.names.len() + 1);
        }
        out.segs.push(Seg::Param);
        out.values.push((*seg).to_owned());
        out.names.push(name);
    }
    out
}

/// The template as a rule's `match` path: `/api/cards/{id}`.
pub fn render(segs: &[Seg], names: &[String]) -> String {
    let mut out = String::new();
    let mut names = names.iter();
    for s in segs {
        out.push('/');
        match s {
            Seg::Lit(l) => out.push_str(l),
            Seg::Param => {
                let n = names.next().map_or("param", String::as_str);
                out.push('{');
                out.push_str(n);
                out.push('}');
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The last literal segment: what a route is about (`cards` of `/api/boards/{b}/cards`).
pub fn resource(segs: &[Seg]) -> Option<&str> {
    segs.iter().rev().find_map(|s| match s {
        Seg::Lit(l) => Some(l.as_str()),
        Seg::Param => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identifiers_are_told_from_words() {
        for id in [
            "12",
            "c12",
            "s3",
            "msg_42",
            "ord-7",
            "3f2b8c1e-9a4d-4c2e-b1f0-0a1b2c3d4e5f",
        ] {
            assert!(is_id_like(id), "{id}");
        }
        for word in ["api", "cards", "summary", "v2x", "clicks", "general", ""] {
            assert!(!is_id_like(word), "{word}");
        }
    }

    #[test]
    fn segments_carried_by_the_body_are_parameters_named_after_their_field() {
        let c = cut(
            "/api/cards/c12",
            None,
            Some(&json!({"id": "c12", "board_id": "1"})),
        );
        assert_eq!(render(&c.segs, &c.names), "/api/cards/{id}");
        let c = cut(
            "/api/boards/1/cards",
            None,
            Some(&json!({"board_id": "1", "cards": []})),
        );
        assert_eq!(render(&c.segs, &c.names), "/api/boards/{board}/cards");
        assert_eq!(c.values, vec!["1"]);
        // A slug, carried by the answer: a parameter though it is a word.
        let answer = json!({"conversation_id": "general", "messages": []});
        let c = cut("/api/conversations/general/messages", None, Some(&answer));
        assert_eq!(
            render(&c.segs, &c.names),
            "/api/conversations/{conversation}/messages"
        );
        // json-server: a list of rows with a numeric foreign key.
        let c = cut(
            "/boards/1/cards",
            None,
            Some(&json!([{"id": 4, "boardId": 1}])),
        );
        assert_eq!(render(&c.segs, &c.names), "/boards/{board}/cards");
        // Nothing in the body: named after the segment before it.
        let c = cut("/cards/7", None, Some(&json!({})));
        assert_eq!(render(&c.segs, &c.names), "/cards/{card}");
        let c = cut("/api/ui/clicks/summary", None, Some(&json!({"total": 3})));
        assert_eq!(render(&c.segs, &c.names), "/api/ui/clicks/summary");
        assert_eq!(resource(&c.segs), Some("summary"));
    }

    #[test]
    fn singulars() {
        assert_eq!(singular("boards"), "board");
        assert_eq!(singular("activities"), "activity");
        assert_eq!(singular("status"), "status");
        assert_eq!(singular("class"), "class");
    }
}
