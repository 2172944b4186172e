//! Event-log benchmark: append throughput and commit latency of the SQLite log in `relaxed`
//! and `strict` durability, the Redis Streams log with `--redis URL`, and the in-memory log
//! for reference.
//!
//! ```text
//! cargo run --release --example store_bench -- [--events 20000] [--dir /tmp] [--redis redis://127.0.0.1:6379/0]
//! ```
//!
//! - throughput: `--events` appends from 32 concurrent appenders (as concurrent mutations
//!   reach the hub), timed until the log has them committed (`close()` flushes relaxed);
//! - commit latency: one append at a time, each awaited — for `strict` this is exactly what a
//!   mutation's answer waits for; for `relaxed` the append returns before the commit.

use sse_sidecar::config::model::Durability;
use sse_sidecar::events::types::now_ms;
use sse_sidecar::events::Event;
use sse_sidecar::store::memory::MemoryLog;
use sse_sidecar::store::redis::RedisLog;
use sse_sidecar::store::sqlite::SqliteLog;
use sse_sidecar::store::EventLog;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn event(n: u64) -> Event {
    Event {
        id: String::new(),
        event_type: "card.updated".into(),
        family: "cards".into(),
        topics: vec!["board:1".into(), format!("card:{n}")],
        ts: now_ms(),
        origin: Default::default(),
        data: serde_json::json!({"id": n.to_string(), "board_id": "1", "title": "a card title of ordinary length", "column": "doing"}),
        invalidate: vec![serde_json::json!(["cards", "1"])],
        tenant: None,
        conflict: None,
    }
}

fn pct(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

async fn run(name: &str, log: Arc<dyn EventLog>, events: u64) {
    // Throughput: 32 concurrent appenders, one event per append.
    let started = Instant::now();
    let mut tasks = Vec::new();
    let per = events / 32;
    for w in 0..32u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let _ = log.append(vec![event(w * per + i)]).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let appended = started.elapsed();
    // Commit latency: sequential single appends.
    let mut lat = Vec::with_capacity(1000);
    for i in 0..1000 {
        let t = Instant::now();
        let _ = log.append(vec![event(i)]).await;
        lat.push(t.elapsed());
    }
    lat.sort();
    let t = Instant::now();
    log.close().await;
    let flush = t.elapsed();
    println!(
        "{name:<16} {:>10.0} appends/s (32 appenders, {} events, {:.2} s + {:.0} ms flush)   one append: p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        (per * 32) as f64 / (appended + flush).as_secs_f64(),
        per * 32,
        appended.as_secs_f64(),
        flush.as_secs_f64() * 1000.0,
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        lat.last().map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0),
    );
}

fn main() {
    let mut events = 20_000u64;
    let mut dir = std::env::temp_dir();
    let mut redis_url: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--events" => events = args.next().and_then(|v| v.parse().ok()).unwrap_or(events),
            "--dir" => dir = args.next().map(Into::into).unwrap_or(dir),
            "--redis" => redis_url = args.next(),
            other => {
                eprintln!("unknown argument {other}; use --events N --dir PATH [--redis URL]");
                std::process::exit(2);
            }
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(1);
        }
    };
    // Opened before the runtime runs: the Redis log connects synchronously at start.
    let redis = redis_url.map(|url| {
        let prefix = format!("store-bench-{}", std::process::id());
        (
            url.clone(),
            RedisLog::open(&url, &prefix, 1_000_000, Duration::from_secs(3600)),
        )
    });
    rt.block_on(async {
        if let Some((url, log)) = redis {
            match log {
                Ok(log) if log.healthy() => run(&format!("redis ({url})"), log, events).await,
                Ok(_) => eprintln!("redis at {url} is not answering"),
                Err(e) => eprintln!("redis: {e}"),
            }
        }
        run(
            "memory",
            Arc::new(MemoryLog::new(1_000_000, Duration::from_secs(3600))),
            events,
        )
        .await;
        for (label, d) in [
            ("sqlite relaxed", Durability::Relaxed),
            ("sqlite strict", Durability::Strict),
        ] {
            let path = dir.join(format!(
                "sse-store-bench-{}-{}.db",
                std::process::id(),
                label.replace(' ', "-")
            ));
            match SqliteLog::open(&path, d, 1_000_000, Duration::from_secs(3600)) {
                Ok(log) => run(label, Arc::new(log), events).await,
                Err(e) => eprintln!("{label}: {e}"),
            }
            for ext in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
            }
        }
    });
}
