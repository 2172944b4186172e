//! The `check` command of the binary: validate a file (with the environment overrides) and
//! show which keys they set; `--sources` lists every leaf key with its source; `--diff`
//! compares the file with the running sidecar's config, read from its admin API
//! (`GET /admin/config.json`), marking the restart-only keys a reload would not apply.

use sse_sidecar::config::{self, diff, overrides, sources, Config};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Largest admin answer read.
const MAX_ANSWER: u64 = 8 << 20;

/// The file's effective config and its YAML tree (overrides applied), or exit 1 after
/// printing every problem.
fn load(path: &Path) -> Result<(Config, serde_yaml::Value, serde_yaml::Value), ExitCode> {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("{}: {e}", path.display());
        ExitCode::from(1)
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(&format!("cannot read it: {e}")))?;
    let (cfg, tree) = overrides::parse_with(&text, overrides::installed()).map_err(|e| fail(&e))?;
    let file = serde_yaml::from_str(&text).unwrap_or(serde_yaml::Value::Null);
    Ok((cfg, file, tree))
}

fn show(v: Option<&serde_json::Value>) -> String {
    v.map_or_else(|| "(computed at start)".to_owned(), |v| v.to_string())
}

/// `check FILE [--sources]`.
pub fn run(path: &Path, all_sources: bool) -> ExitCode {
    let (cfg, file, _) = match load(path) {
        Ok(l) => l,
        Err(code) => return code,
    };
    for w in &cfg.warnings {
        eprintln!("{}: warning: {w}", path.display());
    }
    println!(
        "{}: OK (version {}, {} families, {} rules, {} event types, {} warning(s))",
        path.display(),
        cfg.version,
        cfg.families.len(),
        cfg.rules.len(),
        cfg.event_types.len(),
        cfg.warnings.len()
    );
    let installed = overrides::installed();
    if !installed.is_empty() && !all_sources {
        println!("set by the environment (env > file > defaults):");
        for o in installed {
            let v = serde_json::to_value(&o.value).unwrap_or_default();
            println!("  {} = {v}  (env {})", o.key(), o.var);
        }
    }
    if all_sources {
        println!("every key (env > file > defaults):");
        for l in sources::leaves(&file, installed) {
            println!("  {} = {}  ({})", l.key, show(l.value.as_ref()), l.source);
        }
    }
    ExitCode::SUCCESS
}

/// The admin token from the variable `--token-env` names; exit 2 when it is not set.
pub fn token_from(token_env: Option<&str>) -> Result<Option<String>, ExitCode> {
    match token_env.map(std::env::var) {
        None => Ok(None),
        Some(Ok(t)) => Ok(Some(t)),
        Some(Err(_)) => {
            eprintln!(
                "sse-sidecar: --token-env names {:?}, which is not set",
                token_env.unwrap_or_default()
            );
            Err(ExitCode::from(2))
        }
    }
}

/// `check --diff FILE --admin URL [--token-env VAR]`.
pub fn diff(path: &Path, admin: &str, token_env: Option<&str>) -> ExitCode {
    let (new_cfg, _, new_tree) = match load(path) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let token = match token_from(token_env) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let running = match fetch_running(admin, token.as_deref()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("sse-sidecar: cannot read the running config from {admin}: {e}");
            return ExitCode::from(3);
        }
    };
    let old_tree = serde_yaml::to_value(&running).unwrap_or(serde_yaml::Value::Null);
    let restart = match config::parse_str(&serde_yaml::to_string(&old_tree).unwrap_or_default()) {
        Ok(old_cfg) => diff::restart_required(&old_cfg, &new_cfg),
        Err(e) => {
            eprintln!("sse-sidecar: the running config from {admin} does not compile here: {e}");
            return ExitCode::from(3);
        }
    };
    let new_json = overrides::redacted(serde_json::to_value(&new_tree).unwrap_or_default());
    let new_tree = serde_yaml::to_value(&new_json).unwrap_or(serde_yaml::Value::Null);
    let changes = sources::diff(
        &sources::leaves(&old_tree, &[]),
        &sources::leaves(&new_tree, &[]),
    );
    if changes.is_empty() {
        println!("{}: a reload would change nothing", path.display());
        return ExitCode::SUCCESS;
    }
    println!(
        "{}: a reload would change {} key(s) (running → file):",
        path.display(),
        changes.len()
    );
    for (key, old, new) in changes {
        let restart_only = restart
            .iter()
            .any(|r| key == *r || key.starts_with(&format!("{r}.")));
        let mark = if restart_only {
            "  [restart-only: not applied by a reload]"
        } else {
            ""
        };
        let show_side = |v: Option<serde_json::Value>| {
            v.map_or_else(|| "(absent)".to_owned(), |v| v.to_string())
        };
        println!("  {key}: {} → {}{mark}", show_side(old), show_side(new));
    }
    ExitCode::SUCCESS
}

/// `GET <admin>/admin/config.json`; the `config` member of the answer.
fn fetch_running(admin: &str, token: Option<&str>) -> Result<serde_json::Value, String> {
    let body = admin_get(admin, "/admin/config.json", token)?;
    let json: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("the answer is not JSON ({e})"))?;
    json.get("config")
        .cloned()
        .ok_or_else(|| "the answer has no `config`".to_owned())
}

/// `GET <admin><path>` over plain HTTP/1.1: the body of a 200 answer.
pub fn admin_get(admin: &str, path: &str, token: Option<&str>) -> Result<Vec<u8>, String> {
    let rest = admin
        .strip_prefix("http://")
        .ok_or("the admin URL must start with http:// (e.g. http://127.0.0.1:9090)")?;
    let authority = rest.split('/').next().unwrap_or_default();
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{authority:?} is not a host:port ({e})"))?
        .next()
        .ok_or_else(|| format!("{authority:?} resolves to no address"))?;
    let timeout = Duration::from_secs(5);
    let mut conn = TcpStream::connect_timeout(&addr, timeout).map_err(|e| {
        format!(
            "cannot connect to {addr}: {e} (is the sidecar running, and is this its admin.listen?)"
        )
    })?;
    let _ = conn.set_read_timeout(Some(timeout));
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n{auth}Connection: close\r\n\r\n");
    conn.write_all(req.as_bytes())
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut raw = Vec::new();
    conn.take(MAX_ANSWER)
        .read_to_end(&mut raw)
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    let (status, body) = split_answer(&raw)?;
    match status {
        200 => {}
        401 => {
            return Err(
                "401 unauthorized: pass --token-env with the variable holding the admin token"
                    .into(),
            )
        }
        s => return Err(format!("HTTP {s}: {}", String::from_utf8_lossy(&body))),
    }
    Ok(body)
}

/// The status and the body (de-chunked when chunked) of an HTTP/1.1 answer.
fn split_answer(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err("not an HTTP answer".into()),
    };
    let chunked = resp.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("chunked")
    });
    let status = resp.code.unwrap_or(0);
    let mut body = &raw[head..];
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::new();
    while let Ok(httparse::Status::Complete((n, size))) = httparse::parse_chunk_size(body) {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size == 0 || body.len() < n + size {
            break;
        }
        out.extend_from_slice(&body[n..n + size]);
        body = &body[(n + size + 2).min(body.len())..];
    }
    Ok((status, out))
}
