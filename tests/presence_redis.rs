//! Presence across instances: two sidecars on one redis-server, in front of the bundled
//! legacy app (its `/api/me` says who a cookie is), with the demo config on the Redis store.
//! A member on one instance is seen on the other; an instance that is killed has its
//! members leave after the expiry (counted from its last refresh) and the grace; one that
//! stops cleanly has them leave after the grace only.

mod common;

use common::presence::Member;
use common::redis_server::Redis;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const GRACE_MS: u64 = 1_000;
const DEBOUNCE_MS: u64 = 100;
const T: Duration = Duration::from_secs(10);
const HASH: &str = "pres:presence:board:2";

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The demo config on `redis` (key prefix `pres`).
fn config(redis: &Redis) -> String {
    let mut v: serde_yaml::Value = serde_yaml::from_str(&demo_config()).expect("demo config");
    let store = format!(
        "{{backend: redis, url: \"{}\", key_prefix: pres}}",
        redis.url()
    );
    let store: serde_yaml::Value = serde_yaml::from_str(&store).expect("store");
    v.as_mapping_mut()
        .expect("mapping")
        .insert("store".into(), store);
    serde_yaml::to_string(&v).expect("yaml")
}

async fn instance(redis: &Redis, app: &LegacyApp, expiry_seconds: u64) -> anyhow::Result<Sidecar> {
    let env = [
        ("LEAVE_GRACE_MS", GRACE_MS),
        ("DEBOUNCE_MS", DEBOUNCE_MS),
        ("EXPIRY_SECONDS", expiry_seconds),
    ]
    .map(|(k, v)| (format!("SSE_SIDECAR__PRESENCE__{k}"), v.to_string()))
    .to_vec();
    let upstream = app.addr.to_string();
    Sidecar::start_with(&config(redis), &upstream, SidecarOpts { env }).await
}

/// `user`'s stream on `board:2` of `sidecar`, following its members.
async fn open(sidecar: &Sidecar, user: &str) -> anyhow::Result<Member> {
    Member::open(
        &sidecar.url("/api/sse/events?topics=board:2"),
        user,
        "board:2",
    )
    .await
}

/// The fields of board 2's hash in Redis: instance → JSON.
fn fields(redis: &Redis) -> BTreeMap<String, Value> {
    // Not a terminal: redis-cli prints each field and value on a line of its own.
    let lines: Vec<String> = redis
        .cli(&["HGETALL", HASH])
        .lines()
        .map(str::to_owned)
        .collect();
    lines
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| {
            (
                c[0].clone(),
                serde_json::from_str(&c[1]).unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// The field that lists `user` (its instance and JSON).
fn field_of(redis: &Redis, user: &str) -> Option<(String, Value)> {
    fields(redis).into_iter().find(|(_, v)| {
        v["members"]
            .as_array()
            .is_some_and(|ms| ms.iter().any(|m| m[0] == user))
    })
}

/// alice on A and bob on B see each other.
async fn both_seen(a: &Sidecar, b: &Sidecar) -> anyhow::Result<(Member, Member)> {
    let mut alice = open(a, "alice").await?;
    let mut bob = open(b, "bob").await?;
    let opened = Instant::now();
    let both = [("alice", 1), ("bob", 1)];
    alice.until(&both, T).await?;
    let on_a = opened.elapsed();
    bob.until(&both, T).await?;
    println!(
        "bob (on B) seen by alice (on A) {on_a:?} after he opened; alice seen by bob within {:?}",
        opened.elapsed()
    );
    Ok((alice, bob))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_s_members_leave_after_the_expiry_and_the_grace() -> anyhow::Result<()> {
    const EXPIRY: Duration = Duration::from_secs(5);
    let redis = Redis::start(false).await;
    let app = LegacyApp::start()?;
    let a = instance(&redis, &app, EXPIRY.as_secs()).await?;
    let mut b = instance(&redis, &app, EXPIRY.as_secs()).await?;
    let (mut alice, bob) = both_seen(&a, &b).await?;
    let (b_id, _) = field_of(&redis, "bob").expect("B's field lists bob");
    let (a_id, _) = field_of(&redis, "alice").expect("A's field lists alice");
    assert_ne!(a_id, b_id, "one field per instance");

    b.proc.signal("KILL");
    anyhow::ensure!(b.proc.wait_exit(T).is_some(), "B did not die");
    let (killed, killed_wall) = (Instant::now(), wall_ms());
    drop(bob);
    // What B last wrote, before it died: its members live until expires_ms.
    let (_, last) = field_of(&redis, "bob").expect("B's field outlives it");
    let expires_ms = last["expires_ms"].as_u64().expect("expires_ms");
    let refresh = EXPIRY / 3;
    let grace = Duration::from_millis(GRACE_MS);
    alice
        .until(&[("alice", 1)], EXPIRY + refresh + grace + T)
        .await?;
    let at = alice.left_at("bob").expect("a frame said bob left");
    let after = at.duration_since(killed);
    let at_wall = killed_wall + after.as_millis() as u64;
    println!(
        "kill -9 of B: bob left alice's view {after:?} after (field expired {} ms after the kill; expiry {EXPIRY:?}, grace {grace:?})",
        expires_ms as i64 - killed_wall as i64
    );
    // Not before his members' expiry (from B's last refresh) and the grace ...
    assert!(
        at_wall + 50 >= expires_ms + GRACE_MS,
        "bob left at {at_wall}, his field expired at {expires_ms} (+ grace {GRACE_MS} ms)"
    );
    assert!(
        after + Duration::from_millis(50) >= refresh + grace,
        "bob left {after:?} after the kill"
    );
    // ... and within the expiry and the grace of the kill (+ a margin for the debounce).
    let margin = Duration::from_millis(500);
    assert!(
        after <= EXPIRY + grace + margin,
        "bob left {after:?} after the kill; log of A:\n{}",
        a.log()
    );
    let left: Vec<String> = fields(&redis).into_keys().collect();
    assert_eq!(
        left,
        vec![a_id],
        "A deleted the dead instance's field; log of A:\n{}",
        a.log()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_withdraws_its_members_after_the_grace_only() -> anyhow::Result<()> {
    // A long expiry: a leave that waited for it would come far too late.
    const EXPIRY: Duration = Duration::from_secs(30);
    let redis = Redis::start(false).await;
    let app = LegacyApp::start()?;
    let a = instance(&redis, &app, EXPIRY.as_secs()).await?;
    let mut b = instance(&redis, &app, EXPIRY.as_secs()).await?;
    let (mut alice, bob) = both_seen(&a, &b).await?;
    assert_eq!(fields(&redis).len(), 2, "one field per instance");

    b.proc.signal("TERM");
    let stopped = Instant::now();
    let grace = Duration::from_millis(GRACE_MS);
    alice
        .until(&[("alice", 1)], grace + Duration::from_secs(5))
        .await?;
    let after = alice
        .left_at("bob")
        .expect("a frame said bob left")
        .duration_since(stopped);
    println!(
        "clean stop of B: bob left alice's view {after:?} after the SIGTERM (grace {grace:?})"
    );
    assert!(after >= grace, "bob left {after:?} after, before the grace");
    assert!(
        after <= grace + Duration::from_secs(2),
        "bob left {after:?} after the stop; log of A:\n{}",
        a.log()
    );
    anyhow::ensure!(b.proc.wait_exit(T).is_some(), "B did not stop");
    drop(bob);
    let left = fields(&redis);
    assert!(
        left.len() == 1 && field_of(&redis, "alice").is_some(),
        "B deleted its field: {left:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_presence_stays_local_and_is_shared_again_when_it_returns(
) -> anyhow::Result<()> {
    let mut redis = Redis::start(false).await;
    let app = LegacyApp::start()?;
    let a = instance(&redis, &app, 30).await?;
    let b = instance(&redis, &app, 30).await?;
    let (mut alice, mut bob) = both_seen(&a, &b).await?;

    redis.stop();
    // carol joins on A while Redis is down: alice (on A) sees her, bob (on B) cannot yet.
    let _carol = open(&a, "carol").await?;
    alice
        .until(&[("alice", 1), ("bob", 1), ("carol", 1)], T)
        .await?;
    wait_for("A to log that redis is gone", T, || async {
        a.log()
            .contains("presence is not shared with the other instances")
            .then_some(())
    })
    .await?;
    redis.spawn().await;
    let back = Instant::now();
    bob.until(&[("alice", 1), ("bob", 1), ("carol", 1)], T)
        .await?;
    println!(
        "redis back: carol (joined on A during the outage) seen on B {:?} later",
        back.elapsed()
    );
    assert!(
        alice.frames.iter().all(|(_, f)| alice_left_nobody(f)),
        "nobody left alice's view during the outage: {:?}",
        alice.frames
    );
    Ok(())
}

fn alice_left_nobody(f: &Value) -> bool {
    f["left"].as_array().is_none_or(|l| l.is_empty())
}
