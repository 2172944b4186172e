//! sse-loadgen: the project's own load generator.
//!
//! Opens N SSE streams on one topic (spread over several processes, since every process here
//! may hold at most 20,000 files), drives events at a set rate — through the real path (a
//! mutation through the sidecar to the example backend, derived by a rule) or the engine path
//! (`POST /admin/publish`) — and checks every delivery on every stream for loss, duplicates
//! and order. Latency is publish sent → frame parsed by the client (same machine clock).
//! Reads the sidecar's RSS and CPU time from /proc for memory per stream and CPU per
//! delivery. Prints one JSON line and a readable summary.
//!
//! The client is deliberately lean (raw TCP, a byte-level SSE scanner, no JSON parsing on the
//! hot path) so that it is not the bottleneck it measures.
//!
//! ```text
//! cargo run --release --example loadgen -- --streams 10000 --procs 2 --rate 10 --seconds 30 \
//!     --sidecar-pid $(pgrep -f 'sse-sidecar --config conf/bench.yaml')
//! ```

use clap::Parser;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug, Clone)]
#[command(name = "loadgen", about = "SSE load generator for sse-sidecar")]
struct Args {
    /// The sidecar's listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    target: SocketAddr,
    /// The sidecar's admin listener (engine path, status).
    #[arg(long, default_value = "127.0.0.1:9090")]
    admin: SocketAddr,
    /// Streams in all.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Client processes to spread the streams over (each holds streams/procs).
    #[arg(long, default_value_t = 1)]
    procs: usize,
    /// Topic every stream subscribes to.
    #[arg(long, default_value = "bench")]
    topic: String,
    /// `publish` (engine path: POST /admin/publish) or `mutate` (real path: PUT
    /// /api/sessions/{id}/activity through the sidecar, derived by the bench config's rule).
    #[arg(long, default_value = "publish")]
    mode: String,
    /// Events per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Seconds of publishing (0: hold the streams idle for --idle-seconds).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Idle mode: seconds to hold the streams without publishing.
    #[arg(long, default_value_t = 0.0)]
    idle_seconds: f64,
    /// Publisher connections (events are spread over them round robin).
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Concurrent connects while opening streams.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// The sidecar's pid, for RSS and CPU from /proc (several, comma-separated, are summed:
    /// nginx's workers).
    #[arg(long, value_delimiter = ',')]
    sidecar_pid: Vec<u32>,
    /// After half the events, every stream closes and reconnects with its Last-Event-ID at
    /// once (the reconnect storm).
    #[arg(long)]
    storm: bool,
    /// After the streams are open, rewrite this config file with `sse.enabled: false` and
    /// time until every stream has been closed by the sidecar (then restore the file).
    #[arg(long)]
    kill_switch_config: Option<std::path::PathBuf>,
    /// Seconds to wait for stragglers after publishing ends.
    #[arg(long, default_value_t = 5.0)]
    drain_seconds: f64,
    /// Ask for gzip streams (Accept-Encoding: gzip). Frames are then not decoded: only bytes
    /// received are counted (for the compression measurement) and memory is sampled.
    #[arg(long)]
    gzip: bool,
    /// Internal: run as a child holding `streams` streams.
    #[arg(long, hide = true)]
    child: bool,
    /// Write the JSON result line here as well.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
    /// Presence: stream i sends `Cookie: user=u<proc>x<i % users>` (0: no cookie), and the
    /// presence frames and the hello's listed members are counted per stream.
    #[arg(long, default_value_t = 0)]
    users: usize,
    /// Topics: with K > 1, stream i subscribes to `<topic>-<i % K>` and event n goes to
    /// `<topic>-<n % K>`, so each stream expects every K-th event.
    #[arg(long, default_value_t = 1)]
    topics: usize,
    /// The target is nginx with the nchan module (the peer measured in the same run):
    /// streams are `GET /sub/<topic>` (EventSource), events are `POST /pub/<topic>` on the
    /// target, and the answer's head marks a stream open (nchan sends no hello).
    #[arg(long)]
    nchan: bool,
}

impl Args {
    /// The topic of stream (or event) number `i`.
    fn topic_of(&self, i: u64) -> String {
        if self.topics > 1 {
            format!("{}-{}", self.topic, i % self.topics as u64)
        } else {
            self.topic.clone()
        }
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Log-scale latency histogram in microseconds (buckets ~4% wide), mergeable across
/// processes. Hand-rolled because it must serialize through the children's stdout as plain
/// JSON; 512 counters.
#[derive(Clone, Serialize, Deserialize)]
struct Hist {
    counts: Vec<u64>,
    max_us: u64,
    total: u64,
}

impl Hist {
    const BUCKETS: usize = 512;
    fn new() -> Hist {
        Hist {
            counts: vec![0; Self::BUCKETS],
            max_us: 0,
            total: 0,
        }
    }
    fn bucket(us: u64) -> usize {
        let v = (us.max(1) as f64).ln() / 1.04f64.ln();
        (v as usize).min(Self::BUCKETS - 1)
    }
    fn upper(b: usize) -> u64 {
        1.04f64.powi(b as i32 + 1) as u64
    }
    fn merge(&mut self, o: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.max_us = self.max_us.max(o.max_us);
        self.total += o.total;
    }
    fn quantile_ms(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let want = (self.total as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (b, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Self::upper(b).min(self.max_us) as f64 / 1000.0;
            }
        }
        self.max_us as f64 / 1000.0
    }
}

/// Per-stream delivery bookkeeping. Events carry the publisher's number `n` (a set, since
/// several publishers race) and the log's id (whose sequence must strictly increase).
#[derive(Default, Clone)]
struct StreamStats {
    seen: Vec<u64>,
    received: u64,
    dups: u64,
    out_of_order: u64,
    resets: u64,
    last_seq: u64,
    closed_by_server: bool,
    /// `presence` frames received, and members the hello listed (`"connections":` count).
    presence: u64,
    hello_listed: u64,
    /// Which events are this stream's: those with `n % topics == class`.
    class: u64,
}

impl StreamStats {
    fn of_class(class: u64) -> StreamStats {
        StreamStats {
            class,
            ..Default::default()
        }
    }

    fn record(&mut self, n: u64, seq: u64) {
        let (w, b) = ((n / 64) as usize, n % 64);
        if self.seen.len() <= w {
            self.seen.resize(w + 1, 0);
        }
        if self.seen[w] & (1 << b) != 0 {
            self.dups += 1;
            return;
        }
        self.seen[w] |= 1 << b;
        self.received += 1;
        if seq <= self.last_seq {
            self.out_of_order += 1;
        }
        self.last_seq = seq;
    }

    /// Distinct events of this stream's class among the first `total` (and how many there
    /// were to receive).
    fn unique_below(&self, total: u64, topics: u64) -> (u64, u64) {
        let mine = (self.class..total).step_by(topics.max(1) as usize);
        let want = mine.clone().count() as u64;
        let got = mine
            .filter(|n| {
                self.seen
                    .get((n / 64) as usize)
                    .is_some_and(|w| w & (1 << (n % 64)) != 0)
            })
            .count() as u64;
        (got, want)
    }
}

#[derive(Serialize, Deserialize, Default)]
struct ChildReport {
    streams: usize,
    established: usize,
    establish_ms: f64,
    received: u64,
    complete_streams: usize,
    lost: u64,
    dups: u64,
    out_of_order: u64,
    resets: u64,
    closed_by_server: usize,
    storm_ms: f64,
    bytes: u64,
    hist: Option<Hist>,
    #[serde(default)]
    presence_frames: u64,
    #[serde(default)]
    presence_max_per_stream: u64,
    #[serde(default)]
    hello_listed_max: u64,
}

/// Parses the unsigned number right after `key` in `hay`.
fn num_after(hay: &[u8], key: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(hay, key)? + key.len();
    let mut v: u64 = 0;
    let mut any = false;
    for &b in &hay[at..] {
        if b.is_ascii_digit() {
            v = v * 10 + (b - b'0') as u64;
            any = true;
        } else {
            break;
        }
    }
    any.then_some(v)
}

/// Latency histogram shared by a process's streams: atomic counters, no lock per frame.
struct AtomicHist {
    counts: Vec<AtomicU64>,
    max_us: AtomicU64,
}

impl AtomicHist {
    fn new() -> AtomicHist {
        AtomicHist {
            counts: (0..Hist::BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max_us: AtomicU64::new(0),
        }
    }
    fn record(&self, us: u64) {
        self.counts[Hist::bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }
    fn snapshot(&self) -> Hist {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        Hist {
            total: counts.iter().sum(),
            counts,
            max_us: self.max_us.load(Ordering::Relaxed),
        }
    }
}

struct Shared {
    hist: AtomicHist,
    bytes: AtomicU64,
    finals: Mutex<Vec<StreamStats>>,
    established: AtomicUsize,
    closed: AtomicUsize,
    last_close_us: AtomicU64,
    /// Turns true for the reconnect storm.
    storm: tokio::sync::watch::Receiver<bool>,
    storm_done: AtomicUsize,
    stop: tokio::sync::watch::Receiver<bool>,
}

/// One stream: connect, read frames, reconnect with the last id when asked (storm). Returns
/// its bookkeeping when told to stop or when the server closes it.
async fn run_stream(
    args: Arc<Args>,
    shared: Arc<Shared>,
    (permit, index): (Arc<tokio::sync::Semaphore>, usize),
) -> StreamStats {
    let mut st = StreamStats::of_class((index % args.topics.max(1)) as u64);
    // The last event id seen (reused: no allocation per frame).
    let mut last_id: Vec<u8> = Vec::new();
    let mut stormed = false;
    let mut stop = shared.stop.clone();
    let mut storm = shared.storm.clone();
    let frame_end = memchr::memmem::Finder::new(b"\n\n");
    'connect: loop {
        // Connects are limited while opening; the storm reconnects all at once.
        let mut gate = if stormed {
            None
        } else {
            permit.clone().acquire_owned().await.ok()
        };
        let Ok(mut conn) = TcpStream::connect(args.target).await else {
            drop(gate);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let _ = conn.set_nodelay(true);
        let req = stream_request(&args, &last_id, index);
        if conn.write_all(req.as_bytes()).await.is_err() {
            continue;
        }
        let mut buf: Vec<u8> = Vec::with_capacity(2048);
        let mut chunk = [0u8; 8192];
        let mut header_done = false;
        let mut hello = false;
        // The signals are awaited by futures that live across reads: a new one per read would
        // register a waker (and a timer) for every frame, which the load client cannot afford.
        let stop_signal = stop.changed();
        tokio::pin!(stop_signal);
        let storm_signal = storm.wait_for(|s| *s);
        tokio::pin!(storm_signal);
        loop {
            let read = tokio::select! {
                r = conn.read(&mut chunk) => r,
                _ = &mut stop_signal => return st,
                _ = &mut storm_signal, if !stormed && hello => {
                    stormed = true;
                    continue 'connect; // close and come back with the last id
                }
            };
            let n = match read {
                Ok(0) | Err(_) => {
                    st.closed_by_server = true;
                    shared.closed.fetch_add(1, Ordering::Relaxed);
                    shared.last_close_us.fetch_max(now_us(), Ordering::Relaxed);
                    // Hold the result until the parent asks for the report.
                    let _ = (&mut stop_signal).await;
                    return st;
                }
                Ok(n) => n,
            };
            shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
            let mut on = Reader {
                st: &mut st,
                shared: &shared,
                last_id: &mut last_id,
                hello: &mut hello,
                stormed,
                gate: &mut gate,
                nchan: args.nchan,
            };
            if on.head_chunk(&chunk[..n], &args) {
                continue;
            }
            buf.extend_from_slice(&chunk[..n]);
            if !header_done {
                match strip_head(&mut buf) {
                    Head::Incomplete => continue,
                    Head::Refused => {
                        let _ = (&mut stop_signal).await;
                        return st;
                    }
                    Head::Ok => header_done = true,
                }
            }
            let start = on.frames(&frame_end, &buf);
            buf.drain(..start);
        }
    }
}

/// The stream's request: its topic, the last id seen (if any), gzip if asked.
fn stream_request(args: &Args, last_id: &[u8], index: usize) -> String {
    let topic = args.topic_of(index as u64);
    let path = if args.nchan {
        format!("/sub/{topic}")
    } else {
        format!("/api/sse/events?topics={topic}")
    };
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n",
        args.target
    );
    if !last_id.is_empty() {
        let id = String::from_utf8_lossy(last_id);
        req.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    if args.gzip {
        req.push_str("Accept-Encoding: gzip\r\n");
    }
    if args.users > 0 {
        let user = format!("u{}x{}", std::process::id(), index % args.users);
        req.push_str(&format!("Cookie: user={user}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// What the start of a stream's answer showed.
enum Head {
    /// The head has not fully arrived.
    Incomplete,
    /// Not a 200 (reported on stderr).
    Refused,
    /// A 200: the head is removed from the buffer.
    Ok,
}

/// Checks the answer's head once it has arrived, and removes it.
fn strip_head(buf: &mut Vec<u8>) -> Head {
    let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        return Head::Incomplete;
    };
    if !buf.starts_with(b"HTTP/1.1 200") {
        eprintln!(
            "stream refused: {}",
            String::from_utf8_lossy(&buf[..end.min(80)])
        );
        return Head::Refused;
    }
    buf.drain(..end + 4);
    Head::Ok
}

/// A stream's state as its frames are read.
struct Reader<'a> {
    st: &'a mut StreamStats,
    shared: &'a Shared,
    last_id: &'a mut Vec<u8>,
    hello: &'a mut bool,
    stormed: bool,
    gate: &'a mut Option<tokio::sync::OwnedSemaphorePermit>,
    nchan: bool,
}

impl Reader<'_> {
    /// Compressed or nchan (no hello): the answer's head marks the stream open. True when
    /// the chunk is not to be parsed (compressed: only its bytes count, done by the caller).
    fn head_chunk(&mut self, chunk: &[u8], args: &Args) -> bool {
        if args.gzip || args.nchan {
            self.gzip_chunk(chunk);
        }
        args.gzip
    }

    /// The head's arrival marks the stream open.
    fn gzip_chunk(&mut self, chunk: &[u8]) {
        if !*self.hello && memchr::memmem::find(chunk, b"\r\n\r\n").is_some() {
            *self.hello = true;
            self.gate.take();
            self.shared.established.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every complete frame in `buf`; returns how many bytes they took.
    fn frames(&mut self, frame_end: &memchr::memmem::Finder<'_>, buf: &[u8]) -> usize {
        // Frames end with a blank line; chunk-size lines of the chunked encoding sit
        // between frames and never contain one.
        let mut start = 0;
        while let Some(pos) = frame_end.find(&buf[start..]) {
            let frame = &buf[start..start + pos];
            start += pos + 2;
            self.frame(frame);
        }
        start
    }

    /// One frame: `hello` marks the stream open (or back after the storm), `reset` is
    /// counted, other events are recorded.
    fn frame(&mut self, frame: &[u8]) {
        let Some(ev_at) = memchr::memmem::find(frame, b"event: ") else {
            // nchan's messages carry no event name.
            if self.nchan {
                self.event(frame);
            }
            return;
        };
        let name = &frame[ev_at + 7..];
        let name = &name[..memchr::memchr(b'\n', name).unwrap_or(name.len())];
        match name {
            b"hello" => {
                let listed = memchr::memmem::find_iter(frame, b"\"connections\":").count();
                self.st.hello_listed = self.st.hello_listed.max(listed as u64);
                if !*self.hello {
                    *self.hello = true;
                    if self.stormed {
                        self.shared.storm_done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.gate.take();
                        self.shared.established.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            b"reset" => self.st.resets += 1,
            b"presence" => self.st.presence += 1,
            b"heartbeat" | b"control" => {}
            _ => self.event(frame),
        }
    }

    /// An event: its latency, its id (kept for a reconnect) and its number.
    fn event(&mut self, frame: &[u8]) {
        // Published events carry {"n":..,"s":..}; mutations carry the same
        // numbers inside a string ("n=..;s=..").
        let n_val = num_after(frame, b"\"n\":").or_else(|| num_after(frame, b"n="));
        let sent = num_after(frame, b"\"s\":").or_else(|| num_after(frame, b";s="));
        let (Some(n_val), Some(sent)) = (n_val, sent) else {
            return;
        };
        self.shared.hist.record(now_us().saturating_sub(sent));
        let id = memchr::memmem::find(frame, b"id: ").map(|at| {
            let rest = &frame[at + 4..];
            &rest[..memchr::memchr(b'\n', rest).unwrap_or(rest.len())]
        });
        let seq = id
            .map(|id| {
                if self.nchan {
                    nchan_seq(id)
                } else {
                    sidecar_seq(id)
                }
            })
            .unwrap_or(0);
        if let Some(id) = id {
            self.last_id.clear();
            self.last_id.extend_from_slice(id);
        }
        self.st.record(n_val, seq);
    }
}

/// The sequence number at the end of a sidecar event id (`<epoch>-<seq>`).
fn sidecar_seq(id: &[u8]) -> u64 {
    id.iter()
        .rposition(|&b| b == b'-')
        .and_then(|d| std::str::from_utf8(&id[d + 1..]).ok()?.parse().ok())
        .unwrap_or(0)
}

/// nchan's message id `<time>:<index within that second>` (one channel), as one number.
fn nchan_seq(id: &[u8]) -> u64 {
    let text = std::str::from_utf8(id).unwrap_or("");
    let (t, i) = text.split_once(':').unwrap_or((text, "0"));
    let num = |v: &str| {
        v.trim_matches(|c: char| !c.is_ascii_digit())
            .parse::<u64>()
            .unwrap_or(0)
    };
    num(t) * 1_000_000 + num(i)
}

/// Child: holds `args.streams` streams, reports when established, then waits for commands
/// on stdin: `storm`, `closed?`, `report <published>`.
async fn child(args: Args) {
    let args = Arc::new(args);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (storm_tx, storm_rx) = tokio::sync::watch::channel(false);
    let shared = Arc::new(Shared {
        hist: AtomicHist::new(),
        bytes: AtomicU64::new(0),
        finals: Mutex::new(Vec::new()),
        established: AtomicUsize::new(0),
        closed: AtomicUsize::new(0),
        last_close_us: AtomicU64::new(0),
        storm: storm_rx,
        storm_done: AtomicUsize::new(0),
        stop: stop_rx,
    });
    let permits = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.streams {
        let (a, s, p) = (args.clone(), shared.clone(), permits.clone());
        tasks.spawn(async move {
            let st = run_stream(a, s.clone(), (p, i)).await;
            s.finals.lock().unwrap_or_else(|e| e.into_inner()).push(st);
        });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while shared.established.load(Ordering::Relaxed) < args.streams && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let establish_ms = started.elapsed().as_secs_f64() * 1000.0;
    println!(
        "ready {} {:.1}",
        shared.established.load(Ordering::Relaxed),
        establish_ms
    );
    let _ = std::io::stdout().flush();
    let mut rx = stdin_lines();
    let mut storm_ms = 0.0;
    while let Some(cmd) = rx.recv().await {
        match cmd.trim() {
            "storm" => storm_ms = child_storm(&shared, &storm_tx, args.streams).await,
            "closed?" => {
                println!(
                    "closed {} {}",
                    shared.closed.load(Ordering::Relaxed),
                    shared.last_close_us.load(Ordering::Relaxed)
                );
                let _ = std::io::stdout().flush();
            }
            c if c.starts_with("report") => {
                let expected: u64 = c
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let _ = stop_tx.send(true);
                while tasks.join_next().await.is_some() {}
                let r = child_report(&args, &shared, expected, establish_ms, storm_ms);
                println!("report {}", serde_json::to_string(&r).unwrap_or_default());
                let _ = std::io::stdout().flush();
                return;
            }
            _ => {}
        }
    }
}

/// The child's stdin, line by line (read on a thread of its own).
fn stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(8);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// `storm`: every stream reconnects with its last id at once; reports (and returns) how
/// long until all said hello again (60 s at most).
async fn child_storm(
    shared: &Shared,
    storm_tx: &tokio::sync::watch::Sender<bool>,
    streams: usize,
) -> f64 {
    let t = Instant::now();
    storm_tx.send_replace(true);
    let deadline = Instant::now() + Duration::from_secs(60);
    while shared.storm_done.load(Ordering::Relaxed) < streams && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let storm_ms = t.elapsed().as_secs_f64() * 1000.0;
    println!(
        "stormed {} {:.1}",
        shared.storm_done.load(Ordering::Relaxed),
        storm_ms
    );
    let _ = std::io::stdout().flush();
    storm_ms
}

/// `report`: the streams' bookkeeping against the `expected` events published.
fn child_report(
    args: &Args,
    shared: &Shared,
    expected: u64,
    establish_ms: f64,
    storm_ms: f64,
) -> ChildReport {
    let finals = std::mem::take(&mut *shared.finals.lock().unwrap_or_else(|e| e.into_inner()));
    let mut r = ChildReport {
        streams: args.streams,
        established: shared.established.load(Ordering::Relaxed),
        establish_ms,
        storm_ms,
        bytes: shared.bytes.load(Ordering::Relaxed),
        hist: Some(shared.hist.snapshot()),
        ..Default::default()
    };
    for s in &finals {
        let (unique, want) = s.unique_below(expected, args.topics as u64);
        r.received += s.received;
        r.lost += want - unique;
        r.dups += s.dups;
        r.out_of_order += s.out_of_order;
        r.resets += s.resets;
        r.closed_by_server += s.closed_by_server as usize;
        r.presence_frames += s.presence;
        r.presence_max_per_stream = r.presence_max_per_stream.max(s.presence);
        r.hello_listed_max = r.hello_listed_max.max(s.hello_listed);
        if unique == want && s.dups == 0 && s.out_of_order == 0 {
            r.complete_streams += 1;
        }
    }
    r
}

/// Minimal keep-alive HTTP/1.1 client for the publishers.
struct Http {
    addr: SocketAddr,
    conn: Option<TcpStream>,
    buf: Vec<u8>,
    /// The last answer's `Retry-After` (seconds, fractions allowed).
    retry_after: Option<Duration>,
}

impl Http {
    fn new(addr: SocketAddr) -> Http {
        Http {
            addr,
            conn: None,
            buf: Vec::with_capacity(4096),
            retry_after: None,
        }
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
        extra: &str,
    ) -> std::io::Result<u16> {
        if self.conn.is_none() {
            let c = TcpStream::connect(self.addr).await?;
            c.set_nodelay(true)?;
            self.conn = Some(c);
        }
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no connection"))?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            self.addr,
            body.len()
        );
        conn.write_all(req.as_bytes()).await?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                self.conn = None;
                return Err(std::io::Error::other("closed"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                self.retry_after = head.lines().find_map(|l| {
                    let v = l.strip_prefix("retry-after:")?.trim().parse::<f64>().ok()?;
                    Some(Duration::from_secs_f64(v.clamp(0.001, 10.0)))
                });
                while self.buf.len() < end + 4 + len {
                    let n = conn.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                return Ok(status);
            }
        }
    }
}

/// CPU seconds and RSS bytes summed over `pids` (None when there are none or one is gone).
fn procs_sample(pids: &[u32]) -> Option<(f64, u64)> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .map(|&p| proc_sample(p))
        .try_fold((0.0, 0), |(c, r), s| s.map(|(c2, r2)| (c + c2, r + r2)))
}

fn proc_sample(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((ticks / 100.0, rss_kb * 1024))
}

#[derive(Serialize)]
struct Result_ {
    mode: String,
    streams: usize,
    procs: usize,
    rate: f64,
    seconds: f64,
    established: usize,
    establish_seconds: f64,
    published: u64,
    publish_errors: u64,
    publish_refused: u64,
    publish_rate_achieved: f64,
    expected_deliveries: u64,
    deliveries: u64,
    deliveries_per_second: f64,
    complete_streams: usize,
    lost: u64,
    duplicates: u64,
    out_of_order: u64,
    resets: u64,
    closed_by_server: usize,
    latency_ms: serde_json::Value,
    rss_before_streams_bytes: Option<u64>,
    rss_with_streams_bytes: Option<u64>,
    rss_per_stream_bytes: Option<f64>,
    cpu_seconds: Option<f64>,
    cpu_us_per_delivery: Option<f64>,
    /// CPU seconds per stream per hour over the measured window (the idle cost).
    cpu_seconds_per_stream_hour: Option<f64>,
    topics: usize,
    nchan: bool,
    storm_reconnect_seconds: Option<f64>,
    kill_switch_close_seconds: Option<f64>,
    gzip: bool,
    bytes_received: u64,
    presence_frames: u64,
    presence_max_per_stream: u64,
    hello_listed_max: u64,
}

/// A child process with its command pipe and its answers.
type Child = (
    std::process::Child,
    Option<std::process::ChildStdin>,
    Option<std::io::BufReader<std::process::ChildStdout>>,
);

/// What the parent measured, for the result line.
struct Run {
    established: usize,
    establish_seconds: f64,
    published: u64,
    errors: u64,
    /// Publishes pushed back (429/503 with Retry-After) and sent again.
    refused: u64,
    /// Seconds between the two CPU samples.
    cpu_window: f64,
    pub_elapsed: f64,
    expected: u64,
    storm_reconnect_seconds: Option<f64>,
    kill_switch_close_seconds: Option<f64>,
    before: Option<(f64, u64)>,
    with_streams: Option<(f64, u64)>,
    cpu_start: Option<(f64, u64)>,
    cpu_end: Option<(f64, u64)>,
}

async fn parent(args: Args) -> std::io::Result<()> {
    let before = procs_sample(&args.sidecar_pid);
    let mut children = spawn_children(&args)?;
    let t0 = Instant::now();
    let established = read_established(&mut children)?;
    let establish_seconds = t0.elapsed().as_secs_f64();
    eprintln!(
        "{established}/{} streams established in {establish_seconds:.2} s",
        args.streams
    );
    // Let the sidecar settle, then sample memory with the streams held.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_streams = procs_sample(&args.sidecar_pid);

    let mut kill_switch_close_seconds = None;
    if let Some(path) = &args.kill_switch_config {
        kill_switch_close_seconds =
            Some(kill_switch_drill(path, &mut children, established).await?);
    }

    // Publish.
    let published = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let total = if args.idle_seconds > 0.0 || args.kill_switch_config.is_some() {
        0
    } else {
        (args.rate * args.seconds).round() as u64
    };
    let cpu_start = procs_sample(&args.sidecar_pid);
    let cpu_from = Instant::now();
    let pub_start = Instant::now();
    if args.idle_seconds > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(args.idle_seconds)).await;
    }
    let mut storm_reconnect_seconds = None;
    if total > 0 {
        let tasks = spawn_publishers(&args, total, pub_start, &published, &errors, &refused);
        if args.storm {
            while published.load(Ordering::Relaxed) < total / 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            storm_reconnect_seconds = Some(storm(&mut children)?);
        }
        for t in tasks {
            let _ = t.await;
        }
    }
    let pub_elapsed = pub_start.elapsed().as_secs_f64();
    let published_n = published.load(Ordering::Relaxed);
    // Each stream expects its topic's events: every `topics`-th one.
    let expected = published_n * established as u64 / args.topics.max(1) as u64;
    // Wait for deliveries to finish, then collect reports.
    tokio::time::sleep(Duration::from_secs_f64(args.drain_seconds.min(10.0))).await;
    let cpu_end = procs_sample(&args.sidecar_pid);
    let cpu_window = cpu_from.elapsed().as_secs_f64();
    let (agg, hist) = collect_reports(&mut children, published_n)?;
    let run = Run {
        established,
        establish_seconds,
        published: published_n,
        errors: errors.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        cpu_window,
        pub_elapsed,
        expected,
        storm_reconnect_seconds,
        kill_switch_close_seconds,
        before,
        with_streams,
        cpu_start,
        cpu_end,
    };
    let res = result(&args, &run, &agg, &hist);
    let line = serde_json::to_string(&res).unwrap_or_default();
    println!("{line}");
    if let Some(p) = &args.json_out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)?;
        writeln!(f, "{line}")?;
    }
    print_summary(&args, &res, &hist);
    Ok(())
}

/// The child processes, `args.streams` spread over `args.procs`.
fn spawn_children(args: &Args) -> std::io::Result<Vec<Child>> {
    let exe = std::env::current_exe()?;
    let per = args.streams.div_ceil(args.procs.max(1));
    let mut children = Vec::new();
    let mut remaining = args.streams;
    for _ in 0..args.procs.max(1) {
        let n = per.min(remaining);
        remaining -= n;
        if n == 0 {
            break;
        }
        let mut c = Command::new(&exe)
            .args([
                "--child",
                "--target",
                &args.target.to_string(),
                "--topic",
                &args.topic,
                "--streams",
                &n.to_string(),
                "--connect-concurrency",
                &args.connect_concurrency.to_string(),
                "--users",
                &args.users.to_string(),
                "--topics",
                &args.topics.to_string(),
            ])
            .args(args.gzip.then_some("--gzip"))
            .args(args.nchan.then_some("--nchan"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = c.stdin.take();
        let stdout = c.stdout.take().map(std::io::BufReader::new);
        children.push((c, stdin, stdout));
    }
    Ok(children)
}

/// The streams established, from every child's `ready` line.
fn read_established(children: &mut [Child]) -> std::io::Result<usize> {
    let mut established = 0;
    for (_, _, out) in children.iter_mut() {
        let mut line = String::new();
        if let Some(o) = out.as_mut() {
            o.read_line(&mut line)?;
        }
        established += line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
    }
    Ok(established)
}

/// Rewrites the config with `enabled: false`, asks the children until every stream was
/// closed (10 s at most), restores the file; seconds from the write to the last close.
async fn kill_switch_drill(
    path: &std::path::Path,
    children: &mut [Child],
    established: usize,
) -> std::io::Result<f64> {
    let original = std::fs::read_to_string(path)?;
    let off = original.replace("enabled: true", "enabled: false");
    let written = now_us();
    std::fs::write(path, off)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = 0u64;
    loop {
        let mut closed = 0;
        for (_, stdin, out) in children.iter_mut() {
            if let (Some(i), Some(o)) = (stdin.as_mut(), out.as_mut()) {
                writeln!(i, "closed?")?;
                i.flush()?;
                let mut line = String::new();
                o.read_line(&mut line)?;
                let mut p = line.split_whitespace().skip(1);
                closed += p.next().and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
                last = last.max(p.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0));
            }
        }
        if closed >= established || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = last.saturating_sub(written) as f64 / 1e6;
    std::fs::write(path, original)?;
    Ok(seconds)
}

/// The publishers: `total` events spread over them, each due at its slot of the rate.
fn spawn_publishers(
    args: &Args,
    total: u64,
    pub_start: Instant,
    published: &Arc<AtomicU64>,
    errors: &Arc<AtomicU64>,
    refused: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    for _ in 0..args.publishers.max(1) {
        let (next, published, errors, refused, args) = (
            next.clone(),
            published.clone(),
            errors.clone(),
            refused.clone(),
            args.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut http = Http::new(if args.mode == "mutate" || args.nchan {
                args.target
            } else {
                args.admin
            });
            let mut session = String::new();
            if args.mode == "mutate" {
                session = open_session(&mut http).await;
            }
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return;
                }
                let due = pub_start + interval.mul_f64(n as f64);
                tokio::time::sleep_until(due.into()).await;
                // Pushed back (429/503 with Retry-After): the same event again after the
                // pause, so every number is published once; the rate achieved shows the cost.
                loop {
                    match publish_one(&mut http, &args, &session, n).await {
                        Ok(200..=299) => published.fetch_add(1, Ordering::Relaxed),
                        Ok(429 | 503) if http.retry_after.is_some() => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            let pause = http.retry_after.unwrap_or(Duration::from_millis(100));
                            tokio::time::sleep(pause).await;
                            continue;
                        }
                        _ => errors.fetch_add(1, Ordering::Relaxed),
                    };
                    break;
                }
            }
        }));
    }
    tasks
}

/// Mutate mode: a session for the publisher's activity updates (its id, `s1` if none).
async fn open_session(http: &mut Http) -> String {
    let _ = http
        .request("POST", "/api/sessions", "{\"user\":\"loadgen\"}", "")
        .await;
    let body = String::from_utf8_lossy(&http.buf).into_owned();
    body.split("\"id\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("s1")
        .to_owned()
}

/// Event `n`, sent now: an activity update (mutate) or an admin publish.
async fn publish_one(http: &mut Http, args: &Args, session: &str, n: u64) -> std::io::Result<u16> {
    let s = now_us();
    if args.mode == "mutate" {
        let body = format!("{{\"page\":\"/bench/n={n};s={s}\"}}");
        http.request(
            "PUT",
            &format!("/api/sessions/{session}/activity"),
            &body,
            "",
        )
        .await
    } else if args.nchan {
        let body = format!("{{\"n\":{n},\"s\":{s}}}");
        let path = format!("/pub/{}", args.topic_of(n));
        http.request("POST", &path, &body, "").await
    } else {
        let body = format!(
            "{{\"type\":\"bench.tick\",\"topics\":[\"{}\"],\"data\":{{\"n\":{n},\"s\":{s}}}}}",
            args.topic_of(n)
        );
        http.request("POST", "/admin/publish", &body, "").await
    }
}

/// The reconnect storm: every child's streams reconnect at once; seconds until all are back.
fn storm(children: &mut [Child]) -> std::io::Result<f64> {
    let t = Instant::now();
    for (_, stdin, _) in children.iter_mut() {
        if let Some(i) = stdin.as_mut() {
            writeln!(i, "storm")?;
            i.flush()?;
        }
    }
    for (_, _, out) in children.iter_mut() {
        if let Some(o) = out.as_mut() {
            let mut line = String::new();
            o.read_line(&mut line)?;
        }
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Every child's report, summed, and their latencies merged; the children are waited for.
fn collect_reports(
    children: &mut [Child],
    published_n: u64,
) -> std::io::Result<(ChildReport, Hist)> {
    let mut hist = Hist::new();
    let mut agg = ChildReport::default();
    for (c, stdin, out) in children.iter_mut() {
        if let Some(i) = stdin.as_mut() {
            writeln!(i, "report {published_n}")?;
            i.flush()?;
        }
        let mut line = String::new();
        if let Some(o) = out.as_mut() {
            o.read_line(&mut line)?;
        }
        if let Some(json) = line.strip_prefix("report ") {
            if let Ok(r) = serde_json::from_str::<ChildReport>(json) {
                agg.received += r.received;
                agg.complete_streams += r.complete_streams;
                agg.lost += r.lost;
                agg.dups += r.dups;
                agg.out_of_order += r.out_of_order;
                agg.resets += r.resets;
                agg.closed_by_server += r.closed_by_server;
                agg.bytes += r.bytes;
                agg.presence_frames += r.presence_frames;
                agg.presence_max_per_stream =
                    agg.presence_max_per_stream.max(r.presence_max_per_stream);
                agg.hello_listed_max = agg.hello_listed_max.max(r.hello_listed_max);
                if let Some(h) = &r.hist {
                    hist.merge(h);
                }
            }
        }
        let _ = c.wait();
    }
    Ok((agg, hist))
}

/// The result line's fields.
fn result(args: &Args, run: &Run, agg: &ChildReport, hist: &Hist) -> Result_ {
    let established = run.established;
    let (rss_per_stream, rss_before, rss_with) = match (run.before, run.with_streams) {
        (Some((_, b)), Some((_, w))) if established > 0 => (
            Some((w as f64 - b as f64) / established as f64),
            Some(b),
            Some(w),
        ),
        _ => (None, run.before.map(|b| b.1), run.with_streams.map(|w| w.1)),
    };
    let cpu = match (run.cpu_start, run.cpu_end) {
        (Some((a, _)), Some((b, _))) => Some(b - a),
        _ => None,
    };
    let (published_n, pub_elapsed) = (run.published, run.pub_elapsed);
    Result_ {
        mode: args.mode.clone(),
        streams: args.streams,
        procs: args.procs,
        rate: args.rate,
        seconds: args.seconds,
        established,
        establish_seconds: run.establish_seconds,
        published: published_n,
        publish_errors: run.errors,
        publish_refused: run.refused,
        publish_rate_achieved: published_n as f64 / pub_elapsed.max(1e-9),
        expected_deliveries: run.expected,
        deliveries: agg.received,
        deliveries_per_second: agg.received as f64 / pub_elapsed.max(1e-9),
        complete_streams: agg.complete_streams,
        lost: agg.lost,
        duplicates: agg.dups,
        out_of_order: agg.out_of_order,
        resets: agg.resets,
        closed_by_server: agg.closed_by_server,
        latency_ms: serde_json::json!({
            "p50": hist.quantile_ms(0.50), "p90": hist.quantile_ms(0.90),
            "p99": hist.quantile_ms(0.99), "max": hist.max_us as f64 / 1000.0,
        }),
        rss_before_streams_bytes: rss_before,
        rss_with_streams_bytes: rss_with,
        rss_per_stream_bytes: rss_per_stream,
        cpu_seconds: cpu,
        cpu_us_per_delivery: cpu
            .filter(|_| agg.received > 0)
            .map(|c| c * 1e6 / agg.received as f64),
        cpu_seconds_per_stream_hour: cpu
            .filter(|_| established > 0 && run.cpu_window > 0.0)
            .map(|c| c / established as f64 * 3600.0 / run.cpu_window),
        topics: args.topics,
        nchan: args.nchan,
        storm_reconnect_seconds: run.storm_reconnect_seconds,
        kill_switch_close_seconds: run.kill_switch_close_seconds,
        gzip: args.gzip,
        bytes_received: agg.bytes,
        presence_frames: agg.presence_frames,
        presence_max_per_stream: agg.presence_max_per_stream,
        hello_listed_max: agg.hello_listed_max,
    }
}

/// The readable summary, on stderr.
fn print_summary(args: &Args, res: &Result_, hist: &Hist) {
    let (established, establish_seconds) = (res.established, res.establish_seconds);
    let (published_n, expected) = (res.published, res.expected_deliveries);
    let (rss_before, rss_with, rss_per_stream, cpu) = (
        res.rss_before_streams_bytes,
        res.rss_with_streams_bytes,
        res.rss_per_stream_bytes,
        res.cpu_seconds,
    );
    let (storm_reconnect_seconds, kill_switch_close_seconds) =
        (res.storm_reconnect_seconds, res.kill_switch_close_seconds);
    eprintln!(
        "\n{} streams ({} procs), {} mode, {} ev/s for {:.0} s\n  established {}/{} in {:.2} s\n  published {} ({} errors, {:.1}/s achieved)\n  deliveries {} of {} expected ({:.0}/s); complete streams {}; lost {}; duplicates {}; out of order {}; resets {}; closed by server {}\n  latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n  sidecar RSS {} → {} ({}/stream); CPU {} ({} per delivery){}{}",
        args.streams, args.procs, args.mode, args.rate, args.seconds,
        established, args.streams, establish_seconds,
        published_n, res.publish_errors, res.publish_rate_achieved,
        res.deliveries, expected, res.deliveries_per_second, res.complete_streams, res.lost, res.duplicates, res.out_of_order, res.resets, res.closed_by_server,
        hist.quantile_ms(0.5), hist.quantile_ms(0.9), hist.quantile_ms(0.99), hist.max_us as f64 / 1000.0,
        rss_before.map(|b| format!("{:.1} MiB", b as f64 / 1048576.0)).unwrap_or("-".into()),
        rss_with.map(|b| format!("{:.1} MiB", b as f64 / 1048576.0)).unwrap_or("-".into()),
        rss_per_stream.map(|b| format!("{:.1} KiB", b / 1024.0)).unwrap_or("-".into()),
        cpu.map(|c| format!("{c:.2} s")).unwrap_or("-".into()),
        res.cpu_us_per_delivery.map(|c| format!("{c:.2} µs")).unwrap_or("-".into()),
        storm_reconnect_seconds.map(|s| format!("\n  reconnect storm: all back in {s:.2} s")).unwrap_or_default(),

        kill_switch_close_seconds.map(|s| format!("\n  kill switch: all closed {s:.3} s after the write")).unwrap_or_default(),
    );
    if res.publish_refused > 0 {
        eprintln!(
            "  publishes pushed back (and sent again): {}",
            res.publish_refused
        );
    }
    if let Some(c) = res.cpu_seconds_per_stream_hour {
        eprintln!(
            "  CPU per stream-hour: {c:.3} s over {:.1} s",
            res.cpu_seconds.unwrap_or(0.0)
        );
    }
    if args.users > 0 {
        eprintln!(
            "  presence: {} frames ({:.2} per stream, at most {} on one); hello listed at most {} members",
            res.presence_frames,
            res.presence_frames as f64 / established.max(1) as f64,
            res.presence_max_per_stream,
            res.hello_listed_max
        );
    }
    eprintln!(
        "  bytes received by the clients: {} ({:.0} per stream){}",
        res.bytes_received,
        res.bytes_received as f64 / established.max(1) as f64,
        if args.gzip { ", gzip" } else { "" }
    );
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Ok(rt) = rt else {
        eprintln!("cannot start a runtime");
        std::process::exit(2);
    };
    if args.child {
        rt.block_on(child(args));
    } else if let Err(e) = rt.block_on(parent(args)) {
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    }
}
