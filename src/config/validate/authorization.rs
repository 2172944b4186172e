//! The `authorization` step: the forwarded credential headers, the cache and check limits,
//! and each rule (a topic pattern, public or a GET/HEAD check whose path and condition use
//! only the topic's `{params}` and the answer). Warns of a check that does not depend on
//! every variable part of its topic.

use super::Collector;
use crate::config::auth::{AuthRule, Check, Policy};
use crate::config::file::{AuthRuleFile, AuthorizationFile};
use crate::events::condition::Condition;
use crate::events::pattern::TopicPattern;
use crate::events::template::{Source, StrTemplate};
use crate::headers::CREDENTIAL_HEADERS;
use std::time::Duration;

pub(super) fn compile_authorization(c: &mut Collector, a: AuthorizationFile) -> Policy {
    let forward_headers = compile_forward_headers(c, &a.forward_headers);
    c.ranges(&[
        (
            "authorization.cache_ttl_seconds",
            a.cache_ttl_seconds,
            1,
            86_400,
        ),
        (
            "authorization.failure_ttl_seconds",
            a.failure_ttl_seconds,
            0,
            3600,
        ),
        (
            "authorization.cache_max_entries",
            a.cache_max_entries as u64,
            16,
            100_000_000,
        ),
        (
            "authorization.check_timeout_ms",
            a.check_timeout_ms,
            10,
            60_000,
        ),
        (
            "authorization.max_concurrent_checks",
            a.max_concurrent_checks as u64,
            1,
            100_000,
        ),
        (
            "authorization.max_response_bytes",
            a.max_response_bytes as u64,
            256,
            16 << 20,
        ),
    ]);
    let rules = a
        .rules
        .iter()
        .enumerate()
        .filter_map(|(i, raw)| compile_auth_rule(c, i, raw))
        .collect();
    Policy {
        rules,
        forward_headers,
        cache_ttl: Duration::from_secs(a.cache_ttl_seconds),
        failure_ttl: Duration::from_secs(a.failure_ttl_seconds),
        cache_max_entries: a.cache_max_entries,
        check_timeout: Duration::from_millis(a.check_timeout_ms),
        max_concurrent_checks: a.max_concurrent_checks,
        max_response_bytes: a.max_response_bytes,
    }
}

/// `authorization.forward_headers`, lower-cased: credential headers only.
fn compile_forward_headers(c: &mut Collector, headers: &[String]) -> Vec<String> {
    let mut forward = Vec::new();
    for (i, h) in headers.iter().enumerate() {
        let h = h.to_ascii_lowercase();
        if CREDENTIAL_HEADERS.contains(&h.as_str()) {
            forward.push(h);
        } else {
            c.push(
                format!("authorization.forward_headers[{i}]"),
                format!("{h:?} cannot be forwarded to checks"),
                Some("use cookie and/or authorization"),
            );
        }
    }
    forward
}

/// One `authorization.rules` entry: a topic pattern, public or with a backend check.
fn compile_auth_rule(c: &mut Collector, i: usize, raw: &serde_yaml::Value) -> Option<AuthRule> {
    let path = format!("authorization.rules[{i}]");
    let r = c.section::<AuthRuleFile>(&path, raw)?;
    let pattern = match TopicPattern::parse(&r.topic) {
        Ok(p) => p,
        Err(e) => {
            c.push(
                format!("{path}.topic"),
                e,
                Some("e.g. \"board:{board}\", \"presence\" or \"team:*\""),
            );
            return None;
        }
    };
    let check = match (r.public, &r.check) {
        (true, Some(_)) => {
            c.push(
                &path,
                "a rule is either public or has a check, not both",
                Some("remove `public: true` or the check"),
            );
            return None;
        }
        (true, None) => {
            if r.condition.is_some() {
                c.push(
                    format!("{path}.condition"),
                    "a public rule has no check to put a condition on",
                    None,
                );
            }
            None
        }
        (false, None) => {
            c.push(
                &path,
                "no check: say how the backend decides, or mark the topic public",
                Some("check: \"GET /api/boards/{board}\" (or public: true)"),
            );
            return None;
        }
        (false, Some(line)) => Some(compile_check(c, &path, &r, line, &pattern)?),
    };
    Some(AuthRule {
        location: path,
        pattern,
        check,
    })
}

/// A rule's `check` (`METHOD /path` of the topic's `{params}`) and its `condition`.
fn compile_check(
    c: &mut Collector,
    path: &str,
    r: &AuthRuleFile,
    line: &str,
    pattern: &TopicPattern,
) -> Option<Check> {
    let params: Vec<String> = pattern.param_names().map(str::to_owned).collect();
    let (method, path_t) = compile_check_line(c, path, line)?;
    let mut ok = true;
    for src in path_t.sources() {
        match src {
            Source::Param(p) if params.contains(p) => {}
            other => {
                ok = false;
                c.push(
                    format!("{path}.check"),
                    format!(
                        "{} is not a parameter of the topic pattern {:?}",
                        other.describe(),
                        r.topic
                    ),
                    Some("a check path may only use the topic's {params}"),
                );
            }
        }
    }
    let condition = r
        .condition
        .as_deref()
        .and_then(|s| compile_condition(c, path, s, &params, &mut ok));
    if condition.is_some() && method == http::Method::HEAD {
        ok = false;
        c.push(
            format!("{path}.condition"),
            "a HEAD check has no answer body to test",
            Some("use GET for a check with a condition"),
        );
    }
    if !ok {
        return None;
    }
    let check = Check {
        method,
        path: path_t,
        condition,
    };
    warn_topic_independent_check(c, path, pattern, &check);
    Some(check)
}

/// `GET /path` or `HEAD /path`, the path a template.
pub(super) fn compile_check_line(
    c: &mut Collector,
    path: &str,
    line: &str,
) -> Option<(http::Method, StrTemplate)> {
    let Some((method, tpl)) = line.trim().split_once(' ') else {
        c.push(
            format!("{path}.check"),
            format!("{line:?} is not `METHOD /path`"),
            Some("e.g. \"GET /api/boards/{board}\""),
        );
        return None;
    };
    let method = match method.parse::<http::Method>() {
        Ok(m) if matches!(m, http::Method::GET | http::Method::HEAD) => m,
        _ => {
            c.push(
                format!("{path}.check"),
                format!("{method:?}: checks must be GET or HEAD"),
                Some("a check must not change anything on the backend"),
            );
            return None;
        }
    };
    let tpl = tpl.trim();
    if !tpl.starts_with('/') || tpl.bytes().any(|b| !b.is_ascii_graphic()) {
        c.push(
            format!("{path}.check"),
            format!("{tpl:?} is not a path"),
            Some("start with '/', no spaces"),
        );
        return None;
    }
    match StrTemplate::parse(tpl) {
        Ok(t) => Some((method, t)),
        Err(e) => {
            c.push(format!("{path}.check"), e, None);
            None
        }
    }
}

/// A check's condition, of `{response.field}` and the topic's `{params}`; a bad source
/// clears `ok` (the rule is dropped), a condition that does not parse is just a problem.
fn compile_condition(
    c: &mut Collector,
    path: &str,
    text: &str,
    params: &[String],
    ok: &mut bool,
) -> Option<Condition> {
    let cond = match Condition::parse(text) {
        Ok(cond) => cond,
        Err(e) => {
            c.push(format!("{path}.condition"), e, None);
            return None;
        }
    };
    for src in cond.left.sources().chain(cond.right.sources()) {
        match src {
            Source::Response(_) => {}
            Source::Param(p) if params.contains(p) => {}
            other => {
                *ok = false;
                c.push(
                    format!("{path}.condition"),
                    format!("{} cannot be used in a condition", other.describe()),
                    Some("use {response.field} and the topic's {params}"),
                );
            }
        }
    }
    Some(cond)
}

/// A check that does not depend on every variable part of its topic pattern grants every
/// matching topic on one answer (`team:*` with `GET /api/me` grants every team).
fn warn_topic_independent_check(
    c: &mut Collector,
    path: &str,
    pattern: &TopicPattern,
    check: &Check,
) {
    let mut used: Vec<&str> = Vec::new();
    let cond = check
        .condition
        .iter()
        .flat_map(|c| c.left.sources().chain(c.right.sources()));
    for src in check.path.sources().chain(cond) {
        if let Source::Param(p) = src {
            used.push(p);
        }
    }
    let at = format!("{path}.check");
    if pattern.has_wildcard() {
        c.warn(
            at,
            format!(
                "the check cannot depend on the `*` of {:?}: one answer grants every matching topic",
                pattern.as_str()
            ),
            "name the part instead, e.g. topic \"team:{team}\" with check \"GET /api/teams/{team}\" (or mark the topics public)",
        );
        return;
    }
    let unused: Vec<&str> = pattern
        .param_names()
        .filter(|p| !used.contains(p))
        .collect();
    if !unused.is_empty() {
        let names: Vec<String> = unused.iter().map(|p| format!("{{{p}}}")).collect();
        c.warn(
            at,
            format!(
                "the check does not use {} of {:?}: one answer grants that topic for every value",
                names.join(", "),
                pattern.as_str()
            ),
            "use every parameter in the check path (e.g. \"GET /api/boards/{board}\") or in its condition",
        );
    }
}
