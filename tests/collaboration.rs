//! Collaboration semantics on the real binary in front of a real backend: mutation receipts
//! (each matched mutation's outcome told to the stream of the browser that sent it, and to
//! no other), read with a real SSE client.

mod common;

use common::{data, Sidecar, SseClient};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(5);

const RULES: &str = r#"
upstream: {address: "127.0.0.1:1"}
rollout: {phase: 1}
families:
  jobs:
    phase: 1
    rules:
      - match: "POST /status/{code}"
        event: job.done
        topics: ["jobs:{code}"]
        data: {code: "{code}", note: "{request.note}"}
  drafts:
    phase: 1
    mode: shadow
    rules:
      - match: "PUT /status/{code}"
        event: draft.saved
        topics: ["drafts"]
        data: {code: "{code}"}
event_types:
  job.done:
    family: jobs
    schema: {type: object, required: [code], properties: {note: {type: string, maxLength: 5}}}
  draft.saved: {family: drafts, schema: {type: object}}
"#;

async fn open(sc: &Sidecar, query: &str, user: &str) -> SseClient {
    let url = sc.url(&format!("/api/sse/events?{query}"));
    let cookie = format!("user={user}");
    let s = SseClient::connect_with(&url, None, &[("cookie", cookie.as_str())])
        .await
        .expect("stream");
    assert_eq!(s.status, 200, "stream {query}");
    s
}

/// Sends a mutation as tab `client` of alice; returns the status, whether the answer says a
/// receipt is pending, and when the answer was read.
async fn mutate(
    sc: &Sidecar,
    method: &str,
    path: &str,
    body: Value,
    client: &str,
    mutation: &str,
) -> (u16, bool, Instant) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let r = reqwest::Client::new()
        .request(m, sc.url(path))
        .header("cookie", "user=alice")
        .header("x-client-id", client)
        .header("x-mutation-id", mutation)
        .json(&body)
        .send()
        .await
        .expect("mutation");
    let pending = r
        .headers()
        .get("x-sse-receipt")
        .is_some_and(|v| v == "pending");
    let status = r.status().as_u16();
    let _ = r.bytes().await;
    (status, pending, Instant::now())
}

/// The next receipt on `s`, with how long after `since` it was parsed.
async fn receipt(s: &mut SseClient, since: Instant) -> (Value, Duration) {
    let (r, took, _) = receipt_after(s, since).await;
    (r, took)
}

/// The next receipt on `s`, how long after `since` it was parsed, and the ids of the events
/// that came before it.
async fn receipt_after(s: &mut SseClient, since: Instant) -> (Value, Duration, Vec<String>) {
    let mut before = Vec::new();
    let deadline = Instant::now() + T;
    while let Some(e) = s
        .next(deadline.saturating_duration_since(Instant::now()))
        .await
    {
        if e.event == "receipt" {
            assert!(
                e.id.is_empty() || Some(&e.id) == s.last_id.as_ref(),
                "no id of its own"
            );
            return (data(&e), since.elapsed(), before);
        }
        if !e.id.is_empty() {
            before.push(e.id);
        }
    }
    panic!("no receipt within {T:?}");
}

/// A shadow family, a template miss, a schema failure and a refused mutation: each gets
/// its receipt, naming what happened.
async fn outcomes_without_an_event(
    sc: &Sidecar,
    mine: &mut SseClient,
    latencies: &mut Vec<Duration>,
) {
    let cases = [
        ("PUT", "/status/200", json!({}), "shadow", Value::Null, 200),
        (
            "POST",
            "/status/200",
            json!({}),
            "dropped",
            json!("template_missing_field"),
            200,
        ),
        (
            "POST",
            "/status/200",
            json!({"note": "far too long"}),
            "dropped",
            json!("schema_invalid"),
            200,
        ),
        (
            "POST",
            "/status/422",
            json!({"note": "hi"}),
            "failed",
            Value::Null,
            422,
        ),
    ];
    for (i, (method, path, body, outcome, reason, status)) in cases.into_iter().enumerate() {
        let mutation = format!("m-case-{i}");
        let (st, pending, at) = mutate(sc, method, path, body, "b1.t2", &mutation).await;
        assert_eq!((st, pending), (status, true), "{method} {path}");
        let (r, took) = receipt(mine, at).await;
        latencies.push(took);
        assert_eq!(r["mutation"], json!(mutation));
        assert_eq!(r["outcome"], json!(outcome), "{method} {path}: {r}");
        assert_eq!(r["reason"], reason, "{r}");
        assert_eq!(r["status"], json!(status), "{r}");
        assert_eq!(r["events"], json!([]), "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_matched_mutation_gets_one_receipt_on_its_browsers_stream_only() {
    let backend = common::echo::start().await;
    let sc = Sidecar::start(RULES, &backend.to_string())
        .await
        .expect("sidecar");
    let mut mine = open(&sc, "topics=jobs:200&client=b1", "alice").await;
    let hello = mine.next_of("hello", T).await.expect("hello");
    assert_eq!(data(&hello)["client"], json!("b1"));
    // Alice's other browser holds none of the events' topics; mallory claims alice's id.
    let mut elsewhere = open(&sc, "topics=unrelated&client=b2", "alice").await;
    let mut mallory = open(&sc, "topics=jobs:200&client=b1", "mallory").await;
    let mut latencies = Vec::new();

    let (st, pending, at) = mutate(
        &sc,
        "POST",
        "/status/200",
        json!({"note": "hi"}),
        "b1.t1",
        "m1",
    )
    .await;
    assert_eq!((st, pending), (200, true));
    let (r, took, before) = receipt_after(&mut mine, at).await;
    latencies.push(took);
    assert_eq!(r["outcome"], json!("delivered"), "{r}");
    assert_eq!(
        (r["client"].clone(), r["mutation"].clone()),
        (json!("b1.t1"), json!("m1"))
    );
    assert_eq!(r["status"], json!(200));
    let ids = r["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(ids.len(), 1, "{r}");
    assert_eq!(
        json!(before),
        json!(ids),
        "the event came with its receipt, which names its id"
    );

    outcomes_without_an_event(&sc, &mut mine, &mut latencies).await;

    // A browser whose stream holds none of the event's topics still gets its receipt.
    let (_, _, at) = mutate(
        &sc,
        "POST",
        "/status/200",
        json!({"note": "x"}),
        "b2.t1",
        "m-b2",
    )
    .await;
    let (r, took) = receipt(&mut elsewhere, at).await;
    latencies.push(took);
    assert_eq!(
        (r["outcome"].clone(), r["mutation"].clone()),
        (json!("delivered"), json!("m-b2"))
    );

    // Without a mutation id: no receipt promised, none sent.
    let r = reqwest::Client::new()
        .post(sc.url("/status/200"))
        .header("cookie", "user=alice")
        .header("x-client-id", "b1.t1")
        .json(&json!({"note": "y"}))
        .send()
        .await
        .expect("mutation");
    assert!(r.headers().get("x-sse-receipt").is_none());

    // Mallory saw the events of her topic, and no receipt of alice's ever.
    let seen = mallory.collect_for(Duration::from_millis(500)).await;
    assert!(seen.iter().any(|e| e.event == "job.done"), "{seen:?}");
    assert!(seen.iter().all(|e| e.event != "receipt"), "{seen:?}");
    let more = mine.collect_for(Duration::from_millis(300)).await;
    assert!(
        more.iter().all(|e| e.event != "receipt"),
        "one receipt each: {more:?}"
    );
    let total = sc
        .metric("sse_sidecar_receipts_total{outcome=\"delivered\"}")
        .await
        .expect("metric");
    assert_eq!(total, 2.0);
    latencies.sort();
    eprintln!("receipt after the answer: {latencies:?}");
    assert!(latencies.iter().all(|l| *l < T), "{latencies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_client_id_is_refused_with_400() {
    let backend = common::echo::start().await;
    let sc = Sidecar::start(RULES, &backend.to_string())
        .await
        .expect("sidecar");
    let r = reqwest::get(sc.url("/api/sse/events?topics=jobs:1&client=a%20b"))
        .await
        .expect("get");
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap_or_default();
    assert!(body.contains("client must be"), "{body}");
}

const CARDS: &str = r#"
upstream: {address: "127.0.0.1:1"}
rollout: {phase: 1}
families:
  cards:
    phase: 1
    conflicts: reject
    rules:
      - match: "PATCH /echo/cards/{id}"
        event: card.updated
        topics: ["card:{id}", "board:{request.board}"]
        data: request
      - match: "PUT /echo/cards/{id}"
        event: card.updated
        topics: ["card:{id}"]
        data: request
        conflicts: detect
event_types:
  card.updated: {family: cards, schema: {type: object}}
polling:
  routes:
    - match: "GET /echo/cards/{id}"
      family: cards
      topics: ["card:{id}"]
"#;

/// A card edit with a base; returns the answer's status and body.
async fn edit(sc: &Sidecar, method: &str, card: &str, base: &str, title: &str) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let r = reqwest::Client::new()
        .request(m, sc.url(&format!("/echo/cards/{card}")))
        .header("x-sse-base", base)
        .json(&json!({"title": title, "board": "1"}))
        .send()
        .await
        .expect("edit");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The version a page loading the card would hold.
async fn load(sc: &Sidecar, card: &str) -> String {
    let r = reqwest::get(sc.url(&format!("/echo/cards/{card}")))
        .await
        .expect("get");
    let v = r
        .headers()
        .get("x-sse-version")
        .expect("x-sse-version on a polled route");
    v.to_str().expect("text").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_edit_is_refused_409_with_the_newer_events_and_never_reaches_the_backend() {
    let backend = common::echo::start().await;
    let sc = Sidecar::start(CARDS, &backend.to_string())
        .await
        .expect("sidecar");
    let mut board = open(&sc, "topics=card:c1", "alice").await;
    let (va, vb) = (load(&sc, "c1").await, load(&sc, "c1").await);
    assert_eq!(va, vb);
    assert!(va.ends_with("-0"), "no event touched it yet: {va}");
    let (st, _) = edit(&sc, "PATCH", "c1", &va, "A's title").await;
    assert_eq!(st, 200);
    let e1 = board
        .next_of("card.updated", T)
        .await
        .expect("A's event")
        .id;
    let (st, body) = edit(&sc, "PATCH", "c1", &vb, "B's title").await;
    assert_eq!(st, 409, "{body}");
    assert_eq!(body["conflict"]["base"], json!(vb));
    assert_eq!(body["conflict"]["current"], json!(e1));
    let newer = &body["conflict"]["events"];
    assert_eq!(newer[0]["id"], json!(e1), "{body}");
    assert_eq!(newer[0]["data"]["title"], json!("A's title"));
    assert_eq!(
        common::echo::hits("PATCH", "/echo/cards/c1"),
        1,
        "B's never left"
    );
    // B reloads and edits again on top of A's change.
    let v = load(&sc, "c1").await;
    assert_eq!(v, e1);
    let (st, _) = edit(&sc, "PATCH", "c1", &v, "B's title").await;
    assert_eq!(st, 200);
    assert_eq!(common::echo::hits("PATCH", "/echo/cards/c1"), 2);
    // Other cards, and edits without a base, are not checked.
    assert_eq!(edit(&sc, "PATCH", "c2", &vb, "x").await.0, 200);
    let r = reqwest::Client::new()
        .patch(sc.url("/echo/cards/c1"))
        .json(&json!({"title": "no base", "board": "1"}))
        .send()
        .await
        .expect("edit");
    assert_eq!(r.status(), 200);
    let (st, _) = edit(&sc, "PATCH", "c1", "not an id", "x").await;
    assert_eq!(st, 400, "a base that is not an event id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_edit_under_detect_is_forwarded_and_its_event_names_what_it_superseded() {
    let backend = common::echo::start().await;
    let sc = Sidecar::start(CARDS, &backend.to_string())
        .await
        .expect("sidecar");
    let mut card = open(&sc, "topics=card:c7&client=b1", "alice").await;
    let v = load(&sc, "c7").await;
    assert_eq!(edit(&sc, "PUT", "c7", &v, "first").await.0, 200);
    let e1 = card.next_of("card.updated", T).await.expect("first");
    assert!(data(&e1).get("conflict").is_none(), "no conflict, no field");
    let r = reqwest::Client::new()
        .put(sc.url("/echo/cards/c7"))
        .header("cookie", "user=alice")
        .header("x-client-id", "b1.t1")
        .header("x-mutation-id", "m-late")
        .header("x-sse-base", &v)
        .json(&json!({"title": "second"}))
        .send()
        .await
        .expect("edit");
    assert_eq!(r.status(), 200, "detect forwards");
    assert_eq!(common::echo::hits("PUT", "/echo/cards/c7"), 2);
    let (receipt, _, before) = receipt_after(&mut card, Instant::now()).await;
    let e2 = card_event(&sc, &before).await;
    let want = json!({"base": v, "superseded": [e1.id]});
    assert_eq!(e2["conflict"], want);
    assert_eq!(receipt["conflict"], want);
    assert_eq!(receipt["outcome"], json!("delivered"));
}

/// The event (as JSON) of the last id in `ids`, read back through replay.
async fn card_event(sc: &Sidecar, ids: &[String]) -> Value {
    let last = ids.last().expect("the event came before its receipt");
    let (prev_epoch, prev) = last.rsplit_once('-').expect("an id");
    let before = format!("{prev_epoch}-{}", prev.parse::<u64>().expect("seq") - 1);
    let url = sc.url("/api/sse/events?topics=card:c7");
    let mut s = SseClient::connect_with(&url, Some(&before), &[])
        .await
        .expect("replay");
    let e = s.next_of("card.updated", T).await.expect("replayed");
    assert_eq!(&e.id, last);
    data(&e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edits_from_one_base_at_the_same_time_one_wins_and_one_is_refused() {
    let backend = common::echo::start().await;
    let sc = Sidecar::start(CARDS, &backend.to_string())
        .await
        .expect("sidecar");
    let base = load(&sc, "c5").await;
    let send = |title: &'static str| {
        let url = sc.url("/echo/cards/c5");
        let base = base.clone();
        async move {
            reqwest::Client::new()
                .patch(url)
                .header("x-sse-base", base)
                .header("x-echo-delay-ms", "300")
                .json(&json!({"title": title, "board": "1"}))
                .send()
                .await
                .expect("edit")
                .status()
                .as_u16()
        }
    };
    let (a, b) = tokio::join!(send("from A"), send("from B"));
    let mut got = [a, b];
    got.sort();
    assert_eq!(
        got,
        [200, 409],
        "the second waits for the first and sees its event"
    );
    assert_eq!(common::echo::hits("PATCH", "/echo/cards/c5"), 1);
}
