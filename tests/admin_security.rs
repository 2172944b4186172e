//! The admin listener against other sites and odd setups, on the real binary: cross-site
//! form posts and foreign origins (CSRF), a rebound host name (DNS rebinding), the
//! dashboard's own requests, and a token variable that is set in the config but empty.

mod common;

use common::{echo, Sidecar};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(5);

const CONFIG: &str = r#"
upstream: {address: "127.0.0.1:1"}
rollout: {phase: 1}
families:
  jobs:
    phase: 1
    rules:
      - match: "POST /status/{code}"
        event: job.done
        topics: ["jobs"]
        data: {code: "{code}"}
event_types:
  job.done:
    family: jobs
"#;

/// One raw HTTP/1.1 request (headers exactly as given, `Connection: close`): status, body.
async fn raw(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the admin listener");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn sse_mode(sc: &Sidecar) -> String {
    sc.sse_status().await.expect("status")["mode"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_form_post_is_refused_415_and_sse_stays_on() {
    let backend = echo::start().await;
    let sc = Sidecar::start(CONFIG, &backend.to_string())
        .await
        .expect("sidecar");
    let host = format!("127.0.0.1:{}", sc.admin_port);
    // What `<form enctype="text/plain" method="post">` sends (a simple request, no preflight).
    for (ct, body) in [
        ("text/plain", r#"{"enabled": false, "reason": "csrf"}"#),
        ("application/x-www-form-urlencoded", "enabled=false"),
        ("multipart/form-data; boundary=x", "--x--"),
    ] {
        let (status, text) = raw(
            sc.admin_port,
            "POST",
            "/admin/kill-switch",
            &[("Host", &host), ("Content-Type", ct)],
            body,
        )
        .await;
        assert_eq!(status, 415, "{ct}: {text}");
        assert!(
            text.contains("application/json"),
            "the body says what is wanted: {text}"
        );
    }
    let (status, _) = raw(
        sc.admin_port,
        "POST",
        "/admin/publish",
        &[("Host", &host), ("Content-Type", "text/plain")],
        r#"{"type": "job.done", "topics": ["jobs"], "data": {"code": "1"}}"#,
    )
    .await;
    assert_eq!(status, 415, "publish");
    // A JSON body without any Content-Type (a Blob body) is refused too.
    let (status, _) = raw(
        sc.admin_port,
        "POST",
        "/admin/kill-switch",
        &[("Host", &host)],
        r#"{"enabled": false}"#,
    )
    .await;
    assert_eq!(status, 415, "no content type");
    assert_eq!(sse_mode(&sc).await, "sse", "the kill switch was not thrown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_or_a_cross_site_fetch_is_refused_403() {
    let backend = echo::start().await;
    let sc = Sidecar::start(CONFIG, &backend.to_string())
        .await
        .expect("sidecar");
    let host = format!("127.0.0.1:{}", sc.admin_port);
    let json = ("Content-Type", "application/json");
    let kill = r#"{"enabled": false, "reason": "csrf"}"#;
    for extra in [
        ("Origin", "http://evil.example"),
        ("Origin", "null"),
        // The legacy app on another port of the same machine: same site, another origin.
        ("Origin", "http://127.0.0.1:8080"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Site", "same-site"),
    ] {
        let (status, text) = raw(
            sc.admin_port,
            "POST",
            "/admin/kill-switch",
            &[("Host", &host), json, extra],
            kill,
        )
        .await;
        assert_eq!(status, 403, "{extra:?}: {text}");
        for path in ["/admin/status.json", "/metrics", "/admin/stream"] {
            let (status, _) = raw(sc.admin_port, "GET", path, &[("Host", &host), extra], "").await;
            assert_eq!(status, 403, "GET {path} with {extra:?}");
        }
    }
    assert_eq!(sse_mode(&sc).await, "sse", "the kill switch was not thrown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_host_name_is_refused_421_and_probes_keep_working() {
    let backend = echo::start().await;
    let sc = Sidecar::start(CONFIG, &backend.to_string())
        .await
        .expect("sidecar");
    let port = sc.admin_port;
    for host in [
        format!("evil.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        "localhost".to_string(),
    ] {
        for path in ["/admin/status.json", "/metrics", "/admin"] {
            let (status, text) = raw(port, "GET", path, &[("Host", &host)], "").await;
            assert_eq!(status, 421, "GET {path} with Host {host}: {text}");
            assert!(
                text.contains("admin.allowed_hosts"),
                "the body says how to fix: {text}"
            );
        }
        let (status, _) = raw(
            port,
            "POST",
            "/admin/kill-switch",
            &[("Host", &host), ("Content-Type", "application/json")],
            r#"{"enabled": false}"#,
        )
        .await;
        assert_eq!(status, 421, "POST with Host {host}");
    }
    // What Prometheus and the kubelet send: the address they connect to.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ] {
        let (status, text) = raw(port, "GET", "/metrics", &[("Host", &host)], "").await;
        assert_eq!(status, 200, "metrics with Host {host}");
        assert!(text.contains("sse_sidecar_"), "metrics text");
    }
    // Health checks reveal nothing and change nothing: any Host.
    let (status, _) = raw(port, "GET", "/healthz", &[("Host", "evil.example")], "").await;
    assert_eq!(status, 200);
    assert_eq!(sse_mode(&sc).await, "sse");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_in_allowed_hosts_is_accepted() {
    let backend = echo::start().await;
    let config = format!("{CONFIG}\nadmin: {{allowed_hosts: [\"admin.internal\"]}}\n");
    let sc = Sidecar::start(&config, &backend.to_string())
        .await
        .expect("sidecar");
    let (status, _) = raw(
        sc.admin_port,
        "GET",
        "/admin/status.json",
        &[("Host", "admin.internal")],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = raw(
        sc.admin_port,
        "GET",
        "/admin/status.json",
        &[
            ("Host", "admin.internal"),
            ("Origin", "https://admin.internal"),
        ],
        "",
    )
    .await;
    assert_eq!(status, 200, "the name's own origin, behind a TLS proxy");
    let (status, _) = raw(
        sc.admin_port,
        "GET",
        "/admin/status.json",
        &[("Host", "other.internal")],
        "",
    )
    .await;
    assert_eq!(status, 421);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboards_own_requests_still_work() {
    let backend = echo::start().await;
    let sc = Sidecar::start(CONFIG, &backend.to_string())
        .await
        .expect("sidecar");
    let port = sc.admin_port;
    let host = format!("127.0.0.1:{port}");
    let origin = format!("http://{host}");
    // The page, typed in the address bar or opened from a link on another site.
    for site in ["none", "cross-site"] {
        let (status, page) = raw(
            port,
            "GET",
            "/admin",
            &[("Host", &host), ("Sec-Fetch-Site", site)],
            "",
        )
        .await;
        assert_eq!(status, 200, "the page with Sec-Fetch-Site {site}");
        assert!(
            page.contains("'Content-Type': 'application/json'"),
            "the page posts JSON"
        );
    }
    // Its fetches: same origin.
    let same = [("Host", host.as_str()), ("Sec-Fetch-Site", "same-origin")];
    for path in ["/admin/status.json", "/admin/gates"] {
        let (status, _) = raw(port, "GET", path, &same, "").await;
        assert_eq!(status, 200, "GET {path}");
    }
    // Its posts: same origin, Origin set (browsers send it on every POST), JSON.
    let post = [
        ("Host", host.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
        ("Origin", origin.as_str()),
        ("Content-Type", "application/json"),
    ];
    let (status, text) = raw(
        port,
        "POST",
        "/admin/kill-switch",
        &post,
        r#"{"enabled": false, "reason": "drill"}"#,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(sse_mode(&sc).await, "polling");
    let (status, text) = raw(port, "POST", "/admin/reload", &post, "{}").await;
    assert_eq!(status, 200, "reload: {text}");
    let (status, _) = raw(
        port,
        "POST",
        "/admin/kill-switch",
        &post,
        r#"{"enabled": true}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(sse_mode(&sc).await, "sse");
    // From localhost too, and curl's bodiless reload without a Content-Type.
    let local = format!("localhost:{port}");
    let (status, _) = raw(port, "POST", "/admin/reload", &[("Host", &local)], "").await;
    assert_eq!(status, 200, "bodiless reload");
}

/// `admin.token_env` set but the variable unset, empty or blank: no silent unauthenticated
/// admin; exit 2 naming the variable, even on loopback.
#[test]
fn a_token_variable_that_is_unset_empty_or_blank_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sidecar.yaml");
    let yaml = common::with_addresses(
        &format!("{CONFIG}\nadmin: {{token_env: SSE_TEST_ADMIN_TOKEN_BLANK}}\n"),
        common::free_port(),
        "127.0.0.1:1",
        common::free_port(),
    );
    std::fs::write(&path, yaml).expect("write");
    for value in [None, Some(""), Some("   "), Some("\t\n")] {
        let mut cmd = std::process::Command::new(common::BIN);
        cmd.arg("--config")
            .arg(&path)
            .env_remove("SSE_TEST_ADMIN_TOKEN_BLANK");
        if let Some(v) = value {
            cmd.env("SSE_TEST_ADMIN_TOKEN_BLANK", v);
        }
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run");
        let deadline = std::time::Instant::now() + T;
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break Some(s);
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        let _ = child.wait();
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(2),
            "{value:?}: still running or wrong code; stderr: {err}"
        );
        assert!(
            err.contains("SSE_TEST_ADMIN_TOKEN_BLANK") && err.contains("admin.token_env"),
            "{err}"
        );
    }
}
