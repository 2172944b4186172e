//! No client left stale: Last-Event-ID replay, restarts (clean and kill -9) on the SQLite
//! log in both durability modes, resets with reasons, retention bounds, the page-load gap.

mod common;

use common::{data, echo, job_n, Sidecar, SseClient};
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn config(store: &str, extra: &str) -> String {
    format!(
        r#"
upstream: {{address: "127.0.0.1:1"}}
sse: {{heartbeat_seconds: 5, replay_max_events: 300, queue_max_bytes: 4194304}}
store: {store}
rollout: {{phase: 1}}
families:
  jobs:
    phase: 1
    rules:
      - match: "POST /status/{{code}}"
        event: job.done
        topics: ["t:{{query.t}}"]
        data: {{n: "{{query.n}}"}}
event_types:
  job.done: {{family: jobs, schema: {{type: object, required: [n]}}}}
{extra}"#
    )
}

fn sqlite(dir: &tempfile::TempDir, durability: &str) -> String {
    format!(
        "{{backend: sqlite, path: \"{}\", durability: {durability}, retention: {{max_events: 100000}}}}",
        dir.path().join("events.db").display()
    )
}

/// Sends mutation `n` on topic `t`; true when the backend acknowledged it (2xx).
async fn mutate(c: &reqwest::Client, sc: &Sidecar, t: &str, n: u64) -> bool {
    c.post(sc.url(&format!("/status/201?t={t}&n={n}")))
        .send()
        .await
        .map(|r| r.status().as_u16() == 201)
        .unwrap_or(false)
}

/// The numbers of up to `want` job events, read until the deadline.
async fn read_jobs(s: &mut SseClient, want: usize, timeout: Duration) -> Vec<u64> {
    s.collect_of("job.done", want, timeout)
        .await
        .iter()
        .map(job_n)
        .collect()
}

async fn open(sc: &Sidecar, topics: &str, last: Option<&str>) -> SseClient {
    let mut s = SseClient::connect(&sc.url(&format!("/api/sse/events?topics={topics}")), last)
        .await
        .expect("connect");
    assert_eq!(s.status, 200);
    s.next_of("hello", T).await.expect("hello");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_drops_off_gets_exactly_what_it_missed() {
    let backend = echo::start().await;
    let db = tempfile::tempdir().expect("tempdir");
    let sc = Sidecar::start(&config(&sqlite(&db, "relaxed"), ""), &backend.to_string())
        .await
        .expect("sidecar");
    let mut s = open(&sc, "t:a", None).await;
    let url = sc.url("");
    let publisher = tokio::spawn(async move {
        let c = reqwest::Client::new();
        for n in 0..500u64 {
            let t = if n % 2 == 0 { "a" } else { "b" };
            let ok = c
                .post(format!("{url}/status/201?t={t}&n={n}"))
                .send()
                .await
                .map(|r| r.status().as_u16() == 201)
                .unwrap_or(false);
            assert!(ok, "mutation {n}");
        }
    });
    // Read the first 40 events of topic a, then drop off mid-flow.
    let first = read_jobs(&mut s, 40, T).await;
    assert_eq!(first, (0..40).map(|i| i * 2).collect::<Vec<_>>());
    let last_id = s.last_id.clone().expect("an id");
    drop(s);
    // Stay away while at least 20 more events are stored, so the return needs a replay.
    let last_seq: u64 = last_id
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .expect("seq");
    let status_url = sc.url("/api/sse/status");
    common::wait_for("20 more events", T, || async {
        let v: Value = reqwest::get(&status_url).await.ok()?.json().await.ok()?;
        let head: u64 = v["head"].as_str()?.rsplit_once('-')?.1.parse().ok()?;
        (head >= last_seq + 20).then_some(())
    })
    .await
    .expect("events flowing");
    // Come back while events still flow (or just after): exactly the rest, in order.
    let mut s = open(&sc, "t:a", Some(&last_id)).await;
    publisher.await.expect("publisher");
    let rest = read_jobs(&mut s, 210, T).await;
    assert_eq!(
        rest,
        (40..250).map(|i| i * 2).collect::<Vec<_>>(),
        "missed events, in order, none twice"
    );
    let extra = s.collect_for(Duration::from_millis(300)).await;
    assert!(
        extra.iter().all(|e| e.event != "job.done"),
        "nothing more: {extra:?}"
    );
    assert!(
        sc.metric("sse_sidecar_replay_events_total")
            .await
            .expect("metrics")
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_restart_resumes_exactly() {
    let backend = echo::start().await;
    let db = tempfile::tempdir().expect("tempdir");
    let mut sc = Sidecar::start(&config(&sqlite(&db, "relaxed"), ""), &backend.to_string())
        .await
        .expect("sidecar");
    let c = reqwest::Client::new();
    let mut s = open(&sc, "t:a", None).await;
    for n in 0..10 {
        assert!(mutate(&c, &sc, "a", n).await);
    }
    assert_eq!(read_jobs(&mut s, 10, T).await.len(), 10);
    let last_id = s.last_id.clone().expect("id");
    drop(s);
    for n in 10..15 {
        assert!(mutate(&c, &sc, "a", n).await);
    }
    sc.restart("TERM").await.expect("restart");
    for n in 15..20 {
        assert!(mutate(&c, &sc, "a", n).await);
    }
    let mut s = open(&sc, "t:a", Some(&last_id)).await;
    assert_eq!(read_jobs(&mut s, 10, T).await, (10..20).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_strict_replays_every_acknowledged_event() {
    let backend = echo::start().await;
    let db = tempfile::tempdir().expect("tempdir");
    let mut sc = Sidecar::start(&config(&sqlite(&db, "strict"), ""), &backend.to_string())
        .await
        .expect("sidecar");
    let mut s = open(&sc, "t:a", None).await;
    let start_id = data(&s.next_of("heartbeat", T).await.expect("heartbeat"))["head"]
        .as_str()
        .expect("head")
        .to_owned();
    drop(s);
    // Mutations race a kill -9: every one acknowledged with 2xx must be replayable.
    let url = sc.url("");
    let acked = tokio::spawn(async move {
        let c = reqwest::Client::new();
        let mut acked = Vec::new();
        for n in 0..2000u64 {
            let r = c.post(format!("{url}/status/201?t=a&n={n}")).send().await;
            match r {
                Ok(r) if r.status().as_u16() == 201 => match r.bytes().await {
                    Ok(_) => acked.push(n),
                    Err(_) => break,
                },
                _ => break,
            }
        }
        acked
    });
    common::wait_for("some events stored", T, || async {
        (sc.status().await.ok()?["store"]["head"].as_str()? != start_id).then_some(())
    })
    .await
    .expect("progress");
    sc.restart("KILL").await.expect("restart after kill -9");
    let acked = acked.await.expect("join");
    assert!(!acked.is_empty());
    let mut s = open(&sc, "t:a", Some(&start_id)).await;
    let got = read_jobs(&mut s, acked.len(), T).await;
    assert!(
        acked.iter().all(|n| got.contains(n)),
        "every acknowledged event replayed: {} acked, {} replayed",
        acked.len(),
        got.len()
    );
    let mut sorted = got.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), got.len(), "no duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_relaxed_resets_instead_of_silence() {
    let backend = echo::start().await;
    let db = tempfile::tempdir().expect("tempdir");
    let mut sc = Sidecar::start(&config(&sqlite(&db, "relaxed"), ""), &backend.to_string())
        .await
        .expect("sidecar");
    let c = reqwest::Client::new();
    let mut s = open(&sc, "t:a", None).await;
    for n in 0..5 {
        assert!(mutate(&c, &sc, "a", n).await);
    }
    read_jobs(&mut s, 5, T).await;
    let last_id = s.last_id.clone().expect("id");
    drop(s);
    sc.restart("KILL").await.expect("restart");
    let mut s = open(&sc, "t:a", Some(&last_id)).await;
    let reset = s
        .next_of("reset", T)
        .await
        .expect("reset after an unclean restart");
    assert_eq!(data(&reset)["reason"], "unknown_epoch");
    // The stream goes on live after the reset.
    assert!(mutate(&c, &sc, "a", 99).await);
    assert_eq!(read_jobs(&mut s, 1, T).await, vec![99]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_carry_their_reason_and_no_id_breaks_the_server() {
    let backend = echo::start().await;
    let db = tempfile::tempdir().expect("tempdir");
    let store = format!(
        "{{backend: sqlite, path: \"{}\", retention: {{max_events: 50}}}}",
        db.path().join("events.db").display()
    );
    let sc = Sidecar::start(&config(&store, ""), &backend.to_string())
        .await
        .expect("sidecar");
    let c = reqwest::Client::new();
    let mut s = open(&sc, "t:a", None).await;
    for n in 0..400 {
        assert!(mutate(&c, &sc, "a", n).await);
    }
    assert_eq!(read_jobs(&mut s, 400, T).await.len(), 400);
    let epoch = sc.status().await.expect("status")["store"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    each_bad_id_gets_its_reset(&sc, &epoch).await;
    query_parameter_and_header(&sc, &epoch).await;
    hostile_ids_get_well_formed_answers(&sc).await;
    let r = reqwest::get(sc.admin_url("/healthz")).await.expect("alive");
    assert_eq!(r.status(), 200);
    let resets = sc.metrics().await.expect("metrics");
    for reason in [
        "malformed_id",
        "future_id",
        "unknown_epoch",
        "too_far_behind",
    ] {
        assert!(
            common::metric_value(
                &resets,
                &format!("sse_sidecar_resets_total{{reason=\"{reason}\"}}")
            ) >= 1.0
        );
    }
}

/// Each kind of unusable id gets a reset with its reason and the current head.
async fn each_bad_id_gets_its_reset(sc: &Sidecar, epoch: &str) {
    let mut cases = vec![
        ("garbage".to_string(), "malformed_id"),
        (format!("{epoch}-999999"), "future_id"),
        ("ffffffffffff-3".to_string(), "unknown_epoch"),
        (format!("{epoch}-50"), "too_far_behind"),
    ];
    for (id, reason) in cases.drain(..) {
        let mut s = open(sc, "t:a", Some(&id)).await;
        let r = s
            .next_of("reset", T)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(data(&r)["reason"], reason, "id {id:?}");
        assert!(data(&r)["head"]
            .as_str()
            .is_some_and(|h| h.starts_with(epoch)));
    }
}

/// The query parameter works too, and the header wins over it.
async fn query_parameter_and_header(sc: &Sidecar, epoch: &str) {
    let good = format!("{epoch}-399");
    let mut s = SseClient::connect(
        &sc.url(&format!("/api/sse/events?topics=t:a&lastEventId={good}")),
        None,
    )
    .await
    .expect("connect");
    s.next_of("hello", T).await.expect("hello");
    assert_eq!(
        read_jobs(&mut s, 1, Duration::from_secs(3)).await,
        vec![399]
    );
    let mut s = SseClient::connect(
        &sc.url("/api/sse/events?topics=t:a&lastEventId=garbage"),
        Some(&good),
    )
    .await
    .expect("connect");
    s.next_of("hello", T).await.expect("hello");
    assert_eq!(
        read_jobs(&mut s, 1, Duration::from_secs(3)).await,
        vec![399],
        "header wins"
    );
}

/// Hostile ids: never a panic, always a well-formed answer.
async fn hostile_ids_get_well_formed_answers(sc: &Sidecar) {
    for id in [
        "",
        " ",
        "-",
        "-1",
        "a-",
        "a--1",
        "ZZZ-1",
        "\u{7f}",
        "é-1",
        &"9".repeat(64),
        &"x".repeat(200),
        "1-18446744073709551616",
    ] {
        let r = reqwest::Client::new()
            .get(sc.url("/api/sse/events?topics=t:a"))
            .header("last-event-id", id.as_bytes())
            .timeout(Duration::from_millis(500))
            .send()
            .await;
        if let Ok(r) = r {
            assert_eq!(r.status(), 200, "{id:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_ids_get_a_reset_after_a_restart() {
    let backend = echo::start().await;
    let db = tempfile::tempdir().expect("tempdir");
    let path = db.path().join("events.db");
    let store = format!(
        "{{backend: sqlite, path: \"{}\", retention: {{max_events: 20}}}}",
        path.display()
    );
    let mut sc = Sidecar::start(&config(&store, ""), &backend.to_string())
        .await
        .expect("sidecar");
    let c = reqwest::Client::new();
    for n in 0..100 {
        assert!(mutate(&c, &sc, "a", n).await);
    }
    let epoch = sc.status().await.expect("status")["store"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    // A restart empties the in-memory tail, so replay must come from the trimmed table.
    sc.restart("TERM").await.expect("restart");
    let mut s = open(&sc, "t:a", Some(&format!("{epoch}-85"))).await;
    assert_eq!(
        read_jobs(&mut s, 15, T).await,
        (85..100).collect::<Vec<_>>()
    );
    let mut s = open(&sc, "t:a", Some(&format!("{epoch}-10"))).await;
    assert_eq!(
        data(&s.next_of("reset", T).await.expect("reset"))["reason"],
        "evicted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_store_bounded_under_sustained_load() {
    let backend = echo::start().await;
    let db = tempfile::tempdir().expect("tempdir");
    let path = db.path().join("events.db");
    let store = format!(
        "{{backend: sqlite, path: \"{}\", retention: {{max_events: 200}}}}",
        path.display()
    );
    let sc = Sidecar::start(&config(&store, ""), &backend.to_string())
        .await
        .expect("sidecar");
    let c = reqwest::Client::new();
    let rows = |p: &std::path::Path| -> i64 {
        rusqlite::Connection::open(p)
            .and_then(|conn| conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)))
            .unwrap_or(-1)
    };
    let mut max_seen = 0;
    for round in 0..6 {
        for n in 0..250 {
            assert!(mutate(&c, &sc, "b", round * 1000 + n).await);
        }
        let count = common::wait_for("retention to trim", T, || async {
            let n = rows(&path);
            (0..=200).contains(&n).then_some(n)
        })
        .await
        .expect("bounded");
        max_seen = max_seen.max(count);
    }
    assert!(max_seen <= 200);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(path.with_extension("db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    assert!(size < 8 << 20, "database and WAL stay small: {size} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_loads_then_connects_with_its_head_misses_nothing() {
    let backend = echo::start().await;
    let sc = Sidecar::start(&config("{backend: memory}", ""), &backend.to_string())
        .await
        .expect("sidecar");
    let c = reqwest::Client::new();
    assert!(mutate(&c, &sc, "a", 1).await);
    // The first event is published after its mutation's answer: wait until it is out.
    common::wait_for("the first event in the log", T, || async {
        let v = sc.sse_status().await.ok()?;
        v["head"].as_str()?.ends_with("-1").then_some(())
    })
    .await
    .expect("head at 1");
    // The page loads its data: the answer carries the head at that moment.
    let page = c.get(sc.url("/echo/page")).send().await.expect("page load");
    let head = page.headers()["x-sse-head"]
        .to_str()
        .expect("head")
        .to_owned();
    // A mutation lands between the page load and the stream connect.
    assert!(mutate(&c, &sc, "a", 2).await);
    let mut s = SseClient::connect(
        &sc.url(&format!("/api/sse/events?topics=t:a&lastEventId={head}")),
        None,
    )
    .await
    .expect("connect");
    s.next_of("hello", T).await.expect("hello");
    assert_eq!(
        read_jobs(&mut s, 1, T).await,
        vec![2],
        "the in-between mutation arrives, the earlier one does not"
    );
    let v: Value = sc.sse_status().await.expect("status");
    assert!(v["head"].as_str().is_some());
}
