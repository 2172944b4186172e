//! Learn mode end to end: the real sidecar with only listen/upstream/admin and
//! `learn.enabled` in front of the example app; two users' pages poll its five lists while
//! every user flow runs; `sse-sidecar learn --live --into` merges the suggestions into the
//! file, which passes `check`; applied, the same flows derive an event for every mutation
//! on the topics the pages subscribe to, and coverage reads 100 % on every polled route.
//! And nothing secret (credentials, cookies, redacted body fields) is in what it shows.

mod common;

use common::{data, wait_for, LegacyApp, Sidecar, SseClient, BIN};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const T: Duration = Duration::from_secs(15);
const PAGE_TOPICS: &str = "board:1,conversation:general,presence,activity,ui";
const LISTS: [&str; 5] = [
    "/api/boards/1/cards",
    "/api/conversations/general/messages",
    "/api/sessions",
    "/api/activity",
    "/api/ui/clicks/summary",
];

/// The onboarding file: addresses and learn mode, nothing else.
fn base_config(sc: &Sidecar, app: &LegacyApp, extra: &str) -> String {
    format!(
        "listen: \"127.0.0.1:{}\"\nupstream:\n  address: \"{}\"\nadmin:\n  listen: \"127.0.0.1:{}\"\nshutdown:\n  grace_period_seconds: 1\nlearn:\n  enabled: true\n{extra}",
        sc.port, app.addr, sc.admin_port
    )
}

/// Writes `text` as the config and waits until the sidecar runs that version.
async fn apply(sc: &Sidecar, text: &str) {
    let want = {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(text.as_bytes());
        d.iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    sc.write_raw_config(text).expect("config written");
    wait_for("the new config", T, || async {
        let st = sc.status().await.ok()?;
        (st["config"]["version"] == want.as_str()).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", sc.log()));
}

/// A user's page: polls the five lists one after another every 100 ms, counting rounds.
struct Page {
    rounds: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Page {
    fn open(sc: &Sidecar, user: &str) -> Page {
        let rounds = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (rounds.clone(), stop.clone());
        let base = sc.url("");
        let cookie = format!("user={user}");
        tokio::spawn(async move {
            let c = reqwest::Client::new();
            while !s.load(Ordering::Relaxed) {
                for list in LISTS {
                    let _ = c
                        .get(format!("{base}{list}"))
                        .header("cookie", &cookie)
                        .send()
                        .await;
                }
                r.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Page { rounds, stop }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Sends mutations as a page does, and waits after each until every page polled twice.
struct Actor<'a> {
    sc: &'a Sidecar,
    pages: &'a [Page],
    c: reqwest::Client,
    sent: Vec<(String, String)>,
}

impl Actor<'_> {
    async fn send(&mut self, user: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        let id = format!("m{}", self.sent.len() + 1);
        let mut req = self
            .c
            .request(method.parse().expect("method"), self.sc.url(path))
            .header("cookie", format!("user={user}"))
            .header("x-client-id", format!("learn-{user}"))
            .header("x-mutation-id", &id);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("mutation sent");
        let status = resp.status().as_u16();
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {answer}"
        );
        self.sent.push((id, format!("{method} {path}")));
        let want: Vec<u64> = self
            .pages
            .iter()
            .map(|p| p.rounds.load(Ordering::Relaxed) + 2)
            .collect();
        wait_for("two polls of every page", T, || async {
            let done = self
                .pages
                .iter()
                .zip(&want)
                .all(|(p, w)| p.rounds.load(Ordering::Relaxed) >= *w);
            done.then_some(())
        })
        .await
        .expect("pages poll");
        answer
    }

    /// Every flow of the demo page once, as `user`.
    async fn flows(&mut self, user: &str, n: usize) {
        let s = self
            .send(user, "POST", "/api/sessions", Some(json!({"user": user})))
            .await;
        let sid = s["id"].as_str().expect("session id").to_owned();
        self.send(
            user,
            "PUT",
            &format!("/api/sessions/{sid}/activity"),
            Some(json!({"page": format!("/board/1?v={n}")})),
        )
        .await;
        let card = self
            .send(
                user,
                "POST",
                "/api/boards/1/cards",
                Some(json!({"title": format!("{user} {n}")})),
            )
            .await;
        let cid = card["id"].as_str().expect("card id").to_owned();
        self.send(
            user,
            "PATCH",
            &format!("/api/cards/{cid}"),
            Some(json!({"title": format!("{user} {n} renamed")})),
        )
        .await;
        self.send(
            user,
            "PATCH",
            &format!("/api/cards/{cid}"),
            Some(json!({"column": "doing"})),
        )
        .await;
        self.send(
            user,
            "POST",
            "/api/conversations/general/messages",
            Some(json!({"text": format!("hello {n}")})),
        )
        .await;
        self.send(
            user,
            "POST",
            "/api/ui/clicks",
            Some(json!({"button": "save"})),
        )
        .await;
        self.send(user, "DELETE", &format!("/api/cards/{cid}"), None)
            .await;
        self.send(user, "DELETE", &format!("/api/sessions/{sid}"), None)
            .await;
    }
}

fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .output()
        .expect("the binary runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// Phase 1: learn from two users' pages and flows; the merged file passes `check`.
async fn learn_phase(sc: &Sidecar, app: &LegacyApp) -> String {
    let base = base_config(sc, app, "");
    apply(sc, &base).await;
    for user in ["alice", "bob"] {
        let refused = SseClient::connect_with(
            &sc.url(&format!("/api/sse/events?topics={PAGE_TOPICS}")),
            None,
            &[("cookie", &format!("user={user}"))],
        )
        .await
        .expect("stream request");
        assert_eq!(
            refused.status, 403,
            "no authorization rules yet: every topic is denied"
        );
    }
    let pages = [Page::open(sc, "alice"), Page::open(sc, "bob")];
    let mut actor = Actor {
        sc,
        pages: &pages,
        c: reqwest::Client::new(),
        sent: Vec::new(),
    };
    for n in 0..3 {
        for user in ["alice", "bob"] {
            actor.flows(user, n).await;
        }
    }
    drop(pages);
    let base_path = sc.dir.path().join("base.yaml");
    std::fs::write(&base_path, &base).expect("base written");
    let admin = sc.admin_url("");
    let (ok, merged, err) = run_cli(&[
        "learn",
        "--admin",
        &admin,
        "--live",
        "--into",
        base_path.to_str().expect("path"),
    ]);
    assert!(ok, "learn failed: {err}");
    let merged_path = sc.dir.path().join("suggested.yaml");
    std::fs::write(&merged_path, &merged).expect("merged written");
    let (ok, out, err) = run_cli(&["check", merged_path.to_str().expect("path")]);
    assert!(ok, "the suggested file fails check:\n{out}{err}\n{merged}");
    merged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suggested_rules_derive_every_mutation_and_cover_every_polled_route() {
    let app = LegacyApp::start().expect("legacy app");
    let sc = Sidecar::start("learn: {enabled: true}\n", &app.addr.to_string())
        .await
        .expect("sidecar");
    let merged = learn_phase(&sc, &app).await;
    apply(&sc, &merged).await;
    let mut streams = Vec::new();
    for user in ["alice", "bob"] {
        let url = sc.url(&format!("/api/sse/events?topics={PAGE_TOPICS}"));
        let mut s = SseClient::connect_with(&url, None, &[("cookie", &format!("user={user}"))])
            .await
            .expect("stream");
        assert_eq!(
            s.status, 200,
            "the suggested authorization grants the page's topics"
        );
        let hello = s.next(T).await.expect("hello");
        assert_eq!(data(&hello)["denied"], json!([]), "{merged}");
        streams.push(s);
    }
    let pages = [Page::open(&sc, "alice"), Page::open(&sc, "bob")];
    let mut actor = Actor {
        sc: &sc,
        pages: &pages,
        c: reqwest::Client::new(),
        sent: Vec::new(),
    };
    for user in ["alice", "bob"] {
        actor.flows(user, 9).await;
    }
    let events = collect(&mut streams[0], actor.sent.len()).await;
    let subscribed: Vec<&str> = PAGE_TOPICS.split(',').collect();
    for (id, what) in &actor.sent {
        let e = events
            .get(id)
            .unwrap_or_else(|| panic!("no event for {what} ({id}): {events:#?}\n{merged}"));
        let topics: Vec<&str> = e["topics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            topics.iter().all(|t| subscribed.contains(t)),
            "{what}: {topics:?}"
        );
    }
    coverage_is_complete(&sc, &merged).await;
}

/// The events of a stream by their origin mutation id, until `n` arrived.
async fn collect(s: &mut SseClient, n: usize) -> BTreeMap<String, Value> {
    let mut by_id = BTreeMap::new();
    while by_id.len() < n {
        let Some(e) = s.next(T).await else { break };
        let d = data(&e);
        if let Some(m) = d["origin"]["mutation"].as_str() {
            by_id.insert(m.to_owned(), d.clone());
        }
    }
    by_id
}

async fn coverage_is_complete(sc: &Sidecar, merged: &str) {
    let st = sc.status().await.expect("status");
    let routes = st["coverage"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        routes.len(),
        LISTS.len(),
        "every polled route is in polling.routes: {routes:#?}\n{merged}"
    );
    for r in &routes {
        assert!(r["changes"].as_u64().unwrap_or(0) >= 1, "{r}");
        assert_eq!(r["coverage"], json!(1.0), "{r}\n{merged}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_cookie_or_redacted_value_is_shown_or_logged() {
    const TOKEN: &str = "tok-5e1f0c9a77";
    const COOKIE: &str = "cookie-9b2d44e1";
    const PASSWORD: &str = "pw-31337-hunter";
    const NICK: &str = "nick-zed-8d1c";
    let app = LegacyApp::start().expect("legacy app");
    let sc = Sidecar::start("learn: {enabled: true}\n", &app.addr.to_string())
        .await
        .expect("sidecar");
    let extra = "  redact: [nickname]\nlogging:\n  level: debug\n";
    apply(&sc, &base_config(&sc, &app, extra)).await;
    let c = reqwest::Client::new();
    for i in 0..4 {
        let body = json!({"user": "alice", "password": PASSWORD, "nickname": NICK, "profile": {"nickname": NICK}});
        for (m, path) in [
            ("POST", "/api/sessions".to_owned()),
            ("GET", format!("/api/boards/1/cards?nickname={NICK}&n={i}")),
        ] {
            let _ = c
                .request(m.parse().expect("method"), sc.url(&path))
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("cookie", format!("user=alice; sid={COOKIE}"))
                .json(&body)
                .send()
                .await
                .expect("sent");
        }
    }
    let report = wait_for("the samples recorded", T, || async {
        let r: Value = reqwest::get(sc.admin_url("/admin/learn"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (r["observed"].as_u64().unwrap_or(0) >= 8).then_some(r)
    })
    .await
    .expect("recorded");
    let yaml = reqwest::get(sc.admin_url("/admin/learn/suggested.yaml"))
        .await
        .expect("yaml")
        .text()
        .await
        .expect("text");
    let shown = report.to_string();
    assert!(shown.contains("nickname"), "field names are shown: {shown}");
    for secret in [TOKEN, COOKIE, PASSWORD, NICK] {
        assert!(!shown.contains(secret), "{secret} in /admin/learn: {shown}");
        assert!(
            !yaml.contains(secret),
            "{secret} in the suggestions: {yaml}"
        );
        assert!(!sc.log().contains(secret), "{secret} in the log");
    }
}
