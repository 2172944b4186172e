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
//! header: no check (older clients keep working).
//!
//! Concurrent checked edits of one topic on this instance take turns ([`Reservations`]):
//! a checked mutation holds its topics from the check until its answer went out and its
//! events are stored (its ticket completes), and a second one waits for that (at most
//! [`MAX_WAIT`], then it is checked anyway) before it compares versions, so it sees the
//! first one's event. Across instances the window remains: an edit on another instance is
//! seen once this instance's feed has its event.

use crate::config::model::{Conflicts, Rule};
use crate::config::Config;
use crate::events::route::Params;
use crate::events::template::{Body, Inputs};
use crate::events::types::{scoped_topic, EventId};
use crate::state::State;
use crate::store::ReadAfter;
use serde_json::{json, Value};

/// Longest a checked edit waits for an earlier checked edit of the same topics.
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The topics checked edits hold on this instance (see the module header).
#[derive(Default)]
pub struct Reservations {
    held: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    released: tokio::sync::Notify,
}

/// A checked edit's hold on its topics; released when dropped.
pub struct Hold {
    topics: Vec<String>,
    owner: std::sync::Arc<Reservations>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut held = self.owner.held.lock().unwrap_or_else(|e| e.into_inner());
        for t in &self.topics {
            if let Some(n) = held.get_mut(t) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    held.remove(t);
                }
            }
        }
        drop(held);
        self.owner.released.notify_waiters();
    }
}

impl Reservations {
    /// Takes `topics` once no other checked edit holds any of them (or after `MAX_WAIT`).
    pub async fn acquire(self: &std::sync::Arc<Self>, topics: &[String]) -> Hold {
        let deadline = tokio::time::Instant::now() + MAX_WAIT;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                let busy = topics.iter().any(|t| held.contains_key(t));
                if !busy || tokio::time::Instant::now() >= deadline {
                    for t in topics {
                        *held.entry(t.clone()).or_insert(0) += 1;
                    }
                    return Hold {
                        topics: topics.to_vec(),
                        owner: self.clone(),
                    };
                }
            }
            let _ = tokio::time::timeout_at(deadline, released).await;
        }
    }
}

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

/// What the check found: a conflict or none, and the hold on the checked topics to keep
/// until the mutation is complete (none when nothing was checked).
pub struct Checked {
    pub found: Option<Found>,
    pub hold: Option<Hold>,
}

/// Checks a mutation against its base (taking its turn on its topics first, see
/// `Reservations`); `Err` for a base that is not an event id.
pub async fn check(
    state: &State,
    turns: &std::sync::Arc<Reservations>,
    cfg: &Config,
    req: &Request<'_>,
    base: &str,
) -> Result<Checked, String> {
    let (mode, topics) = checked_topics(cfg, req);
    if mode == Conflicts::Off || topics.is_empty() {
        return Ok(Checked {
            found: None,
            hold: None,
        });
    }
    let base_id = EventId::parse(base).map_err(|e| format!("x-sse-base: {e}"))?;
    let hold = turns.acquire(&topics).await;
    let found = compare(state, mode, &topics, req.tenant, (&base_id, base)).await;
    Ok(Checked {
        found,
        hold: Some(hold),
    })
}

/// The conflict, if the topics' version is newer than the base.
async fn compare(
    state: &State,
    mode: Conflicts,
    topics: &[String],
    tenant: Option<&str>,
    (base_id, base): (&EventId, &str),
) -> Option<Found> {
    let hub = &state.hub;
    let epoch = hub.epoch();
    let current = hub.version_of(topics);
    let same_epoch = base_id.epoch == *epoch;
    let newer = if same_epoch {
        current > base_id.seq
    } else {
        current > 0
    };
    if !newer {
        return None;
    }
    let label = if mode == Conflicts::Reject {
        "reject"
    } else {
        "detect"
    };
    state
        .metrics
        .conflicts_total
        .with_label_values(&[label])
        .inc();
    let after = if same_epoch { base_id.seq } else { 0 };
    Some(Found {
        mode,
        base: base.trim().to_owned(),
        current: EventId::new(&epoch, current).to_string(),
        events: newer_events(state, after, topics, tenant).await,
    })
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
