//! The validated, immutable configuration. Built only by `validate`, shared as
//! `Arc<Config>` through the reload handle; a request or stream never mutates it. Also the
//! one list of restart-only settings ([`RestartOnly`]), which `diff` compares and a reload
//! keeps at their running values. Durations are `Duration`s; only values sent to clients as
//! numbers (retry and poll-interval milliseconds) and the latency target, compared with
//! measured milliseconds, stay numbers.

use crate::events::route::RoutePattern;
use crate::events::template::{StrTemplate, ValueTemplate};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Off,
    Shadow,
    Live,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Shadow => "shadow",
            Mode::Live => "live",
        }
    }
}

/// What a rule does with a mutation whose `x-sse-base` is older than the version of the
/// topics it edits (a concurrent edit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Conflicts {
    /// No check.
    #[default]
    Off,
    /// Forward it; its event carries `conflict {base, superseded}`.
    Detect,
    /// Answer 409 with the newer events, without touching the backend.
    Reject,
}

/// What happens to a family's events right now, from its mode and the rollout phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Not derived at all (mode off, or the family's phase is not reached yet).
    Off,
    /// Derived, validated and counted, never delivered.
    Shadow,
    /// Derived, stored and delivered.
    Live,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Off => "off",
            Delivery::Shadow => "shadow",
            Delivery::Live => "live",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Family {
    pub name: String,
    pub phase: u32,
    pub mode: Mode,
    /// 0 (shed first) to 9 (shed last).
    pub priority: u8,
}

#[derive(Debug, Clone)]
pub enum DataSpec {
    None,
    Request,
    Response,
    Template(ValueTemplate),
}

/// One compiled mutation rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `families.<family>.rules[<index>]`, for logs and problem reports.
    pub location: String,
    pub family: String,
    pub pattern: RoutePattern,
    pub event_type: String,
    pub topics: Vec<StrTemplate>,
    pub data: DataSpec,
    pub invalidate: Vec<ValueTemplate>,
    /// The concurrent-edit check, and the topics it compares (the indices of `topics`
    /// filled from path, query or headers: known before the mutation is forwarded).
    pub conflicts: Conflicts,
    pub conflict_topics: Vec<usize>,
}

pub struct EventType {
    pub name: String,
    pub family: String,
    pub schema: serde_json::Value,
    pub validator: Arc<jsonschema::Validator>,
}

impl std::fmt::Debug for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventType")
            .field("name", &self.name)
            .field("family", &self.family)
            .field("schema", &self.schema)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct Upstream {
    /// As written in the file, for reports.
    pub address: String,
    /// Resolved when the file was loaded (a lookup on the request path could block).
    pub addr: SocketAddr,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    /// How events, topics and the poll shield are scoped (restart-only).
    pub tenancy: Tenancy,
}

/// `upstream.tenancy`: whether one sidecar fronts one backend tenant or many told apart by
/// Host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tenancy {
    /// One tenant: Host plays no part in topics, events or the shield (the file's default).
    None,
    /// The backend routes tenants by Host: every event, topic subscription, replay and
    /// shield clock is scoped by the request's normalized Host; a stream without a usable
    /// Host is refused (400) and a mutation without one derives no event.
    Host,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: SocketAddr,
    pub token_env: Option<String>,
    /// Host names the admin listener answers to besides its own address and localhost.
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Sse {
    pub enabled: bool,
    pub path: String,
    pub heartbeat: Duration,
    /// Reconnect delay range sent to clients (the frame's `retry:` milliseconds, and
    /// Retry-After seconds from the maximum), so it stays a number of milliseconds.
    pub retry_min_ms: u64,
    pub retry_max_ms: u64,
    pub max_topics_per_stream: usize,
    pub max_connections: usize,
    pub queue_max_bytes: usize,
    /// Bound on bytes queued across all streams; past it the fullest queues are shed.
    pub queued_bytes_total: usize,
    /// New streams per client address: token-bucket rate and burst (429 beyond).
    pub handshakes_per_client_per_second: f64,
    pub handshake_burst: u32,
    /// Largest event frame delivered; a larger event is dropped (counted).
    pub max_event_bytes: usize,
    pub write_timeout: Duration,
    pub replay_max_events: u64,
    /// Gzip streams for clients that ask (Accept-Encoding), flushed at every write.
    pub gzip: bool,
    /// Origins (`scheme://host[:port]`) allowed to open streams cross-origin.
    pub allowed_origins: Vec<String>,
    /// Largest request head accepted on the listener, every path (431 beyond).
    pub max_request_head_bytes: usize,
    /// A request head must be complete this long after its first byte (408 beyond).
    pub request_head_timeout: Duration,
    /// Peers whose `X-Forwarded-For` / `Forwarded` name the client (the handshake limiter's
    /// and the check slots' address).
    pub trusted_proxies: Vec<crate::safety::client_addr::Cidr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreBackend {
    Memory,
    Sqlite { path: String },
    Redis { url: String, prefix: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Relaxed,
    Strict,
}

#[derive(Debug, Clone)]
pub struct Store {
    pub backend: StoreBackend,
    pub durability: Durability,
    pub max_events: u64,
    pub max_age: Duration,
}

#[derive(Debug, Clone)]
pub struct Shutdown {
    /// How long in-flight requests get to finish after a shutdown signal.
    pub grace_period: Duration,
    pub drain_window: Duration,
    /// Where a new process (`--upgrade`) receives the listening sockets of the old one.
    pub upgrade_sock: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone)]
pub struct Logging {
    pub format: LogFormat,
    pub level: String,
}

/// Trace export (see `telemetry`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Telemetry {
    /// The OTLP/HTTP collector's base URL; `None`: export only if the environment asks.
    pub otlp_endpoint: Option<String>,
}

/// Learn mode (see `learn`): what is recorded of the forwarded traffic, and how much.
#[derive(Debug, Clone, PartialEq)]
pub struct Learn {
    pub enabled: bool,
    pub max_routes: usize,
    pub samples_per_route: usize,
    pub max_body_bytes: usize,
    pub max_reads_per_second: u32,
    /// Field names whose values are never kept, lowercased (the built-in list not included).
    pub redact: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Safety {
    /// Delivery p99 target: coalescing opens over half of it, the latency breaker over it.
    /// Fractional milliseconds, compared with the measured p99 in milliseconds.
    pub latency_target_ms: f64,
    /// How long an open breaker waits before probing.
    pub breaker_cooldown: Duration,
}

#[derive(Debug)]
pub struct Config {
    /// First 12 hex digits of the file's SHA-256: the config version shown to operators.
    pub version: String,
    pub listen: SocketAddr,
    pub threads: usize,
    pub upstream: Upstream,
    pub admin: Admin,
    pub sse: Sse,
    pub capture_max_bytes: usize,
    /// Mutations with the same Idempotency-Key within this window publish one event.
    pub dedup_window: Duration,
    pub store: Store,
    pub rollout_phase: u32,
    pub families: BTreeMap<String, Family>,
    pub event_types: BTreeMap<String, EventType>,
    pub rules: Vec<Rule>,
    pub shutdown: Shutdown,
    pub logging: Logging,
    pub safety: Safety,
    pub authorization: super::auth::Policy,
    pub polling: super::polling::Polling,
    pub telemetry: Telemetry,
    pub presence: super::presence::Presence,
    pub learn: Learn,
    /// What validates but cannot work as probably meant, with YAML paths and hints
    /// (`check` prints them; start and reload log them).
    pub warnings: Vec<super::validate::Problem>,
}

impl Config {
    /// What happens to this family's events under this config.
    pub fn delivery(&self, family: &str) -> Delivery {
        match self.families.get(family) {
            None => Delivery::Off,
            Some(f) if f.phase > self.rollout_phase => Delivery::Off,
            Some(f) => match f.mode {
                Mode::Off => Delivery::Off,
                Mode::Shadow => Delivery::Shadow,
                Mode::Live => Delivery::Live,
            },
        }
    }

    /// The rules whose pattern matches this mutation and whose family is not off, with the
    /// captured path parameters.
    pub fn matching_rules<'a>(
        &'a self,
        method: &'a http::Method,
        path: &'a str,
    ) -> impl Iterator<Item = (usize, crate::events::route::Params)> + 'a {
        self.rules.iter().enumerate().filter_map(move |(i, r)| {
            if self.delivery(&r.family) == Delivery::Off {
                return None;
            }
            r.pattern.matches(method, path).map(|p| (i, p))
        })
    }

    /// Event type names, for the hello frame (clients register a listener per name).
    pub fn type_names(&self) -> Vec<&str> {
        self.event_types.keys().map(String::as_str).collect()
    }
}

/// Declares [`RestartOnly`] from one table: each setting's field, type, YAML key and place
/// in [`Config`]. The struct, the keys a reload reports and the write-back all come from it.
macro_rules! restart_only {
    ($($field:ident: $ty:ty = $key:literal at $($place:ident).+;)*) => {
        /// The settings a running process cannot change (listeners, threads, tenancy, admin
        /// access, store, log format, shutdown grace, check slots): a reload reports those
        /// that differ and keeps the running values. Built from a [`Config`], whose fields
        /// stay where the rest of the code reads them.
        #[derive(Debug, Clone, PartialEq)]
        pub struct RestartOnly {
            $(pub $field: $ty,)*
        }

        impl RestartOnly {
            /// The YAML keys of the settings that differ between `self` and `other`, in
            /// declaration order.
            pub fn changed(&self, other: &RestartOnly) -> Vec<&'static str> {
                let mut out = Vec::new();
                $(if self.$field != other.$field {
                    out.push($key);
                })*
                out
            }
        }

        impl Config {
            /// This config's restart-only settings.
            pub fn restart_only(&self) -> RestartOnly {
                RestartOnly {
                    $($field: self.$($place).+.clone(),)*
                }
            }

            /// Puts `r` in place of this config's restart-only settings.
            pub fn set_restart_only(&mut self, r: RestartOnly) {
                $(self.$($place).+ = r.$field;)*
            }
        }
    };
}

restart_only! {
    listen: SocketAddr = "listen" at listen;
    threads: usize = "threads" at threads;
    tenancy: Tenancy = "upstream.tenancy" at upstream.tenancy;
    admin_listen: SocketAddr = "admin.listen" at admin.listen;
    admin_token_env: Option<String> = "admin.token_env" at admin.token_env;
    admin_allowed_hosts: Vec<String> = "admin.allowed_hosts" at admin.allowed_hosts;
    store_backend: StoreBackend = "store.backend" at store.backend;
    store_durability: Durability = "store.durability" at store.durability;
    log_format: LogFormat = "logging.format" at logging.format;
    grace_period: Duration = "shutdown.grace_period_seconds" at shutdown.grace_period;
    max_concurrent_checks: usize = "authorization.max_concurrent_checks" at authorization.max_concurrent_checks;
    otlp_endpoint: Option<String> = "telemetry.otlp_endpoint" at telemetry.otlp_endpoint;
}
