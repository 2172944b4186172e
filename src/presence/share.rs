//! Presence across sidecar instances that share a Redis store (`store.backend: redis`). This
//! module owns what this instance publishes in Redis about its own members and what it
//! learns there of the other instances' (the engine merges them: `Presence::set_remote`).
//!
//! Keys (`<prefix>` is `store.key_prefix`):
//! - `<prefix>:presence:<key>`: one hash per presence topic (`<key>`: the topic scoped by
//!   tenant). Field `<instance>` (a random id per process) holds that instance's members as
//!   JSON `{members: [[id, fields, connections], ...], anonymous, topic, expires_ms}`. It is
//!   written `presence.debounce_ms` after the instance's streams on the topic change,
//!   rewritten every `presence.expiry_seconds / 3` with `expires_ms` = Redis' clock + two
//!   thirds of the expiry (so a dead instance, found at the next refresh of the others, is
//!   forgotten within the expiry of its death), and deleted when the instance has no stream on the topic any more and at a
//!   clean shutdown. The hash itself expires twice the expiry after its last write.
//! - `<prefix>:presence` (pub/sub): `{instance, key}` after each change of a field; an
//!   instance with streams on `key` reads that field and applies it.
//!
//! An instance reads the whole hash of a topic when its first stream joins it and at each
//! refresh. A field past its `expires_ms` belongs to an instance that died without cleaning
//! up: it is deleted (only if nobody rewrote it meanwhile) and its members leave after the
//! leave grace. Members of other instances are followed only on topics this instance has
//! streams on (a topic it no longer has streams on forgets them), so remote topics never
//! crowd local ones out of `presence.max_topics`.
//!
//! Bounded: at most `presence.max_topics` topics are synced; a field holds at most
//! `MAX_ENTRY_BYTES` (members past it count as anonymous), a message `MAX_MESSAGE_BYTES`;
//! larger or undecodable ones are ignored (debug log). Messages wait in a bounded queue
//! (dropped when it is full: the next refresh reads every hash anyway). Redis down: logged
//! once (then at most every minute) and retried with backoff; members already read stay
//! until their `expires_ms`, and presence on this instance goes on meanwhile. Every loop
//! watches shutdown.

use super::{Contribution, Identity, Presence};
use crate::config::presence::Presence as Settings;
use crate::config::Config;
use crate::events::types::now_ms;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisResult;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Largest field (one instance's members of one topic), written or read.
const MAX_ENTRY_BYTES: usize = 1 << 20;
/// Largest pub/sub message read.
const MAX_MESSAGE_BYTES: usize = 4096;
/// Messages waiting for the main loop.
const MESSAGE_QUEUE: usize = 1024;
/// Most messages handled in one round trip.
const MESSAGE_BATCH: usize = 256;
/// Most topics written or read in one pipeline.
const CHUNK: usize = 256;
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a clean shutdown tries to delete this instance's fields.
const LEAVE_BUDGET: Duration = Duration::from_secs(2);
/// While Redis fails, a warning at most this often (debug lines between).
const WARN_EVERY: Duration = Duration::from_secs(60);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Shortest wait between a change and its write, whatever `presence.debounce_ms` says.
const MIN_SYNC_DELAY: Duration = Duration::from_millis(50);

/// Deletes a field only if it still holds what was read (an instance that came back and
/// rewrote it keeps it). KEYS: hash. ARGV: field, value read.
const FORGET_FIELD: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"#;

/// Where presence is shared: the store's Redis and its key prefix.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub prefix: String,
}

/// One instance's field of a topic's hash.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    members: Vec<(String, serde_json::Map<String, serde_json::Value>, u32)>,
    anonymous: u32,
    topic: String,
    expires_ms: u64,
}

/// What the channel carries: `instance` changed its field of `key`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Message {
    instance: String,
    key: String,
}

/// The field for a contribution; members that would not fit in `MAX_ENTRY_BYTES` are
/// counted as anonymous.
fn encode(c: &Contribution, expires_ms: u64) -> Vec<u8> {
    let mut entry = Entry {
        members: c
            .members
            .iter()
            .map(|(w, n)| (w.id.clone(), w.fields.clone(), *n))
            .collect(),
        anonymous: c.anonymous,
        topic: c.topic.clone(),
        expires_ms,
    };
    loop {
        let raw = serde_json::to_vec(&entry).unwrap_or_default();
        if raw.len() <= MAX_ENTRY_BYTES || entry.members.is_empty() {
            return raw;
        }
        let keep = entry.members.len() / 2;
        let cut: u32 = entry.members.drain(keep..).map(|m| m.2).sum();
        entry.anonymous = entry.anonymous.saturating_add(cut);
    }
}

/// A field read from the hash of `key`: the contribution and its `expires_ms`; none (debug
/// log) when it is too large or does not decode.
fn decode(key: &str, raw: &[u8]) -> Option<(Contribution, u64)> {
    if raw.len() > MAX_ENTRY_BYTES {
        tracing::debug!(key, bytes = raw.len(), "presence field too large: ignored");
        return None;
    }
    let entry: Entry = serde_json::from_slice(raw)
        .map_err(|e| tracing::debug!(key, error = %e, "undecodable presence field: ignored"))
        .ok()?;
    let members = entry
        .members
        .into_iter()
        .filter(|(id, _, n)| !id.is_empty() && *n > 0)
        .map(|(id, fields, n)| (Identity { id, fields }, n))
        .collect();
    let c = Contribution {
        key: key.to_owned(),
        topic: entry.topic,
        members,
        anonymous: entry.anonymous,
    };
    Some((c, entry.expires_ms))
}

/// A message off the channel, if it is one (bounded, decodable).
fn parse_message(raw: &[u8]) -> Option<Message> {
    if raw.len() > MAX_MESSAGE_BYTES {
        tracing::debug!(bytes = raw.len(), "presence message too large: ignored");
        return None;
    }
    serde_json::from_slice(raw)
        .map_err(|e| tracing::debug!(error = %e, "undecodable presence message: ignored"))
        .ok()
}

/// A contribution of nothing (the instance has left the topic).
fn empty(key: &str, topic: &str) -> Contribution {
    Contribution {
        key: key.to_owned(),
        topic: topic.to_owned(),
        members: Vec::new(),
        anonymous: 0,
    }
}

/// What a sync does: the contributions to write, the keys whose field goes, and the topics
/// this instance has streams on (key → topic).
#[derive(Debug, Default, PartialEq)]
struct Plan {
    write: Vec<Contribution>,
    delete: Vec<String>,
    mine: BTreeMap<String, String>,
}

/// Compares what the engine contributes now with what was last written (at most
/// `max_topics` topics, in key order).
fn plan(
    written: &HashMap<String, Contribution>,
    mut local: Vec<Contribution>,
    max_topics: usize,
) -> Plan {
    local.retain(|c| !c.members.is_empty() || c.anonymous > 0);
    local.sort_by(|a, b| a.key.cmp(&b.key));
    local.truncate(max_topics);
    let mut p = Plan::default();
    for c in local {
        p.mine.insert(c.key.clone(), c.topic.clone());
        if written.get(&c.key) != Some(&c) {
            p.write.push(c);
        }
    }
    p.delete = written
        .keys()
        .filter(|k| !p.mine.contains_key(*k))
        .cloned()
        .collect();
    p.delete.sort();
    p
}

/// Redis' health as the sharing sees it: rate-limited logs and the retry backoff.
struct Health {
    /// Set while Redis fails: when the last warning was logged.
    warned: Option<Instant>,
    backoff: Duration,
}

impl Health {
    fn new() -> Health {
        Health {
            warned: None,
            backoff: BACKOFF_MIN,
        }
    }

    /// A Redis command failed at `now`: logs it (a warning at most every `WARN_EVERY`) and
    /// says how long to wait before retrying.
    fn failed(&mut self, what: &str, e: &redis::RedisError, now: Instant) -> Duration {
        if self.warned.is_none_or(|at| now >= at + WARN_EVERY) {
            tracing::warn!(error = %e, what,
                "redis unavailable: presence is not shared with the other instances until it answers (presence on this instance goes on)");
            self.warned = Some(now);
        } else {
            tracing::debug!(error = %e, what, "presence sharing: redis still unavailable");
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        wait
    }

    fn succeeded(&mut self) {
        if self.warned.take().is_some() {
            tracing::info!("redis answers again: presence is shared with the other instances");
        }
        self.backoff = BACKOFF_MIN;
    }
}

/// A topic this instance has streams on: its name, and the other instances whose members
/// were applied there, with when each expires (ms, Redis' clock).
struct Tracked {
    topic: String,
    remotes: HashMap<String, u64>,
}

/// How a field read was applied.
#[derive(Debug, PartialEq, Eq)]
enum Applied {
    /// Not for us (our own field, a topic we have no stream on, undecodable).
    Ignored,
    Set,
    Removed,
    /// Past its `expires_ms`: its members were forgotten; the field is to be deleted.
    Expired,
}

/// The sharing's state (see the module header).
struct Share {
    engine: Arc<Presence>,
    client: redis::Client,
    con: Option<ConnectionManager>,
    instance: String,
    prefix: String,
    channel: String,
    /// What this instance last wrote, per key.
    written: HashMap<String, Contribution>,
    tracked: HashMap<String, Tracked>,
    /// Tracked topics whose hash was not read since they were tracked.
    unread: HashSet<String>,
    /// Redis' clock minus this machine's (ms), from the last refresh.
    offset_ms: i64,
    health: Health,
    forget_script: redis::Script,
}

impl Share {
    fn new(engine: Arc<Presence>, client: redis::Client, prefix: &str) -> Share {
        Share {
            engine,
            client,
            con: None,
            instance: format!("{:016x}", rand::random::<u64>()),
            prefix: prefix.to_owned(),
            channel: format!("{prefix}:presence"),
            written: HashMap::new(),
            tracked: HashMap::new(),
            unread: HashSet::new(),
            offset_ms: 0,
            health: Health::new(),
            forget_script: redis::Script::new(FORGET_FIELD),
        }
    }

    fn hash(&self, key: &str) -> String {
        format!("{}:presence:{key}", self.prefix)
    }

    fn message(&self, instance: &str, key: &str) -> Vec<u8> {
        let m = Message {
            instance: instance.to_owned(),
            key: key.to_owned(),
        };
        serde_json::to_vec(&m).unwrap_or_default()
    }

    /// Now on Redis' clock (ms).
    fn now_ms(&self) -> u64 {
        (now_ms() as i64).saturating_add(self.offset_ms).max(0) as u64
    }

    async fn con(&mut self) -> RedisResult<ConnectionManager> {
        if let Some(c) = &self.con {
            return Ok(c.clone());
        }
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let c = ConnectionManager::new_with_config(self.client.clone(), cfg).await?;
        self.con = Some(c.clone());
        Ok(c)
    }

    /// Brings this instance's fields in line with its streams (written, or deleted where it
    /// has none left), follows the topics it has streams on and reads the new ones' hashes.
    async fn sync(&mut self, s: &Settings) -> RedisResult<()> {
        let plan = plan(&self.written, self.engine.local(), s.max_topics);
        self.follow(s, &plan.mine);
        let mut con = self.con().await?;
        let expires = self.now_ms() + lifetime_ms(s);
        let keep_ms = 2 * s.expiry.as_millis() as u64;
        for chunk in plan.write.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for c in chunk {
                let hash = self.hash(&c.key);
                pipe.cmd("HSET")
                    .arg(&hash)
                    .arg(&self.instance)
                    .arg(encode(c, expires))
                    .ignore();
                pipe.cmd("PEXPIRE").arg(&hash).arg(keep_ms).ignore();
                let m = self.message(&self.instance, &c.key);
                pipe.cmd("PUBLISH").arg(&self.channel).arg(m).ignore();
            }
            pipe.query_async::<()>(&mut con).await?;
            for c in chunk {
                self.written.insert(c.key.clone(), c.clone());
            }
        }
        for chunk in plan.delete.chunks(CHUNK) {
            self.withdraw(&mut con, chunk).await?;
            for key in chunk {
                self.written.remove(key);
            }
        }
        let unread: Vec<String> = self.unread.iter().cloned().collect();
        self.read(s, &mut con, &unread).await
    }

    /// Follows the topics this instance now has streams on, and forgets the other
    /// instances' members of those it has none on any more (they leave after the grace,
    /// with nobody here to tell).
    fn follow(&mut self, s: &Settings, mine: &BTreeMap<String, String>) {
        let gone: Vec<String> = self
            .tracked
            .keys()
            .filter(|k| !mine.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            self.unread.remove(&key);
            if let Some(t) = self.tracked.remove(&key) {
                for instance in t.remotes.keys() {
                    self.engine.set_remote(s, instance, empty(&key, &t.topic));
                }
            }
        }
        for (key, topic) in mine {
            if !self.tracked.contains_key(key) {
                let t = Tracked {
                    topic: topic.clone(),
                    remotes: HashMap::new(),
                };
                self.tracked.insert(key.clone(), t);
                self.unread.insert(key.clone());
            }
        }
    }

    /// Reads the whole hash of each of `keys`: applies the other instances' fields, deletes
    /// the expired ones and forgets the instances whose field is gone.
    async fn read(
        &mut self,
        s: &Settings,
        con: &mut ConnectionManager,
        keys: &[String],
    ) -> RedisResult<()> {
        for chunk in keys.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("HGETALL").arg(self.hash(key));
            }
            let hashes: Vec<HashMap<String, Vec<u8>>> = pipe.query_async(con).await?;
            for (key, fields) in chunk.iter().zip(hashes) {
                self.unread.remove(key);
                for (instance, raw) in self.apply_hash(s, key, fields) {
                    self.forget_field(con, key, &instance, &raw).await?;
                }
            }
        }
        Ok(())
    }

    /// Applies every field of one hash; the expired ones (instance, value read).
    fn apply_hash(
        &mut self,
        s: &Settings,
        key: &str,
        fields: HashMap<String, Vec<u8>>,
    ) -> Vec<(String, Vec<u8>)> {
        let Some(t) = self.tracked.get(key) else {
            return Vec::new();
        };
        let vanished: Vec<String> = t
            .remotes
            .keys()
            .filter(|i| !fields.contains_key(*i))
            .cloned()
            .collect();
        for instance in vanished {
            self.apply(s, key, &instance, None);
        }
        let mut expired = Vec::new();
        for (instance, raw) in fields {
            if self.apply(s, key, &instance, Some(&raw)) == Applied::Expired {
                expired.push((instance, raw));
            }
        }
        expired
    }

    /// Applies one instance's field of a tracked topic (`None`: it has none).
    fn apply(&mut self, s: &Settings, key: &str, instance: &str, raw: Option<&[u8]>) -> Applied {
        if instance == self.instance {
            return Applied::Ignored;
        }
        let now = self.now_ms();
        let Some(t) = self.tracked.get_mut(key) else {
            return Applied::Ignored;
        };
        let decoded = match raw {
            None => None,
            Some(raw) => match decode(key, raw) {
                Some(d) => Some(d),
                None => return Applied::Ignored,
            },
        };
        match decoded {
            Some((c, expires)) if expires > now => {
                t.remotes.insert(instance.to_owned(), expires);
                self.engine.set_remote(s, instance, c);
                Applied::Set
            }
            d => {
                if t.remotes.remove(instance).is_some() {
                    self.engine.set_remote(s, instance, empty(key, &t.topic));
                }
                if d.is_some() {
                    Applied::Expired
                } else {
                    Applied::Removed
                }
            }
        }
    }

    /// Deletes an expired field (unless it was rewritten since) and tells the others.
    async fn forget_field(
        &self,
        con: &mut ConnectionManager,
        key: &str,
        instance: &str,
        raw: &[u8],
    ) -> RedisResult<()> {
        let deleted: i64 = self
            .forget_script
            .key(self.hash(key))
            .arg(instance)
            .arg(raw)
            .invoke_async(con)
            .await?;
        if deleted > 0 {
            tracing::debug!(key, instance,
                "presence: an instance stopped refreshing its members (it died?): they leave after the grace");
            let m = self.message(instance, key);
            redis::cmd("PUBLISH")
                .arg(&self.channel)
                .arg(m)
                .query_async::<()>(con)
                .await?;
        }
        Ok(())
    }

    /// Applies what other instances said they changed: reads the field of each one on a
    /// tracked topic.
    async fn on_messages(&mut self, s: &Settings, batch: Vec<Message>) -> RedisResult<()> {
        let mut wanted: Vec<Message> = batch
            .into_iter()
            .filter(|m| m.instance != self.instance && self.tracked.contains_key(&m.key))
            .collect();
        wanted.sort();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(());
        }
        let mut con = self.con().await?;
        for chunk in wanted.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for m in chunk {
                pipe.cmd("HGET").arg(self.hash(&m.key)).arg(&m.instance);
            }
            let fields: Vec<Option<Vec<u8>>> = pipe.query_async(&mut con).await?;
            for (m, raw) in chunk.iter().zip(fields) {
                // An expired field is deleted by the next refresh's read.
                self.apply(s, &m.key, &m.instance, raw.as_deref());
            }
        }
        Ok(())
    }

    /// Every expiry/3: rewrites this instance's fields with a new expiry and reads every
    /// tracked hash; then forgets the members of instances whose last known expiry is past
    /// (also when Redis does not answer: they are not vouched for any more).
    async fn refresh(&mut self, s: &Settings) -> RedisResult<()> {
        let r = self.refresh_redis(s).await;
        self.expire_known(s);
        r
    }

    async fn refresh_redis(&mut self, s: &Settings) -> RedisResult<()> {
        let mut con = self.con().await?;
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut con).await?;
        self.offset_ms = (secs * 1000 + micros / 1000) as i64 - now_ms() as i64;
        let expires = self.now_ms() + lifetime_ms(s);
        let keep_ms = 2 * s.expiry.as_millis() as u64;
        let mine: Vec<Contribution> = self.written.values().cloned().collect();
        for chunk in mine.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for c in chunk {
                let hash = self.hash(&c.key);
                let field = encode(c, expires);
                pipe.cmd("HSET").arg(&hash).arg(&self.instance).arg(field);
                pipe.cmd("PEXPIRE").arg(&hash).arg(keep_ms).ignore();
            }
            let added: Vec<i64> = pipe.query_async(&mut con).await?;
            // A field that had to be added again was deleted (taken for dead): say so.
            let lost: Vec<&Contribution> = chunk
                .iter()
                .zip(added)
                .filter(|(_, n)| *n > 0)
                .map(|(c, _)| c)
                .collect();
            if lost.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for c in lost {
                let m = self.message(&self.instance, &c.key);
                pipe.cmd("PUBLISH").arg(&self.channel).arg(m).ignore();
            }
            pipe.query_async::<()>(&mut con).await?;
        }
        let keys: Vec<String> = self.tracked.keys().cloned().collect();
        self.read(s, &mut con, &keys).await
    }

    fn expire_known(&mut self, s: &Settings) {
        let now = self.now_ms();
        for (key, t) in self.tracked.iter_mut() {
            let dead: Vec<String> = t
                .remotes
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(i, _)| i.clone())
                .collect();
            for instance in dead {
                t.remotes.remove(&instance);
                self.engine.set_remote(s, &instance, empty(key, &t.topic));
            }
        }
    }

    /// Deletes this instance's fields of `keys` and tells the others, in one round trip.
    async fn withdraw<C: redis::aio::ConnectionLike>(
        &self,
        con: &mut C,
        keys: &[String],
    ) -> RedisResult<()> {
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("HDEL")
                .arg(self.hash(key))
                .arg(&self.instance)
                .ignore();
            let m = self.message(&self.instance, key);
            pipe.cmd("PUBLISH").arg(&self.channel).arg(m).ignore();
        }
        pipe.query_async::<()>(con).await
    }

    /// At a clean shutdown: deletes this instance's fields and tells the others (its
    /// members then leave after the grace, without waiting for the expiry).
    async fn leave_all(&mut self) -> RedisResult<()> {
        if self.written.is_empty() {
            return Ok(());
        }
        let mut con = self.con().await?;
        let keys: Vec<String> = self.written.keys().cloned().collect();
        for chunk in keys.chunks(CHUNK) {
            self.withdraw(&mut con, chunk).await?;
        }
        self.written.clear();
        Ok(())
    }
}

/// What the subscriber hands the main loop.
enum Incoming {
    Changed(Message),
    /// A (new) subscription: messages may have been missed, the hashes are read again.
    Subscribed,
}

/// Resolves when shutdown is signalled (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Subscribes to the channel and hands its messages over until shutdown; resubscribes
/// with backoff when the connection goes.
async fn subscribe(
    client: redis::Client,
    channel: String,
    tx: mpsc::Sender<Incoming>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_MIN;
    while !tx.is_closed() {
        let session = async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&channel).await?;
            RedisResult::Ok(ps)
        };
        let session = tokio::select! {
            r = session => r,
            _ = stopped(&mut shutdown) => return,
        };
        match session {
            Ok(mut ps) => {
                backoff = BACKOFF_MIN;
                let _ = tx.try_send(Incoming::Subscribed);
                if relay(&mut ps, &tx, &mut shutdown).await {
                    return;
                }
            }
            Err(e) => tracing::debug!(error = %e, "presence channel: cannot subscribe"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped(&mut shutdown) => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Hands one subscription's messages over until it ends (false) or shutdown (true).
async fn relay(
    ps: &mut redis::aio::PubSub,
    tx: &mpsc::Sender<Incoming>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    use futures_util::StreamExt;
    let mut messages = ps.on_message();
    loop {
        let msg = tokio::select! {
            m = messages.next() => m,
            _ = stopped(shutdown) => return true,
        };
        let Some(msg) = msg else { return false };
        let Some(m) = parse_message(msg.get_payload_bytes()) else {
            continue;
        };
        if tx.try_send(Incoming::Changed(m)).is_err() {
            tracing::debug!(
                "presence message dropped: the queue is full (the next refresh reads every topic)"
            );
        }
    }
}

/// The first message and what else is queued (at most `MESSAGE_BATCH`): the messages, and
/// whether a new subscription asks for every hash to be read.
fn batch(first: Incoming, rx: &mut mpsc::Receiver<Incoming>) -> (Vec<Message>, bool) {
    let mut messages = Vec::new();
    let mut resubscribed = false;
    let mut next = Some(first);
    while let Some(i) = next.take() {
        match i {
            Incoming::Changed(m) => messages.push(m),
            Incoming::Subscribed => resubscribed = true,
        }
        if messages.len() < MESSAGE_BATCH {
            next = rx.try_recv().ok();
        }
    }
    (messages, resubscribed)
}

/// Shares `engine`'s presence with the other instances on `target` until shutdown, then
/// deletes this instance's fields (best effort, `LEAVE_BUDGET`). `settings` gives the
/// current config (the `presence` section follows reloads).
pub async fn run(
    engine: Arc<Presence>,
    target: Target,
    settings: impl Fn() -> Arc<Config> + Send,
    mut shutdown: watch::Receiver<bool>,
) {
    let client = match redis::Client::open(target.url.as_str()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "presence is not shared: bad redis url");
            return;
        }
    };
    let mut share = Share::new(engine.clone(), client.clone(), &target.prefix);
    let (tx, mut rx) = mpsc::channel(MESSAGE_QUEUE);
    let channel = share.channel.clone();
    tokio::spawn(subscribe(client, channel, tx, shutdown.clone()));
    tracing::info!(instance = %share.instance, "presence shared through redis");
    let (mut next_sync, mut next_refresh) = (None, Instant::now());
    let mut open = true;
    loop {
        let cfg = settings();
        let s = &cfg.presence;
        tokio::select! {
            _ = stopped(&mut shutdown) => break,
            _ = engine.local_changed() => {
                let at = Instant::now() + s.debounce.max(MIN_SYNC_DELAY);
                next_sync = Some(next_sync.map_or(at, |t: Instant| t.min(at)));
            }
            i = rx.recv(), if open => {
                let Some(first) = i else { open = false; continue };
                let (messages, resubscribed) = batch(first, &mut rx);
                if resubscribed {
                    next_refresh = Instant::now();
                }
                if let Err(e) = share.on_messages(s, messages).await {
                    share.health.failed("read", &e, Instant::now());
                }
            }
            _ = sleep_until(next_sync) => {
                next_sync = None;
                match share.sync(s).await {
                    Ok(()) => share.health.succeeded(),
                    Err(e) => {
                        let wait = share.health.failed("write", &e, Instant::now());
                        next_sync = Some(Instant::now() + wait);
                    }
                }
            }
            _ = tokio::time::sleep_until(next_refresh) => {
                let every = s.expiry / 3;
                let wait = match share.refresh(s).await {
                    Ok(()) => { share.health.succeeded(); every }
                    Err(e) => share.health.failed("refresh", &e, Instant::now()).min(every),
                };
                next_refresh = Instant::now() + wait;
            }
        }
    }
    match tokio::time::timeout(LEAVE_BUDGET, share.leave_all()).await {
        Ok(Ok(())) => tracing::debug!("presence fields of this instance deleted"),
        Ok(Err(e)) => tracing::debug!(error = %e, "presence fields not deleted (they expire)"),
        Err(_) => tracing::debug!("presence fields not deleted in time (they expire)"),
    }
}

/// How long a written field lives: two thirds of the expiry. Fields are rewritten every
/// third and the others read every third, so a live instance's field never lapses (a third
/// of margin) and a dead one's is found within the expiry of its last write.
fn lifetime_ms(s: &Settings) -> u64 {
    s.expiry.as_millis() as u64 * 2 / 3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(id: &str) -> Identity {
        Identity {
            id: id.into(),
            fields: [("name".to_string(), serde_json::Value::from(id))]
                .into_iter()
                .collect(),
        }
    }

    fn contribution(key: &str, members: &[(&str, u32)], anonymous: u32) -> Contribution {
        Contribution {
            key: key.into(),
            topic: format!("board:{key}"),
            members: members.iter().map(|(id, n)| (who(id), *n)).collect(),
            anonymous,
        }
    }

    #[test]
    fn a_field_round_trips_and_says_when_it_expires() {
        let c = contribution("k", &[("alice", 2), ("bob", 1)], 3);
        let raw = encode(&c, 1234);
        let text = String::from_utf8(raw.clone()).expect("json");
        assert!(text.contains(r#"["alice",{"name":"alice"},2]"#), "{text}");
        assert_eq!(decode("k", &raw), Some((c, 1234)));
    }

    #[test]
    fn oversized_or_undecodable_fields_and_messages_are_ignored() {
        assert_eq!(decode("k", b"{not json"), None);
        assert_eq!(decode("k", &vec![b' '; MAX_ENTRY_BYTES + 1]), None);
        assert_eq!(parse_message(b"[1]"), None);
        assert_eq!(parse_message(&vec![b' '; MAX_MESSAGE_BYTES + 1]), None);
        let m = parse_message(br#"{"instance":"i","key":"k"}"#).expect("message");
        assert_eq!((m.instance.as_str(), m.key.as_str()), ("i", "k"));
        // Members without an id or a connection are not members.
        let raw = br#"{"members":[["",{},1],["x",{},0],["y",{},1]],"anonymous":0,"topic":"t","expires_ms":5}"#;
        let (c, _) = decode("k", raw).expect("decoded");
        assert_eq!(c.members.len(), 1);
    }

    #[test]
    fn a_field_too_large_counts_its_last_members_as_anonymous() {
        let big = "x".repeat(400);
        let members: Vec<(Identity, u32)> = (0..10_000)
            .map(|i| {
                let mut w = who(&format!("m{i:05}"));
                w.fields.insert("bio".into(), big.clone().into());
                (w, 1)
            })
            .collect();
        let c = Contribution {
            key: "k".into(),
            topic: "t".into(),
            members,
            anonymous: 1,
        };
        let raw = encode(&c, 0);
        assert!(raw.len() <= MAX_ENTRY_BYTES, "{}", raw.len());
        let (back, _) = decode("k", &raw).expect("decoded");
        let listed: u32 = back.members.iter().map(|m| m.1).sum();
        assert!(listed > 0 && listed < 10_000);
        assert_eq!(
            listed + back.anonymous,
            10_001,
            "every stream still counted"
        );
    }

    #[test]
    fn a_sync_writes_what_changed_and_deletes_what_is_gone() {
        let mut written = HashMap::new();
        written.insert("a".to_string(), contribution("a", &[("alice", 1)], 0));
        written.insert("b".to_string(), contribution("b", &[("bob", 1)], 0));
        let local = vec![
            contribution("a", &[("alice", 1)], 0),
            contribution("b", &[("bob", 2)], 0),
            contribution("c", &[], 1),
            // Only remote members there: nothing of ours.
            contribution("d", &[], 0),
        ];
        let p = plan(&written, local.clone(), 100);
        let keys: Vec<&str> = p.write.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, vec!["b", "c"], "unchanged a is not rewritten");
        assert!(p.delete.is_empty());
        assert_eq!(p.mine.keys().collect::<Vec<_>>(), vec!["a", "b", "c"]);
        let p = plan(&written, vec![local[2].clone()], 100);
        assert_eq!(p.delete, vec!["a".to_string(), "b".to_string()]);
        let p = plan(&HashMap::new(), local, 1);
        assert_eq!(p.mine.len(), 1, "at most max_topics synced");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_warn_at_most_once_a_minute() {
        let mut h = Health::new();
        let e = redis::RedisError::from((redis::ErrorKind::Io, "down"));
        let t0 = Instant::now();
        let waits: Vec<Duration> = (0..8).map(|_| h.failed("x", &e, t0)).collect();
        assert_eq!(waits[0], BACKOFF_MIN);
        assert!(waits.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(waits[7], BACKOFF_MAX);
        assert_eq!(h.warned, Some(t0));
        h.failed("x", &e, t0 + Duration::from_secs(30));
        assert_eq!(h.warned, Some(t0), "no second warning within a minute");
        h.failed("x", &e, t0 + WARN_EVERY);
        assert_eq!(h.warned, Some(t0 + WARN_EVERY));
        h.succeeded();
        assert_eq!((h.warned, h.backoff), (None, BACKOFF_MIN));
    }
}
