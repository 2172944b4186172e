//! Composition root: builds the state (store, hub, reload handle, metrics), the Pingora
//! services (proxy listener, admin listener, lifecycle background task) and runs them.

use crate::admin::Admin;
use crate::config::{Config, StoreBackend};
use crate::events::hub::Hub;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::reload::{self, ReloadHandle};
use crate::sse::front::Front;
use crate::state::State;
use crate::store::memory::MemoryLog;
use crate::store::redis::RedisLog;
use crate::store::sqlite::SqliteLog;
use crate::store::EventLog;
use async_trait::async_trait;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use std::path::PathBuf;
use std::sync::Arc;
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

/// Reads the admin token from the variable the config names; refuses to expose an
/// unprotected admin listener beyond loopback.
fn admin_token(cfg: &Config) -> Result<Option<String>, StartError> {
    let token = cfg
        .admin
        .token_env
        .as_ref()
        .and_then(|name| std::env::var(name).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    if token.is_none() && !cfg.admin.listen.ip().is_loopback() {
        let hint = match &cfg.admin.token_env {
            Some(name) => format!("set the environment variable {name} to a secret token"),
            None => "set admin.token_env to the name of an environment variable holding a secret token, or listen on 127.0.0.1".into(),
        };
        return Err(StartError::AdminUnprotected {
            addr: cfg.admin.listen.to_string(),
            hint,
        });
    }
    Ok(token)
}

/// Background task: runs the hub's sequencer, applies reloads (file watch, SIGHUP) and turns
/// Pingora's shutdown signal into a drain the streams can see.
struct Lifecycle {
    state: Arc<State>,
}

#[async_trait]
impl BackgroundService for Lifecycle {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let state = self.state.clone();
        // The sequencer outlives the drain so in-flight mutations still publish; the runtime
        // ends it after the grace period.
        let (_hub_stop_tx, hub_stop_rx) = watch::channel(false);
        tokio::spawn(state.hub.clone().run(hub_stop_rx));

        let (file_tx, mut file_rx) = mpsc::channel::<()>(1);
        let _watcher = match reload::watch_file(state.reload.path(), file_tx) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP or POST /admin/reload");
                None
            }
        };
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        tokio::spawn(crate::admin::snapshot::run(state.clone()));
        loop {
            tokio::select! {
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        state.start_drain();
                        break;
                    }
                }
                Some(()) = file_rx.recv() => {
                    tokio::time::sleep(reload::DEBOUNCE).await;
                    while file_rx.try_recv().is_ok() {}
                    state.reload("file");
                }
                Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    state.reload("SIGHUP");
                }
            }
        }
        // Keep the sequencer's stop sender alive until the runtime goes away.
        std::future::pending::<()>().await;
    }
}

/// Builds and runs the sidecar until it has shut down (SIGTERM, SIGINT), then closes the
/// event log cleanly.
pub fn run(config_path: PathBuf, cfg: Config, upgrade: bool) -> Result<(), StartError> {
    let metrics = Arc::new(Metrics::new());
    let log = open_store(&cfg)?;
    let token = admin_token(&cfg)?;
    let hub = Hub::new(log.clone(), HUB_QUEUE, metrics.clone());
    let listen = cfg.listen.to_string();
    let admin_listen = cfg.admin.listen.to_string();
    let threads = cfg.threads;
    let grace = cfg.shutdown.grace_period_seconds;
    let upgrade_sock = cfg.shutdown.upgrade_sock.clone();
    let disabled = env_disabled();
    if disabled {
        tracing::warn!("DISABLE_SSE_SYSTEM is set: pure pass-through, every client polls");
    }
    let store = log.clone();
    let no_auth_rules = cfg.authorization.rules.is_empty();
    let warnings = cfg.warnings.clone();
    let state = State::new(ReloadHandle::new(config_path, cfg), hub, metrics, disabled);

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

    // The listener's front serves event streams on the socket itself and hands every other
    // request to Pingora's proxy (see `sse::front`).
    let proxy = Arc::new(pingora::proxy::http_proxy(
        &server.configuration,
        Proxy {
            state: state.clone(),
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
        ListenerConfig::tcp(listen.clone())
            .l4_buffer(L4BufferSettings::new(L4_READ_BUFFER, L4_WRITE_BUFFER)),
    );
    let mut admin = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Admin {
            state: state.clone(),
            token,
        },
        "sse-sidecar admin",
    );
    admin.threads = Some(1);
    admin.add_tcp(&admin_listen);
    let lifecycle = background_service("lifecycle", Lifecycle { state });

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
    // Every runtime is gone; flush the log and mark the shutdown clean.
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(store.close()),
        Err(e) => tracing::error!(error = %e, "cannot close the event log cleanly"),
    }
    tracing::info!("sse-sidecar stopped");
    Ok(())
}
