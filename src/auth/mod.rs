//! Topic authorization delegated to the backend.
//!
//! The legacy app already knows who may see what. For every topic a stream asks for, the
//! first `authorization.rules` entry whose pattern matches decides: `public: true` allows
//! without asking; otherwise the sidecar sends the rule's check request (e.g.
//! `GET /api/boards/{board}`) to the backend with the subscriber's own credentials (only
//! the headers named in `forward_headers`). A 2xx allows, optionally subject to a condition
//! on the JSON answer (`{response.id} == {user}`); anything else denies. A topic no rule
//! matches is denied. A check that fails (timeout, connection error, 5xx) denies too, with
//! its own reason: the sidecar fails closed.
//!
//! Decisions are cached per (credential fingerprint, topic) for a TTL in a bounded map, and
//! identical concurrent checks share one backend call (`check.rs`). Check slots are shared
//! fairly: one credential or one address cannot take them all; a check that finds no slot in
//! time is `check_busy` (503 + Retry-After to the stream, never cached as a denial). Credentials are never
//! logged, counted by label or shown: only a keyed hash of them (the fingerprint) is kept.
//!
//! Who a subscriber is (`presence.identity`, for presence) is asked of the backend the same
//! way, cached and coalesced per credentials (`identity.rs`).

pub mod check;
pub mod identity;
pub mod slots;

pub use crate::config::auth::{AuthRule, Check, Policy};
pub use crate::events::condition::Condition;
pub use crate::events::pattern::TopicPattern;
pub use crate::headers::CREDENTIAL_HEADERS;
pub use check::Authorizer;

use std::collections::BTreeSet;

/// Why a topic was denied (also a metrics label and what the client is told).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// No rule matches the topic.
    NoRule,
    /// The backend answered the check with a non-2xx status.
    Forbidden,
    /// The backend allowed, but the rule's condition on its answer does not hold.
    Condition,
    /// The check could not be made or the backend failed (timeout, connect error, 5xx):
    /// denied because the sidecar fails closed.
    CheckFailed,
    /// No check slot came free in time (the sidecar's checks are all busy): not a decision
    /// about the subscriber, never cached; the stream answers 503 with Retry-After.
    Busy,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoRule => "no_rule",
            DenyReason::Forbidden => "forbidden",
            DenyReason::Condition => "condition_failed",
            DenyReason::CheckFailed => "check_failed",
            DenyReason::Busy => "check_busy",
        }
    }
}

/// One topic's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(DenyReason),
}

impl Decision {
    pub fn allowed(self) -> bool {
        self == Decision::Allow
    }
}

/// A subscriber's credentials: the forwarded header values, and their fingerprint (what
/// caches, logs and status may show).
#[derive(Clone, Default)]
pub struct Credentials {
    headers: Vec<(String, String)>,
    pub fingerprint: u128,
    /// The subscriber's `Host`, sent with checks (a backend may serve several hosts); not a
    /// credential, not part of the fingerprint.
    pub host: Option<String>,
    /// The subscriber's address: its checks share a bounded number of slots.
    pub client: Option<std::net::IpAddr>,
}

impl std::fmt::Debug for Credentials {
    // Never print the values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({})", self.fingerprint_hex())
    }
}

impl Credentials {
    /// Keeps the headers the policy forwards (lower-case name, value) and fingerprints them.
    pub fn new(
        authorizer: &Authorizer,
        policy: &Policy,
        headers: &[(String, String)],
    ) -> Credentials {
        let mut kept: Vec<(String, String)> = headers
            .iter()
            .filter(|(k, _)| policy.forward_headers.iter().any(|f| f == k))
            .cloned()
            .collect();
        kept.sort();
        let fingerprint = authorizer.fingerprint(&kept);
        Credentials {
            headers: kept,
            fingerprint,
            host: None,
            client: None,
        }
    }

    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// Drops the header values (a stream with nothing to re-check keeps only the
    /// fingerprint).
    pub fn forget_values(&mut self) {
        self.headers = Vec::new();
        self.host = None;
    }

    /// A hash of the kept header values that every instance computes alike (the fingerprint
    /// is keyed per process): what scopes a browser's receipts across instances. Read it
    /// before `forget_values`.
    pub fn shared_scope(&self) -> u128 {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for (k, v) in &self.headers {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
        let d = h.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&d[..16]);
        u128::from_be_bytes(first)
    }

    /// The first 16 hex digits of the fingerprint, for logs.
    pub fn fingerprint_hex(&self) -> String {
        format!("{:016x}", (self.fingerprint >> 64) as u64)
    }
}

/// The outcome of authorizing a stream's topics.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Allowed topics, sorted.
    pub granted: Vec<String>,
    /// Denied topics with their reasons, sorted by topic.
    pub denied: Vec<(String, DenyReason)>,
}

impl Grants {
    /// Splits decisions for `topics` (in order) into grants, with the earliest instant a
    /// granted topic must be decided again.
    pub fn from_decisions(
        topics: &[String],
        decisions: Vec<(Decision, Option<std::time::Instant>)>,
    ) -> (Grants, Option<std::time::Instant>) {
        let mut grants = Grants::default();
        let mut recheck: Option<std::time::Instant> = None;
        for (topic, (decision, until)) in topics.iter().zip(decisions) {
            match decision {
                Decision::Allow => {
                    grants.granted.push(topic.clone());
                    if let Some(u) = until {
                        recheck = Some(recheck.map_or(u, |r| r.min(u)));
                    }
                }
                Decision::Deny(r) => grants.denied.push((topic.clone(), r)),
            }
        }
        (grants, recheck)
    }

    pub fn denied_topics(&self) -> Vec<&str> {
        self.denied.iter().map(|(t, _)| t.as_str()).collect()
    }

    /// `{topic: reason}` for the hello frame and refusals.
    pub fn denied_reasons(&self) -> serde_json::Map<String, serde_json::Value> {
        self.denied
            .iter()
            .map(|(t, r)| (t.clone(), serde_json::Value::from(r.as_str())))
            .collect()
    }
}

/// The topics among `granted` that need re-checking (not public), sorted.
pub fn checked_topics(granted: &[String], policy: &Policy) -> Vec<String> {
    let set: BTreeSet<&String> = granted
        .iter()
        .filter(|t| {
            policy
                .rule_for(t)
                .is_some_and(|(_, r, _)| r.check.is_some())
        })
        .collect();
    set.into_iter().cloned().collect()
}
