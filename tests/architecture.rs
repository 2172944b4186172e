//! The layering rule, checked: every `crate::` path in `src/` points down a layer (or stays
//! inside its own module), never up, and the edges (proxy, sse, admin) never import each
//! other; and no top-level modules import each other in a circle, even within a layer.
//! The layers:
//!
//! ```text
//! L5  app  listener  main  check  lib   composition root (the only place that builds
//!                                       components) and the listener's front
//! L4  proxy  sse  admin                 edges: Pingora and sockets; never import each other
//! L3  state  control  pipeline  http    the runtime handle given to the edges, the safety
//!                                       controller, an event's pipeline, plain answers
//! L2  store  hub  derive  auth  polling  presence  learn  reload  upstream   engines
//! L1  config  safety                    validated data; pure state machines
//! L0  headers  events  wire  metrics  sys  telemetry               shared vocabulary
//! ```
//!
//! A new module gets its layer here first. A failure names the file and line of the import.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// (top-level module, layer).
const LAYERS: &[(&str, u8)] = &[
    ("headers", 0),
    ("wire", 0),
    ("sys", 0),
    ("metrics", 0),
    ("telemetry", 0),
    ("events", 0),
    ("config", 1),
    ("safety", 1),
    ("store", 2),
    ("hub", 2),
    ("derive", 2),
    ("auth", 2),
    ("polling", 2),
    ("presence", 2),
    ("learn", 2),
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
    ("check", 5),
    ("learn_cmd", 5),
    ("main", 5),
    ("lib", 5),
];

const EDGES: &[&str] = &["proxy", "sse", "admin"];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The module a source file belongs to.
fn module_of(rel: &Path) -> String {
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    parts.first().cloned().unwrap_or_default()
}

/// The module a `crate::` path names.
fn target_of(path: &str) -> String {
    path.split("::").next().unwrap_or("").to_string()
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

/// (file:line, from, to) for every `crate::` path that leaves its own module.
fn imports(src: &Path) -> Vec<(String, String, String)> {
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
                if to != from {
                    out.push((format!("{}:{}", rel.display(), n + 1), from.clone(), to));
                }
            }
        }
    }
    out
}

/// (file:line, from, to) for every import that breaks the rule.
fn violations(src: &Path) -> Vec<(String, String, String)> {
    imports(src)
        .into_iter()
        .filter(|(_, from, to)| {
            let (Some(lf), Some(lt)) = (layer(from), layer(to)) else {
                return true;
            };
            let sideways = EDGES.contains(&from.as_str()) && EDGES.contains(&to.as_str());
            lt > lf || sideways
        })
        .collect()
}

/// The import graph of top-level modules: module → (imported module, file:line of the
/// first import that makes the edge).
type Graph = std::collections::BTreeMap<String, Vec<(String, String)>>;

/// A cycle among top-level modules (`a (file:line) -> b (file:line) -> … -> a`), if there
/// is one. Modules of one layer may import each other, but never in a circle.
fn cycle(src: &Path) -> Option<Vec<String>> {
    let mut graph = Graph::new();
    for (at, from, to) in imports(src) {
        let (f, t) = (from, to);
        if f != t
            && !graph
                .get(&f)
                .is_some_and(|e| e.iter().any(|(n, _)| *n == t))
        {
            graph.entry(f).or_default().push((t, at));
        }
    }
    let nodes: Vec<String> = graph.keys().cloned().collect();
    let mut done = BTreeSet::new();
    nodes
        .iter()
        .find_map(|start| visit(&graph, start, &mut Vec::new(), &mut done))
}

/// Depth-first search from `node`; `path` holds (module, file:line of its step onwards).
fn visit(
    graph: &Graph,
    node: &str,
    path: &mut Vec<(String, String)>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(i) = path.iter().position(|(n, _)| n == node) {
        let mut steps: Vec<String> = path[i..]
            .iter()
            .map(|(n, at)| format!("{n} ({at})"))
            .collect();
        steps.push(node.to_string());
        return Some(steps);
    }
    if done.contains(node) {
        return None;
    }
    for (next, at) in graph.get(node).into_iter().flatten() {
        path.push((node.to_string(), at.clone()));
        if let Some(c) = visit(graph, next, path, done) {
            return Some(c);
        }
        path.pop();
    }
    done.insert(node.to_string());
    None
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    if let Some(c) = cycle(&src) {
        panic!("an import cycle: {}", c.join(" -> "));
    }
}

#[test]
fn the_checker_sees_a_cycle_within_a_layer() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (file, text) in [
        ("store/mod.rs", "use crate::auth::Authorizer;\n"),
        ("auth/mod.rs", "fn f() { crate::store::open(); }\n"),
    ] {
        let path = dir.path().join(file);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    assert!(
        violations(dir.path()).is_empty(),
        "both are L2: no layer is broken"
    );
    let c = cycle(dir.path()).expect("a cycle");
    assert_eq!(
        c.first().and_then(|s| s.split(' ').next()),
        Some("auth"),
        "{c:?}"
    );
    assert!(c.iter().any(|s| s.contains("store/mod.rs:1")), "{c:?}");
}

#[test]
fn imports_point_down_and_edges_never_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    let found: Vec<String> = found
        .iter()
        .map(|(at, from, to)| match (layer(from), layer(to)) {
            (Some(lf), Some(lt)) => format!("{at}: {from} (L{lf}) imports {to} (L{lt})"),
            _ => format!("{at}: {from} imports {to}: give both a layer in LAYERS"),
        })
        .collect();
    assert!(
        found.is_empty(),
        "imports that point up or sideways between edges:\n{}",
        found.join("\n")
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
