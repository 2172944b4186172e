//! The admin listener (127.0.0.1:9090 by default): `/metrics`, `/healthz`, `/readyz`,
//! `/admin/status.json`, `/admin/config.json` (the running config's tree), learn mode's
//! `/admin/learn` (JSON) and `/admin/learn/suggested.yaml`, and the actions `POST /admin/reload`, `POST /admin/kill-switch`,
//! `POST /admin/publish`. Every endpoint but the health checks refuses requests from other
//! sites first (Host, Origin, Sec-Fetch-Site: see `guard`), and every POST body must be
//! JSON; then, when `admin.token_env` names a variable, wants `Authorization: Bearer <token>`.

use crate::derive::validate;
use crate::events::types::{now_ms, Event, EventId, Topic};
use crate::http::respond;
use crate::reload::ReloadOutcome;
use crate::state::State;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub mod guard;
pub mod snapshot;

/// The dashboard page (static, no external resources).
static DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// Largest admin request body accepted.
const MAX_ADMIN_BODY: usize = 256 * 1024;

pub struct Admin {
    pub state: Arc<State>,
    /// The bearer token, read once at start from the variable `admin.token_env` names.
    pub token: Option<String>,
    /// The admin listener's own address (the Host and Origin rules, see `guard`).
    pub listen: SocketAddr,
    /// `admin.allowed_hosts`: further names the listener answers to.
    pub allowed_hosts: Vec<String>,
    /// The dashboard's snapshot feed and phase gates.
    pub dashboard: Arc<snapshot::Dashboard>,
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn token_matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn json_response(session: &mut Session, status: u16, v: &Value) -> Result<()> {
    respond(
        session,
        status,
        "application/json",
        &[],
        Bytes::from(v.to_string()),
    )
    .await
}

fn header<'a>(session: &'a Session, name: &str) -> Option<&'a str> {
    session
        .req_header()
        .headers
        .get(name)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

/// Answers a guard's refusal as the one refusal type is answered on a session.
async fn refuse(session: &mut Session, r: &guard::Refusal) -> Result<()> {
    let refused = crate::http::Refused {
        status: r.status,
        outcome: "admin_guard",
        retry_after: None,
        body: format!("{}\n", r.message),
    };
    crate::http::refuse(session, refused).await
}

/// Reads a POST body, which must be JSON (`guard::check_content_type`); `Err` when the
/// request was answered (413 or 415).
async fn read_json_body(session: &mut Session) -> Result<std::result::Result<Bytes, ()>> {
    let content_type = header(session, "content-type").map(str::to_owned);
    if content_type.is_some() {
        if let Err(r) = guard::check_content_type(content_type.as_deref(), false) {
            refuse(session, &r).await?;
            return Ok(Err(()));
        }
    }
    let body = match read_body(session).await {
        Ok(b) => b,
        Err(e) => {
            json_response(session, 413, &json!({ "error": e })).await?;
            return Ok(Err(()));
        }
    };
    if let Err(r) = guard::check_content_type(content_type.as_deref(), body.is_empty()) {
        refuse(session, &r).await?;
        return Ok(Err(()));
    }
    Ok(Ok(body))
}

async fn read_body(session: &mut Session) -> std::result::Result<Bytes, &'static str> {
    let mut buf = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > MAX_ADMIN_BODY {
                    return Err("body larger than 256 KiB");
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf.freeze()),
            Err(_) => return Err("could not read the body"),
        }
    }
}

impl Admin {
    fn authorized(&self, session: &Session) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        session
            .req_header()
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| token_matches(token, given.trim()))
    }

    fn status_json(&self) -> Value {
        status_json(&self.state)
    }

    /// The running config as the file's model: the effective tree (file and environment
    /// overrides, secrets redacted) of the loaded config with the running version; what
    /// `check --diff` compares a file with.
    async fn config_json(&self, session: &mut Session) -> Result<()> {
        let version = self.state.config().version.clone();
        match crate::config::overrides::loaded_tree(&version) {
            Some(tree) => {
                json_response(session, 200, &json!({ "version": version, "config": tree })).await
            }
            None => {
                let error = "the running config's tree is not known to this process";
                json_response(session, 404, &json!({ "version": version, "error": error })).await
            }
        }
    }
}

/// The status document (`/admin/status.json`, and the base of dashboard snapshots).
pub fn status_json(s: &State) -> Value {
    {
        let cfg = s.config();
        let families: serde_json::Map<String, Value> = cfg
            .families
            .values()
            .map(|f| {
                (
                    f.name.clone(),
                    json!({
                        "phase": f.phase,
                        "mode": f.mode.as_str(),
                        "priority": f.priority,
                        "delivery": cfg.delivery(&f.name).as_str(),
                    }),
                )
            })
            .collect();
        let mode = s.mode();
        json!({
            "config": {
                "version": cfg.version,
                "path": s.reload.path().display().to_string(),
                "loaded_at_ms": s.reload.loaded_at_ms(),
            },
            "sse": {
                "mode": if mode.is_enabled() { "sse" } else { "polling" },
                "disabled_reason": match &mode { crate::state::SseMode::Disabled { reason } => Value::from(reason.clone()), _ => Value::Null },
                "env_disabled": s.controller.env_disabled(),
                "connections": s.open_connections(),
                "queued_bytes": s.hub.queued_bytes(),
            },
            "rollout": { "phase": cfg.rollout_phase },
            "families": families,
            "store": {
                "epoch": &*s.hub.epoch(),
                "head": EventId::new(&s.hub.epoch(), s.hub.head()).to_string(),
                "healthy": s.hub.log().healthy(),
            },
            "draining": s.is_draining(),
            "uptime_seconds": s.uptime().as_secs(),
            "reloads": s.reload.history(),
            "transitions": s.transitions(),
            "breakers": s.controller.breaker_states().into_iter().map(|(name, st)| (name.to_string(), Value::from(st.as_str()))).collect::<serde_json::Map<String, Value>>(),
            "polling_families": s.polling_families(),
            "coverage": s.polling.coverage(cfg.polling.coverage_window),
            "degradation_level": s.metrics.degradation_level.get(),
            "coalesce_ms": s.hub.coalesce_ms(),
        })
    }
}

impl Admin {
    /// `GET /admin/stream`: the dashboard's live feed, one `snapshot` event per second.
    async fn stream(&self, session: &mut Session) -> Result<()> {
        let mut resp = pingora::http::ResponseHeader::build(200, Some(4))?;
        resp.insert_header("content-type", "text/event-stream")?;
        resp.insert_header("cache-control", "no-cache")?;
        resp.insert_header("x-accel-buffering", "no")?;
        resp.insert_header("transfer-encoding", "chunked")?;
        session.set_write_timeout(Some(Duration::from_secs(10)));
        session.write_response_header(Box::new(resp), false).await?;
        let mut rx = self.dashboard.subscribe();
        let mut drain = self.state.watch_drain();
        loop {
            let snap = rx.borrow_and_update().clone();
            let frame = crate::wire::Frame::Snapshot(&snap).encode();
            if session
                .write_response_body(Some(frame), false)
                .await
                .is_err()
            {
                return Ok(());
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { break },
                _ = drain.changed() => break,
                _ = session.read_body_or_idle(true) => return Ok(()),
            }
        }
        let _ = session.write_response_body(None, true).await;
        Ok(())
    }

    /// `/healthz` and `/readyz`, answered to anyone; false for every other request.
    async fn health_check(&self, session: &mut Session, method: &str, path: &str) -> Result<bool> {
        let s = &self.state;
        match (method, path) {
            ("GET", "/healthz") => {
                json_response(session, 200, &json!({ "status": "alive" })).await?;
            }
            ("GET", "/readyz") => {
                let store = s.hub.log().healthy();
                let ready = store && !s.is_draining();
                let body = json!({ "ready": ready, "store": store, "draining": s.is_draining() });
                json_response(session, if ready { 200 } else { 503 }, &body).await?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// `GET /metrics`: counted by the store itself; brought up to date at every scrape.
    async fn metrics(&self, session: &mut Session) -> Result<()> {
        let s = &self.state;
        s.metrics.note_runtime(crate::metrics::Runtime::Admin);
        let errors = s.hub.log().decode_errors();
        let shown = s.metrics.store_decode_errors_total.get();
        if errors > shown {
            s.metrics.store_decode_errors_total.inc_by(errors - shown);
        }
        respond(
            session,
            200,
            "text/plain; version=0.0.4",
            &[],
            Bytes::from(s.metrics.render()),
        )
        .await
    }

    /// `GET /admin`: the dashboard page, never framed.
    async fn dashboard_page(&self, session: &mut Session) -> Result<()> {
        respond(
            session,
            200,
            "text/html; charset=utf-8",
            &[
                ("x-frame-options", "DENY".to_string()),
                (
                    "content-security-policy",
                    "frame-ancestors 'none'".to_string(),
                ),
            ],
            Bytes::from_static(DASHBOARD_HTML.as_bytes()),
        )
        .await
    }

    /// An admitted request, to its endpoint.
    async fn route(&self, session: &mut Session, method: &str, path: &str) -> Result<()> {
        match (method, path) {
            ("GET", "/metrics") => self.metrics(session).await,
            ("GET", "/admin/status.json") => json_response(session, 200, &self.status_json()).await,
            ("GET", "/admin/config.json") => self.config_json(session).await,
            ("GET", "/admin") | ("GET", "/admin/") => self.dashboard_page(session).await,
            ("GET", "/admin/stream") => self.stream(session).await,
            ("POST", "/admin/reload") => self.reload_action(session).await,
            ("POST", "/admin/kill-switch") => self.kill_switch(session).await,
            ("GET", "/admin/gates") => {
                json_response(session, 200, &self.dashboard.gates(&self.state)).await
            }
            ("POST", "/admin/publish") => self.publish(session).await,
            ("GET", "/admin/learn") => {
                let enabled = self.state.config().learn.enabled;
                json_response(session, 200, &self.state.learn.report(enabled)).await
            }
            ("GET", "/admin/learn/suggested.yaml") => self.suggested(session).await,
            _ => json_response(session, 404, &json!({ "error": "not found" })).await,
        }
    }

    /// Learn mode's suggested config fragment; `?mode=live` writes the families live.
    async fn suggested(&self, session: &mut Session) -> Result<()> {
        let query = session.req_header().uri.query().unwrap_or("");
        let live = crate::events::route::parse_query(query)
            .iter()
            .any(|(k, v)| k == "mode" && v == "live");
        let text = self
            .state
            .learn
            .suggested_yaml(if live { "live" } else { "shadow" });
        respond(
            session,
            200,
            "application/yaml; charset=utf-8",
            &[],
            Bytes::from(text),
        )
        .await
    }

    /// Host, Origin and Sec-Fetch-Site (`guard`), then the token; false when the request
    /// was answered (421, 403 or 401).
    async fn admitted(&self, session: &mut Session, method: &str, path: &str) -> Result<bool> {
        let verdict = guard::check_request(
            header(session, "host"),
            header(session, "origin"),
            header(session, "sec-fetch-site"),
            self.listen,
            &self.allowed_hosts,
        );
        // The dashboard page itself is static: a link from another site (a cross-site
        // navigation) may open it; it cannot be framed, and what it fetches is same-origin.
        let page = method == "GET" && (path == "/admin" || path == "/admin/");
        if let Err(r) = verdict {
            if !(page && r.status == 403) {
                // Debug only: a hostile page could make a browser send these in a loop.
                tracing::debug!(status = r.status, %path, "admin request refused: {}", r.message);
                refuse(session, &r).await?;
                return Ok(false);
            }
        }
        if !self.authorized(session) {
            respond(
                session,
                401,
                "text/plain; charset=utf-8",
                &[("www-authenticate", "Bearer".to_string())],
                Bytes::from_static(b"missing or wrong bearer token\n"),
            )
            .await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// `POST /admin/reload`: reads, validates and applies the file.
    async fn reload_action(&self, session: &mut Session) -> Result<()> {
        if read_json_body(session).await?.is_err() {
            return Ok(());
        }
        let outcome = self.state.reload("admin").await;
        let (status, body) = match outcome {
            ReloadOutcome::Applied {
                version,
                restart_required,
            } => (
                200,
                json!({ "outcome": "applied", "version": version, "restart_required": restart_required }),
            ),
            ReloadOutcome::Unchanged => (200, json!({ "outcome": "unchanged" })),
            ReloadOutcome::Rejected(problems) => (
                422,
                json!({ "outcome": "rejected", "problems": problems.iter().map(|p| p.to_string()).collect::<Vec<_>>() }),
            ),
        };
        json_response(session, status, &body).await
    }

    /// `POST /admin/publish {type, topics, data, invalidate?, tenant?}`: `tenant` (a Host)
    /// is required under `upstream.tenancy: host` and refused otherwise.
    async fn publish(&self, session: &mut Session) -> Result<()> {
        let Ok(body) = read_json_body(session).await? else {
            return Ok(());
        };
        let req: PublishBody = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return json_response(
                    session,
                    400,
                    &json!({ "error": format!("body must be {{type, topics, data, invalidate?, tenant?}}: {e}") }),
                )
                .await
            }
        };
        let event = match self.publish_event(req) {
            Ok(e) => e,
            Err((status, body)) => return json_response(session, status, &body).await,
        };
        if !self.state.mode().is_enabled() {
            return json_response(session, 409, &json!({ "error": "SSE is switched off" })).await;
        }
        // The same pipeline as a mutation's event (counted, clock ticked, stored, fanned
        // out), waiting for the event's id.
        let outcome = crate::pipeline::publish(
            &self.state,
            event,
            crate::pipeline::Source::Admin,
            crate::config::model::Durability::Strict,
        );
        match outcome.committed().await {
            Ok(id) => json_response(session, 202, &json!({ "id": id })).await,
            // The sequencer's queue is full: pushed back, and told when to come again (the
            // event's topics were told to refetch, see `Hub::try_publish_for`).
            Err(e @ crate::hub::HubError::Full) => {
                let body = Bytes::from(json!({ "error": e.to_string() }).to_string());
                let retry = [("retry-after", "1".to_owned())];
                respond(session, 503, "application/json", &retry, body).await
            }
            Err(e) => json_response(session, 503, &json!({ "error": e.to_string() })).await,
        }
    }

    /// The event a publish body asks for, validated; `Err`: the status and body to answer.
    fn publish_event(&self, req: PublishBody) -> std::result::Result<Event, (u16, Value)> {
        let cfg = self.state.config();
        let Some(family) = cfg
            .event_types
            .get(&req.event_type)
            .map(|t| t.family.clone())
        else {
            return Err((
                422,
                json!({ "error": format!("event type {:?} is not registered", req.event_type) }),
            ));
        };
        let mut topics = Vec::new();
        for t in &req.topics {
            match Topic::parse(t) {
                Ok(t) => topics.push(t.as_str().to_owned()),
                Err(e) => return Err((400, json!({ "error": e.to_string() }))),
            }
        }
        if topics.is_empty() {
            return Err((400, json!({ "error": "at least one topic" })));
        }
        let tenant = publish_tenant(cfg.upstream.tenancy, req.tenant.as_deref())
            .map_err(|msg| (400, json!({ "error": msg })))?;
        let event = Event {
            id: String::new(),
            event_type: req.event_type,
            family,
            topics,
            ts: now_ms(),
            origin: Default::default(),
            data: req.data,
            invalidate: req.invalidate,
            tenant,
            conflict: None,
        };
        if let Err(e) = validate(&cfg, &event) {
            self.state
                .metrics
                .events_rejected_total
                .with_label_values(&[event.family.as_str(), e.reason()])
                .inc();
            return Err((422, json!({ "error": e.to_string() })));
        }
        Ok(event)
    }

    async fn kill_switch(&self, session: &mut Session) -> Result<()> {
        let Ok(body) = read_json_body(session).await? else {
            return Ok(());
        };
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct KillBody {
            enabled: bool,
            #[serde(default)]
            reason: Option<String>,
        }
        let req: KillBody = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return json_response(
                    session,
                    400,
                    &json!({ "error": format!("body must be {{\"enabled\": bool, \"reason\": string}}: {e}") }),
                )
                .await
            }
        };
        let kill = if req.enabled {
            None
        } else {
            let reason: String = req
                .reason
                .unwrap_or_else(|| "admin".into())
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect();
            Some(format!("admin: {reason}"))
        };
        tracing::warn!(enabled = req.enabled, "kill switch set from the admin API");
        self.state.controller.set_kill_switch(kill);
        let mode = self.state.mode();
        json_response(
            session,
            200,
            &json!({ "sse": if mode.is_enabled() { "sse" } else { "polling" } }),
        )
        .await
    }
}

#[async_trait]
impl ProxyHttp for Admin {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_owned();
        if self.health_check(session, method.as_str(), &path).await? {
            return Ok(true);
        }
        if !self.admitted(session, method.as_str(), &path).await? {
            return Ok(true);
        }
        self.route(session, method.as_str(), &path).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Error::e_explain(
            ErrorType::InternalError,
            "the admin listener has no upstream",
        )
    }
}

/// The body of `POST /admin/publish`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    #[serde(rename = "type")]
    event_type: String,
    topics: Vec<String>,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    invalidate: Vec<Value>,
    /// Under `upstream.tenancy: host`, the Host whose streams get it (required).
    #[serde(default)]
    tenant: Option<String>,
}

/// The tenant of an admin-published event: required (a Host, normalized) under
/// `upstream.tenancy: host`, refused under `none` (no stream could receive it).
fn publish_tenant(
    tenancy: crate::config::model::Tenancy,
    tenant: Option<&str>,
) -> Result<Option<String>, &'static str> {
    use crate::config::model::Tenancy;
    match (tenancy, tenant) {
        (Tenancy::None, None) => Ok(None),
        (Tenancy::None, Some(_)) => Err("`tenant` is only accepted with upstream.tenancy: host"),
        (Tenancy::Host, raw) => crate::headers::tenant_key(raw)
            .map(Some)
            .ok_or("upstream.tenancy is host: `tenant` must be the Host of the tenant's streams"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_comparison() {
        assert!(super::token_matches("abc", "abc"));
        assert!(!super::token_matches("abc", "abd"));
        assert!(!super::token_matches("abc", "ab"));
    }
}
