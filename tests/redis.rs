//! Several sidecar instances on one Redis (Streams): fan-out across instances, resume on
//! another instance, one global order, and a Redis outage under load. Real redis-server
//! (Debian package; `.ci/run` installs it), real sidecar processes, real SSE clients.

mod common;

use common::redis_server::Redis;
use common::{data, echo, job_n, wait_for, Sidecar, SseClient};
use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

fn config(redis: &Redis, extra: &str) -> String {
    format!(
        r#"
upstream: {{address: "127.0.0.1:1"}}
sse: {{heartbeat_seconds: 5, replay_max_events: 1000, queue_max_bytes: 4194304}}
store: {{backend: redis, url: "{}", key_prefix: "test", retention: {{max_events: 100000}}}}
rollout: {{phase: 1}}
safety: {{breaker_cooldown_seconds: 2}}
families:
  jobs:
    phase: 1
    rules:
      - match: "POST /status/{{code}}"
        event: job.done
        topics: ["t:{{query.t}}"]
        data: {{n: "{{query.n}}", via: "{{query.via}}"}}
event_types:
  job.done: {{family: jobs, schema: {{type: object, required: [n]}}}}
{extra}"#,
        redis.url()
    )
}

async fn mutate(c: &reqwest::Client, sc: &Sidecar, t: &str, n: u64) -> bool {
    c.post(sc.url(&format!("/status/201?t={t}&n={n}&via={}", sc.port)))
        .send()
        .await
        .map(|r| r.status().as_u16() == 201)
        .unwrap_or(false)
}

/// Reads job events until `want` are seen or the deadline passes; returns (n, id) pairs.
async fn read_jobs(s: &mut SseClient, want: usize, timeout: Duration) -> Vec<(u64, String)> {
    s.collect_of("job.done", want, timeout)
        .await
        .iter()
        .map(|e| (job_n(e), e.id.clone()))
        .collect()
}

async fn stream(sc: &Sidecar, topics: &str, last: Option<&str>) -> SseClient {
    let mut s = SseClient::connect(&sc.url(&format!("/api/sse/events?topics={topics}")), last)
        .await
        .expect("connect");
    assert_eq!(s.status, 200);
    s.next_of("hello", T).await.expect("hello");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_one_ordered_log() {
    let redis = Redis::start(false).await;
    let backend = echo::start().await.to_string();
    let yaml = config(&redis, "");
    let a = Sidecar::start(&yaml, &backend).await.expect("a");
    let b = Sidecar::start(&yaml, &backend).await.expect("b");
    let cc = Sidecar::start(&yaml, &backend).await.expect("c");
    let c = reqwest::Client::new();
    let epochs: Vec<String> = {
        let mut v = Vec::new();
        for sc in [&a, &b, &cc] {
            let st = sc.sse_status().await.expect("status");
            v.push(st["epoch"].as_str().unwrap_or_default().to_owned());
        }
        v
    };
    assert!(
        epochs.iter().all(|e| e == &epochs[0] && !e.is_empty()),
        "{epochs:?}"
    );

    // A mutation through A reaches subscribers on B and C.
    let mut on_b = stream(&b, "t:x", None).await;
    let mut on_c = stream(&cc, "t:x", None).await;
    assert!(mutate(&c, &a, "x", 1).await);
    let got_b = read_jobs(&mut on_b, 1, T).await;
    let got_c = read_jobs(&mut on_c, 1, T).await;
    assert_eq!(got_b.iter().map(|g| g.0).collect::<Vec<_>>(), vec![1]);
    assert_eq!(got_b, got_c, "same event, same id on B and C");

    // B's client leaves after event 1; 2..=4 happen (through A and C); it resumes on C.
    let last = got_b[0].1.clone();
    drop(on_b);
    assert!(mutate(&c, &a, "x", 2).await);
    assert!(mutate(&c, &cc, "x", 3).await);
    assert!(mutate(&c, &a, "x", 4).await);
    let mut resumed = stream(&cc, "t:x", Some(&last)).await;
    let got = read_jobs(&mut resumed, 3, T).await;
    // Mutations are answered before their events are appended (relaxed), so 3 (through C)
    // and 4 (through A) may enter the log in either order: the client gets exactly the missed
    // events, in log order (increasing ids).
    let seq = |id: &str| id.rsplit_once('-').and_then(|(_, s)| s.parse::<u64>().ok());
    assert!(
        got.windows(2).all(|w| seq(&w[0].1) < seq(&w[1].1)),
        "log order: {got:?}"
    );
    let mut ns: Vec<u64> = got.iter().map(|g| g.0).collect();
    ns.sort();
    assert_eq!(
        ns,
        vec![2, 3, 4],
        "exactly the missed events (resumed from {last}); log of C:\n{}",
        cc.log()
    );
    let extra = resumed.collect_for(Duration::from_millis(300)).await;
    assert!(
        extra.iter().all(|e| e.event != "job.done"),
        "no duplicate after the replay: {extra:?}"
    );

    one_global_order(&a, &b, &cc, &c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_never_breaks_pass_through_and_ends_in_replay_or_reset() {
    let mut redis = Redis::start(true).await;
    let backend = echo::start().await.to_string();
    let yaml = config(&redis, "");
    let a = Sidecar::start(&yaml, &backend).await.expect("a");
    let b = Sidecar::start(&yaml, &backend).await.expect("b");
    let c = reqwest::Client::new();

    // Pass-through load on both instances for the whole test.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = start_load(&[a.port, b.port], &stop, &ok, &failed, &c);
    // Mutations through A all along (they succeed for the browser whatever Redis does).
    let mutations = start_mutations(&c, a.port, &stop);
    let mut s = stream(&b, "t:m", None).await;
    let before = read_jobs(&mut s, 5, T).await;
    assert_eq!(before.len(), 5, "live before the outage");
    let mut seen_ids: HashSet<String> = before.iter().map(|g| g.1.clone()).collect();

    // Redis goes away for 10 s.
    redis.stop();
    // Clients of the live family are told to poll.
    let mut dup = Vec::new();
    let told_to_poll = while_down(&b, &mut s, &mut seen_ids, &mut dup).await;
    assert!(
        told_to_poll,
        "clients were told to poll while redis was down"
    );
    let st = b.sse_status().await.expect("status");
    assert!(
        st["polling_families"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "jobs")),
        "{st}\n{}",
        b.log()
    );

    // Redis returns (with its data: append-only file).
    redis.spawn().await;
    // Back to live: the family leaves polling, events flow again, with replay or reset.
    let back = Instant::now();
    let (live_again, after, reset) = until_live(&b, &mut s, &mut seen_ids, &mut dup).await;
    println!(
        "redis back after 10 s: live again in {:?} (reset: {reset}), {after} events since",
        back.elapsed()
    );
    assert!(live_again, "the family went back to live");
    assert!(after >= 5, "events flow again");
    assert!(dup.is_empty(), "no event delivered twice: {dup:?}");

    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    assert!(
        mutations.await.expect("mutations"),
        "every mutation answered 201"
    );
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("pass-through during the outage: {ok} ok, {failed} failed");
    assert!(ok > 100);
    assert_eq!(failed, 0, "pass-through never failed");
}

/// One global order: concurrent mutations through all three instances; every subscriber
/// on every instance sees the same sequence of ids.
async fn one_global_order(a: &Sidecar, b: &Sidecar, cc: &Sidecar, c: &reqwest::Client) {
    let mut subs = [
        stream(a, "t:o", None).await,
        stream(b, "t:o", None).await,
        stream(cc, "t:o", None).await,
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for (i, port) in [a.port, b.port, cc.port].into_iter().enumerate() {
        let c = c.clone();
        tasks.spawn(async move {
            for k in 0..20u64 {
                let n = (i as u64) * 100 + k;
                let url = format!("http://127.0.0.1:{port}/status/201?t=o&n={n}&via={port}");
                let ok = c.post(url).send().await.map(|r| r.status().as_u16() == 201);
                assert!(matches!(ok, Ok(true)));
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("mutations");
    }
    let mut orders = Vec::new();
    for s in subs.iter_mut() {
        let got = read_jobs(s, 60, T).await;
        assert_eq!(got.len(), 60);
        orders.push(got);
    }
    assert_eq!(orders[0], orders[1]);
    assert_eq!(orders[0], orders[2]);
    let ids: HashSet<&String> = orders[0].iter().map(|g| &g.1).collect();
    assert_eq!(ids.len(), 60, "no duplicate ids");
}

/// Pass-through load, two workers per port, until `stop`: successes in `ok`, anything
/// else in `failed`.
fn start_load(
    ports: &[u16],
    stop: &Arc<std::sync::atomic::AtomicBool>,
    ok: &Arc<AtomicU64>,
    failed: &Arc<AtomicU64>,
    c: &reqwest::Client,
) -> tokio::task::JoinSet<()> {
    let mut load = tokio::task::JoinSet::new();
    for &port in ports {
        for _ in 0..2 {
            let (stop, ok, failed, c) = (stop.clone(), ok.clone(), failed.clone(), c.clone());
            load.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r = c
                        .get(format!("http://127.0.0.1:{port}/echo/poll"))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
    }
    load
}

/// Mutations through `a_port` every 50 ms until `stop`; whether every one answered 201.
fn start_mutations(
    c: &reqwest::Client,
    a_port: u16,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<bool> {
    let stop_m = stop.clone();
    let mc = c.clone();
    tokio::spawn(async move {
        let mut n = 0u64;
        let mut all_ok = true;
        while !stop_m.load(Ordering::Relaxed) {
            n += 1;
            let url = format!("http://127.0.0.1:{a_port}/status/201?t=m&n={n}&via=a");
            all_ok &= matches!(mc.post(url).send().await, Ok(r) if r.status().as_u16() == 201);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        all_ok
    })
}

/// Reads `s` for the 10 s Redis is down (resuming it on `b` if it ends), noting event ids
/// seen twice; whether clients of the live family were told to poll.
async fn while_down(
    b: &Sidecar,
    s: &mut SseClient,
    seen_ids: &mut HashSet<String>,
    dup: &mut Vec<String>,
) -> bool {
    let down_at = Instant::now();
    let mut told_to_poll = false;
    while down_at.elapsed() < Duration::from_secs(10) {
        match s.next(Duration::from_millis(200)).await {
            Some(e) if e.event == "control" => {
                let v = data(&e);
                if v["families"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|x| x == "jobs"))
                {
                    told_to_poll = true;
                }
            }
            Some(e) if e.event == "job.done" && !seen_ids.insert(e.id.clone()) => {
                dup.push(e.id.clone());
            }
            _ => {}
        }
        if s.ended {
            *s = stream(b, "t:m", s.last_id.clone().as_deref()).await;
        }
    }
    told_to_poll
}

/// Reads `s` after Redis returns, until the family is live again and 5 events came (30 s
/// at most): (live again, events since, a reset seen).
async fn until_live(
    b: &Sidecar,
    s: &mut SseClient,
    seen_ids: &mut HashSet<String>,
    dup: &mut Vec<String>,
) -> (bool, usize, bool) {
    let back = Instant::now();
    let mut live_again = false;
    let mut after = 0;
    let mut reset = false;
    while back.elapsed() < Duration::from_secs(30) && !(live_again && after >= 5) {
        match s.next(Duration::from_millis(200)).await {
            Some(e) if e.event == "control" => {
                let v = data(&e);
                if v["families"].as_array().is_some_and(|f| f.is_empty()) {
                    live_again = true;
                }
            }
            Some(e) if e.event == "reset" => reset = true,
            Some(e) if e.event == "job.done" => {
                after += 1;
                if !seen_ids.insert(e.id.clone()) {
                    dup.push(e.id.clone());
                }
            }
            _ => {}
        }
        if s.ended {
            *s = stream(b, "t:m", s.last_id.clone().as_deref()).await;
        }
    }
    (live_again, after, reset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_losing_its_data_resets_instead_of_reusing_ids() {
    let mut redis = Redis::start(false).await;
    let backend = echo::start().await.to_string();
    let a = Sidecar::start(&config(&redis, ""), &backend)
        .await
        .expect("a");
    let c = reqwest::Client::new();
    let mut s = stream(&a, "t:z", None).await;
    for n in 1..=3 {
        assert!(mutate(&c, &a, "z", n).await);
    }
    let got = read_jobs(&mut s, 3, T).await;
    assert_eq!(got.len(), 3);
    let last = got[2].1.clone();
    // Redis restarts empty (no persistence): the stream, the counter and the epoch are gone.
    redis.stop();
    redis.spawn().await;
    // The instance restores the epoch and moves past every issued id; the next event comes
    // after a reset, never under a reused id.
    let mut reset = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 100;
    let mut fresh = None;
    while Instant::now() < deadline && fresh.is_none() {
        n += 1;
        let _ = mutate(&c, &a, "z", n).await;
        if let Some(e) = s.next(Duration::from_millis(300)).await {
            match e.event.as_str() {
                "reset" => reset = true,
                "job.done" => fresh = Some(e),
                _ => {}
            }
        }
        if s.ended {
            s = stream(&a, "t:z", Some(&last)).await;
        }
    }
    let fresh = fresh.expect("events flow after redis came back");
    assert!(reset, "a reset came before the first event after the loss");
    let seq = |id: &str| id.rsplit_once('-').and_then(|(_, s)| s.parse::<u64>().ok());
    assert!(seq(&fresh.id) > seq(&last), "{} after {last}", fresh.id);
    // Resuming from an id of before the loss also gets a reset.
    let mut old = SseClient::connect(&a.url("/api/sse/events?topics=t:z"), Some(&last))
        .await
        .expect("connect");
    old.next_of("hello", T).await.expect("hello");
    old.next_of("reset", T)
        .await
        .expect("reset for an id from before the loss");
}

/// A TCP relay to Redis that can be cut (connections closed, new ones refused) and
/// restored: one instance loses Redis while the others keep it.
struct Relay {
    port: u16,
    open: Arc<std::sync::atomic::AtomicBool>,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    async fn start(to: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind relay");
        let port = listener.local_addr().expect("addr").port();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Default::default();
        let (o, t) = (open.clone(), tasks.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !o.load(Ordering::SeqCst) {
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                    }
                });
                t.lock().expect("tasks").push(task.abort_handle());
            }
        });
        Relay { port, open, tasks }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for t in self.tasks.lock().expect("tasks").drain(..) {
            t.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// Issue 15 item 8: an append that fails on instance A (A lost Redis, B did not) resets
/// B's streams too (`events_lost`), once A reaches Redis again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_failing_on_one_instance_resets_the_streams_of_every_instance() {
    let redis = Redis::start(false).await;
    let relay = Relay::start(redis.port).await;
    let backend = echo::start().await.to_string();
    let shielded = "polling:\n  routes:\n    - {match: \"GET /blob/{n}\", family: jobs, topics: [\"t:x\"], shield: true}\n";
    let direct = config(&redis, shielded);
    let via_relay = direct.replace(&redis.url(), &format!("redis://127.0.0.1:{}/0", relay.port));
    let a = Sidecar::start(&via_relay, &backend).await.expect("a");
    let b = Sidecar::start(&direct, &backend).await.expect("b");
    let c = reqwest::Client::new();
    let mut on_b = stream(&b, "t:x", None).await;
    assert!(mutate(&c, &a, "x", 1).await);
    assert_eq!(
        read_jobs(&mut on_b, 1, T).await.len(),
        1,
        "A's events reach B"
    );
    // B shields a poll of the topic's list (304 while nothing touched it since).
    let revalidate = |etag: String| {
        let c = c.clone();
        let url = b.url("/blob/64");
        async move {
            let r = c.get(url).header("if-none-match", etag).send().await.ok()?;
            Some(r.status().as_u16())
        }
    };
    let first = c.get(b.url("/blob/64")).send().await.expect("poll");
    let etag = first
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .expect("a shielded answer has an ETag")
        .to_owned();
    wait_for("B to shield the poll", T, || async {
        (revalidate(etag.clone()).await == Some(304)).then_some(())
    })
    .await
    .expect("shielded before the loss");
    relay.cut();
    // The mutation succeeds at the backend; its event cannot be stored.
    assert!(mutate(&c, &a, "x", 2).await);
    wait_for("A's append failed", T, || async {
        (a.metric("sse_sidecar_store_errors_total").await.ok()? >= 1.0).then_some(())
    })
    .await
    .expect("append failed");
    relay.restore();
    let reset = on_b.next_of("reset", Duration::from_secs(15)).await;
    let reset = reset.expect("B's stream is reset: the event is lost for it too");
    assert_eq!(data(&reset)["reason"], "events_lost");
    // B's shield no longer vouches for the list: the lost event may have changed it.
    assert_eq!(
        revalidate(etag).await,
        Some(200),
        "after a loss in the log, B's shielded poll goes to the backend"
    );
    // And the log goes on.
    assert!(mutate(&c, &a, "x", 3).await);
    let got = read_jobs(&mut on_b, 1, T).await;
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![3]);
}

/// Issue 15 item 8: an entry that does not decode is not skipped silently: the streams get
/// a `log_gap` reset and it is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_entry_resets_the_streams() {
    let redis = Redis::start(false).await;
    let backend = echo::start().await.to_string();
    let b = Sidecar::start(&config(&redis, ""), &backend)
        .await
        .expect("b");
    let mut on_b = stream(&b, "t:x", None).await;
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &redis.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let seq = cli(&["INCR", "test:seq"]);
    cli(&["XADD", "test:events", &format!("{seq}-0"), "e", "{not json"]);
    let reset = on_b.next_of("reset", T).await.expect("reset");
    assert_eq!(data(&reset)["reason"], "log_gap");
    assert!(b.log().contains("undecodable entry"), "{}", b.log());
    let counted = b
        .metric("sse_sidecar_store_decode_errors_total")
        .await
        .expect("metric");
    assert_eq!(counted, 1.0, "the decode error is counted in /metrics");
}

/// Cards whose edits are checked against their version (`conflicts: reject`), on Redis.
fn cards_config(redis: &Redis) -> String {
    format!(
        r#"
upstream: {{address: "127.0.0.1:1"}}
store: {{backend: redis, url: "{}", key_prefix: "cards", retention: {{max_events: 1000}}}}
rollout: {{phase: 1}}
families:
  cards:
    phase: 1
    conflicts: reject
    rules:
      - match: "PATCH /echo/cards/{{id}}"
        event: card.updated
        topics: ["card:{{id}}"]
        data: request
event_types:
  card.updated: {{family: cards, schema: {{type: object}}}}
polling:
  routes:
    - {{match: "GET /echo/cards/{{id}}", family: cards, topics: ["card:{{id}}"]}}
"#,
        redis.url()
    )
}

/// A card edit through `sc` as alice's tab `b1.t1`, with a base; the answer's status.
async fn edit_card(
    c: &reqwest::Client,
    sc: &Sidecar,
    base: &str,
    mutation: &str,
) -> (u16, serde_json::Value) {
    let r = c
        .patch(sc.url("/echo/cards/c1"))
        .header("cookie", "user=alice")
        .header("x-client-id", "b1.t1")
        .header("x-mutation-id", mutation)
        .header("x-sse-base", base)
        .json(&serde_json::json!({"title": mutation}))
        .send()
        .await
        .expect("edit");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// The version of card c1 as `sc` answers it.
async fn card_version(c: &reqwest::Client, sc: &Sidecar) -> String {
    let r = c.get(sc.url("/echo/cards/c1")).send().await.expect("get");
    let v = r
        .headers()
        .get("x-sse-version")
        .and_then(|v| v.to_str().ok());
    v.unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_and_conflicts_hold_across_instances() {
    let redis = Redis::start(false).await;
    let backend = echo::start().await.to_string();
    let yaml = cards_config(&redis);
    let a = Sidecar::start(&yaml, &backend).await.expect("a");
    let b = Sidecar::start(&yaml, &backend).await.expect("b");
    let c = reqwest::Client::new();
    // Alice's browser holds its stream on b; its tab's mutation goes through a.
    let url = b.url("/api/sse/events?topics=card:c1&client=b1");
    let mut on_b = SseClient::connect_with(&url, None, &[("cookie", "user=alice")])
        .await
        .expect("stream");
    on_b.next_of("hello", T).await.expect("hello");
    let base = card_version(&c, &b).await;
    assert_eq!(card_version(&c, &a).await, base, "both instances agree");
    let (st, _) = edit_card(&c, &a, &base, "m-a").await;
    assert_eq!(st, 200);
    let receipt = on_b
        .next_of("receipt", T)
        .await
        .expect("the receipt reached b");
    let r = data(&receipt);
    assert_eq!(r["mutation"], serde_json::json!("m-a"));
    assert_eq!(r["outcome"], serde_json::json!("delivered"), "{r}");
    let e1 = r["events"][0].as_str().expect("its event id").to_owned();
    // b learns the new version from the shared log's feed (its lag is the window).
    wait_for("b to learn the new version", T, || async {
        (card_version(&c, &b).await == e1).then_some(())
    })
    .await
    .expect("b's version");
    let (st, body) = edit_card(&c, &b, &base, "m-b").await;
    assert_eq!(st, 409, "{body}");
    assert_eq!(body["conflict"]["current"], serde_json::json!(e1));
    assert_eq!(body["conflict"]["events"][0]["id"], serde_json::json!(e1));
    assert_eq!(
        echo::hits("PATCH", "/echo/cards/c1"),
        1,
        "b's edit never left"
    );
    let r = data(
        &on_b
            .next_of("receipt", T)
            .await
            .expect("the refusal's receipt"),
    );
    assert_eq!(
        (r["outcome"].clone(), r["status"].clone()),
        (serde_json::json!("failed"), serde_json::json!(409))
    );
    assert_eq!(
        edit_card(&c, &b, &e1, "m-b2").await.0,
        200,
        "on top of a's edit"
    );
}
