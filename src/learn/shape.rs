//! The shape of the JSON bodies seen on one route: per field, the kinds of value, how often
//! it was there, a few example values (cut short; none for a redacted field), whether it
//! looks like an enum; and the JSON Schema that every body seen so far satisfies.
//! Bounded: at most `MAX_FIELDS` fields per object, `MAX_DEPTH` levels, `MAX_ITEMS` list
//! items read per body.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

const MAX_FIELDS: usize = 64;
const MAX_DEPTH: usize = 8;
const MAX_ITEMS: usize = 20;
/// Longest example value kept, in characters.
const EXAMPLE_CHARS: usize = 32;
/// Distinct values tracked for the enum-like test.
const ENUM_VALUES: usize = 8;

/// Field names whose values are never kept (substring, lowercase), whatever the config says.
pub const BUILT_IN_REDACTED: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "private_key",
    "access_key",
    "authorization",
    "cookie",
    "credential",
    "email",
    "phone",
    "ssn",
    "card_number",
    "cvv",
    "iban",
];

/// Which field names are redacted.
#[derive(Debug, Clone, Default)]
pub struct Redaction {
    extra: Vec<String>,
}

impl Redaction {
    pub fn new(extra: &[String]) -> Redaction {
        Redaction {
            extra: extra.to_vec(),
        }
    }

    pub fn hides(&self, field: &str) -> bool {
        let f = field.to_lowercase();
        BUILT_IN_REDACTED.iter().any(|r| f.contains(r)) || self.extra.contains(&f)
    }
}

/// Kinds of value, as bits.
const NULL: u8 = 1;
const BOOL: u8 = 2;
const INT: u8 = 4;
const FLOAT: u8 = 8;
const STRING: u8 = 16;
const ARRAY: u8 = 32;
const OBJECT: u8 = 64;

#[derive(Debug, Clone, Default)]
pub struct Shape {
    /// Bodies (or parent values) this was seen in.
    pub seen: u64,
    kinds: u8,
    redacted: bool,
    examples: Vec<String>,
    /// Distinct string values up to `ENUM_VALUES`; `None` once there were more.
    values: Option<Vec<String>>,
    /// More distinct values were seen than tracked (or one too long to track).
    many: bool,
    fields: BTreeMap<String, Shape>,
    /// Times this object was seen (for `required`).
    objects: u64,
    items: Option<Box<Shape>>,
}

impl Shape {
    /// Adds one value. `hide` keeps its examples out (a redacted field, or inside one).
    pub fn add(&mut self, v: &Value, red: &Redaction, samples: usize) {
        self.add_at(v, red, samples, 0, false);
    }

    fn add_at(&mut self, v: &Value, red: &Redaction, samples: usize, depth: usize, hide: bool) {
        self.seen += 1;
        self.redacted |= hide;
        match v {
            Value::Null => self.kinds |= NULL,
            Value::Bool(_) => self.kinds |= BOOL,
            Value::Number(n) => {
                self.kinds |= if n.is_f64() { FLOAT } else { INT };
                self.example(&n.to_string(), samples, hide);
            }
            Value::String(s) => {
                self.kinds |= STRING;
                self.example(s, samples, hide);
                self.count_value(s, hide);
            }
            Value::Array(items) if depth < MAX_DEPTH => {
                self.kinds |= ARRAY;
                let shape = self.items.get_or_insert_with(Default::default);
                for item in items.iter().take(MAX_ITEMS) {
                    shape.add_at(item, red, samples, depth + 1, hide);
                }
            }
            Value::Object(m) if depth < MAX_DEPTH => {
                self.kinds |= OBJECT;
                self.objects += 1;
                for (k, v) in m {
                    if !self.fields.contains_key(k) && self.fields.len() >= MAX_FIELDS {
                        continue;
                    }
                    let hidden = hide || red.hides(k);
                    let field = self.fields.entry(k.clone()).or_default();
                    field.add_at(v, red, samples, depth + 1, hidden);
                }
            }
            Value::Array(_) => self.kinds |= ARRAY,
            Value::Object(_) => self.kinds |= OBJECT,
        }
    }

    fn example(&mut self, text: &str, samples: usize, hide: bool) {
        if hide || self.examples.len() >= samples {
            return;
        }
        let cut: String = text.chars().take(EXAMPLE_CHARS).collect();
        if !self.examples.contains(&cut) {
            self.examples.push(cut);
        }
    }

    fn count_value(&mut self, s: &str, hide: bool) {
        if hide || s.chars().count() > EXAMPLE_CHARS {
            self.values = None;
            self.many = true;
            return;
        }
        let values = self.values.get_or_insert_with(Vec::new);
        if !values.iter().any(|v| v == s) {
            if values.len() >= ENUM_VALUES {
                self.values = None;
                self.many = true;
                return;
            }
            values.push(s.to_owned());
        }
    }

    /// Adds what another shape saw (two routes' bodies under one event type).
    pub fn merge(&mut self, other: &Shape) {
        self.seen += other.seen;
        self.kinds |= other.kinds;
        self.redacted |= other.redacted;
        self.many |= other.many;
        self.objects += other.objects;
        self.values = None;
        for (k, f) in &other.fields {
            if self.fields.contains_key(k) || self.fields.len() < MAX_FIELDS {
                self.fields.entry(k.clone()).or_default().merge(f);
            }
        }
        if let Some(items) = &other.items {
            self.items.get_or_insert_with(Default::default).merge(items);
        }
    }

    /// Whether the bodies were JSON objects with at least one field.
    pub fn has_fields(&self) -> bool {
        self.is_object() && !self.fields.is_empty()
    }

    /// Whether the bodies were JSON objects.
    pub fn is_object(&self) -> bool {
        (self.kinds & !NULL) == OBJECT
    }

    /// A string field with few distinct values over many observations.
    fn enum_like(&self) -> Option<&[String]> {
        let values = self.values.as_deref()?;
        (!self.many && self.seen >= 10 && values.len() * 3 <= self.seen as usize).then_some(values)
    }

    /// The JSON Schema every value added so far satisfies.
    pub fn schema(&self) -> Value {
        let mut types: Vec<&str> = Vec::new();
        let k = self.kinds;
        if k & OBJECT != 0 {
            types.push("object");
        }
        if k & ARRAY != 0 {
            types.push("array");
        }
        if k & STRING != 0 {
            types.push("string");
        }
        // Integers seen so far may be fractions later: "number" keeps such events valid.
        if k & (FLOAT | INT) != 0 {
            types.push("number");
        }
        if k & BOOL != 0 {
            types.push("boolean");
        }
        // A field only ever seen null says nothing of its type: any value is accepted.
        if k & NULL != 0 && !types.is_empty() {
            types.push("null");
        }
        let mut s = Map::new();
        match types.as_slice() {
            [] => {}
            [one] => drop(s.insert("type".into(), json!(one))),
            many => drop(s.insert("type".into(), json!(many))),
        }
        if k & OBJECT != 0 && !self.fields.is_empty() {
            let props: Map<String, Value> = self
                .fields
                .iter()
                .map(|(n, f)| (n.clone(), f.schema()))
                .collect();
            let required: Vec<&String> = self
                .fields
                .iter()
                .filter(|(_, f)| f.seen >= self.objects && (k & !OBJECT) == 0)
                .map(|(n, _)| n)
                .collect();
            s.insert("properties".into(), Value::Object(props));
            if !required.is_empty() {
                s.insert("required".into(), json!(required));
            }
        }
        if let Some(items) = self.items.as_ref().filter(|i| i.seen > 0) {
            s.insert("items".into(), items.schema());
        }
        Value::Object(s)
    }

    /// What `/admin/learn` shows of the field: kinds, presence, examples, enum values.
    pub fn describe(&self) -> Value {
        let mut d = Map::new();
        d.insert("seen".into(), json!(self.seen));
        if self.redacted {
            d.insert("redacted".into(), json!(true));
        } else if !self.examples.is_empty() {
            d.insert("examples".into(), json!(self.examples));
        }
        if let Some(values) = self.enum_like().filter(|_| !self.redacted) {
            d.insert("enum_like".into(), json!(values));
        }
        if !self.fields.is_empty() {
            let fields: Map<String, Value> = self
                .fields
                .iter()
                .map(|(n, f)| (n.clone(), f.describe()))
                .collect();
            d.insert("fields".into(), Value::Object(fields));
        }
        if let Some(items) = &self.items {
            d.insert("items".into(), items.describe());
        }
        Value::Object(d)
    }
}

/// The scalar fields of a body as (template source, text) pairs, two levels deep:
/// `response.board_id`, `request.card.column`. Redacted fields are left out.
pub fn scalars(prefix: &str, body: &Value, red: &Redaction) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Value::Object(m) = body {
        for (k, v) in m.iter().take(MAX_FIELDS) {
            if red.hides(k) || !is_ident(k) {
                continue;
            }
            match v {
                Value::Object(inner) => {
                    for (k2, v2) in inner.iter().take(MAX_FIELDS) {
                        if red.hides(k2) || !is_ident(k2) {
                            continue;
                        }
                        if let Some(t) = super::path::scalar_text(v2) {
                            out.push((format!("{prefix}.{k}.{k2}"), t));
                        }
                    }
                }
                v => {
                    if let Some(t) = super::path::scalar_text(v) {
                        out.push((format!("{prefix}.{k}"), t));
                    }
                }
            }
        }
    }
    out
}

/// The characters a template's JSON path accepts.
pub fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// Every string and number in a body whose field is redacted: kept out of path examples.
pub fn redacted_values(body: &Value, red: &Redaction, out: &mut Vec<String>) {
    fn all(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Array(a) => a.iter().take(MAX_ITEMS).for_each(|x| all(x, out)),
            Value::Object(m) => m.values().take(MAX_FIELDS).for_each(|x| all(x, out)),
            v => out.extend(super::path::scalar_text(v)),
        }
    }
    match body {
        Value::Array(a) => a
            .iter()
            .take(MAX_ITEMS)
            .for_each(|x| redacted_values(x, red, out)),
        Value::Object(m) => {
            for (k, v) in m.iter().take(MAX_FIELDS) {
                if red.hides(k) {
                    all(v, out);
                } else {
                    redacted_values(v, red, out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_accepts_every_body_seen_and_marks_fields_always_there_required() {
        let red = Redaction::new(&["nickname".into()]);
        let mut s = Shape::default();
        s.add(
            &json!({"id": "c1", "title": "a", "n": 1, "password": "hunter2"}),
            &red,
            3,
        );
        s.add(&json!({"id": "c2", "n": 2.5, "nickname": "zed"}), &red, 3);
        let schema = s.schema();
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["required"], json!(["id", "n"]));
        assert_eq!(schema["properties"]["n"]["type"], "number");
        assert_eq!(schema["properties"]["id"]["type"], "string");
        let shown = s.describe().to_string();
        assert!(
            shown.contains("c1") && shown.contains("\"redacted\":true"),
            "{shown}"
        );
        assert!(
            !shown.contains("hunter2") && !shown.contains("zed"),
            "{shown}"
        );
        let mut sc = scalars(
            "response",
            &json!({"id": "c1", "token": "t", "a": {"b": 3}}),
            &red,
        );
        sc.sort();
        assert_eq!(
            sc,
            vec![
                ("response.a.b".into(), "3".into()),
                ("response.id".into(), "c1".into())
            ]
        );
        let mut hidden = Vec::new();
        redacted_values(
            &json!([{"user": {"email": "x@y"}, "nickname": "zed"}]),
            &red,
            &mut hidden,
        );
        hidden.sort();
        assert_eq!(hidden, vec!["x@y", "zed"]);
    }

    #[test]
    fn few_distinct_values_over_many_bodies_look_like_an_enum() {
        let red = Redaction::default();
        let mut s = Shape::default();
        for i in 0..12 {
            s.add(&json!(["todo", "doing", "done"][i % 3]), &red, 3);
        }
        assert_eq!(s.describe()["enum_like"], json!(["todo", "doing", "done"]));
        let mut t = Shape::default();
        for i in 0..12 {
            t.add(&json!(format!("title {i}")), &red, 3);
        }
        assert!(t.describe().get("enum_like").is_none());
    }
}
