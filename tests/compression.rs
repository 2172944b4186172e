//! Opt-in gzip: negotiated by Accept-Encoding, flushed at every write so frames are never
//! held back; clients that do not ask get plain streams.

mod common;

use common::{echo, Sidecar};
use std::io::Write;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str = r#"
upstream: {address: "127.0.0.1:1"}
sse: {compression: gzip}
rollout: {phase: 1}
families:
  jobs: {phase: 1}
event_types:
  job.done: {family: jobs, schema: {type: object}}
"#;

/// Reads a chunked, gzip-encoded body incrementally, exposing what has been decoded so far.
struct GzipStream {
    conn: tokio::net::TcpStream,
    raw: Vec<u8>,
    decoder: flate2::write::GzDecoder<Vec<u8>>,
    wire_bytes: usize,
}

impl GzipStream {
    async fn open(url_host: &str, path: &str) -> (String, GzipStream) {
        let mut conn = tokio::net::TcpStream::connect(url_host)
            .await
            .expect("connect");
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: {url_host}\r\nAccept-Encoding: gzip\r\n\r\n");
        conn.write_all(req.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            let n = conn.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before the head");
            raw.extend_from_slice(&buf[..n]);
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
        raw.drain(..head_end + 4);
        let s = GzipStream {
            conn,
            raw,
            decoder: flate2::write::GzDecoder::new(Vec::new()),
            wire_bytes: 0,
        };
        (head, s)
    }

    /// Reads and decodes until the decoded text contains `needle`.
    async fn until(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            // Feed every complete chunk to the decoder.
            while let Some(i) = self.raw.windows(2).position(|w| w == b"\r\n") {
                let size =
                    usize::from_str_radix(std::str::from_utf8(&self.raw[..i]).expect("hex"), 16)
                        .expect("size");
                if self.raw.len() < i + 2 + size + 2 {
                    break;
                }
                let data: Vec<u8> = self.raw[i + 2..i + 2 + size].to_vec();
                self.wire_bytes += size;
                self.raw.drain(..i + 2 + size + 2);
                self.decoder.write_all(&data).expect("gzip data");
                self.decoder.flush().expect("flush");
            }
            let text = String::from_utf8_lossy(self.decoder.get_ref()).into_owned();
            if text.contains(needle) {
                return text;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {needle:?} decoded within {timeout:?}; decoded so far: {text:?}"
            );
            match tokio::time::timeout(left, self.conn.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => self.raw.extend_from_slice(&buf[..n]),
                _ => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_streams_flush_every_frame() {
    let backend = echo::start().await;
    let sc = Sidecar::start(CONFIG, &backend.to_string())
        .await
        .expect("sidecar");
    let host = format!("127.0.0.1:{}", sc.port);
    let (head, mut s) = GzipStream::open(&host, "/api/sse/events?topics=jobs").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("vary: accept-encoding"));
    s.until("event: hello", Duration::from_secs(5)).await;
    let c = reqwest::Client::new();
    for i in 0..50 {
        let body = format!(
            r#"{{"type": "job.done", "topics": ["jobs"], "data": {{"n": {i}, "note": "the same words again and again"}}}}"#
        );
        let r = c
            .post(sc.admin_url("/admin/publish"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("publish");
        assert_eq!(r.status(), 202);
        // Each frame is readable as soon as it is written: the stream is flushed per write.
        s.until(&format!("\"n\":{i},"), Duration::from_secs(5))
            .await;
    }
    let decoded = s.decoder.get_ref().len();
    assert!(
        s.wire_bytes * 2 < decoded,
        "gzip saves bandwidth: {} wire bytes for {decoded} decoded",
        s.wire_bytes
    );
    eprintln!(
        "gzip: {} bytes on the wire for {decoded} bytes of frames",
        s.wire_bytes
    );

    // A client that does not ask gets a plain stream.
    let mut plain = common::SseClient::connect(&sc.url("/api/sse/events?topics=jobs"), None)
        .await
        .expect("connect");
    assert!(plain.headers.get("content-encoding").is_none());
    plain
        .next_of("hello", Duration::from_secs(5))
        .await
        .expect("hello");
}
