//! Request heads on the listener (issue 15 item 12): the front holds every head, stream or
//! pass-through, to the cap (431) and to a total deadline (408), and answers bare-LF heads
//! as Pingora does, at once.

mod common;

use common::echo;
use common::Sidecar;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONFIG: &str = r#"
upstream: {address: "127.0.0.1:1"}
rollout: {phase: 1}
sse: {request_head_timeout_seconds: 2}
"#;

/// Reads until the peer closes or `limit` passes: (what was read, whether it closed).
async fn read_until_close(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into(), false),
        }
    }
}

async fn start() -> Sidecar {
    let backend = echo::start().await;
    Sidecar::start(CONFIG, &backend.to_string())
        .await
        .expect("sidecar")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_over_the_cap_on_a_passthrough_path_gets_431_at_once() {
    let sc = start().await;
    for path in ["/echo/big", "/api/sse/events"] {
        let mut s = TcpStream::connect(("127.0.0.1", sc.port))
            .await
            .expect("connect");
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(20 * 1024)
        );
        let t0 = Instant::now();
        s.write_all(head.as_bytes()).await.expect("write");
        let (answer, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 431 "), "{path}: {answer:?}");
        assert!(closed, "{path}: closed after the 431");
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{path}: {:?}",
            t0.elapsed()
        );
    }
    // A head just under the cap still passes.
    let mut s = TcpStream::connect(("127.0.0.1", sc.port))
        .await
        .expect("connect");
    let head = format!(
        "GET /echo/ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "a".repeat(15 * 1024)
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let (answer, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_head_is_cut_at_its_deadline_on_every_path() {
    let sc = start().await;
    for path in ["/echo/slow", "/api/sse/events"] {
        let mut s = TcpStream::connect(("127.0.0.1", sc.port))
            .await
            .expect("connect");
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nX-Slow: {}",
            "a".repeat(200)
        );
        let t0 = Instant::now();
        let mut closed_at = None;
        // One byte every 100 ms, well past the 2 s deadline; stop when the front gives up.
        for b in head.bytes() {
            if s.write_all(&[b]).await.is_err() {
                break;
            }
            let mut buf = [0u8; 512];
            if let Ok(r) = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await
            {
                let text = String::from_utf8_lossy(&buf[..r.unwrap_or(0)]).into_owned();
                assert!(
                    text.is_empty() || text.starts_with("HTTP/1.1 408 "),
                    "{path}: {text:?}"
                );
                closed_at = Some(t0.elapsed());
                break;
            }
        }
        let at = closed_at.unwrap_or_else(|| panic!("{path}: still open after {:?}", t0.elapsed()));
        assert!(
            at >= Duration::from_millis(1900) && at < Duration::from_millis(3500),
            "{path}: closed at {at:?}, deadline 2 s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_lf_head_is_answered_at_once() {
    let sc = start().await;
    let mut s = TcpStream::connect(("127.0.0.1", sc.port))
        .await
        .expect("connect");
    let t0 = Instant::now();
    s.write_all(b"GET /echo/lf HTTP/1.1\nHost: x\nConnection: close\n\n")
        .await
        .expect("write");
    let (answer, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
    // As Pingora answers it: parsed (httparse accepts bare LF) and proxied.
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

/// Issue 15 item 17: a topic part `.` or `..` would be a dot segment in a check path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dot_topic_part_is_refused_with_a_clear_400() {
    let sc = start().await;
    for topics in ["board:..", "board:.", "board:1,org:..:x"] {
        let r = reqwest::get(sc.url(&format!("/api/sse/events?topics={topics}")))
            .await
            .expect("request");
        assert_eq!(r.status(), 400, "{topics}");
        let body = r.text().await.expect("body");
        assert!(body.contains("dot segment"), "{topics}: {body}");
    }
    let r = reqwest::get(sc.url("/api/sse/events?topics=board:..."))
        .await
        .expect("request");
    assert_eq!(r.status(), 200, "three dots are an ordinary part");
}
