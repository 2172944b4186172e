//! `sse-sidecar check` on hostile or unworkable configs: problems and warnings with their
//! YAML paths and hints, never a panic (issue 15 items 15, 18, 27).

mod common;

use common::BIN;

/// Runs `sse-sidecar check --config tests/fixtures/<name>`: (exit code, stdout, stderr).
fn check(name: &str) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(common::repo_root().join("tests/fixtures").join(name))
        .output()
        .expect("run check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_non_ascii_origin_is_an_invalid_config_not_a_panic() {
    let (code, _, err) = check("non_ascii_origin.yaml");
    assert_eq!(code, Some(1), "the normal invalid-config exit code:\n{err}");
    assert!(err.contains("sse.allowed_origins[0]:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `check` accepts the fixture (exit 0, "OK") and warns at `path` with a hint.
fn assert_warns(name: &str, paths: &[&str]) -> String {
    let (code, out, err) = check(name);
    assert_eq!(code, Some(0), "{name}: warnings do not refuse:\n{err}");
    assert!(out.contains(": OK"), "{out}");
    for path in paths {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("warning: {path}:")))
            .unwrap_or_else(|| panic!("{name}: no warning at {path} in:\n{err}"));
        assert!(line.contains("(hint: "), "{line}");
    }
    err
}

#[test]
fn a_workable_config_has_no_warning() {
    let (code, out, err) = check("no_warnings.yaml");
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("warning"), "{err}");
    assert!(out.contains("0 warning(s)"), "{out}");
}

#[test]
fn check_warns_when_there_is_no_authorization_section() {
    let err = assert_warns("warn_no_authorization.yaml", &["authorization"]);
    assert!(err.contains("403"), "{err}");
}

#[test]
fn check_warns_when_rollout_is_left_out() {
    let err = assert_warns("warn_no_rollout.yaml", &["rollout"]);
    assert!(err.contains("every family is off"), "{err}");
}

#[test]
fn check_warns_about_a_family_above_the_rollout_phase() {
    let err = assert_warns("warn_family_above_rollout.yaml", &["families.cards.phase"]);
    assert!(err.contains("above rollout.phase 0"), "{err}");
}

#[test]
fn check_warns_about_a_path_parameter_typed_as_a_number() {
    let err = assert_warns(
        "warn_param_typed_number.yaml",
        &["families.cards.rules[0].data.id"],
    );
    assert!(err.contains("integer"), "{err}");
}

#[test]
fn check_warns_about_checks_that_ignore_the_topic() {
    let err = assert_warns(
        "warn_topic_independent_check.yaml",
        &[
            "authorization.rules[0].check",
            "authorization.rules[1].check",
        ],
    );
    // A check that uses every part (path or condition) is fine.
    assert!(!err.contains("authorization.rules[2]"), "{err}");
    assert!(!err.contains("authorization.rules[3]"), "{err}");
}

/// The same warnings are logged when the sidecar starts and when a reload applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_are_logged_at_start_and_on_reload() {
    let families = "families:\n  cards: {phase: 2, mode: live}\n";
    let backend = common::echo::start().await.to_string();
    let sc = common::Sidecar::start(families, &backend)
        .await
        .expect("sidecar");
    common::wait_for(
        "the start warning",
        std::time::Duration::from_secs(5),
        || {
            let log = sc.log();
            async move { (log.contains("config warning") && log.contains("rollout")).then_some(()) }
        },
    )
    .await
    .expect("rollout warning at start");
    sc.write_config(&format!("rollout: {{phase: 1}}\n{families}"), &backend)
        .expect("write");
    sc.proc.signal("HUP");
    common::wait_for(
        "the reload warning",
        std::time::Duration::from_secs(10),
        || {
            let log = sc.log();
            async move { log.contains("families.cards.phase").then_some(()) }
        },
    )
    .await
    .expect("family phase warning on reload");
}
