//! Composition root: checks what must hold before anything starts (the admin token, a
//! private upgrade-socket directory), builds the components (store, hub, reload handle,
//! metrics, authorizer, polling tracker, safety controller, dashboard) and the runtime
//! handle the edges are given (`State`), the Pingora services (proxy listener, admin
//! listener, lifecycle background task) and runs them. With the Redis store, the lifecycle
//! task also shares presence with the other instances (`presence::share`). It supervises the
//! background tasks (one that fails ends the process, exit 70) and ends the process as soon
//! as a drain is done.

use crate::admin::snapshot::Dashboard;
use crate::admin::Admin;
use crate::config::{Config, StoreBackend};
use crate::control::{self, Controller};
use crate::hub::Hub;
use crate::listener::Front;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::reload::{self, ReloadHandle};
use crate::state::{Components, State};
use crate::store::memory::MemoryLog;
use crate::store::redis::RedisLog;
use crate::store::sqlite::SqliteLog;
use crate::store::EventLog;
use async_trait::async_trait;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Per-connection socket buffers (see `run`).
const L4_READ_BUFFER: usize = 0;
const L4_WRITE_BUFFER: usize = 1460;

/// Capacity of the hub's publish queue (events waiting for the sequencer).
const HUB_QUEUE: usize = 65_536;

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Store(String),
    #[error(
        "admin.listen is {addr}, which is not a loopback address, and no token is set: {hint}"
    )]
    AdminUnprotected { addr: String, hint: String },
    #[error(
        "admin.token_env names the environment variable {name}, which is unset, empty or blank: set {name} to a secret token (e.g. `export {name}=$(openssl rand -hex 32)`), or remove admin.token_env to run the admin listener on loopback without a token"
    )]
    AdminTokenMissing { name: String },
    #[error("shutdown.upgrade_sock ({path}): {why}")]
    UpgradeSock { path: String, why: String },
}

/// Whether `DISABLE_SSE_SYSTEM` asks for pure pass-through.
pub fn env_disabled() -> bool {
    std::env::var("DISABLE_SSE_SYSTEM")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

fn open_store(cfg: &Config) -> Result<Arc<dyn EventLog>, StartError> {
    match &cfg.store.backend {
        StoreBackend::Memory => Ok(Arc::new(MemoryLog::new(
            cfg.store.max_events,
            cfg.store.max_age,
        ))),
        StoreBackend::Sqlite { path } => {
            let log = SqliteLog::open(
                std::path::Path::new(path),
                cfg.store.durability,
                cfg.store.max_events,
                cfg.store.max_age,
            )
            .map_err(|e| StartError::Store(format!("store (sqlite at {path}): {e}")))?;
            tracing::info!(%path, epoch = &*log.epoch(), durability = ?cfg.store.durability,
                head = log.head(), "event log opened");
            Ok(Arc::new(log))
        }
        StoreBackend::Redis { url, prefix } => {
            let log = RedisLog::open(url, prefix, cfg.store.max_events, cfg.store.max_age)
                .map_err(|e| StartError::Store(format!("store (redis): {e}")))?;
            Ok(log)
        }
    }
}

/// Reads the admin token from the variable the config names; refuses to start when that
/// variable is unset, empty or blank (the admin would silently run unauthenticated), and
/// refuses to expose an unprotected admin listener beyond loopback. The token is read once:
/// `admin.token_env` is a restart-only key (a reload reports it, see `config::diff`).
fn admin_token(cfg: &Config) -> Result<Option<String>, StartError> {
    if let Some(name) = &cfg.admin.token_env {
        let token = std::env::var(name).unwrap_or_default().trim().to_owned();
        if token.is_empty() {
            return Err(StartError::AdminTokenMissing { name: name.clone() });
        }
        return Ok(Some(token));
    }
    if !cfg.admin.listen.ip().is_loopback() {
        return Err(StartError::AdminUnprotected {
            addr: cfg.admin.listen.to_string(),
            hint: "set admin.token_env to the name of an environment variable holding a secret token, or listen on 127.0.0.1".into(),
        });
    }
    Ok(None)
}

/// Makes sure the upgrade socket's directory is private: created with mode 0700 when
/// missing; refused when group- or world-writable or owned by another user (whoever can
/// write there can put their own socket in place and receive the listening sockets).
fn private_socket_dir(sock: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let dir = sock
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create the directory {}: {e}", dir.display()))?;
    }
    let meta = std::fs::metadata(dir)
        .map_err(|e| format!("cannot read the directory {}: {e}", dir.display()))?;
    let me = crate::sys::effective_uid();
    check_private_dir(dir, meta.is_dir(), meta.mode(), meta.uid(), me)
}

/// The rule of `private_socket_dir`, on what `stat` says.
fn check_private_dir(
    dir: &Path,
    is_dir: bool,
    mode: u32,
    owner: u32,
    me: u32,
) -> Result<(), String> {
    let fix = "use a private directory (mkdir -m 700), or leave shutdown.upgrade_sock out for the default";
    if !is_dir {
        return Err(format!("{} is not a directory; {fix}", dir.display()));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "the directory {} is writable by {} (mode {:o}): another user could put a socket there and receive the listening sockets; {fix}",
            dir.display(),
            if mode & 0o002 != 0 { "everyone" } else { "its group" },
            mode & 0o7777
        ));
    }
    if owner != me && owner != 0 {
        return Err(format!(
            "the directory {} belongs to another user (uid {owner}); {fix}",
            dir.display()
        ));
    }
    Ok(())
}

/// Background task: runs the hub's sequencer, the safety controller's loop and the dashboard
/// refresher, applies reloads (file watch, SIGHUP), turns Pingora's shutdown signal into a
/// drain the streams can see, and
/// ends the process as soon as the drain is done (Pingora itself would wait out the whole
/// grace period). Supervises what it runs: a background task that panics or ends takes the
/// process down (exit 70, logged) instead of leaving it half alive.
struct Lifecycle {
    state: Arc<State>,
    dashboard: Arc<Dashboard>,
    grace: Duration,
    /// With the Redis store: where presence is shared with the other instances.
    share: Option<crate::presence::share::Target>,
}

/// Exit code when a background task failed (EX_SOFTWARE).
const EXIT_TASK_FAILED: i32 = 70;
/// How often a drain looks whether anything is left.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// An early exit is not attempted this close to the end of the grace period (Pingora is
/// about to end the runtimes).
const DRAIN_MARGIN: Duration = Duration::from_millis(500);

#[async_trait]
impl BackgroundService for Lifecycle {
    async fn start(&self, shutdown: ShutdownWatch) {
        let state = self.state.clone();
        state
            .metrics
            .note_runtime(crate::metrics::Runtime::Lifecycle);
        // The sequencer outlives the drain so in-flight mutations still publish; it is
        // stopped (and finishes its queue) once nothing is in flight.
        let (hub_stop_tx, hub_stop_rx) = watch::channel(false);
        let hub = tokio::spawn(state.hub.clone().run(hub_stop_rx));
        // The safety controller stops at shutdown, like the reload loop.
        let safety = tokio::spawn(state.controller.clone().run(shutdown.clone()));
        // Presence frames are sent until shutdown (streams are told to reconnect then).
        let reload = state.reload.clone();
        let presence = state
            .presence
            .clone()
            .run(move || reload.current(), shutdown.clone());
        tokio::spawn(presence);
        // Learn mode's engine reads its queue until shutdown (not supervised: it only records).
        let reload = state.reload.clone();
        let learn = state.learn.clone();
        tokio::spawn(learn.run(move || reload.current().learn.clone(), shutdown.clone()));
        // With a shared store, presence is shared too (until shutdown: then this instance's
        // members are withdrawn, awaited before the process ends).
        let share = self.share.clone().map(|target| {
            let reload = state.reload.clone();
            let engine = state.presence.clone();
            let settings = move || reload.current();
            tokio::spawn(crate::presence::share::run(
                engine,
                target,
                settings,
                shutdown.clone(),
            ))
        });
        // The sampler has no stop signal of its own: it ends when this task's sender goes.
        let (sampler_stop_tx, mut sampler_stop_rx) = watch::channel(());
        let dashboard = self.dashboard.clone().run(state.clone());
        let sampler = tokio::spawn(async move {
            tokio::select! {
                _ = dashboard => {}
                _ = sampler_stop_rx.changed() => {}
            }
        });
        let control = tokio::spawn(control_loop(state.clone(), shutdown));
        let tasks = Tasks {
            hub,
            sampler,
            control,
            safety,
            share,
        };
        supervise(&state, self.grace, hub_stop_tx, tasks).await;
        drop(sampler_stop_tx);
    }
}

struct Tasks {
    hub: tokio::task::JoinHandle<()>,
    sampler: tokio::task::JoinHandle<()>,
    control: tokio::task::JoinHandle<()>,
    safety: tokio::task::JoinHandle<()>,
    /// Presence sharing (Redis store only): not supervised (presence is not worth a restart),
    /// awaited at the end so that it withdraws this instance's members.
    share: Option<tokio::task::JoinHandle<()>>,
}

/// Reloads on file changes and SIGHUP until Pingora signals shutdown (or its sender is
/// gone), then starts the drain and returns.
async fn control_loop(state: Arc<State>, mut shutdown: ShutdownWatch) {
    let (file_tx, mut file_rx) = mpsc::channel::<()>(1);
    let _watcher = match reload::watch_file(state.reload.path(), file_tx) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP or POST /admin/reload");
            None
        }
    };
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        tokio::select! {
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    state.start_drain();
                    return;
                }
            }
            Some(()) = file_rx.recv() => {
                tokio::time::sleep(reload::DEBOUNCE).await;
                while file_rx.try_recv().is_ok() {}
                state.reload("file").await;
            }
            Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                state.reload("SIGHUP").await;
            }
        }
    }
}

/// Logs a background task's failure and ends the process (after a bounded attempt to close
/// the event log cleanly).
async fn task_failed(state: &State, name: &str, r: Result<(), tokio::task::JoinError>) -> ! {
    match r {
        Err(e) if e.is_panic() => {
            tracing::error!(task = name, "background task panicked (see the panic above); exiting so the process can be restarted whole")
        }
        Err(e) => {
            tracing::error!(task = name, error = %e, "background task was cancelled; exiting")
        }
        Ok(()) => tracing::error!(task = name, "background task ended unexpectedly; exiting"),
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), state.hub.log().close()).await;
    crate::telemetry::shutdown();
    eprintln!("sse-sidecar: background task {name} failed; exiting with code {EXIT_TASK_FAILED}");
    std::process::exit(EXIT_TASK_FAILED)
}

/// Nothing left to wait for: no stream open, no request being answered.
fn idle(state: &State) -> bool {
    state.open_connections() == 0 && state.metrics.requests_in_flight.get() <= 0
}

/// Watches the tasks until the drain starts, then ends the process as soon as the drain is
/// done (or leaves the end to Pingora when the grace period runs out first).
async fn supervise(state: &State, grace: Duration, hub_stop: watch::Sender<bool>, t: Tasks) {
    let Tasks {
        mut hub,
        mut sampler,
        mut control,
        mut safety,
        share,
    } = t;
    let mut safety_stopped = false;
    loop {
        tokio::select! {
            r = &mut control => {
                if r.is_err() { task_failed(state, "lifecycle", r).await }
                break;
            }
            r = &mut hub => task_failed(state, "hub sequencer", r).await,
            r = &mut sampler => task_failed(state, "status sampler", r).await,
            // It returns at shutdown, as the reload loop does; a panic is a failure.
            r = &mut safety, if !safety_stopped => {
                if r.is_err() { task_failed(state, "safety controller", r).await }
                safety_stopped = true;
            }
        }
    }
    let deadline = tokio::time::Instant::now() + grace;
    let mut idle_checks = 0;
    while idle_checks < 2 {
        tokio::select! {
            _ = tokio::time::sleep(DRAIN_POLL) => {}
            r = &mut hub => task_failed(state, "hub sequencer", r).await,
            r = &mut sampler => task_failed(state, "status sampler", r).await,
        }
        idle_checks = if idle(state) { idle_checks + 1 } else { 0 };
        if tokio::time::Instant::now() + DRAIN_MARGIN >= deadline {
            // Pingora ends the runtimes after the grace period; keep the sender alive.
            std::future::pending::<()>().await;
        }
    }
    // Drained: the sequencer finishes its queue, the log is closed, the process ends.
    let _ = hub_stop.send(true);
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let _ = tokio::time::timeout(left, &mut hub).await;
    if let Some(share) = share {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let _ = tokio::time::timeout(left, share).await;
    }
    state.hub.log().close().await;
    tracing::info!("drained (no stream open, no request in flight): sse-sidecar stopped");
    crate::telemetry::shutdown();
    std::process::exit(0)
}

/// The components and the runtime handle given to the edges: the authorizer, the polling
/// tracker (wired to the hub's feed and gaps), the safety controller and the presence
/// engine.
fn runtime(
    reload: ReloadHandle,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    env_disabled: bool,
) -> Arc<State> {
    let reload = Arc::new(reload);
    let auth = crate::auth::Authorizer::new(
        reload.current().authorization.max_concurrent_checks,
        metrics.clone(),
    );
    // Events other instances derived reach this one through the shared log's feed: they
    // tick the topic clock here too, so shielding never vouches for a change they made.
    let polling = Arc::new(crate::polling::Tracker::new(100_000, metrics.clone()));
    let clock = polling.clone();
    hub.set_feed_hook(Box::new(move |e| clock.touch_event(&e.event)));
    // A gap (events lost here or on another instance) may hide changes from every clock.
    let shield = polling.clone();
    hub.set_gap_hook(Box::new(move || shield.force_all()));
    let controller = Controller::new(control::Parts {
        reload: reload.clone(),
        hub: hub.clone(),
        metrics: metrics.clone(),
        polling: polling.clone(),
        env_disabled,
    });
    State::new(Components {
        presence: crate::presence::Presence::new(metrics.clone()),
        learn: crate::learn::Learner::new(metrics.clone()),
        reload,
        hub,
        metrics,
        auth,
        polling,
        controller,
    })
}

/// What must hold before anything is opened: the admin token (when one is configured) and
/// a private upgrade-socket directory.
fn preflight(cfg: &Config) -> Result<Option<String>, StartError> {
    let token = admin_token(cfg)?;
    private_socket_dir(Path::new(&cfg.shutdown.upgrade_sock)).map_err(|why| {
        StartError::UpgradeSock {
            path: cfg.shutdown.upgrade_sock.clone(),
            why,
        }
    })?;
    Ok(token)
}

/// The proxy listener's service: the listener's front serves event streams on the socket
/// itself and hands every other request to Pingora's proxy (see `listener`).
fn front_service(
    conf: &Arc<ServerConf>,
    state: &Arc<State>,
    listen: &str,
) -> pingora::services::listening::Service<Front> {
    let proxy = Arc::new(pingora::proxy::http_proxy(
        conf,
        Proxy {
            state: state.clone(),
            own: Arc::new(crate::sse::Endpoints {
                state: state.clone(),
            }),
            turns: Default::default(),
        },
    ));
    let mut front = pingora::services::listening::Service::new(
        "sse-sidecar proxy".into(),
        Front {
            proxy,
            state: state.clone(),
        },
    );
    // Pingora's default read buffer is 64 KiB per connection; every stream would carry it.
    // Bodies are read into Pingora's own buffers anyway, so connections read unbuffered.
    front.add_listener(
        ListenerConfig::tcp(listen.to_string())
            .l4_buffer(L4BufferSettings::new(L4_READ_BUFFER, L4_WRITE_BUFFER)),
    );
    front
}

/// The admin listener's service: one thread, on `admin.listen`.
fn admin_service(
    conf: &Arc<ServerConf>,
    admin: Admin,
) -> pingora::services::listening::Service<pingora::proxy::HttpProxy<Admin>> {
    let listen = admin.listen.to_string();
    let mut service =
        pingora::proxy::http_proxy_service_with_name(conf, admin, "sse-sidecar admin");
    service.threads = Some(1);
    service.add_tcp(&listen);
    service
}

/// Where presence is shared with the other instances: the Redis store's; none for the
/// memory and SQLite stores (they serve one process, and so does presence).
fn share_target(cfg: &Config) -> Option<crate::presence::share::Target> {
    match &cfg.store.backend {
        StoreBackend::Redis { url, prefix } => Some(crate::presence::share::Target {
            url: url.clone(),
            prefix: prefix.clone(),
        }),
        StoreBackend::Memory | StoreBackend::Sqlite { .. } => None,
    }
}

/// Builds and runs the sidecar until it has shut down (SIGTERM, SIGINT), then closes the
/// event log cleanly.
pub fn run(config_path: PathBuf, cfg: Config, upgrade: bool) -> Result<(), StartError> {
    let metrics = Arc::new(Metrics::new());
    let token = preflight(&cfg)?;
    let log = open_store(&cfg)?;
    let hub = Hub::new(log.clone(), HUB_QUEUE, metrics.clone());
    let listen = cfg.listen.to_string();
    let admin_addr = cfg.admin.listen;
    let admin_listen = admin_addr.to_string();
    let allowed_hosts = cfg.admin.allowed_hosts.clone();
    let threads = cfg.threads;
    let grace = cfg.shutdown.grace_period.as_secs();
    let upgrade_sock = cfg.shutdown.upgrade_sock.clone();
    let disabled = env_disabled();
    if disabled {
        tracing::warn!("DISABLE_SSE_SYSTEM is set: pure pass-through, every client polls");
    }
    let store = log.clone();
    let no_auth_rules = cfg.authorization.rules.is_empty();
    let warnings = cfg.warnings.clone();
    let share = share_target(&cfg);
    let state = runtime(ReloadHandle::new(config_path, cfg), hub, metrics, disabled);
    let dashboard = Arc::new(Dashboard::default());

    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(grace),
        graceful_shutdown_timeout_seconds: Some(2),
        upgrade_sock,
        ..ServerConf::default()
    };
    // `--upgrade`: take the listening sockets over from the running process (which hands
    // them over on SIGQUIT and then drains), so a deploy drops no connection attempt.
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let front = front_service(&server.configuration, &state, &listen);
    let admin = Admin {
        state: state.clone(),
        token,
        listen: admin_addr,
        allowed_hosts,
        dashboard: dashboard.clone(),
    };
    let admin = admin_service(&server.configuration, admin);
    let grace = Duration::from_secs(grace);
    let lifecycle = Lifecycle {
        state,
        dashboard,
        grace,
        share,
    };
    let lifecycle = background_service("lifecycle", lifecycle);

    server.add_service(front);
    server.add_service(admin);
    server.add_service(lifecycle);
    tracing::info!(%listen, admin = %admin_listen, "sse-sidecar starting");
    for w in &warnings {
        tracing::warn!(at = %w.path, "config warning: {w}");
    }
    if no_auth_rules {
        tracing::warn!(
            "authorization has no rules: every topic is denied and every stream gets 403 (clients poll); add authorization.rules (see conf/sidecar.yaml)"
        );
    }
    server.run(pingora::server::RunArgs::default());
    close_store(store);
    crate::telemetry::shutdown();
    Ok(())
}

/// After the grace period, every runtime gone: flushes the log and marks the shutdown
/// clean. (A drain that finished early closed it already; closing twice is harmless.)
fn close_store(store: Arc<dyn EventLog>) {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(store.close()),
        Err(e) => tracing::error!(error = %e, "cannot close the event log cleanly"),
    }
    tracing::info!("sse-sidecar stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_upgrade_socket_directory_must_be_private() {
        let d = Path::new("/x");
        assert!(check_private_dir(d, true, 0o40700, 1000, 1000).is_ok());
        assert!(
            check_private_dir(d, true, 0o40755, 0, 1000).is_ok(),
            "root's /run"
        );
        for mode in [0o41777, 0o40777, 0o40770, 0o40730, 0o40702] {
            let e = check_private_dir(d, true, mode, 1000, 1000).expect_err("writable by others");
            assert!(e.contains("writable") && e.contains("upgrade_sock"), "{e}");
        }
        assert!(
            check_private_dir(d, true, 0o40700, 1001, 1000).is_err(),
            "another user's"
        );
        assert!(
            check_private_dir(d, false, 0o100600, 1000, 1000).is_err(),
            "a file"
        );
    }

    #[test]
    fn a_missing_directory_is_created_private_and_tmp_itself_is_refused() {
        let base = tempfile::tempdir().expect("tempdir");
        let sock = base.path().join("a/b/upgrade.sock");
        private_socket_dir(&sock).expect("created");
        let mode = std::fs::metadata(base.path().join("a/b"))
            .expect("dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "private: {mode:o}");
        let open = base.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        assert!(private_socket_dir(&open.join("upgrade.sock")).is_err());
        assert!(
            private_socket_dir(Path::new("/tmp/sse-sidecar-upgrade.sock")).is_err(),
            "the old default"
        );
    }
}
