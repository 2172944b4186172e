//! Hot reload, phases and shadow mode, the kill switch (file and environment), SIGTERM
//! drain, and the `check` command: all on the real binary.

mod common;

use common::{data, echo, metric_value, Sidecar, SidecarOpts, SseClient, BIN};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(5);

fn config(enabled: bool, mode: &str) -> String {
    format!(
        r#"
upstream: {{address: "127.0.0.1:1"}}
sse: {{enabled: {enabled}, heartbeat_seconds: 1, retry_min_ms: 1000, retry_max_ms: 3000}}
shutdown: {{drain_window_seconds: 4, grace_period_seconds: 3}}
rollout: {{phase: 2}}
families:
  jobs:
    phase: 2
    mode: {mode}
    rules:
      - match: "POST /status/{{code}}"
        event: job.done
        topics: ["jobs"]
        data: {{code: "{{code}}"}}
event_types:
  job.done: {{family: jobs, schema: {{type: object, required: [code]}}}}
"#
    )
}

async fn open(sc: &Sidecar) -> SseClient {
    let mut s = SseClient::connect(&sc.url("/api/sse/events?topics=jobs"), None)
        .await
        .expect("connect");
    assert_eq!(s.status, 200);
    s.next_of("hello", T).await.expect("hello");
    s
}

async fn mutate(sc: &Sidecar) {
    let r = reqwest::Client::new()
        .post(sc.url("/status/201"))
        .send()
        .await
        .expect("mutation");
    assert_eq!(r.status(), 201);
}

async fn wait_metric(sc: &Sidecar, series: &str, at_least: f64) {
    common::wait_for(series, T, || async {
        (sc.metric(series).await.ok()? >= at_least).then_some(())
    })
    .await
    .expect("metric reached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_valid_files_rejects_bad_ones_and_keeps_streams() {
    let backend = echo::start().await;
    let up = backend.to_string();
    let sc = Sidecar::start(&config(true, "live"), &up)
        .await
        .expect("sidecar");
    let mut s = open(&sc).await;
    mutate(&sc).await;
    s.next_of("job.done", T).await.expect("live event");

    // A broken file is rejected whole; the old config keeps serving.
    sc.write_raw_config("upstream: [this is not valid\n")
        .expect("write");
    wait_metric(
        &sc,
        "sse_sidecar_config_reloads_total{outcome=\"rejected\"}",
        1.0,
    )
    .await;
    mutate(&sc).await;
    s.next_of("job.done", T)
        .await
        .expect("still live after a rejected reload");
    let status = sc.status().await.expect("status");
    let last = &status["reloads"]
        .as_array()
        .expect("history")
        .last()
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["outcome"], "rejected");
    assert!(last["problems"][0]
        .as_str()
        .is_some_and(|p| p.contains("(file)")));

    // A valid change (jobs to shadow) applies without dropping the open stream.
    sc.write_config(&config(true, "shadow"), &up)
        .expect("write");
    let control = s.next_of("control", T).await.expect("rollout control");
    assert_eq!(data(&control)["families"], serde_json::json!(["jobs"]));
    mutate(&sc).await;
    wait_metric(
        &sc,
        "sse_sidecar_events_shadow_total{family=\"jobs\",type=\"job.done\"}",
        1.0,
    )
    .await;
    let seen = s.collect_for(Duration::from_millis(1500)).await;
    assert!(
        seen.iter().all(|e| e.event != "job.done"),
        "shadow delivers nothing: {seen:?}"
    );
    assert!(!s.ended, "the stream survived both reloads");
    s.next_of("heartbeat", T).await.expect("still alive");

    // Back to live; the admin reload then finds nothing new.
    sc.write_config(&config(true, "live"), &up).expect("write");
    let control = s.next_of("control", T).await.expect("rollout control");
    assert_eq!(data(&control)["families"], serde_json::json!([]));
    mutate(&sc).await;
    s.next_of("job.done", T).await.expect("live again");
    let r: serde_json::Value = reqwest::Client::new()
        .post(sc.admin_url("/admin/reload"))
        .send()
        .await
        .expect("admin reload")
        .json()
        .await
        .expect("json");
    assert_eq!(r["outcome"], "unchanged");

    // A restart-only change is reported, not applied.
    let moved = config(true, "live") + "threads: 3\n";
    sc.write_config(&moved, &up).expect("write");
    wait_metric(
        &sc,
        "sse_sidecar_config_reloads_total{outcome=\"applied\"}",
        3.0,
    )
    .await;
    let status = sc.status().await.expect("status");
    let last = status["reloads"]
        .as_array()
        .and_then(|h| h.last().cloned())
        .unwrap_or_default();
    assert_eq!(last["restart_required"], serde_json::json!(["threads"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_switch_sends_every_stream_to_polling_within_a_second() {
    let backend = echo::start().await;
    let up = backend.to_string();
    let sc = Arc::new(
        Sidecar::start(&config(true, "live"), &up)
            .await
            .expect("sidecar"),
    );
    let mut streams = Vec::new();
    for _ in 0..50 {
        streams.push(open(&sc).await);
    }

    // Pass-through load that must see no failure while the switch is thrown.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let load = start_load(&sc, &stop, &ok, &failed);
    common::wait_for("load running", T, || async {
        (ok.load(Ordering::Relaxed) > 50).then_some(())
    })
    .await
    .expect("load");

    let written = Instant::now();
    sc.write_config(&config(false, "live"), &up).expect("write");
    let slowest = slowest_close(streams, written).await;
    assert!(
        slowest < Duration::from_secs(1),
        "all closed within 1 s of the write (slowest {slowest:?})"
    );

    let r = reqwest::get(sc.url("/api/sse/events?topics=jobs"))
        .await
        .expect("request");
    assert_eq!(r.status(), 204, "new streams refused with 204 while off");
    let st: serde_json::Value = sc.sse_status().await.expect("status");
    assert_eq!(st["mode"], "polling");
    assert_eq!(
        sc.metric("sse_sidecar_kill_switch").await.expect("metrics"),
        1.0
    );

    // Switched back on: clients may connect again.
    sc.write_config(&config(true, "live"), &up).expect("write");
    let mut s = common::wait_for("streams allowed again", T, || async {
        let s = SseClient::connect(&sc.url("/api/sse/events?topics=jobs"), None)
            .await
            .ok()?;
        (s.status == 200).then_some(s)
    })
    .await
    .expect("back on");
    s.next_of("hello", T).await.expect("hello");

    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.expect("load task");
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no pass-through request failed"
    );
    assert!(ok.load(Ordering::Relaxed) > 100);
}

/// Pass-through load: 4 workers posting until `stop`, counting answers echoed intact
/// (`ok`) and anything else (`failed`).
fn start_load(
    sc: &Arc<Sidecar>,
    stop: &Arc<AtomicBool>,
    ok: &Arc<AtomicUsize>,
    failed: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut load = Vec::new();
    for w in 0..4 {
        let (stop, ok, failed, sc) = (stop.clone(), ok.clone(), failed.clone(), sc.clone());
        load.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let r = client
                    .post(sc.url(&format!("/echo/{w}/{i}")))
                    .body(format!("payload {i}"))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => match r.text().await {
                        Ok(t) if t == format!("payload {i}") => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    },
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    load
}

/// Waits for every stream to end; each must have got control {mode: polling}. The slowest
/// close, counted from `written`.
async fn slowest_close(streams: Vec<SseClient>, written: Instant) -> Duration {
    let mut waits = Vec::new();
    for mut s in streams {
        waits.push(tokio::spawn(async move {
            let seen = s
                .wait_end(Duration::from_secs(3))
                .await
                .expect("stream closed");
            let closed = written.elapsed();
            let polling = seen
                .iter()
                .any(|e| e.event == "control" && data(e)["mode"] == "polling");
            (closed, polling)
        }));
    }
    let mut slowest = Duration::ZERO;
    for w in waits {
        let (closed, polling) = w.await.expect("join");
        assert!(polling, "every stream got control {{mode: polling}}");
        slowest = slowest.max(closed);
    }
    slowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_sse_system_forces_pass_through_from_the_start() {
    let backend = echo::start().await;
    let opts = SidecarOpts {
        env: vec![("DISABLE_SSE_SYSTEM".into(), "true".into())],
    };
    let sc = Sidecar::start_with(&config(true, "live"), &backend.to_string(), opts)
        .await
        .expect("sidecar");
    let r = reqwest::get(sc.url("/api/sse/events?topics=jobs"))
        .await
        .expect("request");
    assert_eq!(r.status(), 204);
    let st: serde_json::Value = sc.sse_status().await.expect("status");
    assert_eq!(st["mode"], "polling");
    mutate(&sc).await;
    let r = reqwest::get(sc.url("/echo/x")).await.expect("pass-through");
    assert_eq!(r.status(), 200);
    let text = sc.metrics().await.expect("metrics");
    assert_eq!(
        metric_value(
            &text,
            "sse_sidecar_events_derived_total{family=\"jobs\",type=\"job.done\"}"
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_spread_reconnect_advice_and_finishes_in_flight_requests() {
    let backend = echo::start().await;
    let mut sc = Sidecar::start(&config(true, "live"), &backend.to_string())
        .await
        .expect("sidecar");
    let mut streams = Vec::new();
    for _ in 0..20 {
        streams.push(open(&sc).await);
    }
    let slow_url = sc.url("/slow/1500");
    let slow =
        tokio::spawn(async move { reqwest::get(slow_url).await.map(|r| r.status().as_u16()) });
    common::wait_for("the slow request at the backend", T, || async {
        (echo::SLOW_IN_FLIGHT.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await
    .expect("in flight");
    sc.proc.signal("TERM");
    let mut retries = Vec::new();
    for s in &mut streams {
        let seen = s.wait_end(T).await.expect("stream closed on drain");
        let c = seen
            .iter()
            .find(|e| e.event == "control")
            .map(data)
            .expect("control frame");
        assert_eq!(c["mode"], "reconnect");
        let r = c["retry_ms"].as_u64().expect("retry_ms");
        assert!(
            (1000..=5000).contains(&r),
            "retry within [retry_min, retry_min + drain window]: {r}"
        );
        retries.push(r);
    }
    retries.sort_unstable();
    assert!(
        retries[retries.len() - 1] - retries[0] >= 500,
        "retries spread out: {retries:?}"
    );
    assert_eq!(
        slow.await.expect("join").expect("slow request"),
        200,
        "in-flight request finished"
    );
    let exit = sc.proc.wait_exit(Duration::from_secs(10));
    assert!(exit.is_some(), "process exits after the grace period");
}

#[test]
fn every_shipped_config_passes_check_and_a_broken_one_lists_its_problems() {
    let root = common::repo_root();
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("conf")).expect("conf/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let out = std::process::Command::new(BIN)
                .arg("check")
                .arg("--config")
                .arg(&path)
                .output()
                .expect("run check");
            assert!(
                out.status.success(),
                "{} fails check: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 2);
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(root.join("tests/fixtures/broken.yaml"))
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for path in [
        "listen:",
        "upstream.connect_timeout_ms:",
        "sse.heartbeat_seconds:",
        "sse.retry_min_ms:",
        "store.backend:",
        "families.cards.mode:",
        "families.cards.rules[0].event:",
        "families.cards.rules[0].topics[1]:",
        "families.cards.rules[0].invalidate[0]:",
        "families.cards.rules[1].match:",
        "families.cards.rules[1].event:",
        "event_types.card.updated.schema:",
        "typo_section:",
    ] {
        assert!(err.contains(path), "missing {path} in:\n{err}");
    }
    assert!(err.contains("hint:"));
    // Starting with it: a clear message, exit 2, no panic or backtrace.
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(root.join("tests/fixtures/broken.yaml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot start") && !err.contains("panicked") && !err.contains("backtrace")
    );
    let out = std::process::Command::new(BIN)
        .arg("--version")
        .output()
        .expect("version");
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = std::process::Command::new(BIN)
        .args(["--config", "/nonexistent.yaml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}
