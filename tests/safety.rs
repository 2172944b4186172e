//! Safety controls on the real server: a handshake storm, per-client handshake limits,
//! idempotent mutations publishing once, and clients that stop reading.

mod common;

use common::{data, echo, Sidecar, SseClient};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(10);

fn config(sse: &str) -> String {
    format!(
        r#"
upstream: {{address: "127.0.0.1:1"}}
sse: {sse}
store: {{backend: memory, retention: {{max_events: 200}}}}
rollout: {{phase: 1}}
families:
  jobs:
    phase: 1
    rules:
      - match: "POST /status/{{code}}"
        event: job.done
        topics: ["jobs"]
        data: {{code: "{{code}}", q: "{{query.q}}"}}
event_types:
  job.done: {{family: jobs, schema: {{type: object}}}}
"#
    )
}

/// Opens a raw stream request and returns (status, retry-after, the socket).
async fn raw_open(port: u16) -> Option<(u16, Option<String>, tokio::net::TcpStream)> {
    raw_open_path(port, [127, 0, 0, 1], "/api/sse/events?topics=jobs").await
}

/// `raw_open` of `path` from the local address `from` (any 127.x.y.z works on Linux).
async fn raw_open_path(
    port: u16,
    from: [u8; 4],
    path: &str,
) -> Option<(u16, Option<String>, tokio::net::TcpStream)> {
    let sock = tokio::net::TcpSocket::new_v4().ok()?;
    sock.bind(std::net::SocketAddr::from((from, 0))).ok()?;
    let mut s = sock
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
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
    let status = head.get(9..12)?.parse().ok()?;
    let retry = head
        .lines()
        .find_map(|l| l.strip_prefix("retry-after:").map(|v| v.trim().to_owned()));
    Some((status, retry, s))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_5000_stream_requests_is_refused_cleanly_beyond_the_limits() {
    let backend = echo::start().await;
    let sc = Sidecar::start(
        &config("{max_connections: 1000, handshakes_per_client_per_second: 100000, handshake_burst: 100000}"),
        &backend.to_string(),
    )
    .await
    .expect("sidecar");
    let port = sc.port;
    let tasks: Vec<_> = (0..5000).map(|_| tokio::spawn(raw_open(port))).collect();
    let mut ok = Vec::new();
    let (mut refused, mut errors) = (0, 0);
    for t in tasks {
        match t.await.expect("join") {
            Some((200, _, s)) => ok.push(s),
            Some((503, Some(_), _)) => refused += 1,
            Some((status, retry, _)) => panic!("unexpected {status} (retry-after {retry:?})"),
            None => errors += 1,
        }
    }
    assert_eq!(errors, 0, "every request got an answer");
    assert_eq!(ok.len(), 1000, "exactly max_connections admitted");
    assert_eq!(refused, 4000, "the rest got 503 + Retry-After");
    // All admitted streams work: an event reaches every one of them.
    let c = reqwest::Client::new();
    assert_eq!(
        c.post(sc.url("/status/201?q=storm"))
            .send()
            .await
            .expect("mutation")
            .status(),
        201
    );
    let mut got = 0;
    for mut s in ok {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let deadline = Instant::now() + T;
        while !String::from_utf8_lossy(&buf).contains("event: job.done")
            && Instant::now() < deadline
        {
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(1), s.read(&mut chunk)).await
            {
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        got += String::from_utf8_lossy(&buf).contains("event: job.done") as usize;
    }
    assert_eq!(got, 1000);
    assert_eq!(
        reqwest::get(sc.admin_url("/healthz"))
            .await
            .expect("alive")
            .status(),
        200
    );
    let overloaded = sc
        .metric("sse_sidecar_sse_handshakes_total{outcome=\"overloaded\"}")
        .await
        .expect("m");
    assert_eq!(overloaded, 4000.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_opening_too_many_streams_gets_429() {
    let backend = echo::start().await;
    let sc = Sidecar::start(
        &config("{handshakes_per_client_per_second: 1, handshake_burst: 5}"),
        &backend.to_string(),
    )
    .await
    .expect("sidecar");
    let mut statuses = Vec::new();
    let mut keep = Vec::new();
    for _ in 0..8 {
        let (status, retry, s) = raw_open(sc.port).await.expect("answer");
        if status == 429 {
            assert!(retry.is_some_and(|r| r.parse::<u64>().is_ok_and(|r| r >= 1)));
        }
        statuses.push(status);
        keep.push(s);
    }
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 429, 429, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_mutation_with_the_same_idempotency_key_publishes_once() {
    let backend = echo::start().await;
    let sc = Sidecar::start(&config("{}"), &backend.to_string())
        .await
        .expect("sidecar");
    let mut s = SseClient::connect(&sc.url("/api/sse/events?topics=jobs"), None)
        .await
        .expect("connect");
    s.next_of("hello", T).await.expect("hello");
    let c = reqwest::Client::new();
    for q in ["first", "retry"] {
        let r = c
            .post(sc.url(&format!("/status/201?q={q}")))
            .header("idempotency-key", "key-1")
            .send()
            .await
            .expect("m");
        assert_eq!(r.status(), 201, "the backend still sees both");
    }
    let r = c
        .post(sc.url("/status/201?q=other"))
        .header("idempotency-key", "key-2")
        .send()
        .await
        .expect("m");
    assert_eq!(r.status(), 201);
    let a = s.next_of("job.done", T).await.expect("first");
    let b = s.next_of("job.done", T).await.expect("second");
    assert_eq!(data(&a)["data"]["q"], "first");
    assert_eq!(
        data(&b)["data"]["q"],
        "other",
        "the retry published nothing"
    );
    let dup = sc
        .metric("sse_sidecar_events_rejected_total{family=\"jobs\",reason=\"duplicate\"}")
        .await
        .expect("m");
    assert_eq!(dup, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_are_cut_and_memory_stays_bounded() {
    let backend = echo::start().await;
    let sc = Sidecar::start(
        &config("{queue_max_bytes: 65536, queued_bytes_total: 4194304, write_timeout_seconds: 2, handshakes_per_client_per_second: 100000, handshake_burst: 100000}"),
        &backend.to_string(),
    )
    .await
    .expect("sidecar");
    let rss = |pid: i32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("VmRSS:").map(|v| {
                        v.split_whitespace()
                            .next()
                            .unwrap_or("0")
                            .parse()
                            .unwrap_or(0)
                    })
                })
            })
            .unwrap_or(0)
    };
    // 200 clients that never read a byte after their request.
    let mut stalled = Vec::new();
    for _ in 0..200 {
        let (status, _, s) = raw_open(sc.port).await.expect("answer");
        assert_eq!(status, 200);
        stalled.push(s);
    }
    let mut healthy = SseClient::connect(&sc.url("/api/sse/events?topics=jobs"), None)
        .await
        .expect("connect");
    healthy.next_of("hello", T).await.expect("hello");
    let before = rss(sc.proc.pid());
    // ~16 KiB events, published as fast as the admin API takes them.
    let big = "x".repeat(16 * 1024);
    let c = reqwest::Client::new();
    let mut latencies = Vec::new();
    let mut peak = before;
    for i in 0..2000 {
        let body = format!(
            r#"{{"type": "job.done", "topics": ["jobs"], "data": {{"i": {i}, "pad": "{big}"}}}}"#
        );
        let r = c
            .post(sc.admin_url("/admin/publish"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("publish");
        assert_eq!(r.status(), 202);
        let sent = Instant::now();
        let e = healthy
            .next_of("job.done", T)
            .await
            .expect("healthy client keeps up");
        assert_eq!(data(&e)["data"]["i"], i);
        latencies.push(sent.elapsed());
        if i % 50 == 0 {
            peak = peak.max(rss(sc.proc.pid()));
        }
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    assert!(p99 < Duration::from_millis(100), "healthy p99 {p99:?}");
    let cut = common::wait_for("the stalled clients cut", T, || async {
        let n = sc
            .metric("sse_sidecar_stream_closes_total{reason=\"slow_consumer\"}")
            .await
            .ok()?;
        (n >= 200.0).then_some(n)
    })
    .await
    .expect("every stalled client cut as a slow consumer");
    let grown_mib = (peak.saturating_sub(before)) as f64 / 1024.0;
    eprintln!("RSS before {before} KiB, peak {peak} KiB (+{grown_mib:.1} MiB); healthy p99 {p99:?}; {cut} cut");
    assert!(
        grown_mib < 64.0,
        "memory stays bounded: +{grown_mib:.1} MiB"
    );
    drop(stalled);
}

/// The store breaker end to end: the SQLite log on a tmpfs that fills up (needs root for the
/// mount; CI runs as root), then frees again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_sends_clients_to_polling_until_it_recovers() {
    let Some(mnt) = common::Tmpfs::mount("4m") else {
        return;
    };
    let backend = echo::start().await;
    let cfg = config("{}").replace(
        "store: {backend: memory, retention: {max_events: 200}}",
        &format!(
            "store: {{backend: sqlite, path: \"{}/events.db\"}}",
            mnt.path().display()
        ),
    ) + "safety: {breaker_cooldown_seconds: 2}\n";
    let sc = Sidecar::start(&cfg, &backend.to_string())
        .await
        .expect("sidecar");
    let mut s = SseClient::connect(&sc.url("/api/sse/events?topics=jobs"), None)
        .await
        .expect("connect");
    s.next_of("hello", T).await.expect("hello");
    mnt.fill();
    let c = reqwest::Client::new();
    let pump = {
        let (c, url) = (c.clone(), sc.url("/status/201?q=pump"));
        tokio::spawn(async move {
            let mut failures = 0;
            for _ in 0..400 {
                match c.post(&url).send().await {
                    Ok(r) if r.status() == 201 => {}
                    _ => failures += 1,
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            failures
        })
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut told = false;
    while !told && Instant::now() < deadline {
        if let Some(e) = s.next(Duration::from_millis(200)).await {
            told = e.event == "control" && data(&e)["families"] == serde_json::json!(["jobs"]);
        }
    }
    assert!(told, "clients of the family were told to poll");
    let status = sc.status().await.expect("status");
    assert_eq!(status["breakers"]["store"], "open");
    mnt.free();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut back = false;
    while !back && Instant::now() < deadline {
        if let Some(e) = s.next(Duration::from_millis(200)).await {
            back = e.event == "control" && data(&e)["families"] == serde_json::json!([]);
        }
    }
    assert!(
        back,
        "recovery closes the breaker and the family is live again"
    );
    assert_eq!(pump.await.expect("join"), 0, "pass-through never failed");
    common::wait_for("the store breaker closed", T, || async {
        (sc.metric("sse_sidecar_breaker_state{breaker=\"store\"}")
            .await
            .ok()?
            == 0.0)
            .then_some(())
    })
    .await
    .expect("closed after a good probe");
}

/// The latency breaker end to end, with a target every delivery misses (0.5 ms, below the
/// histogram's first bucket): level 2 sheds the low-priority family, then recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latency_breaker_sheds_low_priorities_then_recovers() {
    let backend = echo::start().await;
    let cfg = config("{}").replace(
        "  jobs:\n    phase: 1\n",
        "  chatter: {phase: 1, priority: 1}\n  jobs:\n    phase: 1\n    priority: 9\n",
    ) + "safety: {latency_target_ms: 0.5, breaker_cooldown_seconds: 2}\n";
    let sc = Sidecar::start(&cfg, &backend.to_string())
        .await
        .expect("sidecar");
    let mut s = SseClient::connect(&sc.url("/api/sse/events?topics=jobs"), None)
        .await
        .expect("connect");
    s.next_of("hello", T).await.expect("hello");
    let c = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut shed = false;
    while !shed && Instant::now() < deadline {
        let r = c
            .post(sc.admin_url("/admin/publish"))
            .header("content-type", "application/json")
            .body(r#"{"type": "job.done", "topics": ["jobs"], "data": {}}"#)
            .send()
            .await
            .expect("publish");
        assert_eq!(r.status(), 202);
        while let Some(e) = s.next(Duration::from_millis(50)).await {
            if e.event == "control" && data(&e)["families"] == serde_json::json!(["chatter"]) {
                shed = true;
            }
        }
    }
    assert!(shed, "the low-priority family was sent to polling");
    assert_eq!(
        sc.metric("sse_sidecar_degradation_level").await.expect("m"),
        2.0
    );
    assert_eq!(
        sc.status().await.expect("status")["breakers"]["latency"],
        "open"
    );
    // No more deliveries: no latency samples, the breaker probes and closes.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut back = false;
    while !back && Instant::now() < deadline {
        if let Some(e) = s.next(Duration::from_millis(200)).await {
            back = e.event == "control" && data(&e)["families"] == serde_json::json!([]);
        }
    }
    assert!(
        back,
        "half-open: the families are live again while the breaker probes"
    );
    common::wait_for("the latency breaker closed", T, || async {
        (sc.status().await.ok()?["breakers"]["latency"] == "closed").then_some(())
    })
    .await
    .expect("closed after a good probe");
}

/// Opens a stream whose client reads nothing and advertises a tiny receive window, so what
/// the sidecar sends piles up in its own queue quickly.
async fn stalled(port: u16) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(2048).expect("rcvbuf");
    let mut s = sock
        .connect(([127, 0, 0, 1], port).into())
        .await
        .expect("connect");
    s.write_all(b"GET /api/sse/events?topics=jobs HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    s
}

/// The memory breaker end to end: queued bytes near their bound refuse new streams (503),
/// and once the pile is gone the breaker closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_breaker_refuses_new_streams_under_queue_pressure() {
    let backend = echo::start().await;
    let cfg = config("{queued_bytes_total: 1048576, queue_max_bytes: 262144, write_timeout_seconds: 30, handshakes_per_client_per_second: 100000, handshake_burst: 100000}")
        + "safety: {breaker_cooldown_seconds: 2}\n";
    let sc = Sidecar::start(&cfg, &backend.to_string())
        .await
        .expect("sidecar");
    let mut piles = Vec::new();
    for _ in 0..40 {
        piles.push(stalled(sc.port).await);
    }
    let big = "y".repeat(16 * 1024);
    let c = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut refused = false;
    while !refused && Instant::now() < deadline {
        for _ in 0..10 {
            let body = format!(
                r#"{{"type": "job.done", "topics": ["jobs"], "data": {{"pad": "{big}"}}}}"#
            );
            c.post(sc.admin_url("/admin/publish"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("publish");
        }
        if let Some((503, Some(_), _)) = raw_open(sc.port).await {
            refused = true;
        }
    }
    assert!(
        refused,
        "new streams refused with 503 while queued memory is near its bound"
    );
    assert_eq!(
        sc.status().await.expect("status")["breakers"]["memory"],
        "open"
    );
    drop(piles);
    common::wait_for(
        "the memory breaker closed",
        Duration::from_secs(15),
        || async { (sc.status().await.ok()?["breakers"]["memory"] == "closed").then_some(()) },
    )
    .await
    .expect("closed once the pile is gone");
    let (status, _, _s) = raw_open(sc.port).await.expect("answer");
    assert_eq!(status, 200);
}

/// The stream-health breaker end to end: most streams failing on write (server-side write
/// timeouts, from many addresses) switch SSE off (new streams get 204), then it probes back
/// on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_health_breaker_switches_sse_off_then_back_on() {
    let backend = echo::start().await;
    let cfg = config(
        "{handshakes_per_client_per_second: 100000, handshake_burst: 100000, \
         write_timeout_seconds: 1, max_event_bytes: 1048576, queue_max_bytes: 67108864, \
         queued_bytes_total: 4294967296}",
    ) + "safety: {breaker_cooldown_seconds: 2}\n";
    let sc = Sidecar::start(&cfg, &backend.to_string())
        .await
        .expect("sidecar");
    // Groups of 25 streams that never read, from 100 addresses (one address counts at most
    // a small share of the failures), each group on its own topic. Enough groups that their
    // stalls keep coming for several consecutive seconds however loaded the machine is (the
    // breaker opens after consecutive bad seconds; the loop stops at the first open).
    const GROUPS: u16 = 20;
    let mut groups = Vec::new();
    for g in 0..GROUPS {
        let mut group = Vec::new();
        for i in 0..25u16 {
            let n = g * 25 + i;
            let from = [127, 0, 1, (1 + n % 100) as u8];
            let path = format!("/api/sse/events?topics=g{g}");
            let (status, _, s) = raw_open_path(sc.port, from, &path).await.expect("answer");
            assert_eq!(status, 200);
            group.push(s);
        }
        groups.push(group);
    }
    let c = reqwest::Client::new();
    // 5 MB per group: more than a loopback socket's buffers hold.
    let big = "x".repeat(200 * 1024);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut off = false;
    let mut g = 0;
    while !off && Instant::now() < deadline {
        // Every 300 ms or so, the next group's writes stall: they time out a second later.
        if g < GROUPS {
            let body = format!(
                r#"{{"type": "job.done", "topics": ["g{g}"], "data": {{"pad": "{big}"}}}}"#
            );
            let publish = |body: String| {
                c.post(sc.admin_url("/admin/publish"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
            };
            futures_util::future::join_all((0..25).map(|_| publish(body.clone()))).await;
            g += 1;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        off = sc
            .status()
            .await
            .ok()
            .is_some_and(|s| s["breakers"]["stream_health"] == "open");
    }
    drop(groups);
    if !off {
        let m = sc.metrics().await.unwrap_or_default();
        for l in m
            .lines()
            .filter(|l| l.contains("closes") || l.contains("published"))
        {
            eprintln!("{l}");
        }
    }
    assert!(off, "the stream-health breaker opened");
    let st: serde_json::Value = sc.sse_status().await.expect("status");
    assert_eq!(st["mode"], "polling");
    assert_eq!(sc.stream_status("jobs").await.expect("request"), 204);
    common::wait_for("SSE back on", Duration::from_secs(15), || async {
        let r = reqwest::get(sc.url("/api/sse/status"))
            .await
            .ok()?
            .json::<serde_json::Value>()
            .await
            .ok()?;
        (r["mode"] == "sse").then_some(())
    })
    .await
    .expect("probed back on");
    let kinds = sc.status().await.expect("status")["transitions"].to_string();
    assert!(kinds.contains("stream_health open"), "{kinds}");
}
