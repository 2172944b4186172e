//! The process as a whole, on the real binary: SIGTERM ends it as soon as the drain is done
//! (not after the whole grace period) yet waits for requests in flight; a validator panic on
//! reload leaves it whole; no colour codes in a log that is not a terminal; the upgrade
//! socket lives in a private directory, and a zero-downtime upgrade still hands the
//! listeners over; /metrics carries the process series and tokio's runtime series of each
//! runtime (busy time grows under traffic).

mod common;

use common::{echo, Sidecar, SseClient, BIN};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(5);

fn config(extra: &str) -> String {
    common::jobs_config(extra)
}

async fn open(sc: &Sidecar) -> SseClient {
    let mut s = SseClient::connect(&sc.url("/api/sse/events?topics=jobs"), None)
        .await
        .expect("connect");
    assert_eq!(s.status, 200);
    s.next_of("hello", T).await.expect("hello");
    s
}

/// Waits for the stream's drain advice: `control {mode: "reconnect"}`, then the end.
async fn goodbye(s: &mut SseClient) {
    let seen = s.wait_end(T).await.expect("stream closed on drain");
    let c = seen
        .iter()
        .find(|e| e.event == "control")
        .map(common::data)
        .expect("control frame");
    assert_eq!(c["mode"], "reconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_nothing_in_flight_exits_long_before_the_grace_period() {
    let backend = echo::start().await;
    let mut sc = Sidecar::start(
        &config("shutdown: {grace_period_seconds: 30, drain_window_seconds: 2}"),
        &backend.to_string(),
    )
    .await
    .expect("sidecar");
    let mut s = open(&sc).await;
    let t0 = Instant::now();
    sc.proc.signal("TERM");
    goodbye(&mut s).await;
    let exit = sc.proc.wait_exit(Duration::from_secs(10));
    let took = t0.elapsed();
    let status = exit.expect("exited well before the 30 s grace period");
    assert!(status.success(), "clean exit: {status}");
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after SIGTERM"
    );
    assert!(sc.log().contains("drained"), "log says why:\n{}", sc.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_still_waits_for_a_request_in_flight() {
    let backend = echo::start().await;
    let mut sc = Sidecar::start(
        &config("shutdown: {grace_period_seconds: 30}"),
        &backend.to_string(),
    )
    .await
    .expect("sidecar");
    let mut s = open(&sc).await;
    let slow_url = sc.url("/slow/2500");
    let slow = tokio::spawn(async move {
        let r = reqwest::get(slow_url).await?;
        let status = r.status().as_u16();
        r.text().await?;
        Ok::<_, reqwest::Error>((status, Instant::now()))
    });
    common::wait_for("the slow request at the backend", T, || async {
        (echo::SLOW_IN_FLIGHT.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await
    .expect("in flight");
    let t0 = Instant::now();
    sc.proc.signal("TERM");
    goodbye(&mut s).await;
    let (status, answered) = slow.await.expect("join").expect("slow request answered");
    assert_eq!(status, 200, "the in-flight request finished");
    assert!(
        answered.duration_since(t0) >= Duration::from_secs(1),
        "the request really was in flight across the drain"
    );
    let exit = sc.proc.wait_exit(Duration::from_secs(10));
    assert!(
        exit.is_some_and(|s| s.success()),
        "clean exit soon after: {exit:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let backend = echo::start().await;
    let sc = Sidecar::start(&config(""), &backend.to_string())
        .await
        .expect("sidecar");
    let _ = reqwest::get(sc.url("/echo/x")).await;
    let log = sc.log();
    assert!(log.contains("sse-sidecar starting"), "log:\n{log}");
    assert!(
        !log.contains("\x1b["),
        "escape codes in a piped log:\n{log:?}"
    );
}

/// A file that made the validator panic (a byte slice inside a character) killed the
/// reloading task: no more reloads, and SIGTERM no longer drained. Now the file is
/// rejected like any other problem and the process stays whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_panic_on_reload_rejects_the_file_and_the_process_stays_whole() {
    let backend = echo::start().await;
    let upstream = backend.to_string();
    let mut sc = Sidecar::start(&config(""), &upstream)
        .await
        .expect("sidecar");
    let mut s = open(&sc).await;
    sc.write_config(
        &config("sse: {allowed_origins: [\"http://\u{e9}x.example\"]}"),
        &upstream,
    )
    .expect("write");
    common::wait_for("the reload rejected", T, || async {
        let st = sc.status().await.ok()?;
        st["reloads"]
            .as_array()?
            .iter()
            .any(|r| r["outcome"] == "rejected")
            .then_some(())
    })
    .await
    .expect("rejected");
    // Still reloading: a good file is applied.
    sc.write_config(&config("sse: {heartbeat_seconds: 7}"), &upstream)
        .expect("write");
    common::wait_for("the good file applied", T, || async {
        let st = sc.status().await.ok()?;
        st["reloads"]
            .as_array()?
            .iter()
            .any(|r| r["outcome"] == "applied")
            .then_some(())
    })
    .await
    .expect("applied");
    // And still draining on SIGTERM.
    sc.proc.signal("TERM");
    goodbye(&mut s).await;
    assert!(sc.proc.wait_exit(Duration::from_secs(10)).is_some());
}

/// Runs the binary until it exits (killed after 10 s): exit code and stderr.
fn run_to_exit(config_path: &std::path::Path) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(BIN)
        .arg("--config")
        .arg(config_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let _ = child.wait();
    (code, err)
}

#[test]
fn an_upgrade_socket_in_a_directory_others_can_write_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sidecar.yaml");
    let yaml = common::with_addresses(
        &config("shutdown: {upgrade_sock: /tmp/sse-sidecar-upgrade.sock}"),
        common::free_port(),
        "127.0.0.1:1",
        common::free_port(),
    );
    std::fs::write(&path, yaml).expect("write");
    let (code, err) = run_to_exit(&path);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("shutdown.upgrade_sock") && err.contains("writable"),
        "{err}"
    );
}

/// `--upgrade` + SIGQUIT: the new process receives the listening sockets through the
/// (private) upgrade socket and serves; the old one exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_downtime_upgrade_hands_the_listeners_over() {
    let backend = echo::start().await;
    let sock_dir = tempfile::tempdir().expect("tempdir");
    let sock = sock_dir.path().join("upgrade.sock");
    let mut old = Sidecar::start(
        &config(&format!(
            "shutdown: {{upgrade_sock: \"{}\"}}",
            sock.display()
        )),
        &backend.to_string(),
    )
    .await
    .expect("sidecar");
    let log = std::fs::File::create(old.dir.path().join("new.log")).expect("log");
    let new = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&old.config_path)
        .arg("--upgrade")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the new process");
    let mut new = common::Proc {
        child: new,
        name: "new".into(),
    };
    common::wait_for(
        "the new process waiting on the upgrade socket",
        T,
        || async { sock.exists().then_some(()) },
    )
    .await
    .expect("socket");
    old.proc.signal("QUIT");
    let new_pid = new.pid() as u32;
    let c = reqwest::Client::new();
    let url = old.url("/echo/x");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let old_gone = old.proc.child.try_wait().ok().flatten().is_some();
        let served = match c.get(&url).send().await {
            Ok(r) => r.status() == 200,
            Err(_) => false,
        };
        if old_gone && served {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old exited: {old_gone}, new serves: {served}; old log:\n{}",
            old.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        new.child.try_wait().expect("wait").is_none(),
        "new process {new_pid} alive"
    );
    let st: serde_json::Value = c
        .get(old.admin_url("/admin/status.json"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert!(st["uptime_seconds"].is_number());
    new.signal("TERM");
    assert!(new.wait_exit(Duration::from_secs(10)).is_some());
}

/// `/metrics` carries the process series under their conventional names, and they describe
/// this process: its resident memory is non-zero, its open fds include the listeners, and it
/// started within the test's lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_the_process_series_of_the_sidecar_itself() {
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let backend = echo::start().await;
    let sc = Sidecar::start(&config(""), &backend.to_string())
        .await
        .expect("sidecar");
    let text = sc.metrics().await.expect("metrics");
    let rss = common::metric_value(&text, "process_resident_memory_bytes");
    assert!(rss > 1e6, "resident memory {rss} in:\n{text}");
    assert!(
        common::metric_value(&text, "process_open_fds") >= 3.0,
        "{text}"
    );
    assert!(
        common::metric_value(&text, "process_max_fds") > 0.0,
        "{text}"
    );
    let started = common::metric_value(&text, "process_start_time_seconds");
    assert!(
        started >= before - 2.0,
        "start time {started} before the test began ({before})"
    );
    assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
    assert!(
        !text.contains("sse_sidecar_process_"),
        "process series are not prefixed"
    );
}

/// The sum of a series' samples whose labels include `label` (e.g. `runtime="proxy"`).
fn labelled(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

/// `/metrics` carries tokio's runtime series for each of the sidecar's runtimes (proxy,
/// admin, lifecycle), and the proxy runtime's busy time grows while it serves traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_the_tokio_runtime_series_and_busy_time_grows_under_traffic() {
    let backend = echo::start().await;
    let sc = Sidecar::start(&config("threads: 2"), &backend.to_string())
        .await
        .expect("sidecar");
    let mut s = open(&sc).await;
    let before = sc.metrics().await.expect("metrics");
    let busy = "sse_sidecar_tokio_worker_busy_seconds_total";
    for rt in ["proxy", "admin", "lifecycle"] {
        let label = format!("runtime=\"{rt}\"");
        for name in [
            "sse_sidecar_tokio_workers",
            "sse_sidecar_tokio_alive_tasks",
            "sse_sidecar_tokio_global_queue_depth",
            busy,
            "sse_sidecar_tokio_worker_park_total",
        ] {
            assert!(
                labelled(&before, name, &label).is_some(),
                "{name}{{{label}}} missing in:\n{before}"
            );
        }
    }
    assert_eq!(
        labelled(&before, "sse_sidecar_tokio_workers", "runtime=\"proxy\""),
        Some(2.0),
        "threads: 2"
    );
    assert_eq!(
        labelled(&before, "sse_sidecar_tokio_workers", "runtime=\"admin\""),
        Some(1.0)
    );
    let proxy_busy = |t: &str| labelled(t, busy, "runtime=\"proxy\"").unwrap_or(0.0);
    let c = reqwest::Client::new();
    for i in 0..200 {
        let r = c
            .post(sc.url(&format!("/status/{}", 200 + i % 2)))
            .send()
            .await
            .expect("post");
        assert!(r.status().is_success());
    }
    s.next_of("job.done", T)
        .await
        .expect("an event reached the stream");
    let grown = common::wait_for("proxy busy time to grow", T, || async {
        let after = sc.metrics().await.ok()?;
        (proxy_busy(&after) > proxy_busy(&before)).then_some(after)
    })
    .await
    .expect("busy seconds grew");
    assert!(
        labelled(
            &grown,
            "sse_sidecar_tokio_alive_tasks",
            "runtime=\"lifecycle\""
        )
        .is_some_and(|n| n >= 1.0),
        "the lifecycle runtime runs its tasks:\n{grown}"
    );
}
