//! Topic authorization delegated to the backend (the example legacy app decides who sees
//! which board), decision cache and coalescing, fail-closed checks, revocation, CORS, and
//! no credential in logs or metrics. Real sidecar binary, real backend, real SSE client.

mod common;

use common::{data, demo_config, LegacyApp, Sidecar, SseClient};
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(10);

/// The demo config with the handshake limiter opened up and a short decision TTL.
fn config(ttl: u64, extra: &str) -> String {
    let mut yaml = demo_config().replace(
        "cache_ttl_seconds: 10",
        &format!("cache_ttl_seconds: {ttl}"),
    );
    yaml = yaml.replace(
        "sse:\n",
        "sse:\n  handshakes_per_client_per_second: 100000\n  handshake_burst: 100000\n",
    );
    yaml.push_str(extra);
    yaml
}

async fn open(sc: &Sidecar, topics: &str, cookie: Option<&str>, last: Option<&str>) -> SseClient {
    let headers: Vec<(&str, &str)> = cookie.map(|c| vec![("cookie", c)]).unwrap_or_default();
    SseClient::connect_with(
        &sc.url(&format!("/api/sse/events?topics={topics}")),
        last,
        &headers,
    )
    .await
    .expect("connect")
}

async fn post_card(c: &reqwest::Client, sc: &Sidecar, board: &str, title: &str) -> Value {
    let r = c
        .post(sc.url(&format!("/api/boards/{board}/cards")))
        .header("cookie", "user=alice")
        .json(&serde_json::json!({ "title": title }))
        .send()
        .await
        .expect("post card");
    assert_eq!(r.status().as_u16(), 201);
    r.json().await.expect("card json")
}

/// Reads until a `card.created` event arrives; returns its card title.
async fn next_card(s: &mut SseClient) -> String {
    let e = s.next_of("card.created", T).await.expect("card.created");
    data(&e)["data"]["title"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn backend_checks(app: &LegacyApp, route: &str) -> u64 {
    let v: Value = reqwest::get(app.url("/__stats"))
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats json");
    v["by_route"][route].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_gets_only_the_boards_the_backend_lets_them_see() {
    let app = LegacyApp::start().expect("legacy app");
    let sc = Sidecar::start(&config(10, ""), &app.addr.to_string())
        .await
        .expect("sidecar");
    let c = reqwest::Client::new();
    // Board 1 is private to alice and bob; board 2 is public.
    let mut alice = open(&sc, "board:1,board:2", Some("user=alice"), None).await;
    let mut carol = open(&sc, "board:1,board:2", Some("user=carol"), None).await;
    assert_eq!((alice.status, carol.status), (200, 200));
    let ha = data(&alice.next_of("hello", T).await.expect("hello"));
    let hc = data(&carol.next_of("hello", T).await.expect("hello"));
    assert_eq!(ha["topics"], serde_json::json!(["board:1", "board:2"]));
    assert_eq!(ha["denied"], serde_json::json!([]));
    assert_eq!(hc["topics"], serde_json::json!(["board:2"]));
    assert_eq!(hc["denied"], serde_json::json!(["board:1"]));
    assert_eq!(hc["denied_reasons"]["board:1"], "forbidden");
    let start = ha["head"].as_str().expect("head").to_owned();

    // Live: a board-1 card then a board-2 card. Carol's first card must be board 2's.
    post_card(&c, &sc, "1", "private plan").await;
    post_card(&c, &sc, "2", "lobby news").await;
    assert_eq!(next_card(&mut alice).await, "private plan");
    assert_eq!(next_card(&mut alice).await, "lobby news");
    assert_eq!(next_card(&mut carol).await, "lobby news");

    // Replay: both come back from before the two cards.
    drop((alice, carol));
    let mut alice = open(&sc, "board:1,board:2", Some("user=alice"), Some(&start)).await;
    let mut carol = open(&sc, "board:1,board:2", Some("user=carol"), Some(&start)).await;
    assert_eq!(next_card(&mut alice).await, "private plan");
    assert_eq!(next_card(&mut alice).await, "lobby news");
    assert_eq!(next_card(&mut carol).await, "lobby news");

    // Anonymous, asking only for the private board: 403 with the reason.
    let anon = reqwest::get(sc.url("/api/sse/events?topics=board:1"))
        .await
        .expect("anon");
    assert_eq!(anon.status().as_u16(), 403);
    let body = anon.text().await.unwrap_or_default();
    assert!(body.contains("board:1 (forbidden)"), "{body}");
    // A topic no rule covers is denied by default.
    let r = reqwest::get(sc.url("/api/sse/events?topics=secret"))
        .await
        .expect("no rule");
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.text().await.unwrap_or_default().contains("no_rule"));
    // The `user:{user}` rule: a condition on the check's answer.
    let mut me = open(&sc, "user:alice,user:bob", Some("user=alice"), None).await;
    let h = data(&me.next_of("hello", T).await.expect("hello"));
    assert_eq!(h["topics"], serde_json::json!(["user:alice"]));
    assert_eq!(h["denied_reasons"]["user:bob"], "condition_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_topic_stops_within_the_ttl() {
    let app = LegacyApp::start().expect("legacy app");
    let sc = Sidecar::start(&config(1, ""), &app.addr.to_string())
        .await
        .expect("sidecar");
    let c = reqwest::Client::new();
    let mut bob = open(&sc, "board:1,board:2", Some("user=bob"), None).await;
    let h = data(&bob.next_of("hello", T).await.expect("hello"));
    assert_eq!(h["topics"], serde_json::json!(["board:1", "board:2"]));
    post_card(&c, &sc, "1", "before").await;
    assert_eq!(next_card(&mut bob).await, "before");

    // Alice removes bob from board 1: the backend now refuses him.
    let r = c
        .put(sc.url("/api/boards/1/members"))
        .header("cookie", "user=alice")
        .json(&serde_json::json!({ "members": ["alice"] }))
        .send()
        .await
        .expect("members");
    assert_eq!(r.status().as_u16(), 200);
    let removed = std::time::Instant::now();
    let control = bob.next_of("control", T).await.expect("revoked control");
    let v = data(&control);
    assert_eq!(v["revoked"], serde_json::json!(["board:1"]), "{v}");
    assert_eq!(v["reasons"]["board:1"], "forbidden");
    assert_eq!(v["topics"], serde_json::json!(["board:2"]));
    let took = removed.elapsed();
    println!("revoked {took:?} after the backend started refusing (TTL 1 s)");
    assert!(
        took < Duration::from_secs(4),
        "revoked after {took:?} (TTL 1 s)"
    );

    // Nothing from board 1 any more; board 2 still flows.
    post_card(&c, &sc, "1", "after").await;
    post_card(&c, &sc, "2", "still here").await;
    assert_eq!(next_card(&mut bob).await, "still here");
    let revoked = sc
        .metric("sse_sidecar_auth_revoked_total")
        .await
        .expect("metric");
    assert_eq!(revoked, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_that_fail_deny() {
    let app = LegacyApp::start().expect("legacy app");
    let extra = r#"
    - topic: "down:{x}"
      check: "GET /__fail/503"
    - topic: "slow:{x}"
      check: "GET /__fail/200?delay_ms=3000"
"#;
    let mut yaml = config(10, "");
    yaml = yaml.replace(
        "    - topic: \"presence\"\n",
        &format!(
            "{}    - topic: \"presence\"\n",
            extra.trim_start_matches('\n')
        ),
    );
    let yaml = yaml.replace(
        "cache_ttl_seconds: 10\n",
        "cache_ttl_seconds: 10\n  check_timeout_ms: 300\n",
    );
    let sc = Sidecar::start(&yaml, &app.addr.to_string())
        .await
        .expect("sidecar");
    let mut s = open(&sc, "down:1,slow:1,presence", None, None).await;
    assert_eq!(s.status, 200);
    let h = data(&s.next_of("hello", T).await.expect("hello"));
    assert_eq!(h["topics"], serde_json::json!(["presence"]));
    assert_eq!(h["denied_reasons"]["down:1"], "check_failed");
    assert_eq!(h["denied_reasons"]["slow:1"], "check_failed");
    for topics in ["down:2", "slow:2"] {
        let r = reqwest::get(sc.url(&format!("/api/sse/events?topics={topics}")))
            .await
            .expect("stream");
        assert_eq!(r.status().as_u16(), 403, "{topics}");
        assert!(r.text().await.unwrap_or_default().contains("check_failed"));
    }
    drop(s);

    // The whole backend gone: board checks fail closed too, the public topic stays open.
    drop(app);
    let r = reqwest::Client::new()
        .get(sc.url("/api/sse/events?topics=board:2"))
        .header("cookie", "user=alice")
        .send()
        .await
        .expect("stream");
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.text().await.unwrap_or_default().contains("check_failed"));
    let mut s = open(&sc, "presence", None, None).await;
    assert_eq!(s.status, 200);
    s.next_of("hello", T).await.expect("hello");
}

/// Opens a stream on a raw socket and returns the `hello` data (the socket stays open).
async fn raw_hello(addr: &str, cookie: &str) -> anyhow::Result<(tokio::net::TcpStream, Value)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!(
            "GET /api/sse/events?topics=board:1 HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(T, s.read(&mut chunk)).await??;
        anyhow::ensure!(
            n > 0,
            "closed before hello: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(i) = text.find("event: hello\ndata: ") {
            let rest = &text[i + "event: hello\ndata: ".len()..];
            if let Some(end) = rest.find('\n') {
                return Ok((s, serde_json::from_str(&rest[..end])?));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tabs_with_one_cookie_cost_a_handful_of_checks() {
    let app = LegacyApp::start().expect("legacy app");
    let sc = Sidecar::start(&config(30, ""), &app.addr.to_string())
        .await
        .expect("sidecar");
    reqwest::Client::new()
        .post(app.url("/__stats/reset"))
        .send()
        .await
        .expect("reset stats");
    let addr = format!("127.0.0.1:{}", sc.port);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let addr = addr.clone();
        tasks.spawn(async move { raw_hello(&addr, "user=alice").await });
    }
    let mut sockets = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (sock, hello) = r.expect("task").expect("hello");
        assert_eq!(hello["topics"], serde_json::json!(["board:1"]));
        sockets.push(sock);
    }
    assert_eq!(sockets.len(), 1000);
    let checks = backend_checks(&app, "GET /api/boards/{board}").await;
    println!("1000 subscribers, one cookie: {checks} backend checks");
    assert!((1..=5).contains(&checks), "{checks} backend checks");
    let m = sc.metrics().await.expect("metrics");
    let hits = common::metric_value(&m, "sse_sidecar_auth_cache_total{result=\"hit\"}")
        + common::metric_value(&m, "sse_sidecar_auth_cache_total{result=\"coalesced\"}");
    assert!(hits >= 995.0, "{hits} decisions served without a new check");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_streams_need_a_listed_origin() {
    let app = LegacyApp::start().expect("legacy app");
    let yaml = config(10, "").replace(
        "sse:\n",
        "sse:\n  allowed_origins: [\"https://app.example.com\"]\n",
    );
    let sc = Sidecar::start(&yaml, &app.addr.to_string())
        .await
        .expect("sidecar");
    let url = sc.url("/api/sse/events?topics=presence");
    let evil = SseClient::connect_with(&url, None, &[("origin", "https://evil.example")])
        .await
        .expect("evil");
    assert_eq!(evil.status, 403);
    let ok = SseClient::connect_with(&url, None, &[("origin", "https://app.example.com")])
        .await
        .expect("allowed");
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(ok.headers["access-control-allow-credentials"], "true");
    let same_origin = format!("http://127.0.0.1:{}", sc.port);
    let same = SseClient::connect_with(&url, None, &[("origin", same_origin.as_str())])
        .await
        .expect("same origin");
    assert_eq!(same.status, 200);
    assert!(same.headers.get("access-control-allow-origin").is_none());
    // Preflights: allowed origin gets the stream's permissions, others 403.
    let c = reqwest::Client::new();
    let pre = |origin: &'static str| {
        c.request(
            reqwest::Method::OPTIONS,
            sc.url("/api/sse/events?topics=presence"),
        )
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "last-event-id")
        .send()
    };
    let ok = pre("https://app.example.com").await.expect("preflight");
    assert_eq!(ok.status().as_u16(), 204);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(ok.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap_or("")
        .contains("last-event-id"));
    assert_eq!(
        pre("https://evil.example")
            .await
            .expect("preflight")
            .status()
            .as_u16(),
        403
    );
    let post = c
        .post(sc.url("/api/sse/events?topics=presence"))
        .send()
        .await
        .expect("post");
    assert_eq!(post.status().as_u16(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_reach_logs_or_metrics() {
    const COOKIE_SECRET: &str = "s3cr3t-cookie-7f9d2a";
    const TOKEN_SECRET: &str = "t0ken-bearer-41c8e6";
    let app = LegacyApp::start().expect("legacy app");
    let yaml = config(1, "").replace("level: info", "level: debug");
    let yaml = if yaml.contains("logging:") {
        yaml
    } else {
        format!("{yaml}\nlogging:\n  level: debug\n")
    };
    let sc = Sidecar::start(&yaml, &app.addr.to_string())
        .await
        .expect("sidecar");
    let cookie = format!("user=alice; session={COOKIE_SECRET}");
    let auth = format!("Bearer {TOKEN_SECRET}");
    let headers = [
        ("cookie", cookie.as_str()),
        ("authorization", auth.as_str()),
    ];
    // Allowed, denied, and failing checks, a revocation, mutations with the same secrets.
    let url = sc.url("/api/sse/events?topics=board:1,board:2,user:bob,card:nope,secret,presence");
    let mut s = SseClient::connect_with(&url, None, &headers)
        .await
        .expect("stream");
    assert_eq!(s.status, 200);
    s.next_of("hello", T).await.expect("hello");
    let c = reqwest::Client::new();
    c.post(sc.url("/api/boards/1/cards"))
        .header("cookie", cookie.as_str())
        .header("authorization", auth.as_str())
        .json(&serde_json::json!({ "title": "t" }))
        .send()
        .await
        .expect("post");
    s.next_of("card.created", T).await.expect("event");
    drop(app);
    // The re-check after the TTL fails (backend gone): the board topics are revoked.
    s.next_of("control", T).await.expect("revoked");
    let bad = SseClient::connect_with(&url, None, &headers)
        .await
        .expect("stream");
    assert_eq!(bad.status, 200, "public topics remain");

    let mut seen = sc.log();
    seen.push_str(&sc.metrics().await.expect("metrics"));
    seen.push_str(&sc.status().await.expect("status").to_string());
    let dash = reqwest::get(sc.admin_url("/admin/stream"));
    if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(3), dash).await {
        if let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_secs(3), async move {
            let mut r = r;
            r.chunk().await
        })
        .await
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(seen.len() > 1000, "something was collected");
    for secret in [COOKIE_SECRET, TOKEN_SECRET] {
        assert!(!seen.contains(secret), "{secret} leaked");
    }
    assert!(
        seen.contains("check failed") || seen.contains("check timed out"),
        "the failure is logged"
    );
}
