//! Serde mirror of the YAML file: every section and key the file may hold, with
//! `deny_unknown_fields` so a typo is reported instead of silently ignored. Nothing here is
//! validated beyond its shape; `validate.rs` turns these types into the immutable model.
//!
//! Defaults live here (one `default_*` function per key) so the reference file
//! `conf/sidecar.yaml` and the code agree in one place.

use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The sections a file may hold, in the order they are documented.
pub const SECTIONS: &[&str] = &[
    "listen",
    "threads",
    "upstream",
    "admin",
    "sse",
    "mutations",
    "store",
    "rollout",
    "families",
    "event_types",
    "shutdown",
    "logging",
    "safety",
    "authorization",
    "polling",
    "telemetry",
    "presence",
    "learn",
];

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    /// `host:port` of the legacy backend; a host name is resolved when the file is loaded.
    pub address: String,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: u64,
    #[serde(default = "default_write_timeout_ms")]
    pub write_timeout_ms: u64,
    /// `none` (default) or `host`: scope topics, the event log and the poll shield by Host.
    #[schemars(extend("enum" = ["none", "host"]))]
    #[serde(default = "default_tenancy")]
    pub tenancy: String,
}

fn default_tenancy() -> String {
    "none".to_owned()
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// Name of the environment variable that holds the admin bearer token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Further Host names (`name` or `name:port`) the admin listener answers to.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

impl Default for AdminFile {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            token_env: None,
            allowed_hosts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SseFile {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_sse_path")]
    pub path: String,
    #[serde(default = "default_heartbeat_seconds")]
    pub heartbeat_seconds: u64,
    #[serde(default = "default_retry_min_ms")]
    pub retry_min_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    #[serde(default = "default_max_topics")]
    pub max_topics_per_stream: usize,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_queue_max_bytes")]
    pub queue_max_bytes: usize,
    #[serde(default = "default_queued_bytes_total")]
    pub queued_bytes_total: usize,
    #[serde(default = "default_handshakes_per_second")]
    pub handshakes_per_client_per_second: f64,
    #[serde(default = "default_handshake_burst")]
    pub handshake_burst: u32,
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    #[serde(default = "default_write_timeout_seconds")]
    pub write_timeout_seconds: u64,
    #[serde(default = "default_replay_max_events")]
    pub replay_max_events: u64,
    #[schemars(extend("enum" = ["off", "gzip"]))]
    #[serde(default = "default_compression")]
    pub compression: String,
    /// Origins allowed to open streams cross-origin (with credentials). Empty: same-origin only.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Largest request head the listener accepts, on every path (431 beyond).
    #[serde(default = "default_max_request_head_bytes")]
    pub max_request_head_bytes: usize,
    /// Time a request head may take from its first byte to its end, however it trickles
    /// (408 beyond), on every path.
    #[serde(default = "default_request_head_timeout_seconds")]
    pub request_head_timeout_seconds: u64,
    /// Proxies (addresses or CIDR blocks) whose X-Forwarded-For / Forwarded name the client.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

fn default_max_request_head_bytes() -> usize {
    16 * 1024
}
fn default_request_head_timeout_seconds() -> u64 {
    10
}

impl Default for SseFile {
    fn default() -> Self {
        // Deserializing an empty mapping applies every serde default above.
        serde_yaml::from_str("{}").unwrap_or_else(|_| unreachable!("empty mapping"))
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MutationsFile {
    #[serde(default = "default_capture_max_bytes")]
    pub capture_max_bytes: usize,
    #[serde(default = "default_dedup_window_seconds")]
    pub dedup_window_seconds: u64,
}

impl Default for MutationsFile {
    fn default() -> Self {
        Self {
            capture_max_bytes: default_capture_max_bytes(),
            dedup_window_seconds: default_dedup_window_seconds(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    #[schemars(extend("enum" = ["memory", "sqlite", "redis"]))]
    #[serde(default = "default_store_backend")]
    pub backend: String,
    /// The sqlite file; `None` (or null): `default_sqlite_path()`.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    /// Prefix of the Redis keys (`<prefix>:events`, `:seq`, `:epoch`).
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    #[schemars(extend("enum" = ["relaxed", "strict"]))]
    #[serde(default = "default_durability")]
    pub durability: String,
    #[serde(default)]
    pub retention: RetentionFile,
}

impl Default for StoreFile {
    fn default() -> Self {
        Self {
            backend: default_store_backend(),
            path: None,
            url: None,
            key_prefix: default_key_prefix(),
            durability: default_durability(),
            retention: RetentionFile::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionFile {
    #[serde(default = "default_max_events")]
    pub max_events: u64,
    #[serde(default = "default_max_age_seconds")]
    pub max_age_seconds: u64,
}

impl Default for RetentionFile {
    fn default() -> Self {
        Self {
            max_events: default_max_events(),
            max_age_seconds: default_max_age_seconds(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutFile {
    #[serde(default)]
    pub phase: u32,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FamilyFile {
    #[serde(default)]
    pub phase: u32,
    #[schemars(extend("enum" = ["off", "shadow", "live"]))]
    #[serde(default = "default_mode")]
    pub mode: String,
    #[serde(default = "default_priority")]
    pub priority: u8,
    #[serde(default)]
    #[schemars(with = "Vec<RuleFile>")]
    pub rules: Vec<serde_yaml::Value>,
    /// The default `conflicts` of the family's rules (`off`, `detect`, `reject`).
    #[serde(default)]
    #[schemars(extend("enum" = ["off", "detect", "reject"]))]
    pub conflicts: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    #[serde(rename = "match")]
    pub matches: String,
    pub event: String,
    #[serde(default)]
    pub topics: Vec<String>,
    #[serde(default = "default_rule_data")]
    pub data: serde_json::Value,
    #[serde(default)]
    pub invalidate: Vec<Vec<serde_json::Value>>,
    /// Concurrent-edit check (`off`, `detect`, `reject`); the family's when absent.
    #[serde(default)]
    #[schemars(extend("enum" = ["off", "detect", "reject"]))]
    pub conflicts: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTypeFile {
    pub family: String,
    #[serde(default = "default_schema")]
    pub schema: serde_json::Value,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SafetyFile {
    #[serde(default = "default_latency_target_ms")]
    pub latency_target_ms: f64,
    #[serde(default = "default_breaker_cooldown_seconds")]
    pub breaker_cooldown_seconds: u64,
}

impl Default for SafetyFile {
    fn default() -> Self {
        Self {
            latency_target_ms: default_latency_target_ms(),
            breaker_cooldown_seconds: default_breaker_cooldown_seconds(),
        }
    }
}

fn default_latency_target_ms() -> f64 {
    100.0
}
fn default_breaker_cooldown_seconds() -> u64 {
    15
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShutdownFile {
    #[serde(default = "default_grace_period_seconds")]
    pub grace_period_seconds: u64,
    #[serde(default = "default_drain_window_seconds")]
    pub drain_window_seconds: u64,
    #[serde(default = "default_upgrade_sock")]
    pub upgrade_sock: String,
}

impl Default for ShutdownFile {
    fn default() -> Self {
        Self {
            grace_period_seconds: default_grace_period_seconds(),
            drain_window_seconds: default_drain_window_seconds(),
            upgrade_sock: default_upgrade_sock(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoggingFile {
    #[schemars(extend("enum" = ["human", "json"]))]
    #[serde(default = "default_log_format")]
    pub format: String,
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LoggingFile {
    fn default() -> Self {
        Self {
            format: default_log_format(),
            level: default_log_level(),
        }
    }
}

/// Optional OpenTelemetry trace export (restart-only).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetryFile {
    /// Base URL of an OTLP/HTTP (protobuf) collector, e.g. `http://127.0.0.1:4318`; spans
    /// go to `<url>/v1/traces`. Unset (default): nothing is exported unless
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationFile {
    #[serde(default = "default_forward_headers")]
    pub forward_headers: Vec<String>,
    #[serde(default = "default_auth_cache_ttl_seconds")]
    pub cache_ttl_seconds: u64,
    #[serde(default = "default_auth_failure_ttl_seconds")]
    pub failure_ttl_seconds: u64,
    #[serde(default = "default_auth_cache_max_entries")]
    pub cache_max_entries: usize,
    #[serde(default = "default_auth_check_timeout_ms")]
    pub check_timeout_ms: u64,
    #[serde(default = "default_auth_max_concurrent_checks")]
    pub max_concurrent_checks: usize,
    #[serde(default = "default_auth_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Kept raw so each rule is deserialized (and reported) alone.
    #[serde(default)]
    #[schemars(with = "Vec<AuthRuleFile>")]
    pub rules: Vec<serde_yaml::Value>,
}

impl Default for AuthorizationFile {
    fn default() -> Self {
        // Deserializing an empty mapping applies every serde default above.
        serde_yaml::from_str("{}").unwrap_or_else(|_| unreachable!("empty mapping"))
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthRuleFile {
    pub topic: String,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub check: Option<String>,
    #[serde(default)]
    pub condition: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PollingFile {
    #[serde(default = "default_max_staleness_seconds")]
    pub max_staleness_seconds: u64,
    #[serde(default = "default_coverage_window_seconds")]
    pub coverage_window_seconds: u64,
    #[serde(default = "default_coverage_grace_ms")]
    pub coverage_grace_ms: u64,
    #[serde(default = "default_max_tracked")]
    pub max_tracked: usize,
    #[serde(default)]
    pub slow_down_interval_ms: u64,
    /// Kept raw so each route is deserialized (and reported) alone.
    #[serde(default)]
    #[schemars(with = "Vec<PollRouteFile>")]
    pub routes: Vec<serde_yaml::Value>,
}

impl Default for PollingFile {
    fn default() -> Self {
        // Deserializing an empty mapping applies every serde default above.
        serde_yaml::from_str("{}").unwrap_or_else(|_| unreachable!("empty mapping"))
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PollRouteFile {
    #[serde(rename = "match")]
    pub matches: String,
    pub family: String,
    pub topics: Vec<String>,
    #[serde(default)]
    pub shield: bool,
}

fn default_max_staleness_seconds() -> u64 {
    30
}
fn default_coverage_window_seconds() -> u64 {
    3600
}
fn default_coverage_grace_ms() -> u64 {
    1000
}
fn default_max_tracked() -> usize {
    100_000
}

fn default_forward_headers() -> Vec<String> {
    vec!["cookie".into(), "authorization".into()]
}
fn default_auth_cache_ttl_seconds() -> u64 {
    30
}
fn default_auth_failure_ttl_seconds() -> u64 {
    2
}
fn default_auth_cache_max_entries() -> usize {
    100_000
}
fn default_auth_check_timeout_ms() -> u64 {
    2_000
}
fn default_auth_max_concurrent_checks() -> usize {
    64
}
fn default_auth_max_response_bytes() -> usize {
    64 * 1024
}

/// Families keyed by name, rules kept raw so each rule is deserialized (and reported) alone.
pub type FamiliesFile = BTreeMap<String, serde_yaml::Value>;
pub type EventTypesFile = BTreeMap<String, serde_yaml::Value>;

pub fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
pub fn default_threads() -> usize {
    2
}
fn default_connect_timeout_ms() -> u64 {
    2_000
}
fn default_read_timeout_ms() -> u64 {
    60_000
}
fn default_write_timeout_ms() -> u64 {
    60_000
}
fn default_admin_listen() -> String {
    "127.0.0.1:9090".into()
}
fn default_true() -> bool {
    true
}
fn default_sse_path() -> String {
    "/api/sse/events".into()
}
fn default_heartbeat_seconds() -> u64 {
    15
}
fn default_retry_min_ms() -> u64 {
    1_000
}
fn default_retry_max_ms() -> u64 {
    5_000
}
fn default_max_topics() -> usize {
    32
}
fn default_max_connections() -> usize {
    20_000
}
fn default_queue_max_bytes() -> usize {
    256 * 1024
}
fn default_write_timeout_seconds() -> u64 {
    10
}
fn default_replay_max_events() -> u64 {
    1_000
}
fn default_queued_bytes_total() -> usize {
    256 << 20
}
fn default_handshakes_per_second() -> f64 {
    10.0
}
fn default_handshake_burst() -> u32 {
    50
}
fn default_max_event_bytes() -> usize {
    64 * 1024
}
fn default_dedup_window_seconds() -> u64 {
    60
}
fn default_compression() -> String {
    "off".into()
}
fn default_capture_max_bytes() -> usize {
    256 * 1024
}
fn default_store_backend() -> String {
    "memory".into()
}
pub fn default_sqlite_path() -> String {
    "data/events.db".into()
}
fn default_key_prefix() -> String {
    "sse-sidecar".into()
}
fn default_durability() -> String {
    "relaxed".into()
}
fn default_max_events() -> u64 {
    100_000
}
fn default_max_age_seconds() -> u64 {
    86_400
}
fn default_mode() -> String {
    "live".into()
}
fn default_priority() -> u8 {
    5
}
fn default_rule_data() -> serde_json::Value {
    serde_json::Value::String("response".into())
}
fn default_schema() -> serde_json::Value {
    serde_json::json!({ "type": "object" })
}
fn default_grace_period_seconds() -> u64 {
    5
}
fn default_drain_window_seconds() -> u64 {
    5
}
/// A private directory (never a world-writable one such as /tmp itself, where another user
/// could put a socket there first and receive the listeners): `$XDG_RUNTIME_DIR/sse-sidecar/`,
/// `/run/sse-sidecar/` for root, else `<temp dir>/sse-sidecar-<uid>/`. The sidecar creates
/// the directory with mode 0700 and refuses a directory others can write (`app`).
fn default_upgrade_sock() -> String {
    let uid = crate::sys::effective_uid();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => std::path::PathBuf::from(d).join("sse-sidecar"),
        None if uid == 0 => std::path::PathBuf::from("/run/sse-sidecar"),
        None => std::env::temp_dir().join(format!("sse-sidecar-{uid}")),
    };
    dir.join("upgrade.sock").to_string_lossy().into_owned()
}
fn default_log_format() -> String {
    "human".into()
}
fn default_log_level() -> String {
    "info".into()
}

/// `presence`: who is on a topic, from the streams themselves (see `docs/collaboration.md`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PresenceFile {
    /// Topic patterns whose streams are members (`board:{board}`); none: presence is off.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Who a stream's subscriber is, asked of the backend; none: every stream is anonymous
    /// (counted, not listed).
    #[serde(default)]
    pub identity: Option<IdentityFile>,
    /// Most members a snapshot or a frame lists; past it only the count is exact.
    #[serde(default = "default_presence_max_listed")]
    pub max_listed: usize,
    /// Changes within this window leave as one `presence` frame per topic.
    #[serde(default = "default_presence_debounce_ms")]
    pub debounce_ms: u64,
    /// A member whose last stream closed is announced as left only after this, so a page
    /// reload or a reconnect does not flap.
    #[serde(default = "default_presence_leave_grace_ms")]
    pub leave_grace_ms: u64,
    /// Most members tracked per topic (more streams still join, as anonymous).
    #[serde(default = "default_presence_max_members_per_topic")]
    pub max_members_per_topic: usize,
    /// Most presence topics tracked at once (a stream over it joins none of the new ones).
    #[serde(default = "default_presence_max_topics")]
    pub max_topics: usize,
    /// Most presence topics one stream joins (its other granted topics are not joined).
    #[serde(default = "default_presence_max_topics_per_stream")]
    pub max_topics_per_stream: usize,
    /// Most bytes of one member's public fields (JSON); larger fields are left out.
    #[serde(default = "default_presence_max_field_bytes")]
    pub max_field_bytes: usize,
    /// With a shared store (Redis): how long an instance's members live without its
    /// refresh; an instance that dies is forgotten after this (then the grace).
    #[serde(default = "default_presence_expiry_seconds")]
    pub expiry_seconds: u64,
}

impl Default for PresenceFile {
    fn default() -> Self {
        // Deserializing an empty mapping applies every serde default above.
        serde_yaml::from_str("{}").unwrap_or_else(|_| unreachable!("empty mapping"))
    }
}

/// `presence.identity`: a backend request that says who the subscriber is.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityFile {
    /// `GET /path` sent with the subscriber's forwarded credential headers
    /// (`authorization.forward_headers`); a 2xx JSON answer identifies, anything else is
    /// anonymous.
    pub check: String,
    /// The member id, from the answer: `"{response.id}"`.
    #[serde(default = "default_identity_id")]
    pub id: String,
    /// Public fields shown with the member, from the answer: `{name: "{response.name}"}`.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// How long an identity is reused for the same credentials.
    #[serde(default = "default_identity_cache_ttl_seconds")]
    pub cache_ttl_seconds: u64,
}

fn default_presence_max_listed() -> usize {
    100
}
fn default_presence_debounce_ms() -> u64 {
    250
}
fn default_presence_leave_grace_ms() -> u64 {
    5_000
}
fn default_presence_max_members_per_topic() -> usize {
    10_000
}
fn default_presence_max_topics() -> usize {
    10_000
}
fn default_presence_max_topics_per_stream() -> usize {
    8
}
fn default_presence_max_field_bytes() -> usize {
    512
}
fn default_presence_expiry_seconds() -> u64 {
    30
}
fn default_identity_id() -> String {
    "{response.id}".into()
}
fn default_identity_cache_ttl_seconds() -> u64 {
    60
}

/// `learn`: record the shapes of the forwarded traffic and propose rules (`GET /admin/learn`,
/// `sse-sidecar learn`; see docs/learn.md). Hot: turning it on or off needs no restart.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LearnFile {
    /// Record the traffic's shapes (off by default).
    #[serde(default)]
    pub enabled: bool,
    /// Most route templates recorded; requests of further routes are counted, not recorded.
    #[serde(default = "default_learn_max_routes")]
    pub max_routes: usize,
    /// Example values kept per field and per path parameter (each cut to 32 characters).
    #[serde(default = "default_learn_samples_per_route")]
    pub samples_per_route: usize,
    /// Most bytes of a request or response body read for its shape; a longer body's shape
    /// is not recorded (a polled answer's changes still are).
    #[serde(default = "default_learn_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Most GET (and HEAD) requests recorded per second; the rest are forwarded without a
    /// sample. Mutations are always recorded: they are what the rules are made of.
    #[serde(default = "default_learn_max_reads_per_second")]
    pub max_reads_per_second: u32,
    /// Body fields whose values are never kept, by name (case-insensitive), on top of the
    /// built-in list (password, secret, token, key, authorization, cookie, email, phone, …).
    #[serde(default)]
    pub redact: Vec<String>,
}

impl Default for LearnFile {
    fn default() -> Self {
        // Deserializing an empty mapping applies every serde default above.
        serde_yaml::from_str("{}").unwrap_or_else(|_| unreachable!("empty mapping"))
    }
}

fn default_learn_max_routes() -> usize {
    200
}
fn default_learn_samples_per_route() -> usize {
    3
}
fn default_learn_max_body_bytes() -> usize {
    64 * 1024
}
fn default_learn_max_reads_per_second() -> u32 {
    1000
}
