//! The `event_types` and `families` steps: each event type's name and JSON Schema, each
//! family's name, mode and priority, and its mutation rules (a mutation match pattern, an
//! event type of the same family, topic, data and invalidate templates that use only the
//! pattern's `{params}`). A rule with any problem is left out.

use super::Collector;
use crate::config::file::{EventTypeFile, EventTypesFile, FamiliesFile, FamilyFile, RuleFile};
use crate::config::model::{Conflicts, DataSpec, EventType, Family, Mode, Rule};
use crate::events::route::RoutePattern;
use crate::events::template::{Source, StrTemplate, ValueTemplate};
use crate::events::types::is_valid_name;
use std::collections::BTreeMap;
use std::sync::Arc;

pub(super) fn compile_event_types(
    c: &mut Collector,
    types: EventTypesFile,
) -> BTreeMap<String, EventType> {
    let mut out = BTreeMap::new();
    for (name, raw) in types {
        if let Some(t) = compile_event_type(c, name, &raw) {
            out.insert(t.name.clone(), t);
        }
    }
    out
}

fn compile_event_type(
    c: &mut Collector,
    name: String,
    raw: &serde_yaml::Value,
) -> Option<EventType> {
    let path = format!("event_types.{name}");
    if !is_valid_name(&name) {
        c.push(
            &path,
            "event type names are 1-64 characters of A-Z a-z 0-9 _ . : -",
            None,
        );
    }
    let t = c.section::<EventTypeFile>(&path, raw)?;
    match jsonschema::validator_for(&t.schema) {
        Ok(validator) => Some(EventType {
            name,
            family: t.family,
            schema: t.schema,
            validator: Arc::new(validator),
        }),
        Err(e) => {
            c.push(
                format!("{path}.schema"),
                format!("not a valid JSON Schema: {e}"),
                Some("schemas follow JSON Schema 2020-12"),
            );
            None
        }
    }
}

/// The families and, in family order, their compiled rules.
pub(super) fn compile_families(
    c: &mut Collector,
    fams: FamiliesFile,
    event_types: &BTreeMap<String, EventType>,
) -> (BTreeMap<String, Family>, Vec<Rule>) {
    let mut families = BTreeMap::new();
    let mut rules = Vec::new();
    for (name, raw) in fams {
        if let Some(f) = compile_family(c, name, &raw, event_types, &mut rules) {
            families.insert(f.name.clone(), f);
        }
    }
    (families, rules)
}

fn compile_family(
    c: &mut Collector,
    name: String,
    raw: &serde_yaml::Value,
    event_types: &BTreeMap<String, EventType>,
    rules: &mut Vec<Rule>,
) -> Option<Family> {
    let path = format!("families.{name}");
    if !is_valid_name(&name) {
        c.push(
            &path,
            "family names are 1-64 characters of A-Z a-z 0-9 _ . : -",
            None,
        );
    }
    let f = c.section::<FamilyFile>(&path, raw)?;
    let modes = [
        ("off", Mode::Off),
        ("shadow", Mode::Shadow),
        ("live", Mode::Live),
    ];
    let mode = c.keyword(
        &format!("{path}.mode"),
        "mode",
        &f.mode,
        &modes,
        "use off, shadow or live",
    );
    if f.priority > 9 {
        c.push(
            format!("{path}.priority"),
            "out of range",
            Some("use 0 (shed first) to 9"),
        );
    }
    let conflicts = f
        .conflicts
        .as_deref()
        .and_then(|w| conflicts_keyword(c, &format!("{path}.conflicts"), w))
        .unwrap_or_default();
    for (i, raw_rule) in f.rules.iter().enumerate() {
        let rpath = format!("{path}.rules[{i}]");
        if let Some(r) = c.section::<RuleFile>(&rpath, raw_rule) {
            let family = (name.as_str(), conflicts);
            rules.extend(compile_rule(c, &rpath, family, r, event_types));
        }
    }
    Some(Family {
        name,
        phase: f.phase,
        mode: mode.unwrap_or(Mode::Off),
        priority: f.priority,
    })
}

/// Every event type names a defined family.
pub(super) fn check_event_type_families(
    c: &mut Collector,
    event_types: &BTreeMap<String, EventType>,
    families: &BTreeMap<String, Family>,
) {
    for t in event_types.values() {
        if !families.contains_key(&t.family) {
            c.push(
                format!("event_types.{}.family", t.name),
                format!("family {:?} is not defined under families", t.family),
                Some("add the family or fix the name"),
            );
        }
    }
}

/// One mutation rule of a family; `None` when any of its parts has a problem.
fn conflicts_keyword(c: &mut Collector, path: &str, word: &str) -> Option<Conflicts> {
    let known = [
        ("off", Conflicts::Off),
        ("detect", Conflicts::Detect),
        ("reject", Conflicts::Reject),
    ];
    c.keyword(path, "conflicts", word, &known, "use off, detect or reject")
}

/// The rule's concurrent-edit check (its own, else its family's) and the topics it can
/// compare before forwarding: those with no `{request.…}` or `{response.…}` part. A check
/// with no such topic could never see a conflict: refused.
fn compile_rule_conflicts(
    c: &mut Collector,
    path: &str,
    r: &RuleFile,
    default: Conflicts,
    topics: &[StrTemplate],
) -> (Conflicts, Vec<usize>) {
    let mode = match r.conflicts.as_deref() {
        Some(w) => conflicts_keyword(c, &format!("{path}.conflicts"), w).unwrap_or_default(),
        None => default,
    };
    let known: Vec<usize> = topics
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            t.sources()
                .all(|s| !matches!(s, Source::Request(_) | Source::Response(_)))
        })
        .map(|(i, _)| i)
        .collect();
    if mode != Conflicts::Off && known.is_empty() {
        c.push(
            format!("{path}.conflicts"),
            "no topic of this rule is known before the mutation is forwarded",
            Some("add a topic filled from the path, query or headers (e.g. \"card:{id}\"), or set conflicts: off"),
        );
    }
    (mode, known)
}

fn compile_rule(
    c: &mut Collector,
    path: &str,
    (family, default_conflicts): (&str, Conflicts),
    r: RuleFile,
    event_types: &BTreeMap<String, EventType>,
) -> Option<Rule> {
    let before = c.problems.len();
    let pattern = compile_rule_match(c, path, &r.matches);
    check_rule_event(c, path, family, &r.event, event_types);
    let scope = RuleParams(
        pattern
            .as_ref()
            .map(|p| p.param_names().map(str::to_owned).collect()),
    );
    let topics = compile_rule_topics(c, path, &r.topics, &scope);
    let data = compile_rule_data(c, path, &r.data, &scope);
    let invalidate = compile_rule_invalidate(c, path, &r.invalidate, &scope);
    let (conflicts, conflict_topics) =
        compile_rule_conflicts(c, path, &r, default_conflicts, &topics);
    if c.problems.len() > before {
        return None;
    }
    Some(Rule {
        location: path.to_owned(),
        family: family.to_owned(),
        pattern: pattern?,
        event_type: r.event,
        topics,
        data,
        invalidate,
        conflicts,
        conflict_topics,
    })
}

/// The `{params}` a rule's templates may use: those of its match pattern (`None` when the
/// pattern did not parse: then nothing more is reported about them).
struct RuleParams(Option<Vec<String>>);

impl RuleParams {
    fn check<'a>(
        &self,
        c: &mut Collector,
        at: &str,
        sources: impl IntoIterator<Item = &'a Source>,
    ) {
        let Some(params) = &self.0 else { return };
        for s in sources {
            if let Source::Param(p) = s {
                if !params.contains(p) {
                    c.push(
                        at,
                        format!("{{{p}}} is not a parameter of the match pattern"),
                        Some("use a {name} from `match`, or query./request./response./header."),
                    );
                }
            }
        }
    }
}

fn compile_rule_match(c: &mut Collector, path: &str, matches: &str) -> Option<RoutePattern> {
    match RoutePattern::parse(matches) {
        Ok(p) => {
            if !matches!(p.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE") {
                c.push(
                    format!("{path}.match"),
                    format!("{} is not a mutation", p.method),
                    Some("rules watch POST, PUT, PATCH and DELETE"),
                );
            }
            Some(p)
        }
        Err(e) => {
            c.push(format!("{path}.match"), e, None);
            None
        }
    }
}

/// The rule's event type exists and belongs to the rule's family.
fn check_rule_event(
    c: &mut Collector,
    path: &str,
    family: &str,
    event: &str,
    event_types: &BTreeMap<String, EventType>,
) {
    match event_types.get(event) {
        None => c.push(
            format!("{path}.event"),
            format!("event type {event:?} is not defined under event_types"),
            Some("add it to event_types with its family and schema"),
        ),
        Some(t) if t.family != family => c.push(
            format!("{path}.event"),
            format!(
                "event type {:?} belongs to family {:?}, not {:?}",
                event, t.family, family
            ),
            Some("move the rule to that family or change the type's family"),
        ),
        Some(_) => {}
    }
}

fn compile_rule_topics(
    c: &mut Collector,
    path: &str,
    topics: &[String],
    scope: &RuleParams,
) -> Vec<StrTemplate> {
    if topics.is_empty() {
        c.push(
            format!("{path}.topics"),
            "a rule needs at least one topic",
            Some("e.g. topics: [\"board:{response.board_id}\"]"),
        );
    }
    let mut out = Vec::new();
    for (i, t) in topics.iter().enumerate() {
        let at = format!("{path}.topics[{i}]");
        match StrTemplate::parse(t) {
            Ok(tpl) => {
                scope.check(c, &at, tpl.sources());
                out.push(tpl);
            }
            Err(e) => c.push(at, e, None),
        }
    }
    out
}

fn compile_rule_data(
    c: &mut Collector,
    path: &str,
    data: &serde_json::Value,
    scope: &RuleParams,
) -> DataSpec {
    match data {
        serde_json::Value::String(s) if s == "none" => DataSpec::None,
        serde_json::Value::String(s) if s == "request" => DataSpec::Request,
        serde_json::Value::String(s) if s == "response" => DataSpec::Response,
        v @ serde_json::Value::Object(_) => match ValueTemplate::parse(v) {
            Ok(t) => {
                scope.check(c, &format!("{path}.data"), t.sources());
                DataSpec::Template(t)
            }
            Err(e) => {
                c.push(format!("{path}.data"), e, None);
                DataSpec::None
            }
        },
        _ => {
            c.push(
                format!("{path}.data"),
                "must be none, request, response or a mapping template",
                Some("e.g. data: {card: \"{id}\", title: \"{response.title}\"}"),
            );
            DataSpec::None
        }
    }
}

/// The query keys a rule invalidates: non-empty arrays of templates.
fn compile_rule_invalidate(
    c: &mut Collector,
    path: &str,
    keys: &[Vec<serde_json::Value>],
    scope: &RuleParams,
) -> Vec<ValueTemplate> {
    let mut out = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let at = format!("{path}.invalidate[{i}]");
        if key.is_empty() {
            c.push(
                &at,
                "a query key needs at least one element",
                Some("e.g. [\"cards\", \"{id}\"]"),
            );
            continue;
        }
        match ValueTemplate::parse(&serde_json::Value::Array(key.clone())) {
            Ok(t) => {
                scope.check(c, &at, t.sources());
                out.push(t);
            }
            Err(e) => c.push(at, e, None),
        }
    }
    out
}
