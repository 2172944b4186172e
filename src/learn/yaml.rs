//! The suggestions as a config fragment (`families`, `event_types`, `polling`), with the
//! evidence of each suggestion as comments. Written by hand because no YAML library keeps
//! comments; every string is written as a JSON string and every schema as JSON, both of
//! which are valid YAML.

use super::suggest::{Data, Suggestions};
use std::fmt::Write;

fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", inner.join(", "))
}

fn comment(out: &mut String, indent: &str, line: &str) {
    // A comment is one line: no newline from a path or a value may end it.
    let line: String = line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let _ = writeln!(out, "{indent}# {line}");
}

/// `mode`: `shadow` (the safe start) or `live`.
pub fn fragment(s: &Suggestions, mode: &str, observed: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Suggested by sse-sidecar learn mode from {observed} recorded requests."
    );
    let _ = writeln!(
        out,
        "# Review it, merge it into the config, and watch coverage (/admin/status.json): switch a"
    );
    let _ = writeln!(
        out,
        "# family to live when its polled routes read 100 %. See docs/learn.md."
    );
    for note in &s.notes {
        comment(&mut out, "", &format!("note: {note}"));
    }
    families(&mut out, s, mode);
    event_types(&mut out, s);
    polling(&mut out, s);
    authorization(&mut out, s);
    out
}

fn authorization(out: &mut String, s: &Suggestions) {
    if s.authorization.is_empty() {
        return;
    }
    let _ = writeln!(out, "authorization:\n  rules:");
    for (topic, check) in &s.authorization {
        comment(
            out,
            "    ",
            &format!("whoever the app lets {check} may subscribe to {topic}, as when polling"),
        );
        let _ = writeln!(out, "    - topic: {}\n      check: {}", q(topic), q(check));
    }
}

fn families(out: &mut String, s: &Suggestions, mode: &str) {
    if s.rules.is_empty() {
        return;
    }
    let _ = writeln!(out, "families:");
    let mut names: Vec<&String> = s.rules.iter().map(|r| &r.family).collect();
    names.sort();
    names.dedup();
    for family in names {
        let _ = writeln!(out, "  {}:\n    mode: {mode}\n    rules:", q(family));
        for r in s.rules.iter().filter(|r| &r.family == family) {
            comment(out, "      ", &format!("confidence {}", r.confidence));
            for e in &r.evidence {
                comment(out, "      ", e);
            }
            let _ = writeln!(out, "      - match: {}", q(&r.pattern));
            let _ = writeln!(out, "        event: {}", q(&r.event));
            let _ = writeln!(out, "        topics: {}", list(&r.topics));
            let data = match &r.data {
                Data::Response => "response".to_owned(),
                Data::Request => "request".to_owned(),
                Data::Params(names) => {
                    let pairs: Vec<String> = names
                        .iter()
                        .map(|n| format!("{}: {}", q(n), q(&format!("{{{n}}}"))))
                        .collect();
                    format!("{{{}}}", pairs.join(", "))
                }
            };
            let _ = writeln!(out, "        data: {data}");
            if !r.invalidate.is_empty() {
                let keys: Vec<String> = r.invalidate.iter().map(|k| list(k)).collect();
                let _ = writeln!(out, "        invalidate: [{}]", keys.join(", "));
            }
        }
    }
}

fn event_types(out: &mut String, s: &Suggestions) {
    if s.event_types.is_empty() {
        return;
    }
    let _ = writeln!(out, "event_types:");
    for (name, (family, schema)) in &s.event_types {
        comment(
            out,
            "  ",
            "the schema accepts every body seen; tighten it (maxLength, enum) by hand",
        );
        let _ = writeln!(
            out,
            "  {}:\n    family: {}\n    schema: {schema}",
            q(name),
            q(family)
        );
    }
}

fn polling(out: &mut String, s: &Suggestions) {
    if s.polling.is_empty() {
        return;
    }
    let _ = writeln!(out, "polling:\n  routes:");
    for p in &s.polling {
        for e in &p.evidence {
            comment(out, "    ", e);
        }
        if !p.shield {
            comment(
                out,
                "    ",
                "not shielded: a change seen was not explained (or none was seen)",
            );
        }
        let _ = writeln!(out, "    - match: {}", q(&p.pattern));
        let _ = writeln!(out, "      family: {}", q(&p.family));
        let _ = writeln!(out, "      topics: {}", list(&p.topics));
        let _ = writeln!(out, "      shield: {}", p.shield);
    }
}
