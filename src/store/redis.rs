//! The event log on Redis Streams, shared by several sidecar instances.
//!
//! Keys (prefix `sse-sidecar` by default): `<prefix>:events` (the stream), `<prefix>:seq`
//! (the sequence counter) and `<prefix>:epoch`. An append runs one Lua script that checks
//! the epoch, takes the next sequence numbers with INCR and XADDs each event under the
//! explicit stream id `<seq>-0` (trimmed with `MAXLEN ~`): sequence numbers are dense and
//! in one global order whichever instance appends, and `<epoch>-<seq>` ids mean the same on
//! every instance.
//!
//! Every instance tails the stream with `XREAD BLOCK` on a connection of its own (with a
//! response timeout longer than the block: the client's default of 500 ms would cut every
//! idle read) and hands what it reads to the hub in order (`Feed`): its own appends reach its
//! subscribers the same way as everyone else's. Replay reads with `XRANGE`.
//!
//! Failures: a command that fails marks the log unhealthy (the store breaker then sends live
//! families to polling; pass-through never waits on Redis). The tailer reconnects and goes on
//! from its last id. A jump in the sequence (entries lost in a failover, or trimmed before
//! this instance read them) is a `Feed::Gap`: every stream gets a `reset`, never silence.
//! An append that fails loses its events for every instance, not only this one: the
//! instance remembers it and, as soon as Redis answers again, appends a loss marker (an
//! entry whose payload is `LOSS_MARKER`); every instance's tailer turns it into a
//! `Feed::Gap` (`events_lost`), and a replay across it answers `Evicted` (a reset). An entry
//! that does not decode is counted, logged and a `log_gap`: never skipped silently.
//! If Redis comes back empty (the epoch key is gone), the first instance to notice restores
//! the epoch and moves the counter far past anything issued, so every resuming client is
//! reset rather than handed reused ids. If Redis holds another epoch than this instance's
//! (it was emptied and a new instance started first), this instance adopts it, also with a
//! gap.

use super::{EventLog, Feed, ReadAfter, StoreError, StoredEvent};
use crate::events::types::{is_valid_epoch, new_epoch, now_ms};
use crate::events::Event;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::AsyncCommands;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, OnceCell};

/// How far the counter jumps when Redis comes back empty: past anything an instance could
/// have issued and clients could hold.
const RESTORE_JUMP: u64 = 1 << 20;
/// Longest `XREAD BLOCK`.
const BLOCK: Duration = Duration::from_millis(1000);
/// Response timeout for appends and replays.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Most entries read by one XREAD.
const READ_COUNT: usize = 512;
/// Feed batches waiting for the hub.
const FEED_CAPACITY: usize = 256;
/// Receipts waiting to be published, or handed to the hub.
const RECEIPT_QUEUE: usize = 1024;
/// The payload of a loss marker: not JSON, so no event can look like it.
const LOSS_MARKER: &[u8] = b"\0sse-sidecar:events-lost";

/// What one stream entry holds.
enum Entry {
    Event(Arc<StoredEvent>),
    /// An append failed on some instance: events are missing here.
    Lost(u64),
    /// Unreadable (counted and logged).
    Undecodable(u64),
}

/// The start of both scripts: restores the epoch if Redis lost it (moving the counter past
/// this instance's head + jump), and leaves the epoch Redis holds in `cur`.
/// KEYS: stream, seq, epoch. ARGV: epoch, head known by this instance, jump, ...
macro_rules! restore_epoch_lua {
    () => {
        r#"
local cur = redis.call('GET', KEYS[3])
if not cur then
  redis.call('SET', KEYS[3], ARGV[1])
  local floor = tonumber(ARGV[2]) + tonumber(ARGV[3])
  local c = tonumber(redis.call('GET', KEYS[2]) or '0')
  if c < floor then redis.call('SET', KEYS[2], floor) end
  cur = ARGV[1]
end
"#
    };
}

/// Appends each payload under the next sequence number, if the epoch is this instance's.
/// ARGV after the common three: maxlen, payloads...
const APPEND: &str = concat!(
    restore_epoch_lua!(),
    r#"
if cur ~= ARGV[1] then
  return redis.error_reply('EPOCH ' .. cur)
end
local seqs = {}
for i = 5, #ARGV do
  local s = redis.call('INCR', KEYS[2])
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], s .. '-0', 'e', ARGV[i])
  seqs[#seqs + 1] = s
end
return seqs
"#
);

/// Returns the epoch Redis holds (restored first if it was lost).
const ENSURE_EPOCH: &str = concat!(restore_epoch_lua!(), "return cur\n");

struct Keys {
    stream: String,
    seq: String,
    epoch: String,
}

pub struct RedisLog {
    /// Itself, for the tailer task `take_feed` starts.
    me: std::sync::Weak<RedisLog>,
    client: redis::Client,
    keys: Keys,
    epoch: std::sync::RwLock<Arc<str>>,
    /// Last sequence number the tailer handed to the hub (or the stream's end at start).
    head: AtomicU64,
    oldest: AtomicU64,
    healthy: AtomicBool,
    tailer_ok: AtomicBool,
    max_events: u64,
    max_age: Duration,
    con: OnceCell<ConnectionManager>,
    append_script: redis::Script,
    ensure_script: redis::Script,
    feed_taken: Mutex<bool>,
    url_shown: String,
    /// An append failed: a loss marker is owed to the log.
    loss_owed: AtomicBool,
    /// Entries that could not be decoded (tailer, replay, trim).
    decode_errors: AtomicU64,
    /// The pub/sub channel of receipts, and the queue of those to publish.
    receipts_channel: String,
    receipts_out: std::sync::OnceLock<mpsc::Sender<bytes::Bytes>>,
}

/// `redis://user:secret@host/0` → `redis://host/0` for logs.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://{}", &url[at + 1..]),
        _ => url.to_owned(),
    }
}

fn err(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Sends the events read so far to the hub, if any.
async fn flush(tx: &mpsc::Sender<Feed>, batch: &mut Vec<Arc<StoredEvent>>) {
    if !batch.is_empty() {
        let _ = tx.send(Feed::Events(std::mem::take(batch))).await;
    }
}

fn seq_of(id: &str) -> Option<u64> {
    id.split_once('-')?.0.parse().ok()
}

impl RedisLog {
    /// Connects once (synchronously, at start) to adopt or create the epoch and find the
    /// stream's end. Redis being down at start is not fatal: the log starts unhealthy with
    /// a provisional epoch, and the tailer adopts the real one when Redis answers.
    pub fn open(
        url: &str,
        prefix: &str,
        max_events: u64,
        max_age: Duration,
    ) -> Result<Arc<RedisLog>, StoreError> {
        let client = redis::Client::open(url).map_err(err)?;
        let keys = Keys {
            stream: format!("{prefix}:events"),
            seq: format!("{prefix}:seq"),
            epoch: format!("{prefix}:epoch"),
        };
        let log = Arc::new_cyclic(|me| RedisLog {
            me: me.clone(),
            client,
            keys,
            epoch: std::sync::RwLock::new(Arc::from(new_epoch())),
            head: AtomicU64::new(0),
            oldest: AtomicU64::new(1),
            healthy: AtomicBool::new(false),
            tailer_ok: AtomicBool::new(false),
            max_events: max_events.max(1),
            max_age,
            con: OnceCell::new(),
            append_script: redis::Script::new(APPEND),
            ensure_script: redis::Script::new(ENSURE_EPOCH),
            feed_taken: Mutex::new(false),
            url_shown: redact(url),
            loss_owed: AtomicBool::new(false),
            decode_errors: AtomicU64::new(0),
            receipts_channel: format!("{prefix}:receipts"),
            receipts_out: std::sync::OnceLock::new(),
        });
        match log.open_sync() {
            Ok(()) => log.healthy.store(true, Ordering::Release),
            Err(e) => tracing::error!(url = %log.url_shown, error = %e,
                "redis unavailable at start: the event log is unhealthy until it answers (clients poll)"),
        }
        Ok(log)
    }

    fn open_sync(&self) -> Result<(), StoreError> {
        let mut con = self
            .client
            .get_connection_with_timeout(COMMAND_TIMEOUT)
            .map_err(err)?;
        con.set_read_timeout(Some(COMMAND_TIMEOUT)).map_err(err)?;
        con.set_write_timeout(Some(COMMAND_TIMEOUT)).map_err(err)?;
        let mine = self.current_epoch();
        let epoch: String = self
            .ensure_script
            .key(&self.keys.stream)
            .key(&self.keys.seq)
            .key(&self.keys.epoch)
            .arg(&*mine)
            .arg(0u64)
            .arg(0u64)
            .invoke(&mut con)
            .map_err(err)?;
        if !is_valid_epoch(&epoch) {
            return Err(StoreError::Unavailable(format!(
                "{} holds {epoch:?}, not an epoch",
                self.keys.epoch
            )));
        }
        self.set_epoch(&epoch);
        let last: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&self.keys.stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query(&mut con)
            .map_err(err)?;
        let head = match last.ids.first().and_then(|e| seq_of(&e.id)) {
            Some(s) => s,
            None => redis::cmd("GET")
                .arg(&self.keys.seq)
                .query::<Option<u64>>(&mut con)
                .map_err(err)?
                .unwrap_or(0),
        };
        self.head.store(head, Ordering::Release);
        tracing::info!(url = %self.url_shown, epoch = %self.current_epoch(), head,
            "event log on redis streams");
        Ok(())
    }

    fn current_epoch(&self) -> Arc<str> {
        self.epoch.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_epoch(&self, epoch: &str) {
        *self.epoch.write().unwrap_or_else(|e| e.into_inner()) = Arc::from(epoch);
    }

    async fn con(&self) -> Result<ConnectionManager, StoreError> {
        self.con
            .get_or_try_init(|| async {
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(COMMAND_TIMEOUT))
                    .set_response_timeout(Some(COMMAND_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                ConnectionManager::new_with_config(self.client.clone(), cfg).await
            })
            .await
            .cloned()
            .map_err(err)
    }

    fn mark(&self, ok: bool) {
        self.healthy.store(ok, Ordering::Release);
    }

    fn decode(&self, epoch: &str, entry: &StreamId) -> Option<Entry> {
        let seq = seq_of(&entry.id)?;
        let raw: Vec<u8> = match entry.map.get("e") {
            Some(redis::Value::BulkString(b)) => b.clone(),
            Some(redis::Value::SimpleString(s)) => s.clone().into_bytes(),
            _ => Vec::new(),
        };
        if raw == LOSS_MARKER {
            return Some(Entry::Lost(seq));
        }
        match serde_json::from_slice::<Event>(&raw) {
            Ok(mut ev) => {
                ev.id = crate::events::types::EventId::new(epoch, seq).to_string();
                Some(Entry::Event(StoredEvent::new(seq, ev)))
            }
            Err(e) => {
                let n = self.decode_errors.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(id = %entry.id, error = %e, decode_errors = n,
                    "undecodable entry in the redis stream: its subscribers get a reset");
                Some(Entry::Undecodable(seq))
            }
        }
    }

    /// The event of an entry, if it holds one.
    fn event_of(&self, epoch: &str, entry: &StreamId) -> Option<Arc<StoredEvent>> {
        match self.decode(epoch, entry)? {
            Entry::Event(e) => Some(e),
            _ => None,
        }
    }

    /// Appends the loss marker owed since a failed append; false if Redis failed again.
    async fn settle_loss(&self, con: &mut ConnectionManager) -> bool {
        if !self.loss_owed.swap(false, Ordering::AcqRel) {
            return true;
        }
        let epoch = self.current_epoch();
        let done: Result<Vec<u64>, _> = self
            .append_script
            .key(&self.keys.stream)
            .key(&self.keys.seq)
            .key(&self.keys.epoch)
            .arg(&*epoch)
            .arg(self.head())
            .arg(RESTORE_JUMP)
            .arg(self.max_events)
            .arg(LOSS_MARKER)
            .invoke_async(con)
            .await;
        match done {
            Ok(seqs) => {
                tracing::warn!(seq = ?seqs.first(),
                    "an append failed earlier: loss marker written, every instance's streams get a reset");
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "loss marker not written yet; retrying");
                self.loss_owed.store(true, Ordering::Release);
                false
            }
        }
    }

    /// The tailer: XREAD BLOCK from the last id, in order, into the feed; reconnects after
    /// errors; checks the epoch every pass; trims by age now and then.
    async fn tail(self: Arc<Self>, tx: mpsc::Sender<Feed>) {
        let mut con: Option<ConnectionManager> = None;
        let mut last_trim = std::time::Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            if tx.is_closed() {
                return;
            }
            if con.is_none() {
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(COMMAND_TIMEOUT))
                    // Longer than the block: the default (500 ms) would cut idle reads.
                    .set_response_timeout(Some(BLOCK + COMMAND_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                match ConnectionManager::new_with_config(self.client.clone(), cfg).await {
                    Ok(c) => con = Some(c),
                    Err(e) => {
                        self.fail_tailer(&e, &mut backoff).await;
                        continue;
                    }
                }
            }
            let Some(c) = con.as_mut() else { continue };
            if self.loss_owed.load(Ordering::Acquire) {
                if let Ok(mut cmd) = self.con().await {
                    self.settle_loss(&mut cmd).await;
                }
            }
            match self.tail_once(c, &tx).await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    if !self.tailer_ok.swap(true, Ordering::AcqRel) {
                        tracing::info!(url = %self.url_shown, "redis tailer connected");
                    }
                    self.mark(true);
                }
                Err(e) => {
                    con = None;
                    self.fail_tailer(&e, &mut backoff).await;
                    continue;
                }
            }
            if last_trim.elapsed() > Duration::from_secs(10) {
                last_trim = std::time::Instant::now();
                if let Err(e) = self.trim_by_age(c).await {
                    tracing::debug!(error = %e, "redis age trim failed");
                }
                if let Ok(first) = con_first(c, &self.keys.stream).await {
                    let head = self.head.load(Ordering::Acquire);
                    self.oldest
                        .store(first.unwrap_or(head + 1), Ordering::Release);
                }
            }
        }
    }

    async fn fail_tailer(&self, e: &redis::RedisError, backoff: &mut Duration) {
        if self.tailer_ok.swap(false, Ordering::AcqRel) || self.healthy.load(Ordering::Acquire) {
            tracing::error!(url = %self.url_shown, error = %e,
                "redis unavailable: live families fall back to polling until it returns");
        }
        self.mark(false);
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(Duration::from_secs(2));
    }

    /// One pass of the tailer: the epoch check, then one blocking read fed to the hub.
    async fn tail_once(
        &self,
        con: &mut ConnectionManager,
        tx: &mpsc::Sender<Feed>,
    ) -> Result<(), redis::RedisError> {
        let mine = self.current_epoch();
        let head = self.head.load(Ordering::Acquire);
        if self.adopt_epoch(con, tx, &mine, head).await? {
            return Ok(());
        }
        let Some(reply) = self.read_after(con, head).await? else {
            return Ok(());
        };
        self.feed(reply, head, tx).await;
        Ok(())
    }

    /// The epoch: restored if Redis lost it, adopted (with a gap, `epoch_changed`) if peers
    /// use another. True when it was adopted (this pass reads nothing more).
    async fn adopt_epoch(
        &self,
        con: &mut ConnectionManager,
        tx: &mpsc::Sender<Feed>,
        mine: &str,
        head: u64,
    ) -> Result<bool, redis::RedisError> {
        let theirs: String = self
            .ensure_script
            .key(&self.keys.stream)
            .key(&self.keys.seq)
            .key(&self.keys.epoch)
            .arg(mine)
            .arg(head)
            .arg(RESTORE_JUMP)
            .invoke_async(con)
            .await?;
        if theirs == mine || !is_valid_epoch(&theirs) {
            return Ok(false);
        }
        tracing::warn!(old = %mine, new = %theirs,
            "redis holds another epoch (it lost its data and another instance started first): adopting it, every stream gets a reset");
        let new_head = redis::cmd("GET")
            .arg(&self.keys.seq)
            .query_async::<Option<u64>>(con)
            .await?
            .unwrap_or(0);
        self.set_epoch(&theirs);
        self.head.store(new_head, Ordering::Release);
        let _ = tx
            .send(Feed::Gap {
                head: new_head,
                reason: crate::wire::ResetReason::EpochChanged,
            })
            .await;
        Ok(true)
    }

    /// One blocking read of the entries after `head` (none when the block times out).
    async fn read_after(
        &self,
        con: &mut ConnectionManager,
        head: u64,
    ) -> Result<Option<StreamReadReply>, redis::RedisError> {
        redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.keys.stream)
            .arg(format!("{head}-0"))
            .query_async(con)
            .await
    }

    /// Feeds what one read returned to the hub, in order: events in batches, a
    /// `Feed::Gap` where the sequence jumps, at a loss marker and at an entry that does not
    /// decode. The head follows every entry fed.
    async fn feed(&self, reply: StreamReadReply, head: u64, tx: &mpsc::Sender<Feed>) {
        let epoch = self.current_epoch();
        let mut batch = Vec::new();
        let mut expected = head + 1;
        for entry in reply.keys.into_iter().flat_map(|key| key.ids) {
            let Some(seq) = seq_of(&entry.id) else {
                continue;
            };
            if seq < expected {
                continue;
            }
            if seq > expected {
                // Entries missing: lost in a failover or trimmed before we read them.
                flush(tx, &mut batch).await;
                tracing::warn!(expected, found = seq,
                    "the redis stream skips entries (failover or trimming): every stream gets a reset");
                self.head.store(seq - 1, Ordering::Release);
                let _ = tx
                    .send(Feed::Gap {
                        head: seq - 1,
                        reason: crate::wire::ResetReason::LogGap,
                    })
                    .await;
            }
            expected = seq + 1;
            let gap = match self.decode(&epoch, &entry) {
                Some(Entry::Event(stored)) => {
                    batch.push(stored);
                    None
                }
                Some(Entry::Lost(at)) => Some((at, crate::wire::ResetReason::EventsLost)),
                Some(Entry::Undecodable(at)) => Some((at, crate::wire::ResetReason::LogGap)),
                None => None,
            };
            if let Some((at, reason)) = gap {
                flush(tx, &mut batch).await;
                let _ = tx.send(Feed::Gap { head: at, reason }).await;
            }
            self.head.store(seq, Ordering::Release);
        }
        flush(tx, &mut batch).await;
    }

    /// Drops entries older than the age limit (the count limit is applied by every XADD).
    async fn trim_by_age(&self, con: &mut ConnectionManager) -> Result<(), redis::RedisError> {
        let cutoff = now_ms().saturating_sub(self.max_age.as_millis() as u64);
        let mut start = "-".to_string();
        loop {
            let page: StreamRangeReply = con
                .xrange_count(&self.keys.stream, &start, "+", 256)
                .await?;
            let epoch = self.current_epoch();
            let mut young: Option<u64> = None;
            for e in &page.ids {
                if let Some(s) = self.event_of(&epoch, e) {
                    if s.event.ts >= cutoff {
                        young = Some(s.seq);
                        break;
                    }
                }
            }
            match (young, page.ids.last()) {
                (Some(seq), _) => {
                    let _: u64 = redis::cmd("XTRIM")
                        .arg(&self.keys.stream)
                        .arg("MINID")
                        .arg(format!("{seq}-0"))
                        .query_async(con)
                        .await?;
                    return Ok(());
                }
                (None, Some(last)) if page.ids.len() == 256 => {
                    start = format!("({}", last.id);
                }
                (None, Some(last)) => {
                    // Everything is old: keep nothing before the newest + 1.
                    let seq = seq_of(&last.id).unwrap_or(0) + 1;
                    let _: u64 = redis::cmd("XTRIM")
                        .arg(&self.keys.stream)
                        .arg("MINID")
                        .arg(format!("{seq}-0"))
                        .query_async(con)
                        .await?;
                    return Ok(());
                }
                (None, None) => return Ok(()),
            }
        }
    }
}

async fn con_first(
    con: &mut ConnectionManager,
    stream: &str,
) -> Result<Option<u64>, redis::RedisError> {
    let page: StreamRangeReply = con.xrange_count(stream, "-", "+", 1).await?;
    Ok(page.ids.first().and_then(|e| seq_of(&e.id)))
}

#[async_trait]
impl EventLog for RedisLog {
    fn epoch(&self) -> Arc<str> {
        self.current_epoch()
    }
    fn decode_errors(&self) -> u64 {
        self.decode_errors.load(Ordering::Relaxed)
    }

    fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    async fn append(&self, events: Vec<Event>) -> Result<Vec<Arc<StoredEvent>>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut con = self.con().await.inspect_err(|_| {
            self.mark(false);
            self.loss_owed.store(true, Ordering::Release);
        })?;
        // A marker owed goes first, so the loss sits before these events in the log.
        self.settle_loss(&mut con).await;
        let epoch = self.current_epoch();
        let mut inv = self.append_script.prepare_invoke();
        inv.key(&self.keys.stream)
            .key(&self.keys.seq)
            .key(&self.keys.epoch)
            .arg(&*epoch)
            .arg(self.head())
            .arg(RESTORE_JUMP)
            .arg(self.max_events);
        for ev in &events {
            let json = serde_json::to_vec(ev).map_err(|e| StoreError::Write(e.to_string()))?;
            inv.arg(json);
        }
        let seqs: Vec<u64> = inv.invoke_async(&mut con).await.map_err(|e| {
            self.mark(false);
            // Lost for every instance: tell them when Redis answers again.
            self.loss_owed.store(true, Ordering::Release);
            err(e)
        })?;
        self.mark(true);
        Ok(events
            .into_iter()
            .zip(seqs)
            .map(|(mut ev, seq)| {
                ev.id = crate::events::types::EventId::new(&epoch, seq).to_string();
                StoredEvent::new(seq, ev)
            })
            .collect())
    }

    async fn read_after(&self, after: u64, limit: usize) -> Result<ReadAfter, StoreError> {
        let mut con = self.con().await?;
        let page: StreamRangeReply = con
            .xrange_count(&self.keys.stream, format!("({after}-0"), "+", limit.max(1))
            .await
            .map_err(err)?;
        let epoch = self.current_epoch();
        let first = page.ids.first().and_then(|e| seq_of(&e.id));
        match first {
            Some(f) if f > after + 1 => Ok(ReadAfter::Evicted { oldest: f }),
            None if after < self.head() => Ok(ReadAfter::Evicted {
                oldest: self.head() + 1,
            }),
            _ => {
                let mut events = Vec::with_capacity(page.ids.len());
                for e in &page.ids {
                    match self.decode(&epoch, e) {
                        Some(Entry::Event(ev)) => events.push(ev),
                        // Events are missing there: replay cannot vouch for what follows.
                        Some(Entry::Lost(at)) | Some(Entry::Undecodable(at)) => {
                            return Ok(ReadAfter::Evicted { oldest: at + 1 });
                        }
                        None => {}
                    }
                }
                Ok(ReadAfter::Events(events))
            }
        }
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    fn oldest(&self) -> u64 {
        // Refreshed by the tailer every few seconds (any instance may trim); replay itself
        // finds out with XRANGE.
        self.oldest.load(Ordering::Acquire).max(1)
    }

    fn share_receipt(&self, payload: bytes::Bytes) {
        if let Some(tx) = self.receipts_out.get() {
            if tx.try_send(payload).is_err() {
                tracing::debug!("receipt not shared: the publish queue is full");
            }
        }
    }

    fn take_receipt_feed(&self) -> Option<mpsc::Receiver<bytes::Bytes>> {
        let (out_tx, out_rx) = mpsc::channel(RECEIPT_QUEUE);
        self.receipts_out.set(out_tx).ok()?;
        tokio::spawn(publish_receipts(self.me.clone(), out_rx));
        let (in_tx, in_rx) = mpsc::channel(RECEIPT_QUEUE);
        let (client, channel) = (self.client.clone(), self.receipts_channel.clone());
        tokio::spawn(subscribe_receipts(client, channel, in_tx));
        Some(in_rx)
    }

    fn take_feed(&self) -> Option<mpsc::Receiver<Feed>> {
        let mut taken = self.feed_taken.lock().unwrap_or_else(|e| e.into_inner());
        let me = self.me.upgrade()?;
        if *taken {
            return None;
        }
        *taken = true;
        let (tx, rx) = mpsc::channel(FEED_CAPACITY);
        tokio::spawn(me.tail(tx));
        Some(rx)
    }
}

/// Publishes the receipts this instance shares, until the log is gone (its queue closes).
async fn publish_receipts(log: std::sync::Weak<RedisLog>, mut rx: mpsc::Receiver<bytes::Bytes>) {
    while let Some(payload) = rx.recv().await {
        let Some(log) = log.upgrade() else { return };
        let sent = match log.con().await {
            Ok(mut con) => con
                .publish::<_, _, i64>(&log.receipts_channel, payload.as_ref())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "receipt not shared: publish failed");
        }
    }
}

/// Hands the receipts every instance publishes to the hub, until the hub stops reading;
/// reconnects with backoff.
async fn subscribe_receipts(
    client: redis::Client,
    channel: String,
    tx: mpsc::Sender<bytes::Bytes>,
) {
    use futures_util::StreamExt;
    let mut backoff = Duration::from_millis(100);
    while !tx.is_closed() {
        match client.get_async_pubsub().await {
            Ok(mut ps) => {
                if ps.subscribe(&channel).await.is_ok() {
                    backoff = Duration::from_millis(100);
                    let mut messages = ps.on_message();
                    loop {
                        let msg = tokio::select! {
                            m = messages.next() => m,
                            _ = tx.closed() => return,
                        };
                        let Some(msg) = msg else { break };
                        let payload = bytes::Bytes::copy_from_slice(msg.get_payload_bytes());
                        if tx.try_send(payload).is_err() {
                            tracing::debug!("shared receipt dropped: the hub is behind");
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "receipts channel: cannot subscribe"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
