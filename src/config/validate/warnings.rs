//! The warnings of a file that compiled: what validates but cannot work as probably meant
//! (no authorization rule, no rollout phase, a family above it, a rule's string value that
//! its event type's schema types otherwise). Never a refusal.

use super::{Collector, Parts};
use crate::config::auth::Policy;
use crate::config::model::{DataSpec, EventType, Family, Mode, Rule};
use crate::events::template::{Source, ValueTemplate};
use std::collections::BTreeMap;

/// The warnings of a file whose rollout and authorization sections compiled.
pub(super) fn warn_unworkable_parts(c: &mut Collector, p: &Parts, rollout_given: bool) {
    if let (Some(rollout), Some(authorization)) = (&p.rollout, &p.authorization) {
        let phase = rollout_given.then_some(rollout.phase);
        warn_unworkable(c, phase, &p.families, authorization);
        warn_string_typed_as_other(c, &p.rules, &p.event_types);
    }
}

/// Configs that validate but cannot work: no authorization rule (every stream is refused),
/// no rollout phase (every family is off), a family above the rollout phase.
fn warn_unworkable(
    c: &mut Collector,
    rollout_phase: Option<u32>,
    families: &BTreeMap<String, Family>,
    authorization: &Policy,
) {
    if authorization.rules.is_empty() {
        c.warn(
            "authorization",
            "no authorization rule: every topic is denied (no_rule), every stream gets 403 and clients poll",
            "add authorization.rules, e.g. {topic: \"board:{board}\", check: \"GET /api/boards/{board}\"} or {topic: \"presence\", public: true}",
        );
    }
    let enabled = || families.values().filter(|f| f.mode != Mode::Off);
    match rollout_phase {
        None if enabled().next().is_some() => c.warn(
            "rollout",
            "missing: the rollout phase is 0, so every family is off (no events are derived)",
            "add `rollout: {phase: N}` with N at least the phase of each family to turn on",
        ),
        None => {}
        Some(phase) => {
            for f in enabled().filter(|f| f.phase > phase) {
                c.warn(
                    format!("families.{}.phase", f.name),
                    format!(
                        "phase {} is above rollout.phase {phase}: the family is off (mode {} has no effect)",
                        f.phase,
                        f.mode.as_str()
                    ),
                    "raise rollout.phase when the family is ready, or lower its phase",
                );
            }
        }
    }
}

/// A rule's `data` field filled from a path parameter or query value (always a string) or
/// a text template, where the event type's schema wants another type: every event of the
/// rule fails the schema.
fn warn_string_typed_as_other(
    c: &mut Collector,
    rules: &[Rule],
    event_types: &BTreeMap<String, EventType>,
) {
    for r in rules {
        let (DataSpec::Template(t), Some(et)) = (&r.data, event_types.get(&r.event_type)) else {
            continue;
        };
        let mut found = Vec::new();
        string_fields_typed_otherwise(t, &et.schema, &format!("{}.data", r.location), &mut found);
        for (at, what, ty) in found {
            c.warn(
                at,
                format!(
                    "{what} is always a string, but event_types.{}.schema types it as {ty}: every event of this rule fails the schema",
                    et.name
                ),
                "type it as a string in the schema (e.g. {type: string, pattern: \"^[0-9]+$\"}), or take the value from the response body",
            );
        }
    }
}

fn string_fields_typed_otherwise(
    t: &ValueTemplate,
    schema: &serde_json::Value,
    at: &str,
    out: &mut Vec<(String, String, String)>,
) {
    match t {
        ValueTemplate::Object(fields) => {
            for (k, v) in fields {
                if let Some(sub) = schema.get("properties").and_then(|p| p.get(k)) {
                    string_fields_typed_otherwise(v, sub, &format!("{at}.{k}"), out);
                }
            }
        }
        ValueTemplate::Exact(src @ (Source::Param(_) | Source::Query(_) | Source::Header(_))) => {
            push_if_not_string(schema, at, src.describe(), out)
        }
        ValueTemplate::Str(_) => push_if_not_string(schema, at, "a text template".into(), out),
        _ => {}
    }
}

fn push_if_not_string(
    schema: &serde_json::Value,
    at: &str,
    what: String,
    out: &mut Vec<(String, String, String)>,
) {
    let ty = match schema.get("type") {
        Some(serde_json::Value::String(t)) => vec![t.as_str()],
        Some(serde_json::Value::Array(ts)) => ts.iter().filter_map(|t| t.as_str()).collect(),
        _ => return,
    };
    if !ty.is_empty() && !ty.contains(&"string") {
        out.push((at.to_owned(), what, ty.join(" or ")));
    }
}
