//! Test harness: the real `sse-sidecar` binary on ephemeral ports, in front of a real HTTP
//! backend on 127.0.0.1 (the bundled Node legacy app, or an in-process echo server), read
//! with a real spec-following SSE parser. Every wait has a deadline; nothing sleeps a fixed
//! time hoping for the best.

#![allow(dead_code)]

pub mod echo;
pub mod presence;
pub mod redis_server;

use anyhow::{anyhow, bail, Context, Result};
use eventsource_stream::{Event as SseEvent, Eventsource};
use futures_util::{Stream, StreamExt};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sse-sidecar");

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A port the OS just handed out (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port")
}

/// Polls `f` until it returns `Some`, or fails after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status();
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bundled legacy app (`examples/legacy-app/server.js`) on an ephemeral port.
pub struct LegacyApp {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl LegacyApp {
    pub fn start() -> Result<LegacyApp> {
        let mut child = Command::new("node")
            .arg(repo_root().join("examples/legacy-app/server.js"))
            .args(["--port", "0", "--quiet"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting node examples/legacy-app/server.js (is node installed?)")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let url = line
            .trim()
            .strip_prefix("listening on http://")
            .ok_or_else(|| anyhow!("unexpected first line from the legacy app: {line:?}"))?;
        let addr: SocketAddr = url.parse()?;
        Ok(LegacyApp {
            proc: Proc {
                child,
                name: "legacy-app".into(),
            },
            addr,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// The sidecar binary with a config file written to a temp dir.
pub struct Sidecar {
    pub proc: Proc,
    env: Vec<(String, String)>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub port: u16,
    pub admin_port: u16,
    pub log_path: PathBuf,
}

#[derive(Default)]
pub struct SidecarOpts {
    pub env: Vec<(String, String)>,
}

/// Replaces the `listen`, `upstream.address` and `admin.listen` of a YAML config text.
pub fn with_addresses(yaml: &str, port: u16, upstream: &str, admin_port: u16) -> String {
    let mut v: serde_yaml::Value = serde_yaml::from_str(yaml).expect("test config is YAML");
    let m = v.as_mapping_mut().expect("mapping");
    m.insert("listen".into(), format!("127.0.0.1:{port}").into());
    let up = m
        .entry("upstream".into())
        .or_insert_with(|| serde_yaml::Value::Mapping(Default::default()));
    up.as_mapping_mut()
        .expect("upstream mapping")
        .insert("address".into(), upstream.into());
    let admin = m
        .entry("admin".into())
        .or_insert_with(|| serde_yaml::Value::Mapping(Default::default()));
    admin
        .as_mapping_mut()
        .expect("admin mapping")
        .insert("listen".into(), format!("127.0.0.1:{admin_port}").into());
    let sd = m
        .entry("shutdown".into())
        .or_insert_with(|| serde_yaml::Value::Mapping(Default::default()));
    let sd = sd.as_mapping_mut().expect("shutdown mapping");
    if !sd.contains_key("grace_period_seconds") {
        sd.insert("grace_period_seconds".into(), 1.into());
    }
    // Tests about other things subscribe freely: a config without an authorization section
    // gets one public catch-all rule (the sidecar itself denies every topic by default).
    if !m.contains_key("authorization") {
        let rules: serde_yaml::Value =
            serde_yaml::from_str("rules: [{topic: \"*\", public: true}]").expect("yaml");
        m.insert("authorization".into(), rules);
    }
    serde_yaml::to_string(&v).expect("serializable")
}

impl Sidecar {
    /// Starts the sidecar with `yaml` (addresses replaced) in front of `upstream`.
    pub async fn start(yaml: &str, upstream: &str) -> Result<Sidecar> {
        Self::start_with(yaml, upstream, SidecarOpts::default()).await
    }

    pub async fn start_with(yaml: &str, upstream: &str, opts: SidecarOpts) -> Result<Sidecar> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let admin_port = free_port();
        let config_path = dir.path().join("sidecar.yaml");
        std::fs::write(
            &config_path,
            with_addresses(yaml, port, upstream, admin_port),
        )?;
        let log_path = dir.path().join("sidecar.log");
        let proc = Self::spawn(&config_path, &log_path, &opts.env)?;
        let mut sc = Sidecar {
            proc,
            env: opts.env,
            dir,
            config_path,
            port,
            admin_port,
            log_path,
        };
        sc.wait_ready().await?;
        Ok(sc)
    }

    fn spawn(config_path: &Path, log_path: &Path, env: &[(String, String)]) -> Result<Proc> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)?;
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(config_path)
            .env("RUST_LOG", "info")
            .env_remove("DISABLE_SSE_SYSTEM")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("starting sse-sidecar")?;
        Ok(Proc {
            child,
            name: "sse-sidecar".into(),
        })
    }

    /// Stops the process (`TERM` for a graceful drain, `KILL` for a crash) and starts it
    /// again on the same ports, config and store.
    pub async fn restart(&mut self, signal: &str) -> Result<()> {
        self.proc.signal(signal);
        if self.proc.wait_exit(Duration::from_secs(15)).is_none() {
            bail!("sidecar did not exit after {signal}");
        }
        // The listener may linger for a moment after exit; the new process retries binding
        // through the readiness wait.
        self.proc = Self::spawn(&self.config_path, &self.log_path, &self.env)?;
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let client = reqwest::Client::new();
        let health = self.admin_url("/healthz");
        let probe = format!("http://127.0.0.1:{}/api/sse/status", self.port);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.proc.child.try_wait() {
                bail!("sidecar exited early ({status}); log:\n{}", self.log());
            }
            let a = client
                .get(&health)
                .send()
                .await
                .map(|r| r.status().is_success());
            let b = client
                .get(&probe)
                .send()
                .await
                .map(|r| r.status().is_success());
            if matches!((a, b), (Ok(true), Ok(true))) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("sidecar not ready in 15 s; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Rewrites the config file (addresses kept) the way an operator's editor would.
    pub fn write_config(&self, yaml: &str, upstream: &str) -> Result<()> {
        let text = with_addresses(yaml, self.port, upstream, self.admin_port);
        let tmp = self.dir.path().join("sidecar.yaml.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.config_path)?;
        Ok(())
    }

    /// Writes raw text (possibly invalid) as the config file.
    pub fn write_raw_config(&self, text: &str) -> Result<()> {
        std::fs::write(&self.config_path, text)?;
        Ok(())
    }

    pub async fn metrics(&self) -> Result<String> {
        Ok(reqwest::get(self.admin_url("/metrics"))
            .await?
            .text()
            .await?)
    }

    /// The value of one series (`name{labels}` as rendered), 0 when absent.
    pub async fn metric(&self, series: &str) -> Result<f64> {
        let text = self.metrics().await?;
        Ok(metric_value(&text, series))
    }

    /// `GET /api/sse/status` on the public listener.
    pub async fn sse_status(&self) -> Result<serde_json::Value> {
        Ok(reqwest::get(self.url("/api/sse/status"))
            .await?
            .json()
            .await?)
    }

    /// The status a new stream request for `topics` gets (the response is dropped).
    pub async fn stream_status(&self, topics: &str) -> Result<u16> {
        let url = self.url(&format!("/api/sse/events?topics={topics}"));
        Ok(reqwest::get(url).await?.status().as_u16())
    }

    pub async fn status(&self) -> Result<serde_json::Value> {
        Ok(reqwest::get(self.admin_url("/admin/status.json"))
            .await?
            .json()
            .await?)
    }
}

/// Finds `series` (exact name and labels) in Prometheus text.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

type EventStream = Pin<Box<dyn Stream<Item = Result<SseEvent, String>> + Send>>;

/// A stream read by `eventsource-stream`, a parser that follows the SSE spec.
pub struct SseClient {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    stream: Option<EventStream>,
    pub last_id: Option<String>,
    pub ended: bool,
}

/// The `n` of a `job.done` test event (`data.n`, sent as a string), `u64::MAX` if absent.
pub fn job_n(e: &SseEvent) -> u64 {
    data(e)["data"]["n"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Parsed data of an event.
pub fn data(e: &SseEvent) -> serde_json::Value {
    serde_json::from_str(&e.data).unwrap_or(serde_json::Value::Null)
}

impl SseClient {
    pub async fn connect(url: &str, last_id: Option<&str>) -> Result<SseClient> {
        Self::connect_with(url, last_id, &[]).await
    }

    pub async fn connect_with(
        url: &str,
        last_id: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<SseClient> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()?;
        let mut req = client.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_id {
            req = req.header("last-event-id", id);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let resp_headers = resp.headers().clone();
        let stream: Option<EventStream> = if status == 200 {
            Some(Box::pin(
                resp.bytes_stream()
                    .eventsource()
                    .map(|r| r.map_err(|e| e.to_string())),
            ))
        } else {
            None
        };
        Ok(SseClient {
            status,
            headers: resp_headers,
            stream,
            last_id: last_id.map(str::to_owned),
            ended: status != 200,
        })
    }

    /// The next event, or `None` when the stream ended or `timeout` passed.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let stream = self.stream.as_mut()?;
        match tokio::time::timeout(timeout, stream.next()).await {
            Ok(Some(Ok(ev))) => {
                if !ev.id.is_empty() {
                    self.last_id = Some(ev.id.clone());
                }
                Some(ev)
            }
            Ok(Some(Err(_))) | Ok(None) => {
                self.ended = true;
                self.stream = None;
                None
            }
            Err(_) => None,
        }
    }

    /// Reads until an event of type `name` arrives (skipping others), within `timeout`.
    pub async fn next_of(&mut self, name: &str, timeout: Duration) -> Result<SseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("no {name:?} event within {timeout:?}");
            }
            match self.next(left).await {
                Some(e) if e.event == name => return Ok(e),
                Some(_) => {}
                None if self.ended => bail!("stream ended before a {name:?} event"),
                None => {}
            }
        }
    }

    /// Reads until `want` events named `name` arrived (others skipped), the stream ended or
    /// `timeout` passed; returns those events.
    pub async fn collect_of(
        &mut self,
        name: &str,
        want: usize,
        timeout: Duration,
    ) -> Vec<SseEvent> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while got.len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.ended {
                break;
            }
            if let Some(e) = self.next(left).await {
                if e.event == name {
                    got.push(e);
                }
            }
        }
        got
    }

    /// Collects every event other than heartbeats for `window`.
    pub async fn collect_for(&mut self, window: Duration) -> Vec<SseEvent> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.ended {
                return out;
            }
            if let Some(e) = self.next(left).await {
                if e.event != "heartbeat" {
                    out.push(e);
                }
            }
        }
    }

    /// Waits until the server ends the stream.
    pub async fn wait_end(&mut self, timeout: Duration) -> Result<Vec<SseEvent>> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while !self.ended {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("stream still open after {timeout:?}");
            }
            if let Some(e) = self.next(left).await {
                seen.push(e);
            }
        }
        Ok(seen)
    }
}

/// The smallest config with one live family: `POST /status/{code}` derives `job.done` on the
/// topic `jobs` (data `{code}`). `extra` is more top-level YAML (sections not named here).
pub fn jobs_config(extra: &str) -> String {
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
        data: {{code: "{{code}}"}}
event_types:
  job.done: {{family: jobs, schema: {{type: object}}}}
{extra}
"#
    )
}

/// Reads a config fixture from the repo.
pub fn conf(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).expect("config fixture")
}

/// The demo config with `rollout.phase` and families untouched.
pub fn demo_config() -> String {
    conf("conf/demo.yaml")
}

/// A small tmpfs mounted for a test (to make a disk fill up on purpose), unmounted on drop.
/// `None` when mounting is not allowed (it needs root; CI runs as root).
pub struct Tmpfs {
    pub dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("SKIPPED: mounting a tmpfs needs root");
            return None;
        }
        Some(Tmpfs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with a file that `free` removes.
    pub fn fill(&self) {
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k", "count=1000"])
            .arg(format!("of={}", self.path().join("filler").display()))
            .stderr(Stdio::null())
            .status();
    }

    pub fn free(&self) {
        let _ = std::fs::remove_file(self.path().join("filler"));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The metric families of a scrape, by `# TYPE` line: name → type.
pub fn scraped_families(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

/// Whether `name` (a histogram's `_bucket`, `_sum`, `_count` counting as the histogram) is
/// among the scraped families.
pub fn scraped(families: &std::collections::BTreeMap<String, String>, name: &str) -> bool {
    if families.contains_key(name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|base| families.get(base).is_some_and(|t| t == "histogram"))
    })
}
