//! The stream's promises where they break: a reload, a kill switch or an off→on flap that
//! lands during a slow handshake; unusable Last-Event-IDs; several Cookie headers; the
//! `hello` id a spec-following client resumes from; new event types without a reconnect;
//! a stalled client released at its write timeout. Real binary, real backend, real client.

mod common;

use common::{data, echo, Sidecar, SseClient};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(10);

/// `slow:*` topics are granted by a check that takes 1.5 s; `presence` is public while
/// `with_presence`; `late` event types come and go with `with_late_type`.
fn config(with_presence: bool, with_late_type: bool, extra: &str) -> String {
    let presence = if with_presence {
        "    - {topic: presence, public: true}\n"
    } else {
        ""
    };
    let late = if with_late_type {
        "  job.late: {family: jobs, schema: {type: object}}\n"
    } else {
        ""
    };
    format!(
        r#"
upstream: {{address: "127.0.0.1:1"}}
sse:
  heartbeat_seconds: 1
  handshakes_per_client_per_second: 100000
  handshake_burst: 100000
{extra}
rollout: {{phase: 1}}
families:
  jobs:
    phase: 1
    mode: live
    rules:
      - match: "POST /status/{{code}}"
        event: job.done
        topics: ["presence", "slow:a"]
        data: {{code: "{{code}}"}}
event_types:
  job.done: {{family: jobs, schema: {{type: object}}}}
{late}
authorization:
  rules:
    - topic: "slow:{{x}}"
      check: "GET /slow/1500"
{presence}"#
    )
}

async fn admin_post(sc: &Sidecar, path: &str, body: &str) -> u16 {
    reqwest::Client::new()
        .post(sc.admin_url(path))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn publish(sc: &Sidecar, topic: &str, n: u64) {
    let body = format!(r#"{{"type": "job.done", "topics": ["{topic}"], "data": {{"n": "{n}"}}}}"#);
    assert_eq!(admin_post(sc, "/admin/publish", &body).await, 202);
}

/// Opens a stream in the background (its handshake waits on the slow check) and returns
/// once the backend is serving that check.
async fn open_during_slow_check(sc: &Sidecar, topics: &str) -> tokio::task::JoinHandle<SseClient> {
    let before = echo::SLOW_IN_FLIGHT.load(Ordering::SeqCst);
    let url = sc.url(&format!("/api/sse/events?topics={topics}"));
    let task = tokio::spawn(async move { SseClient::connect(&url, None).await.expect("connect") });
    common::wait_for("the slow check to start", T, || async {
        (echo::SLOW_IN_FLIGHT.load(Ordering::SeqCst) > before).then_some(())
    })
    .await
    .expect("check in flight");
    task
}

async fn wait_reload_applied(sc: &Sidecar, count: f64) {
    let series = "sse_sidecar_config_reloads_total{outcome=\"applied\"}";
    common::wait_for("the reload", T, || async {
        (sc.metric(series).await.ok()? >= count).then_some(())
    })
    .await
    .expect("reload applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_during_the_handshake_revokes_the_topic_it_removed() {
    let up = echo::start().await.to_string();
    let sc = Sidecar::start(&config(true, false, ""), &up)
        .await
        .expect("sidecar");
    let pending = open_during_slow_check(&sc, "slow:a,presence").await;
    // The presence rule goes away while the stream is still being authorized.
    sc.write_config(&config(false, false, ""), &up)
        .expect("write");
    wait_reload_applied(&sc, 1.0).await;
    let mut s = pending.await.expect("stream task");
    assert_eq!(s.status, 200);
    let control = s.next_of("control", T).await.expect("revocation");
    assert_eq!(data(&control)["revoked"], serde_json::json!(["presence"]));
    // Events leave in log order: the presence event would arrive before the slow:a one.
    publish(&sc, "presence", 1).await;
    publish(&sc, "slow:a", 2).await;
    let next = s.next_of("job.done", T).await.expect("the slow:a event");
    assert_eq!(data(&next)["topics"], serde_json::json!(["slow:a"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_thrown_during_the_handshake_closes_the_stream() {
    let up = echo::start().await.to_string();
    let sc = Sidecar::start(&config(true, false, ""), &up)
        .await
        .expect("sidecar");
    let pending = open_during_slow_check(&sc, "slow:a").await;
    let off = r#"{"enabled": false, "reason": "drill"}"#;
    assert_eq!(admin_post(&sc, "/admin/kill-switch", off).await, 200);
    let mut s = pending.await.expect("stream task");
    let seen = s.wait_end(T).await.expect("closed after the kill switch");
    let control = seen
        .iter()
        .find(|e| e.event == "control")
        .expect("a control frame");
    assert_eq!(data(control)["mode"], "polling");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_off_on_flap_during_the_handshake_resets_the_stream() {
    let up = echo::start().await.to_string();
    let sc = Sidecar::start(&config(true, false, ""), &up)
        .await
        .expect("sidecar");
    let pending = open_during_slow_check(&sc, "slow:a").await;
    let off = r#"{"enabled": false, "reason": "flap"}"#;
    assert_eq!(admin_post(&sc, "/admin/kill-switch", off).await, 200);
    assert_eq!(
        admin_post(&sc, "/admin/kill-switch", r#"{"enabled": true}"#).await,
        200
    );
    let mut s = pending.await.expect("stream task");
    assert_eq!(s.status, 200);
    let reset = s.next_of("reset", T).await.expect("a reset after the flap");
    assert_eq!(data(&reset)["reason"], "sse_was_off");
}

/// Reads a raw stream response until `needle` shows up (or the deadline passes).
async fn raw_stream_until(sc: &Sidecar, head_extra: &[u8], needle: &str) -> String {
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", sc.port))
        .await
        .expect("connect");
    let mut req = b"GET /api/sse/events?topics=presence HTTP/1.1\r\nhost: x\r\n".to_vec();
    req.extend_from_slice(head_extra);
    req.extend_from_slice(b"\r\n");
    sock.write_all(&req).await.expect("write head");
    let deadline = Instant::now() + T;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sock.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
        if String::from_utf8_lossy(&got).contains(needle) {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_last_event_id_gets_a_reset_whatever_its_shape() {
    let up = echo::start().await.to_string();
    let sc = Sidecar::start(&config(true, false, ""), &up)
        .await
        .expect("sidecar");
    let long = format!("last-event-id: {}\r\n", "7".repeat(10_000));
    let not_utf8 = b"last-event-id: \xff\xfe-12\r\n".to_vec();
    for extra in [long.into_bytes(), not_utf8] {
        let got = raw_stream_until(&sc, &extra, "malformed_id").await;
        assert!(got.contains("event: reset"), "{got}");
        assert!(got.contains("malformed_id"), "{got}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_carries_the_head_as_its_id_and_new_types_need_no_reconnect() {
    let up = echo::start().await.to_string();
    let sc = Sidecar::start(&config(true, false, ""), &up)
        .await
        .expect("sidecar");
    publish(&sc, "presence", 1).await;
    let mut s = SseClient::connect(&sc.url("/api/sse/events?topics=presence"), None)
        .await
        .expect("connect");
    let hello = s.next_of("hello", T).await.expect("hello");
    assert!(!hello.id.is_empty(), "hello has an id line");
    assert_eq!(data(&hello)["head"], hello.id.as_str());
    // A reload that adds an event type tells the stream; the stream stays open.
    sc.write_config(&config(true, true, ""), &up)
        .expect("write");
    let control = s.next_of("control", T).await.expect("types control");
    assert_eq!(data(&control)["reason"], "types_changed");
    assert!(data(&control)["types"]
        .as_array()
        .is_some_and(|t| t.iter().any(|n| n == "job.late")));
    publish(&sc, "presence", 2).await;
    s.next_of("job.done", T).await.expect("still live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cookie_header_reaches_the_check_whole() {
    let app = common::LegacyApp::start().expect("legacy app");
    let mut yaml = common::demo_config();
    yaml = yaml.replace(
        "sse:\n",
        "sse:\n  handshakes_per_client_per_second: 100000\n  handshake_burst: 100000\n",
    );
    let sc = Sidecar::start(&yaml, &app.addr.to_string())
        .await
        .expect("sidecar");
    let url = sc.url("/api/sse/events?topics=board:1");
    // Board 1 is private to alice and bob: only a check that sees `user=alice` grants it.
    let split = [("cookie", "user=alice"), ("cookie", "theme=dark")];
    let s = SseClient::connect_with(&url, None, &split)
        .await
        .expect("connect");
    assert_eq!(s.status, 200, "the first of two Cookie headers counts too");
    let big = format!("user=alice; pad={}", "p".repeat(9 * 1024));
    let s = SseClient::connect_with(&url, None, &[("cookie", big.as_str())])
        .await
        .expect("connect");
    assert_eq!(s.status, 200, "a 9 KiB cookie is not dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_released_at_its_write_timeout() {
    let up = echo::start().await.to_string();
    let extra = "  write_timeout_seconds: 2\n  queue_max_bytes: 16777216";
    let sc = Sidecar::start(&config(true, false, extra), &up)
        .await
        .expect("sidecar");
    // A client that sends its head and never reads.
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", sc.port))
        .await
        .expect("connect");
    sock.write_all(b"GET /api/sse/events?topics=presence HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("head");
    common::wait_for("the stream to open", T, || async {
        (sc.metric("sse_sidecar_sse_connections").await.ok()? >= 1.0).then_some(())
    })
    .await
    .expect("open");
    // Large events until a write blocks and times out.
    let pad = "x".repeat(60_000);
    let body =
        format!(r#"{{"type": "job.done", "topics": ["presence"], "data": {{"p": "{pad}"}}}}"#);
    let failed = |m: String| {
        common::metric_value(
            &m,
            "sse_sidecar_stream_closes_total{reason=\"write_error\"}",
        ) + common::metric_value(
            &m,
            "sse_sidecar_stream_closes_total{reason=\"slow_consumer\"}",
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while failed(sc.metrics().await.expect("metrics")) < 1.0 {
        assert!(Instant::now() < deadline, "the stalled stream never failed");
        for _ in 0..20 {
            admin_post(&sc, "/admin/publish", &body).await;
        }
    }
    let counted = Instant::now();
    common::wait_for("the socket to be released", T, || async {
        (sc.metric("sse_sidecar_sse_connections").await.ok()? == 0.0).then_some(())
    })
    .await
    .expect("released");
    let released_after = counted.elapsed();
    println!("released {released_after:?} after the failure was counted");
    // Released at once, not after a second write timeout (2 s).
    assert!(
        released_after < Duration::from_millis(1500),
        "{released_after:?}"
    );
    drop(sock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_bytes_stay_queued_after_streams_leave_during_publishing() {
    let up = echo::start().await.to_string();
    let sc = Sidecar::start(&config(true, false, ""), &up)
        .await
        .expect("sidecar");
    let publisher = {
        let admin = sc.admin_url("/admin/publish");
        tokio::spawn(async move {
            let c = reqwest::Client::new();
            let body = r#"{"type": "job.done", "topics": ["presence"], "data": {"n": "1"}}"#;
            for _ in 0..400 {
                let _ = c
                    .post(&admin)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
            }
        })
    };
    // Waves of streams that open, take a few frames (or none) and leave abruptly.
    for _ in 0..10 {
        let mut socks = Vec::new();
        for _ in 0..50 {
            let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", sc.port)).await else {
                continue;
            };
            let head = b"GET /api/sse/events?topics=presence HTTP/1.1\r\nhost: x\r\n\r\n";
            if s.write_all(head).await.is_ok() {
                socks.push(s);
            }
        }
        let mut buf = [0u8; 512];
        for s in socks.iter_mut().step_by(2) {
            let _ = tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await;
        }
        drop(socks);
    }
    publisher.await.expect("publisher");
    common::wait_for("every stream to close", T, || async {
        (sc.metric("sse_sidecar_sse_connections").await.ok()? == 0.0).then_some(())
    })
    .await
    .expect("closed");
    // The gauge is refreshed by each fan-out (events with nobody listening); a coalescing
    // window may hold one back, so ask until it is current.
    let drained = common::wait_for("no bytes queued with no stream open", T, || async {
        publish(&sc, "presence", 2).await;
        (sc.metric("sse_sidecar_queued_bytes").await.ok()? == 0.0).then_some(())
    })
    .await;
    if let Err(e) = drained {
        let m = sc.metrics().await.unwrap_or_default();
        let shown: Vec<&str> = m
            .lines()
            .filter(|l| l.contains("queued") || l.contains("closes") || l.contains("connections"))
            .collect();
        panic!("{e}\n{}", shown.join("\n"));
    }
}
