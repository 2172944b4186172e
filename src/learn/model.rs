//! What learn mode knows of the traffic: one `Route` per (method, path template) with its
//! counts, parameter names and examples, body shapes; for GET routes, each client's
//! repeated polls of each URL and when their answers changed; the recent confirmed
//! mutations; and, per (mutation route, polled route), how often a poll after the mutation
//! showed a change, and which of the mutation's fields equalled the polled URL's
//! parameters then. Everything is bounded; values used for matching are kept as hashes.

use super::path::{self, Cut, Seg};
use super::shape::{self, Redaction, Shape};
use crate::config::model::Learn;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};

/// Confirmed mutations kept for attribution, and for how long.
const MAX_RECENT: usize = 512;
const RECENT_MS: u64 = 120_000;
/// (client, URL) keys followed per GET route.
const MAX_POLL_KEYS: usize = 256;
/// Changes kept per polled route (with their possible causes).
const MAX_CHANGES: usize = 256;
/// Gaps between polls kept per route (for the interval).
const MAX_GAPS: usize = 64;
/// (mutation route, polled route) pairs tracked.
const MAX_PAIRS: usize = 20_000;
/// Distinct subscribed topics kept.
const MAX_TOPICS: usize = 256;
/// A mutation that reached the sidecar this soon after a poll may still show in its answer
/// (the backend took it first).
const RACE_MS: u64 = 100;
/// Polls of one URL by one client that make a route "polled".
pub const POLLED_AFTER: u64 = 3;

/// One forwarded request, as the engine reads it (bodies parsed, off the request path).
#[derive(Debug, Clone)]
pub struct Observation {
    /// When the request arrived and when its answer ended (ms since the epoch).
    pub started_ms: u64,
    pub ended_ms: u64,
    pub method: String,
    /// Normalized path, without the query.
    pub path: String,
    pub query: Vec<(String, String)>,
    /// The sender's credential fingerprint (never the credentials).
    pub fingerprint: u128,
    pub status: u16,
    pub request: Option<Value>,
    pub response: Option<Value>,
    /// A hash of the answer's bytes (polled answers' changes).
    pub body_hash: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Poll {
    last_ms: u64,
    hash: u64,
    count: u64,
}

/// A change of a polled answer and the mutations that may have caused it.
#[derive(Debug, Clone)]
pub struct Change {
    pub causes: Vec<Cause>,
}

/// A mutation seen between the two polls of a change, and which of its sources equalled
/// each parameter of the polled URL.
#[derive(Debug, Clone)]
pub struct Cause {
    pub route: usize,
    pub matches: Vec<Vec<String>>,
}

/// What one (mutation route, polled route) pair showed.
#[derive(Debug, Clone, Default)]
pub struct Pair {
    /// Polls after the mutation that showed a change, and that showed none.
    pub changed: u64,
    pub unchanged: u64,
    /// The same, counting only polls after which this route was the only mutation route
    /// (the evidence that tells it from mutations of other routes at the same moments).
    pub alone_changed: u64,
    pub alone_unchanged: u64,
    /// Per parameter of the polled route: source → (matched in a change, matched in none).
    pub by_param: Vec<BTreeMap<String, Matched>>,
}

/// Polls in which a source of the mutation equalled the polled URL's parameter: that
/// showed a change (`hit`) or none (`miss`), in all and when the mutation's route was the only
/// mutation route between the polls.
#[derive(Debug, Clone, Copy, Default)]
pub struct Matched {
    pub hit: u64,
    pub miss: u64,
    pub alone_hit: u64,
    pub alone_miss: u64,
}

impl Matched {
    fn count(&mut self, changed: bool, alone: bool) {
        match (changed, alone) {
            (true, a) => {
                self.hit += 1;
                self.alone_hit += u64::from(a);
            }
            (false, a) => {
                self.miss += 1;
                self.alone_miss += u64::from(a);
            }
        }
    }
}

impl Pair {
    fn count(&mut self, changed: bool, alone: bool) {
        let (all, solo) = if changed {
            (&mut self.changed, &mut self.alone_changed)
        } else {
            (&mut self.unchanged, &mut self.alone_unchanged)
        };
        *all += 1;
        if alone {
            *solo += 1;
        }
    }
}

#[derive(Debug, Clone)]
struct Mutation {
    started_ms: u64,
    ended_ms: u64,
    route: usize,
    sources: Vec<(String, u64)>,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub method: String,
    pub segs: Vec<Seg>,
    names: Vec<BTreeMap<String, u64>>,
    pub examples: Vec<Vec<String>>,
    pub count: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub request: Shape,
    pub response: Shape,
    /// 2xx answers without a JSON body.
    pub bodyless: u64,
    pub query_keys: BTreeMap<String, u64>,
    polls: HashMap<(u128, String), Poll>,
    pub changes: VecDeque<Change>,
    pub changes_total: u64,
    pub unchanged_total: u64,
    gaps: VecDeque<u64>,
}

impl Route {
    fn new(method: &str, segs: Vec<Seg>, params: usize) -> Route {
        Route {
            method: method.to_owned(),
            segs,
            names: vec![BTreeMap::new(); params],
            examples: vec![Vec::new(); params],
            count: 0,
            statuses: BTreeMap::new(),
            request: Shape::default(),
            response: Shape::default(),
            bodyless: 0,
            query_keys: BTreeMap::new(),
            polls: HashMap::new(),
            changes: VecDeque::new(),
            changes_total: 0,
            unchanged_total: 0,
            gaps: VecDeque::new(),
        }
    }

    /// The parameter names, by most votes.
    pub fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(self.names.len());
        for votes in &self.names {
            let best = votes
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(k, _)| k.clone());
            let mut name = best.unwrap_or_else(|| "param".into());
            if out.contains(&name) {
                name = format!("{name}{}", out.len() + 1);
            }
            out.push(name);
        }
        out
    }

    /// `PATCH /api/cards/{id}`.
    pub fn pattern(&self) -> String {
        format!(
            "{} {}",
            self.method,
            path::render(&self.segs, &self.names())
        )
    }

    pub fn is_mutation(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS")
    }

    pub fn confirmed(&self) -> u64 {
        self.statuses.range(200..300).map(|(_, n)| n).sum()
    }

    /// Most polls of one URL by one client, and how many (client, URL) keys polled.
    pub fn polling(&self) -> (u64, usize) {
        let most = self.polls.values().map(|p| p.count).max().unwrap_or(0);
        let keys = self
            .polls
            .values()
            .filter(|p| p.count >= POLLED_AFTER)
            .count();
        (most, keys)
    }

    pub fn is_polled(&self) -> bool {
        self.method == "GET" && self.polling().0 >= POLLED_AFTER
    }

    /// The median gap between two polls of one URL by one client.
    pub fn interval_ms(&self) -> Option<u64> {
        let mut g: Vec<u64> = self.gaps.iter().copied().collect();
        g.sort_unstable();
        g.get(g.len() / 2).copied()
    }

    fn record(
        &mut self,
        o: &Observation,
        cut: &Cut,
        red: &Redaction,
        limits: &Learn,
        hidden: &[String],
    ) {
        self.count += 1;
        *self.statuses.entry(o.status).or_default() += 1;
        for (i, name) in cut.names.iter().enumerate() {
            if let Some(votes) = self.names.get_mut(i) {
                *votes.entry(name.clone()).or_default() += 1;
            }
        }
        for (i, v) in cut.values.iter().enumerate() {
            let shown = if hidden.contains(v) {
                "<redacted>".to_owned()
            } else {
                v.chars().take(32).collect()
            };
            if let Some(ex) = self.examples.get_mut(i) {
                if ex.len() < limits.samples_per_route && !ex.contains(&shown) {
                    ex.push(shown);
                }
            }
        }
        for (k, _) in o.query.iter().take(32) {
            if self.query_keys.len() < 32 || self.query_keys.contains_key(k) {
                *self
                    .query_keys
                    .entry(k.chars().take(64).collect())
                    .or_default() += 1;
            }
        }
        if !(200..300).contains(&o.status) {
            return;
        }
        if let Some(b) = &o.request {
            self.request.add(b, red, limits.samples_per_route);
        }
        match &o.response {
            Some(b) => self.response.add(b, red, limits.samples_per_route),
            None => self.bodyless += 1,
        }
    }
}

/// The whole of what learn mode recorded.
#[derive(Debug, Default)]
pub struct Model {
    pub routes: Vec<Route>,
    index: HashMap<(String, Vec<Seg>), usize>,
    recent: VecDeque<Mutation>,
    pub pairs: HashMap<(usize, usize), Pair>,
    pub subscriptions: BTreeMap<String, u64>,
    pub observed: u64,
    /// Requests of routes past `learn.max_routes`: counted, not recorded.
    pub unrecorded: u64,
}

fn hash_of(s: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

impl Model {
    /// Records one request.
    pub fn observe(&mut self, o: &Observation, limits: &Learn) {
        self.observed += 1;
        let red = Redaction::new(&limits.redact);
        let cut = path::cut(&o.path, o.request.as_ref(), o.response.as_ref());
        let mut hidden = Vec::new();
        for b in [&o.request, &o.response].into_iter().flatten() {
            shape::redacted_values(b, &red, &mut hidden);
        }
        let Some(r) = self.route_index(&o.method, &cut, limits) else {
            self.unrecorded += 1;
            return;
        };
        self.routes[r].record(o, &cut, &red, limits, &hidden);
        if !(200..300).contains(&o.status) {
            return;
        }
        if o.method == "GET" {
            self.poll(r, o, &cut);
        } else if self.routes[r].is_mutation() {
            self.remember(r, o, &cut, &red);
        }
    }

    fn route_index(&mut self, method: &str, cut: &Cut, limits: &Learn) -> Option<usize> {
        let key = (method.to_owned(), cut.segs.clone());
        if let Some(i) = self.index.get(&key) {
            return Some(*i);
        }
        if self.routes.len() >= limits.max_routes {
            return None;
        }
        self.routes
            .push(Route::new(method, cut.segs.clone(), cut.values.len()));
        self.index.insert(key, self.routes.len() - 1);
        Some(self.routes.len() - 1)
    }

    /// A confirmed mutation: its sources (path parameters, query, body fields), hashed.
    fn remember(&mut self, r: usize, o: &Observation, cut: &Cut, red: &Redaction) {
        let names = self.routes[r].names();
        let mut sources: Vec<(String, String)> =
            names.into_iter().zip(cut.values.iter().cloned()).collect();
        sources.extend(
            o.query
                .iter()
                .filter(|(k, _)| shape::is_ident(k) && !red.hides(k))
                .map(|(k, v)| (format!("query.{k}"), v.clone())),
        );
        if let Some(b) = &o.request {
            sources.extend(shape::scalars("request", b, red));
        }
        if let Some(b) = &o.response {
            sources.extend(shape::scalars("response", b, red));
        }
        let sources = sources.into_iter().map(|(s, v)| (s, hash_of(&v))).collect();
        while self.recent.len() >= MAX_RECENT
            || self
                .recent
                .front()
                .is_some_and(|m| m.ended_ms + RECENT_MS < o.ended_ms)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(Mutation {
            started_ms: o.started_ms,
            ended_ms: o.ended_ms,
            route: r,
            sources,
        });
    }

    /// A 200 answer of a GET: compared with the same client's previous answer of the URL.
    fn poll(&mut self, p: usize, o: &Observation, cut: &Cut) {
        let mut url = o.path.clone();
        for (k, v) in &o.query {
            url.push_str(&format!("&{k}={v}"));
        }
        let route = &mut self.routes[p];
        let key = (o.fingerprint, url);
        if !route.polls.contains_key(&key) && route.polls.len() >= MAX_POLL_KEYS {
            return;
        }
        let entry = route.polls.entry(key).or_default();
        let prev = *entry;
        *entry = Poll {
            last_ms: o.started_ms,
            hash: o.body_hash,
            count: prev.count + 1,
        };
        if prev.count == 0 {
            return;
        }
        if route.gaps.len() >= MAX_GAPS {
            route.gaps.pop_front();
        }
        route
            .gaps
            .push_back(o.started_ms.saturating_sub(prev.last_ms));
        let changed = prev.hash != o.body_hash;
        self.attribute(p, &cut.values, (prev.last_ms, o.started_ms), changed);
    }

    /// Credits the mutations between two polls of a polled URL with its change (or its lack
    /// of one), and notes which of their sources equalled its parameters. A change may come
    /// from any mutation under way between the two polls' starts; a poll that shows none
    /// counts against the mutations wholly between them only (one that overlapped a poll
    /// may have shown in that poll already).
    fn attribute(&mut self, p: usize, values: &[String], (from, to): (u64, u64), changed: bool) {
        let hashes: Vec<u64> = values.iter().map(|v| hash_of(v)).collect();
        let between = |m: &&Mutation| {
            if changed {
                m.started_ms < to + RACE_MS && m.ended_ms > from
            } else {
                m.started_ms >= from && m.ended_ms <= to
            }
        };
        let mut routes: Vec<usize> = self
            .recent
            .iter()
            .filter(between)
            .map(|m| m.route)
            .collect();
        routes.sort_unstable();
        routes.dedup();
        let alone = routes.len() == 1;
        let mut causes = Vec::new();
        for m in self.recent.iter().filter(between) {
            if !self.pairs.contains_key(&(m.route, p)) && self.pairs.len() >= MAX_PAIRS {
                continue;
            }
            let pair = self.pairs.entry((m.route, p)).or_default();
            pair.by_param.resize_with(hashes.len(), BTreeMap::new);
            pair.count(changed, alone);
            let mut matches = vec![Vec::new(); hashes.len()];
            for (j, h) in hashes.iter().enumerate() {
                for (src, _) in m.sources.iter().filter(|(_, sh)| sh == h) {
                    pair.by_param[j]
                        .entry(src.clone())
                        .or_default()
                        .count(changed, alone);
                    matches[j].push(src.clone());
                }
            }
            causes.push(Cause {
                route: m.route,
                matches,
            });
        }
        let route = &mut self.routes[p];
        if !changed {
            route.unchanged_total += 1;
            return;
        }
        route.changes_total += 1;
        if route.changes.len() >= MAX_CHANGES {
            route.changes.pop_front();
        }
        route.changes.push_back(Change { causes });
    }

    /// The topics a stream asked for (names only).
    pub fn subscribed(&mut self, topics: &[String]) {
        for t in topics {
            if self.subscriptions.len() < MAX_TOPICS || self.subscriptions.contains_key(t) {
                *self.subscriptions.entry(t.clone()).or_default() += 1;
            }
        }
    }
}
