//! Operations: Prometheus metrics that move under a scripted run, health and readiness
//! (drain, store failure), admin actions with and without the token, `/admin/publish`.

mod common;

use common::{data, echo, metric_value, Sidecar, SidecarOpts, SseClient};
use std::collections::HashMap;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

fn config(extra: &str) -> String {
    format!(
        r#"
upstream: {{address: "127.0.0.1:1"}}
rollout: {{phase: 1}}
families:
  jobs:
    phase: 1
    rules:
      - match: "POST /status/{{code}}"
        event: job.done
        topics: ["jobs"]
        data: {{code: "{{code}}", note: "{{query.note}}"}}
event_types:
  job.done:
    family: jobs
    schema: {{type: object, required: [code], properties: {{note: {{type: string, maxLength: 5}}}}}}
{extra}"#
    )
}

/// Parses a scrape with a Prometheus text-format parser; series keyed as rendered.
fn scrape(text: &str) -> HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let mut out = HashMap::new();
    for s in parsed.samples {
        let mut labels: Vec<_> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let key = format!("{}{{{}}}", s.metric, labels.join(","));
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => 0.0,
        };
        out.insert(key, v);
    }
    out
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_under_a_scripted_run() {
    let backend = echo::start().await;
    let sc = Sidecar::start(&config(""), &backend.to_string())
        .await
        .expect("sidecar");
    let before = scrape(&sc.metrics().await.expect("scrape"));
    let c = reqwest::Client::new();
    let (mut streams, _reset) = open_streams(&sc).await;
    for _ in 0..5 {
        assert_eq!(
            c.post(sc.url("/status/201?note=ok"))
                .send()
                .await
                .expect("mutation")
                .status(),
            201
        );
    }
    assert_eq!(
        c.post(sc.url("/status/201?note=toolong"))
            .send()
            .await
            .expect("mutation")
            .status(),
        201
    );
    for s in &mut streams {
        for _ in 0..5 {
            s.next_of("job.done", T).await.expect("event");
        }
    }
    let r = c
        .get(sc.url("/api/sse/events?topics=bad%20topic"))
        .send()
        .await
        .expect("bad");
    assert_eq!(r.status(), 400);
    metrics_grew(&sc, &before).await;
    kill_switch_moves_its_gauges(&sc, &c, &mut streams).await;
}

/// Three streams that said hello, and a fourth resumed from a malformed id (reset).
async fn open_streams(sc: &Sidecar) -> (Vec<SseClient>, SseClient) {
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut s = SseClient::connect(&sc.url("/api/sse/events?topics=jobs"), None)
            .await
            .expect("connect");
        s.next_of("hello", T).await.expect("hello");
        streams.push(s);
    }
    let mut reset = SseClient::connect(&sc.url("/api/sse/events?topics=jobs"), Some("garbage"))
        .await
        .expect("connect");
    reset.next_of("reset", T).await.expect("reset");
    (streams, reset)
}

/// After the scripted run: every series it should move grew, 5 events reached 4 streams.
async fn metrics_grew(sc: &Sidecar, before: &HashMap<String, f64>) {
    let mid = scrape(&sc.metrics().await.expect("scrape"));
    let up = |k: &str| get(&mid, k) > get(before, k);
    assert_eq!(get(&mid, "sse_sidecar_sse_connections{}"), 4.0);
    for k in [
        "sse_sidecar_sse_handshakes_total{outcome=accepted}",
        "sse_sidecar_sse_handshakes_total{outcome=bad_topics}",
        "sse_sidecar_events_derived_total{family=jobs,type=job.done}",
        "sse_sidecar_events_published_total{family=jobs}",
        "sse_sidecar_events_delivered_total{family=jobs,type=job.done}",
        "sse_sidecar_events_rejected_total{family=jobs,reason=schema_invalid}",
        "sse_sidecar_delivery_latency_seconds_count{}",
        "sse_sidecar_resets_total{reason=malformed_id}",
        "sse_sidecar_passthrough_requests_total{class=2xx}",
        "sse_sidecar_passthrough_duration_seconds_count{class=2xx}",
        "sse_sidecar_store_appends_total{}",
    ] {
        assert!(up(k), "{k} did not grow");
    }
    assert_eq!(
        get(
            &mid,
            "sse_sidecar_events_delivered_total{family=jobs,type=job.done}"
        ),
        20.0,
        "5 events x 4 streams"
    );
    assert!(mid.contains_key("sse_sidecar_queued_bytes{}"));
    assert_eq!(get(&mid, "sse_sidecar_kill_switch{}"), 0.0);
}

/// The kill switch moves its gauges, the reload counter, and closes the streams.
async fn kill_switch_moves_its_gauges(
    sc: &Sidecar,
    c: &reqwest::Client,
    streams: &mut [SseClient],
) {
    let r = c
        .post(sc.admin_url("/admin/kill-switch"))
        .header("content-type", "application/json")
        .body(r#"{"enabled": false, "reason": "drill"}"#)
        .send()
        .await
        .expect("kill");
    assert_eq!(r.status(), 200);
    for s in streams.iter_mut() {
        let seen = s.wait_end(T).await.expect("closed");
        assert!(seen
            .iter()
            .any(|e| e.event == "control" && data(e)["reason"] == "admin: drill"));
    }
    let off = scrape(&sc.metrics().await.expect("scrape"));
    assert_eq!(get(&off, "sse_sidecar_kill_switch{}"), 1.0);
    assert_eq!(get(&off, "sse_sidecar_degradation_level{}"), 3.0);
    assert!(get(&off, "sse_sidecar_stream_closes_total{reason=kill_switch}") >= 3.0);
    assert!(get(&off, "sse_sidecar_sse_connections{}") <= 1.0);
    // The admin switch survives a reload of the (unchanged) file.
    let r: serde_json::Value = c
        .post(sc.admin_url("/admin/reload"))
        .send()
        .await
        .expect("reload")
        .json()
        .await
        .expect("json");
    assert_eq!(r["outcome"], "unchanged");
    assert_eq!(sc.stream_status("jobs").await.expect("request"), 204);
    let r = c
        .post(sc.admin_url("/admin/kill-switch"))
        .header("content-type", "application/json")
        .body(r#"{"enabled": true}"#)
        .send()
        .await
        .expect("lift");
    assert_eq!(r.status(), 200);
    let on = scrape(&sc.metrics().await.expect("scrape"));
    assert_eq!(get(&on, "sse_sidecar_kill_switch{}"), 0.0);
    let status = sc.status().await.expect("status");
    let kinds: Vec<String> = status["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .map(|t| t["kind"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        kinds.iter().filter(|k| *k == "kill_switch").count() >= 2,
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_validates_against_the_registry() {
    let backend = echo::start().await;
    let sc = Sidecar::start(&config(""), &backend.to_string())
        .await
        .expect("sidecar");
    let c = reqwest::Client::new();
    let mut s = SseClient::connect(&sc.url("/api/sse/events?topics=jobs"), None)
        .await
        .expect("connect");
    s.next_of("hello", T).await.expect("hello");
    let ok = c
        .post(sc.admin_url("/admin/publish"))
        .header("content-type", "application/json")
        .body(r#"{"type": "job.done", "topics": ["jobs"], "data": {"code": "7"}}"#)
        .send()
        .await
        .expect("publish");
    assert_eq!(ok.status(), 202);
    let id = ok.json::<serde_json::Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let e = s.next_of("job.done", T).await.expect("delivered");
    assert_eq!(e.id, id);
    assert_eq!(data(&e)["data"]["code"], "7");
    let bad = c
        .post(sc.admin_url("/admin/publish"))
        .header("content-type", "application/json")
        .body(r#"{"type": "job.done", "topics": ["jobs"], "data": {"note": 5}}"#)
        .send()
        .await
        .expect("publish");
    assert_eq!(bad.status(), 422);
    let err = bad.json::<serde_json::Value>().await.expect("json")["error"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        err.contains("schema") && err.contains("code"),
        "schema error explained: {err}"
    );
    for (body, status) in [
        (r#"{"type": "nope", "topics": ["jobs"], "data": {}}"#, 422),
        (
            r#"{"type": "job.done", "topics": ["bad topic"], "data": {"code": "1"}}"#,
            400,
        ),
        (
            r#"{"type": "job.done", "topics": [], "data": {"code": "1"}}"#,
            400,
        ),
        ("not json", 400),
    ] {
        let r = c
            .post(sc.admin_url("/admin/publish"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("publish");
        assert_eq!(r.status().as_u16(), status, "{body}");
    }
}

/// Every admin action answers 401 without the token, with a wrong one, and with the bare
/// token (no `Bearer`).
async fn every_admin_action_refuses_a_missing_or_wrong_token(sc: &Sidecar, c: &reqwest::Client) {
    for (method, path) in [
        ("POST", "/admin/reload"),
        ("POST", "/admin/kill-switch"),
        ("GET", "/metrics"),
        ("GET", "/admin/status.json"),
        ("POST", "/admin/publish"),
    ] {
        for auth in [None, Some("Bearer wrong"), Some("s3cret-token")] {
            let mut r = c
                .request(method.parse().expect("method"), sc.admin_url(path))
                .body(r#"{"enabled": false}"#);
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            let resp = r.send().await.expect("request");
            assert_eq!(resp.status(), 401, "{method} {path} with {auth:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_actions_need_the_token_when_one_is_set() {
    let backend = echo::start().await;
    let opts = SidecarOpts {
        env: vec![("TEST_ADMIN_TOKEN".into(), "s3cret-token".into())],
    };
    let sc = Sidecar::start_with(
        &config("admin: {token_env: TEST_ADMIN_TOKEN}"),
        &backend.to_string(),
        opts,
    )
    .await
    .expect("sidecar");
    let c = reqwest::Client::new();
    every_admin_action_refuses_a_missing_or_wrong_token(&sc, &c).await;
    // Nothing changed.
    let st: serde_json::Value = sc.sse_status().await.expect("status");
    assert_eq!(st["mode"], "sse");
    let auth = "Bearer s3cret-token";
    let r = c
        .post(sc.admin_url("/admin/kill-switch"))
        .header("content-type", "application/json")
        .header("authorization", auth)
        .body(r#"{"enabled": false, "reason": "x"}"#)
        .send()
        .await
        .expect("kill");
    assert_eq!(r.status(), 200);
    let st: serde_json::Value = sc.sse_status().await.expect("status");
    assert_eq!(st["mode"], "polling");
    let r = c
        .post(sc.admin_url("/admin/reload"))
        .header("authorization", auth)
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 200);
    let m = c
        .get(sc.admin_url("/metrics"))
        .header("authorization", auth)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        !m.contains("s3cret-token"),
        "the token never appears in metrics"
    );
    assert!(!sc.log().contains("s3cret-token"), "nor in logs");
    // Health checks stay open for probes.
    assert_eq!(
        c.get(sc.admin_url("/healthz"))
            .send()
            .await
            .expect("healthz")
            .status(),
        200
    );
    assert_eq!(
        c.get(sc.admin_url("/readyz"))
            .send()
            .await
            .expect("readyz")
            .status(),
        200
    );
}

#[test]
fn a_non_loopback_admin_address_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.yaml");
    let port = common::free_port();
    std::fs::write(
        &path,
        format!("upstream: {{address: \"127.0.0.1:1\"}}\nlisten: \"127.0.0.1:{}\"\nadmin: {{listen: \"0.0.0.0:{port}\"}}\n", common::free_port()),
    )
    .expect("write");
    let out = std::process::Command::new(common::BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("token_env"),
        "{err}"
    );
    std::fs::write(
        &path,
        format!("upstream: {{address: \"127.0.0.1:1\"}}\nadmin: {{listen: \"0.0.0.0:{port}\", token_env: UNSET_TOKEN_VAR_X}}\n"),
    )
    .expect("write");
    let out = std::process::Command::new(common::BIN)
        .arg("--config")
        .arg(&path)
        .env_remove("UNSET_TOKEN_VAR_X")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("UNSET_TOKEN_VAR_X"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_goes_not_ready_while_draining() {
    let backend = echo::start().await;
    let mut sc = Sidecar::start(
        &config("shutdown: {grace_period_seconds: 3}"),
        &backend.to_string(),
    )
    .await
    .expect("sidecar");
    // A keep-alive admin connection opened before the drain keeps answering during it.
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");
    assert_eq!(
        c.get(sc.admin_url("/readyz"))
            .send()
            .await
            .expect("readyz")
            .status(),
        200
    );
    let mut s = SseClient::connect(&sc.url("/api/sse/events?topics=jobs"), None)
        .await
        .expect("connect");
    s.next_of("hello", T).await.expect("hello");
    sc.proc.signal("TERM");
    s.next_of("control", T).await.expect("drain control");
    let r = c.get(sc.admin_url("/readyz")).send().await;
    match r {
        Ok(r) => assert_eq!(r.status(), 503, "not ready while draining"),
        Err(e) => assert!(
            e.is_connect() || e.is_request(),
            "the listener stopped accepting: {e}"
        ),
    }
    assert!(sc.proc.wait_exit(Duration::from_secs(10)).is_some());
}

/// Fills a small tmpfs under the SQLite log so commits fail, then frees it. Needs root (mount);
/// CI runs as root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_goes_not_ready_while_the_store_cannot_write() {
    let Some(mnt) = common::Tmpfs::mount("4m") else {
        return;
    };
    let backend = echo::start().await;
    let store = format!(
        "store: {{backend: sqlite, path: \"{}/events.db\"}}",
        mnt.path().display()
    );
    let sc = Sidecar::start(&config(&store), &backend.to_string())
        .await
        .expect("sidecar");
    let c = reqwest::Client::new();
    assert_eq!(
        c.get(sc.admin_url("/readyz"))
            .send()
            .await
            .expect("readyz")
            .status(),
        200
    );
    mnt.fill();
    let ready = || async {
        for i in 0..20 {
            let _ = c
                .post(sc.url(&format!("/status/201?note={i}")))
                .send()
                .await;
        }
        c.get(sc.admin_url("/readyz"))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    };
    common::wait_for("readyz 503 with a full disk", T, || async {
        (ready().await == Some(503)).then_some(())
    })
    .await
    .expect("not ready");
    // Pass-through is unaffected.
    assert_eq!(
        c.get(sc.url("/echo/x"))
            .send()
            .await
            .expect("pass-through")
            .status(),
        200
    );
    mnt.free();
    common::wait_for("readyz 200 again", Duration::from_secs(10), || async {
        (ready().await == Some(200)).then_some(())
    })
    .await
    .expect("ready again");
    let _ = metric_value("", "");
}
