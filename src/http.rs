//! Plain HTTP answers written to a Pingora session (status, content type, extra headers, a
//! body, `cache-control: no-store`, nothing after the head for `HEAD`): the one way the edges
//! (proxy, stream endpoints, admin) answer a request themselves.

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
