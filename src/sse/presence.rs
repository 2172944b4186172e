//! Presence at the stream edge: a stream joins the presence topics among its granted ones
//! (`presence.topics`, at most `max_topics_per_stream`) as the member its identity names
//! (anonymous without one), its `hello` carries each topic's snapshot, and the engine's
//! `presence` frames reach it beside its receipts (`Subscriber::push_side`). Also
//! `GET /api/sse/presence?topic=…`: the same snapshot for pages that poll, under the same
//! authorization as the stream (the backend's check with the caller's credentials).

use super::stream::StreamRequest;
use crate::auth::{Credentials, Decision, DenyReason};
use crate::config::Config;
use crate::events::route::parse_query;
use crate::events::types::{scoped_topic, Topic};
use crate::hub::Subscriber;
use crate::presence::{Identity, Membership};
use crate::state::State;
use crate::wire::PresenceSnapshot;
use bytes::Bytes;
use pingora::proxy::Session;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A stream's memberships (topic, membership) and the snapshots its `hello` shows.
pub(super) type Joined = (
    Vec<(String, Membership)>,
    BTreeMap<String, PresenceSnapshot>,
);

/// Joins `sub` to its presence topics among `granted`.
pub(super) fn join(
    state: &State,
    cfg: &Config,
    (granted, tenant): (&[String], Option<&str>),
    who: Option<&Identity>,
    sub: &Arc<Subscriber>,
) -> Joined {
    let mut memberships = Vec::new();
    let mut snapshots = BTreeMap::new();
    for topic in cfg.presence.topics_of(granted) {
        let weak = Arc::downgrade(sub);
        let watcher: crate::presence::Watcher =
            Arc::new(move |frame: &Bytes| weak.upgrade().is_some_and(|s| s.push_side(frame)));
        let key = scoped_topic(tenant, topic);
        let joined = state
            .presence
            .join(&cfg.presence, (&key, topic), who, watcher);
        if let Some((membership, snapshot)) = joined {
            memberships.push((topic.clone(), membership));
            snapshots.insert(topic.clone(), snapshot);
        }
    }
    (memberships, snapshots)
}

/// Whether a stream granted `granted` needs its subscriber's identity.
pub(super) fn wants_identity(cfg: &Config, granted: &[String]) -> bool {
    cfg.presence.identity.is_some() && !cfg.presence.topics_of(granted).is_empty()
}

/// `GET /api/sse/presence?topic=…`: 200 with `{topic, count, anonymous, partial, members}`;
/// 400 for a missing or bad topic (or, under host tenancy, no usable Host), 404 for a topic
/// that is not a presence topic, 403 when the backend does not grant it, 503 when its
/// checks are busy.
pub async fn serve(state: &Arc<State>, session: &mut Session) -> pingora::Result<()> {
    let mut req = StreamRequest::default();
    for (k, v) in session.req_header().headers.iter() {
        req.header(k.as_str(), v.as_bytes());
    }
    let query = parse_query(session.req_header().uri.query().unwrap_or(""));
    let (status, body) = answer(state, &req, &query).await;
    let content_type = if status == 200 {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    crate::http::respond(session, status, content_type, &[], Bytes::from(body)).await
}

/// The status and body of a presence request.
async fn answer(
    state: &Arc<State>,
    req: &StreamRequest,
    query: &[(String, String)],
) -> (u16, String) {
    let cfg = state.config();
    let raw = query
        .iter()
        .find(|(k, _)| k == "topic")
        .map(|(_, v)| v.as_str());
    let topic = match raw.map(Topic::parse) {
        Some(Ok(t)) => t.as_str().to_owned(),
        Some(Err(e)) => return (400, format!("topic: {e}\n")),
        None => return (400, "ask for ?topic=<a presence topic>\n".into()),
    };
    if !cfg.presence.tracks(&topic) {
        return (
            404,
            format!("{topic} is not a presence topic (presence.topics)\n"),
        );
    }
    let tenant = match cfg.upstream.tenancy {
        crate::config::model::Tenancy::None => None,
        crate::config::model::Tenancy::Host => {
            match crate::headers::tenant_key(req.host.as_deref()) {
                Some(t) => Some(t),
                None => return (400, "upstream.tenancy is host: send a valid Host\n".into()),
            }
        }
    };
    let mut creds = Credentials::new(&state.auth, &cfg.authorization, &req.credentials);
    creds.host = req.host.clone();
    match state.auth.decide(&cfg, &creds, &topic).await.0 {
        Decision::Allow => {}
        Decision::Deny(DenyReason::Busy) => return (503, "authorization checks are busy\n".into()),
        Decision::Deny(r) => return (403, format!("{topic} is not granted ({})\n", r.as_str())),
    }
    let key = scoped_topic(tenant.as_deref(), &topic);
    let snapshot = state.presence.snapshot(&key, cfg.presence.max_listed);
    let mut body = serde_json::to_value(&snapshot).unwrap_or_default();
    if let Some(o) = body.as_object_mut() {
        o.insert("topic".into(), topic.into());
    }
    (200, body.to_string())
}
