//! An in-process HTTP backend for pass-through tests: echoes requests, serves blobs of any
//! size, answers any status, answers slowly, and streams chunked responses.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use std::net::SocketAddr;
use std::time::Duration;

/// A byte pattern that makes any corruption or truncation visible.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// A request header's value as text ("" when absent or not text).
fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Requests the echo routes received, by `"METHOD path"`.
static HITS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// How many `method path` requests the echo routes received (the backend's own count).
#[allow(dead_code)]
pub fn hits(method: &str, path: &str) -> usize {
    let want = format!("{method} {path}");
    let hits = HITS.lock().unwrap_or_else(|e| e.into_inner());
    hits.iter().filter(|h| **h == want).count()
}

async fn echo(req: Request) -> Response {
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    HITS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(format!("{method} {}", req.uri().path()));
    let headers = req.headers().clone();
    let get = |h: &str| header(&headers, h);
    let (xff, xfp, custom, te, ka) = (
        get("x-forwarded-for"),
        get("x-forwarded-proto"),
        get("x-custom"),
        get("transfer-encoding"),
        get("keep-alive"),
    );
    let delay = get("x-echo-delay-ms").parse::<u64>().unwrap_or(0);
    let body = axum::body::to_bytes(req.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    // A slow answer on request (`x-echo-delay-ms`), to hold a request in flight.
    tokio::time::sleep(Duration::from_millis(delay)).await;
    let mut h = HeaderMap::new();
    let mut put = |k: &'static str, v: String| {
        if let Ok(v) = v.parse() {
            h.insert(k, v);
        }
    };
    put("x-echo-method", method);
    put("x-echo-uri", uri);
    put("x-echo-xff", xff);
    put("x-echo-xfp", xfp);
    put("x-echo-custom", custom);
    put("x-echo-te", te);
    put("x-echo-keep-alive", ka);
    put("x-echo-len", body.len().to_string());
    put("x-echo-traceparent", get("traceparent"));
    put("x-echo-tracestate", get("tracestate"));
    put("set-cookie", "a=1; Path=/".into());
    (StatusCode::OK, h, body).into_response()
}

async fn blob(Path(n): Path<usize>) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/octet-stream")],
        pattern(n),
    )
        .into_response()
}

/// Answers `code` with JSON naming it; echoes the W3C trace headers it received.
async fn status(Path(code): Path<u16>, headers: HeaderMap, body: Bytes) -> Response {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    let received: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let json = serde_json::json!({ "code": code.as_u16(), "id": "x1", "received": received });
    let trace = |h: &str| header(&headers, h);
    (
        code,
        [
            ("content-type", "application/json".to_string()),
            ("x-echo-traceparent", trace("traceparent")),
            ("x-echo-tracestate", trace("tracestate")),
        ],
        json.to_string(),
    )
        .into_response()
}

/// Slow requests the backend is serving right now.
pub static SLOW_IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

async fn slow(Path(ms): Path<u64>) -> Response {
    use std::sync::atomic::Ordering;
    SLOW_IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    SLOW_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    (StatusCode::OK, "slow done").into_response()
}

async fn chunked() -> Response {
    let stream = futures_util::stream::iter(
        (0..10).map(|i| Ok::<_, std::io::Error>(Bytes::from(format!("chunk-{i};").repeat(1000)))),
    );
    Response::new(Body::from_stream(stream))
}

/// Starts the backend on an ephemeral port in the current runtime.
pub async fn start() -> SocketAddr {
    let app = Router::new()
        .route("/echo", any(echo))
        .route("/echo/{*rest}", any(echo))
        .route("/blob/{n}", get(blob))
        .route("/status/{code}", any(status))
        .route("/slow/{ms}", get(slow))
        .route("/chunked", get(chunked));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind echo backend");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}
