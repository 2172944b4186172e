//! `sse-sidecar learn`: prints learn mode's suggested config fragment from a running
//! sidecar's admin API (`GET /admin/learn/suggested.yaml`), or, with `--into FILE`, that
//! file with the suggestions merged in: a whole config to `check` and reload.

use serde_yaml::{Mapping, Value};
use std::path::Path;
use std::process::ExitCode;

/// `learn --admin URL [--token-env VAR] [--live] [--into FILE]`.
pub fn run(admin: &str, token_env: Option<&str>, live: bool, into: Option<&Path>) -> ExitCode {
    let token = match crate::check::token_from(token_env) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let path = if live {
        "/admin/learn/suggested.yaml?mode=live"
    } else {
        "/admin/learn/suggested.yaml"
    };
    let fragment = match crate::check::admin_get(admin, path, token.as_deref()) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            eprintln!("sse-sidecar: cannot read the suggestions from {admin}: {e}");
            return ExitCode::from(3);
        }
    };
    let Some(base) = into else {
        print!("{fragment}");
        return ExitCode::SUCCESS;
    };
    let text = match std::fs::read_to_string(base) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("sse-sidecar: cannot read {}: {e}", base.display());
            return ExitCode::from(2);
        }
    };
    match merge(&text, &fragment) {
        Ok(merged) => {
            print!("{merged}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "sse-sidecar: cannot merge the suggestions into {}: {e}",
                base.display()
            );
            ExitCode::from(2)
        }
    }
}

const SECTIONS: [&str; 4] = ["families", "event_types", "polling", "authorization"];

/// The base file with the fragment merged in. A base without families, event types or
/// polled routes gets the fragment appended (its comments and the fragment's evidence
/// stay); otherwise entries the base lacks are added (families by name, their rules by
/// `match`, event types by name, polled routes by `match`) and the result is written anew.
pub fn merge(base: &str, fragment: &str) -> Result<String, String> {
    let mut tree: Value = serde_yaml::from_str(base).map_err(|e| format!("not YAML: {e}"))?;
    let add: Value =
        serde_yaml::from_str(fragment).map_err(|e| format!("the suggestions are not YAML: {e}"))?;
    let Some(root) = tree.as_mapping_mut() else {
        return Err("the file is not a mapping of sections".into());
    };
    if SECTIONS
        .iter()
        .all(|s| root.get(*s).is_none_or(Value::is_null))
    {
        let sep = if base.ends_with('\n') { "" } else { "\n" };
        return Ok(format!("{base}{sep}\n{fragment}"));
    }
    let empty = Mapping::new();
    let add = add.as_mapping().unwrap_or(&empty);
    merge_by_name(root, add, "families", merge_family);
    merge_by_name(root, add, "event_types", |_, _| {});
    merge_list(root, add, "polling", "routes", "match");
    merge_list(root, add, "authorization", "rules", "topic");
    let text = serde_yaml::to_string(&tree).map_err(|e| e.to_string())?;
    Ok(format!("# Merged by `sse-sidecar learn --into`: review it; the base file's comments are not kept.\n{text}"))
}

/// `section.list` gains the fragment's entries whose `key` it lacks.
fn merge_list(root: &mut Mapping, add: &Mapping, name: &str, list: &str, key: &str) {
    let Some(Value::Sequence(new)) = add.get(name).and_then(|s| s.get(list)).cloned() else {
        return;
    };
    let entries = section(root, name)
        .entry(list.into())
        .or_insert(Value::Sequence(Vec::new()));
    if let Value::Sequence(have) = entries {
        append_missing(have, new, key);
    }
}

/// The mapping under `name`, made if absent.
fn section<'a>(root: &'a mut Mapping, name: &str) -> &'a mut Mapping {
    let v = root
        .entry(name.into())
        .or_insert(Value::Mapping(Mapping::new()));
    if !v.is_mapping() {
        *v = Value::Mapping(Mapping::new());
    }
    v.as_mapping_mut()
        .unwrap_or_else(|| unreachable!("made a mapping above"))
}

fn merge_by_name(root: &mut Mapping, add: &Mapping, name: &str, same: impl Fn(&mut Value, &Value)) {
    let Some(Value::Mapping(new)) = add.get(name) else {
        return;
    };
    let have = section(root, name);
    for (k, v) in new {
        match have.get_mut(k) {
            Some(existing) => same(existing, v),
            None => {
                have.insert(k.clone(), v.clone());
            }
        }
    }
}

/// A family the base has already: the suggested rules it lacks (by `match`) are added.
fn merge_family(existing: &mut Value, new: &Value) {
    let Some(Value::Sequence(new_rules)) = new.get("rules") else {
        return;
    };
    let Some(m) = existing.as_mapping_mut() else {
        return;
    };
    let rules = m
        .entry("rules".into())
        .or_insert(Value::Sequence(Vec::new()));
    if let Value::Sequence(have) = rules {
        append_missing(have, new_rules.clone(), "match");
    }
}

fn append_missing(have: &mut Vec<Value>, new: Vec<Value>, key: &str) {
    for item in new {
        let k = item.get(key).cloned();
        if !have.iter().any(|h| h.get(key).cloned() == k) {
            have.push(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_without_rules_gets_the_fragment_appended_comments_and_all() {
        let base = "# mine\nlisten: \"127.0.0.1:8080\"\nupstream: {address: \"127.0.0.1:3000\"}";
        let frag = "# evidence\nfamilies:\n  cards:\n    mode: shadow\n    rules: []\n";
        let out = merge(base, frag).expect("merge");
        assert!(out.starts_with("# mine\n") && out.ends_with(frag), "{out}");
    }

    #[test]
    fn a_base_with_rules_keeps_them_and_gains_what_it_lacks() {
        let base = "upstream: {address: \"127.0.0.1:3000\"}\nfamilies:\n  cards:\n    rules:\n      - {match: \"PATCH /c/{id}\", event: c.updated}\n";
        let frag = "families:\n  cards:\n    rules:\n      - {match: \"PATCH /c/{id}\", event: other}\n      - {match: \"DELETE /c/{id}\", event: c.deleted}\n  ui:\n    rules: []\npolling:\n  routes:\n    - {match: \"GET /c\", family: cards}\n";
        let out = merge(base, frag).expect("merge");
        let v: Value = serde_yaml::from_str(&out).expect("yaml");
        let rules = v["families"]["cards"]["rules"]
            .as_sequence()
            .expect("rules");
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0]["event"],
            Value::from("c.updated"),
            "the base's own rule wins"
        );
        assert!(v["families"]["ui"].is_mapping());
        assert_eq!(v["polling"]["routes"][0]["match"], Value::from("GET /c"));
    }
}
