//! `GET /api/sse/events?topics=a,b`: one multiplexed stream per browser. This module owns the
//! request side and the decisions: what is kept of a request's head (`StreamRequest`),
//! admission (`admit`, then `authorize`), the resume decision (`plan_resume`), where a
//! stream's bytes go (`Sink`; `SessionSink` for Pingora) and `run`, which drives an admitted
//! stream as a `session::Session` (that module owns the running stream).
//!
//! Life of a stream: refusals first (kill switch → 204, draining or full → 503 with
//! Retry-After, too many handshakes → 429, a foreign origin → 403, bad topics or, under
//! `upstream.tenancy: host`, no usable Host → 400, no topic granted → 403); then the
//! response head, `retry:` and `hello`; then
//! subscribe-then-replay (Last-Event-ID header, else `?lastEventId=`) or an explicit `reset`
//! when replay cannot cover the gap; then live frames (batched into one write when several
//! are queued) and visible heartbeats until the client leaves, the queue overflows (slow
//! consumer), the kill switch fires (`control {mode: "polling"}`) or the sidecar drains
//! (`control {mode: "reconnect"}` with a jittered retry).
//!
//! The stream never lives on the config snapshot it started with: it re-reads the reload
//! handle when the config changes.

use super::session::{self, Signals, Step};
use crate::events::route::parse_query;
use crate::events::types::{EventId, Topic};
use crate::hub::Subscriber;
use crate::state::State;
use crate::wire::ResetReason;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// What the sidecar keeps of a stream request's head, however it arrived.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct StreamRequest {
    pub query: String,
    pub last_event_id: Option<String>,
    /// The client accepts gzip (`Accept-Encoding`).
    pub gzip: bool,
    /// Credential headers (lower-case name, value): sent to authorization checks, nowhere else.
    pub credentials: Vec<(String, String)>,
    pub origin: Option<String>,
    pub host: Option<String>,
    /// `X-Forwarded-For` and `Forwarded` values: read only from `sse.trusted_proxies`.
    pub x_forwarded_for: Vec<String>,
    pub forwarded: Vec<String>,
}

impl std::fmt::Debug for StreamRequest {
    // Credentials are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRequest")
            .field("query", &self.query)
            .field("last_event_id", &self.last_event_id)
            .field("gzip", &self.gzip)
            .field("credentials", &self.credentials.len())
            .field("origin", &self.origin)
            .field("host", &self.host)
            .finish()
    }
}

/// Longest header value kept from a stream request, other than credentials (larger ones are
/// ignored). Credentials are kept whole: the head's own cap bounds them.
const MAX_KEPT_HEADER: usize = 8 * 1024;

/// What an unusable `Last-Event-ID` (too long, not UTF-8) becomes: an id that never parses,
/// so the client gets `reset {reason: "malformed_id"}` instead of a silent fresh start.
const UNUSABLE_ID: &str = "\u{fffd}";

impl StreamRequest {
    /// Takes what matters from one request header.
    pub fn header(&mut self, name: &str, value: &[u8]) {
        let name = name.to_ascii_lowercase();
        let text = std::str::from_utf8(value).ok();
        if name == "last-event-id" {
            let usable = text.filter(|v| v.len() <= crate::events::types::MAX_EVENT_ID_LEN);
            self.last_event_id = Some(usable.unwrap_or(UNUSABLE_ID).to_owned());
            return;
        }
        if crate::auth::CREDENTIAL_HEADERS.contains(&name.as_str()) {
            if let Some(v) = text {
                self.credential(name, v);
            }
            return;
        }
        let Some(v) = text.filter(|_| value.len() <= MAX_KEPT_HEADER) else {
            return;
        };
        match name.as_str() {
            "accept-encoding" => self.gzip = crate::headers::accepts_gzip(v),
            "origin" => self.origin = Some(v.trim().to_owned()),
            "host" => self.host = Some(v.trim().to_owned()),
            // Bounded: a head holds few of them (and at most MAX_KEPT_HEADER bytes each).
            "x-forwarded-for" if self.x_forwarded_for.len() < 16 => {
                self.x_forwarded_for.push(v.to_owned())
            }
            "forwarded" if self.forwarded.len() < 16 => self.forwarded.push(v.to_owned()),
            _ => {}
        }
    }

    /// Keeps a credential header; several `Cookie` headers are one cookie list (RFC 6265
    /// §5.4), so the check sees every cookie, not only the last header's.
    fn credential(&mut self, name: String, value: &str) {
        if name == "cookie" {
            if let Some((_, v)) = self.credentials.iter_mut().find(|(n, _)| n == "cookie") {
                v.push_str("; ");
                v.push_str(value);
                return;
            }
        }
        self.credentials.push((name, value.to_owned()));
    }
}

/// A cross-origin stream request from an origin not in `sse.allowed_origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginRefused;

/// Decides cross-origin access: `Ok(None)` for same-origin (or no `Origin`), `Ok(Some(o))`
/// for an allowed origin (echoed with credentials allowed), `Err` otherwise.
pub fn cross_origin(
    origin: Option<&str>,
    host: Option<&str>,
    allowed: &[String],
) -> Result<Option<String>, OriginRefused> {
    let Some(origin) = origin.filter(|o| !o.is_empty()) else {
        return Ok(None);
    };
    let authority = origin
        .split_once("://")
        .map(|(_, a)| a)
        .unwrap_or(origin)
        .trim_end_matches('/');
    if host.is_some_and(|h| h.eq_ignore_ascii_case(authority)) {
        return Ok(None);
    }
    let lower = origin.trim_end_matches('/').to_ascii_lowercase();
    if allowed.contains(&lower) {
        return Ok(Some(origin.to_owned()));
    }
    Err(OriginRefused)
}

/// Why a stream request was refused before it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    BadTopics(String),
}

/// Parses `topics=a,b` (comma-separated, repeated parameters allowed) into sorted, unique,
/// valid topics.
pub fn parse_topics(query: &[(String, String)], max: usize) -> Result<Vec<String>, Refusal> {
    let mut set = BTreeSet::new();
    for (k, v) in query {
        if k != "topics" && k != "topic" {
            continue;
        }
        for raw in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let t = Topic::parse(raw).map_err(|e| Refusal::BadTopics(e.to_string()))?;
            set.insert(t.as_str().to_owned());
            if set.len() > max {
                return Err(Refusal::BadTopics(format!(
                    "more than {max} topics in one stream"
                )));
            }
        }
    }
    if set.is_empty() {
        return Err(Refusal::BadTopics(
            "no topics: ask for ?topics=a,b (1-128 characters of A-Z a-z 0-9 _ . : - each)".into(),
        ));
    }
    Ok(set.into_iter().collect())
}

/// What to do with a client's last event id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// No id: start live.
    Fresh,
    /// Replay events after this sequence number.
    After(u64),
    /// Replay cannot help: tell the client to refetch.
    Reset(ResetReason),
}

/// Decides how to resume from a client's id, given the log's epoch, the sequence fanned out
/// when the stream subscribed, and the replay cap.
///
/// `floor` is the first sequence number after SSE was last switched back on: an id before it
/// may have missed changes made while SSE was off (they were never recorded).
pub fn plan_resume(
    last_id: Option<&str>,
    epoch: &str,
    fanned: u64,
    cap: u64,
    floor: u64,
) -> Resume {
    let Some(raw) = last_id.map(str::trim).filter(|s| !s.is_empty()) else {
        return Resume::Fresh;
    };
    let Ok(id) = EventId::parse(raw) else {
        return Resume::Reset(ResetReason::MalformedId);
    };
    if id.epoch != epoch {
        return Resume::Reset(ResetReason::UnknownEpoch);
    }
    if id.seq > fanned {
        return Resume::Reset(ResetReason::FutureId);
    }
    if id.seq < floor {
        return Resume::Reset(ResetReason::SseWasOff);
    }
    if fanned - id.seq > cap {
        return Resume::Reset(ResetReason::TooFarBehind);
    }
    Resume::After(id.seq)
}

/// A retry delay drawn uniformly from `[min, max]` ms, so clients do not return together.
pub fn jittered_retry(min_ms: u64, max_ms: u64) -> u64 {
    if max_ms <= min_ms {
        return min_ms;
    }
    rand::random_range(min_ms..=max_ms)
}

pub use crate::http::Refused;

/// Where a stream's bytes go: a Pingora session (requests Pingora parsed) or a socket the
/// sidecar took over itself (`crate::listener`). Both carry the same frames.
pub trait Sink: Send {
    /// Writes the response head of a stream (200, text/event-stream, chunked), with CORS
    /// headers for an allowed cross-origin request.
    fn start(&mut self, cors: Option<&str>) -> impl std::future::Future<Output = bool> + Send;
    /// Writes one chunk of frames; false when the client cannot be written to.
    fn send(&mut self, bytes: Bytes) -> impl std::future::Future<Output = bool> + Send;
    /// Resolves when the client has gone away: true for a clean close, false for a reset.
    fn closed(&mut self) -> impl std::future::Future<Output = bool> + Send;
    /// Ends the chunked body.
    fn finish(&mut self) -> impl std::future::Future<Output = ()> + Send;
    /// Lends the socket to the fan-out while the stream only waits (direct mode, see
    /// `crate::hub`), where the sink can; false when a pending write failed.
    fn resume_direct(
        &mut self,
        _sub: &Arc<Subscriber>,
    ) -> impl std::future::Future<Output = bool> + Send {
        std::future::ready(true)
    }
    /// Takes the socket back: the stream is about to write (or stop).
    fn pause_direct(&mut self) {}
    /// Whether the socket is lent to the fan-out right now (which then also writes the
    /// stream's heartbeats).
    fn lent(&self) -> bool {
        false
    }
}

/// The Pingora session as a sink.
pub struct SessionSink<'a>(pub &'a mut Session);

impl Sink for SessionSink<'_> {
    async fn start(&mut self, cors: Option<&str>) -> bool {
        let Ok(mut resp) = ResponseHeader::build(200, Some(8)) else {
            return false;
        };
        for (k, v) in STREAM_HEADERS {
            if resp.insert_header(*k, *v).is_err() {
                return false;
            }
        }
        for (k, v) in cors_headers(cors) {
            if resp.insert_header(k, v).is_err() {
                return false;
            }
        }
        self.0
            .write_response_header(Box::new(resp), false)
            .await
            .is_ok()
    }
    async fn send(&mut self, bytes: Bytes) -> bool {
        self.0.write_response_body(Some(bytes), false).await.is_ok()
    }
    async fn closed(&mut self) -> bool {
        let _ = self.0.read_body_or_idle(true).await;
        true
    }
    async fn finish(&mut self) {
        let _ = self.0.write_response_body(None, true).await;
    }
}

/// The response headers of every stream (plus `transfer-encoding: chunked`).
pub const STREAM_HEADERS: &[(&str, &str)] = &[
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
    ("transfer-encoding", "chunked"),
];

/// The CORS response headers for an allowed cross-origin stream.
pub fn cors_headers(origin: Option<&str>) -> Vec<(&'static str, String)> {
    match origin {
        None => Vec::new(),
        Some(o) => vec![
            ("access-control-allow-origin", o.to_owned()),
            ("access-control-allow-credentials", "true".to_owned()),
            ("vary", "origin".to_owned()),
        ],
    }
}

/// Decrements the connection count however the stream ends.
pub struct ConnGuard(Arc<State>);

impl ConnGuard {
    /// Takes one of `max` connection slots; none when all are taken.
    fn claim(state: &Arc<State>, max: usize) -> Option<ConnGuard> {
        if !state.claim_connection(max) {
            return None;
        }
        state.metrics.sse_connections.inc();
        Some(ConnGuard(state.clone()))
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.release_connection();
        self.0.metrics.sse_connections.dec();
    }
}

/// An admitted stream request, ready to run.
pub struct Admitted {
    pub(super) signals: Signals,
    pub(super) topics: Vec<String>,
    pub(super) last_id: Option<String>,
    /// The origin to echo in CORS headers (allowed cross-origin request).
    pub(super) cors: Option<String>,
    pub(super) creds: crate::auth::Credentials,
    pub(super) grants: crate::auth::Grants,
    /// When the earliest checked decision expires (re-check then).
    pub(super) recheck_at: Option<std::time::Instant>,
    /// The client's address (the stream-health breaker bounds each address's share).
    pub(super) client: Option<std::net::IpAddr>,
    /// Its tenant under `upstream.tenancy: host` (its normalized Host): it subscribes to and
    /// replays only that tenant's events.
    pub(super) tenant: Option<String>,
    /// The browser's client id (`?client=`): its mutations' receipts come to this stream.
    pub(super) client_id: Option<String>,
    /// Its credentials' hash shared by every instance (`Credentials::shared_scope`).
    pub(super) receipt_scope: u128,
    /// Who the subscriber is (`presence.identity`), when a granted topic is a presence
    /// topic; none: anonymous.
    pub(super) identity: Option<crate::presence::Identity>,
    pub(super) _conn: ConnGuard,
}

/// Checks a stream request (kill switch, drain, origin, topics, connection limit) and reads
/// its last event id (`Last-Event-ID` header wins over `?lastEventId=`). Authorization comes
/// next, in `authorize`.
pub fn admit(
    state: &Arc<State>,
    client: Option<std::net::IpAddr>,
    req: &StreamRequest,
) -> Result<Admitted, Refused> {
    // Before anything is read: every later change reaches the stream.
    let signals = Signals::observe(state);
    let cfg = state.config();
    let retry_after = cfg.sse.retry_max_ms.div_ceil(1000).max(1);
    check_open(state, retry_after)?;
    let client = client.map(|peer| {
        let trusted = &cfg.sse.trusted_proxies;
        crate::safety::client_addr::client_addr(peer, &req.x_forwarded_for, &req.forwarded, trusted)
    });
    if let Err(wait) = rate_limit(state, &cfg, client) {
        return Err(refuse(
            state,
            429,
            "rate_limited",
            Some(wait.as_secs().max(1)),
            "too many new streams from this address; retry later\n",
        ));
    }
    let cors = check_origin(state, &cfg, req)?;
    let Ok(tenant) = stream_tenant(&cfg, req) else {
        return Err(refuse(
            state,
            400,
            "bad_host",
            None,
            "upstream.tenancy is host: the stream needs a valid Host header\n",
        ));
    };
    let query = parse_query(req.query.as_str());
    let topics = parse_topics(&query, cfg.sse.max_topics_per_stream).map_err(
        |Refusal::BadTopics(msg)| refuse(state, 400, "bad_topics", None, &format!("{msg}\n")),
    )?;
    if cfg.learn.enabled {
        state.learn.note_topics(&topics);
    }
    let conn = claim_capacity(state, &cfg, retry_after)?;
    let last_id = req.last_event_id.clone().or_else(|| {
        query
            .iter()
            .find(|(k, _)| k == "lastEventId")
            .map(|(_, v)| v.clone())
    });
    let client_id = client_id(state, &query)?;
    Ok(Admitted {
        signals,
        topics,
        last_id,
        cors,
        creds: Default::default(),
        grants: Default::default(),
        recheck_at: None,
        client,
        tenant,
        client_id,
        receipt_scope: 0,
        identity: None,
        _conn: conn,
    })
}

/// The `client` parameter: 1 to 128 characters of `A-Z a-z 0-9 _ . : -`, or none; any other
/// value is refused (400) rather than ignored, so a client never waits for receipts that
/// cannot come.
fn client_id(state: &State, query: &[(String, String)]) -> Result<Option<String>, Refused> {
    let Some((_, raw)) = query.iter().find(|(k, _)| k == "client") else {
        return Ok(None);
    };
    crate::events::types::sanitize_origin_id(Some(raw))
        .map(Some)
        .ok_or_else(|| {
            refuse(
                state,
                400,
                "bad_client",
                None,
                "client must be 1-128 characters of A-Z a-z 0-9 _ . : -\n",
            )
        })
}

/// A refusal with its body, counted under its outcome.
fn refuse(
    state: &State,
    status: u16,
    outcome: &'static str,
    retry_after: Option<u64>,
    body: &str,
) -> Refused {
    state
        .metrics
        .sse_handshakes_total
        .with_label_values(&[outcome])
        .inc();
    Refused {
        status,
        outcome,
        retry_after,
        body: body.to_owned(),
    }
}

/// Refuses every stream while SSE is off (204) or the sidecar drains (503).
fn check_open(state: &State, retry_after: u64) -> Result<(), Refused> {
    if !state.mode().is_enabled() {
        // 204 makes EventSource stop for good; the client module then polls.
        return Err(refuse(state, 204, "disabled", None, ""));
    }
    if state.is_draining() {
        return Err(refuse(
            state,
            503,
            "draining",
            Some(retry_after),
            "draining: reconnect to another instance or retry later\n",
        ));
    }
    Ok(())
}

/// The origin to echo (see `cross_origin`), or a 403 for an origin not allowed.
fn check_origin(
    state: &State,
    cfg: &crate::config::Config,
    req: &StreamRequest,
) -> Result<Option<String>, Refused> {
    cross_origin(
        req.origin.as_deref(),
        req.host.as_deref(),
        &cfg.sse.allowed_origins,
    )
    .map_err(|OriginRefused| {
        refuse(
            state,
            403,
            "origin_refused",
            None,
            "cross-origin streams are refused: add the origin to sse.allowed_origins\n",
        )
    })
}

/// A connection slot, unless queued memory is near its bound or every slot is taken (503).
fn claim_capacity(
    state: &Arc<State>,
    cfg: &crate::config::Config,
    retry_after: u64,
) -> Result<ConnGuard, Refused> {
    if state.memory_refuses() {
        return Err(refuse(
            state,
            503,
            "overloaded",
            Some(retry_after),
            "queued memory near its bound; retry later\n",
        ));
    }
    ConnGuard::claim(state, cfg.sse.max_connections).ok_or_else(|| {
        refuse(
            state,
            503,
            "overloaded",
            Some(retry_after),
            "too many open streams; retry later\n",
        )
    })
}

/// The handshake limiter's verdict for a client address (none: not limited).
fn rate_limit(
    state: &State,
    cfg: &crate::config::Config,
    client: Option<std::net::IpAddr>,
) -> Result<(), Duration> {
    let Some(ip) = client else { return Ok(()) };
    state.admit_handshake(
        ip,
        cfg.sse.handshakes_per_client_per_second,
        cfg.sse.handshake_burst,
    )
}

/// The stream's tenant: none unless `upstream.tenancy` is `host`, then its Host (`Err` when
/// it has no usable one).
fn stream_tenant(cfg: &crate::config::Config, req: &StreamRequest) -> Result<Option<String>, ()> {
    match cfg.upstream.tenancy {
        crate::config::model::Tenancy::None => Ok(None),
        crate::config::model::Tenancy::Host => crate::headers::tenant_key(req.host.as_deref())
            .map(Some)
            .ok_or(()),
    }
}

/// Asks the authorization policy about every requested topic (cache, coalesced backend
/// checks). A stream with no topic granted is refused with 403 and the reasons.
pub async fn authorize(
    state: &Arc<State>,
    mut admitted: Admitted,
    req: &StreamRequest,
) -> Result<Admitted, Refused> {
    let cfg = state.config();
    let mut creds =
        crate::auth::Credentials::new(&state.auth, &cfg.authorization, &req.credentials);
    creds.host = req.host.clone();
    creds.client = admitted.client;
    let decisions = state.auth.decide_all(&cfg, &creds, &admitted.topics).await;
    let (grants, recheck) = crate::auth::Grants::from_decisions(&admitted.topics, decisions);
    let busy = |(_, r): &(String, crate::auth::DenyReason)| *r == crate::auth::DenyReason::Busy;
    if grants.granted.is_empty() && grants.denied.iter().any(busy) {
        // No check slot in time: not a denial; the client retries.
        return Err(refuse(
            state,
            503,
            "check_busy",
            Some(cfg.authorization.check_timeout.as_secs().max(1)),
            "authorization checks are busy; retry later\n",
        ));
    }
    if grants.granted.is_empty() {
        let reasons: Vec<String> = grants
            .denied
            .iter()
            .map(|(t, r)| format!("{t} ({})", r.as_str()))
            .collect();
        let body = format!("no topic granted: {}\n", reasons.join(", "));
        return Err(refuse(state, 403, "forbidden", None, &body));
    }
    admitted.receipt_scope = creds.shared_scope();
    if super::presence::wants_identity(&cfg, &grants.granted) {
        admitted.identity = state.auth.identify(&cfg, &creds).await;
    }
    admitted.creds = creds;
    if recheck.is_none() {
        // Nothing to ask the backend again: keep the fingerprint, not the values.
        admitted.creds.forget_values();
    }
    admitted.grants = grants;
    admitted.recheck_at = recheck;
    admitted.topics = Vec::new();
    Ok(admitted)
}

/// Serves one stream request that Pingora parsed, to its end.
pub async fn serve(state: &Arc<State>, session: &mut Session) -> pingora::Result<()> {
    let mut req = StreamRequest {
        query: session.req_header().uri.query().unwrap_or("").to_owned(),
        ..Default::default()
    };
    for (k, v) in session.req_header().headers.iter() {
        req.header(k.as_str(), v.as_bytes());
    }
    let method = session.req_header().method.clone();
    if method == http::Method::OPTIONS {
        return preflight(state, session, &req).await;
    }
    if method != http::Method::GET && method != http::Method::HEAD {
        return crate::http::respond(
            session,
            405,
            "text/plain; charset=utf-8",
            &[("allow", "GET, OPTIONS".to_owned())],
            Bytes::from_static(b"the event stream is read with GET\n"),
        )
        .await;
    }
    let client = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let admitted = match admit(state, client, &req) {
        Ok(a) => Box::pin(authorize(state, a, &req)).await,
        Err(r) => Err(r),
    };
    match admitted {
        Err(r) => crate::http::refuse(session, r).await,
        Ok(admitted) => {
            session.set_write_timeout(Some(state.config().sse.write_timeout));
            run(state, Box::new(admitted), &mut SessionSink(session)).await;
            Ok(())
        }
    }
}

/// A CORS preflight for the stream (fetch-based clients that send custom headers): allowed
/// origins get the permissions a stream needs, others 403.
async fn preflight(
    state: &Arc<State>,
    session: &mut Session,
    req: &StreamRequest,
) -> pingora::Result<()> {
    let cfg = state.config();
    match cross_origin(
        req.origin.as_deref(),
        req.host.as_deref(),
        &cfg.sse.allowed_origins,
    ) {
        Ok(origin) => {
            let mut headers = cors_headers(origin.as_deref());
            headers.push(("access-control-allow-methods", "GET".to_owned()));
            headers.push((
                "access-control-allow-headers",
                "last-event-id, cache-control, accept".to_owned(),
            ));
            headers.push(("access-control-max-age", "600".to_owned()));
            crate::http::respond(session, 204, "text/plain", &headers, Bytes::new()).await
        }
        Err(OriginRefused) => {
            crate::http::respond(
                session,
                403,
                "text/plain; charset=utf-8",
                &[],
                Bytes::from_static(
                    b"cross-origin streams are refused: add the origin to sse.allowed_origins\n",
                ),
            )
            .await
        }
    }
}

/// Runs an admitted stream to its end: head, `retry:` and `hello`, replay or reset, then
/// live frames and heartbeats until something ends it (see `session`).
///
/// `admitted` comes boxed: a parameter's storage stays in the future for its whole life, and
/// the admission is only needed until the session has started.
pub async fn run<S: Sink>(state: &Arc<State>, admitted: Box<Admitted>, sink: &mut S) {
    // The config the stream starts under; the loop re-reads the reload handle.
    let cfg = state.config();
    // Start and close are boxed, as the session's other one-off phases: their states would
    // otherwise stay part of every stream's long-lived future.
    let start = session::Session::start(state, &cfg, *admitted, sink);
    let Some(mut session) = Box::pin(start).await else {
        return;
    };
    if !session.resume(&cfg).await {
        return;
    }
    drop(cfg);
    let close = loop {
        if let Step::Close(close) = session.ready().await {
            break close;
        }
        let wake = session.wait().await;
        if let Step::Close(close) = session.handle(wake).await {
            break close;
        }
    };
    Box::pin(session.close(close)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Vec<(String, String)> {
        parse_query(s)
    }

    #[test]
    fn topics_are_parsed_sorted_and_limited() {
        assert_eq!(
            parse_topics(&q("topics=b,a,b"), 5),
            Ok(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(
            parse_topics(&q("topics=a%2Cc&topics=board:1"), 5),
            Ok(vec![
                "a".to_string(),
                "board:1".to_string(),
                "c".to_string()
            ])
        );
        assert!(parse_topics(&q("topics=a,b,c"), 2).is_err());
        assert!(parse_topics(&q("topics="), 2).is_err());
        assert!(parse_topics(&q(""), 2).is_err());
        assert!(parse_topics(&q("topics=a%0Ab"), 2).is_err());
    }

    #[test]
    fn resume_plans_cover_every_case() {
        assert_eq!(plan_resume(None, "ep", 10, 5, 0), Resume::Fresh);
        assert_eq!(plan_resume(Some(""), "ep", 10, 5, 0), Resume::Fresh);
        assert_eq!(
            plan_resume(Some("garbage"), "ep", 10, 5, 0),
            Resume::Reset(ResetReason::MalformedId)
        );
        assert_eq!(
            plan_resume(Some("other-3"), "ep", 10, 5, 0),
            Resume::Reset(ResetReason::UnknownEpoch)
        );
        assert_eq!(
            plan_resume(Some("ep-11"), "ep", 10, 5, 0),
            Resume::Reset(ResetReason::FutureId)
        );
        assert_eq!(
            plan_resume(Some("ep-4"), "ep", 10, 5, 0),
            Resume::Reset(ResetReason::TooFarBehind)
        );
        assert_eq!(plan_resume(Some("ep-5"), "ep", 10, 5, 0), Resume::After(5));
        assert_eq!(
            plan_resume(Some("ep-10"), "ep", 10, 5, 0),
            Resume::After(10)
        );
        assert_eq!(
            plan_resume(Some("ep-7"), "ep", 10, 5, 8),
            Resume::Reset(ResetReason::SseWasOff)
        );
        assert_eq!(plan_resume(Some("ep-8"), "ep", 10, 5, 8), Resume::After(8));
    }

    #[test]
    fn cookies_are_kept_whole_and_unusable_ids_are_never_fresh() {
        let mut r = StreamRequest::default();
        r.header("Cookie", b"user=alice");
        r.header("cookie", b"theme=dark");
        let big = format!("pad={}", "p".repeat(10 * 1024));
        r.header("authorization", big.as_bytes());
        assert_eq!(
            r.credentials[0],
            ("cookie".into(), "user=alice; theme=dark".into())
        );
        assert_eq!(r.credentials[1].1, big);
        for bad in [&b"\xff\xfe-1"[..], "9".repeat(10_000).as_bytes()] {
            let mut r = StreamRequest::default();
            r.header("last-event-id", bad);
            let plan = plan_resume(r.last_event_id.as_deref(), "ep", 10, 5, 0);
            assert_eq!(plan, Resume::Reset(ResetReason::MalformedId));
        }
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            let r = jittered_retry(1000, 5000);
            assert!((1000..=5000).contains(&r));
        }
        assert_eq!(jittered_retry(7, 7), 7);
    }
}
