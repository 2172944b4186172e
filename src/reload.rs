//! The hot-reload handle: the current config behind an `ArcSwap` (one `load_full()` per
//! request), a change signal for long-lived streams, and a bounded history of reloads.
//! Triggers: file watch (inotify via `notify`, watching the directory so editors that
//! replace the file are seen), SIGHUP, and the admin API. A reload validates the whole
//! file first; a bad file changes nothing (nor does one that makes the validator panic: it
//! is rejected like any other problem). `reload` reads and compiles on the caller's thread;
//! `reload_async` does both on tokio's blocking pool.

use crate::config::{self, diff, Config, Problem};
use crate::events::types::now_ms;
use arc_swap::ArcSwap;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How many reload records are kept for the status endpoint.
const HISTORY: usize = 20;

#[derive(Debug, Clone)]
pub enum ReloadOutcome {
    Applied {
        version: String,
        /// Changed keys that only take effect after a restart (reported, not applied).
        restart_required: Vec<&'static str>,
    },
    Unchanged,
    Rejected(Vec<Problem>),
}

impl ReloadOutcome {
    /// `applied`, `unchanged` or `rejected`.
    pub fn name(&self) -> &'static str {
        match self {
            ReloadOutcome::Applied { .. } => "applied",
            ReloadOutcome::Unchanged => "unchanged",
            ReloadOutcome::Rejected(_) => "rejected",
        }
    }
}

/// The span of one reload (exported only when telemetry is on).
fn reload_span(trigger: &str) -> crate::telemetry::Guard {
    let span = crate::telemetry::span("config.reload");
    span.attr("trigger", || trigger.to_owned());
    span
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadRecord {
    pub at_ms: u64,
    pub trigger: String,
    pub outcome: String,
    pub version: String,
    pub problems: Vec<String>,
    pub restart_required: Vec<String>,
}

pub struct ReloadHandle {
    path: PathBuf,
    current: ArcSwap<Config>,
    generation: watch::Sender<u64>,
    history: Mutex<VecDeque<ReloadRecord>>,
    loaded_at_ms: Mutex<u64>,
}

impl ReloadHandle {
    pub fn new(path: PathBuf, initial: Config) -> ReloadHandle {
        ReloadHandle {
            path,
            current: ArcSwap::from_pointee(initial),
            generation: watch::channel(0).0,
            history: Mutex::new(VecDeque::new()),
            loaded_at_ms: Mutex::new(now_ms()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The config in force. Take it once per request; never hold it across hours.
    pub fn current(&self) -> Arc<Config> {
        self.current.load_full()
    }

    /// Tells open streams to re-read what they derive from the config (breakers changed
    /// which families poll).
    pub fn touch(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Changes whenever a new config is applied.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    pub fn loaded_at_ms(&self) -> u64 {
        *self.loaded_at_ms.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn history(&self) -> Vec<ReloadRecord> {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn record(&self, r: ReloadRecord) {
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if h.len() >= HISTORY {
            h.pop_front();
        }
        h.push_back(r);
    }

    /// Reads, validates and (if valid and different) applies the file, on the caller's
    /// thread (the read and the schema compile block it).
    pub fn reload(&self, trigger: &str) -> ReloadOutcome {
        let span = reload_span(trigger);
        let old = self.current();
        let outcome = self.apply(old, load_guarded(&self.path), trigger);
        span.attr("outcome", || outcome.name());
        outcome
    }

    /// [`reload`](Self::reload) with the file read and compile on tokio's blocking pool, so
    /// an async caller (the admin handler, the SIGHUP and file-watch task) keeps its worker
    /// thread; only the swap and the record run on the caller.
    pub async fn reload_async(&self, trigger: &str) -> ReloadOutcome {
        let span = reload_span(trigger);
        let old = self.current();
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || load_guarded(&path))
            .await
            .unwrap_or_else(|e| {
                // `load_guarded` catches panics: only a cancelled task (the runtime shutting
                // down) gets here.
                Err(vec![Problem {
                    path: "(file)".into(),
                    message: format!("the reload did not finish: {e}"),
                    hint: Some("the previous config keeps running; reload again".into()),
                }])
            });
        let outcome = self.apply(old, loaded, trigger);
        span.attr("outcome", || outcome.name());
        outcome
    }

    /// Applies a loaded file if it is valid and differs from `old`, the config in force when
    /// the reload began (keeping the restart-only settings), then logs and records the
    /// outcome.
    fn apply(
        &self,
        old: Arc<Config>,
        loaded: Result<Config, Vec<Problem>>,
        trigger: &str,
    ) -> ReloadOutcome {
        let outcome = match loaded {
            Err(problems) => ReloadOutcome::Rejected(problems),
            Ok(new) if new.version == old.version => ReloadOutcome::Unchanged,
            Ok(mut new) => {
                let restart_required = diff::restart_required(&old, &new);
                diff::keep_restart_fields(&old, &mut new);
                let version = new.version.clone();
                self.current.store(Arc::new(new));
                *self.loaded_at_ms.lock().unwrap_or_else(|e| e.into_inner()) = now_ms();
                self.generation.send_modify(|g| *g += 1);
                ReloadOutcome::Applied {
                    version,
                    restart_required,
                }
            }
        };
        self.report(&outcome, trigger, &old.version);
        outcome
    }

    /// Logs an outcome and records it in the history (an unchanged file is not recorded).
    fn report(&self, outcome: &ReloadOutcome, trigger: &str, old_version: &str) {
        match outcome {
            ReloadOutcome::Applied {
                version,
                restart_required,
            } => {
                for w in &self.current().warnings {
                    tracing::warn!(at = %w.path, "config warning: {w}");
                }
                if restart_required.is_empty() {
                    tracing::info!(%trigger, %version, "config reloaded");
                } else {
                    tracing::warn!(%trigger, %version, restart_required = ?restart_required,
                        "config reloaded; these changes need a restart and were not applied");
                }
                self.record(ReloadRecord {
                    at_ms: now_ms(),
                    trigger: trigger.into(),
                    outcome: "applied".into(),
                    version: version.clone(),
                    problems: vec![],
                    restart_required: restart_required.iter().map(|s| s.to_string()).collect(),
                });
            }
            ReloadOutcome::Unchanged => {
                tracing::debug!(%trigger, "config unchanged");
            }
            ReloadOutcome::Rejected(problems) => {
                tracing::error!(%trigger, problems = problems.len(),
                    "config rejected; the previous config keeps running");
                for p in problems {
                    tracing::error!(%trigger, "config problem: {p}");
                }
                self.record(ReloadRecord {
                    at_ms: now_ms(),
                    trigger: trigger.into(),
                    outcome: "rejected".into(),
                    version: old_version.to_owned(),
                    problems: problems.iter().map(|p| p.to_string()).collect(),
                    restart_required: vec![],
                });
            }
        }
    }
}

/// Loads and validates the file; a panic inside (a validator bug) rejects the file like any
/// problem instead of killing the task that reloads, so the running config stays in force.
fn load_guarded(path: &Path) -> Result<Config, Vec<Problem>> {
    match std::panic::catch_unwind(|| config::load_file(path)) {
        Ok(Ok(cfg)) => Ok(cfg),
        Ok(Err(e)) => Err(e.problems()),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(vec![Problem {
                path: "(file)".into(),
                message: format!("the validator failed on this file (a bug in sse-sidecar): {what}"),
                hint: Some("the previous config keeps running; report this file, and check it with `sse-sidecar check`".into()),
            }])
        }
    }
}

/// Watches the config file's directory and sends a tick for each change to the file. The
/// watcher lives as long as the returned guard.
pub fn watch_file(
    path: &Path,
    tx: mpsc::Sender<()>,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let file_name = path.file_name().map(|n| n.to_os_string());
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if matches!(ev.kind, EventKind::Access(_)) {
            return;
        }
        let ours = ev
            .paths
            .iter()
            .any(|p| p.file_name().map(|n| n.to_os_string()) == file_name);
        if ours {
            // A full channel already holds a pending tick: nothing is lost.
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Debounce for file events: editors write in several steps.
pub const DEBOUNCE: Duration = Duration::from_millis(60);

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "tests write their config files and fixtures"
)]
mod tests {
    use super::*;

    const BASE: &str = "upstream: {address: \"127.0.0.1:1\"}\n";

    #[tokio::test]
    async fn reload_async_applies_rejects_and_keeps_restart_settings() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sidecar.yaml");
        std::fs::write(&path, BASE).expect("write");
        let handle = ReloadHandle::new(path.clone(), config::parse_str(BASE).expect("valid"));
        assert!(matches!(
            handle.reload_async("test").await,
            ReloadOutcome::Unchanged
        ));
        std::fs::write(
            &path,
            format!("{BASE}threads: 3\nsse: {{heartbeat_seconds: 7}}\n"),
        )
        .expect("write");
        match handle.reload_async("test").await {
            ReloadOutcome::Applied {
                restart_required, ..
            } => assert_eq!(restart_required, ["threads"]),
            other => panic!("not applied: {other:?}"),
        }
        let cfg = handle.current();
        assert_eq!(cfg.threads, 2, "restart-only: kept");
        assert_eq!(cfg.sse.heartbeat, Duration::from_secs(7), "hot: applied");
        std::fs::write(&path, "upstream: 5\n").expect("write");
        assert!(matches!(
            handle.reload_async("test").await,
            ReloadOutcome::Rejected(_)
        ));
        assert_eq!(
            handle.current().version,
            cfg.version,
            "a bad file changes nothing"
        );
        let outcomes: Vec<String> = handle.history().into_iter().map(|r| r.outcome).collect();
        assert_eq!(outcomes, ["applied", "rejected"]);
    }
}
