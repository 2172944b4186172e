//! Pass-through: every request that is not the sidecar's own goes to the backend unchanged,
//! and the answer comes back unchanged.

mod common;

use common::echo;
use common::Sidecar;
use std::time::Duration;

const CONFIG: &str = r#"
upstream: {address: "127.0.0.1:1", read_timeout_ms: 3000}
rollout: {phase: 1}
"#;

async fn both(
    client: &reqwest::Client,
    method: reqwest::Method,
    direct: &str,
    proxied: &str,
    body: Option<Vec<u8>>,
) -> (reqwest::Response, reqwest::Response) {
    let mk = |url: &str| {
        let mut r = client
            .request(method.clone(), url)
            .header("x-custom", "custom-value");
        if let Some(b) = &body {
            r = r.body(b.clone());
        }
        r
    };
    let d = mk(direct).send().await.expect("direct request");
    let p = mk(proxied).send().await.expect("proxied request");
    (d, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_is_byte_identical() {
    let backend = echo::start().await;
    let sc = Sidecar::start(CONFIG, &backend.to_string())
        .await
        .expect("sidecar");
    let client = reqwest::Client::new();
    let direct = |p: &str| format!("http://{backend}{p}");
    every_verb(&client, &sc, &direct).await;
    five_mb_both_ways(&client, &sc, &direct).await;
    chunked_both_ways(&client, &sc, &direct).await;
    error_statuses(&client, &sc, &direct).await;
}

/// Every verb, with a query string and a body.
async fn every_verb(client: &reqwest::Client, sc: &Sidecar, direct: &impl Fn(&str) -> String) {
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let body = (method != "GET").then(|| format!("{{\"verb\":\"{method}\"}}").into_bytes());
        let path = "/echo/a/b?x=1&y=%20z";
        let (d, p) = both(client, m, &direct(path), &sc.url(path), body.clone()).await;
        assert_eq!(d.status(), p.status(), "{method} status");
        for h in [
            "x-echo-method",
            "x-echo-uri",
            "x-echo-custom",
            "x-echo-len",
            "content-type",
            "set-cookie",
        ] {
            assert_eq!(
                d.headers().get(h),
                p.headers().get(h),
                "{method} header {h}"
            );
        }
        assert_eq!(
            p.headers()["x-echo-xff"],
            "127.0.0.1",
            "X-Forwarded-For added"
        );
        assert_eq!(p.headers()["x-echo-xfp"], "http", "X-Forwarded-Proto added");
        assert!(p.headers().get("x-sse-head").is_some() == (method == "GET"));
        assert_eq!(
            d.bytes().await.expect("body"),
            p.bytes().await.expect("body"),
            "{method} body"
        );
    }
}

/// 5 MB both ways.
async fn five_mb_both_ways(
    client: &reqwest::Client,
    sc: &Sidecar,
    direct: &impl Fn(&str) -> String,
) {
    let big = echo::pattern(5 * 1024 * 1024);
    let (d, p) = both(
        client,
        reqwest::Method::POST,
        &direct("/echo"),
        &sc.url("/echo"),
        Some(big.clone()),
    )
    .await;
    assert_eq!(p.status(), 200);
    let (db, pb) = (
        d.bytes().await.expect("body"),
        p.bytes().await.expect("body"),
    );
    assert_eq!(pb.len(), big.len());
    assert!(db == pb && pb == big, "5 MB upload echoed intact");
    let p = client
        .get(sc.url("/blob/5242880"))
        .send()
        .await
        .expect("download");
    assert_eq!(
        p.bytes().await.expect("body").as_ref(),
        echo::pattern(5_242_880).as_slice()
    );
}

/// A chunked upload (no content-length) and a chunked download.
async fn chunked_both_ways(
    client: &reqwest::Client,
    sc: &Sidecar,
    direct: &impl Fn(&str) -> String,
) {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..20)
        .map(|i| Ok(vec![b'a' + (i % 26) as u8; 10_000]))
        .collect();
    let expected: Vec<u8> = chunks
        .iter()
        .flat_map(|c| c.as_ref().expect("chunk").clone())
        .collect();
    let p = client
        .post(sc.url("/echo/chunked"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("chunked upload");
    assert_eq!(p.status(), 200);
    assert_eq!(p.bytes().await.expect("body").as_ref(), expected.as_slice());
    let d = client.get(direct("/chunked")).send().await.expect("direct");
    let p = client
        .get(sc.url("/chunked"))
        .send()
        .await
        .expect("proxied");
    assert_eq!(
        d.bytes().await.expect("body"),
        p.bytes().await.expect("body")
    );
}

/// 4xx and 5xx come back as they are.
async fn error_statuses(client: &reqwest::Client, sc: &Sidecar, direct: &impl Fn(&str) -> String) {
    for code in [400u16, 404, 409, 422, 500, 503] {
        let path = format!("/status/{code}");
        let (d, p) = both(
            client,
            reqwest::Method::POST,
            &direct(&path),
            &sc.url(&path),
            Some(b"{}".to_vec()),
        )
        .await;
        assert_eq!(p.status().as_u16(), code);
        assert_eq!(
            d.bytes().await.expect("body"),
            p.bytes().await.expect("body")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_gives_502_and_the_stream_side_keeps_working() {
    let dead = format!("127.0.0.1:{}", common::free_port());
    let sc = Sidecar::start(CONFIG, &dead).await.expect("sidecar");
    let r = reqwest::get(sc.url("/anything")).await.expect("request");
    assert_eq!(r.status(), 502);
    let text = r.text().await.expect("body");
    assert!(
        text.contains("upstream"),
        "short plain-text reason: {text:?}"
    );
    let mut s = common::SseClient::connect(&sc.url("/api/sse/events?topics=a"), None)
        .await
        .expect("stream");
    assert_eq!(s.status, 200);
    s.next_of("hello", Duration::from_secs(5))
        .await
        .expect("hello");
    let m = sc
        .metric("sse_sidecar_upstream_errors_total{kind=\"connect_refused\"}")
        .await
        .expect("metrics");
    assert!(m >= 1.0, "upstream error counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_times_out_with_504() {
    let backend = echo::start().await;
    let sc = Sidecar::start(CONFIG, &backend.to_string())
        .await
        .expect("sidecar");
    let r = reqwest::get(sc.url("/slow/5000")).await.expect("request");
    assert_eq!(r.status(), 504, "read_timeout_ms 3000 < 5 s");
    let r = reqwest::get(sc.url("/slow/10")).await.expect("request");
    assert_eq!(r.status(), 200);
}

/// W3C trace context reaches the backend unchanged, on a plain request and on a mutation a
/// rule captures (whose forwarding the sidecar adjusts), so the backend's traces join the
/// browser's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_headers_reach_the_backend_unchanged() {
    let backend = echo::start().await;
    let sc = Sidecar::start(&common::jobs_config(""), &backend.to_string())
        .await
        .expect("sidecar");
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let state = "vendor1=opaque,vendor2=x y";
    let client = reqwest::Client::new();
    for (method, path) in [
        (reqwest::Method::GET, "/echo/trace"),
        (reqwest::Method::POST, "/status/201"),
    ] {
        let r = client
            .request(method.clone(), sc.url(path))
            .header("traceparent", parent)
            .header("tracestate", state)
            .body("{}")
            .send()
            .await
            .expect("request");
        let got = |h: &str| {
            r.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(got("x-echo-traceparent"), parent, "{method} {path}");
        assert_eq!(got("x-echo-tracestate"), state, "{method} {path}");
    }
}
