//! The mutation pipeline: what happens to an event once it exists, whoever made it. In order:
//! dedup (a mutation's scoped idempotency key, seen before within the window: nothing is
//! published), the `events_derived_total` count, the topic clock tick
//! (`polling.touch_event`: live or shadow, the event explains changes of the polled routes
//! that show its topics), shadow vs live (a shadow event is counted, never delivered), and
//! the hand-off to the hub, which under strict durability returns the commit to wait for.
//! [`wait_strict`] is that wait, bounded, for an edge that must hold its answer until then.
//!
//! The proxy calls [`publish`] for each event it derives from a confirmed mutation
//! ([`Source::Mutation`]); `POST /admin/publish` is [`Source::Admin`]: never deduplicated,
//! always live. Derivation, validation and the mode check stay with the callers.

use crate::config::model::{Delivery, Durability, Rule};
use crate::events::types::Event;
use crate::hub::receipts::Ticket;
use crate::hub::HubError;
use crate::state::State;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a strict-durability answer waits for its events' commit before it is released.
pub const STRICT_COMMIT_WAIT: Duration = Duration::from_secs(5);

/// The confirmation that a strict-durability event was stored (its id), or why not.
pub type Commit = tokio::sync::oneshot::Receiver<Result<String, HubError>>;

/// Where an event comes from: what the pipeline checks before it publishes.
pub enum Source<'a> {
    /// A confirmed mutation matched by `rule`, delivered as its family's `delivery` says.
    Mutation {
        rule: &'a Rule,
        /// The mutation's idempotency key, already scoped (rule, credentials, tenant), and
        /// the window within which a second one is a retry.
        dedup: Option<(&'a str, Duration)>,
        delivery: Delivery,
        /// The mutation's receipt in the making, when it wants one: what the pipeline does
        /// with the event is noted on it.
        ticket: Option<&'a Arc<Ticket>>,
    },
    /// `POST /admin/publish`: never deduplicated, always live.
    Admin,
}

/// What the pipeline did with an event.
#[derive(Debug)]
pub enum Outcome {
    /// A retry of a mutation already seen: nothing counted, ticked or published (counted
    /// as rejected, `duplicate`).
    Duplicate,
    /// Counted and ticked, not delivered (the family is in shadow).
    Shadow,
    /// Handed to the hub (relaxed durability: nothing to wait for).
    Queued,
    /// Handed to the hub under strict durability: the commit to wait for.
    Pending(Commit),
    /// The hub refused it (queue full, shut down); a mutation's drop is counted
    /// (`hub_queue_full`) and logged.
    Dropped(HubError),
}

impl Outcome {
    /// The stored event's id once committed: `Ok(None)` for an outcome that waits for
    /// nothing (duplicate, shadow, relaxed), the hub's error for a dropped or failed one.
    pub async fn committed(self) -> Result<Option<String>, HubError> {
        match self {
            Outcome::Pending(rx) => rx.await.map_err(|_| HubError::Closed)?.map(Some),
            Outcome::Dropped(e) => Err(e),
            Outcome::Duplicate | Outcome::Shadow | Outcome::Queued => Ok(None),
        }
    }
}

/// Runs an event through the pipeline (see the module header).
pub fn publish(state: &State, event: Event, source: Source<'_>, durability: Durability) -> Outcome {
    let ticket = match &source {
        Source::Mutation { ticket, .. } => *ticket,
        Source::Admin => None,
    };
    if let Source::Mutation {
        rule,
        dedup: Some((key, window)),
        ..
    } = &source
    {
        if !first_seen(state, rule, key, *window) {
            if let Some(t) = ticket {
                t.note_not_derived("duplicate");
            }
            return Outcome::Duplicate;
        }
    }
    let labels = [event.family.as_str(), event.event_type.as_str()];
    state
        .metrics
        .events_derived_total
        .with_label_values(&labels)
        .inc();
    state.polling.touch_event(&event);
    if let Source::Mutation {
        delivery: Delivery::Shadow,
        ..
    } = source
    {
        state
            .metrics
            .events_shadow_total
            .with_label_values(&labels)
            .inc();
        if let Some(t) = ticket {
            t.note_shadow();
        }
        return Outcome::Shadow;
    }
    hand_to_hub(state, event, &source, durability)
}

/// Dedup: whether this is the first mutation with this scoped key within `window`; a retry
/// is counted as rejected (`duplicate`).
fn first_seen(state: &State, rule: &Rule, key: &str, window: Duration) -> bool {
    let first = state.dedup_first(key, window);
    if !first {
        state
            .metrics
            .events_rejected_total
            .with_label_values(&[rule.family.as_str(), "duplicate"])
            .inc();
    }
    first
}

/// Hands an event to the hub; under strict durability, the outcome holds the commit.
fn hand_to_hub(
    state: &State,
    event: Event,
    source: &Source<'_>,
    durability: Durability,
) -> Outcome {
    let family = event.family.clone();
    let (done, rx) = match durability {
        Durability::Strict => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(rx))
        }
        Durability::Relaxed => (None, None),
    };
    let ticket = match source {
        Source::Mutation { ticket, .. } => ticket.cloned(),
        Source::Admin => None,
    };
    if let Err(e) = state.hub.try_publish_for(event, done, ticket) {
        if let Source::Mutation { rule, .. } = source {
            state
                .metrics
                .events_rejected_total
                .with_label_values(&[family.as_str(), "hub_queue_full"])
                .inc();
            tracing::warn!(rule = %rule.location, error = %e, "event dropped: hub queue full");
        }
        return Outcome::Dropped(e);
    }
    match rx {
        Some(rx) => Outcome::Pending(rx),
        None => Outcome::Queued,
    }
}

/// Strict durability: waits (bounded by [`STRICT_COMMIT_WAIT`] each) until `commits` are
/// confirmed, logging any that failed or did not come in time. It is called from
/// synchronous code (a body filter), so the wait parks this worker thread with
/// `block_in_place`, which hands the thread's other tasks to the rest of the runtime.
pub fn wait_strict(commits: Vec<Commit>) {
    if commits.is_empty() {
        return;
    }
    let handle = tokio::runtime::Handle::current();
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        tracing::warn!("strict durability needs a multi-threaded runtime; not waiting");
        return;
    }
    let started = Instant::now();
    let results = tokio::task::block_in_place(|| {
        handle.block_on(async {
            let mut out = Vec::new();
            for rx in commits {
                out.push(tokio::time::timeout(STRICT_COMMIT_WAIT, rx).await);
            }
            out
        })
    });
    for r in results {
        match r {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => {
                tracing::error!(error = %e, "strict: the event of an acknowledged mutation was not stored")
            }
            Ok(Err(_)) | Err(_) => tracing::error!(
                waited_ms = started.elapsed().as_millis() as u64,
                "strict: no commit confirmation in time; releasing the answer"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Hub;
    use crate::metrics::Metrics;
    use crate::reload::ReloadHandle;
    use crate::store::memory::MemoryLog;
    use std::sync::Arc;

    const RULES: &str = r#"
upstream: {address: "127.0.0.1:1"}
rollout: {phase: 1}
families:
  jobs:
    phase: 1
    rules:
      - match: "POST /jobs/{id}"
        event: job.done
        topics: ["jobs"]
        data: {id: "{id}"}
event_types:
  job.done:
    family: jobs
    schema: {type: object}
"#;

    /// A state whose hub queue holds `queue` events; the hub runs only if the test starts it.
    fn state(queue: usize) -> Arc<State> {
        let cfg = crate::config::parse_str(RULES).expect("valid");
        let metrics = Arc::new(Metrics::new());
        let log = Arc::new(MemoryLog::new(10, Duration::from_secs(60)));
        let hub = Hub::new(log, queue, metrics.clone());
        State::for_tests(ReloadHandle::new("unused.yaml".into(), cfg), hub, metrics)
    }

    fn event() -> Event {
        Event {
            id: String::new(),
            event_type: "job.done".into(),
            family: "jobs".into(),
            topics: vec!["jobs".into()],
            ts: 0,
            origin: Default::default(),
            data: serde_json::json!({"id": "1"}),
            invalidate: Vec::new(),
            tenant: None,
            conflict: None,
        }
    }

    fn count(state: &State, metric: &str, labels: &[&str]) -> u64 {
        let m = &state.metrics;
        let c = match metric {
            "derived" => &m.events_derived_total,
            "shadow" => &m.events_shadow_total,
            _ => &m.events_rejected_total,
        };
        c.with_label_values(labels).get()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_admin_event_is_counted_and_committed_with_its_id() {
        let state = state(16);
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(state.hub.clone().run(shutdown));
        let outcome = publish(&state, event(), Source::Admin, Durability::Strict);
        assert!(matches!(outcome, Outcome::Pending(_)), "{outcome:?}");
        let id = outcome.committed().await.expect("stored");
        assert!(id.is_some_and(|id| id.ends_with("-1")));
        assert_eq!(count(&state, "derived", &["jobs", "job.done"]), 1);
    }

    #[test]
    fn a_retried_mutation_is_a_duplicate_and_a_shadow_event_is_not_delivered() {
        let state = state(16);
        let cfg = state.config();
        let rule = &cfg.rules[0];
        let window = Duration::from_secs(60);
        let source = |delivery| Source::Mutation {
            rule,
            dedup: Some(("rule|key", window)),
            delivery,
            ticket: None,
        };
        let first = publish(
            &state,
            event(),
            source(Delivery::Shadow),
            Durability::Relaxed,
        );
        assert!(matches!(first, Outcome::Shadow), "{first:?}");
        let again = publish(&state, event(), source(Delivery::Live), Durability::Relaxed);
        assert!(matches!(again, Outcome::Duplicate), "{again:?}");
        assert_eq!(count(&state, "derived", &["jobs", "job.done"]), 1);
        assert_eq!(count(&state, "shadow", &["jobs", "job.done"]), 1);
        assert_eq!(count(&state, "rejected", &["jobs", "duplicate"]), 1);
    }

    #[test]
    fn a_full_hub_drops_a_mutation_event_and_counts_it() {
        let state = state(1);
        let cfg = state.config();
        let source = || Source::Mutation {
            rule: &cfg.rules[0],
            dedup: None,
            delivery: Delivery::Live,
            ticket: None,
        };
        let queued = publish(&state, event(), source(), Durability::Relaxed);
        assert!(matches!(queued, Outcome::Queued), "{queued:?}");
        let dropped = publish(&state, event(), source(), Durability::Relaxed);
        assert!(
            matches!(dropped, Outcome::Dropped(HubError::Full)),
            "{dropped:?}"
        );
        assert_eq!(count(&state, "rejected", &["jobs", "hub_queue_full"]), 1);
        let admin = publish(&state, event(), Source::Admin, Durability::Strict);
        assert!(
            matches!(admin, Outcome::Dropped(HubError::Full)),
            "{admin:?}"
        );
        assert_eq!(
            count(&state, "rejected", &["jobs", "hub_queue_full"]),
            1,
            "the admin answers 503 itself; only a mutation's drop is counted"
        );
    }
}
