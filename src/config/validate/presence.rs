//! The `presence` step: topic patterns, bounds, and the identity request (a GET or HEAD
//! path without placeholders, so one answer per credentials; the id and fields are
//! templates of the answer only).

use super::authorization::compile_check_line;
use super::Collector;
use crate::config::file::{IdentityFile, PresenceFile};
use crate::config::presence::{Identity, Presence};
use crate::events::pattern::TopicPattern;
use crate::events::template::{Source, StrTemplate};
use std::time::Duration;

/// Most public fields a member may carry.
const MAX_FIELDS: usize = 16;

pub(super) fn compile_presence(c: &mut Collector, p: PresenceFile) -> Presence {
    c.ranges(&[
        ("presence.max_listed", p.max_listed as u64, 1, 10_000),
        ("presence.debounce_ms", p.debounce_ms, 0, 10_000),
        ("presence.leave_grace_ms", p.leave_grace_ms, 0, 600_000),
        (
            "presence.max_members_per_topic",
            p.max_members_per_topic as u64,
            1,
            1_000_000,
        ),
        ("presence.max_topics", p.max_topics as u64, 1, 1_000_000),
        (
            "presence.max_topics_per_stream",
            p.max_topics_per_stream as u64,
            1,
            64,
        ),
        (
            "presence.max_field_bytes",
            p.max_field_bytes as u64,
            0,
            8192,
        ),
        ("presence.expiry_seconds", p.expiry_seconds, 5, 3600),
    ]);
    let topics = p
        .topics
        .iter()
        .enumerate()
        .filter_map(|(i, t)| match TopicPattern::parse(t) {
            Ok(pattern) => Some(pattern),
            Err(e) => {
                c.push(
                    format!("presence.topics[{i}]"),
                    e,
                    Some("e.g. \"board:{board}\" or \"conversation:*\""),
                );
                None
            }
        })
        .collect();
    let identity = p.identity.and_then(|i| compile_identity(c, i));
    Presence {
        topics,
        identity,
        max_listed: p.max_listed,
        debounce: Duration::from_millis(p.debounce_ms),
        leave_grace: Duration::from_millis(p.leave_grace_ms),
        max_members_per_topic: p.max_members_per_topic,
        max_topics: p.max_topics,
        max_topics_per_stream: p.max_topics_per_stream,
        max_field_bytes: p.max_field_bytes,
        expiry: Duration::from_secs(p.expiry_seconds),
    }
}

/// `presence.identity`: the request line, the id and the fields.
fn compile_identity(c: &mut Collector, i: IdentityFile) -> Option<Identity> {
    let path = "presence.identity";
    c.ranges(&[(
        "presence.identity.cache_ttl_seconds",
        i.cache_ttl_seconds,
        1,
        86_400,
    )]);
    let (method, line) = compile_check_line(c, path, &i.check)?;
    let mut ok = true;
    if line.sources().next().is_some() {
        ok = false;
        c.push(
            format!("{path}.check"),
            "the identity request takes no placeholders: it is the same for every stream",
            Some("e.g. \"GET /api/me\": the backend knows the user from the credentials"),
        );
    }
    let id = answer_template(c, &format!("{path}.id"), &i.id);
    if i.fields.len() > MAX_FIELDS {
        c.push(
            format!("{path}.fields"),
            format!("{} fields; at most {MAX_FIELDS}", i.fields.len()),
            Some("presence shows a few public fields, such as a name"),
        );
    }
    let fields: Vec<(String, StrTemplate)> = i
        .fields
        .iter()
        .filter_map(|(name, t)| {
            let at = format!("{path}.fields.{name}");
            if !valid_field_name(name) {
                c.push(&at, "a field name is 1-64 of A-Z a-z 0-9 _ -", None);
                return None;
            }
            Some((name.clone(), answer_template(c, &at, t)?))
        })
        .collect();
    let (Some(id), true) = (id, ok && fields.len() == i.fields.len()) else {
        return None;
    };
    Some(Identity {
        method,
        path: i
            .check
            .trim()
            .split_once(' ')
            .map_or("", |(_, p)| p.trim())
            .to_owned(),
        id,
        fields,
        cache_ttl: Duration::from_secs(i.cache_ttl_seconds),
    })
}

fn valid_field_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// A template of the identity answer only (`{response.…}`).
fn answer_template(c: &mut Collector, at: &str, text: &str) -> Option<StrTemplate> {
    let t = match StrTemplate::parse(text) {
        Ok(t) => t,
        Err(e) => {
            c.push(at, e, Some("e.g. \"{response.id}\""));
            return None;
        }
    };
    let mut ok = true;
    for src in t.sources() {
        if !matches!(src, Source::Response(p) if !p.is_empty()) {
            ok = false;
            c.push(
                at,
                format!("{} is not a field of the identity answer", src.describe()),
                Some("use {response.field}: the JSON the identity request answered"),
            );
        }
    }
    ok.then_some(t)
}

#[cfg(test)]
mod tests {
    use crate::config::validate::parse_str;

    const UP: &str = "upstream: {address: \"127.0.0.1:1\"}\n";

    fn problems(yaml: &str) -> Vec<String> {
        match parse_str(&format!("{UP}{yaml}")) {
            Ok(_) => Vec::new(),
            Err(crate::config::ConfigError::Invalid(p)) => p.into_iter().map(|p| p.path).collect(),
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn a_presence_section_compiles_with_its_defaults() {
        let cfg = parse_str(&format!(
            "{UP}presence:\n  topics: [\"board:{{board}}\"]\n  identity:\n    check: \"GET /api/me\"\n    id: \"{{response.user}}\"\n    fields: {{name: \"{{response.name}}\"}}\n"
        ))
        .expect("valid");
        let p = &cfg.presence;
        assert!(p.tracks("board:2") && !p.tracks("card:2"));
        let identity = p.identity.as_ref().expect("identity");
        assert_eq!(
            (identity.path.as_str(), identity.fields.len()),
            ("/api/me", 1)
        );
        assert_eq!(p.max_listed, 100);
        let off = parse_str(UP).expect("valid");
        assert!(off.presence.topics.is_empty() && off.presence.identity.is_none());
    }

    #[test]
    fn bad_presence_settings_name_their_paths() {
        assert_eq!(
            problems("presence: {topics: [\"a:{\"]}\n"),
            ["presence.topics[0]"]
        );
        assert_eq!(
            problems("presence: {identity: {check: \"GET /api/users/{id}\"}}\n"),
            ["presence.identity.check"]
        );
        assert_eq!(
            problems("presence: {identity: {check: \"POST /api/me\"}}\n"),
            ["presence.identity.check"]
        );
        assert_eq!(
            problems("presence: {identity: {check: \"GET /me\", id: \"{request.x}\"}}\n"),
            ["presence.identity.id"]
        );
        assert_eq!(
            problems(
                "presence: {identity: {check: \"GET /me\", fields: {\"a b\": \"{response.x}\"}}}\n"
            ),
            ["presence.identity.fields.a b"]
        );
        assert_eq!(
            problems("presence: {max_listed: 0}\n"),
            ["presence.max_listed"]
        );
        assert_eq!(problems("presence: {bogus: 1}\n"), ["presence"]);
    }
}
