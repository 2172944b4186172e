//! Mutation-derived events end to end: the demo config in front of the bundled legacy app,
//! subscribers reading with a spec-following SSE parser.

mod common;

use common::{data, demo_config, LegacyApp, Sidecar, SseClient};
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

async fn stream(sc: &Sidecar, topics: &str) -> SseClient {
    // alice is a member of every demo board (the demo config authorizes topics).
    let mut s = SseClient::connect_with(
        &sc.url(&format!("/api/sse/events?topics={topics}")),
        None,
        &[("cookie", "user=alice")],
    )
    .await
    .expect("connect");
    assert_eq!(s.status, 200, "stream for {topics}");
    assert_eq!(s.headers["content-type"], "text/event-stream");
    assert_eq!(s.headers["cache-control"], "no-cache");
    assert_eq!(s.headers["x-accel-buffering"], "no");
    let hello = s.next_of("hello", T).await.expect("hello");
    let h = data(&hello);
    assert!(h["epoch"].is_string() && h["head"].is_string());
    assert!(h["types"].as_array().is_some_and(|t| !t.is_empty()));
    s
}

async fn send(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    body: Option<Value>,
    extra: &[(&str, &str)],
) -> (u16, Value) {
    let mut r = client.request(
        reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
        url,
    );
    if let Some(b) = body {
        r = r.json(&b);
    }
    for (k, v) in extra {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.expect("mutation");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The demo's subscribers, one per topic group the scenario touches.
struct Streams {
    presence: SseClient,
    activity: SseClient,
    board1: SseClient,
    board2: SseClient,
    ui: SseClient,
    conv: SseClient,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_demo_mutation_reaches_exactly_its_topics() {
    let app = LegacyApp::start().expect("legacy app");
    let sc = Sidecar::start(&demo_config(), &app.addr.to_string())
        .await
        .expect("sidecar");
    let c = reqwest::Client::new();
    let mut s = Streams {
        presence: stream(&sc, "presence").await,
        activity: stream(&sc, "activity").await,
        board1: stream(&sc, "board:1").await,
        board2: stream(&sc, "board:2").await,
        ui: stream(&sc, "ui").await,
        conv: stream(&sc, "conversation:general,conversation:support").await,
    };
    let sid = session_started(&sc, &c, &mut s.presence).await;
    session_activity(&sc, &c, &mut s.activity, &sid).await;
    card_lifecycle(&sc, &c, &mut s.board1).await;
    ui_and_conversations(&sc, &c, &mut s).await;
    session_ended(&sc, &c, &mut s.presence, &sid).await;
    failed_mutations_derive_nothing(&sc, &c, &mut s.board1).await;
    board2_saw_nothing(&mut s.board2).await;
}

/// Sessions: POST → `session.started`, with the origin headers carried. Returns its id.
async fn session_started(sc: &Sidecar, c: &reqwest::Client, presence: &mut SseClient) -> String {
    // sessions: POST → session.started, with the origin headers carried.
    let (st, session) = send(
        c,
        "POST",
        &sc.url("/api/sessions"),
        Some(json!({"user": "alice"})),
        &[("x-client-id", "tab-1"), ("x-mutation-id", "mut-1")],
    )
    .await;
    assert_eq!(st, 201);
    let e = presence
        .next_of("session.started", T)
        .await
        .expect("session.started");
    let d = data(&e);
    assert_eq!(d["type"], "session.started");
    assert_eq!(d["family"], "sessions");
    assert_eq!(d["topics"], json!(["presence"]));
    assert_eq!(d["data"]["user"], "alice");
    assert_eq!(d["origin"], json!({"client": "tab-1", "mutation": "mut-1"}));
    assert_eq!(d["invalidate"], json!([["sessions"]]));
    assert_eq!(d["id"], e.id, "the JSON id is the SSE id");
    session["id"].as_str().expect("session id").to_owned()
}

/// Tracking: PUT → `session.activity`.
async fn session_activity(sc: &Sidecar, c: &reqwest::Client, activity: &mut SseClient, sid: &str) {
    // tracking: PUT → session.activity
    let (st, _) = send(
        c,
        "PUT",
        &sc.url(&format!("/api/sessions/{sid}/activity")),
        Some(json!({"page": "/boards/1"})),
        &[],
    )
    .await;
    assert_eq!(st, 200);
    let e = activity
        .next_of("session.activity", T)
        .await
        .expect("activity");
    assert_eq!(data(&e)["data"]["page"], "/boards/1");
}

/// Cards: POST, PATCH, PUT, DELETE on board 1, in order, with increasing ids.
async fn card_lifecycle(sc: &Sidecar, c: &reqwest::Client, board1: &mut SseClient) {
    // cards: POST, PATCH, PUT, DELETE on board 1, in order, never on board 2.
    let (st, card) = send(
        c,
        "POST",
        &sc.url("/api/boards/1/cards"),
        Some(json!({"title": "first"})),
        &[],
    )
    .await;
    assert_eq!(st, 201);
    let cid = card["id"].as_str().expect("card id").to_owned();
    let (st, _) = send(
        c,
        "PATCH",
        &sc.url(&format!("/api/cards/{cid}")),
        Some(json!({"title": "second"})),
        &[],
    )
    .await;
    assert_eq!(st, 200);
    let (st, _) = send(
        c,
        "PUT",
        &sc.url(&format!("/api/cards/{cid}")),
        Some(json!({"title": "third", "column": "done"})),
        &[],
    )
    .await;
    assert_eq!(st, 200);
    let (st, _) = send(
        c,
        "DELETE",
        &sc.url(&format!("/api/cards/{cid}")),
        None,
        &[],
    )
    .await;
    assert_eq!(st, 200);
    let created = board1.next_of("card.created", T).await.expect("created");
    let patched = board1.next_of("card.updated", T).await.expect("patched");
    let put = board1.next_of("card.updated", T).await.expect("put");
    let deleted = board1.next_of("card.deleted", T).await.expect("deleted");
    assert_eq!(data(&created)["data"]["title"], "first");
    assert_eq!(data(&created)["invalidate"], json!([["cards", "1"]]));
    let p = data(&patched);
    assert_eq!(p["data"]["title"], "second");
    assert_eq!(p["topics"], json!(["board:1", format!("card:{cid}")]));
    assert_eq!(p["invalidate"], json!([["cards", "1"], ["card", cid]]));
    assert_eq!(data(&put)["data"]["column"], "done");
    assert_eq!(data(&deleted)["data"], json!({"id": cid, "board_id": "1"}));
    let seqs: Vec<u64> = [&created, &patched, &put, &deleted]
        .iter()
        .map(|e| e.id.rsplit_once('-').expect("id").1.parse().expect("seq"))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "ids increase: {seqs:?}"
    );
}

/// UI clicks and conversation messages (newlines and unicode intact).
async fn ui_and_conversations(sc: &Sidecar, c: &reqwest::Client, s: &mut Streams) {
    let (ui, conv) = (&mut s.ui, &mut s.conv);
    // ui and conversations.
    let (st, _) = send(
        c,
        "POST",
        &sc.url("/api/ui/clicks"),
        Some(json!({"button": "save", "page": "/"})),
        &[],
    )
    .await;
    assert_eq!(st, 202);
    assert_eq!(
        data(&ui.next_of("ui.clicked", T).await.expect("ui"))["data"]["button"],
        "save"
    );
    let text = "line one\nline two\r\nthree ✓ — 日本語 🎉 \"quoted\" \\ back\u{2028}sep";
    let (st, _) = send(
        c,
        "POST",
        &sc.url("/api/conversations/general/messages"),
        Some(json!({"author": "alice", "text": text})),
        &[],
    )
    .await;
    assert_eq!(st, 201);
    let m = conv.next_of("message.posted", T).await.expect("message");
    assert_eq!(
        data(&m)["data"]["text"],
        text,
        "newlines and unicode arrive intact"
    );
    assert_eq!(data(&m)["topics"], json!(["conversation:general"]));
}

/// Sessions: DELETE → `session.ended`.
async fn session_ended(sc: &Sidecar, c: &reqwest::Client, presence: &mut SseClient, sid: &str) {
    // sessions: DELETE → session.ended
    let (st, _) = send(
        c,
        "DELETE",
        &sc.url(&format!("/api/sessions/{sid}")),
        None,
        &[],
    )
    .await;
    assert_eq!(st, 200);
    presence.next_of("session.ended", T).await.expect("ended");
}

/// Failed and schema-invalid mutations derive nothing; the invalid one is counted.
async fn failed_mutations_derive_nothing(
    sc: &Sidecar,
    c: &reqwest::Client,
    board1: &mut SseClient,
) {
    // Failed mutations derive nothing: 4xx from validation, 404, a 500 from the backend.
    let (st, _) = send(
        c,
        "POST",
        &sc.url("/api/boards/1/cards"),
        Some(json!({})),
        &[],
    )
    .await;
    assert_eq!(st, 400);
    let (st, _) = send(
        c,
        "PATCH",
        &sc.url("/api/cards/nope"),
        Some(json!({"title": "x"})),
        &[],
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = send(
        c,
        "POST",
        &sc.url("/api/boards/1/cards"),
        Some(json!({"title": "boom"})),
        &[("x-legacy-fail-status", "500")],
    )
    .await;
    assert_eq!(st, 500);
    // A schema-invalid event (title over the schema's 200 characters) is counted, not sent.
    let long = "x".repeat(300);
    let (st, _) = send(
        c,
        "POST",
        &sc.url("/api/boards/1/cards"),
        Some(json!({"title": long})),
        &[],
    )
    .await;
    assert_eq!(st, 201, "the backend accepts it");
    // A later valid event on the same topic proves the earlier ones were not just slow.
    let (st, _) = send(
        c,
        "POST",
        &sc.url("/api/boards/1/cards"),
        Some(json!({"title": "after"})),
        &[],
    )
    .await;
    assert_eq!(st, 201);
    let next = board1
        .next_of("card.created", T)
        .await
        .expect("later event");
    assert_eq!(
        data(&next)["data"]["title"],
        "after",
        "no event from failed or invalid mutations"
    );
    let rejected = sc
        .metric("sse_sidecar_events_rejected_total{family=\"cards\",reason=\"schema_invalid\"}")
        .await
        .expect("metrics");
    assert_eq!(rejected, 1.0);
}

/// Board 2's subscriber saw none of the board 1 events.
async fn board2_saw_nothing(board2: &mut SseClient) {
    // Board 2's subscriber saw nothing of all this.
    let stray: Vec<_> = board2
        .collect_for(Duration::from_millis(300))
        .await
        .into_iter()
        .filter(|e| e.event.starts_with("card."))
        .collect();
    assert!(stray.is_empty(), "board:2 got {stray:?}");
}

const ECHO_RULES: &str = r#"
upstream: {address: "127.0.0.1:1"}
rollout: {phase: 1}
families:
  jobs:
    phase: 1
    rules:
      - match: "POST /status/{code}"
        event: job.done
        topics: ["jobs:{code}", "jobs"]
        data: {code: "{code}", id: "{response.id}", note: "{request.note}", q: "{query.q}", h: "{header.x-tenant}"}
event_types:
  job.done:
    family: jobs
    schema: {type: object, required: [code, id]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_2xx_answers_derive_and_templates_read_every_source() {
    let backend = common::echo::start().await;
    let sc = Sidecar::start(ECHO_RULES, &backend.to_string())
        .await
        .expect("sidecar");
    let mut jobs = stream(&sc, "jobs").await;
    let c = reqwest::Client::new();
    for code in [500u16, 503, 404, 201] {
        let r = c
            .post(sc.url(&format!("/status/{code}?q=search")))
            .header("x-tenant", "acme")
            .json(&json!({"note": "hello"}))
            .send()
            .await
            .expect("mutation");
        assert_eq!(r.status().as_u16(), code);
    }
    let e = jobs.next_of("job.done", T).await.expect("event");
    let d = data(&e);
    assert_eq!(
        d["data"],
        json!({"code": "201", "id": "x1", "note": "hello", "q": "search", "h": "acme"})
    );
    assert_eq!(d["topics"], json!(["jobs:201", "jobs"]));
    let more = jobs.collect_for(Duration::from_millis(300)).await;
    assert!(
        more.iter().all(|e| e.event != "job.done"),
        "5xx/4xx derived nothing: {more:?}"
    );
    // A request body that is not JSON cannot fill {request.note}: dropped, counted by reason.
    let r = c
        .post(sc.url("/status/200?q=x"))
        .header("x-tenant", "acme")
        .body("not json")
        .send()
        .await
        .expect("mutation");
    assert_eq!(r.status(), 200);
    let reason = "sse_sidecar_events_rejected_total{family=\"jobs\",reason=\"body_not_json\"}";
    let got = common::wait_for("the rejection counter", T, || async {
        (sc.metric(reason).await.ok()? >= 1.0).then_some(())
    })
    .await;
    assert!(
        got.is_ok(),
        "request body not JSON leaves {{request.note}} unfilled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_stream_requests_are_refused_with_reasons() {
    let backend = common::echo::start().await;
    let sc = Sidecar::start(ECHO_RULES, &backend.to_string())
        .await
        .expect("sidecar");
    for q in ["", "?topics=", "?topics=a%20b", "?topics=a%0Ab"] {
        let r = reqwest::get(sc.url(&format!("/api/sse/events{q}")))
            .await
            .expect("request");
        assert_eq!(r.status(), 400, "{q}");
        assert!(!r.text().await.expect("body").is_empty());
    }
    let many: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
    let r = reqwest::get(sc.url(&format!("/api/sse/events?topics={}", many.join(","))))
        .await
        .expect("request");
    assert_eq!(r.status(), 400, "over max_topics_per_stream");
    let status: Value = sc.sse_status().await.expect("status");
    assert_eq!(status["mode"], "sse");
    assert!(status["head"]
        .as_str()
        .is_some_and(|h| h.starts_with(status["epoch"].as_str().unwrap_or("?"))));
    let js = reqwest::get(sc.url("/api/sse/client.js"))
        .await
        .expect("client.js");
    assert_eq!(js.status(), 200);
    assert!(js.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/javascript"));
    let etag = js.headers()["etag"].clone();
    let again = reqwest::Client::new()
        .get(sc.url("/api/sse/client.js"))
        .header("if-none-match", etag)
        .send()
        .await
        .expect("revalidate");
    assert_eq!(again.status(), 304);
}
