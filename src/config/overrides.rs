//! Environment overrides of any config key: `SSE_SIDECAR__` + the path of keys separated by
//! `__` (case-insensitive to the file's snake_case keys; map entries such as family names
//! lowercased), the value parsed as YAML (`false`, `10`, `[a, b]`, `{enabled: false}`).
//! They are applied to the file's YAML tree before it is deserialized, so precedence is
//! env > file > defaults. The variables are read once, at process start (`from_env`, then
//! `install`); every load — the first and each reload — applies that same set, so a reload
//! depends on the file alone. An override of a key the schema does not have is an error
//! naming the variable and the key. Also remembers the effective tree of the configs this
//! process loaded (bounded), for the admin API's `GET /admin/config.json`.

use super::schema::{self, Child};
use super::validate::{parse_str, ConfigError, Problem};
use super::Config;
use serde_yaml::Value;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// The prefix of every override variable.
pub const PREFIX: &str = "SSE_SIDECAR__";

/// How many loaded trees are remembered (the running one and a few reloads back).
const REMEMBERED: usize = 4;

/// One override: the variable, the canonical key path it sets, and the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub var: String,
    pub path: Vec<String>,
    pub value: Value,
}

impl Override {
    /// The key as a YAML path, `sse.enabled`.
    pub fn key(&self) -> String {
        self.path.join(".")
    }
}

/// A variable that cannot be an override, with what was wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message} (hint: {hint})")]
pub struct OverrideError {
    pub var: String,
    pub message: String,
    pub hint: String,
}

fn bad(var: &str, message: String, hint: String) -> OverrideError {
    OverrideError {
        var: var.to_owned(),
        message,
        hint,
    }
}

/// The overrides among this process's environment variables.
pub fn from_env() -> Result<Vec<Override>, Vec<OverrideError>> {
    from_vars(std::env::vars_os())
}

/// The overrides among `vars` (sorted by variable name), or every variable that is wrong.
pub fn from_vars(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Vec<Override>, Vec<OverrideError>> {
    let root = schema::schema();
    let (mut found, mut errors) = (Vec::new(), Vec::new());
    for (name, value) in vars {
        let lossy = name.to_string_lossy().into_owned();
        if !lossy.starts_with(PREFIX) {
            continue;
        }
        let parsed = match (name.to_str(), value.to_str()) {
            (Some(n), Some(v)) => parse_one(&root, n, v),
            _ => Err(bad(
                &lossy,
                "the name or the value is not UTF-8".into(),
                "use UTF-8 text".into(),
            )),
        };
        match parsed {
            Ok(o) => found.push(o),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        errors.sort_by(|a, b| a.var.cmp(&b.var));
        return Err(errors);
    }
    found.sort_by(|a: &Override, b| a.var.cmp(&b.var));
    Ok(found)
}

fn parse_one(root: &serde_json::Value, var: &str, raw: &str) -> Result<Override, OverrideError> {
    let rest = &var[PREFIX.len()..];
    let path = key_path(root, var, rest)?;
    let value = serde_yaml::from_str::<Value>(raw).map_err(|e| {
        bad(
            var,
            format!("the value is not a YAML value ({e})"),
            "quote a string that looks like YAML, e.g. '\"a: b\"'".into(),
        )
    })?;
    Ok(Override {
        var: var.to_owned(),
        path,
        value,
    })
}

/// The canonical key path of `rest` (`SSE__ENABLED` → `sse.enabled`), checked against the
/// schema.
fn key_path(root: &serde_json::Value, var: &str, rest: &str) -> Result<Vec<String>, OverrideError> {
    let mut node = schema::resolve(root, root);
    let mut path: Vec<String> = Vec::new();
    for seg in rest.split("__") {
        if seg.is_empty() {
            return Err(bad(
                var,
                "a key in the name is empty".into(),
                format!("write {PREFIX}SECTION__KEY, keys separated by exactly two underscores"),
            ));
        }
        let here = if path.is_empty() {
            "(top level)".to_owned()
        } else {
            path.join(".")
        };
        match schema::child(node, seg) {
            Ok(Child::Property(name, v)) => {
                path.push(name.to_owned());
                node = schema::resolve(root, v);
            }
            Ok(Child::Entry(v)) => {
                path.push(seg.to_ascii_lowercase());
                node = schema::resolve(root, v);
            }
            Err(known) if known.is_empty() => {
                return Err(bad(
                    var,
                    format!("`{here}` is a value, not a section: it has no key `{seg}`"),
                    format!(
                        "set `{here}` itself with {PREFIX}{}",
                        here.to_uppercase().replace('.', "__")
                    ),
                ))
            }
            Err(known) => {
                let full = path
                    .iter()
                    .cloned()
                    .chain([seg.to_ascii_lowercase()])
                    .collect::<Vec<_>>()
                    .join(".");
                return Err(bad(
                    var,
                    format!(
                        "unknown key `{}` in `{here}` (the config has no `{full}`)",
                        seg.to_ascii_lowercase()
                    ),
                    format!("known keys there: {}", known.join(", ")),
                ));
            }
        }
    }
    Ok(path)
}

static INSTALLED: OnceLock<Vec<Override>> = OnceLock::new();

/// Makes `overrides` the set every later load applies (the first call wins).
pub fn install(overrides: Vec<Override>) {
    let _ = INSTALLED.set(overrides);
}

/// The installed overrides (none before `install`).
pub fn installed() -> &'static [Override] {
    INSTALLED.get().map_or(&[], Vec::as_slice)
}

/// Sets each override in `tree`, creating the mappings on its path; a path through a value
/// that is not a mapping is a problem naming the variable.
pub fn apply(tree: &mut Value, overrides: &[Override]) -> Result<(), Vec<Problem>> {
    let mut problems = Vec::new();
    for o in overrides {
        if let Err(at) = apply_one(tree, o) {
            problems.push(Problem {
                path: at.clone(),
                message: format!(
                    "{} sets `{}`, but `{at}` in the file is not a mapping",
                    o.var,
                    o.key()
                ),
                hint: Some(format!(
                    "remove `{at}` from the file, or set all of it in the variable"
                )),
            });
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn apply_one(tree: &mut Value, o: &Override) -> Result<(), String> {
    let mut cur = tree;
    for (i, seg) in o.path.iter().enumerate() {
        if cur.is_null() {
            *cur = Value::Mapping(serde_yaml::Mapping::new());
        }
        let Value::Mapping(m) = cur else {
            return Err(o.path[..i].join("."));
        };
        let key = Value::String(seg.clone());
        if i + 1 == o.path.len() {
            m.insert(key, o.value.clone());
            return Ok(());
        }
        cur = m.entry(key).or_insert(Value::Null);
    }
    Ok(())
}

/// The file's text as a tree with `overrides` applied, or the problems.
pub fn effective_tree(text: &str, overrides: &[Override]) -> Result<Value, ConfigError> {
    let mut tree: Value = serde_yaml::from_str(text).map_err(|e| {
        ConfigError::Invalid(vec![Problem {
            path: "(file)".into(),
            message: format!("not valid YAML: {e}"),
            hint: None,
        }])
    })?;
    apply(&mut tree, overrides).map_err(ConfigError::Invalid)?;
    Ok(tree)
}

/// Validates `text` with `overrides` applied.
pub fn parse_with(text: &str, overrides: &[Override]) -> Result<(Config, Value), ConfigError> {
    if overrides.is_empty() {
        let cfg = parse_str(text)?;
        let tree = serde_yaml::from_str(text).unwrap_or(Value::Null);
        return Ok((cfg, tree));
    }
    // A text that is not YAML is reported by the parser, as without overrides.
    if serde_yaml::from_str::<Value>(text).is_err() {
        return parse_str(text).map(|c| (c, Value::Null));
    }
    let tree = effective_tree(text, overrides)?;
    let text = serde_yaml::to_string(&tree).unwrap_or_default();
    Ok((parse_str(&text)?, tree))
}

/// Reads and validates a config file with the installed overrides, and remembers its
/// effective tree. Blocks: callers are `main` (before the runtime), the `check` command and
/// the reload, which runs it on the blocking pool.
#[allow(
    clippy::disallowed_methods,
    reason = "never called on a proxy worker (see above)"
)]
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let (cfg, tree) = parse_with(&text, installed())?;
    remember(&cfg.version, &tree);
    Ok(cfg)
}

type Remembered = VecDeque<(String, serde_json::Value)>;

static LOADED: Mutex<Remembered> = Mutex::new(VecDeque::new());

fn remember(version: &str, tree: &Value) {
    let Ok(json) = serde_json::to_value(tree) else {
        return;
    };
    let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    loaded.retain(|(v, _)| v != version);
    if loaded.len() >= REMEMBERED {
        loaded.pop_front();
    }
    loaded.push_back((version.to_owned(), redacted(json)));
}

/// The effective tree (file with overrides applied, secrets redacted) of the config of
/// `version`, if this process loaded it.
pub fn loaded_tree(version: &str) -> Option<serde_json::Value> {
    let loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    loaded
        .iter()
        .find(|(v, _)| v == version)
        .map(|(_, t)| t.clone())
}

/// Hides the password of `store.url` (`redis://user:secret@host` → `redis://user:***@host`).
pub fn redacted(mut tree: serde_json::Value) -> serde_json::Value {
    if let Some(url) = tree.pointer_mut("/store/url") {
        if let Some(s) = url.as_str() {
            *url = serde_json::Value::from(redact_url(s));
        }
    }
    tree
}

fn redact_url(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return s.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://***@{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        list.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn keys_are_case_insensitive_and_values_yaml() {
        let o = from_vars(vars(&[
            ("SSE_SIDECAR__SSE__ENABLED", "false"),
            (
                "SSE_SIDECAR__AUTHORIZATION__FORWARD_HEADERS",
                "[cookie, x-user]",
            ),
            ("SSE_SIDECAR__FAMILIES__CARDS__MODE", "shadow"),
            ("OTHER", "x"),
        ]))
        .unwrap();
        let keys: Vec<_> = o.iter().map(Override::key).collect();
        assert_eq!(
            keys,
            [
                "authorization.forward_headers",
                "families.cards.mode",
                "sse.enabled"
            ]
        );
        assert_eq!(o[2].value, Value::Bool(false));
        let mut tree: Value =
            serde_yaml::from_str("sse: {path: /x}\nfamilies: {cards: {phase: 1}}").unwrap();
        apply(&mut tree, &o).unwrap();
        assert_eq!(tree["sse"]["enabled"], Value::Bool(false));
        assert_eq!(tree["sse"]["path"], Value::from("/x"));
        assert_eq!(tree["families"]["cards"]["mode"], Value::from("shadow"));
    }

    #[test]
    fn unknown_keys_name_the_variable_and_the_key() {
        let e = from_vars(vars(&[("SSE_SIDECAR__SSE__ENABLD", "false")])).unwrap_err();
        assert_eq!(e[0].var, "SSE_SIDECAR__SSE__ENABLD");
        assert!(e[0].message.contains("sse.enabld"), "{}", e[0]);
        assert!(e[0].hint.contains("enabled"), "{}", e[0]);
        let e = from_vars(vars(&[("SSE_SIDECAR__SSE__ENABLED__X", "1")])).unwrap_err();
        assert!(e[0].message.contains("is a value"), "{}", e[0]);
        let e = from_vars(vars(&[("SSE_SIDECAR__SSE____ENABLED", "1")])).unwrap_err();
        assert!(e[0].message.contains("empty"), "{}", e[0]);
    }

    #[test]
    fn a_path_through_a_scalar_is_a_problem() {
        let o = from_vars(vars(&[("SSE_SIDECAR__SSE__ENABLED", "false")])).unwrap();
        let mut tree: Value = serde_yaml::from_str("sse: 5").unwrap();
        let p = apply(&mut tree, &o).unwrap_err();
        assert!(
            p[0].message.contains("SSE_SIDECAR__SSE__ENABLED"),
            "{}",
            p[0]
        );
    }

    #[test]
    fn store_url_passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://u:pw@h:6379/0"),
            "redis://u:***@h:6379/0"
        );
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }
}
