//! Turns YAML text into a validated [`Config`]: a compiler of named steps, one per section
//! (`compile_upstream`, `compile_sse`, `compile_store`, `compile_families`, `compile_polling`,
//! `compile_authorization`, …), each turning that section's serde type (`file`) into its part
//! of the model and adding what is wrong, with its YAML path and a hint, to one problem list
//! (the `Collector`) instead of stopping at the first. `parse_str` is the sequence of steps;
//! the steps of the small sections are here, the larger ones in `validate/` (`families`:
//! event types, families and their rules; `authorization`; `polling`; `warnings`).
//! Each section, family, rule and event type is deserialized on its own so that one typo does
//! not hide the rest. Never panics, whatever the text (non-ASCII strings, NaN/infinite/absurd
//! numbers: problems with their paths). A valid config also carries warnings (same shape):
//! what validates but cannot work as meant — no authorization rule, no rollout phase, a
//! family above it, a string value its schema types otherwise, a check that ignores part of
//! its topic.

mod authorization;
mod families;
mod polling;
mod presence;
mod warnings;

use super::auth::Policy;
use super::file::*;
use super::model::*;
use super::polling::Polling;
use authorization::compile_authorization;
use families::{check_event_type_families, compile_event_types, compile_families};
use polling::compile_polling;
use presence::compile_presence;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;
use warnings::warn_unworkable_parts;

/// Smallest `sse.handshakes_per_client_per_second`: one new stream per client address every
/// 1,000 s. Below that the limiter's waits overflow any clock.
pub const MIN_HANDSHAKE_RATE: f64 = 0.001;

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// YAML path such as `families.cards.rules[0].topics[1]`, or `(file)`.
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{} problem(s) in the config:\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Io { path, source } => vec![Problem {
                path: "(file)".into(),
                message: format!("cannot read {path}: {source}"),
                hint: Some("check the --config path and its permissions".into()),
            }],
            ConfigError::Invalid(p) => p.clone(),
        }
    }
}

/// Reads and validates a config file. Blocks: callers are `main` (before the runtime), the
/// `check` command and the reload, which runs it on the blocking pool.
#[allow(
    clippy::disallowed_methods,
    reason = "never called on a proxy worker (see above)"
)]
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_str(&text)
}

/// The one problem list every step extends, and the warnings beside it.
#[derive(Default)]
struct Collector {
    problems: Vec<Problem>,
    /// Things that validate but cannot work as the operator probably means (reported by
    /// `check`, logged at start and on reload; never a refusal).
    warnings: Vec<Problem>,
}

impl Collector {
    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>, hint: &str) {
        self.warnings.push(Problem {
            path: path.into(),
            message: message.into(),
            hint: Some(hint.to_owned()),
        });
    }

    fn push(&mut self, path: impl Into<String>, message: impl Into<String>, hint: Option<&str>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
            hint: hint.map(str::to_owned),
        });
    }

    /// The problems so far, as the error that refuses the file.
    fn refuse(&mut self) -> ConfigError {
        ConfigError::Invalid(std::mem::take(&mut self.problems))
    }

    /// Deserializes one section; a failure is reported at `path` and yields `None`.
    fn section<T: DeserializeOwned>(&mut self, path: &str, v: &serde_yaml::Value) -> Option<T> {
        match serde_yaml::from_value::<T>(v.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                let msg = e.to_string();
                let hint = if msg.contains("unknown field") {
                    Some("remove the key or fix its spelling; conf/sidecar.yaml lists every key")
                } else if msg.contains("missing field") {
                    Some("add the key; conf/sidecar.yaml shows an example")
                } else {
                    None
                };
                self.push(path, msg, hint);
                None
            }
        }
    }

    /// Resolves a listen or upstream address (a DNS lookup for a name).
    #[allow(
        clippy::disallowed_methods,
        reason = "validation runs at startup or on the reload's blocking pool"
    )]
    fn addr(&mut self, path: &str, s: &str) -> Option<SocketAddr> {
        match s.to_socket_addrs() {
            Ok(mut it) => match it.next() {
                Some(a) => Some(a),
                None => {
                    self.push(path, format!("{s:?} resolves to no address"), None);
                    None
                }
            },
            Err(e) => {
                self.push(
                    path,
                    format!("{s:?} is not a host:port address ({e})"),
                    Some("write it like \"127.0.0.1:8080\""),
                );
                None
            }
        }
    }

    /// One of a closed set of words (`unknown <what> "<word>"` otherwise).
    fn keyword<T: Copy>(
        &mut self,
        path: &str,
        what: &str,
        word: &str,
        known: &[(&str, T)],
        hint: &str,
    ) -> Option<T> {
        let found = known.iter().find(|(w, _)| *w == word).map(|(_, v)| *v);
        if found.is_none() {
            self.push(path, format!("unknown {what} {word:?}"), Some(hint));
        }
        found
    }

    /// A finite number within `[lo, hi]` (NaN, infinities, negatives and absurdly small or
    /// large values are refused).
    fn float_range(&mut self, path: &str, v: f64, lo: f64, hi: f64, what: &str) {
        if !(v.is_finite() && v >= lo && v <= hi) {
            self.push(
                path,
                format!("{v} is out of range"),
                Some(&format!("use {lo} to {hi} ({what})")),
            );
        }
    }

    fn range(&mut self, path: &str, v: u64, lo: u64, hi: u64) {
        if v < lo || v > hi {
            self.push(
                path,
                format!("{v} is out of range"),
                Some(&format!("use {lo} to {hi}")),
            );
        }
    }

    /// `range` for each `(path, value, lo, hi)`, in order.
    fn ranges(&mut self, table: &[(&str, u64, u64, u64)]) {
        for &(path, v, lo, hi) in table {
            self.range(path, v, lo, hi);
        }
    }
}

/// The file's top-level sections by name; a `null` section counts as absent.
struct Sections(BTreeMap<String, serde_yaml::Value>);

impl Sections {
    fn given(&self, name: &str) -> Option<&serde_yaml::Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    /// A section's serde type, `default()` when the section is absent.
    fn read_or<T: DeserializeOwned>(
        &self,
        c: &mut Collector,
        name: &str,
        default: impl FnOnce() -> T,
    ) -> Option<T> {
        match self.given(name) {
            Some(v) => c.section::<T>(name, v),
            None => Some(default()),
        }
    }

    /// A section's serde type, its serde defaults when the section is absent.
    fn read<T: DeserializeOwned + Default>(&self, c: &mut Collector, name: &str) -> Option<T> {
        self.read_or(c, name, T::default)
    }
}

/// Splits the text into its sections: not YAML, or not a mapping, refuses the file at once;
/// an unknown section is a problem and the rest goes on.
fn read_sections(c: &mut Collector, text: &str) -> Result<Sections, ConfigError> {
    let root: serde_yaml::Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            c.push("(file)", format!("not valid YAML: {e}"), None);
            return Err(c.refuse());
        }
    };
    let empty = serde_yaml::Mapping::new();
    let map = match &root {
        serde_yaml::Value::Mapping(m) => m,
        serde_yaml::Value::Null => &empty,
        _ => {
            c.push(
                "(file)",
                "the top level must be a mapping of sections",
                Some("see conf/sidecar.yaml"),
            );
            return Err(c.refuse());
        }
    };
    let mut sections = BTreeMap::new();
    for (k, v) in map {
        match k.as_str() {
            Some(name) if SECTIONS.contains(&name) => {
                sections.insert(name.to_owned(), v.clone());
            }
            Some(name) => c.push(
                name,
                "unknown section",
                Some(&format!("known sections: {}", SECTIONS.join(", "))),
            ),
            None => c.push("(file)", "section names must be strings", None),
        }
    }
    Ok(Sections(sections))
}

/// First 12 hex digits of the text's SHA-256.
fn version_of(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Validates YAML text into a [`Config`]: the compile steps in order, then the warnings;
/// any problem refuses the whole file.
pub fn parse_str(text: &str) -> Result<Config, ConfigError> {
    let mut c = Collector::default();
    let sections = read_sections(&mut c, text)?;
    let listen = sections.read_or(&mut c, "listen", default_listen);
    let listen = listen.and_then(|s| c.addr("listen", &s));
    let threads = sections.read_or(&mut c, "threads", default_threads);
    let threads = threads.map(|t| compile_threads(&mut c, t));
    let upstream = upstream_file(&mut c, &sections).and_then(|u| compile_upstream(&mut c, u));
    let admin = sections.read(&mut c, "admin");
    let admin = admin.and_then(|a| compile_admin(&mut c, a));
    let sse = sections.read(&mut c, "sse").map(|s| compile_sse(&mut c, s));
    let mutations = sections.read(&mut c, "mutations");
    let mutations = mutations.map(|m| compile_mutations(&mut c, m));
    let store = sections.read(&mut c, "store");
    let store = store.and_then(|s| compile_store(&mut c, s));
    let rollout = sections.read::<RolloutFile>(&mut c, "rollout");
    // Event types before families, so rules can refer to them.
    let event_types = sections.read(&mut c, "event_types");
    let event_types = event_types.map_or_else(BTreeMap::new, |t| compile_event_types(&mut c, t));
    let families = sections.read(&mut c, "families");
    let families = families.map(|f| compile_families(&mut c, f, &event_types));
    let (families, rules) = families.unwrap_or_default();
    check_event_type_families(&mut c, &event_types, &families);
    let shutdown = sections.read(&mut c, "shutdown");
    let shutdown = shutdown.map(|s| compile_shutdown(&mut c, s));
    let logging = sections.read(&mut c, "logging");
    let logging = logging.and_then(|l| compile_logging(&mut c, l));
    let safety = sections.read(&mut c, "safety");
    let safety = safety.map(|s| compile_safety(&mut c, s));
    let authorization = sections.read(&mut c, "authorization");
    let authorization = authorization.map(|a| compile_authorization(&mut c, a));
    let polling = sections.read(&mut c, "polling");
    let polling = polling.map(|p| compile_polling(&mut c, p, &families));
    let telemetry = sections.read(&mut c, "telemetry");
    let telemetry = telemetry.map(|t| compile_telemetry(&mut c, t));
    let presence = sections.read(&mut c, "presence");
    let presence = presence.map(|p| compile_presence(&mut c, p));
    let learn = sections
        .read(&mut c, "learn")
        .map(|l| compile_learn(&mut c, l));
    let parts = Parts {
        listen,
        threads,
        upstream,
        admin,
        sse,
        mutations,
        store,
        rollout,
        families,
        event_types,
        rules,
        shutdown,
        logging,
        safety,
        authorization,
        polling,
        telemetry,
        presence,
        learn,
    };
    warn_unworkable_parts(&mut c, &parts, sections.given("rollout").is_some());
    finish(c, version_of(text), parts)
}

/// The compiled sections; `None` where a step pushed a problem.
struct Parts {
    listen: Option<SocketAddr>,
    threads: Option<usize>,
    upstream: Option<Upstream>,
    admin: Option<Admin>,
    sse: Option<Sse>,
    mutations: Option<Mutations>,
    store: Option<Store>,
    rollout: Option<RolloutFile>,
    families: BTreeMap<String, Family>,
    event_types: BTreeMap<String, EventType>,
    rules: Vec<Rule>,
    shutdown: Option<Shutdown>,
    logging: Option<Logging>,
    safety: Option<Safety>,
    authorization: Option<Policy>,
    polling: Option<Polling>,
    telemetry: Option<Telemetry>,
    presence: Option<crate::config::presence::Presence>,
    learn: Option<Learn>,
}

/// The `mutations` section, compiled (its keys sit at the top of [`Config`]).
struct Mutations {
    capture_max_bytes: usize,
    dedup_window: Duration,
}

/// The config, or every problem the steps found.
fn finish(c: Collector, version: String, parts: Parts) -> Result<Config, ConfigError> {
    if !c.problems.is_empty() {
        return Err(ConfigError::Invalid(c.problems));
    }
    // Every `None` in the parts pushed a problem, so all are present here; `assemble` keeps
    // that argument explicit instead of unwrapping.
    assemble(parts, version, c.warnings).ok_or_else(|| {
        ConfigError::Invalid(vec![Problem {
            path: "(file)".into(),
            message: "incomplete configuration".into(),
            hint: None,
        }])
    })
}

fn assemble(p: Parts, version: String, warnings: Vec<Problem>) -> Option<Config> {
    let mutations = p.mutations?;
    Some(Config {
        warnings,
        version,
        listen: p.listen?,
        threads: p.threads?,
        upstream: p.upstream?,
        admin: p.admin?,
        sse: p.sse?,
        capture_max_bytes: mutations.capture_max_bytes,
        dedup_window: mutations.dedup_window,
        store: p.store?,
        rollout_phase: p.rollout?.phase,
        families: p.families,
        event_types: p.event_types,
        rules: p.rules,
        shutdown: p.shutdown?,
        logging: p.logging?,
        safety: p.safety?,
        authorization: p.authorization?,
        polling: p.polling?,
        telemetry: p.telemetry?,
        presence: p.presence?,
        learn: p.learn?,
    })
}

/// `upstream` has no default: the sidecar cannot guess the backend.
fn upstream_file(c: &mut Collector, sections: &Sections) -> Option<UpstreamFile> {
    match sections.given("upstream") {
        Some(v) => c.section::<UpstreamFile>("upstream", v),
        None => {
            c.push(
                "upstream",
                "missing: the sidecar needs the backend's address",
                Some("add `upstream: {address: \"127.0.0.1:3000\"}`"),
            );
            None
        }
    }
}

fn compile_threads(c: &mut Collector, threads: usize) -> usize {
    c.range("threads", threads as u64, 1, 256);
    threads
}

fn compile_upstream(c: &mut Collector, u: UpstreamFile) -> Option<Upstream> {
    c.ranges(&[
        (
            "upstream.connect_timeout_ms",
            u.connect_timeout_ms,
            1,
            600_000,
        ),
        ("upstream.read_timeout_ms", u.read_timeout_ms, 1, 86_400_000),
        (
            "upstream.write_timeout_ms",
            u.write_timeout_ms,
            1,
            86_400_000,
        ),
    ]);
    let tenancy = c.keyword(
        "upstream.tenancy",
        "tenancy",
        &u.tenancy,
        &[("none", Tenancy::None), ("host", Tenancy::Host)],
        "use none (one tenant) or host (the backend routes tenants by Host)",
    );
    let addr = c.addr("upstream.address", &u.address)?;
    Some(Upstream {
        address: u.address,
        addr,
        connect_timeout: Duration::from_millis(u.connect_timeout_ms),
        read_timeout: Duration::from_millis(u.read_timeout_ms),
        write_timeout: Duration::from_millis(u.write_timeout_ms),
        tenancy: tenancy?,
    })
}

fn compile_admin(c: &mut Collector, a: AdminFile) -> Option<Admin> {
    let listen = c.addr("admin.listen", &a.listen)?;
    if let Some(env) = &a.token_env {
        if env.is_empty() || !env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            c.push(
                "admin.token_env",
                format!("{env:?} is not an environment variable name"),
                Some("name the variable, e.g. SSE_ADMIN_TOKEN; never put the token itself here"),
            );
        }
    }
    for (i, h) in a.allowed_hosts.iter().enumerate() {
        if !crate::headers::valid_host_entry(h) {
            c.push(
                format!("admin.allowed_hosts[{i}]"),
                format!("{h:?} is not a host name or name:port"),
                Some("write the name the dashboard is opened with, e.g. admin.internal or admin.internal:8443 (no scheme, no path)"),
            );
        }
    }
    Some(Admin {
        listen,
        token_env: a.token_env,
        allowed_hosts: a
            .allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
    })
}

fn compile_sse(c: &mut Collector, s: SseFile) -> Sse {
    if !s.path.starts_with('/') {
        c.push("sse.path", "must start with '/'", None);
    }
    check_sse_limits(c, &s);
    let gzip = c.keyword(
        "sse.compression",
        "compression",
        &s.compression,
        &[("off", false), ("gzip", true)],
        "use off or gzip",
    );
    check_sse_bytes_and_rates(c, &s);
    let allowed_origins = compile_origins(c, &s.allowed_origins);
    let trusted_proxies = compile_trusted_proxies(c, &s.trusted_proxies);
    Sse {
        max_request_head_bytes: s.max_request_head_bytes,
        request_head_timeout: Duration::from_secs(s.request_head_timeout_seconds),
        queued_bytes_total: s.queued_bytes_total,
        handshakes_per_client_per_second: s.handshakes_per_client_per_second,
        handshake_burst: s.handshake_burst,
        max_event_bytes: s.max_event_bytes,
        gzip: gzip.unwrap_or(false),
        enabled: s.enabled,
        path: s.path,
        heartbeat: Duration::from_secs(s.heartbeat_seconds),
        retry_min_ms: s.retry_min_ms,
        retry_max_ms: s.retry_max_ms,
        max_topics_per_stream: s.max_topics_per_stream,
        max_connections: s.max_connections,
        queue_max_bytes: s.queue_max_bytes,
        write_timeout: Duration::from_secs(s.write_timeout_seconds),
        replay_max_events: s.replay_max_events,
        allowed_origins,
        trusted_proxies,
    }
}

/// Heartbeat, retry range, per-stream limits and timeouts.
fn check_sse_limits(c: &mut Collector, s: &SseFile) {
    c.ranges(&[
        ("sse.heartbeat_seconds", s.heartbeat_seconds, 1, 300),
        ("sse.retry_min_ms", s.retry_min_ms, 100, 600_000),
        ("sse.retry_max_ms", s.retry_max_ms, 100, 600_000),
    ]);
    if s.retry_min_ms > s.retry_max_ms {
        c.push(
            "sse.retry_min_ms",
            "is larger than sse.retry_max_ms",
            Some("the retry range is [retry_min_ms, retry_max_ms]"),
        );
    }
    c.ranges(&[
        (
            "sse.max_topics_per_stream",
            s.max_topics_per_stream as u64,
            1,
            1024,
        ),
        (
            "sse.max_connections",
            s.max_connections as u64,
            1,
            10_000_000,
        ),
        (
            "sse.queue_max_bytes",
            s.queue_max_bytes as u64,
            4096,
            1 << 30,
        ),
        (
            "sse.write_timeout_seconds",
            s.write_timeout_seconds,
            1,
            3600,
        ),
        ("sse.replay_max_events", s.replay_max_events, 1, 1_000_000),
    ]);
}

/// The listener-wide byte bounds, the handshake limiter and the request-head limits.
fn check_sse_bytes_and_rates(c: &mut Collector, s: &SseFile) {
    c.range(
        "sse.queued_bytes_total",
        s.queued_bytes_total as u64,
        65_536,
        1 << 40,
    );
    // The limiter divides by the rate (refill and Retry-After times): a rate too small
    // gives durations no clock can hold.
    c.float_range(
        "sse.handshakes_per_client_per_second",
        s.handshakes_per_client_per_second,
        MIN_HANDSHAKE_RATE,
        1e6,
        "new streams per second per client address, e.g. 10",
    );
    c.ranges(&[
        (
            "sse.handshake_burst",
            s.handshake_burst as u64,
            1,
            1_000_000,
        ),
        (
            "sse.max_event_bytes",
            s.max_event_bytes as u64,
            256,
            16 << 20,
        ),
        (
            "sse.max_request_head_bytes",
            s.max_request_head_bytes as u64,
            1024,
            1 << 20,
        ),
        (
            "sse.request_head_timeout_seconds",
            s.request_head_timeout_seconds,
            1,
            600,
        ),
    ]);
}

/// `sse.allowed_origins`, lower-cased, without a trailing '/'.
fn compile_origins(c: &mut Collector, origins: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, o) in origins.iter().enumerate() {
        let o = o.trim_end_matches('/');
        // No byte slicing: an entry may hold any (non-ASCII) text.
        let host = o
            .strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"));
        let ok = host.is_some_and(|h| !h.is_empty() && !h.contains('/'))
            && o.len() <= 256
            && o.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            out.push(o.to_ascii_lowercase());
        } else {
            c.push(
                format!("sse.allowed_origins[{i}]"),
                format!("{o:?} is not an origin"),
                Some("write scheme://host[:port], e.g. https://app.example.com (no path, no wildcard)"),
            );
        }
    }
    out
}

fn compile_trusted_proxies(
    c: &mut Collector,
    proxies: &[String],
) -> Vec<crate::safety::client_addr::Cidr> {
    let mut out = Vec::new();
    for (i, p) in proxies.iter().enumerate() {
        match crate::safety::client_addr::Cidr::parse(p) {
            Ok(cidr) => out.push(cidr),
            Err(e) => c.push(
                format!("sse.trusted_proxies[{i}]"),
                e,
                Some("write an IP address or a CIDR block, e.g. 10.0.0.0/8 or ::1"),
            ),
        }
    }
    out
}

fn compile_mutations(c: &mut Collector, m: MutationsFile) -> Mutations {
    c.ranges(&[
        (
            "mutations.capture_max_bytes",
            m.capture_max_bytes as u64,
            1024,
            64 << 20,
        ),
        (
            "mutations.dedup_window_seconds",
            m.dedup_window_seconds,
            0,
            86_400,
        ),
    ]);
    Mutations {
        capture_max_bytes: m.capture_max_bytes,
        dedup_window: Duration::from_secs(m.dedup_window_seconds),
    }
}

fn compile_store(c: &mut Collector, s: StoreFile) -> Option<Store> {
    let backend = compile_store_backend(c, &s);
    let durability = c.keyword(
        "store.durability",
        "durability",
        &s.durability,
        &[
            ("relaxed", Durability::Relaxed),
            ("strict", Durability::Strict),
        ],
        "use relaxed or strict",
    );
    c.ranges(&[
        (
            "store.retention.max_events",
            s.retention.max_events,
            1,
            1 << 40,
        ),
        (
            "store.retention.max_age_seconds",
            s.retention.max_age_seconds,
            1,
            365 * 86_400,
        ),
    ]);
    Some(Store {
        backend: backend?,
        durability: durability.unwrap_or(Durability::Relaxed),
        max_events: s.retention.max_events,
        max_age: Duration::from_secs(s.retention.max_age_seconds),
    })
}

fn compile_store_backend(c: &mut Collector, s: &StoreFile) -> Option<StoreBackend> {
    match s.backend.as_str() {
        "memory" => Some(StoreBackend::Memory),
        "sqlite" => Some(StoreBackend::Sqlite {
            path: s.path.clone().unwrap_or_else(default_sqlite_path),
        }),
        "redis" => match &s.url {
            Some(u) if u.starts_with("redis://") || u.starts_with("rediss://") => {
                if s.key_prefix.is_empty()
                    || s.key_prefix.len() > 64
                    || !s.key_prefix.bytes().all(|b| b.is_ascii_graphic())
                {
                    c.push(
                        "store.key_prefix",
                        "must be 1-64 printable characters without spaces",
                        Some("e.g. sse-sidecar or myapp:sse"),
                    );
                }
                Some(StoreBackend::Redis {
                    url: u.clone(),
                    prefix: s.key_prefix.clone(),
                })
            }
            _ => {
                c.push(
                    "store.url",
                    "the redis backend needs a redis:// URL",
                    Some("e.g. url: \"redis://127.0.0.1:6379/0\""),
                );
                None
            }
        },
        other => {
            c.push(
                "store.backend",
                format!("unknown backend {other:?}"),
                Some("use memory, sqlite or redis"),
            );
            None
        }
    }
}

fn compile_shutdown(c: &mut Collector, s: ShutdownFile) -> Shutdown {
    c.ranges(&[
        (
            "shutdown.grace_period_seconds",
            s.grace_period_seconds,
            0,
            3600,
        ),
        (
            "shutdown.drain_window_seconds",
            s.drain_window_seconds,
            0,
            3600,
        ),
    ]);
    Shutdown {
        grace_period: Duration::from_secs(s.grace_period_seconds),
        drain_window: Duration::from_secs(s.drain_window_seconds),
        upgrade_sock: s.upgrade_sock,
    }
}

fn compile_logging(c: &mut Collector, l: LoggingFile) -> Option<Logging> {
    let format = c.keyword(
        "logging.format",
        "format",
        &l.format,
        &[("human", LogFormat::Human), ("json", LogFormat::Json)],
        "use human or json",
    )?;
    if tracing_subscriber::EnvFilter::try_new(&l.level).is_err() {
        c.push(
            "logging.level",
            format!("{:?} is not a log filter", l.level),
            Some("use error, warn, info, debug, trace or a directive like sse_sidecar=debug"),
        );
    }
    Some(Logging {
        format,
        level: l.level,
    })
}

/// `telemetry.otlp_endpoint`: an `http://` or `https://` URL with a host.
fn compile_telemetry(c: &mut Collector, t: TelemetryFile) -> Telemetry {
    if let Some(url) = &t.otlp_endpoint {
        let host = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
        if !host.is_some_and(|h| !h.is_empty() && !h.contains(char::is_whitespace)) {
            c.push(
                "telemetry.otlp_endpoint",
                format!("{url:?} is not an http:// or https:// URL with a host"),
                Some("use the collector's OTLP/HTTP base URL, e.g. http://127.0.0.1:4318, or leave the key out"),
            );
        }
    }
    Telemetry {
        otlp_endpoint: t.otlp_endpoint,
    }
}

fn compile_learn(c: &mut Collector, l: LearnFile) -> Learn {
    c.ranges(&[
        ("learn.max_routes", l.max_routes as u64, 1, 10_000),
        ("learn.samples_per_route", l.samples_per_route as u64, 0, 20),
        (
            "learn.max_body_bytes",
            l.max_body_bytes as u64,
            1024,
            1 << 20,
        ),
        (
            "learn.max_reads_per_second",
            u64::from(l.max_reads_per_second),
            1,
            1_000_000,
        ),
    ]);
    for (i, name) in l.redact.iter().enumerate() {
        if name.trim().is_empty() {
            c.push(
                format!("learn.redact[{i}]"),
                "an empty field name redacts nothing",
                Some("name a JSON field, e.g. `ssn`, or remove the entry"),
            );
        }
    }
    Learn {
        enabled: l.enabled,
        max_routes: l.max_routes,
        samples_per_route: l.samples_per_route,
        max_body_bytes: l.max_body_bytes,
        max_reads_per_second: l.max_reads_per_second,
        redact: l.redact.iter().map(|n| n.trim().to_lowercase()).collect(),
    }
}

fn compile_safety(c: &mut Collector, s: SafetyFile) -> Safety {
    c.float_range(
        "safety.latency_target_ms",
        s.latency_target_ms,
        0.01,
        60_000.0,
        "the plan's target is 100",
    );
    c.range(
        "safety.breaker_cooldown_seconds",
        s.breaker_cooldown_seconds,
        1,
        3600,
    );
    Safety {
        latency_target_ms: s.latency_target_ms,
        breaker_cooldown: Duration::from_secs(s.breaker_cooldown_seconds),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
upstream: {address: "127.0.0.1:3000"}
rollout: {phase: 3}
families:
  cards:
    phase: 3
    mode: live
    rules:
      - match: "PATCH /api/cards/{id}"
        event: card.updated
        topics: ["board:{response.board_id}", "card:{id}"]
        invalidate: [["cards", "{id}"]]
  ui: {phase: 4, mode: live}
event_types:
  card.updated:
    family: cards
    schema: {type: object, required: [id]}
"#;

    #[test]
    fn a_conflict_check_needs_a_topic_known_before_forwarding() {
        let cfg = parse_str(&GOOD.replace("    rules:\n", "    conflicts: reject\n    rules:\n"))
            .expect("card:{id} is known from the path");
        assert_eq!(
            cfg.rules[0].conflicts,
            crate::config::model::Conflicts::Reject
        );
        assert_eq!(cfg.rules[0].conflict_topics, vec![1]);
        let blind = GOOD.replace(
            "topics: [\"board:{response.board_id}\", \"card:{id}\"]",
            "topics: [\"board:{response.board_id}\"]\n        conflicts: detect",
        );
        let err = parse_str(&blind).expect_err("no topic known before forwarding");
        let p = &err.problems()[0];
        assert_eq!(p.path, "families.cards.rules[0].conflicts");
        assert!(
            p.hint.as_deref().is_some_and(|h| h.contains("path")),
            "{p:?}"
        );
        let typo = GOOD.replace("    rules:\n", "    conflicts: rejct\n    rules:\n");
        let err = parse_str(&typo).expect_err("unknown keyword");
        assert_eq!(err.problems()[0].path, "families.cards.conflicts");
    }

    #[test]
    fn a_good_file_validates() {
        let cfg = parse_str(GOOD).expect("valid");
        assert_eq!(cfg.rules.len(), 1);
        assert_eq!(cfg.delivery("cards"), Delivery::Live);
        assert_eq!(cfg.delivery("ui"), Delivery::Off, "phase 4 not reached");
        assert_eq!(cfg.delivery("nope"), Delivery::Off);
        assert_eq!(cfg.version.len(), 12);
        let m: Vec<_> = cfg
            .matching_rules(&http::Method::PATCH, "/api/cards/9")
            .collect();
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn unworkable_parts_of_a_valid_file_are_warnings_with_paths_and_hints() {
        let cfg = parse_str(GOOD).expect("valid");
        let at: Vec<&str> = cfg.warnings.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(
            at,
            ["authorization", "families.ui.phase"],
            "{:?}",
            cfg.warnings
        );
        assert!(cfg.warnings.iter().all(|w| w.hint.is_some()));
        let with_auth = format!(
            "{GOOD}authorization:\n  rules:\n    - {{topic: \"team:*\", check: \"GET /api/me\"}}\n    - {{topic: \"b:{{b}}\", check: \"GET /api/b/{{b}}\"}}\n"
        );
        let cfg = parse_str(&with_auth).expect("valid");
        let at: Vec<&str> = cfg.warnings.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(at, ["authorization.rules[0].check", "families.ui.phase"]);
    }

    #[test]
    fn authorization_and_polling_problems_are_listed_with_their_paths() {
        let bad = r#"
upstream: {address: "127.0.0.1:3000"}
sse: {allowed_origins: ["https://ok.example", "*.example.com"]}
families:
  cards: {mode: live}
authorization:
  forward_headers: [cookie, x-api-key]
  rules:
    - topic: "board:{board}"
      check: "POST /api/boards/{board}"
    - topic: "user:{user}"
      check: "GET /api/users/{id}"
    - topic: "a{x}b"
      public: true
    - topic: "presence"
    - topic: "me:{user}"
      check: "HEAD /api/me"
      condition: "{response.user} == {user}"
    - topic: "t:{x}"
      public: true
      check: "GET /x"
polling:
  routes:
    - match: "POST /api/boards/{board}/cards"
      family: cards
      topics: ["board:{board}"]
    - match: "GET /api/boards/{board}/cards"
      family: ghosts
      topics: ["board:{request.id}"]
"#;
        assert_problems_at(
            bad,
            &[
                "sse.allowed_origins[1]",
                "authorization.forward_headers[1]",
                "authorization.rules[0].check",
                "authorization.rules[1].check",
                "authorization.rules[2].topic",
                "authorization.rules[3]",
                "authorization.rules[4].condition",
                "authorization.rules[5]",
                "polling.routes[0].match",
                "polling.routes[1].family",
                "polling.routes[1].topics[0]",
            ],
        );
    }

    #[test]
    fn the_otlp_endpoint_is_an_http_url() {
        let up = "upstream: {address: \"127.0.0.1:3000\"}\n";
        let cfg = parse_str(up).expect("valid");
        assert_eq!(cfg.telemetry.otlp_endpoint, None, "off by default");
        let cfg = parse_str(&format!(
            "{up}telemetry: {{otlp_endpoint: \"http://127.0.0.1:4318\"}}"
        ))
        .expect("valid");
        assert_eq!(
            cfg.telemetry.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4318")
        );
        for bad in [
            "127.0.0.1:4318",
            "grpc://collector:4317",
            "http://",
            "http:// x",
        ] {
            assert_problems_at(
                &format!("{up}telemetry: {{otlp_endpoint: \"{bad}\"}}"),
                &["telemetry.otlp_endpoint"],
            );
        }
    }

    #[test]
    fn tenancy_is_none_or_host() {
        let cfg = parse_str("upstream: {address: \"127.0.0.1:3000\"}").expect("valid");
        assert_eq!(cfg.upstream.tenancy, Tenancy::None, "the default");
        let cfg =
            parse_str("upstream: {address: \"127.0.0.1:3000\", tenancy: host}").expect("valid");
        assert_eq!(cfg.upstream.tenancy, Tenancy::Host);
        assert_problems_at(
            "upstream: {address: \"127.0.0.1:3000\", tenancy: path}",
            &["upstream.tenancy"],
        );
    }

    #[test]
    fn every_problem_is_listed_with_its_path() {
        let bad = r#"
upstream: {address: "nowhere"}
sse: {heartbeat_seconds: 0, bogus: 1}
store: {backend: mongo}
colour: blue
families:
  cards:
    mode: sometimes
    rules:
      - match: "GET /api/cards/{id}"
        event: card.unknown
        topics: ["board:{board}"]
      - match: "PATCH /api/cards/{id}"
        event: card.updated
        topics: ["card:{id"]
        data: 5
event_types:
  card.updated: {family: cards, schema: {type: 12}}
  other: {family: ghosts}
"#;
        assert_problems_at(
            bad,
            &[
                "upstream.address",
                "sse",
                "store.backend",
                "colour",
                "families.cards.mode",
                "families.cards.rules[0].match",
                "families.cards.rules[0].event",
                "families.cards.rules[0].topics[0]",
                "families.cards.rules[1].topics[0]",
                "families.cards.rules[1].data",
                "event_types.card.updated.schema",
                "event_types.other.family",
            ],
        );
    }

    /// `bad` is refused with a problem at each of these YAML paths (among others).
    fn assert_problems_at(bad: &str, expected: &[&str]) {
        let err = parse_str(bad).expect_err("invalid");
        let paths: Vec<String> = err.problems().into_iter().map(|p| p.path).collect();
        for expected in expected {
            assert!(
                paths.iter().any(|p| p == expected),
                "missing {expected} in {paths:?}"
            );
        }
    }

    #[test]
    fn non_ascii_origins_are_problems_not_panics() {
        for origin in [
            "http://é",
            "http://ééé/x",
            "https://日本.example",
            "ht\u{e9}tp://x",
            "http://",
        ] {
            let text = format!(
                "upstream: {{address: \"127.0.0.1:3000\"}}\nsse: {{allowed_origins: [{origin:?}]}}\n"
            );
            assert_problems_at(&text, &["sse.allowed_origins[0]"]);
        }
    }

    #[test]
    fn floats_out_of_range_are_problems_with_their_paths() {
        for v in [
            "1e-300",
            "0",
            "-1",
            ".nan",
            ".inf",
            "-.inf",
            "1e300",
            "0.0000001",
        ] {
            let text = format!(
                "upstream: {{address: \"127.0.0.1:3000\"}}\n\
                 sse: {{handshakes_per_client_per_second: {v}}}\n\
                 safety: {{latency_target_ms: {v}}}\n"
            );
            let err = parse_str(&text).expect_err(v);
            let problems = err.problems();
            for at in [
                "sse.handshakes_per_client_per_second",
                "safety.latency_target_ms",
            ] {
                let p = problems.iter().find(|p| p.path == at);
                assert!(
                    p.is_some_and(|p| p.hint.is_some()),
                    "{v}: no hinted problem at {at}: {problems:?}"
                );
            }
        }
        let text = "upstream: {address: \"127.0.0.1:3000\"}\n\
                    sse: {handshakes_per_client_per_second: 0.001}\n\
                    safety: {latency_target_ms: 0.5}\n";
        assert!(parse_str(text).is_ok());
    }

    #[test]
    fn huge_and_negative_integers_are_problems_not_panics() {
        for key in [
            "sse: {heartbeat_seconds: 18446744073709551615}",
            "sse: {heartbeat_seconds: 99999999999999999999999}",
            "sse: {max_topics_per_stream: -1}",
            "sse: {handshake_burst: 4294967296}",
            "threads: 18446744073709551615",
            "families: {a: {phase: 99999999999, priority: 300}}",
            "rollout: {phase: -3}",
            "store: {retention: {max_age_seconds: 18446744073709551615}}",
            "shutdown: {grace_period_seconds: 18446744073709551615}",
            "polling: {max_staleness_seconds: 18446744073709551615}",
            "authorization: {cache_ttl_seconds: 18446744073709551615}",
        ] {
            let text = format!("upstream: {{address: \"127.0.0.1:3000\"}}\n{key}\n");
            assert!(parse_str(&text).is_err(), "{key} should be refused");
        }
    }

    #[test]
    fn garbage_never_panics() {
        for text in [
            "",
            "[]",
            "- 1",
            ":",
            "upstream: 5",
            "families: [1]",
            "\0\u{7f}",
            "a: &x [*x]",
        ] {
            let _ = parse_str(text);
        }
    }
}
