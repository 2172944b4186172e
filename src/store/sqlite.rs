//! Durable event log on SQLite (bundled), in WAL mode.
//!
//! One writer thread owns the write connection and commits in batches (group commit), fed by
//! a bounded queue; replays read on their own connections (a small pool) or, for the recent
//! tail, from an in-memory ring that also holds events queued but not yet committed.
//!
//! Durability:
//! - `relaxed` (default): `append` returns once the events are queued, so they fan out before
//!   they are on disk. A crash can therefore lose events that clients already saw: an unclean
//!   shutdown is detected at the next start (the `state` row still says `running`) and begins
//!   a new epoch, so every client that resumes gets a `reset` — never silent staleness.
//! - `strict`: `append` returns after the commit (`synchronous=FULL`), so nothing is fanned
//!   out, and no mutation answer is released (see the proxy), before it is on disk. The epoch
//!   survives any restart, kill -9 included.
//!
//! Ids keep their meaning across restarts: the epoch is stored in the `meta` table and
//! sequence numbers continue from the last stored event.

use super::tail::Tail;
use super::{EventLog, ReadAfter, StoreError, StoredEvent};
use crate::config::model::Durability;
use crate::events::types::{new_epoch, now_ms};
use crate::events::Event;
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Recent events kept in memory for replays that do not need the disk.
const RING: usize = 8192;
/// Batches waiting for the writer.
const WRITE_QUEUE: usize = 1024;
/// Most events in one transaction.
const MAX_TX_EVENTS: usize = 4096;
/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(1);
/// Idle read connections kept.
const READ_POOL: usize = 4;

struct WriteReq {
    events: Vec<Arc<StoredEvent>>,
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
}

enum Msg {
    Write(WriteReq),
    /// Wakes the writer for retention when no writes come.
    Tick,
    Close(oneshot::Sender<()>),
}

struct Shared {
    healthy: AtomicBool,
    committed: AtomicU64,
    oldest: AtomicU64,
}

pub struct SqliteLog {
    epoch: Arc<str>,
    path: PathBuf,
    durability: Durability,
    tail: Tail,
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    readers: Mutex<Vec<Connection>>,
    /// Whether the previous run ended without a clean close.
    pub recovered_unclean: bool,
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn open_conn(path: &Path, durability: Durability) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match durability {
            Durability::Strict => "FULL",
            Durability::Relaxed => "NORMAL",
        },
    )?;
    Ok(conn)
}

fn meta_get(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

fn meta_set(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// The tables, created if missing.
fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS events (
             seq INTEGER PRIMARY KEY,
             ts INTEGER NOT NULL,
             body TEXT NOT NULL
         );
         CREATE INDEX IF NOT EXISTS events_ts ON events(ts);",
    )
}

/// The epoch this run serves, and whether the previous run ended without a clean close. A
/// new epoch is started for a new log, and after an unclean end in relaxed mode (events
/// acknowledged then may be gone). The log is marked running.
fn take_epoch(conn: &Connection, durability: Durability) -> rusqlite::Result<(String, bool)> {
    let epoch = meta_get(conn, "epoch")?;
    let state = meta_get(conn, "state")?;
    let unclean = state.as_deref() == Some("running");
    let epoch = match epoch {
        Some(e) if !(unclean && durability == Durability::Relaxed) => e,
        previous => {
            let e = new_epoch();
            if previous.is_some() {
                tracing::warn!(new_epoch = %e,
                    "the event log was not closed cleanly in relaxed mode: starting a new epoch, resuming clients get a reset");
            }
            meta_set(conn, "epoch", &e)?;
            e
        }
    };
    meta_set(conn, "state", "running")?;
    Ok((epoch, unclean))
}

/// The head (never below the recorded one: sequence numbers never go back, even if
/// retention emptied the table) and the oldest stored sequence number (0: none).
fn head_and_oldest(conn: &Connection) -> rusqlite::Result<(u64, u64)> {
    let head: u64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| {
        r.get::<_, i64>(0)
    })? as u64;
    let floor: u64 = meta_get(conn, "head")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let oldest: u64 = conn.query_row("SELECT COALESCE(MIN(seq), 0) FROM events", [], |r| {
        r.get::<_, i64>(0)
    })? as u64;
    Ok((head.max(floor), oldest))
}

/// The retention ticker: a `Tick` to the writer every `RETENTION_EVERY`, until it is gone.
#[allow(
    clippy::disallowed_methods,
    reason = "sleeps on a thread of its own, not a worker"
)]
fn start_ticker(ticker: mpsc::Sender<Msg>) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name("sse-store-ticker".into())
        .spawn(move || loop {
            std::thread::sleep(RETENTION_EVERY);
            if let Err(mpsc::error::TrySendError::Closed(_)) = ticker.try_send(Msg::Tick) {
                return;
            }
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start the ticker: {e}")))?;
    Ok(())
}

impl SqliteLog {
    /// Opens (or creates) the log at `path`. Blocking; call at start-up.
    pub fn open(
        path: &Path,
        durability: Durability,
        max_events: u64,
        max_age: Duration,
    ) -> Result<SqliteLog, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let conn = open_conn(path, durability)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        create_schema(&conn).map_err(db_err)?;
        let (epoch, unclean) = take_epoch(&conn, durability).map_err(db_err)?;
        let (head, oldest) = head_and_oldest(&conn).map_err(db_err)?;
        let shared = Arc::new(Shared {
            healthy: AtomicBool::new(true),
            committed: AtomicU64::new(head),
            oldest: AtomicU64::new(if oldest == 0 { head + 1 } else { oldest }),
        });
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let writer_shared = shared.clone();
        let writer_path = path.to_path_buf();
        std::thread::Builder::new()
            .name("sse-store-writer".into())
            .spawn(move || {
                writer(
                    conn,
                    rx,
                    writer_shared,
                    writer_path,
                    durability,
                    max_events,
                    max_age,
                )
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer: {e}")))?;
        start_ticker(tx.clone())?;
        Ok(SqliteLog {
            epoch: epoch.into(),
            path: path.to_path_buf(),
            durability,
            tail: Tail::new(head, RING, None),
            tx,
            shared,
            readers: Mutex::new(Vec::new()),
            recovered_unclean: unclean,
        })
    }

    fn reader(&self) -> Result<Connection, StoreError> {
        if let Some(c) = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(c);
        }
        open_conn(&self.path, self.durability).map_err(db_err)
    }

    fn give_back(&self, c: Connection) {
        let mut pool = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < READ_POOL {
            pool.push(c);
        }
    }

    fn read_disk(&self, after: u64, limit: usize) -> Result<ReadAfter, StoreError> {
        let conn = self.reader()?;
        let rows: Result<Vec<(i64, String)>, rusqlite::Error> = (|| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![after as i64, limit as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })();
        let rows = rows.map_err(db_err);
        self.give_back(conn);
        let rows = rows?;
        if rows
            .first()
            .is_some_and(|(seq, _)| *seq as u64 != after + 1)
        {
            return Ok(ReadAfter::Evicted {
                oldest: rows[0].0 as u64,
            });
        }
        let mut out = Vec::with_capacity(rows.len());
        for (seq, body) in rows {
            match serde_json::from_str::<Event>(&body) {
                Ok(ev) => out.push(StoredEvent::new(seq as u64, ev)),
                Err(e) => {
                    return Err(StoreError::Unavailable(format!(
                        "stored event {seq} is unreadable: {e}"
                    )))
                }
            }
        }
        Ok(ReadAfter::Events(out))
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "the writer is a thread of its own, not a worker"
)]
fn writer(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Msg>,
    shared: Arc<Shared>,
    path: PathBuf,
    durability: Durability,
    max_events: u64,
    max_age: Duration,
) {
    let mut last_retention = Instant::now();
    let mut pending: Vec<WriteReq> = Vec::new();
    let mut closing: Option<oneshot::Sender<()>> = None;
    loop {
        if pending.is_empty() && closing.is_none() {
            match rx.blocking_recv() {
                Some(Msg::Write(w)) => pending.push(w),
                Some(Msg::Tick) => {}
                Some(Msg::Close(ack)) => closing = Some(ack),
                None => break,
            }
        }
        let mut n: usize = pending.iter().map(|w| w.events.len()).sum();
        while n < MAX_TX_EVENTS && closing.is_none() {
            match rx.try_recv() {
                Ok(Msg::Write(w)) => {
                    n += w.events.len();
                    pending.push(w);
                }
                Ok(Msg::Tick) => {}
                Ok(Msg::Close(ack)) => closing = Some(ack),
                Err(_) => break,
            }
        }
        if !pending.is_empty() {
            match commit(&mut conn, &pending) {
                Ok(last) => {
                    shared.committed.store(last, Ordering::Release);
                    if !shared.healthy.swap(true, Ordering::AcqRel) {
                        tracing::info!(path = %path.display(), "event log writable again");
                    }
                    for w in pending.drain(..) {
                        if let Some(d) = w.done {
                            let _ = d.send(Ok(()));
                        }
                    }
                }
                Err(e) => {
                    if shared.healthy.swap(false, Ordering::AcqRel) {
                        tracing::error!(path = %path.display(), error = %e,
                            "event log commit failed; retrying while the store is unavailable");
                    }
                    // Strict appends are answered (as failed) rather than held; relaxed
                    // batches stay pending and are retried, in order.
                    for w in pending.iter_mut() {
                        if let Some(d) = w.done.take() {
                            let _ = d.send(Err(StoreError::Write(e.to_string())));
                        }
                    }
                    if durability == Durability::Strict {
                        pending.clear();
                    }
                    if closing.is_some() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            }
        }
        if last_retention.elapsed() >= RETENTION_EVERY {
            last_retention = Instant::now();
            if let Err(e) = retention(&conn, &shared, max_events, max_age) {
                tracing::warn!(error = %e, "event log retention failed");
            }
        }
        if let Some(ack) = closing.take() {
            let _ = retention(&conn, &shared, max_events, max_age);
            let _ = meta_set(&conn, "state", "clean");
            let _ = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE");
            let _ = ack.send(());
            return;
        }
    }
}

fn commit(conn: &mut Connection, batch: &[WriteReq]) -> Result<u64, rusqlite::Error> {
    let tx = conn.transaction()?;
    let mut last = 0;
    {
        let mut stmt =
            tx.prepare_cached("INSERT INTO events(seq, ts, body) VALUES (?1, ?2, ?3)")?;
        for w in batch {
            for e in &w.events {
                let body = serde_json::to_string(&e.event)
                    .map_err(|err| rusqlite::Error::ToSqlConversionFailure(Box::new(err)))?;
                stmt.execute(params![e.seq as i64, e.event.ts as i64, body])?;
                last = e.seq;
            }
        }
    }
    tx.execute(
        "INSERT INTO meta(key, value) VALUES ('head', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [last.to_string()],
    )?;
    tx.commit()?;
    Ok(last)
}

fn retention(
    conn: &Connection,
    shared: &Shared,
    max_events: u64,
    max_age: Duration,
) -> rusqlite::Result<()> {
    let committed = shared.committed.load(Ordering::Acquire);
    let by_count = committed.saturating_sub(max_events);
    let cutoff = now_ms().saturating_sub(max_age.as_millis() as u64);
    conn.execute(
        "DELETE FROM events WHERE seq <= ?1 OR ts < ?2",
        params![by_count as i64, cutoff as i64],
    )?;
    let oldest: Option<i64> = conn.query_row("SELECT MIN(seq) FROM events", [], |r| r.get(0))?;
    shared.oldest.store(
        oldest.map(|o| o as u64).unwrap_or(committed + 1),
        Ordering::Release,
    );
    Ok(())
}

#[async_trait]
impl EventLog for SqliteLog {
    fn epoch(&self) -> Arc<str> {
        self.epoch.clone()
    }

    fn head(&self) -> u64 {
        self.tail.head()
    }

    async fn append(&self, events: Vec<Event>) -> Result<Vec<Arc<StoredEvent>>, StoreError> {
        let stored = self.tail.append(&self.epoch, events);
        let (done_tx, done_rx) = match self.durability {
            Durability::Strict => {
                let (t, r) = oneshot::channel();
                (Some(t), Some(r))
            }
            Durability::Relaxed => (None, None),
        };
        self.tx
            .send(Msg::Write(WriteReq {
                events: stored.clone(),
                done: done_tx,
            }))
            .await
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        if let Some(r) = done_rx {
            r.await
                .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))??;
        }
        Ok(stored)
    }

    async fn read_after(&self, after: u64, limit: usize) -> Result<ReadAfter, StoreError> {
        if let Some(events) = self.tail.read_after(after, limit) {
            return Ok(ReadAfter::Events(events));
        }
        let oldest = self.shared.oldest.load(Ordering::Acquire);
        if after + 1 < oldest {
            return Ok(ReadAfter::Evicted { oldest });
        }
        tokio::task::block_in_place(|| self.read_disk(after, limit))
    }

    fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    async fn close(&self) {
        let (ack_tx, ack_rx) = oneshot::channel();
        if self.tx.send(Msg::Close(ack_tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), ack_rx).await;
        }
    }

    fn oldest(&self) -> u64 {
        self.shared.oldest.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u64) -> Event {
        Event {
            id: String::new(),
            event_type: "t".into(),
            family: "f".into(),
            topics: vec!["x".into()],
            ts: now_ms(),
            origin: Default::default(),
            data: serde_json::json!({ "n": n }),
            invalidate: vec![],
            tenant: None,
            conflict: None,
        }
    }

    fn seqs(r: ReadAfter) -> Vec<u64> {
        match r {
            ReadAfter::Events(v) => v.iter().map(|e| e.seq).collect(),
            ReadAfter::Evicted { oldest } => panic!("evicted at {oldest}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn survives_a_clean_restart_with_the_same_epoch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.db");
        let log = SqliteLog::open(&path, Durability::Relaxed, 1000, Duration::from_secs(3600))
            .expect("open");
        let epoch = log.epoch().to_owned();
        log.append((1..=10).map(ev).collect())
            .await
            .expect("append");
        log.close().await;
        drop(log);
        let log = SqliteLog::open(&path, Durability::Relaxed, 1000, Duration::from_secs(3600))
            .expect("reopen");
        assert_eq!(log.epoch(), epoch, "clean shutdown keeps the epoch");
        assert_eq!(log.head(), 10);
        assert_eq!(
            seqs(log.read_after(7, 100).await.expect("read")),
            vec![8, 9, 10]
        );
        let more = log.append(vec![ev(11)]).await.expect("append");
        assert_eq!(more[0].seq, 11);
        log.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unclean_relaxed_shutdown_starts_a_new_epoch_but_strict_does_not() {
        for (durability, same) in [(Durability::Relaxed, false), (Durability::Strict, true)] {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("events.db");
            let log =
                SqliteLog::open(&path, durability, 1000, Duration::from_secs(3600)).expect("open");
            let epoch = log.epoch().to_owned();
            log.append(vec![ev(1)]).await.expect("append");
            // No close(): as after kill -9. Wait for the commit (strict already waited).
            common_wait(&log, 1).await;
            drop(log);
            let log = SqliteLog::open(&path, durability, 1000, Duration::from_secs(3600))
                .expect("reopen");
            assert_eq!(*log.epoch() == *epoch, same, "{durability:?}");
            assert!(log.recovered_unclean);
            assert_eq!(log.head(), 1, "sequence numbers continue");
            log.close().await;
        }
    }

    async fn common_wait(log: &SqliteLog, seq: u64) {
        for _ in 0..500 {
            if log.shared.committed.load(Ordering::Acquire) >= seq {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("commit did not happen");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_evicts_and_disk_reads_report_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.db");
        let log = SqliteLog::open(&path, Durability::Relaxed, 5, Duration::from_secs(3600))
            .expect("open");
        log.append((1..=20).map(ev).collect())
            .await
            .expect("append");
        common_wait(&log, 20).await;
        log.close().await;
        drop(log);
        let log = SqliteLog::open(&path, Durability::Relaxed, 5, Duration::from_secs(3600))
            .expect("reopen");
        // The ring is empty after a restart: reads go to disk.
        assert_eq!(
            seqs(log.read_after(17, 100).await.expect("read")),
            vec![18, 19, 20]
        );
        assert!(matches!(
            log.read_after(2, 100).await.expect("read"),
            ReadAfter::Evicted { .. }
        ));
        log.close().await;
    }
}
