//! The config tools on the real binary: `schema` (the committed docs/config.schema.json is
//! its output; every shipped config validates against it, a typo or a wrong type does
//! not), environment overrides (`SSE_SIDECAR__…`: shown by `check`, `check --sources`,
//! obeyed by the running sidecar, a wrong one refused with exit 2), and `check --diff`
//! against a running sidecar's admin API.

mod common;

use common::{echo, free_port, repo_root, wait_for, Sidecar, SidecarOpts, BIN};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(repo_root());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run sse-sidecar")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn schema() -> serde_json::Value {
    let out = run(&["schema"], &[]);
    assert!(out.status.success(), "schema: {:?}", text(&out));
    serde_json::from_slice(&out.stdout).expect("schema output is JSON")
}

fn yaml_file_as_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("read");
    let v: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    serde_json::to_value(v).expect("JSON-compatible YAML")
}

fn errors(validator: &jsonschema::Validator, doc: &serde_json::Value) -> Vec<String> {
    validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn the_committed_schema_is_the_binary_output() {
    let out = run(&["schema"], &[]);
    assert!(out.status.success());
    let committed = std::fs::read_to_string(repo_root().join("docs/config.schema.json"))
        .expect("docs/config.schema.json exists");
    assert!(
        committed == String::from_utf8_lossy(&out.stdout),
        "docs/config.schema.json is stale: regenerate it with \
         `cargo run -- schema > docs/config.schema.json` and commit it"
    );
}

#[test]
fn every_shipped_config_validates_and_references_the_schema() {
    let validator = jsonschema::validator_for(&schema()).expect("a valid JSON Schema");
    let mut seen = 0;
    for entry in std::fs::read_dir(repo_root().join("conf")).expect("conf/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        seen += 1;
        let doc = yaml_file_as_json(&path);
        assert_eq!(
            errors(&validator, &doc),
            Vec::<String>::new(),
            "{}",
            path.display()
        );
        let first = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            first.lines().next(),
            Some("# yaml-language-server: $schema=../docs/config.schema.json"),
            "{}: the first line points editors at the schema",
            path.display()
        );
    }
    assert!(seen >= 3, "conf/ has the shipped configs");
    // The valid fixtures too (broken.yaml is broken on purpose).
    for name in [
        "no_warnings.yaml",
        "warn_no_rollout.yaml",
        "warn_param_typed_number.yaml",
    ] {
        let doc = yaml_file_as_json(&repo_root().join("tests/fixtures").join(name));
        assert_eq!(errors(&validator, &doc), Vec::<String>::new(), "{name}");
    }
}

/// A document both the schema and the parser refuse, for the same reason.
fn refused_by_both(validator: &jsonschema::Validator, yaml: &str, dir: &Path) {
    let v: serde_yaml::Value = serde_yaml::from_str(yaml).expect("yaml");
    let doc = serde_json::to_value(v).expect("json");
    assert!(
        !errors(validator, &doc).is_empty(),
        "the schema accepts {yaml:?}"
    );
    let file = dir.join("c.yaml");
    std::fs::write(&file, yaml).expect("write");
    let out = run(&["check", file.to_str().expect("utf-8")], &[]);
    assert_eq!(out.status.code(), Some(1), "the parser accepts {yaml:?}");
}

#[test]
fn typos_and_wrong_types_fail_validation_as_in_the_parser() {
    let validator = jsonschema::validator_for(&schema()).expect("schema");
    let dir = tempfile::tempdir().expect("tmp");
    let up = "upstream: {address: \"127.0.0.1:1\"}\n";
    refused_by_both(
        &validator,
        &format!("{up}sse: {{enabeld: true}}"),
        dir.path(),
    );
    refused_by_both(
        &validator,
        &format!("{up}sse: {{enabled: maybe}}"),
        dir.path(),
    );
    refused_by_both(
        &validator,
        &format!("{up}sse: {{heartbeat_seconds: -1}}"),
        dir.path(),
    );
    refused_by_both(&validator, &format!("{up}sess: {{}}"), dir.path());
    refused_by_both(&validator, "sse: {enabled: true}", dir.path());
    let rule = "families: {f: {rules: [{match: \"POST /x\", event: e, topic: [t]}]}}";
    refused_by_both(&validator, &format!("{up}{rule}"), dir.path());
    let route = "polling: {routes: [{match: \"GET /x\", family: f, topics: [t], shiled: true}]}";
    refused_by_both(&validator, &format!("{up}{route}"), dir.path());
    // And the minimal file is accepted by both.
    let doc = serde_json::json!({"upstream": {"address": "127.0.0.1:1"}, "admin": null});
    assert!(errors(&validator, &doc).is_empty());
}

#[test]
fn check_shows_env_overrides_and_every_source() {
    let env = [
        ("SSE_SIDECAR__SSE__ENABLED", "false"),
        ("SSE_SIDECAR__Sse__Heartbeat_Seconds", "7"),
    ];
    let out = run(&["check", "conf/demo.yaml"], &env);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("sse.enabled = false  (env SSE_SIDECAR__SSE__ENABLED)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("sse.heartbeat_seconds = 7  (env SSE_SIDECAR__Sse__Heartbeat_Seconds)"),
        "{stdout}"
    );
    let out = run(&["check", "--sources", "conf/demo.yaml"], &env[..1]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    for line in [
        "  sse.enabled = false  (env SSE_SIDECAR__SSE__ENABLED)",
        "  sse.write_timeout_seconds = 10  (default)",
        "  admin.listen = \"127.0.0.1:9090\"  (file)",
        "  families.cards.mode = \"live\"  (file)",
        "  threads = 2  (default)",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{stdout}"
        );
    }
}

#[test]
fn a_bad_override_is_refused_naming_the_variable_and_the_key() {
    let out = run(
        &["check", "conf/demo.yaml"],
        &[("SSE_SIDECAR__SSE__ENABLD", "false")],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("SSE_SIDECAR__SSE__ENABLD"), "{stderr}");
    assert!(
        stderr.contains("sse.enabld") && stderr.contains("enabled"),
        "{stderr}"
    );
    // The start refuses it too, with the same exit code.
    let out = run(
        &["--config", "conf/demo.yaml"],
        &[("SSE_SIDECAR__NOPE", "1")],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("SSE_SIDECAR__NOPE") && stderr.contains("nope"),
        "{stderr}"
    );
    // A value of the wrong type fails the check with the key's path.
    let out = run(
        &["check", "conf/demo.yaml"],
        &[("SSE_SIDECAR__SSE__ENABLED", "[1")],
    );
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    let out = run(
        &["check", "conf/demo.yaml"],
        &[("SSE_SIDECAR__SSE__HEARTBEAT_SECONDS", "soon")],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sse"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_sidecar_obeys_an_override() {
    let backend = echo::start().await;
    let opts = SidecarOpts {
        env: vec![("SSE_SIDECAR__SSE__ENABLED".into(), "false".into())],
    };
    let sc = Sidecar::start_with("sse: {enabled: true}", &backend.to_string(), opts)
        .await
        .expect("sidecar");
    let status = sc.sse_status().await.expect("status");
    assert_eq!(status["mode"], "polling", "{status}");
    // The admin API shows the effective tree (file + env).
    let running: serde_json::Value = reqwest::get(sc.admin_url("/admin/config.json"))
        .await
        .expect("config.json")
        .json()
        .await
        .expect("json");
    assert_eq!(running["config"]["sse"]["enabled"], false, "{running}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_diff_lists_hot_and_restart_only_changes() {
    let backend = echo::start().await;
    let sc = Sidecar::start(
        "sse: {heartbeat_seconds: 15}\nthreads: 2",
        &backend.to_string(),
    )
    .await
    .expect("sidecar");
    let text_now = std::fs::read_to_string(&sc.config_path).expect("config");
    let mut v: serde_yaml::Value = serde_yaml::from_str(&text_now).expect("yaml");
    v["sse"]["heartbeat_seconds"] = 9.into();
    v["threads"] = 3.into();
    let edited = sc.dir.path().join("edited.yaml");
    std::fs::write(&edited, serde_yaml::to_string(&v).expect("yaml")).expect("write");
    let admin = sc.admin_url("");
    let out = run(
        &[
            "check",
            "--diff",
            edited.to_str().expect("utf-8"),
            "--admin",
            &admin,
        ],
        &[],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let line = |key: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .map(str::to_owned)
    };
    let hot = line("sse.heartbeat_seconds:").unwrap_or_else(|| panic!("no hot key in:\n{stdout}"));
    assert!(
        hot.contains("15 → 9") && !hot.contains("restart-only"),
        "{hot}"
    );
    let restart = line("threads:").unwrap_or_else(|| panic!("no restart-only key in:\n{stdout}"));
    assert!(
        restart.contains("2 → 3") && restart.contains("restart-only"),
        "{restart}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("  ")).count(),
        2,
        "{stdout}"
    );
    // The unchanged file: nothing to change.
    let out = run(
        &[
            "check",
            "--diff",
            sc.config_path.to_str().expect("utf-8"),
            "--admin",
            &admin,
        ],
        &[],
    );
    assert!(
        text(&out).0.contains("would change nothing"),
        "{:?}",
        text(&out)
    );
}

#[test]
fn check_diff_against_an_unreachable_admin_fails_clearly() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = run(&["check", "--diff", "conf/demo.yaml", "--admin", &url], &[]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot read the running config from") && stderr.contains("cannot connect"),
        "{stderr}"
    );
}

async fn running_config(sc: &Sidecar, token: Option<&str>) -> serde_json::Value {
    let mut req = reqwest::Client::new().get(sc.admin_url("/admin/config.json"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send()
        .await
        .expect("config.json")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_apply_again_on_every_reload() {
    let backend = echo::start().await;
    let opts = SidecarOpts {
        env: vec![("SSE_SIDECAR__SSE__ENABLED".into(), "false".into())],
    };
    let up = backend.to_string();
    let sc = Sidecar::start_with("sse: {enabled: true}", &up, opts)
        .await
        .expect("sidecar");
    sc.write_config("sse: {enabled: true, heartbeat_seconds: 9}", &up)
        .expect("write");
    let _ = reqwest::Client::new()
        .post(sc.admin_url("/admin/reload"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("reload");
    let tree = wait_for("the reloaded config", Duration::from_secs(10), || async {
        let v = running_config(&sc, None).await;
        (v["config"]["sse"]["heartbeat_seconds"] == 9).then_some(v)
    })
    .await
    .expect("reloaded");
    assert_eq!(tree["config"]["sse"]["enabled"], false, "{tree}");
    assert_eq!(sc.sse_status().await.expect("status")["mode"], "polling");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_diff_sends_the_admin_token() {
    let backend = echo::start().await;
    let opts = SidecarOpts {
        env: vec![("SSE_TEST_DIFF_TOKEN".into(), "s3cret-token".into())],
    };
    let sc = Sidecar::start_with(
        "admin: {token_env: SSE_TEST_DIFF_TOKEN}\nstore: {url: \"redis://u:pw@127.0.0.1:1\"}",
        &backend.to_string(),
        opts,
    )
    .await
    .expect("sidecar");
    let tree = running_config(&sc, Some("s3cret-token")).await;
    assert_eq!(
        tree["config"]["store"]["url"], "redis://u:***@127.0.0.1:1",
        "{tree}"
    );
    let file = sc.config_path.to_str().expect("utf-8").to_owned();
    let admin = sc.admin_url("");
    let out = run(&["check", "--diff", &file, "--admin", &admin], &[]);
    let (_, stderr) = text(&out);
    assert!(
        !out.status.success() && stderr.contains("--token-env"),
        "{stderr}"
    );
    let args = [
        "check",
        "--diff",
        &file,
        "--admin",
        &admin,
        "--token-env",
        "T",
    ];
    let out = run(&args, &[("T", "s3cret-token")]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("would change nothing"), "{stdout}");
}

#[test]
fn the_schema_words_are_the_parser_words() {
    let schema = schema();
    let defs = "/$defs";
    let table = [
        (
            "UpstreamFile/properties/tenancy",
            "upstream: {address: \"127.0.0.1:1\", tenancy: W}",
        ),
        ("SseFile/properties/compression", "sse: {compression: W}"),
        (
            "StoreFile/properties/backend",
            "store: {backend: W, url: \"redis://127.0.0.1:1\"}",
        ),
        ("StoreFile/properties/durability", "store: {durability: W}"),
        ("FamilyFile/properties/mode", "families: {f: {mode: W}}"),
        (
            "FamilyFile/properties/conflicts",
            "families: {f: {conflicts: W}}",
        ),
        ("LoggingFile/properties/format", "logging: {format: W}"),
    ];
    let validator = jsonschema::validator_for(&schema).expect("schema");
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("c.yaml");
    for (pointer, template) in table {
        let words = schema
            .pointer(&format!("{defs}/{pointer}/enum"))
            .and_then(|w| w.as_array())
            .unwrap_or_else(|| panic!("{pointer} has an enum"));
        // A file around the section (the upstream one carries the address itself).
        let file_of = |word: &str| {
            let yaml = template.replace('W', word);
            if yaml.starts_with("upstream") {
                yaml
            } else {
                format!("upstream: {{address: \"127.0.0.1:1\"}}\n{yaml}")
            }
        };
        for word in words.iter().map(|w| w.as_str().expect("a word")) {
            std::fs::write(&file, file_of(word)).expect("write");
            let out = run(&["check", file.to_str().expect("utf-8")], &[]);
            assert!(out.status.success(), "{}: {:?}", file_of(word), text(&out));
        }
        refused_by_both(&validator, &file_of("nonsense"), dir.path());
    }
}
