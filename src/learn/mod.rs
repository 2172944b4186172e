//! Learn mode (`learn.enabled`, hot): the sidecar records the shapes of the traffic it
//! forwards and proposes the rules that would turn it into events (`GET /admin/learn`,
//! `sse-sidecar learn`).
//!
//! The proxy fills a [`Sample`] per forwarded request — method, normalized path, query,
//! the sender's credential fingerprint (never a credential), status, and at most
//! `learn.max_body_bytes` of each JSON body plus a hash of the whole answer — and hands it
//! over with one non-blocking send on a bounded queue (`QUEUE` samples, `MAX_QUEUED_BYTES`
//! of bodies): the pass-through path never waits on learn mode; a sample that finds the
//! queue full is dropped and counted. The
//! engine task owns the parsing and the [`model::Model`] (routes, shapes, polls, changes,
//! attribution), bounded by `learn.max_routes` and the model's own caps. Cookies, the
//! Authorization header and every other header are never read; body values of redacted
//! fields ([`shape::BUILT_IN_REDACTED`] and `learn.redact`) are never kept, and neither
//! are query values (only their keys are shown).

pub mod model;
pub mod path;
pub mod shape;
pub mod suggest;
pub mod yaml;

use crate::config::model::Learn;
use crate::events::template::Body;
use crate::metrics::Metrics;
use bytes::BytesMut;
use model::{Model, Observation};
use serde_json::{json, Value};
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// Samples waiting for the engine, and the body bytes they may hold together; past either,
/// a sample is dropped (counted).
const QUEUE: usize = 1024;
const MAX_QUEUED_BYTES: usize = 16 << 20;
/// Topics of one stream request noted, at most.
const MAX_STREAM_TOPICS: usize = 32;

/// What the proxy records of one forwarded request while it streams through.
pub struct Sample {
    started_ms: u64,
    method: String,
    path: String,
    query: Vec<(String, String)>,
    fingerprint: u128,
    cap: usize,
    req: BytesMut,
    req_over: bool,
    status: u16,
    encoding: Option<String>,
    resp: BytesMut,
    resp_over: bool,
    hasher: std::collections::hash_map::DefaultHasher,
}

impl Sample {
    pub fn start(
        limits: &Learn,
        method: &str,
        path: &str,
        query: Vec<(String, String)>,
        fingerprint: u128,
    ) -> Box<Sample> {
        Box::new(Sample {
            started_ms: crate::events::types::now_ms(),
            method: method.to_owned(),
            path: path.to_owned(),
            query,
            fingerprint,
            cap: limits.max_body_bytes,
            req: BytesMut::new(),
            req_over: false,
            status: 0,
            encoding: None,
            resp: BytesMut::new(),
            resp_over: false,
            hasher: Default::default(),
        })
    }

    pub fn request_chunk(&mut self, chunk: &[u8]) {
        append(&mut self.req, &mut self.req_over, chunk, self.cap);
    }

    /// The upstream's answer head (1xx heads are skipped).
    pub fn response_head(&mut self, status: u16, encoding: Option<&str>) {
        if status >= 200 {
            self.status = status;
            self.encoding = encoding.map(str::to_owned);
        }
    }

    pub fn response_chunk(&mut self, chunk: &[u8]) {
        self.hasher.write(chunk);
        append(&mut self.resp, &mut self.resp_over, chunk, self.cap);
    }

    /// Parses what was kept (on the engine's task, not the request's).
    /// The body bytes it holds.
    fn bytes(&self) -> usize {
        self.req.len() + self.resp.len()
    }

    fn observe(self: Box<Self>) -> Observation {
        let s = *self;
        let json = |b: Body| match b {
            Body::Json(v) => Some(v),
            _ => None,
        };
        let request = json(Body::from_capture(&s.req, s.req_over));
        let response = json(Body::from_encoded(
            &s.resp,
            s.resp_over,
            s.encoding.as_deref(),
            s.cap,
        ));
        Observation {
            started_ms: s.started_ms,
            ended_ms: crate::events::types::now_ms().max(s.started_ms),
            method: s.method,
            path: s.path,
            query: s.query,
            fingerprint: s.fingerprint,
            status: s.status,
            request,
            response,
            body_hash: s.hasher.finish(),
        }
    }
}

fn append(buf: &mut BytesMut, over: &mut bool, chunk: &[u8], cap: usize) {
    if *over {
        return;
    }
    if buf.len() + chunk.len() > cap {
        *over = true;
        buf.clear();
        return;
    }
    buf.extend_from_slice(chunk);
}

enum Msg {
    Sample(Box<Sample>),
    Topics(Vec<String>),
}

/// The learn mode engine: the queue's sending side for the proxy, the model for the admin.
pub struct Learner {
    tx: mpsc::Sender<Msg>,
    rx: Mutex<Option<mpsc::Receiver<Msg>>>,
    model: Mutex<Model>,
    metrics: Arc<Metrics>,
    /// Body bytes of the samples in the queue.
    queued_bytes: AtomicUsize,
    /// This second's GET samples: the second (since the epoch) in the high 32 bits, the
    /// count in the low ones.
    reads: AtomicU64,
}

impl Learner {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Learner> {
        let (tx, rx) = mpsc::channel(QUEUE);
        Arc::new(Learner {
            tx,
            rx: Mutex::new(Some(rx)),
            model: Mutex::new(Model::default()),
            metrics,
            queued_bytes: AtomicUsize::new(0),
            reads: AtomicU64::new(0),
        })
    }

    /// Whether a GET may be sampled now: at most `per_second` a second (one atomic update;
    /// the others are forwarded without a sample and counted as skipped).
    pub fn admit_read(&self, per_second: u32) -> bool {
        self.admit_read_at(crate::events::types::now_ms(), per_second)
    }

    fn admit_read_at(&self, now_ms: u64, per_second: u32) -> bool {
        let second = (now_ms / 1000) as u32;
        let admitted = self
            .reads
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                let (s, n) = ((v >> 32) as u32, v as u32);
                match (s == second, n < per_second) {
                    (false, _) => Some((u64::from(second) << 32) | 1),
                    (true, true) => Some(v + 1),
                    (true, false) => None,
                }
            })
            .is_ok();
        if !admitted {
            self.metrics
                .learn_samples_total
                .with_label_values(&["skipped"])
                .inc();
        }
        admitted
    }

    /// Hands a finished sample to the engine; never waits (a full queue drops it).
    pub fn record(&self, sample: Box<Sample>) {
        let size = sample.bytes();
        if self.queued_bytes.fetch_add(size, Ordering::Relaxed) + size > MAX_QUEUED_BYTES {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            self.metrics
                .learn_samples_total
                .with_label_values(&["dropped"])
                .inc();
            return;
        }
        if !self.send(Msg::Sample(sample)) {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
        }
    }

    /// The topics a stream request asked for (the names only), to name the topics of the
    /// polled routes as the page's streams do.
    pub fn note_topics(&self, topics: &[String]) {
        let list: Vec<String> = topics.iter().take(MAX_STREAM_TOPICS).cloned().collect();
        if !list.is_empty() {
            self.send(Msg::Topics(list));
        }
    }

    /// False when the queue was full (the message is dropped and counted).
    fn send(&self, msg: Msg) -> bool {
        let sent = self.tx.try_send(msg).is_ok();
        if !sent {
            self.metrics
                .learn_samples_total
                .with_label_values(&["dropped"])
                .inc();
        }
        sent
    }

    /// Reads the queue until shutdown (or until its sender is gone); `limits` gives the
    /// current `learn` section.
    pub async fn run(
        self: Arc<Self>,
        limits: impl Fn() -> Learn,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        loop {
            let msg = tokio::select! {
                m = rx.recv() => m,
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() { break }
                    continue;
                }
            };
            let Some(msg) = msg else { break };
            self.apply(msg, &limits());
        }
    }

    fn apply(&self, msg: Msg, limits: &Learn) {
        let mut m = self.model.lock().unwrap_or_else(|e| e.into_inner());
        match msg {
            Msg::Topics(t) => m.subscribed(&t),
            Msg::Sample(s) => {
                self.queued_bytes.fetch_sub(s.bytes(), Ordering::Relaxed);
                let before = m.unrecorded;
                m.observe(&s.observe(), limits);
                let outcome = if m.unrecorded > before {
                    "unrecorded"
                } else {
                    "recorded"
                };
                self.metrics
                    .learn_samples_total
                    .with_label_values(&[outcome])
                    .inc();
                self.metrics.learn_routes.set(m.routes.len() as i64);
            }
        }
    }

    /// `GET /admin/learn`: what was recorded and what it suggests, as JSON.
    pub fn report(&self, enabled: bool) -> Value {
        let m = self.model.lock().unwrap_or_else(|e| e.into_inner());
        let s = suggest::suggest(&m);
        json!({
            "enabled": enabled,
            "observed": m.observed,
            "unrecorded": m.unrecorded,
            "routes": m.routes.iter().map(route_json).collect::<Vec<_>>(),
            "subscribed_topics": m.subscriptions.keys().collect::<Vec<_>>(),
            "suggestions": suggestions_json(&s),
            "notes": s.notes,
        })
    }

    /// The suggested config fragment; families in `mode` (`shadow` or `live`).
    pub fn suggested_yaml(&self, mode: &str) -> String {
        let m = self.model.lock().unwrap_or_else(|e| e.into_inner());
        yaml::fragment(&suggest::suggest(&m), mode, m.observed)
    }
}

fn route_json(r: &model::Route) -> Value {
    let (most, keys) = r.polling();
    let names = r.names();
    json!({
        "route": r.pattern(),
        "requests": r.count,
        "statuses": r.statuses,
        "params": names.iter().zip(&r.examples).map(|(n, ex)| json!({"name": n, "examples": ex})).collect::<Vec<_>>(),
        "query_keys": r.query_keys.keys().collect::<Vec<_>>(),
        "request": r.request.describe(),
        "response": r.response.describe(),
        "polled": r.is_polled().then(|| json!({
            "clients": keys, "most_polls": most, "interval_ms": r.interval_ms(),
            "changes": r.changes_total, "unchanged": r.unchanged_total,
        })),
    })
}

fn suggestions_json(s: &suggest::Suggestions) -> Value {
    let rules: Vec<Value> = s
        .rules
        .iter()
        .map(|r| {
            json!({
                "family": r.family, "match": r.pattern, "event": r.event, "topics": r.topics,
                "invalidate": r.invalidate, "confidence": r.confidence, "evidence": r.evidence,
            })
        })
        .collect();
    let polling: Vec<Value> = s
        .polling
        .iter()
        .map(|p| json!({"match": p.pattern, "family": p.family, "topics": p.topics, "shield": p.shield, "evidence": p.evidence}))
        .collect();
    let types: serde_json::Map<String, Value> = s
        .event_types
        .iter()
        .map(|(n, (f, schema))| (n.clone(), json!({"family": f, "schema": schema})))
        .collect();
    let authorization: Vec<Value> = s
        .authorization
        .iter()
        .map(|(t, c)| json!({"topic": t, "check": c}))
        .collect();
    json!({"rules": rules, "polling": polling, "event_types": types, "authorization": authorization})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_sampled_up_to_the_budget_of_each_second() {
        let l = Learner::new(Arc::new(Metrics::new()));
        let t = 1_796_000_000_000;
        assert!((0..3).all(|i| l.admit_read_at(t + i, 3)));
        assert!(
            !l.admit_read_at(t + 999, 3),
            "the 4th in the same second is skipped"
        );
        assert!(l.admit_read_at(t + 1000, 3), "a new second, a new budget");
        let skipped = l
            .metrics
            .learn_samples_total
            .with_label_values(&["skipped"])
            .get();
        assert_eq!(skipped, 1);
    }
}
