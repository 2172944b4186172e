//! The listener (the composition's edge, beside `app`): reads each request head on a connection itself; event-stream
//! requests are served right on the socket, everything else is handed, bytes untouched, to
//! Pingora's proxy. Every head, whatever its path, is held to the same limits here, before
//! Pingora sees it: at most `sse.max_request_head_bytes` (431 beyond) and complete within
//! `sse.request_head_timeout_seconds` of its first byte however it trickles (408 beyond).
//! A head is complete when `httparse` says so (bare-LF line ends included, as Pingora
//! accepts them) — [`head_state`], pure and fuzzed.
//!
//! Why: a stream served inside Pingora's proxy keeps the whole per-request machinery alive
//! for hours (its request future, session, header buffers: about 28 KiB per stream
//! measured). A stream served here holds only the socket, its subscription and a small
//! loop, in a task of its own: the connection's Pingora task ends when the stream starts, so
//! its accept and handshake state is not held for the stream's life either (6.6 KiB per idle
//! stream in all, docs/performance.md). The keep-alive loop mirrors Pingora's own (`ServerApp for HttpServerApp`), so
//! pass-through requests behave exactly as before, including keep-alive reuse.

use crate::hub::Subscriber;
use crate::proxy::Proxy;
use crate::sse::stream::{self, Sink, StreamRequest};
use crate::state::State;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a new connection may wait before the first byte of its first request head.
const FIRST_HEAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Header lines `httparse` is given room for: Pingora's own limit.
const MAX_HEADERS: usize = 256;
/// How long an idle keep-alive connection is kept (Pingora's default).
const KEEPALIVE: Duration = Duration::from_secs(60);

pub struct Front {
    pub proxy: Arc<HttpProxy<Proxy>>,
    pub state: Arc<State>,
}

/// What the front learnt from a request head.
enum Head {
    /// The connection closed or idled out before a complete head.
    Gone,
    /// An event-stream request.
    Stream(StreamRequest),
    /// Anything else: the bytes read so far, to be replayed to Pingora.
    Other(BytesMut),
    /// Answered here and closed: 431 (head over the cap) or 408 (head past its deadline).
    Refuse(u16),
}

/// How far a request head read so far has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadState {
    /// More bytes are needed.
    Partial,
    /// A whole head of this many bytes, or one Pingora will refuse as it is (not HTTP, too
    /// many headers) with its end in the buffer: either way it goes on to be answered.
    Complete(usize),
    /// Over the cap (complete or not): 431.
    TooLarge,
}

/// Whether `buf` holds a whole request head, within `max` bytes. Never reads past `max`
/// bytes of `buf`. A head `httparse` refuses counts as complete only once a blank line ends
/// it, so nothing is handed on before its end has arrived.
pub fn head_state(buf: &[u8], max: usize) -> HeadState {
    let window = &buf[..buf.len().min(max.saturating_add(1))];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let state = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => HeadState::Complete(n),
        Ok(httparse::Status::Partial) => HeadState::Partial,
        Err(_) => match blank_line_end(window) {
            Some(n) => HeadState::Complete(n),
            None => HeadState::Partial,
        },
    };
    match state {
        HeadState::Complete(n) if n > max => HeadState::TooLarge,
        HeadState::Partial if window.len() > max => HeadState::TooLarge,
        s => s,
    }
}

/// The end of the first blank line (`\n\n` or `\n\r\n`), if any.
fn blank_line_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).enumerate().find_map(|(i, w)| match w {
        [b'\n', b'\n'] => Some(i + 2),
        [b'\n', b'\r'] if buf.get(i + 2) == Some(&b'\n') => Some(i + 3),
        _ => None,
    })
}

/// Classifies a complete head: `GET <stream path>[?query]` is ours.
pub fn classify(buf: &[u8], stream_path: &str) -> Option<StreamRequest> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    if req.method != Some("GET") || req.version != Some(1) {
        return None;
    }
    let target = req.path?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != stream_path {
        return None;
    }
    // A request that announces a body is left to Pingora, which knows how to drain it.
    let mut out = StreamRequest {
        query: query.to_owned(),
        ..Default::default()
    };
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") && h.value != b"0" {
            return None;
        }
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        }
        out.header(h.name, h.value);
    }
    Some(out)
}

/// The limits every request head is held to (from `sse.*`, read per connection turn).
struct HeadLimits {
    max_bytes: usize,
    timeout: Duration,
}

/// Reads one request head: waits up to `idle` for its first byte, then up to the limits'
/// timeout for the rest.
async fn read_head(
    stream: &mut L4Stream,
    stream_path: &str,
    idle: Duration,
    limits: &HeadLimits,
) -> Head {
    let mut buf = BytesMut::with_capacity(1024);
    // Idle or closed before a byte: nothing to serve or answer.
    match tokio::time::timeout(idle, stream.read_buf(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return Head::Gone,
    }
    let deadline = tokio::time::Instant::now() + limits.timeout;
    loop {
        match head_state(&buf, limits.max_bytes) {
            HeadState::Complete(_) => break,
            HeadState::TooLarge => return Head::Refuse(431),
            HeadState::Partial => {}
        }
        buf.reserve(1024);
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            // Closed mid-head: dropped with the connection, as Pingora would.
            Ok(_) => return Head::Gone,
            Err(_) => return Head::Refuse(408),
        }
    }
    match classify(&buf, stream_path) {
        Some(req) => Head::Stream(req),
        None => Head::Other(buf),
    }
}

/// Answers a head the front refused (431, 408) and closes.
async fn refuse_head(stream: &mut L4Stream, status: u16) {
    let body = match status {
        431 => "request head too large\n",
        _ => "request head not received in time\n",
    };
    let r = crate::http::Refused {
        status,
        outcome: "bad_head",
        retry_after: None,
        body: body.into(),
    };
    refuse(stream, &r).await;
    // Read (and drop) what the client is still sending for a moment: closing with unread
    // bytes would reset the connection and could destroy the answer before it is read.
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut left: usize = 1 << 20;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

#[async_trait]
impl ServerApp for Front {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.state
            .metrics
            .note_runtime(crate::metrics::Runtime::Proxy);
        if !stream.as_any().is::<L4Stream>() {
            // Not a plain TCP stream (never the case for this listener): Pingora as is.
            return self.proxy.process_new(stream, shutdown).await;
        }
        let mut l4: Box<L4Stream> = stream.into_any().downcast().ok()?;
        let mut persistent: Option<HttpPersistentSettings> = None;
        let mut timeout = FIRST_HEAD_TIMEOUT;
        loop {
            let (path, limits) = {
                let cfg = self.state.config();
                let limits = HeadLimits {
                    max_bytes: cfg.sse.max_request_head_bytes,
                    timeout: cfg.sse.request_head_timeout,
                };
                (cfg.sse.path.clone(), limits)
            };
            match read_head(&mut l4, &path, timeout, &limits).await {
                Head::Gone => return None,
                Head::Refuse(status) => {
                    Box::pin(refuse_head(&mut l4, status)).await; // rare: kept out of line
                    return None;
                }
                Head::Stream(req) => {
                    // The stream gets a task of its own, and Pingora's connection task ends:
                    // that task's future (the accept, TLS and request turns, several KiB)
                    // would otherwise be held for the stream's whole life (measured: 12.0 →
                    // 6.0 KiB of heap per idle stream with the changes around it).
                    let state = self.state.clone();
                    tokio::spawn(async move { serve_stream(&state, l4, Box::new(req)).await });
                    return None;
                }
                Head::Other(bytes) => {
                    // Boxed: Pingora's session and request future are several KiB, and
                    // inline they would stay part of every connection's future, an event
                    // stream's for its whole life.
                    let turn = Box::pin(self.pass_through(l4, bytes, persistent.take(), shutdown));
                    let (next, settings) = turn.await?;
                    persistent = settings;
                    timeout = KEEPALIVE;
                    l4 = next;
                }
            }
        }
    }
}

impl Front {
    /// One request that is not an event stream, answered by Pingora's proxy; the connection
    /// back (with its keep-alive settings) when it may carry another request.
    async fn pass_through(
        &self,
        mut l4: Box<L4Stream>,
        head: BytesMut,
        persistent: Option<HttpPersistentSettings>,
        shutdown: &ShutdownWatch,
    ) -> Option<(Box<L4Stream>, Option<HttpPersistentSettings>)> {
        l4.rewind(&head);
        let mut session = ServerSession::new_http1(l4);
        if *shutdown.borrow() {
            session.set_keepalive(None);
        } else {
            session.set_keepalive(Some(KEEPALIVE.as_secs()));
        }
        if let Some(p) = persistent {
            p.apply_to_session(&mut session);
        }
        // Counted until answered: a drain exits once nothing is in flight.
        let in_flight = crate::metrics::InFlight::start(&self.state.metrics);
        let reused = self.proxy.process_new_http(session, shutdown).await;
        drop(in_flight);
        let (next, settings) = reused?.consume();
        if !next.as_any().is::<L4Stream>() {
            return None;
        }
        Some((next.into_any().downcast().ok()?, settings))
    }
}

/// A socket the front took over, as a stream sink: chunked framing written directly,
/// optionally gzip-compressed with a sync flush at every write (frames are never held back).
pub struct SocketSink {
    stream: Box<L4Stream>,
    write_timeout: Duration,
    gzip: Option<flate2::write::GzEncoder<Vec<u8>>>,
    /// The subscriber the socket is lent to (direct mode, see `crate::hub`), if it is.
    direct: Option<Arc<Subscriber>>,
    /// The rest of a direct write cut short: written before anything else.
    rest: Option<Bytes>,
}

impl SocketSink {
    async fn write(&mut self, bytes: &[u8]) -> bool {
        self.take_back();
        if let Some(rest) = self.rest.take() {
            if !self.write_now(&rest).await {
                return false;
            }
        }
        self.write_now(bytes).await
    }

    async fn write_now(&mut self, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return true;
        }
        let w = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        matches!(
            tokio::time::timeout(self.write_timeout, w).await,
            Ok(Ok(()))
        )
    }

    /// Ends direct mode; keeps what a cut-short direct write left for the next write.
    fn take_back(&mut self) {
        if let Some(sub) = self.direct.take() {
            if let Some(rest) = sub.disable_direct() {
                self.rest = Some(rest);
            }
        }
    }
}

impl Drop for SocketSink {
    /// The fan-out must never write to a closed (or reused) descriptor: take the socket back
    /// before it closes (fields drop after this).
    fn drop(&mut self) {
        self.take_back();
    }
}

impl Sink for SocketSink {
    async fn start(&mut self, cors: Option<&str>) -> bool {
        let mut head = String::from("HTTP/1.1 200 OK\r\n");
        for (k, v) in stream::STREAM_HEADERS {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        for (k, v) in stream::cors_headers(cors) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if self.gzip.is_some() {
            head.push_str("content-encoding: gzip\r\nvary: accept-encoding\r\n");
        }
        head.push_str("\r\n");
        self.write(head.as_bytes()).await
    }

    async fn send(&mut self, bytes: Bytes) -> bool {
        if bytes.is_empty() {
            return true;
        }
        let bytes = match self.gzip.as_mut() {
            None => bytes,
            Some(enc) => {
                use std::io::Write;
                if enc.write_all(&bytes).and_then(|_| enc.flush()).is_err() {
                    return false;
                }
                Bytes::from(std::mem::take(enc.get_mut()))
            }
        };
        // One write per chunk. The buffer is not kept between writes: an idle stream holds
        // no buffer (most of its writes are the fan-out's, straight to the socket).
        let mut buf = BytesMut::with_capacity(bytes.len() + 12);
        crate::wire::encode::put_chunk(&mut buf, &bytes);
        self.write(&buf).await
    }

    async fn resume_direct(&mut self, sub: &Arc<Subscriber>) -> bool {
        // Compressed streams keep one deflate state per stream: never direct.
        if self.gzip.is_some() {
            return true;
        }
        self.take_back();
        // Boxed: rare, and its state would otherwise be part of every stream's future.
        if self.rest.is_some() && !Box::pin(self.write(&[])).await {
            return false;
        }
        if sub.enable_direct(crate::sys::LentSocket::of(&*self.stream)) {
            self.direct = Some(sub.clone());
        }
        true
    }

    fn pause_direct(&mut self) {
        self.take_back();
    }

    fn lent(&self) -> bool {
        self.direct.is_some()
    }

    async fn closed(&mut self) -> bool {
        let mut byte = [0u8; 64];
        loop {
            match self.stream.read(&mut byte).await {
                Ok(0) => return true,
                Err(_) => return false,
                // A client has nothing to say on an event stream; ignore stray bytes.
                Ok(_) => {}
            }
        }
    }

    async fn finish(&mut self) {
        if let Some(enc) = self.gzip.take() {
            if let Ok(tail) = enc.finish() {
                if !tail.is_empty() {
                    let mut buf = BytesMut::new();
                    crate::wire::encode::put_chunk(&mut buf, &tail);
                    let _ = self.write(&buf).await;
                }
            }
        }
        let _ = self.write(b"0\r\n\r\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.shutdown()).await;
    }
}

/// Writes a refusal on the raw socket (this transport's rendering of `http::Refused`; the
/// Pingora one is `http::refuse`) and closes the connection.
async fn refuse(stream: &mut L4Stream, r: &crate::http::Refused) {
    let reason = http::StatusCode::from_u16(r.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\ncache-control: no-store\r\nconnection: close\r\n",
        r.status
    );
    if let Some(s) = r.retry_after {
        head.push_str(&format!("retry-after: {s}\r\n"));
    }
    if r.status != 204 {
        head.push_str(&format!(
            "content-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n",
            r.body.len()
        ));
    }
    head.push_str("\r\n");
    if r.status != 204 {
        head.push_str(&r.body);
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        stream.write_all(head.as_bytes()).await?;
        stream.flush().await?;
        stream.shutdown().await
    })
    .await;
}

/// The socket stays boxed: a stream's future lives as long as the stream, and an inline
/// `L4Stream` (moved into the sink) would be counted twice in it. So do the head and the
/// admission: a future keeps room for its parameters and locals for its whole life, and
/// these are only needed for the handshake.
async fn serve_stream(state: &Arc<State>, mut l4: Box<L4Stream>, req: Box<StreamRequest>) {
    let gzip_asked = req.gzip;
    // The head (credentials included) goes with the admission: it is not kept for the
    // stream's life.
    let admitted = match Box::pin(admission(state, &l4, req)).await {
        Err(r) => return Box::pin(refuse(&mut l4, &r)).await,
        Ok(admitted) => admitted,
    };
    let cfg = state.config();
    let gzip = (cfg.sse.gzip && gzip_asked)
        .then(|| flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    let mut sink = SocketSink {
        stream: l4,
        write_timeout: cfg.sse.write_timeout,
        gzip,
        direct: None,
        rest: None,
    };
    drop(cfg);
    // Boxed on its own: inline, the compiler laid the stream's state out beside the
    // handshake's instead of over it (measured: 4.1 KiB → 0.7 + 1.7 KiB per stream).
    Box::pin(stream::run(state, admitted, &mut sink)).await;
}

/// Admission and authorization of a stream request (cache, coalesced backend checks).
async fn admission(
    state: &Arc<State>,
    l4: &L4Stream,
    req: Box<StreamRequest>,
) -> Result<Box<stream::Admitted>, crate::http::Refused> {
    use pingora::protocols::GetSocketDigest;
    let client = l4
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
    let admitted = stream::admit(state, client, &req)?;
    stream::authorize(state, admitted, &req).await.map(Box::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bodiless_gets_of_the_stream_path_are_taken() {
        let p = "/api/sse/events";
        let take = |s: &str| classify(s.as_bytes(), p);
        assert_eq!(
            take("GET /api/sse/events?topics=a HTTP/1.1\r\nHost: x\r\nLast-Event-ID: e-1\r\nAccept-Encoding: gzip, br\r\n\r\n"),
            Some(StreamRequest {
                query: "topics=a".into(),
                last_event_id: Some("e-1".into()),
                gzip: true,
                host: Some("x".into()),
                ..Default::default()
            })
        );
        assert_eq!(
            take("GET /api/sse/events HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(StreamRequest {
                host: Some("x".into()),
                ..Default::default()
            })
        );
        assert_eq!(
            take("GET /api/sse/eventsX HTTP/1.1\r\nHost: x\r\n\r\n"),
            None
        );
        assert_eq!(
            take("POST /api/sse/events HTTP/1.1\r\nHost: x\r\n\r\n"),
            None
        );
        assert_eq!(take("GET /api/sse/events HTTP/1.0\r\n\r\n"), None);
        assert_eq!(
            take("GET /api/sse/events HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"),
            None
        );
        assert_eq!(take("GET /api/cards HTTP/1.1\r\nHost: x\r\n\r\n"), None);
        assert_eq!(take("garbage\r\n\r\n"), None);
    }

    #[test]
    fn heads_are_complete_when_httparse_says_so_bare_lf_included() {
        let st = |s: &str| head_state(s.as_bytes(), 64);
        assert_eq!(
            st("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            HeadState::Complete(27)
        );
        assert_eq!(st("GET / HTTP/1.1\nHost: x\n\n"), HeadState::Complete(24));
        assert_eq!(st("GET / HTTP/1.1\r\nHost: x\r\n"), HeadState::Partial);
        assert_eq!(st("GET / HTTP/1.1\nHost: x\n"), HeadState::Partial);
        assert_eq!(st(""), HeadState::Partial);
        // A body after the head does not count against the cap.
        let with_body = format!(
            "POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n{}",
            "b".repeat(100)
        );
        assert_eq!(st(&with_body), HeadState::Complete(40));
        // Not HTTP: handed on (to be refused by Pingora) once its blank line arrived.
        assert_eq!(st("garbage\r\n\r\n"), HeadState::Complete(11));
        assert_eq!(st("garbage\n\nmore"), HeadState::Complete(9));
        assert_eq!(st("garbage\r\n"), HeadState::Partial);
    }

    #[test]
    fn heads_over_the_cap_are_too_large_complete_or_not() {
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100));
        assert_eq!(head_state(long.as_bytes(), 64), HeadState::TooLarge);
        assert_eq!(head_state(&long.as_bytes()[..70], 64), HeadState::TooLarge);
        assert_eq!(head_state(&long.as_bytes()[..64], 64), HeadState::Partial);
        assert_eq!(
            head_state(b"garbage garbage garbage", 8),
            HeadState::TooLarge
        );
        assert!(matches!(
            head_state(long.as_bytes(), 1024),
            HeadState::Complete(_)
        ));
        // More header lines than httparse has room for: complete at the blank line, not
        // before (never handed on half-read).
        let many: String = (0..300).map(|i| format!("h{i}: v\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{many}");
        assert_eq!(head_state(head.as_bytes(), 1 << 20), HeadState::Partial);
        let head = format!("{head}\r\n");
        assert_eq!(
            head_state(head.as_bytes(), 1 << 20),
            HeadState::Complete(head.len())
        );
    }
}
