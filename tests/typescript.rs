//! The typed client package as an app sees it: `npm pack` clients/js, install the tarball
//! into a temporary copy of clients/js/test/ts-app, write the output of the real binary's
//! `sse-sidecar types --config conf/demo.yaml` into it and type-check it with the package's
//! pinned TypeScript (clients/js devDependency, installed by scripts/prereqs.sh): the app
//! that uses the client, the React Query adapter, the React hooks and `card.updated`'s data
//! compiles; a handler reading a field the schema does not have does not, and the error
//! names the field. No network: the tarball installs offline (it has no dependencies).

mod common;

use common::{repo_root, BIN};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `cmd`, failing the test with its output when it cannot start.
fn run(cmd: &mut Command, what: &str) -> Output {
    match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!("{what}: cannot run {cmd:?}: {e}"),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn tsc() -> PathBuf {
    let tsc = repo_root().join("clients/js/node_modules/typescript/bin/tsc");
    assert!(
        tsc.exists(),
        "{} is missing: install the client package's devDependencies \
         (scripts/prereqs.sh test, or `cd clients/js && npm ci`)",
        tsc.display()
    );
    tsc
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            if entry.file_name() != "node_modules" {
                copy_dir(&entry.path(), &target);
            }
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A temporary copy of the scratch app with the packed package installed and the demo's
/// event types in src/sse-events.ts.
fn scratch_app(dir: &Path) -> PathBuf {
    let pack = dir.join("pack");
    std::fs::create_dir_all(&pack).unwrap();
    let out = run(
        Command::new("npm")
            .args(["pack", "--silent", "--pack-destination"])
            .arg(&pack)
            .current_dir(repo_root().join("clients/js")),
        "npm pack",
    );
    assert!(out.status.success(), "npm pack failed:\n{}", text(&out));
    let tarball = std::fs::read_dir(&pack)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "tgz"))
        .expect("npm pack wrote a .tgz");

    let app = dir.join("app");
    copy_dir(&repo_root().join("clients/js/test/ts-app"), &app);
    let out = run(
        Command::new("npm")
            .args([
                "install",
                "--offline",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
            ])
            .arg(&tarball)
            .current_dir(&app),
        "npm install",
    );
    assert!(
        out.status.success(),
        "installing the tarball failed:\n{}",
        text(&out)
    );

    let out = run(
        Command::new(BIN)
            .args(["types", "--config"])
            .arg(repo_root().join("conf/demo.yaml")),
        "sse-sidecar types",
    );
    assert!(
        out.status.success(),
        "sse-sidecar types failed:\n{}",
        text(&out)
    );
    std::fs::write(app.join("src/sse-events.ts"), &out.stdout).unwrap();
    app
}

fn type_check(app: &Path, project: &str) -> Output {
    run(
        Command::new("node")
            .arg(tsc())
            .args(["--noEmit", "-p", project])
            .current_dir(app),
        "tsc",
    )
}

#[test]
fn a_packed_client_and_the_generated_event_types_type_check_an_app() {
    let tmp = tempfile::tempdir().unwrap();
    let app = scratch_app(tmp.path());
    let installed = app.join("node_modules/@sse-sidecar/client");
    for file in [
        "sse-client.js",
        "react-query.js",
        "react.js",
        "types/react.d.ts",
    ] {
        assert!(installed.join(file).exists(), "the tarball lacks {file}");
    }

    // The entries resolve at run time too (the React entry needs `react`, which this app
    // does not install: it is an optional peer dependency).
    let out = run(
        Command::new("node")
            .args(["--input-type=module", "-e"])
            .arg(
                "import { createSseClient } from '@sse-sidecar/client';\n\
                 import { connectReactQuery } from '@sse-sidecar/client/react-query';\n\
                 console.log(typeof createSseClient, typeof connectReactQuery);",
            )
            .current_dir(&app),
        "node",
    );
    assert_eq!(text(&out).trim(), "function function", "{}", text(&out));

    let ok = type_check(&app, "tsconfig.json");
    assert!(
        ok.status.success(),
        "the app using the client, the adapter, the hooks and card.updated's data \
         should compile:\n{}",
        text(&ok)
    );

    let wrong = type_check(&app, "tsconfig.wrong-field.json");
    let msg = text(&wrong);
    assert!(
        !wrong.status.success(),
        "reading a field the schema lacks compiled:\n{msg}"
    );
    assert!(
        msg.contains("wrong-field.ts")
            && msg.contains("Property 'headline' does not exist on type 'CardUpdated'"),
        "the error should name the field and the type:\n{msg}"
    );
}

#[test]
fn types_prints_every_event_type_of_the_demo_and_refuses_a_bad_config() {
    let out = run(
        Command::new(BIN)
            .args(["types", "--config"])
            .arg(repo_root().join("conf/demo.yaml")),
        "sse-sidecar types",
    );
    assert!(out.status.success(), "{}", text(&out));
    let ts = String::from_utf8_lossy(&out.stdout);
    for line in [
        "export interface CardUpdated {\n",
        "\n  board_id: string;\n",
        "\n  column?: string;\n",
        "\n  title: string;\n",
        "  \"card.updated\": SseEventFrame<\"card.updated\", \"cards\", CardUpdated>;",
        "  \"message.posted\": SseEventFrame<\"message.posted\", \"conversations\", MessagePosted>;",
        "export type SseEvent = SseEventMap[SseEventType];",
    ] {
        assert!(ts.contains(line), "missing {line:?} in\n{ts}");
    }

    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "event_types:\n  x.y:\n    family: nope\n    schema: 7\n",
    )
    .unwrap();
    let out = run(
        Command::new(BIN).args(["types", "--config"]).arg(&bad),
        "sse-sidecar types",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(out.stdout.is_empty(), "no declarations for a bad config");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml") && err.contains("event_types"),
        "{err}"
    );
}
