//! Phase 5 made safe: the coverage check of polled routes, poll shielding (304 from the
//! sidecar), the staleness bound, per-credential decisions and the phase gates. Real sidecar
//! in front of the example legacy app.

mod common;

use common::{demo_config, wait_for, LegacyApp, Sidecar};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

fn config(extra_sse: &str, staleness: u64) -> String {
    demo_config()
        .replace(
            "sse:\n",
            &format!("sse:\n  handshakes_per_client_per_second: 100000\n  handshake_burst: 100000\n{extra_sse}"),
        )
        .replace(
            "max_staleness_seconds: 30",
            &format!("max_staleness_seconds: {staleness}"),
        )
}

/// The demo config without its `PATCH /api/cards/{id}` rule.
fn without_patch_rule(yaml: &str) -> String {
    let lines: Vec<&str> = yaml.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("match: \"PATCH /api/cards/{id}\""))
        .expect("the PATCH rule");
    let end = lines[at + 1..]
        .iter()
        .position(|l| l.trim_start().starts_with("- match:") || !l.starts_with("        "))
        .map(|i| at + 1 + i)
        .unwrap_or(lines.len());
    let mut out: Vec<&str> = lines[..at].to_vec();
    out.extend_from_slice(&lines[end..]);
    out.join("\n") + "\n"
}

async fn send(c: &reqwest::Client, method: &str, url: String, body: Value) -> Value {
    let r = c
        .request(method.parse().expect("method"), url)
        .header("cookie", "user=alice")
        .json(&body)
        .send()
        .await
        .expect("mutation");
    assert!(r.status().is_success(), "{method}: {}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

fn coverage_of(status: &Value, route: &str) -> Option<Value> {
    status["coverage"]
        .as_array()?
        .iter()
        .find(|c| c["route"] == route)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coverage_is_complete_until_a_rule_is_missing() {
    let app = LegacyApp::start().expect("legacy app");
    let yaml = config("", 30);
    let sc = Sidecar::start(&yaml, &app.addr.to_string())
        .await
        .expect("sidecar");
    let c = reqwest::Client::new();
    let conv_id = first_conversation(&app, &c).await;
    let polls = Polls {
        sc_url: sc.url(""),
        conv_poll: format!("/api/conversations/{conv_id}/messages"),
    };
    polls.round(&c).await; // baselines
    scripted_mix(&sc, &c, &polls, &conv_id).await;
    coverage_settles_complete(&sc).await;
    cards_wait_for_the_kill_switch(&sc).await;
    edit_without_its_rule_is_uncovered(&sc, &c, &polls, &app, &yaml).await;
}

/// The first conversation the backend lists (`general` if none).
async fn first_conversation(app: &LegacyApp, c: &reqwest::Client) -> String {
    let conv: Value = c
        .get(app.url("/api/conversations"))
        .send()
        .await
        .expect("conversations")
        .json()
        .await
        .expect("json");
    conv["conversations"][0]["id"]
        .as_str()
        .unwrap_or("general")
        .to_owned()
}

/// One round of polls of every polled demo route, through the sidecar.
struct Polls {
    sc_url: String,
    conv_poll: String,
}

impl Polls {
    async fn round(&self, c: &reqwest::Client) {
        let sc_url = &self.sc_url;
        for path in [
            "/api/boards/1/cards",
            self.conv_poll.as_str(),
            "/api/sessions",
            "/api/activity",
            "/api/ui/clicks/summary",
        ] {
            let r = c
                .get(format!("{sc_url}{path}"))
                .header("cookie", "user=alice")
                .send()
                .await
                .expect("poll");
            assert_eq!(r.status().as_u16(), 200, "{path}");
            let _ = r.bytes().await;
        }
    }
}

/// A scripted mix: every kind of mutation, each followed by a round of polls.
async fn scripted_mix(sc: &Sidecar, c: &reqwest::Client, polls: &Polls, conv_id: &str) {
    for round in 0..3 {
        let card = send(
            c,
            "POST",
            sc.url("/api/boards/1/cards"),
            serde_json::json!({"title": format!("card {round}")}),
        )
        .await;
        polls.round(c).await;
        let id = card["id"].as_str().expect("card id");
        send(
            c,
            "PATCH",
            sc.url(&format!("/api/cards/{id}")),
            serde_json::json!({"column": "doing"}),
        )
        .await;
        polls.round(c).await;
        send(
            c,
            "POST",
            sc.url(&format!("/api/conversations/{conv_id}/messages")),
            serde_json::json!({"text": format!("hello {round}")}),
        )
        .await;
        polls.round(c).await;
        let session = send(
            c,
            "POST",
            sc.url("/api/sessions"),
            serde_json::json!({"user": "alice"}),
        )
        .await;
        polls.round(c).await;
        let sid = session["id"].as_str().expect("session id");
        send(
            c,
            "PUT",
            sc.url(&format!("/api/sessions/{sid}/activity")),
            serde_json::json!({"page": "board"}),
        )
        .await;
        polls.round(c).await;
        send(
            c,
            "POST",
            sc.url("/api/ui/clicks"),
            serde_json::json!({"button": "save", "page": "board"}),
        )
        .await;
        polls.round(c).await;
    }
}

/// Every polled route settles at full coverage, nothing uncovered.
async fn coverage_settles_complete(sc: &Sidecar) {
    let routes = [
        "GET /api/boards/{board}/cards",
        "GET /api/conversations/{conv}/messages",
        "GET /api/sessions",
        "GET /api/activity",
        "GET /api/ui/clicks/summary",
    ];
    let status = wait_for("every change settled", T, || async {
        let st = sc.status().await.ok()?;
        let all = routes
            .iter()
            .all(|r| coverage_of(&st, r).is_some_and(|c| c["changes"].as_u64().unwrap_or(0) >= 3));
        all.then_some(st)
    })
    .await
    .expect("coverage");
    for r in routes {
        let cov = coverage_of(&status, r).expect("route");
        assert_eq!(cov["coverage"], 1.0, "{r}: {cov}");
        assert_eq!(cov["uncovered_total"], 0, "{r}");
    }
}

/// The cards family is live and its coverage check passes, but it is not ready: the kill
/// switch was never exercised.
async fn cards_wait_for_the_kill_switch(sc: &Sidecar) {
    let gates: Value = reqwest::get(sc.admin_url("/admin/gates"))
        .await
        .expect("gates")
        .json()
        .await
        .expect("json");
    let cards = &gates["families"]["cards"];
    assert_eq!(cards["stage"], "live");
    let cov_check = cards["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "coverage"))
        .cloned()
        .expect("coverage check");
    assert_eq!(cov_check["ok"], true, "{cov_check}");
    assert_eq!(
        cards["ready"], false,
        "the kill switch was never exercised: {cards}"
    );
    assert!(cards["why_not"].to_string().contains("kill_switch"));
}

/// With the PATCH rule removed, a card's edit shows in the board poll with no event: an
/// uncovered change, reported, logged and counted.
async fn edit_without_its_rule_is_uncovered(
    sc: &Sidecar,
    c: &reqwest::Client,
    polls: &Polls,
    app: &LegacyApp,
    yaml: &str,
) {
    sc.write_config(&without_patch_rule(yaml), &app.addr.to_string())
        .expect("config");
    wait_for("the reload", T, || async {
        let applied = sc
            .metric("sse_sidecar_config_reloads_total{outcome=\"applied\"}")
            .await
            .ok()?;
        (applied >= 1.0).then_some(())
    })
    .await
    .expect("reloaded");
    let card = send(
        c,
        "POST",
        sc.url("/api/boards/1/cards"),
        serde_json::json!({"title": "to edit"}),
    )
    .await;
    polls.round(c).await;
    let id = card["id"].as_str().expect("card id");
    send(
        c,
        "PATCH",
        sc.url(&format!("/api/cards/{id}")),
        serde_json::json!({"title": "edited"}),
    )
    .await;
    let polled = Instant::now();
    polls.round(c).await;
    let cov = wait_for("the uncovered change", T, || async {
        let st = sc.status().await.ok()?;
        let cov = coverage_of(&st, "GET /api/boards/{board}/cards")?;
        (cov["uncovered_total"].as_u64()? >= 1).then_some(cov)
    })
    .await
    .expect("uncovered change reported");
    println!(
        "uncovered change reported {:?} after the poll",
        polled.elapsed()
    );
    assert!(polled.elapsed() < Duration::from_secs(3));
    assert_eq!(cov["last_uncovered_url"], "/api/boards/1/cards");
    assert!(sc.log().contains("uncovered change"));
    let m = sc.metrics().await.expect("metrics");
    assert!(m.contains("sse_sidecar_poll_changes_total{covered=\"false\",family=\"cards\",route=\"GET /api/boards/{board}/cards\"} 1"), "{m}");
}

/// Titles acknowledged by the backend on one board, with when.
type Acked = Arc<Mutex<Vec<(Instant, String)>>>;

/// One polling client: GETs `path` every `every` with the validator of its last answer,
/// as a browser does; checks each answer holds every title acknowledged before it asked.
#[allow(clippy::too_many_arguments)]
async fn poller(
    base: String,
    path: String,
    cookie: &'static str,
    every: Duration,
    until: Instant,
    acked: Acked,
) -> (u64, u64, Vec<String>) {
    let c = reqwest::Client::new();
    let (mut etag, mut body) = (None::<String>, String::new());
    let (mut polls, mut not_modified, mut stale) = (0u64, 0u64, Vec::new());
    while Instant::now() < until {
        let asked = Instant::now();
        let mut req = c.get(format!("{base}{path}")).header("cookie", cookie);
        if let Some(e) = &etag {
            req = req.header("if-none-match", e.as_str());
        }
        let r = req.send().await.expect("poll");
        polls += 1;
        match r.status().as_u16() {
            304 => not_modified += 1,
            200 => {
                etag = r
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                body = r.text().await.unwrap_or_default();
            }
            s => panic!("poll answered {s}"),
        }
        let due: Vec<String> = acked
            .lock()
            .expect("lock")
            .iter()
            .filter(|(at, _)| *at < asked)
            .map(|(_, t)| t.clone())
            .collect();
        for t in due {
            if !body.contains(&t) {
                stale.push(format!("{path}: {t} missing after {polls} polls"));
            }
        }
        tokio::time::sleep(every.saturating_sub(asked.elapsed())).await;
    }
    (polls, not_modified, stale)
}

async fn backend_polls(app: &LegacyApp) -> u64 {
    let v: Value = reqwest::get(app.url("/__stats"))
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    v["by_route"]["GET /api/boards/{board}/cards"]
        .as_u64()
        .unwrap_or(0)
}

/// `count` new boards on the backend directly; their ids.
async fn new_boards(app: &LegacyApp, c: &reqwest::Client, count: usize) -> Vec<String> {
    let mut boards = Vec::new();
    for i in 0..count {
        let b = send(
            c,
            "POST",
            app.url("/api/boards"),
            serde_json::json!({"name": format!("b{i}")}),
        )
        .await;
        boards.push(b["id"].as_str().expect("id").to_owned());
    }
    boards
}

/// The pollers' totals: polls, 304s and stale answers.
async fn join_pollers(
    mut clients: tokio::task::JoinSet<(u64, u64, Vec<String>)>,
) -> (u64, u64, Vec<String>) {
    let (mut polls, mut not_modified, mut stale) = (0, 0, Vec::new());
    while let Some(r) = clients.join_next().await {
        let (p, nm, s) = r.expect("client");
        polls += p;
        not_modified += nm;
        stale.extend(s);
    }
    (polls, not_modified, stale)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shielding_spares_the_backend_nine_polls_in_ten_and_never_serves_stale() {
    let app = LegacyApp::start().expect("legacy app");
    let sc = Sidecar::start(&config("", 30), &app.addr.to_string())
        .await
        .expect("sidecar");
    let c = reqwest::Client::new();
    // 50 boards, one polling client each.
    let boards = new_boards(&app, &c, 50).await;
    c.post(app.url("/__stats/reset"))
        .send()
        .await
        .expect("reset");
    let acked: HashMap<String, Acked> = boards
        .iter()
        .map(|b| (b.clone(), Arc::new(Mutex::new(Vec::new()))))
        .collect();
    let run = Duration::from_secs(60);
    let until = Instant::now() + run;
    let mut clients = tokio::task::JoinSet::new();
    for (i, b) in boards.iter().enumerate() {
        let (base, path, acked) = (
            sc.url(""),
            format!("/api/boards/{b}/cards"),
            acked[b].clone(),
        );
        clients.spawn(async move {
            // Spread the clients over the second, as real pages are.
            tokio::time::sleep(Duration::from_millis(i as u64 * 20)).await;
            poller(
                base,
                path,
                "user=alice",
                Duration::from_secs(1),
                until,
                acked,
            )
            .await
        });
    }
    // One mutation per second, round robin over the boards, through the sidecar.
    let mut n = 0;
    while Instant::now() + Duration::from_secs(1) < until {
        let b = &boards[n % boards.len()];
        let title = format!("card-{n}-on-{b}");
        send(
            &c,
            "POST",
            sc.url(&format!("/api/boards/{b}/cards")),
            serde_json::json!({"title": title}),
        )
        .await;
        acked[b].lock().expect("lock").push((Instant::now(), title));
        n += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (polls, not_modified, stale) = join_pollers(clients).await;
    let forwarded = backend_polls(&app).await;
    let saved = 1.0 - forwarded as f64 / polls as f64;
    println!(
        "{polls} polls by 50 clients in {run:?} with {n} mutations: {forwarded} reached the backend ({:.1}% fewer), {not_modified} answered 304 by the sidecar",
        saved * 100.0
    );
    assert!(stale.is_empty(), "stale answers: {stale:?}");
    assert!(polls >= 2500, "{polls} polls");
    assert!(
        saved >= 0.90,
        "only {:.1}% fewer polls reached the backend",
        saved * 100.0
    );
    let m = sc.metrics().await.expect("metrics");
    assert!(m.contains(
        "sse_sidecar_polls_total{outcome=\"shielded\",route=\"GET /api/boards/{board}/cards\"}"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_on_the_backend_directly_shows_within_the_staleness_bound() {
    let app = LegacyApp::start().expect("legacy app");
    let sc = Sidecar::start(&config("", 2), &app.addr.to_string())
        .await
        .expect("sidecar");
    let c = reqwest::Client::new();
    let get = |etag: Option<String>| {
        let c = c.clone();
        let url = sc.url("/api/boards/2/cards");
        async move {
            let mut req = c.get(url).header("cookie", "user=alice");
            if let Some(e) = etag {
                req = req.header("if-none-match", e);
            }
            let r = req.send().await.expect("poll");
            let status = r.status().as_u16();
            let etag = r
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (status, etag, r.text().await.unwrap_or_default())
        }
    };
    let (status, etag, _) = get(None).await;
    assert_eq!(status, 200);
    let etag = etag.expect("an ETag from the sidecar");
    assert_eq!(
        get(Some(etag.clone())).await.0,
        304,
        "shielded while nothing changed"
    );
    // Straight to the backend: no event, the sidecar cannot know.
    let r = c
        .post(app.url("/api/boards/2/cards"))
        .header("cookie", "user=alice")
        .json(&serde_json::json!({"title": "behind the sidecar's back"}))
        .send()
        .await
        .expect("direct");
    assert_eq!(r.status().as_u16(), 201);
    let changed = Instant::now();
    let mut etag = etag;
    let seen = loop {
        let (status, e, body) = get(Some(etag.clone())).await;
        if status == 200 {
            etag = e.unwrap_or(etag);
            if body.contains("behind the sidecar's back") {
                break changed.elapsed();
            }
        }
        assert!(
            changed.elapsed() < Duration::from_secs(5),
            "not visible after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("direct backend change visible to the poller after {seen:?} (max staleness 2 s)");
    assert!(seen <= Duration::from_millis(2_300), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_credentials_never_share_a_304() {
    let app = LegacyApp::start().expect("legacy app");
    let sc = Sidecar::start(&config("", 30), &app.addr.to_string())
        .await
        .expect("sidecar");
    let c = reqwest::Client::new();
    let get = |cookie: Option<&'static str>, etag: Option<String>| {
        let c = c.clone();
        let url = sc.url("/api/boards/2/cards");
        async move {
            let mut req = c.get(url);
            if let Some(k) = cookie {
                req = req.header("cookie", k);
            }
            if let Some(e) = etag {
                req = req.header("if-none-match", e);
            }
            let r = req.send().await.expect("poll");
            (
                r.status().as_u16(),
                r.headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                r.headers().get("x-sse-shielded").is_some(),
            )
        }
    };
    let (_, alice_etag, _) = get(Some("user=alice"), None).await;
    let alice_etag = alice_etag.expect("etag");
    assert_eq!(
        get(Some("user=alice"), Some(alice_etag.clone())).await,
        (304, Some(alice_etag.clone()), true)
    );
    let (status, bob_etag, shielded) = get(Some("user=bob"), Some(alice_etag.clone())).await;
    assert_eq!(
        (status, shielded),
        (200, false),
        "bob never gets alice's 304"
    );
    assert_ne!(bob_etag.as_deref(), Some(alice_etag.as_str()));
    let (status, _, shielded) = get(None, Some(alice_etag.clone())).await;
    assert_eq!(
        (status, shielded),
        (200, false),
        "nor does an anonymous client"
    );
    let (status, _, _) = get(Some("user=alice; theme=dark"), Some(alice_etag)).await;
    assert_eq!(status, 200, "other cookie header, other credentials");
    // Every forwarded poll got the sidecar's cache headers.
    let r = c
        .get(sc.url("/api/boards/2/cards"))
        .send()
        .await
        .expect("poll");
    assert_eq!(r.headers()["cache-control"], "no-cache, private");
}
