//! The layering rule, checked: every `crate::` path in `src/` points down a layer (or stays
//! inside its own module), never up, and the edges (proxy, sse, admin) never import each
//! other. The layers:
//!
//! ```text
//! L5  app, listener, main, lib  composition root (the only place that builds components)
//!                              and the listener's front, the transport edge
//! L4  proxy  sse  admin        edges: Pingora and sockets; never import each other
//! L3  state  control  pipeline  http   the runtime handle given to the edges, the safety
//!                              controller, what happens to an event once it exists; answers
//! L2  store  events::{hub, derive}  auth  polling  reload  upstream   engines
//! L1  config  safety           validated data; pure state machines
//! L0  wire  sys  metrics  events::{types, route, template, pattern, condition}  events   vocabulary
//! ```
//!
//! A new module gets its layer here first. Imports that break the rule today, while the
//! structure moves towards it, are listed in `KNOWN` with the reason; the test fails on any
//! other, and on a `KNOWN` entry that no longer occurs (so the list only shrinks).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// (module, layer). A module is a top-level module, or `events::<sub>` for the parts of
/// `events`, whose pieces sit on different layers.
const LAYERS: &[(&str, u8)] = &[
    ("wire", 0),
    ("sys", 0),
    ("metrics", 0),
    ("events", 0),
    ("events::types", 0),
    ("events::route", 0),
    ("events::template", 0),
    ("events::pattern", 0),
    ("events::condition", 0),
    ("config", 1),
    ("safety", 1),
    ("store", 2),
    ("events::hub", 2),
    ("events::derive", 2),
    ("auth", 2),
    ("polling", 2),
    ("reload", 2),
    ("upstream", 2),
    ("state", 3),
    ("control", 3),
    ("pipeline", 3),
    ("http", 3),
    ("proxy", 4),
    ("sse", 4),
    ("admin", 4),
    ("app", 5),
    ("listener", 5),
    ("main", 5),
    ("lib", 5),
];

const EDGES: &[&str] = &["proxy", "sse", "admin"];

/// Imports that break the rule today: (importing module, imported module, why it is still
/// there). Each disappears with a move; none may be added.
const KNOWN: &[(&str, &str, &str)] = &[];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The module a source file belongs to.
fn module_of(rel: &Path) -> String {
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    match parts.as_slice() {
        [top, sub, ..] if top == "events" && sub != "mod" => format!("events::{sub}"),
        [top, ..] => top.clone(),
        [] => String::new(),
    }
}

/// The module a `crate::` path names.
fn target_of(path: &str) -> String {
    let mut it = path.split("::");
    let top = it.next().unwrap_or("");
    match (top, it.next()) {
        ("events", Some(sub)) if layer(&format!("events::{sub}")).is_some() => {
            format!("events::{sub}")
        }
        _ => top.to_string(),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every `crate::a::b` path on a line (comments left out).
fn crate_paths(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(after.len());
        found.push(after[..end].trim_end_matches(':').to_string());
        rest = &after[end..];
    }
    found
}

/// (file:line, from, to) for every import that breaks the rule.
fn violations(src: &Path) -> Vec<(String, String, String)> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap_or(&file).to_path_buf();
        let from = module_of(&rel);
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            for path in crate_paths(line) {
                let to = target_of(&path);
                if to == from {
                    continue;
                }
                let (Some(lf), Some(lt)) = (layer(&from), layer(&to)) else {
                    out.push((format!("{}:{}", rel.display(), n + 1), from.clone(), to));
                    continue;
                };
                let sideways = EDGES.contains(&from.as_str()) && EDGES.contains(&to.as_str());
                if lt > lf || sideways {
                    out.push((format!("{}:{}", rel.display(), n + 1), from.clone(), to));
                }
            }
        }
    }
    out
}

#[test]
fn imports_point_down_and_edges_never_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    let known = |from: &str, to: &str| KNOWN.iter().any(|(f, t, _)| *f == from && *t == to);
    let new: Vec<String> = found
        .iter()
        .filter(|(_, from, to)| !known(from, to))
        .map(|(at, from, to)| match (layer(from), layer(to)) {
            (Some(lf), Some(lt)) => format!("{at}: {from} (L{lf}) imports {to} (L{lt})"),
            _ => format!("{at}: {from} imports {to}: give both a layer in LAYERS"),
        })
        .collect();
    assert!(
        new.is_empty(),
        "imports that point up or sideways between edges:\n{}",
        new.join("\n")
    );
    let used: BTreeSet<(&str, &str)> = found
        .iter()
        .map(|(_, f, t)| (f.as_str(), t.as_str()))
        .collect();
    let stale: Vec<String> = KNOWN
        .iter()
        .filter(|(f, t, _)| !used.contains(&(*f, *t)))
        .map(|(f, t, why)| format!("{f} -> {t} ({why})"))
        .collect();
    assert!(
        stale.is_empty(),
        "KNOWN lists imports that are gone (remove them, the list only shrinks):\n{}",
        stale.join("\n")
    );
}

#[test]
fn the_checker_sees_an_upward_import() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("wire")).expect("mkdir");
    std::fs::write(
        dir.path().join("wire/mod.rs"),
        "use crate::state::State; // an upward import\n// crate::proxy in a comment is fine\n",
    )
    .expect("write");
    let found = violations(dir.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "wire/mod.rs:1");
    assert_eq!(
        (found[0].1.as_str(), found[0].2.as_str()),
        ("wire", "state")
    );
}
