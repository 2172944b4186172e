//! The concurrent-edit check of a matched mutation (`conflicts: detect | reject` on its
//! rule or family) that carries `x-sse-base: <event id>`: the version of the state the user
//! edited. Before the mutation is forwarded, the rule's topics known from the request line
//! and headers (`Rule::conflict_topics`) are filled and their version (`hub::versions`)
//! compared with the base: a newer version is a concurrent edit.
//!
//! - `reject`: the sidecar answers `409` with `{conflict: {base, current, events}}` (the
//!   newer events on those topics still in the log, oldest first) and the backend never
//!   sees the mutation.
//! - `detect`: forwarded; its events carry `conflict: {base, superseded}`.
//!
//! A base from another epoch compares as older than any version of this epoch. No base
//! header: no check (older clients keep working). The check and the append are not one
//! step: two mutations checked at the same time against the same base both pass (the
//! window is the backend's answer time; with several instances, also the feed's lag).

use crate::config::model::{Conflicts, Rule};
use crate::config::Config;
use crate::events::route::Params;
use crate::events::template::{Body, Inputs};
use crate::events::types::{scoped_topic, EventId};
use crate::state::State;
use crate::store::ReadAfter;
use serde_json::{json, Value};

/// Most newer events a 409 lists, and most log entries read to find them.
const MAX_LISTED: usize = 50;
const MAX_SCANNED: usize = 2_000;

/// A concurrent edit found before forwarding.
pub struct Found {
    pub mode: Conflicts,
    pub base: String,
    pub current: String,
    /// The newer events on the checked topics (their JSON), oldest first.
    pub events: Vec<Value>,
}

impl Found {
    /// The 409 body (`reject`).
    pub fn body(&self) -> Value {
        json!({ "conflict": { "base": self.base, "current": self.current, "events": self.events } })
    }

    /// What the mutation's events and receipt carry (`detect`).
    pub fn detected(&self) -> Value {
        let ids: Vec<&Value> = self.events.iter().map(|e| &e["id"]).collect();
        json!({ "base": self.base, "superseded": ids })
    }

    /// What a refused mutation's receipt carries (`reject`).
    pub fn rejected(&self) -> Value {
        self.body()["conflict"].clone()
    }
}

/// The check's inputs for one mutation: its matched rules and what the request line and
/// headers give.
pub struct Request<'a> {
    pub rules: &'a [(usize, Params)],
    pub query: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    pub tenant: Option<&'a str>,
}

/// The strictest check of the matched rules, and the (scoped) topics it compares.
fn checked_topics(cfg: &Config, req: &Request<'_>) -> (Conflicts, Vec<String>) {
    let mut mode = Conflicts::Off;
    let mut topics: Vec<String> = Vec::new();
    for (idx, params) in req.rules {
        let Some(rule) = cfg
            .rules
            .get(*idx)
            .filter(|r| r.conflicts != Conflicts::Off)
        else {
            continue;
        };
        if rule.conflicts == Conflicts::Reject {
            mode = Conflicts::Reject;
        } else if mode == Conflicts::Off {
            mode = Conflicts::Detect;
        }
        for t in known_topics(rule, params, req) {
            let t = scoped_topic(req.tenant, &t).into_owned();
            if !topics.contains(&t) {
                topics.push(t);
            }
        }
    }
    (mode, topics)
}

/// A rule's topics filled from the request line and headers alone.
fn known_topics(rule: &Rule, params: &Params, req: &Request<'_>) -> Vec<String> {
    let inputs = Inputs {
        params,
        query: req.query,
        headers: req.headers,
        request: &Body::Empty,
        response: &Body::Empty,
    };
    rule.conflict_topics
        .iter()
        .filter_map(|i| rule.topics.get(*i)?.render(&inputs).ok())
        .collect()
}

/// Checks a mutation against its base: `Ok(None)` when it is not checked or not in
/// conflict, `Err` for a base that is not an event id.
pub async fn check(
    state: &State,
    cfg: &Config,
    req: &Request<'_>,
    base: &str,
) -> Result<Option<Found>, String> {
    let (mode, topics) = checked_topics(cfg, req);
    if mode == Conflicts::Off || topics.is_empty() {
        return Ok(None);
    }
    let base_id = EventId::parse(base).map_err(|e| format!("x-sse-base: {e}"))?;
    let hub = &state.hub;
    let epoch = hub.epoch();
    let current = hub.version_of(&topics);
    let same_epoch = base_id.epoch == *epoch;
    let newer = if same_epoch {
        current > base_id.seq
    } else {
        current > 0
    };
    if !newer {
        return Ok(None);
    }
    state
        .metrics
        .conflicts_total
        .with_label_values(&[if mode == Conflicts::Reject {
            "reject"
        } else {
            "detect"
        }])
        .inc();
    let after = if same_epoch { base_id.seq } else { 0 };
    Ok(Some(Found {
        mode,
        base: base.trim().to_owned(),
        current: EventId::new(&epoch, current).to_string(),
        events: newer_events(state, after, &topics, req.tenant).await,
    }))
}

/// The stored events after `after` that touched any of `topics`, oldest first (bounded).
async fn newer_events(
    state: &State,
    after: u64,
    topics: &[String],
    tenant: Option<&str>,
) -> Vec<Value> {
    let Ok(ReadAfter::Events(events)) = state.hub.log().read_after(after, MAX_SCANNED).await else {
        return Vec::new();
    };
    events
        .iter()
        .filter(|s| s.event.tenant.as_deref() == tenant)
        .filter(|s| {
            s.event
                .topics
                .iter()
                .any(|t| topics.iter().any(|c| *c == scoped_topic(tenant, t)))
        })
        .take(MAX_LISTED)
        .filter_map(|s| serde_json::to_value(&s.event).ok())
        .collect()
}
