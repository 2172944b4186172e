//! The sidecar's own browser-facing endpoints: the event stream (`stream`: admission,
//! authorization, the Pingora sink; `session`: one open stream's life), its status
//! (`/api/sse/status`), a presence topic's members (`presence`: joins, and
//! `/api/sse/presence`) and the client modules it serves (`/api/sse/client.js`,
//! `/api/sse/react-query.js`). Frames come from `crate::wire`.

pub mod presence;
mod session;
pub mod stream;

use crate::config::Config;
use crate::http::{respond, OwnEndpoints};
use crate::state::State;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use std::sync::Arc;

/// Paths next to the stream path that the sidecar answers itself.
pub const STATUS_SUFFIX: &str = "status";
pub const PRESENCE_SUFFIX: &str = "presence";
pub const CLIENT_SUFFIX: &str = "client.js";
pub const REACT_QUERY_SUFFIX: &str = "react-query.js";

static CLIENT_JS: &str = include_str!("../../clients/js/sse-client.js");
static REACT_QUERY_JS: &str = include_str!("../../clients/js/react-query.js");

/// Which of the sidecar's own endpoints a path names, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Own {
    Stream,
    Status,
    Presence,
    Client,
    ReactQuery,
}

/// Classifies a request path against the configured stream path (`/api/sse/events` puts the
/// others at `/api/sse/status`, `/api/sse/client.js`, `/api/sse/react-query.js`).
pub fn classify(stream_path: &str, path: &str) -> Option<Own> {
    if path == stream_path {
        return Some(Own::Stream);
    }
    let base = stream_path.rsplit_once('/').map(|(b, _)| b).unwrap_or("");
    let rest = path.strip_prefix(base)?.strip_prefix('/')?;
    match rest {
        STATUS_SUFFIX => Some(Own::Status),
        PRESENCE_SUFFIX => Some(Own::Presence),
        CLIENT_SUFFIX => Some(Own::Client),
        REACT_QUERY_SUFFIX => Some(Own::ReactQuery),
        _ => None,
    }
}

/// The endpoints above, for the proxy (built by the composition root).
pub struct Endpoints {
    pub state: Arc<State>,
}

#[async_trait]
impl OwnEndpoints for Endpoints {
    fn claims(&self, cfg: &Config, path: &str) -> bool {
        classify(&cfg.sse.path, path).is_some()
    }

    async fn answer(&self, cfg: &Config, session: &mut Session) -> pingora::Result<()> {
        match classify(&cfg.sse.path, session.req_header().uri.path()) {
            Some(Own::Status) => serve_status(&self.state, session).await,
            Some(Own::Presence) => presence::serve(&self.state, session).await,
            Some(own @ (Own::Client | Own::ReactQuery)) => serve_module(session, own).await,
            // `None` cannot happen: `claims` saw the same config.
            Some(Own::Stream) | None => stream::serve(&self.state, session).await,
        }
    }
}

/// `GET /api/sse/status`: `{mode, epoch, head, retry_after}`; clients ask it after a stream
/// failure to choose between polling and retrying.
pub async fn serve_status(state: &Arc<State>, session: &mut Session) -> pingora::Result<()> {
    let cfg = state.config();
    let mode = state.mode();
    let (mode_s, retry_after) = if !mode.is_enabled() {
        ("polling", 30)
    } else if state.is_draining() {
        ("sse", cfg.sse.retry_max_ms.div_ceil(1000))
    } else {
        ("sse", 0)
    };
    let families: serde_json::Map<String, serde_json::Value> = cfg
        .families
        .keys()
        .map(|f| (f.clone(), cfg.delivery(f).as_str().into()))
        .collect();
    let body = serde_json::json!({
        "mode": mode_s,
        "epoch": &*state.hub.epoch(),
        "head": crate::events::EventId::new(&state.hub.epoch(), state.hub.head()).to_string(),
        "retry_after": retry_after,
        "families": families,
        // Families whose clients poll right now (rollout, or an open breaker).
        "polling_families": state.polling_families(),
    });
    respond(
        session,
        200,
        "application/json",
        &[],
        Bytes::from(body.to_string()),
    )
    .await
}

fn etag_of(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(text.as_bytes());
    format!(
        "\"{}\"",
        d.iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// Serves one of the bundled client modules with an ETag (304 when it matches).
pub async fn serve_module(session: &mut Session, which: Own) -> pingora::Result<()> {
    let text = match which {
        Own::ReactQuery => REACT_QUERY_JS,
        _ => CLIENT_JS,
    };
    let etag = etag_of(text);
    let matches = session
        .req_header()
        .headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let cache = "no-cache".to_string();
    if matches {
        let mut resp = ResponseHeader::build(304, Some(2))?;
        resp.insert_header("etag", etag.as_str())?;
        resp.insert_header("cache-control", cache.as_str())?;
        return session.write_response_header(Box::new(resp), true).await;
    }
    let mut resp = ResponseHeader::build(200, Some(4))?;
    resp.insert_header("content-type", "text/javascript; charset=utf-8")?;
    resp.insert_header("content-length", text.len().to_string())?;
    resp.insert_header("etag", etag.as_str())?;
    resp.insert_header("cache-control", cache.as_str())?;
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from_static(text.as_bytes())), true)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_own_paths() {
        let p = "/api/sse/events";
        assert_eq!(classify(p, "/api/sse/events"), Some(Own::Stream));
        assert_eq!(classify(p, "/api/sse/status"), Some(Own::Status));
        assert_eq!(classify(p, "/api/sse/client.js"), Some(Own::Client));
        assert_eq!(
            classify(p, "/api/sse/react-query.js"),
            Some(Own::ReactQuery)
        );
        assert_eq!(classify(p, "/api/sse/other"), None);
        assert_eq!(classify(p, "/api/cards"), None);
        assert_eq!(classify(p, "/api/sse/events/x"), None);
    }

    #[test]
    fn bundled_modules_have_no_imports() {
        assert!(!CLIENT_JS.contains("\nimport "));
        assert!(CLIENT_JS.contains("export function createSseClient"));
        assert!(REACT_QUERY_JS.contains("export function connectReactQuery"));
    }
}
