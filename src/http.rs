//! Plain HTTP answers written to a Pingora session (status, content type, extra headers, a
//! body, `cache-control: no-store`, nothing after the head for `HEAD`): the one way the edges
//! (proxy, stream endpoints, admin) answer a request themselves; the one refusal type
//! ([`Refused`]) and its rendering on a session; and the seam through which
//! the proxy hands the sidecar's own paths to their endpoints ([`OwnEndpoints`]).

use crate::config::Config;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

/// Writes a complete small response.
pub async fn respond(
    session: &mut Session,
    status: u16,
    content_type: &str,
    headers: &[(&str, String)],
    body: Bytes,
) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4 + headers.len()))?;
    resp.insert_header("content-type", content_type)?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    for (k, v) in headers {
        resp.insert_header(k.to_string(), v.as_str())?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), body.is_empty() || head_only)
        .await?;
    if !body.is_empty() && !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// A refusal: the one answer type for "not served" (a stream refused at admission or
/// authorization, a request head refused by the listener, an admin request its guard
/// refuses). Each transport renders it with
/// one function: [`refuse`] on a Pingora session, `listener::refuse` on a raw socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    /// Metrics label.
    pub outcome: &'static str,
    pub retry_after: Option<u64>,
    pub body: String,
}

/// Writes a refusal on a Pingora session: its status, `retry-after` when set, its body as
/// plain text.
pub async fn refuse(session: &mut Session, r: Refused) -> pingora::Result<()> {
    let mut headers = Vec::new();
    if let Some(s) = r.retry_after {
        headers.push(("retry-after", s.to_string()));
    }
    let body = Bytes::from(r.body);
    respond(
        session,
        r.status,
        "text/plain; charset=utf-8",
        &headers,
        body,
    )
    .await
}

/// The sidecar's own browser-facing endpoints (the stream, its status, the client modules)
/// as the proxy sees them: the composition root hands the proxy one, so the proxy answers
/// them without importing the stream edge.
#[async_trait]
pub trait OwnEndpoints: Send + Sync {
    /// Whether `path` names one of them under `cfg`.
    fn claims(&self, cfg: &Config, path: &str) -> bool;
    /// Answers a request whose path [`claims`](Self::claims) accepted under the same `cfg`.
    async fn answer(&self, cfg: &Config, session: &mut Session) -> pingora::Result<()>;
}
