//! Polling made safe to retire: the coverage check and poll shielding.
//!
//! `polling.routes` name the GET endpoints the app polls and the topics whose events change
//! what they return (`GET /api/boards/{board}/cards` ← `board:{board}`).
//!
//! - Topic clock: every derived event (live or shadow) ticks a global counter and stamps its
//!   topics with it. "An event touched these topics since X" is then one comparison.
//!   Under `upstream.tenancy: host` the topics are scoped by tenant
//!   (`events::types::scoped_topic`, by the proxy and `touch_event`), and so are the
//!   validator keys: one tenant's events never move another tenant's clock. (Forcing stays
//!   per route pattern, across tenants: it only ever forwards more.)
//! - Coverage: for each polled (URL, credential fingerprint) the sidecar keeps a hash of the
//!   last answer's body and the clock when that request was forwarded. When an answer
//!   differs from the previous one, the change is covered if an event touched the route's
//!   topics since the previous request — checked at once, and again after a short grace
//!   (`coverage_grace_ms`) because the event of a mutation is derived when the mutation's
//!   answer ends, which can be a moment after a poll already shows its effect. A change no
//!   event explains is uncovered: counted, logged with its URL (never credentials) and shown
//!   with the coverage ratio over a window. Query values are redacted there
//!   (`?q=<redacted>`, keys kept): they may carry personal data.
//! - Shielding (`shield: true`, per route): answers get an ETag from the sidecar that stands
//!   for (URL, fingerprint, the route's stamp, the answer's content) and
//!   `cache-control: no-cache, private`, so the browser revalidates. A revalidation whose
//!   ETag is still current — the stamp unchanged, less than `max_staleness_seconds` since the
//!   backend was last asked, the family live and no breaker open — is answered 304 by the
//!   sidecar without calling the backend. Credentials are part of the key: two users never
//!   share a decision. Clients of one key (two tabs, anonymous readers of a public board)
//!   share the validator: a forwarded answer keeps the current ETag while the stamp holds, and
//!   if its content turns out to differ the ETag is withdrawn (the next revalidation of anyone
//!   is forwarded) rather than left to name two contents.
//! - The stamp of a route is the topics' clock plus the route's forcing generation. The
//!   proxy forces (bumps the generation of) routes whose change no event explains: the
//!   family's routes after a confirmed mutation whose event could not be derived, the routes
//!   sharing the first path segment after a 2xx mutation no rule matched. Forcing never
//!   counts as coverage: the forwarded poll that then shows the change is counted uncovered.
//!   Answers the backend marks `no-store` are never shielded (their caching is never
//!   weakened), nor are GETs of non-canonical paths (see the proxy module).

use crate::metrics::Metrics;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most uncovered-change checks waiting for their grace period.
const MAX_PENDING: usize = 10_000;
/// Most changes remembered per route for the coverage window.
const MAX_CHANGES_PER_ROUTE: usize = 100_000;

pub use crate::config::polling::{PollRoute, Polling};

/// (path and query, credential fingerprint).
pub type Key = (String, u128);

/// What a shield ETag stands for: the topics' clock and the route's forcing generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    pub version: u64,
    pub forced: u64,
}

/// A complete 200 answer of a polled route, as the proxy saw it.
pub struct Answer {
    pub key: Key,
    pub topics: Vec<String>,
    /// Hash of the body.
    pub body: u64,
    /// The topic clock when the request was forwarded.
    pub counter_at_request: u64,
    /// The ETag sent with it (shielded answers only).
    pub etag: Option<String>,
    /// The body hash that ETag was kept for, when it was the key's current one.
    pub predicted: Option<u64>,
    pub stamp: Stamp,
}

struct Seen {
    body: u64,
    /// The topic clock when this answer's request was forwarded.
    counter_at_request: u64,
    etag: Option<String>,
    /// The stamp the ETag stands for.
    stamp: Stamp,
    fetched: Instant,
    last_used: Instant,
}

struct Pending {
    route: String,
    family: String,
    url: String,
    topics: Vec<String>,
    since: u64,
    deadline: Instant,
}

#[derive(Default)]
struct RouteStats {
    family: String,
    /// (when, covered) of changes in the window.
    changes: VecDeque<(Instant, bool)>,
    covered_total: u64,
    uncovered_total: u64,
    last_uncovered: Option<(String, u64)>,
    shielded: u64,
    forwarded: u64,
}

#[derive(Default)]
struct Clock {
    topics: HashMap<String, u64>,
    /// Highest value ever evicted: an unknown topic reads as this, so evicting a topic
    /// can never make an old ETag look current again.
    floor: u64,
}

/// What the tracker reports for status, the dashboard and the gates.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RouteCoverage {
    pub route: String,
    pub family: String,
    pub changes: u64,
    pub covered: u64,
    /// covered / changes over the window; `None` without changes.
    pub coverage: Option<f64>,
    pub uncovered_total: u64,
    pub last_uncovered_url: Option<String>,
    pub last_uncovered_at_ms: Option<u64>,
    pub shielded: u64,
    pub forwarded: u64,
}

pub struct Tracker {
    counter: AtomicU64,
    clock: Mutex<Clock>,
    /// Forcing generation per route pattern (bounded by the routes ever configured).
    forced: Mutex<HashMap<String, u64>>,
    /// Forcing generation of every route at once (a gap in a shared log: events may be
    /// missing that no route's clock saw).
    forced_all: AtomicU64,
    /// Source of fresh ETags.
    nonce: AtomicU64,
    seen: Mutex<HashMap<Key, Seen>>,
    pending: Mutex<Vec<Pending>>,
    stats: Mutex<BTreeMap<String, RouteStats>>,
    /// Open streams per credential fingerprint (for the slow-down hint).
    streams: Mutex<HashMap<u128, u32>>,
    secret: std::collections::hash_map::RandomState,
    max_topics: usize,
    metrics: Arc<Metrics>,
}

/// A URL with its query values redacted (`/p?q=<redacted>&flag`), keys kept.
pub fn redact_query(url: &str) -> String {
    let Some((path, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) => format!("{k}=<redacted>"),
            None => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

/// The value below which an eighth of `values` lies: evicting up to it frees an eighth.
fn eighth_cutoff<T: Ord + Copy>(values: impl Iterator<Item = T>) -> Option<T> {
    let mut v: Vec<T> = values.collect();
    let cut = v.len() / 8;
    if v.is_empty() {
        return None;
    }
    v.select_nth_unstable(cut);
    Some(v[cut])
}

impl Tracker {
    pub fn new(max_topics: usize, metrics: Arc<Metrics>) -> Tracker {
        Tracker {
            counter: AtomicU64::new(0),
            clock: Mutex::new(Clock::default()),
            forced: Mutex::new(HashMap::new()),
            forced_all: AtomicU64::new(0),
            nonce: AtomicU64::new(0),
            seen: Mutex::new(HashMap::new()),
            pending: Mutex::new(Vec::new()),
            stats: Mutex::new(BTreeMap::new()),
            streams: Mutex::new(HashMap::new()),
            secret: Default::default(),
            max_topics: max_topics.max(16),
            metrics,
        }
    }

    /// An event (live or shadow) touched its topics, of its tenant (under
    /// `upstream.tenancy: host` each tenant's topics have their own clock entries, so a
    /// mutation on one tenant never ends, or keeps, another tenant's 304s).
    pub fn touch_event(&self, e: &crate::events::Event) {
        match e.tenant.as_deref() {
            None => self.touch(&e.topics),
            Some(t) => self.touch(&crate::events::types::scoped_topics(Some(t), &e.topics)),
        }
    }

    /// An event (live or shadow) touched these topics (already scoped by tenant, see
    /// `events::types::scoped_topic`).
    pub fn touch(&self, topics: &[String]) {
        let mut clock = self.clock.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.counter.fetch_add(1, Ordering::AcqRel) + 1;
        for t in topics {
            if clock.topics.len() >= self.max_topics && !clock.topics.contains_key(t) {
                // Evict the oldest eighth; unknown topics then read as the floor.
                if let Some(limit) = eighth_cutoff(clock.topics.values().copied()) {
                    clock.topics.retain(|_, v| *v > limit);
                    clock.floor = clock.floor.max(limit);
                }
            }
            clock.topics.insert(t.clone(), now);
        }
    }

    /// The clock now.
    pub fn counter(&self) -> u64 {
        self.counter.load(Ordering::Acquire)
    }

    /// The last tick that touched any of `topics`.
    pub fn version(&self, topics: &[String]) -> u64 {
        let clock = self.clock.lock().unwrap_or_else(|e| e.into_inner());
        topics
            .iter()
            .map(|t| clock.topics.get(t).copied().unwrap_or(clock.floor))
            .max()
            .unwrap_or(0)
    }

    /// The route's forcing generation.
    pub fn forced(&self, route: &str) -> u64 {
        let forced = self.forced.lock().unwrap_or_else(|e| e.into_inner());
        let own = forced.get(route).copied().unwrap_or(0);
        own.wrapping_add(self.forced_all.load(Ordering::Acquire))
    }

    /// Events may be missing that no topic clock saw (a gap or a loss in the event log):
    /// every route's current ETag stops being current, so the next poll of each is forwarded.
    pub fn force_all(&self) {
        self.forced_all.fetch_add(1, Ordering::AcqRel);
    }

    /// The stamp of a route's answer showing `topics`.
    pub fn stamp(&self, route: &str, topics: &[String]) -> Stamp {
        Stamp {
            version: self.version(topics),
            forced: self.forced(route),
        }
    }

    /// A change no event explains may have touched these routes: their current ETags stop
    /// being current, so the next poll of each is forwarded.
    pub fn force<'a>(&self, routes: impl Iterator<Item = &'a PollRoute>) {
        let mut forced = self.forced.lock().unwrap_or_else(|e| e.into_inner());
        for r in routes.filter(|r| r.shield) {
            *forced.entry(r.pattern.as_str().to_owned()).or_insert(0) += 1;
        }
    }

    /// Whether `if_none_match` names the current ETag of `key`: the sidecar may answer 304.
    pub fn fresh(&self, key: &Key, if_none_match: &str, stamp: Stamp, max_age: Duration) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = seen.get_mut(key) else {
            return false;
        };
        let Some(etag) = &s.etag else { return false };
        let named = if_none_match
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == etag);
        if named && s.stamp == stamp && s.fetched.elapsed() < max_age {
            s.last_used = Instant::now();
            true
        } else {
            false
        }
    }

    /// The ETag for a shielded answer about to be sent, and the body hash it is kept for:
    /// the key's current ETag while the stamp holds (every client of the key keeps a valid
    /// validator), else a new one.
    pub fn etag_for(&self, key: &Key, stamp: Stamp) -> (String, Option<u64>) {
        {
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = seen.get(key).filter(|s| s.stamp == stamp) {
                if let Some(etag) = &s.etag {
                    return (etag.clone(), Some(s.body));
                }
            }
        }
        let mut h = self.secret.build_hasher();
        h.write(key.0.as_bytes());
        h.write_u128(key.1);
        h.write_u64(stamp.version);
        h.write_u64(stamp.forced);
        h.write_u64(self.nonce.fetch_add(1, Ordering::Relaxed));
        (format!("\"s{:016x}\"", h.finish()), None)
    }

    /// A complete 200 answer of a polled route: remembers it and checks coverage.
    pub fn observe(&self, route: &PollRoute, a: Answer, cfg: &Polling) -> Option<bool> {
        let Answer {
            key,
            topics,
            body,
            counter_at_request,
            etag,
            predicted,
            stamp,
        } = a;
        // An ETag kept for another content no longer names one answer: withdraw it.
        let etag = etag.filter(|_| predicted.is_none_or(|p| p == body));
        let now = Instant::now();
        let prev = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() >= cfg.max_tracked && !seen.contains_key(&key) {
                // Forget the least recently used eighth.
                if let Some(limit) = eighth_cutoff(seen.values().map(|s| s.last_used)) {
                    seen.retain(|_, s| s.last_used > limit);
                }
            }
            seen.insert(
                key.clone(),
                Seen {
                    body,
                    counter_at_request,
                    etag,
                    stamp,
                    fetched: now,
                    last_used: now,
                },
            )
        };
        let prev = prev?;
        if prev.body == body {
            return None;
        }
        let since = prev.counter_at_request;
        if self.version(&topics) > since {
            self.record(route.pattern.as_str(), &route.family, &key.0, true);
            return Some(true);
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() < MAX_PENDING {
            pending.push(Pending {
                route: route.pattern.as_str().to_owned(),
                family: route.family.clone(),
                url: key.0,
                topics,
                since,
                deadline: now + cfg.coverage_grace,
            });
        } else {
            drop(pending);
            self.record(route.pattern.as_str(), &route.family, &key.0, false);
            return Some(false);
        }
        None
    }

    /// Settles the changes whose grace period is over (called every second).
    pub fn settle(&self) {
        let now = Instant::now();
        let due: Vec<Pending> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let (due, wait) = std::mem::take(&mut *pending)
                .into_iter()
                .partition(|p| p.deadline <= now || self.version(&p.topics) > p.since);
            *pending = wait;
            due
        };
        for p in due {
            let covered = self.version(&p.topics) > p.since;
            self.record(&p.route, &p.family, &p.url, covered);
        }
    }

    fn record(&self, route: &str, family: &str, url: &str, covered: bool) {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let s = stats.entry(route.to_owned()).or_default();
        s.family = family.to_owned();
        if s.changes.len() >= MAX_CHANGES_PER_ROUTE {
            s.changes.pop_front();
        }
        s.changes.push_back((Instant::now(), covered));
        self.metrics
            .poll_changes_total
            .with_label_values(&[family, route, if covered { "true" } else { "false" }])
            .inc();
        if covered {
            s.covered_total += 1;
        } else {
            s.uncovered_total += 1;
            let url = redact_query(url);
            let url = url.as_str();
            s.last_uncovered = Some((url.to_owned(), crate::events::types::now_ms()));
            tracing::warn!(
                family,
                route,
                url,
                "uncovered change: a polled answer changed and no event on its topics explains it"
            );
        }
    }

    /// Counts a poll answered by the sidecar (`shielded`) or forwarded.
    pub fn count_poll(&self, route: &PollRoute, shielded: bool) {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let s = stats.entry(route.pattern.as_str().to_owned()).or_default();
        s.family = route.family.clone();
        if shielded {
            s.shielded += 1;
        } else {
            s.forwarded += 1;
        }
        let outcome = if shielded { "shielded" } else { "forwarded" };
        self.metrics
            .polls_total
            .with_label_values(&[route.pattern.as_str(), outcome])
            .inc();
    }

    /// Coverage per route over `window`.
    pub fn coverage(&self, window: Duration) -> Vec<RouteCoverage> {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let cutoff = Instant::now().checked_sub(window);
        stats
            .iter_mut()
            .map(|(route, s)| {
                if let Some(cutoff) = cutoff {
                    while s.changes.front().is_some_and(|(t, _)| *t < cutoff) {
                        s.changes.pop_front();
                    }
                }
                let changes = s.changes.len() as u64;
                let covered = s.changes.iter().filter(|(_, c)| *c).count() as u64;
                RouteCoverage {
                    route: route.clone(),
                    family: s.family.clone(),
                    changes,
                    covered,
                    coverage: (changes > 0).then(|| covered as f64 / changes as f64),
                    uncovered_total: s.uncovered_total,
                    last_uncovered_url: s.last_uncovered.as_ref().map(|(u, _)| u.clone()),
                    last_uncovered_at_ms: s.last_uncovered.as_ref().map(|(_, t)| *t),
                    shielded: s.shielded,
                    forwarded: s.forwarded,
                }
            })
            .collect()
    }

    pub fn stream_opened(&self, fp: u128) {
        *self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(fp)
            .or_insert(0) += 1;
    }

    pub fn stream_closed(&self, fp: u128) {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = streams.get_mut(&fp) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                streams.remove(&fp);
            }
        }
    }

    /// Whether these credentials hold an open stream.
    pub fn has_stream(&self, fp: u128) -> bool {
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&fp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::route::RoutePattern;
    use crate::events::template::StrTemplate;

    fn answer(
        key: Key,
        topics: Vec<String>,
        body: u64,
        counter_at_request: u64,
        etag: Option<String>,
        version: u64,
    ) -> Answer {
        Answer {
            key,
            topics,
            body,
            counter_at_request,
            etag,
            predicted: None,
            stamp: Stamp { version, forced: 0 },
        }
    }

    fn route() -> PollRoute {
        PollRoute {
            location: "polling.routes[0]".into(),
            pattern: RoutePattern::parse("GET /api/boards/{board}/cards").unwrap(),
            family: "cards".into(),
            topics: vec![StrTemplate::parse("board:{board}").unwrap()],
            shield: true,
        }
    }

    #[test]
    fn changes_are_covered_by_events_on_their_topics() {
        let t = Tracker::new(100, Arc::new(Metrics::new()));
        let cfg = Polling {
            coverage_grace: Duration::ZERO,
            ..Default::default()
        };
        let r = route();
        let key: Key = ("/api/boards/1/cards".into(), 7);
        let topics = vec!["board:1".to_string()];
        assert_eq!(
            t.observe(
                &r,
                answer(key.clone(), topics.clone(), 1, t.counter(), None, 0),
                &cfg
            ),
            None
        );
        t.touch(&topics);
        // Asked after the event: the change it shows is explained by it.
        assert_eq!(
            t.observe(
                &r,
                answer(key.clone(), topics.clone(), 2, t.counter(), None, 0),
                &cfg
            ),
            Some(true)
        );
        // A change with no event: settled as uncovered once the grace is over.
        let c = t.counter();
        assert_eq!(
            t.observe(&r, answer(key.clone(), topics.clone(), 3, c, None, 0), &cfg),
            None
        );
        t.settle();
        let cov = t.coverage(Duration::from_secs(60));
        assert_eq!(cov[0].changes, 2);
        assert_eq!(cov[0].covered, 1);
        assert_eq!(
            cov[0].last_uncovered_url.as_deref(),
            Some("/api/boards/1/cards")
        );
    }

    #[test]
    fn etags_are_per_key_and_version() {
        let t = Tracker::new(100, Arc::new(Metrics::new()));
        let cfg = Polling::default();
        let r = route();
        let alice: Key = ("/api/boards/1/cards".into(), 1);
        let bob: Key = ("/api/boards/1/cards".into(), 2);
        let topics = vec!["board:1".to_string()];
        let s0 = t.stamp(r.pattern.as_str(), &topics);
        let v = s0.version;
        let (etag, _) = t.etag_for(&alice, s0);
        let stamp = |version| Stamp { version, forced: 0 };
        t.observe(
            &r,
            answer(alice.clone(), topics.clone(), 1, 0, Some(etag.clone()), v),
            &cfg,
        );
        assert!(t.fresh(&alice, &etag, stamp(v), Duration::from_secs(30)));
        assert!(
            !t.fresh(&bob, &etag, stamp(v), Duration::from_secs(30)),
            "other credentials"
        );
        t.touch(&topics);
        let v2 = t.version(&topics);
        assert!(
            !t.fresh(&alice, &etag, stamp(v2), Duration::from_secs(30)),
            "an event since"
        );
        assert!(!t.fresh(&alice, &etag, stamp(v), Duration::ZERO), "too old");
    }

    #[test]
    fn one_key_keeps_one_validator_while_its_content_holds() {
        let t = Tracker::new(100, Arc::new(Metrics::new()));
        let cfg = Polling::default();
        let r = route();
        let key: Key = ("/api/boards/1/cards".into(), 1);
        let topics = vec!["board:1".to_string()];
        let max = Duration::from_secs(30);
        let st = t.stamp(r.pattern.as_str(), &topics);
        let (e1, p1) = t.etag_for(&key, st);
        assert_eq!(p1, None);
        let mut a = answer(key.clone(), topics.clone(), 10, 0, Some(e1.clone()), 0);
        a.stamp = st;
        t.observe(&r, a, &cfg);
        // A second tab forwarded with the same content gets the same ETag.
        let (e2, p2) = t.etag_for(&key, st);
        assert_eq!((e2.as_str(), p2), (e1.as_str(), Some(10)));
        let mut a = answer(key.clone(), topics.clone(), 10, 0, Some(e2), 0);
        (a.predicted, a.stamp) = (p2, st);
        t.observe(&r, a, &cfg);
        assert!(t.fresh(&key, &e1, st, max), "both tabs revalidate");
        // Content changed under the same ETag: withdrawn, nobody gets a 304 for it.
        let mut a = answer(key.clone(), topics.clone(), 11, 0, Some(e1.clone()), 0);
        (a.predicted, a.stamp) = (Some(10), st);
        t.observe(&r, a, &cfg);
        assert!(!t.fresh(&key, &e1, st, max));
        let (e3, p3) = t.etag_for(&key, st);
        assert_ne!(e3, e1);
        assert_eq!(p3, None);
    }

    /// A route whose first answer was observed with its ETag, which is current (a 304).
    fn shielded(t: &Tracker, cfg: &Polling) -> (PollRoute, Key, Vec<String>, String) {
        let r = route();
        let key: Key = ("/api/boards/1/cards".into(), 1);
        let topics = vec!["board:1".to_string()];
        let st = t.stamp(r.pattern.as_str(), &topics);
        let (e, _) = t.etag_for(&key, st);
        let mut a = answer(
            key.clone(),
            topics.clone(),
            1,
            t.counter(),
            Some(e.clone()),
            0,
        );
        a.stamp = st;
        t.observe(&r, a, cfg);
        let max = Duration::from_secs(30);
        assert!(t.fresh(&key, &e, t.stamp(r.pattern.as_str(), &topics), max));
        (r, key, topics, e)
    }

    #[test]
    fn a_gap_in_the_log_ends_every_routes_304s() {
        let t = Tracker::new(100, Arc::new(Metrics::new()));
        let (r, key, topics, e) = shielded(&t, &Polling::default());
        let max = Duration::from_secs(30);
        t.force_all();
        let after = t.stamp(r.pattern.as_str(), &topics);
        assert!(!t.fresh(&key, &e, after, max), "after a gap: forwarded");
    }

    #[test]
    fn forcing_a_route_ends_its_304s_without_covering() {
        let t = Tracker::new(100, Arc::new(Metrics::new()));
        let cfg = Polling {
            coverage_grace: Duration::ZERO,
            ..Default::default()
        };
        let (r, key, topics, e) = shielded(&t, &cfg);
        let max = Duration::from_secs(30);
        t.force(std::iter::once(&r));
        let st2 = t.stamp(r.pattern.as_str(), &topics);
        assert!(!t.fresh(&key, &e, st2, max), "forced: forwarded");
        let mut a = answer(key.clone(), topics.clone(), 2, t.counter(), None, 0);
        a.stamp = st2;
        t.observe(&r, a, &cfg);
        t.settle();
        let cov = t.coverage(Duration::from_secs(60));
        assert_eq!(
            (cov[0].changes, cov[0].covered),
            (1, 0),
            "counted uncovered"
        );
    }

    #[test]
    fn uncovered_urls_hide_query_values() {
        assert_eq!(
            redact_query("/api/search?q=alice%40x.org&page=2&flag"),
            "/api/search?q=<redacted>&page=<redacted>&flag"
        );
        assert_eq!(redact_query("/api/boards/1/cards"), "/api/boards/1/cards");
    }

    #[test]
    fn evicted_topics_never_read_older() {
        let t = Tracker::new(16, Arc::new(Metrics::new()));
        let old = vec!["t0".to_string()];
        let v0 = t.version(&old);
        for i in 0..100 {
            t.touch(&[format!("x{i}")]);
        }
        assert!(
            t.version(&old) > v0,
            "an unknown topic reads as the eviction floor"
        );
        t.touch(&old);
        let v = t.version(&old);
        for i in 100..200 {
            t.touch(&[format!("x{i}")]);
        }
        assert!(t.version(&old) >= v);
    }
}
