//! The JSON Schema of the config file (`sse-sidecar schema`, committed as
//! `docs/config.schema.json`), derived with `schemars` from the serde mirror in `file`, so
//! it accepts the shapes the parser accepts: unknown keys are refused
//! (`deny_unknown_fields` becomes `additionalProperties: false`), a `null` section counts as
//! absent, `upstream` is the one required section. Word-valued keys (modes, backends,
//! formats) carry their words as an `enum` (attributes in `file`; a test checks they are the
//! words `validate` accepts).

use super::file::*;
use schemars::JsonSchema;
use serde_json::Value;
use std::collections::BTreeMap;

/// The whole file: the sections of [`SECTIONS`], as `validate` reads them.
#[derive(JsonSchema)]
#[schemars(title = "sse-sidecar configuration", deny_unknown_fields)]
#[allow(
    dead_code,
    reason = "only its schema is used; `validate` reads section by section"
)]
struct ConfigFile {
    /// `host:port` the proxy listens on (restart-only).
    #[serde(default = "default_listen")]
    listen: Option<String>,
    /// Proxy worker threads (restart-only).
    #[serde(default = "default_threads")]
    threads: Option<usize>,
    /// The legacy backend (required).
    upstream: UpstreamFile,
    admin: Option<AdminFile>,
    sse: Option<SseFile>,
    mutations: Option<MutationsFile>,
    store: Option<StoreFile>,
    rollout: Option<RolloutFile>,
    /// Event families by name, each with its mutation rules.
    families: Option<BTreeMap<String, FamilyFile>>,
    /// Event types by name, each with its family and the JSON Schema of its data.
    event_types: Option<BTreeMap<String, EventTypeFile>>,
    shutdown: Option<ShutdownFile>,
    logging: Option<LoggingFile>,
    safety: Option<SafetyFile>,
    authorization: Option<AuthorizationFile>,
    polling: Option<PollingFile>,
    telemetry: Option<TelemetryFile>,
    presence: Option<PresenceFile>,
    learn: Option<LearnFile>,
}

/// The schema as a JSON value.
pub fn schema() -> Value {
    let mut v = schemars::schema_for!(ConfigFile).to_value();
    // The upgrade socket's default depends on the machine (uid, XDG_RUNTIME_DIR): leave it
    // out so the committed schema is the same everywhere.
    if let Some(p) = v.pointer_mut("/$defs/ShutdownFile/properties/upgrade_sock") {
        if let Some(o) = p.as_object_mut() {
            o.remove("default");
        }
    }
    v
}

/// The schema as the text `sse-sidecar schema` prints (pretty JSON, a final newline).
pub fn schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&schema()).unwrap_or_default();
    s.push('\n');
    s
}

/// Follows a `$ref` into `root`'s `$defs`, and an `Option`'s `anyOf [T, null]` to `T`.
pub fn resolve<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
    for _ in 0..8 {
        if let Some(r) = node.get("$ref").and_then(Value::as_str) {
            match r.strip_prefix('#').and_then(|p| root.pointer(p)) {
                Some(n) => node = n,
                None => return node,
            }
        } else if let Some(alts) = node.get("anyOf").and_then(Value::as_array) {
            match alts
                .iter()
                .find(|a| a.get("type") != Some(&Value::from("null")))
            {
                Some(n) => node = n,
                None => return node,
            }
        } else {
            return node;
        }
    }
    node
}

/// What a key of a resolved object schema is: a fixed property, or an entry of a map.
pub enum Child<'a> {
    Property(&'a str, &'a Value),
    Entry(&'a Value),
}

/// The child schema for `key` (matched case-insensitively to the snake_case property
/// names), or the list of known keys when there is none.
pub fn child<'a>(node: &'a Value, key: &str) -> Result<Child<'a>, Vec<String>> {
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        if let Some((name, v)) = props.iter().find(|(n, _)| n.eq_ignore_ascii_case(key)) {
            return Ok(Child::Property(name, v));
        }
        return Err(props.keys().cloned().collect());
    }
    match node.get("additionalProperties") {
        Some(v) if v.is_object() => Ok(Child::Entry(v)),
        _ => Err(Vec::new()),
    }
}
