//! Where each effective value of a config came from — the file, an environment override,
//! or the default — key by key over the schema (`check --sources`), and the key-by-key
//! difference of two effective trees (`check --diff`). Map sections (families, event types)
//! are walked by their entries; lists and free-form values (rules, schemas) are one leaf.

use super::overrides::{apply, Override};
use super::schema::{self, resolve};
use serde_json::Value as Json;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File,
    /// The override variable that set it (or a section around it).
    Env(String),
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File => f.write_str("file"),
            Source::Env(var) => write!(f, "env {var}"),
            Source::Default => f.write_str("default"),
        }
    }
}

/// One leaf key, its effective value (`None`: no value and no fixed default, e.g. a
/// default computed at start) and its source.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaf {
    pub key: String,
    pub value: Option<Json>,
    pub source: Source,
}

/// Every leaf key of the file's tree with `overrides` applied, in schema order.
pub fn leaves(file: &serde_yaml::Value, overrides: &[Override]) -> Vec<Leaf> {
    let mut effective = file.clone();
    // Problems applying were reported when the file was validated; show what applies.
    let _ = apply(&mut effective, overrides);
    let file = serde_json::to_value(file).unwrap_or(Json::Null);
    let effective = serde_json::to_value(&effective).unwrap_or(Json::Null);
    let root = schema::schema();
    let mut out = Vec::new();
    let mut walk = Walk {
        root: &root,
        overrides,
        out: &mut out,
    };
    walk.node(&root, Some(&effective), Some(&file), &mut Vec::new());
    out
}

fn present(v: Option<&Json>) -> Option<&Json> {
    v.filter(|v| !v.is_null())
}

struct Walk<'a> {
    root: &'a Json,
    overrides: &'a [Override],
    out: &'a mut Vec<Leaf>,
}

impl Walk<'_> {
    fn node(
        &mut self,
        node: &Json,
        eff: Option<&Json>,
        file: Option<&Json>,
        path: &mut Vec<String>,
    ) {
        let node = resolve(self.root, node);
        if let Some(props) = node.get("properties").and_then(Json::as_object) {
            for (name, child) in props {
                path.push(name.clone());
                let (e, f) = (
                    present(eff).and_then(|e| e.get(name)),
                    present(file).and_then(|f| f.get(name)),
                );
                self.node(child, e, f, path);
                path.pop();
            }
            return;
        }
        let entries = node.get("additionalProperties").filter(|a| a.is_object());
        if let (Some(child), Some(Json::Object(map))) = (entries, present(eff)) {
            for (name, e) in map {
                path.push(name.clone());
                let f = present(file).and_then(|f| f.get(name));
                self.node(child, Some(e), f, path);
                path.pop();
            }
            return;
        }
        if entries.is_some() {
            return; // an absent map section has no leaves
        }
        self.leaf(node, eff, file, path);
    }

    fn leaf(&mut self, node: &Json, eff: Option<&Json>, file: Option<&Json>, path: &[String]) {
        let env = self
            .overrides
            .iter()
            .rev()
            .find(|o| path.starts_with(&o.path))
            .map(|o| o.var.clone());
        let in_file = file.is_some_and(|f| !f.is_null());
        let source = match env {
            Some(var) => Source::Env(var),
            None if in_file => Source::File,
            None => Source::Default,
        };
        let value = match &source {
            Source::Default => node.get("default").cloned(),
            _ => eff.cloned(),
        };
        self.out.push(Leaf {
            key: path.join("."),
            value,
            source,
        });
    }
}

/// One key whose value differs: `(key, old, new)`, `None` where a side has no such key.
pub type Change = (String, Option<Json>, Option<Json>);

/// The keys whose values differ between two leaf lists, in `new`'s order, then the keys
/// only `old` has.
pub fn diff(old: &[Leaf], new: &[Leaf]) -> Vec<Change> {
    let find = |list: &[Leaf], key: &str| {
        list.iter()
            .find(|l| l.key == key)
            .and_then(|l| l.value.clone())
    };
    let mut out = Vec::new();
    for n in new {
        let o = find(old, &n.key);
        if o != n.value {
            out.push((n.key.clone(), o, n.value.clone()));
        }
    }
    for o in old {
        if !new.iter().any(|n| n.key == o.key) && o.value.is_some() {
            out.push((o.key.clone(), o.value.clone(), None));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_leaf_names_its_source() {
        let file: serde_yaml::Value =
            serde_yaml::from_str("upstream: {address: \"127.0.0.1:1\"}\nsse: {path: /s}").unwrap();
        let o = crate::config::overrides::from_vars([(
            "SSE_SIDECAR__SSE__ENABLED".into(),
            "false".into(),
        )])
        .unwrap();
        let l = leaves(&file, &o);
        let get = |k: &str| l.iter().find(|l| l.key == k).cloned().unwrap();
        assert_eq!(
            get("sse.enabled").source,
            Source::Env("SSE_SIDECAR__SSE__ENABLED".into())
        );
        assert_eq!(get("sse.enabled").value, Some(Json::Bool(false)));
        assert_eq!(get("sse.path").source, Source::File);
        assert_eq!(get("sse.heartbeat_seconds").source, Source::Default);
        assert_eq!(get("sse.heartbeat_seconds").value, Some(Json::from(15)));
        assert_eq!(get("listen").value, Some(Json::from("127.0.0.1:8080")));
    }

    #[test]
    fn diff_lists_changed_added_and_removed_keys() {
        let a: serde_yaml::Value =
            serde_yaml::from_str("upstream: {address: a}\nfamilies: {x: {phase: 1}}").unwrap();
        let b: serde_yaml::Value =
            serde_yaml::from_str("upstream: {address: b}\nfamilies: {y: {phase: 1}}").unwrap();
        let d = diff(&leaves(&a, &[]), &leaves(&b, &[]));
        let keys: Vec<_> = d.iter().map(|c| c.0.as_str()).collect();
        assert!(keys.contains(&"upstream.address"), "{keys:?}");
        assert!(
            keys.contains(&"families.y.phase") && keys.contains(&"families.x.phase"),
            "{keys:?}"
        );
    }
}
