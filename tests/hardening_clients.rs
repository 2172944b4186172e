//! Issue 15, clients' items on the real binary: client resets never trip the stream-health
//! breaker, one client cannot exhaust the authorization check slots, the handshake limiter
//! behind a trusted proxy.

mod common;

use common::{echo, Sidecar};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(10);

fn jobs_config(sse: &str) -> String {
    common::jobs_config(&format!(
        "sse: {sse}\nstore: {{backend: memory, retention: {{max_events: 200}}}}"
    ))
}

/// Reads a response head; returns its status line's code and the whole head (lower case).
async fn read_head(s: &mut tokio::net::TcpStream) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(T, s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    Some((head.get(9..12)?.parse().ok()?, head))
}

/// Opens a stream request from the local address `from` (any 127.0.0.x works on Linux).
async fn open_from(
    from: [u8; 4],
    port: u16,
    path: &str,
    headers: &str,
) -> Option<(u16, String, tokio::net::TcpStream)> {
    let sock = tokio::net::TcpSocket::new_v4().ok()?;
    sock.bind(SocketAddr::from((from, 0))).ok()?;
    let mut s = sock
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").as_bytes())
        .await
        .ok()?;
    let (status, head) = read_head(&mut s).await?;
    Some((status, head, s))
}

/// Item 9: 100 streams from 4 addresses that reset their connections (a zero linger) while
/// events are published do not switch SSE off: only server-side failures count, bounded per
/// address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_resets_from_a_few_addresses_leave_sse_on() {
    let backend = echo::start().await;
    let cfg = jobs_config("{handshakes_per_client_per_second: 100000, handshake_burst: 100000}")
        + "safety: {breaker_cooldown_seconds: 2}\n";
    let sc = Sidecar::start(&cfg, &backend.to_string())
        .await
        .expect("sidecar");
    let mut doomed = Vec::new();
    for i in 0..100u8 {
        let from = [127, 0, 0, 2 + i % 4];
        let (status, _, s) = open_from(from, sc.port, "/api/sse/events?topics=jobs", "")
            .await
            .expect("answer");
        assert_eq!(status, 200);
        doomed.push(s);
    }
    let c = reqwest::Client::new();
    let publish = || async {
        let _ = c
            .post(sc.admin_url("/admin/publish"))
            .header("content-type", "application/json")
            .body(r#"{"type": "job.done", "topics": ["jobs"], "data": {}}"#)
            .send()
            .await;
    };
    let assert_on = |st: &serde_json::Value, when: &str| {
        assert_eq!(
            st["breakers"]["stream_health"], "closed",
            "stream_health {when}: {st}"
        );
    };
    // About 27 resets a second for almost 4 s: the old rule saw three bad samples in a row.
    while !doomed.is_empty() {
        for _ in 0..8 {
            if let Some(s) = doomed.pop() {
                #[allow(deprecated)]
                let _ = s.set_linger(Some(Duration::ZERO));
                drop(s);
            }
        }
        publish().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_on(&sc.status().await.expect("status"), "while resetting");
        let st = sc.sse_status().await.expect("status");
        assert_eq!(st["mode"], "sse", "{st}");
    }
    // Several more samples after the last reset.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        publish().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_on(&sc.status().await.expect("status"), "after the resets");
        assert_eq!(sc.sse_status().await.expect("status")["mode"], "sse");
    }
    // The streams did end (the resets were seen), and SSE is still on. A reset the socket
    // did not report is found at the latest by the next heartbeat's write (15 s by default):
    // the deadline covers it. Open streams, not closes, are what is counted: a stream reset
    // before its preamble went out ends without a close (it never began).
    let open = common::wait_for(
        "the reset streams ended",
        Duration::from_secs(30),
        || async {
            let text = sc.metrics().await.ok()?;
            let open = common::metric_value(&text, "sse_sidecar_sse_connections");
            (open == 0.0).then_some(())
        },
    )
    .await;
    assert!(open.is_ok(), "{open:?}: {:?}", sc.metrics().await);
    assert_eq!(sc.stream_status("jobs").await.expect("request"), 200);
}

fn slow_checks_config() -> String {
    jobs_config("{handshakes_per_client_per_second: 100000, handshake_burst: 100000}")
        + r#"
authorization:
  check_timeout_ms: 2000
  max_concurrent_checks: 64
  rules:
    - topic: "slow:{x}"
      check: "GET /slow/1500"
    - topic: "victim"
      check: "GET /slow/50"
"#
}

/// Item 10: 4 handshakes × 32 slow topics with random cookies from one address do not take
/// every check slot: a victim elsewhere is granted; no slot in time is a 503, not a denial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_topics_with_random_cookies_cannot_starve_another_clients_check() {
    let backend = echo::start().await;
    let sc = Sidecar::start(&slow_checks_config(), &backend.to_string())
        .await
        .expect("sidecar");
    let topics: Vec<String> = (0..32).map(|i| format!("slow:{i}")).collect();
    let path = format!("/api/sse/events?topics={}", topics.join(","));
    let mut attackers = Vec::new();
    for _ in 0..4 {
        let path = path.clone();
        let port = sc.port;
        attackers.push(tokio::spawn(async move {
            let cookie = format!("cookie: sid={}\r\n", rand_hex());
            open_from([127, 0, 0, 1], port, &path, &cookie).await
        }));
    }
    // Let the attackers' checks take (and queue for) the slots first.
    common::wait_for("attacker checks running", T, || async {
        let text = sc.metrics().await.ok()?;
        let miss = common::metric_value(&text, "sse_sidecar_auth_cache_total{result=\"miss\"}");
        (miss >= 100.0).then_some(())
    })
    .await
    .expect("attackers started");
    let started = Instant::now();
    let (status, head, _victim) = open_from(
        [127, 0, 0, 9],
        sc.port,
        "/api/sse/events?topics=victim",
        "cookie: sid=victim\r\n",
    )
    .await
    .expect("victim answer");
    assert_eq!(status, 200, "the victim is granted: {head}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    for a in attackers {
        let (status, head, _) = a.await.expect("join").expect("attacker answer");
        // The attacker gets what fitted its share; the rest is busy, never a cached denial.
        assert!(status == 200 || status == 503, "{status} {head}");
        if status == 503 {
            assert!(head.contains("retry-after:"), "{head}");
        }
    }
    let text = sc.metrics().await.expect("metrics");
    assert_eq!(
        common::metric_value(
            &text,
            "sse_sidecar_auth_checks_total{outcome=\"check_failed\"}"
        ),
        0.0,
        "{text}"
    );
}

fn rand_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    format!("{:016x}", h.finish())
}

/// Item 14: behind a trusted proxy, each user has a bucket of its own (X-Forwarded-For);
/// from an untrusted peer the header is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_limiter_keys_on_the_client_behind_a_trusted_proxy() {
    let backend = echo::start().await;
    let cfg = jobs_config(
        "{handshakes_per_client_per_second: 0.001, handshake_burst: 2, \
         trusted_proxies: [\"127.0.0.1\"]}",
    );
    let sc = Sidecar::start(&cfg, &backend.to_string())
        .await
        .expect("sidecar");
    let path = "/api/sse/events?topics=jobs";
    let mut keep = Vec::new();
    for user in ["203.0.113.1", "203.0.113.2"] {
        let xff = format!("x-forwarded-for: {user}\r\n");
        for _ in 0..2 {
            let (status, head, s) = open_from([127, 0, 0, 1], sc.port, path, &xff)
                .await
                .expect("answer");
            assert_eq!(status, 200, "{user}: {head}");
            keep.push(s);
        }
        let (status, head, _) = open_from([127, 0, 0, 1], sc.port, path, &xff)
            .await
            .expect("answer");
        assert_eq!(status, 429, "{user}'s own bucket is empty: {head}");
        assert!(head.contains("retry-after:"), "{head}");
    }
    // An untrusted peer cannot pick its bucket with the header.
    for i in 0..3 {
        let xff = format!("x-forwarded-for: 198.51.100.{i}\r\n");
        let (status, head, s) = open_from([127, 0, 0, 7], sc.port, path, &xff)
            .await
            .expect("answer");
        assert_eq!(status, if i < 2 { 200 } else { 429 }, "{head}");
        keep.push(s);
    }
}

/// A backend that serves tenants by Host: `GET /allow` is 200 for `Host: a.example` only.
async fn host_routing_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                loop {
                    let Some(head) = read_request(&mut s).await else {
                        return;
                    };
                    let ok = head.lines().any(|l| l.trim() == "host: a.example");
                    let status = if ok { "200 OK" } else { "403 Forbidden" };
                    let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Reads one request head (lower case).
async fn read_request(s: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(String::from_utf8_lossy(&buf).to_ascii_lowercase())
}

/// Item 13 (decision cache): a grant decided for one Host is not reused for another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_on_one_tenant_host_is_not_reused_for_another() {
    let backend = host_routing_backend().await;
    let cfg = jobs_config("{handshakes_per_client_per_second: 100000, handshake_burst: 100000}")
        + r#"
authorization:
  cache_ttl_seconds: 60
  rules:
    - topic: "board:{b}"
      check: "GET /allow"
"#;
    let sc = Sidecar::start(&cfg, &backend.to_string())
        .await
        .expect("sidecar");
    let open = |host: &'static str| {
        let port = sc.port;
        async move {
            let sock = tokio::net::TcpSocket::new_v4().ok()?;
            let mut s = sock
                .connect(SocketAddr::from(([127, 0, 0, 1], port)))
                .await
                .ok()?;
            let req = format!(
                "GET /api/sse/events?topics=board:1 HTTP/1.1\r\nHost: {host}\r\n\
                 Cookie: user=alice\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.ok()?;
            read_head(&mut s).await.map(|(st, _)| (st, s))
        }
    };
    let (a, _keep) = open("a.example").await.expect("answer");
    assert_eq!(a, 200, "granted on tenant a");
    let (b, _) = open("b.example").await.expect("answer");
    assert_eq!(
        b, 403,
        "the same cookie on tenant b is asked again, and denied"
    );
}
