//! The Pingora `ProxyHttp` implementation. Each phase is a few lines over pure functions:
//! `request_filter` serves the sidecar's own paths or classifies a mutation; the body
//! filters capture (bounded) what a matched mutation sends and receives while it streams
//! unchanged; when the upstream has answered 2xx and its body has ended, the rule derives an
//! event that goes through the mutation pipeline (`crate::pipeline`: dedup, the topic clock,
//! shadow vs live, the hub, the strict commit wait). Everything else is forwarded byte for
//! byte.
//!
//! Hardening, where a rule or a shield could otherwise be bypassed or blinded:
//! - Paths are matched in RFC 3986 normal form (`route::normalize_path`: dot segments, also
//!   as `%2E`, merged slashes, decoded unreserved escapes). A mutation whose path is not in
//!   normal form and would match a rule (as sent or normalized) is refused with 400: the
//!   backend would resolve it to a matched route, and forwarding it rewritten would break
//!   the "forwarded unchanged" promise. Non-canonical mutations that match nothing are
//!   forwarded unchanged. A GET of a polled route is matched normalized but never shielded
//!   (nor answered 304) unless its path is canonical.
//! - A matched mutation is sent upstream with `Accept-Encoding: identity`, so rules can read
//!   the answer; a backend that compresses anyway (gzip, deflate) is inflated within the
//!   capture cap. The client gets a valid identity answer.
//! - After a confirmed (2xx) matched mutation whose event could not be derived (over the
//!   cap, template miss, schema, duplicate, the body cut short) the family's shielded routes
//!   are forced (their next polls are forwarded). A 2xx mutation no rule matched forces the
//!   shielded routes sharing its first path segment and is counted
//!   (`mutations_unmatched_total`); the change then shows as uncovered, never as a 304.
//! - Idempotency keys are scoped by rule and credential fingerprint (and tenant).
//! - `upstream.tenancy: host`: a mutation's event carries its normalized Host as `tenant`,
//!   and a polled GET's topics and validator key are scoped by its Host, so one tenant's
//!   mutations never tick (or fail to tick) another tenant's shield. A request without a
//!   usable Host derives no event (its families' shielded routes are forced) and is neither
//!   shielded nor tracked.
//! - `X-Client-Id` / `X-Mutation-Id`: printable ASCII (0x20–0x7E, trimmed), at most
//!   `MAX_ORIGIN_ID_LEN` (128) characters; other values are refused (origin null), counted
//!   (`origin_ids_refused_total`) and logged at debug level.

pub mod conflicts;

use crate::config::model::{Conflicts, Durability, Tenancy};
use crate::config::{Config, Delivery};
use crate::derive::derive_for;
use crate::events::route::{normalize_path, parse_query, Params};
use crate::events::template::{Body, Inputs};
use crate::events::types::{scoped_topics, EventId, Origin, MAX_ORIGIN_ID_LEN};
use crate::headers::SECRET_HEADERS;
use crate::http::OwnEndpoints;
use crate::hub::receipts::{mutation_keys, Ticket};
use crate::pipeline::{self, Commit, Outcome, Source};
use crate::state::State;
use crate::telemetry;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Request headers never forwarded (hop-by-hop; `connection`/`upgrade` are handled by
/// Pingora itself).
const HOP_BY_HOP: &[&str] = &["keep-alive", "proxy-connection", "te", "trailer"];

pub struct Proxy {
    pub state: Arc<State>,
    /// The sidecar's own paths (stream, status, client modules), answered before anything
    /// is forwarded.
    pub own: Arc<dyn OwnEndpoints>,
    /// Turns of concurrent checked edits of one topic (`conflicts`).
    pub turns: Arc<conflicts::Reservations>,
}

/// What a matched mutation keeps while it streams through.
pub struct Capture {
    rules: Vec<(usize, Params)>,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    origin: Origin,
    /// The request's Idempotency-Key: a retried mutation publishes one event.
    idempotency_key: Option<String>,
    /// The sender's credential fingerprint (scopes the idempotency key).
    fingerprint: u128,
    /// The mutation's tenant (`upstream.tenancy: host`: its normalized Host), or `Err`
    /// when tenancy is on and the request has no usable Host: then nothing is derived.
    tenant: Result<Option<String>, NoTenant>,
    /// The answer's `Content-Encoding`, if any.
    encoding: Option<String>,
    cap: usize,
    req: BytesMut,
    req_over: bool,
    resp: BytesMut,
    resp_over: bool,
    derived: bool,
    /// The mutation's receipt in the making: it carried `X-Client-Id` and `X-Mutation-Id`.
    ticket: Option<Arc<Ticket>>,
    /// A concurrent edit detected before forwarding (`conflicts: detect`): its events
    /// carry it.
    conflict: Option<serde_json::Value>,
    /// The mutation's span (`telemetry` exporting), under the client's `traceparent`.
    span: Option<opentelemetry::Context>,
}

impl Capture {
    /// Notes on the receipt (if any) why no event was made.
    fn not_derived(&self, reason: &str) {
        if let Some(t) = &self.ticket {
            t.note_not_derived(reason);
        }
    }
}

fn append_capped(buf: &mut BytesMut, over: &mut bool, chunk: &[u8], cap: usize) {
    if *over {
        return;
    }
    if buf.len() + chunk.len() > cap {
        *over = true;
        *buf = BytesMut::new();
    } else {
        buf.extend_from_slice(chunk);
    }
}

/// Under `upstream.tenancy: host`, a request without a usable Host: it is never scoped to
/// a guessed tenant (no event, no shield).
#[derive(Debug, Clone, Copy)]
pub struct NoTenant;

/// The tenant of a request: `Ok(None)` without tenancy; under `upstream.tenancy: host` its
/// `Host` (or, for HTTP/2, `:authority`) normalized by `headers::tenant_key`.
fn request_tenant(cfg: &Config, req: &RequestHeader) -> Result<Option<String>, NoTenant> {
    match cfg.upstream.tenancy {
        Tenancy::None => Ok(None),
        Tenancy::Host => {
            let host = match req.headers.get("host") {
                Some(v) => v.to_str().ok(),
                None => req.uri.authority().map(|a| a.as_str()),
            };
            crate::headers::tenant_key(host).map(Some).ok_or(NoTenant)
        }
    }
}

/// One matched rule of a confirmed mutation, with what deriving its event needs.
#[derive(Clone, Copy)]
struct RuleRun<'a> {
    /// The config the request started under (its rules, the store's durability).
    cfg: &'a Config,
    /// The config in force now (the family's delivery, the dedup window, polled routes).
    now: &'a Config,
    rule: &'a crate::config::model::Rule,
    cap: &'a Capture,
    tenant: &'a Option<String>,
}

/// A captured mutation's idempotency key scoped by rule, credential fingerprint and tenant
/// (one tenant's key never swallows another tenant's event).
fn dedup_key(rule: &crate::config::model::Rule, cap: &Capture) -> Option<String> {
    let key = cap.idempotency_key.as_ref()?;
    let key = match &cap.tenant {
        Ok(Some(t)) => std::borrow::Cow::Owned(format!("{t} {key}")),
        _ => std::borrow::Cow::Borrowed(key.as_str()),
    };
    Some(crate::safety::Dedup::scoped(
        &rule.location,
        cap.fingerprint,
        &key,
    ))
}

#[derive(Default)]
pub struct Ctx {
    /// Strict durability: commits the answer waits for, and the body held until then.
    commits: Vec<Commit>,
    held: Option<BytesMut>,
    /// The answer outgrew the capture cap and streams on unheld.
    hold_released: bool,
    cfg: Option<Arc<Config>>,
    started: Option<Instant>,
    capture: Option<Box<Capture>>,
    status: u16,
    head_at_forward: Option<String>,
    own: bool,
    /// A GET of a polled route (coverage check, shielding).
    poll: Option<Box<PollCtx>>,
    /// Learn mode's record of the request (`learn.enabled`).
    learn: Option<Box<crate::learn::Sample>>,
}

/// What a polled GET keeps while it streams through.
pub struct PollCtx {
    route: usize,
    key: crate::polling::Key,
    /// The version of its topics when it was forwarded (`x-sse-version`).
    version: String,
    topics: Vec<String>,
    /// The route's stamp when the request was forwarded (what the ETag stands for).
    stamp: crate::polling::Stamp,
    counter_at_request: u64,
    hasher: std::collections::hash_map::DefaultHasher,
    etag: Option<String>,
    /// The body hash a reused ETag was kept for.
    predicted: Option<u64>,
    shield: bool,
    /// The family is live, SSE on and no breaker sends it to polling.
    live: bool,
    fingerprint: u128,
}

/// The status class label for metrics.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "error",
    }
}

fn is_mutation(m: &http::Method) -> bool {
    matches!(
        *m,
        http::Method::POST | http::Method::PUT | http::Method::PATCH | http::Method::DELETE
    )
}

/// An origin id header value: printable ASCII (inner spaces allowed), trimmed, at most
/// `MAX_ORIGIN_ID_LEN` bytes. `Err(reason)` for a value that is refused; `Ok(None)` for an
/// absent or blank one.
pub fn parse_origin_id(raw: Option<&[u8]>) -> Result<Option<String>, &'static str> {
    let Some(raw) = raw else { return Ok(None) };
    let s = raw.trim_ascii();
    if s.is_empty() {
        return Ok(None);
    }
    if s.len() > MAX_ORIGIN_ID_LEN {
        return Err("too_long");
    }
    if !s.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err("bad_char");
    }
    Ok(std::str::from_utf8(s).ok().map(str::to_owned))
}

/// Whether a `Cache-Control` value forbids storing the answer.
fn is_no_store(v: &str) -> bool {
    v.split(',').any(|d| {
        d.trim()
            .split('=')
            .next()
            .unwrap_or("")
            .eq_ignore_ascii_case("no-store")
    })
}

impl Proxy {
    /// The request's credentials as the authorization policy sees them.
    fn credentials(&self, cfg: &Config, req: &RequestHeader) -> crate::auth::Credentials {
        let headers: Vec<(String, String)> = crate::auth::CREDENTIAL_HEADERS
            .iter()
            .filter_map(|h| {
                let v = req.headers.get(*h)?.to_str().ok()?;
                Some(((*h).to_owned(), v.to_owned()))
            })
            .collect();
        crate::auth::Credentials::new(&self.state.auth, &cfg.authorization, &headers)
    }

    /// A mutation whose path is not in normal form and would match a rule, as sent or as
    /// the backend resolves it: refused (see the module header).
    fn non_canonical_mutation(&self, cfg: &Config, req: &RequestHeader) -> bool {
        if !is_mutation(&req.method) || !self.state.mode().is_enabled() {
            return false;
        }
        let raw = req.uri.path();
        let canon = normalize_path(raw);
        canon != raw
            && (cfg.matching_rules(&req.method, &canon).next().is_some()
                || cfg.matching_rules(&req.method, raw).next().is_some())
    }

    /// An origin id header, refused values counted and logged.
    fn origin_id(&self, req: &RequestHeader, name: &'static str) -> Option<String> {
        match parse_origin_id(req.headers.get(name).map(|v| v.as_bytes())) {
            Ok(v) => v,
            Err(reason) => {
                self.state
                    .metrics
                    .origin_ids_refused_total
                    .with_label_values(&[name, reason])
                    .inc();
                tracing::debug!(
                    header = name,
                    reason,
                    max_len = MAX_ORIGIN_ID_LEN,
                    "origin id refused (printable ASCII only); the event's origin is null"
                );
                None
            }
        }
    }

    fn start_capture(&self, cfg: &Config, req: &RequestHeader) -> Option<Box<Capture>> {
        if !is_mutation(&req.method) || !self.state.mode().is_enabled() {
            return None;
        }
        let rules: Vec<(usize, Params)> = cfg.matching_rules(&req.method, req.uri.path()).collect();
        if rules.is_empty() {
            return None;
        }
        let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
        let headers = req
            .headers
            .iter()
            .filter(|(k, _)| !SECRET_HEADERS.contains(&k.as_str()))
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let parent = telemetry::extract(&req.headers);
        let origin = Origin {
            client: self.origin_id(req, "x-client-id"),
            mutation: self.origin_id(req, "x-mutation-id"),
            trace: telemetry::trace_id(&parent),
        };
        let span = telemetry::start("mutation", &parent);
        if let Some(cx) = &span {
            use opentelemetry::trace::TraceContextExt as _;
            let s = cx.span();
            s.set_attribute(opentelemetry::KeyValue::new(
                "http.request.method",
                req.method.as_str().to_owned(),
            ));
            s.set_attribute(opentelemetry::KeyValue::new(
                "url.path",
                req.uri.path().to_owned(),
            ));
        }
        let creds = self.credentials(cfg, req);
        let fingerprint = creds.fingerprint;
        let tenant = request_tenant(cfg, req);
        let ticket = match (&origin.client, &origin.mutation) {
            (Some(c), Some(m)) => {
                let host = tenant.as_ref().ok().and_then(|t| t.as_deref());
                let keys = mutation_keys(creds.shared_scope(), host, c);
                Some(Arc::new(Ticket::new(keys, c.clone(), m.clone())))
            }
            _ => None,
        };
        Some(Box::new(Capture {
            rules,
            query: parse_query(req.uri.query().unwrap_or("")),
            headers,
            origin,
            idempotency_key: header("idempotency-key")
                .map(str::trim)
                .filter(|k| !k.is_empty() && k.len() <= 256)
                .map(str::to_owned),
            fingerprint,
            tenant,
            encoding: None,
            cap: cfg.capture_max_bytes,
            req: BytesMut::new(),
            req_over: false,
            resp: BytesMut::new(),
            resp_over: false,
            derived: false,
            ticket,
            conflict: None,
            span,
        }))
    }

    /// Derives the events of a confirmed mutation (upstream 2xx, body ended) and runs each
    /// through the pipeline; under strict durability the commits go to `ctx.commits`.
    fn derive_events(&self, ctx: &mut Ctx) {
        let (Some(cfg), Some(cap)) = (ctx.cfg.clone(), ctx.capture.as_mut()) else {
            return;
        };
        if cap.derived || !(200..300).contains(&ctx.status) {
            return;
        }
        cap.derived = true;
        // The family's delivery is read from the config in force now, so a family switched
        // off mid-request emits nothing.
        let now = self.state.config();
        if !self.state.mode().is_enabled() {
            // No event: polls of these families must not be answered from before it.
            cap.not_derived("sse_off");
            self.force_rules(&cfg, cap);
            return;
        }
        let Some(tenant) = self.tenant_or_force(&cfg, cap) else {
            return;
        };
        // The mutation's span is current while its events are derived and handed to the
        // hub (which takes the context with each event across its queue).
        let _trace = cap.span.clone().map(opentelemetry::Context::attach);
        let request = Body::from_capture(&cap.req, cap.req_over);
        let response =
            Body::from_encoded(&cap.resp, cap.resp_over, cap.encoding.as_deref(), cap.cap);
        for (idx, params) in &cap.rules {
            let Some(rule) = cfg.rules.get(*idx) else {
                continue;
            };
            let inputs = Inputs {
                params,
                query: &cap.query,
                headers: &cap.headers,
                request: &request,
                response: &response,
            };
            let rule_ctx = RuleRun {
                cfg: &cfg,
                now: &now,
                rule,
                cap,
                tenant: &tenant,
            };
            if let Some(rx) = self.run_rule(&rule_ctx, &inputs) {
                ctx.commits.push(rx);
            }
        }
    }

    /// The captured mutation's tenant; without a usable Host under tenancy, none: its
    /// families' shielded routes are forced.
    fn tenant_or_force(&self, cfg: &Config, cap: &Capture) -> Option<Option<String>> {
        match &cap.tenant {
            Ok(t) => Some(t.clone()),
            Err(NoTenant) => {
                tracing::warn!(
                    "a confirmed mutation without a usable Host under tenancy: host; \
                    no event derived, its families' polls are forwarded"
                );
                cap.not_derived("no_tenant");
                self.force_rules(cfg, cap);
                None
            }
        }
    }

    /// One matched rule of a confirmed mutation: derives its event and hands it to the
    /// pipeline. An event not derived (family off, derivation failed, a retry) forces the
    /// family's shielded routes. Returns the commit to wait for under strict durability.
    fn run_rule(&self, run: &RuleRun<'_>, inputs: &Inputs<'_>) -> Option<Commit> {
        let RuleRun {
            cfg,
            now,
            rule,
            cap,
            tenant,
        } = *run;
        let force_family = || {
            self.state
                .polling
                .force(now.polling.routes_of(&rule.family));
        };
        let delivery = now.delivery(&rule.family);
        if delivery == Delivery::Off {
            cap.not_derived("family_off");
            force_family();
            return None;
        }
        let derive_span = telemetry::span("derive");
        derive_span.attr("rule", || rule.location.clone());
        let derived = derive_for(now, rule, inputs, cap.origin.clone(), tenant.clone());
        drop(derive_span);
        let event = match derived {
            Ok(mut event) => {
                event.conflict = cap.conflict.clone();
                event
            }
            Err(e) => {
                self.state
                    .metrics
                    .events_rejected_total
                    .with_label_values(&[rule.family.as_str(), e.reason()])
                    .inc();
                tracing::warn!(rule = %rule.location, reason = e.reason(), error = %e,
                    "no event derived from a confirmed mutation; its family's polls are forwarded");
                cap.not_derived(e.reason());
                force_family();
                return None;
            }
        };
        let key = dedup_key(rule, cap);
        let source = Source::Mutation {
            rule,
            dedup: key.as_deref().map(|k| (k, now.dedup_window)),
            delivery,
            ticket: cap.ticket.as_ref(),
        };
        match pipeline::publish(&self.state, event, source, cfg.store.durability) {
            Outcome::Pending(rx) => Some(rx),
            Outcome::Duplicate => {
                // A retry may still have changed what the family's polls show.
                force_family();
                None
            }
            Outcome::Shadow | Outcome::Queued | Outcome::Dropped(_) => None,
        }
    }

    /// The answer went out: the mutation's receipt is sealed with the status the client got
    /// (502 when none was written), and routed once nothing is pending in the hub.
    fn seal_receipt(&self, ctx: &Ctx, status: u16) {
        let Some(t) = ctx.capture.as_ref().and_then(|c| c.ticket.as_ref()) else {
            return;
        };
        let status = if status == 0 { 502 } else { status };
        if let Some(r) = t.seal(status) {
            self.state.hub.route_receipt(&t.keys, &r);
        }
    }

    /// The version of these (scoped) topics as an event id (`<epoch>-0`: no event touched
    /// them in this epoch).
    fn version_of(&self, topics: &[String]) -> String {
        let hub = &self.state.hub;
        EventId::new(&hub.epoch(), hub.version_of(topics)).to_string()
    }

    /// Forces the shielded routes of every family a captured mutation's rules belong to.
    fn force_rules(&self, cfg: &Config, cap: &Capture) {
        let now = self.state.config();
        for (idx, _) in &cap.rules {
            if let Some(rule) = cfg.rules.get(*idx) {
                self.state
                    .polling
                    .force(now.polling.routes_of(&rule.family));
            }
        }
    }

    /// Strict durability: waits (bounded) until this mutation's events are committed
    /// (`pipeline::wait_strict`).
    fn wait_for_commits(&self, ctx: &mut Ctx) {
        pipeline::wait_strict(std::mem::take(&mut ctx.commits));
    }
}

impl Proxy {
    /// The concurrent-edit check of a captured mutation with `x-sse-base` (`conflicts`):
    /// true when it was answered here (409 for `reject`, 400 for a bad base).
    async fn check_conflicts(
        &self,
        session: &mut Session,
        cfg: &Config,
        ctx: &mut Ctx,
    ) -> Result<bool> {
        let Some(cap) = ctx.capture.as_mut() else {
            return Ok(false);
        };
        let Some(base) = session
            .req_header()
            .headers
            .get("x-sse-base")
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(false);
        };
        let tenant = cap.tenant.as_ref().ok().and_then(|t| t.as_deref());
        let req = conflicts::Request {
            rules: &cap.rules,
            query: &cap.query,
            headers: &cap.headers,
            tenant,
        };
        let checked = match conflicts::check(&self.state, &self.turns, cfg, &req, base).await {
            Ok(checked) => checked,
            Err(msg) => {
                ctx.own = true;
                let body = Bytes::from(format!(
                    "400 {msg}: send the id of an event, <epoch>-<sequence>\n"
                ));
                crate::http::respond(session, 400, "text/plain; charset=utf-8", &[], body).await?;
                return Ok(true);
            }
        };
        if let Some(hold) = checked.hold {
            // Held until the answer went out and the events are stored.
            let ticket = cap.ticket.get_or_insert_with(|| Arc::new(Ticket::silent()));
            ticket.keep(Box::new(hold));
        }
        let Some(found) = checked.found else {
            return Ok(false);
        };
        if found.mode == Conflicts::Detect {
            if let Some(t) = &cap.ticket {
                t.note_conflict(found.detected());
            }
            cap.conflict = Some(found.detected());
            return Ok(false);
        }
        ctx.own = true;
        if let Some(t) = &cap.ticket {
            t.note_conflict(found.rejected());
            if let Some(r) = t.seal(409) {
                self.state.hub.route_receipt(&t.keys, &r);
            }
        }
        let body = Bytes::from(found.body().to_string());
        let headers = [("x-sse-conflict", "reject".to_owned())];
        crate::http::respond(session, 409, "application/json", &headers, body).await?;
        Ok(true)
    }

    /// A GET of a polled route: answers 304 itself when shielding allows (returns true),
    /// otherwise notes what the coverage check and the ETag need.
    async fn start_poll(&self, session: &mut Session, cfg: &Config, ctx: &mut Ctx) -> Result<bool> {
        let req = session.req_header();
        let path = req.uri.path();
        let canon = normalize_path(path);
        let canonical = canon == path;
        let Some((idx, route, params)) = cfg.polling.route_for(&canon) else {
            return Ok(false);
        };
        let query = crate::events::route::parse_query(req.uri.query().unwrap_or(""));
        let Some(topics) = route.topics_for(&params, &query) else {
            return Ok(false);
        };
        // Under tenancy, a poll without a usable Host is neither shielded nor tracked.
        let Ok(tenant) = request_tenant(cfg, req) else {
            return Ok(false);
        };
        let creds = self.credentials(cfg, req);
        let url = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or(path);
        // Each tenant has its own clock entries and validators.
        let (url, topics) = match tenant.as_deref() {
            None => (url.to_owned(), topics),
            Some(t) => (format!("//{t}{url}"), scoped_topics(Some(t), &topics)),
        };
        let key: crate::polling::Key = (url, creds.fingerprint);
        let tracker = &self.state.polling;
        let counter_at_request = tracker.counter();
        let stamp = tracker.stamp(route.pattern.as_str(), &topics);
        // Decided once per request: shielding and the slow-down hint both need it.
        let live = self.may_shield(cfg, &route.family);
        if route.shield && live && !canonical {
            self.state
                .metrics
                .shield_skipped_total
                .with_label_values(&["non_canonical_path"])
                .inc();
        }
        let shield = route.shield && live && canonical;
        if shield {
            let inm = req
                .headers
                .get("if-none-match")
                .and_then(|v| v.to_str().ok());
            if let Some(inm) = inm {
                if tracker.fresh(&key, inm, stamp, cfg.polling.max_staleness) {
                    let etag = inm.split(',').next().unwrap_or("").trim().to_owned();
                    tracker.count_poll(route, true);
                    let mut resp = ResponseHeader::build(304, Some(4))?;
                    resp.insert_header("etag", etag)?;
                    resp.insert_header("cache-control", "no-cache, private")?;
                    resp.insert_header("x-sse-shielded", "1")?;
                    session.write_response_header(Box::new(resp), true).await?;
                    ctx.own = true;
                    return Ok(true);
                }
            }
        }
        tracker.count_poll(route, false);
        let version = self.version_of(&topics);
        ctx.poll = Some(Box::new(PollCtx {
            route: idx,
            key,
            version,
            topics,
            stamp,
            counter_at_request,
            hasher: Default::default(),
            etag: None,
            predicted: None,
            shield,
            live,
            fingerprint: creds.fingerprint,
        }));
        Ok(false)
    }

    /// Shielding needs the family live, SSE on and no breaker sending it to polling.
    fn may_shield(&self, cfg: &Config, family: &str) -> bool {
        self.state.mode().is_enabled()
            && cfg.delivery(family) == Delivery::Live
            && !self.state.polling_families().iter().any(|f| f == family)
    }
}

impl Proxy {
    /// A 2xx answer to a request that may change state (not GET, HEAD, OPTIONS, TRACE) that
    /// no rule matched: the shielded routes it could have changed are forced, before the
    /// client has the answer, so its next poll reaches the backend (and coverage sees it).
    fn unmatched_mutation(&self, req: &RequestHeader, ctx: &Ctx) {
        if req.method.is_safe() || ctx.own {
            return;
        }
        let cfg = match &ctx.cfg {
            Some(c) => c.clone(),
            None => self.state.config(),
        };
        let path = normalize_path(req.uri.path());
        if self.state.mode().is_enabled() {
            // With SSE off nothing is matched; only count what rules could have explained.
            self.state.metrics.mutations_unmatched_total.inc();
        }
        let routes: Vec<_> = cfg.polling.routes_near(&path).collect();
        tracing::debug!(method = %req.method, path = %path, forced = routes.len(),
            "a 2xx mutation matched no rule; the shielded routes it could change are forwarded");
        self.state.polling.force(routes.into_iter());
    }

    /// Learn mode's sample of a request about to be forwarded (none when it is off).
    fn start_learn(&self, cfg: &Config, req: &RequestHeader) -> Option<Box<crate::learn::Sample>> {
        if !cfg.learn.enabled {
            return None;
        }
        let read = matches!(req.method, http::Method::GET | http::Method::HEAD);
        if read && !self.state.learn.admit_read(cfg.learn.max_reads_per_second) {
            return None;
        }
        let path = normalize_path(req.uri.path());
        let query = req.uri.query().map(parse_query).unwrap_or_default();
        let fingerprint = self.credentials(cfg, req).fingerprint;
        let method = req.method.as_str();
        Some(crate::learn::Sample::start(
            &cfg.learn,
            method,
            &path,
            query,
            fingerprint,
        ))
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.started = Some(Instant::now());
        let cfg = self.state.config();
        if self.own.claims(&cfg, session.req_header().uri.path()) {
            ctx.own = true;
            self.own.answer(&cfg, session).await?;
            return Ok(true);
        }
        if self.non_canonical_mutation(&cfg, session.req_header()) {
            self.state
                .metrics
                .proxy_refusals_total
                .with_label_values(&["non_canonical_path"])
                .inc();
            ctx.own = true;
            let body = Bytes::from_static(
                b"400 the path is not in normal form (dot segments, doubled slashes or encoded \
                  dots); send it as the backend resolves it\n",
            );
            crate::http::respond(session, 400, "text/plain; charset=utf-8", &[], body).await?;
            return Ok(true);
        }
        ctx.capture = self.start_capture(&cfg, session.req_header());
        ctx.learn = self.start_learn(&cfg, session.req_header());
        if self.check_conflicts(session, &cfg, ctx).await? {
            return Ok(true);
        }
        if session.req_header().method == http::Method::GET {
            ctx.head_at_forward =
                Some(EventId::new(&self.state.hub.epoch(), self.state.hub.head()).to_string());
            if !cfg.polling.routes.is_empty() && self.start_poll(session, &cfg, ctx).await? {
                return Ok(true);
            }
        }
        ctx.cfg = Some(cfg);
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let cfg = match &ctx.cfg {
            Some(c) => c.clone(),
            None => self.state.config(),
        };
        Ok(Box::new(crate::upstream::peer(&cfg.upstream)))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        for h in HOP_BY_HOP {
            upstream_request.remove_header(*h);
        }
        if ctx.capture.is_some() {
            // Rules read the answer: ask for it uncompressed (the client can read that too).
            upstream_request.insert_header("accept-encoding", "identity")?;
        }
        if ctx.poll.as_ref().is_some_and(|p| p.shield) {
            // The browser's validators are the sidecar's ETags, not the backend's: ask for
            // the full answer.
            upstream_request.remove_header("if-none-match");
            upstream_request.remove_header("if-modified-since");
        }
        if let Some(addr) = session.client_addr().and_then(|a| a.as_inet()) {
            let ip = addr.ip().to_string();
            let xff = match upstream_request
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(prev) if !prev.is_empty() => format!("{prev}, {ip}"),
                _ => ip,
            };
            upstream_request.insert_header("x-forwarded-for", xff)?;
        }
        if upstream_request.headers.get("x-forwarded-proto").is_none() {
            upstream_request.insert_header("x-forwarded-proto", "http")?;
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let (Some(cap), Some(chunk)) = (ctx.capture.as_mut(), body.as_ref()) {
            let limit = cap.cap;
            append_capped(&mut cap.req, &mut cap.req_over, chunk, limit);
        }
        if let (Some(s), Some(chunk)) = (ctx.learn.as_mut(), body.as_ref()) {
            s.request_chunk(chunk);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        if status >= 200 {
            ctx.status = status;
        }
        if let Some(s) = ctx.learn.as_mut() {
            let encoding = upstream_response.headers.get("content-encoding");
            s.response_head(status, encoding.and_then(|v| v.to_str().ok()));
        }
        if let Some(cap) = ctx.capture.as_mut() {
            cap.encoding = upstream_response
                .headers
                .get("content-encoding")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
        } else if (200..300).contains(&status) {
            self.unmatched_mutation(session.req_header(), ctx);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(head) = ctx.head_at_forward.take() {
            upstream_response.insert_header("x-sse-head", head)?;
        }
        let receipt = ctx.capture.as_ref().and_then(|c| c.ticket.as_ref());
        if receipt.is_some_and(|t| t.wants_receipt()) {
            // The stream of the browser that sent it will get this mutation's receipt.
            upstream_response.insert_header("x-sse-receipt", "pending")?;
        }
        if ctx.poll.is_some() && upstream_response.status.as_u16() != 200 {
            ctx.poll = None;
        }
        if let Some(p) = ctx.poll.as_mut() {
            upstream_response.insert_header("x-sse-version", p.version.as_str())?;
            let no_store = upstream_response
                .headers
                .get_all("cache-control")
                .iter()
                .any(|v| v.to_str().map_or(true, is_no_store));
            if p.shield && no_store {
                // Never weaken the backend's caching: a no-store answer is not shielded.
                p.shield = false;
                self.state
                    .metrics
                    .shield_skipped_total
                    .with_label_values(&["no_store"])
                    .inc();
                tracing::debug!(url = %crate::polling::redact_query(&p.key.0),
                    "not shielded: the backend answered cache-control: no-store");
            }
            if p.shield {
                let (etag, predicted) = self.state.polling.etag_for(&p.key, p.stamp);
                upstream_response.insert_header("etag", etag.as_str())?;
                upstream_response.insert_header("cache-control", "no-cache, private")?;
                upstream_response.remove_header("last-modified");
                upstream_response.remove_header("expires");
                p.etag = Some(etag);
                p.predicted = predicted;
            }
            let slow_down_ms = ctx.cfg.as_ref().map_or(0, |c| c.polling.slow_down_ms);
            if slow_down_ms > 0 && p.live && self.state.polling.has_stream(p.fingerprint) {
                upstream_response
                    .insert_header("x-sse-poll-interval-ms", slow_down_ms.to_string())?;
            }
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if let (Some(s), Some(chunk)) = (ctx.learn.as_mut(), body.as_ref()) {
            s.response_chunk(chunk);
        }
        if let Some(cap) = ctx.capture.as_mut() {
            if let Some(chunk) = body.as_ref() {
                let limit = cap.cap;
                append_capped(&mut cap.resp, &mut cap.resp_over, chunk, limit);
            }
            if end_of_stream {
                self.derive_events(ctx);
            }
        }
        if let Some(p) = ctx.poll.as_mut() {
            use std::hash::Hasher;
            if let Some(chunk) = body.as_ref() {
                p.hasher.write(chunk);
            }
            if end_of_stream {
                if let Some(p) = ctx.poll.take() {
                    let cfg = ctx.cfg.clone().unwrap_or_else(|| self.state.config());
                    if let Some(route) = cfg.polling.routes.get(p.route) {
                        let answer = crate::polling::Answer {
                            key: p.key,
                            topics: p.topics,
                            body: p.hasher.finish(),
                            counter_at_request: p.counter_at_request,
                            etag: p.etag,
                            predicted: p.predicted,
                            stamp: p.stamp,
                        };
                        self.state.polling.observe(route, answer, &cfg.polling);
                    }
                }
            }
        }
        Ok(None)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        let strict = ctx.capture.is_some()
            && !ctx.hold_released
            && ctx
                .cfg
                .as_ref()
                .is_some_and(|c| c.store.durability == Durability::Strict);
        if !strict {
            return Ok(None);
        }
        // Hold the body (up to the capture cap) so the answer completes only after the
        // commit; a larger body streams on unheld.
        let cap = ctx.capture.as_ref().map(|c| c.cap).unwrap_or(0);
        if !end_of_stream {
            if let Some(chunk) = body.take() {
                let held = ctx.held.get_or_insert_with(BytesMut::new);
                if held.len() + chunk.len() <= cap {
                    held.extend_from_slice(&chunk);
                } else {
                    let mut all = std::mem::take(held);
                    all.extend_from_slice(&chunk);
                    *body = Some(all.freeze());
                    ctx.hold_released = true;
                }
            }
            return Ok(None);
        }
        self.wait_for_commits(ctx);
        if let Some(mut held) = ctx.held.take() {
            if let Some(chunk) = body.take() {
                held.extend_from_slice(&chunk);
            }
            *body = Some(held.freeze());
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Ctx) -> FailToProxy {
        let (code, kind, text) = match e.etype() {
            ErrorType::HTTPStatus(code) => (*code, "status", ""),
            ErrorType::ConnectTimedout => (504, "connect_timeout", "upstream connect timed out"),
            ErrorType::ConnectRefused => {
                (502, "connect_refused", "upstream refused the connection")
            }
            ErrorType::ConnectNoRoute => (502, "connect_no_route", "no route to the upstream"),
            ErrorType::ReadTimedout if e.esource() == &ErrorSource::Upstream => {
                (504, "read_timeout", "upstream did not answer in time")
            }
            _ => match e.esource() {
                ErrorSource::Upstream => (502, "upstream_error", "upstream failed"),
                ErrorSource::Downstream => (0, "downstream_error", ""),
                _ => (500, "internal", "internal error"),
            },
        };
        if kind != "downstream_error" {
            self.state
                .metrics
                .upstream_errors_total
                .with_label_values(&[kind])
                .inc();
        }
        if code > 0 {
            let body = if text.is_empty() {
                Bytes::new()
            } else {
                Bytes::from(format!("{code} {text}\n"))
            };
            if let Err(err) =
                crate::http::respond(session, code, "text/plain; charset=utf-8", &[], body).await
            {
                tracing::debug!(error = %err, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if ctx.own {
            return;
        }
        // Bodyless 2xx answers (204, HEAD, content-length: 0) may end without a body chunk.
        if e.is_none() && ctx.capture.as_ref().is_some_and(|c| !c.derived) {
            self.derive_events(ctx);
        }
        if let (Some(cap), Some(cfg)) = (ctx.capture.as_ref(), ctx.cfg.as_ref()) {
            if (200..300).contains(&ctx.status) && !cap.derived {
                // Confirmed by the backend but cut short: no event, so no 304 from before it.
                cap.not_derived("incomplete");
                self.force_rules(cfg, cap);
            }
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        self.seal_receipt(ctx, status);
        if let Some(s) = ctx
            .learn
            .take()
            .filter(|_| e.is_none() && ctx.status >= 200)
        {
            self.state.learn.record(s);
        }
        if let Some(cx) = ctx.capture.as_ref().and_then(|c| c.span.as_ref()) {
            telemetry::end(cx, status);
        }
        let class = status_class(status);
        let m = &self.state.metrics;
        m.passthrough_requests_total
            .with_label_values(&[class])
            .inc();
        if let Some(start) = ctx.started {
            m.passthrough_duration_seconds
                .with_label_values(&[class])
                .observe(start.elapsed().as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_is_bounded() {
        let mut buf = BytesMut::new();
        let mut over = false;
        append_capped(&mut buf, &mut over, b"12345", 8);
        assert_eq!(&buf[..], b"12345");
        append_capped(&mut buf, &mut over, b"6789", 8);
        assert!(over);
        assert!(buf.is_empty());
        append_capped(&mut buf, &mut over, b"1", 8);
        assert!(buf.is_empty());
    }

    #[test]
    fn origin_ids_take_printable_ascii_up_to_the_limit() {
        let ok = |v: &str| parse_origin_id(Some(v.as_bytes()));
        assert_eq!(ok("tab-1"), Ok(Some("tab-1".into())));
        assert_eq!(
            ok("  tab 1/{x}=\"q\"  "),
            Ok(Some("tab 1/{x}=\"q\"".into()))
        );
        assert_eq!(ok(&"a".repeat(128)), Ok(Some("a".repeat(128))));
        assert_eq!(ok(&"a".repeat(129)), Err("too_long"));
        assert_eq!(ok("x\ty"), Err("bad_char"));
        assert_eq!(
            parse_origin_id(Some("caf\u{e9}".as_bytes())),
            Err("bad_char")
        );
        assert_eq!(ok("   "), Ok(None));
        assert_eq!(parse_origin_id(None), Ok(None));
    }

    #[test]
    fn no_store_is_found_among_directives() {
        assert!(is_no_store("no-store"));
        assert!(is_no_store("private, No-Store, max-age=0"));
        assert!(!is_no_store("no-cache, private"));
        assert!(!is_no_store("max-age=60"));
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(502), "5xx");
        assert_eq!(status_class(0), "error");
    }
}
