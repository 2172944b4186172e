//! The documentation (README.md, docs/*.md) stays true, checked against the repository and the
//! real binary: every `sse_sidecar_*` metric it names is in a scrape of /metrics after some
//! traffic (a histogram's `_bucket`, `_sum`, `_count` count as the histogram), every relative
//! markdown link points to a file that exists, and the README's quick-start config passes
//! `sse-sidecar check` without a warning.

mod common;

use common::{echo, Sidecar, SseClient};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every docs/*.md, as (path relative to the repo, text).
fn doc_files() -> Vec<(PathBuf, String)> {
    let mut paths = vec![PathBuf::from("README.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| PathBuf::from("docs").join(p.file_name().expect("name")))
        .collect();
    pages.sort();
    paths.extend(pages);
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(root().join(&p))
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, text)
        })
        .collect()
}

// ---------------------------------------------------------------- metric names

/// Every `sse_sidecar_<name>` written in `text` (a bare `sse_sidecar_*` is a wildcard, not a
/// name).
fn metric_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("sse_sidecar_") {
        let start = from + at;
        let preceded = start > 0 && (bytes[start - 1].is_ascii_alphanumeric());
        let mut end = start + "sse_sidecar_".len();
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        let name = text[start..end].trim_end_matches('_');
        if !preceded && name.len() > "sse_sidecar".len() {
            names.insert(name.to_string());
        }
        from = end;
    }
    names
}

#[test]
fn the_metric_name_scanner_finds_names_only() {
    let got = metric_names(
        "the `sse_sidecar_*` series, `sse_sidecar_receipts_total{outcome}`, sse_sidecar::config, \
         SSE_SIDECAR__SSE__ENABLED, `sse_sidecar_delivery_latency_seconds_bucket`.",
    );
    assert_eq!(
        got,
        BTreeSet::from([
            "sse_sidecar_receipts_total".to_string(),
            "sse_sidecar_delivery_latency_seconds_bucket".to_string(),
        ])
    );
}

/// Families of every kind the docs describe: live, shadow, a rule whose events fail their
/// schema, conflict detection, a shielded polled route, a checked topic and a short upstream
/// read timeout.
const TRAFFIC: &str = r#"
upstream: {read_timeout_ms: 300}
rollout: {phase: 1}
families:
  jobs:
    phase: 1
    rules:
      - match: "POST /status/{code}"
        event: job.done
        topics: ["jobs"]
        data: {code: "{code}"}
      - match: "DELETE /status/{code}"
        event: job.strict
        topics: ["jobs"]
        data: {code: "{code}"}
  drafts:
    phase: 1
    mode: shadow
    rules:
      - match: "PUT /status/{code}"
        event: draft.saved
        topics: ["drafts"]
        data: {code: "{code}"}
  cards:
    phase: 1
    conflicts: detect
    rules:
      - match: "PATCH /echo/cards/{id}"
        event: card.updated
        topics: ["card:{id}"]
        data: request
event_types:
  job.done: {family: jobs, schema: {type: object}}
  job.strict: {family: jobs, schema: {type: object, required: [missing]}}
  draft.saved: {family: drafts, schema: {type: object}}
  card.updated: {family: cards, schema: {type: object}}
polling:
  routes:
    - {match: "GET /echo/cards/{id}", family: cards, topics: ["card:{id}"], shield: true}
authorization:
  rules:
    - {topic: "jobs", check: "GET /status/200"}
    - {topic: "card:{id}", public: true}
learn:
  enabled: true
"#;

/// A mutation through the sidecar; returns its status.
async fn send(sc: &Sidecar, method: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut r = reqwest::Client::new()
        .request(m, sc.url(path))
        .header("content-type", "application/json")
        .body(r#"{"title":"t"}"#);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.expect("request");
    let status = r.status().as_u16();
    let _ = r.bytes().await;
    status
}

/// The `x-sse-version` a load of the card would hold.
async fn version(sc: &Sidecar, card: &str) -> String {
    let r = reqwest::get(sc.url(&format!("/echo/cards/{card}")))
        .await
        .expect("poll");
    assert_eq!(r.status(), 200);
    let v = r.headers().get("x-sse-version").expect("x-sse-version");
    v.to_str().expect("text").to_owned()
}

/// A polled answer that changes with no event to explain it, and non-canonical paths: a
/// mutation matching a rule (refused) and a GET of a shielded route (never shielded).
async fn poll_paths(sc: &Sidecar) {
    let c = reqwest::Client::new();
    for body in ["one", "two"] {
        let r = c.get(sc.url("/echo/cards/c2")).body(body).send().await;
        assert_eq!(r.expect("poll").status(), 200);
    }
    assert_eq!(send(sc, "POST", "//status/200", &[]).await, 400);
    let r = c.get(sc.url("//echo/cards/c1")).send().await.expect("get");
    let _ = r.bytes().await;
}

/// Mutations of every outcome: delivered with a receipt, refused origin ids, shadow, schema
/// failure, a conflict, an upstream timeout; polls; a reset; a reload; the kill switch.
async fn traffic(sc: &Sidecar) {
    let jobs = sc.url("/api/sse/events?topics=jobs&client=b1");
    let mut s = SseClient::connect(&jobs, None).await.expect("connect");
    assert_eq!(s.status, 200);
    s.next_of("hello", T).await.expect("hello");
    let mut cards = SseClient::connect(&sc.url("/api/sse/events?topics=card:c1"), None)
        .await
        .expect("connect");
    cards.next_of("hello", T).await.expect("hello");
    let ids = [("x-client-id", "b1.t1"), ("x-mutation-id", "m-1")];
    assert_eq!(send(sc, "POST", "/status/200", &ids).await, 200);
    s.next_of("job.done", T).await.expect("an event delivered");
    s.next_of("receipt", T).await.expect("a receipt");
    let long = "x".repeat(200);
    let refused = [("x-client-id", long.as_str())];
    assert_eq!(send(sc, "POST", "/status/201", &refused).await, 201);
    assert_eq!(send(sc, "PUT", "/status/200", &[]).await, 200);
    assert_eq!(send(sc, "DELETE", "/status/200", &[]).await, 200);
    let base = version(sc, "c1").await;
    let with_base = [("x-sse-base", base.as_str())];
    assert_eq!(send(sc, "PATCH", "/echo/cards/c1", &with_base).await, 200);
    cards.next_of("card.updated", T).await.expect("card event");
    assert_eq!(send(sc, "PATCH", "/echo/cards/c1", &with_base).await, 200);
    let _ = version(sc, "c1").await;
    poll_paths(sc).await;
    let slow = reqwest::get(sc.url("/slow/2000")).await.expect("slow");
    assert_eq!(slow.status(), 504, "the upstream read timeout");
    let mut reset = SseClient::connect(&jobs, Some("not-an-id"))
        .await
        .expect("connect");
    reset.next_of("reset", T).await.expect("a reset");
    let c = reqwest::Client::new();
    let post = |path: &str, body: &'static str| {
        c.post(sc.admin_url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert!(post("/admin/reload", "{}")
        .await
        .expect("reload")
        .status()
        .is_success());
    let off = r#"{"enabled": false, "reason": "docs test"}"#;
    assert!(post("/admin/kill-switch", off)
        .await
        .expect("kill")
        .status()
        .is_success());
    s.wait_end(T)
        .await
        .expect("the kill switch closes the stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_docs_name_is_in_a_scrape_of_the_real_binary() {
    let docs = doc_files();
    let wanted: BTreeSet<String> = docs.iter().flat_map(|(_, t)| metric_names(t)).collect();
    for must in [
        "sse_sidecar_tokio_workers",
        "sse_sidecar_tokio_alive_tasks",
        "sse_sidecar_tokio_global_queue_depth",
        "sse_sidecar_tokio_worker_busy_seconds_total",
        "sse_sidecar_tokio_worker_park_total",
        "sse_sidecar_receipts_total",
        "sse_sidecar_conflicts_total",
    ] {
        assert!(wanted.contains(must), "the docs list {must}");
    }
    let backend = echo::start().await;
    let sc = Sidecar::start(TRAFFIC, &backend.to_string())
        .await
        .expect("sidecar");
    traffic(&sc).await;
    // Some series appear with the safety controller's first tick: wait with a deadline.
    let found = common::wait_for("every documented metric in a scrape", T, || async {
        let families = common::scraped_families(&sc.metrics().await.ok()?);
        wanted
            .iter()
            .all(|n| common::scraped(&families, n))
            .then_some(())
    })
    .await;
    if found.is_err() {
        let families = common::scraped_families(&sc.metrics().await.expect("metrics"));
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|n| !common::scraped(&families, n))
            .collect();
        panic!("the docs name metrics the sidecar does not export: {missing:?}");
    }
}

// ---------------------------------------------------------------- links

/// The targets of the inline markdown links `[text](target)` in `text`, outside fenced code.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            match after.find(')') {
                Some(end) => {
                    out.push(after[..end].trim().to_string());
                    rest = &after[end + 1..];
                }
                None => break,
            }
        }
    }
    out
}

#[test]
fn the_link_scanner_finds_inline_links_outside_code() {
    let got = link_targets(
        "[a](docs/x.md) and [`b`](../conf/y.yaml#key)\n```\nlet z = v[i](0);\n```\n[c](#here)",
    );
    assert_eq!(got, vec!["docs/x.md", "../conf/y.yaml#key", "#here"]);
}

/// Whether a link target is relative to the file (not a URL, not an anchor in the page).
fn is_relative(target: &str) -> bool {
    !(target.is_empty()
        || target.starts_with('#')
        || target.starts_with('/')
        || target.contains("://")
        || target.starts_with("mailto:"))
}

#[test]
fn every_relative_link_in_the_docs_points_to_a_file_that_exists() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for (path, text) in doc_files() {
        let dir = root().join(path.parent().unwrap_or(Path::new("")));
        for target in link_targets(&text).into_iter().filter(|t| is_relative(t)) {
            let file = target.split('#').next().unwrap_or("");
            checked += 1;
            if !dir.join(file).exists() {
                broken.push(format!("{}: {target}", path.display()));
            }
        }
    }
    assert!(checked >= 15, "few relative links found: {checked}");
    assert!(broken.is_empty(), "links to missing files: {broken:#?}");
}

// ---------------------------------------------------------------- quick start

#[test]
fn the_readme_quick_start_config_passes_check_without_a_warning() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let section = readme
        .split("## Put it in front of your app")
        .nth(1)
        .expect("the quick-start section");
    let yaml = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("its YAML block");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("yours.yaml");
    std::fs::write(&file, yaml).expect("write");
    let out = std::process::Command::new(common::BIN)
        .arg("check")
        .arg(&file)
        .env_remove("DISABLE_SSE_SYSTEM")
        .output()
        .expect("run check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "check: {text}");
    assert!(text.contains(" 0 warning(s)"), "check warns: {text}");
}
