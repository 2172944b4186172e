//! Decisions: cache, coalescing and the backend check itself.
//!
//! - Cache: (credential fingerprint, Host, topic) → decision until it expires, bounded by
//!   `cache_max_entries` (expired entries are purged first, then an arbitrary eighth of the
//!   map). Emptied when the config's version changes, so an edited rule applies at once.
//!   The Host is part of the key because the check carries it: a backend that serves
//!   tenants by Host may answer the same credentials differently per Host.
//! - Coalescing: the first asker of a key starts the check in a task of its own (so it
//!   finishes even if that asker goes away); everyone asking the same key under the same
//!   config version meanwhile waits for the same answer (a check started under old rules
//!   never answers for new ones). 1,000 tabs with one cookie opening at once cost one call.
//! - The check: the rule's method and path, the subscriber's forwarded credential headers,
//!   through Pingora's connector (pooled connections to the same upstream as the proxy).
//!   Concurrency is bounded and shared fairly (`slots.rs`): waiting for a slot is bounded by
//!   `check_timeout` on its own (the check then has its whole `check_timeout`); no slot in
//!   time is `check_busy`, which is never cached.

use super::{Credentials, Decision, DenyReason};
use crate::config::Config;
use crate::events::template::{Body, Inputs};
use crate::metrics::Metrics;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// (credential fingerprint, Host as sent with the check, topic).
type Key = (u128, Option<String>, String);
/// A running check: the config version it runs under, and its key.
type Running = (String, Key);
type Answer = Option<(Decision, Instant)>;

#[derive(Default)]
struct Cache {
    version: String,
    map: HashMap<Key, (Decision, Instant)>,
}

pub struct Authorizer {
    /// Two independent random SipHash keys: a 128-bit keyed fingerprint, so credentials
    /// never collide in practice and cannot be recovered from what is shown.
    keys: (
        std::collections::hash_map::RandomState,
        std::collections::hash_map::RandomState,
    ),
    cache: Mutex<Cache>,
    inflight: Mutex<HashMap<Running, watch::Receiver<Answer>>>,
    pub(super) slots: super::slots::Slots,
    connector: Connector,
    metrics: Arc<Metrics>,
    /// Who subscribers are (`presence.identity`), cached and coalesced like decisions.
    pub(super) identities: super::identity::Identities,
}

impl Authorizer {
    pub fn new(max_concurrent_checks: usize, metrics: Arc<Metrics>) -> Arc<Authorizer> {
        Arc::new(Authorizer {
            keys: Default::default(),
            cache: Mutex::new(Cache::default()),
            inflight: Mutex::new(HashMap::new()),
            slots: super::slots::Slots::new(max_concurrent_checks),
            connector: Connector::new(None),
            metrics,
            identities: Default::default(),
        })
    }

    /// Keyed 128-bit hash of the (sorted) credential headers.
    pub fn fingerprint(&self, headers: &[(String, String)]) -> u128 {
        let hash = |s: &std::collections::hash_map::RandomState| {
            let mut h = s.build_hasher();
            for (k, v) in headers {
                h.write(k.as_bytes());
                h.write_u8(0);
                h.write(v.as_bytes());
                h.write_u8(0);
            }
            h.finish()
        };
        ((hash(&self.keys.0) as u128) << 64) | hash(&self.keys.1) as u128
    }

    /// Entries in the decision cache.
    pub fn cached(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len()
    }

    /// Decides one topic. The instant is when the decision must be made again (`None`: it
    /// never changes under this config: public topics and topics no rule matches). Its
    /// span (`authorize`, when telemetry exports) carries the topic and the decision.
    pub async fn decide(
        self: &Arc<Self>,
        cfg: &Arc<Config>,
        creds: &Credentials,
        topic: &str,
    ) -> (Decision, Option<Instant>) {
        let span = crate::telemetry::span("authorize");
        span.attr("topic", || topic.to_owned());
        let out = self.decide_untraced(cfg, creds, topic).await;
        span.attr("decision", || match out.0 {
            Decision::Allow => "allowed".to_owned(),
            Decision::Deny(r) => format!("denied: {}", r.as_str()),
        });
        out
    }

    async fn decide_untraced(
        self: &Arc<Self>,
        cfg: &Arc<Config>,
        creds: &Credentials,
        topic: &str,
    ) -> (Decision, Option<Instant>) {
        let policy = &cfg.authorization;
        let Some((_, rule, _)) = policy.rule_for(topic) else {
            self.count_decision(Decision::Deny(DenyReason::NoRule));
            return (Decision::Deny(DenyReason::NoRule), None);
        };
        if rule.check.is_none() {
            self.count_decision(Decision::Allow);
            return (Decision::Allow, None);
        }
        let host = creds.host.as_deref().map(str::to_ascii_lowercase);
        let key: Key = (creds.fingerprint, host, topic.to_owned());
        if let Some((d, until)) = self.cached_decision(cfg, &key) {
            self.count_decision(d);
            return (d, Some(until));
        }
        let mut rx = self.join_or_start(cfg, creds, key);
        // The wait for a slot, then the check itself, each bounded by `check_timeout`.
        let wait = policy.check_timeout * 2 + Duration::from_secs(1);
        let answer = match tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await {
            Ok(Ok(v)) => *v,
            _ => None,
        };
        let (d, until) = answer.unwrap_or((
            Decision::Deny(DenyReason::CheckFailed),
            Instant::now() + policy.failure_ttl,
        ));
        self.count_decision(d);
        (d, Some(until))
    }

    /// Cache: the decision for `key` while it holds (counted as a hit); the cache is
    /// emptied first if the config's version changed.
    fn cached_decision(&self, cfg: &Config, key: &Key) -> Option<(Decision, Instant)> {
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.version != cfg.version {
            cache.version = cfg.version.clone();
            cache.map.clear();
        }
        let &(d, until) = cache.map.get(key)?;
        if until <= now {
            return None;
        }
        self.metrics
            .auth_cache_total
            .with_label_values(&["hit"])
            .inc();
        Some((d, until))
    }

    /// Coalescing: the answer of the check already running for `key` under this config
    /// version (counted as coalesced), or of one started now (a miss).
    fn join_or_start(
        self: &Arc<Self>,
        cfg: &Arc<Config>,
        creds: &Credentials,
        key: Key,
    ) -> watch::Receiver<Answer> {
        let running: Running = (cfg.version.clone(), key.clone());
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = inflight.get(&running) {
            self.metrics
                .auth_cache_total
                .with_label_values(&["coalesced"])
                .inc();
            return rx.clone();
        }
        self.metrics
            .auth_cache_total
            .with_label_values(&["miss"])
            .inc();
        let (tx, rx) = watch::channel(None);
        inflight.insert(running.clone(), rx.clone());
        let me = self.clone();
        let cfg = cfg.clone();
        let creds = creds.clone();
        tokio::spawn(async move { me.run_check(&cfg, &creds, running, tx).await });
        rx
    }

    /// A started check, in a task of its own: the decision is cached (unless no slot was
    /// free, which is never cached), the check leaves the running set, and its waiters get
    /// the answer.
    async fn run_check(
        &self,
        cfg: &Config,
        creds: &Credentials,
        running: Running,
        tx: watch::Sender<Answer>,
    ) {
        let key = running.1.clone();
        let decision = self.check(cfg, creds, &key.2).await;
        let ttl = match decision {
            Decision::Deny(DenyReason::CheckFailed) => cfg.authorization.failure_ttl,
            Decision::Deny(DenyReason::Busy) => Duration::ZERO,
            _ => cfg.authorization.cache_ttl,
        };
        let until = Instant::now() + ttl;
        if decision != Decision::Deny(DenyReason::Busy) {
            // No slot is not a decision about this subscriber: never cached.
            self.remember(cfg, key, decision, until);
        }
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&running);
        let _ = tx.send(Some((decision, until)));
    }

    /// Decides every topic of a stream (concurrently).
    pub async fn decide_all(
        self: &Arc<Self>,
        cfg: &Arc<Config>,
        creds: &Credentials,
        topics: &[String],
    ) -> Vec<(Decision, Option<Instant>)> {
        let futs = topics.iter().map(|t| self.decide(cfg, creds, t));
        futures_util::future::join_all(futs).await
    }

    fn count_decision(&self, d: Decision) {
        let (result, reason) = match d {
            Decision::Allow => ("allowed", "granted"),
            Decision::Deny(r) => ("denied", r.as_str()),
        };
        self.metrics
            .auth_decisions_total
            .with_label_values(&[result, reason])
            .inc();
    }

    fn remember(&self, cfg: &Config, key: Key, d: Decision, until: Instant) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.version != cfg.version {
            // The config changed while the check ran: its answer is for old rules.
            return;
        }
        let max = cfg.authorization.cache_max_entries;
        if cache.map.len() >= max {
            let now = Instant::now();
            cache.map.retain(|_, (_, until)| *until > now);
            if cache.map.len() >= max {
                let drop_n = (max / 8).max(1);
                let victims: Vec<Key> = cache.map.keys().take(drop_n).cloned().collect();
                for k in victims {
                    cache.map.remove(&k);
                }
            }
        }
        cache.map.insert(key, (d, until));
        self.metrics.auth_cache_entries.set(cache.map.len() as i64);
    }

    /// Asks the backend. Never logs credentials: only the rule, topic and fingerprint.
    async fn check(&self, cfg: &Config, creds: &Credentials, topic: &str) -> Decision {
        let policy = &cfg.authorization;
        let Some((_, rule, params)) = policy.rule_for(topic) else {
            return Decision::Deny(DenyReason::NoRule);
        };
        let Some(check) = &rule.check else {
            return Decision::Allow;
        };
        let queued = tokio::time::timeout(
            policy.check_timeout,
            self.slots.acquire(creds.fingerprint, creds.client),
        )
        .await;
        let Ok(Some(_slot)) = queued else {
            // Counted, not logged at warn: under a flood this would be one line per topic.
            tracing::debug!(rule = %rule.location, topic, credentials = %creds.fingerprint_hex(),
                "no authorization check slot came free in time; answering busy (not cached)");
            self.metrics
                .auth_checks_total
                .with_label_values(&[DenyReason::Busy.as_str()])
                .inc();
            return Decision::Deny(DenyReason::Busy);
        };
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            policy.check_timeout,
            self.ask_check(cfg, creds, check, &params),
        )
        .await;
        let decision = match outcome {
            Err(_) => {
                tracing::warn!(rule = %rule.location, topic, credentials = %creds.fingerprint_hex(),
                    "authorization check timed out; denying (fail closed)");
                Decision::Deny(DenyReason::CheckFailed)
            }
            Ok(Err(e)) => {
                tracing::warn!(rule = %rule.location, topic, credentials = %creds.fingerprint_hex(),
                    error = %e, "authorization check failed; denying (fail closed)");
                Decision::Deny(DenyReason::CheckFailed)
            }
            Ok(Ok((status, body))) => {
                if (500..600).contains(&status) {
                    tracing::warn!(rule = %rule.location, topic, status,
                        "authorization check answered with a server error; denying (fail closed)");
                    Decision::Deny(DenyReason::CheckFailed)
                } else if !(200..300).contains(&status) {
                    Decision::Deny(DenyReason::Forbidden)
                } else {
                    match &check.condition {
                        None => Decision::Allow,
                        Some(c) => {
                            let inputs = Inputs {
                                params: &params,
                                query: &[],
                                headers: &[],
                                request: &Body::Empty,
                                response: &body,
                            };
                            if c.holds(&inputs) {
                                Decision::Allow
                            } else {
                                Decision::Deny(DenyReason::Condition)
                            }
                        }
                    }
                }
            }
        };
        let label = match decision {
            Decision::Allow => "allowed",
            Decision::Deny(r) => r.as_str(),
        };
        self.metrics
            .auth_checks_total
            .with_label_values(&[label])
            .inc();
        self.metrics
            .auth_check_seconds
            .observe(started.elapsed().as_secs_f64());
        decision
    }

    /// One check request: status and (when a condition needs it) the JSON answer.
    async fn ask_check(
        &self,
        cfg: &Config,
        creds: &Credentials,
        check: &super::Check,
        params: &crate::events::route::Params,
    ) -> Result<(u16, Body), String> {
        let inputs = Inputs {
            params,
            query: &[],
            headers: &[],
            request: &Body::Empty,
            response: &Body::Empty,
        };
        let path = check.path.render(&inputs).map_err(|e| e.to_string())?;
        let want_body = check.condition.is_some();
        self.ask(cfg, creds, (&check.method, &path), want_body)
            .await
    }

    /// One request to the backend with the subscriber's credential headers: its status and
    /// (with `want_body`, for a 2xx) its JSON answer, read up to
    /// `authorization.max_response_bytes`.
    pub(super) async fn ask(
        &self,
        cfg: &Config,
        creds: &Credentials,
        (method, path): (&http::Method, &str),
        want_body: bool,
    ) -> Result<(u16, Body), String> {
        let mut req = RequestHeader::build(method.clone(), path.as_bytes(), None)
            .map_err(|e| e.to_string())?;
        let set = |req: &mut RequestHeader, k: &str, v: &str| {
            req.insert_header(k.to_owned(), v)
                .map_err(|_| format!("header {k} cannot be sent"))
        };
        let host = creds.host.as_deref().unwrap_or(&cfg.upstream.address);
        set(&mut req, "host", host)?;
        set(&mut req, "accept", "application/json")?;
        set(&mut req, "user-agent", "sse-sidecar-authorization")?;
        set(&mut req, "x-sse-authorization-check", "1")?;
        for (k, v) in creds.headers() {
            set(&mut req, k, v)?;
        }
        let mut peer = crate::upstream::peer(&cfg.upstream);
        peer.options.read_timeout = Some(cfg.authorization.check_timeout);
        peer.options.write_timeout = Some(cfg.authorization.check_timeout);
        let (mut session, _reused) = self
            .connector
            .get_http_session(&peer)
            .await
            .map_err(|e| format!("connect: {}", e.etype().as_str()))?;
        session
            .write_request_header(Box::new(req))
            .await
            .map_err(|e| format!("write: {}", e.etype().as_str()))?;
        session
            .finish_request_body()
            .await
            .map_err(|e| format!("write: {}", e.etype().as_str()))?;
        session
            .read_response_header()
            .await
            .map_err(|e| format!("read: {}", e.etype().as_str()))?;
        let status = session
            .response_header()
            .map(|h| h.status.as_u16())
            .ok_or("no response head")?;
        let max = cfg.authorization.max_response_bytes;
        let mut body = Vec::new();
        let mut seen = 0usize;
        let want_body = want_body && (200..300).contains(&status);
        // Read to the end (so the connection can be reused), at most `max` bytes; a larger
        // answer closes the connection and, if a condition needed it, fails the condition.
        loop {
            match session.read_response_body().await {
                Ok(Some(chunk)) => {
                    seen += chunk.len();
                    if seen > max {
                        break;
                    }
                    if want_body {
                        body.extend_from_slice(&chunk);
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(format!("read body: {}", e.etype().as_str())),
            }
        }
        if session.response_done() {
            self.connector
                .release_http_session(session, &peer, peer.options.idle_timeout)
                .await;
        } else {
            session.shutdown().await;
        }
        let parsed = if want_body {
            Body::from_capture(&body, seen > max)
        } else {
            Body::Empty
        };
        Ok((status, parsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A backend answering `/allow*` 200 after `delay`, anything else 403; counts requests.
    async fn backend(delay: Duration) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let allow = buf.starts_with(b"GET /allow");
                        buf.clear();
                        tokio::time::sleep(delay).await;
                        let status = if allow { "200 OK" } else { "403 Forbidden" };
                        let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, count)
    }

    fn config(upstream: &str, check: &str) -> Arc<Config> {
        let yaml = format!(
            "upstream: {{address: \"{upstream}\"}}\n\
             authorization:\n  rules:\n    - topic: \"t:{{x}}\"\n      check: \"GET {check}\"\n"
        );
        Arc::new(crate::config::validate::parse_str(&yaml).expect("config"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_check_started_before_a_reload_does_not_answer_under_the_new_rules() {
        let (addr, _) = backend(Duration::from_millis(400)).await;
        let old = config(&addr, "/allow");
        let new = config(&addr, "/deny");
        assert_ne!(old.version, new.version);
        let auth = Authorizer::new(8, Arc::new(Metrics::new()));
        let creds = Credentials::new(&auth, &old.authorization, &[]);
        let (a, o, c) = (auth.clone(), old.clone(), creds.clone());
        let before = tokio::spawn(async move { a.decide(&o, &c, "t:1").await.0 });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let after = auth.decide(&new, &creds, "t:1").await.0;
        assert_eq!(after, Decision::Deny(DenyReason::Forbidden), "new rules");
        assert_eq!(before.await.expect("join"), Decision::Allow, "old rules");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn decisions_are_kept_per_host() {
        let (addr, count) = backend(Duration::ZERO).await;
        let cfg = config(&addr, "/allow");
        let auth = Authorizer::new(8, Arc::new(Metrics::new()));
        let mut creds = Credentials::new(&auth, &cfg.authorization, &[]);
        creds.host = Some("a.example".into());
        assert_eq!(auth.decide(&cfg, &creds, "t:1").await.0, Decision::Allow);
        assert_eq!(auth.decide(&cfg, &creds, "t:1").await.0, Decision::Allow);
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1, "cached");
        creds.host = Some("b.example".into());
        assert_eq!(auth.decide(&cfg, &creds, "t:1").await.0, Decision::Allow);
        assert_eq!(
            count.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "another Host is asked on its own"
        );
    }
}
