//! The deploy files (deploy/) hold what they promise, checked against the real binary:
//! every metric the Grafana dashboard queries is in a scrape of /metrics after a little
//! traffic; the systemd unit verifies (`systemd-analyze verify`, when installed), reloads with
//! SIGHUP and gives the drain more time than the default grace period; the Helm chart's
//! values validate against its schema, its grace period outlasts the drain, its probe paths
//! answer on the admin listener without the token while /metrics wants it, and every
//! `.Values` path its templates use exists in values.yaml. (`helm` itself cannot be
//! installed here: no registry this machine reaches ships it, so the chart is checked at the
//! YAML level.)

mod common;

use common::{echo, Sidecar, SidecarOpts, SseClient};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("deploy/{path}: {e}"))
}

/// The sidecar's defaults (an otherwise empty config).
fn defaults() -> sse_sidecar::config::Config {
    sse_sidecar::config::parse_str("upstream: {address: \"127.0.0.1:1\"}").expect("defaults")
}

// ---------------------------------------------------------------- Grafana

/// PromQL words that are not metric names.
const PROMQL_WORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "le",
];

/// PromQL aggregation operators (they may stand before `by (...)` without a parenthesis).
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
];

/// The metric names a PromQL expression (or a Grafana `label_values(metric, label)` query)
/// selects: identifiers outside label matchers, ranges and grouping clauses, not followed by
/// `(` (a function or aggregation) and not a keyword.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let mut last_word = String::new();
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' | '[' | '"' => {
                let close = match c {
                    '{' => '}',
                    '[' => ']',
                    _ => '"',
                };
                i += 1;
                while i < chars.len() && chars[i] != close {
                    i += 1;
                }
                i += 1;
            }
            '(' if PROMQL_WORDS.contains(&last_word.as_str()) => {
                // by (...), on (...): label names.
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                i += 1;
                last_word.clear();
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j] == ' ' {
                    j += 1;
                }
                let is_call = j < chars.len() && chars[j] == '(';
                let is_label_arg = expr[..].contains("label_values(") && last_word == ",";
                if !is_call
                    && !is_label_arg
                    && !PROMQL_WORDS.contains(&word.to_ascii_lowercase().as_str())
                    && !AGGREGATIONS.contains(&word.as_str())
                {
                    names.insert(word.clone());
                }
                last_word = word;
            }
            '$' => {
                // A Grafana variable ($__rate_interval, $instance).
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            ',' => {
                last_word = ",".into();
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            _ => {
                last_word.clear();
                i += 1;
            }
        }
    }
    names
}

#[test]
fn the_promql_parser_finds_metric_names_only() {
    let got = metric_names(
        "histogram_quantile(0.95, sum by (le, class) (rate(a_b_bucket{instance=~\"$instance\"}[$__rate_interval]))) / on (x) c_total",
    );
    assert_eq!(
        got,
        BTreeSet::from(["a_b_bucket".to_string(), "c_total".to_string()])
    );
    assert_eq!(
        metric_names("sum by (instance) (g{a=\"b\"}) / max without (x) (h)"),
        BTreeSet::from(["g".to_string(), "h".to_string()])
    );
    assert_eq!(
        metric_names("label_values(up_metric, instance)"),
        BTreeSet::from(["up_metric".to_string()])
    );
}

/// Every PromQL expression in the dashboard: panel targets and templating queries.
fn dashboard_queries(d: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        ("query", serde_json::Value::Object(q)) => {
                            if let Some(s) = q.get("query").and_then(|s| s.as_str()) {
                                out.push(s.to_string());
                            }
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(d, &mut out);
    out
}

/// A live family, a shielded polled route and a stream: enough traffic for every series.
fn traffic_config() -> String {
    common::jobs_config(
        "polling:\n  routes:\n    - {match: \"GET /echo/{x}\", family: jobs, topics: [\"jobs\"], shield: true}",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_grafana_dashboard_queries_is_in_a_scrape_of_the_real_binary() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("grafana/sse-sidecar.json")).expect("dashboard JSON");
    let queries = dashboard_queries(&dashboard);
    let wanted: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
    assert!(
        wanted.len() >= 20,
        "the dashboard queries few metrics: {wanted:?}"
    );
    for must in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "sse_sidecar_tokio_worker_busy_seconds_total",
        "sse_sidecar_delivery_latency_seconds_bucket",
        "sse_sidecar_polls_total",
    ] {
        assert!(wanted.contains(must), "the dashboard shows {must}");
    }

    let backend = echo::start().await;
    let sc = Sidecar::start(&traffic_config(), &backend.to_string())
        .await
        .expect("sidecar");
    let mut s = SseClient::connect(&sc.url("/api/sse/events?topics=jobs"), None)
        .await
        .expect("connect");
    assert_eq!(s.status, 200);
    s.next_of("hello", T).await.expect("hello");
    let c = reqwest::Client::new();
    for _ in 0..3 {
        let r = c.post(sc.url("/status/200")).send().await.expect("post");
        assert_eq!(r.status(), 200);
    }
    s.next_of("job.done", T).await.expect("an event delivered");
    for _ in 0..2 {
        let r = c.get(sc.url("/echo/board")).send().await.expect("poll");
        assert_eq!(r.status(), 200);
    }
    // Some series appear with the safety controller's first tick: wait with a deadline.
    let missing = common::wait_for("every dashboard metric in a scrape", T, || async {
        let families = common::scraped_families(&sc.metrics().await.ok()?);
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|n| !common::scraped(&families, n))
            .collect();
        missing.is_empty().then_some(())
    })
    .await;
    if missing.is_err() {
        let families = common::scraped_families(&sc.metrics().await.expect("metrics"));
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|n| !common::scraped(&families, n))
            .collect();
        panic!("the dashboard queries metrics the sidecar does not export: {missing:?}");
    }
}

// ---------------------------------------------------------------- systemd

/// A unit file's `[Section] Key=value` pairs (repeated keys keep every value, in order).
fn unit_keys(text: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut section = String::new();
    let mut keys: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            keys.entry((section.clone(), k.trim().to_string()))
                .or_default()
                .push(v.trim().to_string());
        }
    }
    keys
}

#[test]
fn the_systemd_unit_reloads_with_sighup_drains_on_sigterm_and_is_hardened() {
    let text = read("systemd/sse-sidecar.service");
    let keys = unit_keys(&text);
    let get = |k: &str| {
        keys.get(&("Service".to_string(), k.to_string()))
            .and_then(|v| v.last())
            .map(String::as_str)
    };
    let reload = get("ExecReload").expect("ExecReload");
    assert!(
        reload.contains("kill") && reload.contains("-HUP") && reload.contains("$MAINPID"),
        "reload sends SIGHUP: {reload}"
    );
    assert_eq!(get("KillSignal").unwrap_or("SIGTERM"), "SIGTERM");
    let stop: u64 = get("TimeoutStopSec")
        .expect("TimeoutStopSec")
        .parse()
        .expect("TimeoutStopSec in seconds");
    let d = defaults();
    // Pingora ends the runtimes at most 2 s after the grace period.
    let drain_max = d.shutdown.grace_period.as_secs() + 2;
    assert!(
        stop > drain_max && stop > d.shutdown.drain_window.as_secs(),
        "TimeoutStopSec={stop} must outlast the drain ({drain_max} s)"
    );
    assert_eq!(get("Restart"), Some("on-failure"));
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(get(k), Some(v), "{k}");
    }
    assert!(get("LimitNOFILE").is_some_and(|n| n.parse::<u64>().is_ok_and(|n| n >= 4096)));
    let writable = get("ReadWritePaths").expect("ReadWritePaths");
    assert!(writable.contains("/var/lib/sse-sidecar"), "{writable}");
    let start = get("ExecStart").expect("ExecStart");
    assert!(start.contains("--config"), "{start}");
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: systemd-analyze is not installed (apt-get install systemd)");
        return;
    }
    // The unit names /usr/local/bin/sse-sidecar, which verify wants to exist: point it at
    // the binary under test.
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("sse-sidecar.service");
    let text =
        read("systemd/sse-sidecar.service").replace("/usr/local/bin/sse-sidecar", common::BIN);
    std::fs::write(&unit, text).expect("write");
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("run systemd-analyze");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("sse-sidecar.service"),
        "systemd-analyze verify: {}\n{err}",
        out.status
    );
}

// ---------------------------------------------------------------- Helm

fn chart(path: &str) -> String {
    read(&format!("helm/sse-sidecar/{path}"))
}

fn values() -> serde_yaml::Value {
    serde_yaml::from_str(&chart("values.yaml")).expect("values.yaml")
}

fn templates() -> Vec<(String, String)> {
    let dir = deploy("helm/sse-sidecar/templates");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("templates/")
        .map(|e| e.expect("entry").path())
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).expect("template"))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_chart_values_validate_against_its_schema_and_a_bad_value_does_not() {
    let schema: serde_json::Value =
        serde_json::from_str(&chart("values.schema.json")).expect("schema JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let v: serde_json::Value = serde_json::to_value(values()).expect("values as JSON");
    let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "values.yaml: {errors:?}");
    let mut bad = v.clone();
    bad["probes"]["readiness"]["path"] = "/ready".into();
    assert!(
        !validator.is_valid(&bad),
        "an unknown probe path is refused"
    );
    let mut bad = v.clone();
    bad["ports"]["admin"] = 70000.into();
    assert!(!validator.is_valid(&bad), "a port out of range is refused");
    let mut bad = v;
    bad["config"]["listen"] = "0.0.0.0:1".into();
    assert!(!validator.is_valid(&bad), "listen is the chart's");
}

#[test]
fn the_chart_grace_period_outlasts_the_drain() {
    let v = values();
    let n = |path: &[&str]| {
        path.iter()
            .fold(&v, |v, k| &v[*k])
            .as_u64()
            .unwrap_or_else(|| panic!("{path:?} is a number"))
    };
    let grace = n(&["shutdown", "gracePeriodSeconds"]);
    let window = n(&["shutdown", "drainWindowSeconds"]);
    let pre_stop = n(&["shutdown", "preStopSeconds"]);
    let termination = n(&["terminationGracePeriodSeconds"]);
    assert!(
        termination > pre_stop + grace + 2 && termination > window,
        "terminationGracePeriodSeconds {termination} vs preStop {pre_stop} + grace {grace} + 2"
    );
    let d = defaults();
    assert!(termination > d.shutdown.grace_period.as_secs() + 2);
    let (_, dep) = templates()
        .into_iter()
        .find(|(n, _)| n == "deployment.yaml")
        .expect("deployment.yaml");
    assert!(
        dep.contains("terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}")
    );
    let helpers = chart("templates/_helpers.tpl");
    assert!(helpers.contains("\"grace_period_seconds\" .Values.shutdown.gracePeriodSeconds"));
    assert!(helpers.contains("\"drain_window_seconds\" .Values.shutdown.drainWindowSeconds"));
}

/// Every `.Values.a.b` path in a template text.
fn values_paths(text: &str) -> Vec<Vec<String>> {
    text.match_indices(".Values.")
        .map(|(i, m)| {
            text[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                .collect::<String>()
        })
        .map(|p| {
            p.trim_end_matches('.')
                .split('.')
                .map(str::to_string)
                .collect()
        })
        .collect()
}

#[test]
fn every_values_path_the_templates_use_exists_in_values_yaml() {
    let v = values();
    let mut seen = 0;
    for (name, text) in templates() {
        for path in values_paths(&text) {
            seen += 1;
            let mut at = &v;
            for k in &path {
                let m = at.as_mapping().unwrap_or_else(|| {
                    panic!("{name}: .Values.{} goes into a non-map", path.join("."))
                });
                at = m.get(k.as_str()).unwrap_or_else(|| {
                    panic!("{name}: .Values.{} is not in values.yaml", path.join("."))
                });
            }
        }
    }
    assert!(seen > 20, "templates use {seen} values");
    let names: Vec<String> = templates().into_iter().map(|(n, _)| n).collect();
    for t in [
        "_helpers.tpl",
        "configmap.yaml",
        "deployment.yaml",
        "pdb.yaml",
        "service.yaml",
        "servicemonitor.yaml",
    ] {
        assert!(names.iter().any(|n| n == t), "templates/{t}");
    }
    let sm = chart("templates/servicemonitor.yaml");
    assert!(sm.starts_with("{{- if .Values.serviceMonitor.enabled }}"));
}

/// The probe paths of values.yaml answer 200 on the real admin listener without the token
/// (the kubelet sends none), while /metrics wants it (the ServiceMonitor sends it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_probe_paths_answer_on_the_admin_listener_without_the_token() {
    let v = values();
    let dep = chart("templates/deployment.yaml");
    for probe in ["liveness", "readiness"] {
        assert!(
            dep.contains(&format!("path: {{{{ .Values.probes.{probe}.path }}}}")),
            "the {probe} probe uses its value"
        );
    }
    assert_eq!(
        dep.matches("port: admin").count(),
        2,
        "probes on the admin port"
    );
    let token = "deploy-test-token-0123456789";
    let backend = echo::start().await;
    let sc = Sidecar::start_with(
        &common::jobs_config("admin: {token_env: SSE_SIDECAR_ADMIN_TOKEN}"),
        &backend.to_string(),
        SidecarOpts {
            env: vec![("SSE_SIDECAR_ADMIN_TOKEN".into(), token.into())],
        },
    )
    .await
    .expect("sidecar");
    let c = reqwest::Client::new();
    for probe in ["liveness", "readiness"] {
        let path = v["probes"][probe]["path"].as_str().expect("probe path");
        let r = c.get(sc.admin_url(path)).send().await.expect("probe");
        assert_eq!(r.status(), 200, "{probe} probe {path}");
    }
    let r = c
        .get(sc.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(r.status(), 401, "/metrics without the token");
    let r = c
        .get(sc.admin_url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .expect("metrics");
    assert_eq!(r.status(), 200, "/metrics with the token");
}

/// The config file the chart writes (values.config with the keys `_helpers.tpl` sets: listen,
/// admin.listen, admin.token_env, the two shutdown keys) is one the sidecar accepts, and
/// carries the chart's grace period. The default upstream (`app:80`) names a Kubernetes
/// Service that does not resolve here: it is replaced by an address before parsing.
#[test]
fn the_config_the_chart_writes_is_accepted_by_the_sidecar() {
    use serde_yaml::Value;
    let v = values();
    let mut cfg = v["config"].clone();
    let m = cfg.as_mapping_mut().expect("config is a map");
    let set = |m: &mut serde_yaml::Mapping, section: &str, key: &str, val: Value| {
        let s = m
            .entry(section.into())
            .or_insert_with(|| Value::Mapping(Default::default()));
        s.as_mapping_mut().expect("a map").insert(key.into(), val);
    };
    let port = |k: &str| v["ports"][k].as_u64().expect("port");
    m.insert("listen".into(), format!("0.0.0.0:{}", port("http")).into());
    set(
        m,
        "admin",
        "listen",
        format!("0.0.0.0:{}", port("admin")).into(),
    );
    set(m, "admin", "token_env", "SSE_SIDECAR_ADMIN_TOKEN".into());
    let grace = v["shutdown"]["gracePeriodSeconds"].clone();
    set(m, "shutdown", "grace_period_seconds", grace.clone());
    set(
        m,
        "shutdown",
        "drain_window_seconds",
        v["shutdown"]["drainWindowSeconds"].clone(),
    );
    set(m, "upstream", "address", "127.0.0.1:3000".into());
    let text = serde_yaml::to_string(&cfg).expect("yaml");
    let parsed = sse_sidecar::config::parse_str(&text)
        .unwrap_or_else(|e| panic!("the chart's config is refused: {e}\n{text}"));
    assert_eq!(Some(parsed.shutdown.grace_period.as_secs()), grace.as_u64());
    assert_eq!(parsed.admin.listen.port() as u64, port("admin"));
}
