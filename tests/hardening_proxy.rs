//! Hardening of the proxy path (issue 15): rules and shields that a request shape, a
//! backend's habits or a missing event could bypass. Real sidecar in front of a small
//! in-process backend that behaves like common frameworks do: it resolves dot segments and
//! doubled slashes itself, gzips when asked (or always, if told to), and has a route marked
//! `no-store`.

mod common;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use common::{data, wait_for, Sidecar, SseClient};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

const CONFIG: &str = r#"
rollout: {phase: 3}
families:
  cards:
    phase: 3
    mode: live
    rules:
      - match: "PATCH /api/cards/{id}"
        event: card.updated
        topics: ["board:{response.board}"]
        data: response
      - match: "PUT /api/cards/{id}"
        event: card.replaced
        topics: ["board:{response.board}"]
        data: response
event_types:
  card.updated: {family: cards, schema: {type: object, required: [id, board]}}
  # The backend's answer never has this field: every PUT is a confirmed mutation whose
  # event cannot be derived.
  card.replaced: {family: cards, schema: {type: object, required: [never_there]}}
polling:
  max_staleness_seconds: 60
  coverage_grace_ms: 200
  routes:
    - match: "GET /api/boards/{board}/cards"
      family: cards
      topics: ["board:{board}"]
      shield: true
    - match: "GET /api/nostore/{board}/cards"
      family: cards
      topics: ["board:{board}"]
      shield: true
"#;

/// card id → (board, title).
type Cards = Arc<Mutex<BTreeMap<String, (u32, String)>>>;

/// Resolves a path as common backends do: `%2E` decoded, dot segments removed, slashes
/// merged.
fn resolve(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for seg in path.split('/') {
        let seg = seg.replace("%2e", ".").replace("%2E", ".");
        match seg.as_str() {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            _ => out.push(seg),
        }
    }
    out
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = e.write_all(b);
    e.finish().unwrap_or_default()
}

fn card_json(cards: &Cards, id: &str) -> Option<Value> {
    let cards = cards.lock().ok()?;
    let (board, title) = cards.get(id)?;
    Some(json!({"id": id, "board": board, "title": title}))
}

/// Answers `v` as JSON, gzipped when the request accepts gzip or says `x-force-gzip`.
fn answer(req_headers: &HeaderMap, v: Value, extra: &[(&'static str, &'static str)]) -> Response {
    let accepts = req_headers
        .get("accept-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"));
    let force = req_headers.contains_key("x-force-gzip");
    let body = v.to_string().into_bytes();
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    for (k, v) in extra {
        h.insert(*k, HeaderValue::from_static(v));
    }
    if accepts || force {
        h.insert("content-encoding", HeaderValue::from_static("gzip"));
        return (StatusCode::OK, h, gzip(&body)).into_response();
    }
    (StatusCode::OK, h, body).into_response()
}

async fn app(State(cards): State<Cards>, req: Request) -> Response {
    let method = req.method().clone();
    let headers = req.headers().clone();
    let segs = resolve(req.uri().path());
    let body: Bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let list = |board: &str| {
        let board: u32 = board.parse().unwrap_or(0);
        let cards = cards.lock().map(|c| c.clone()).unwrap_or_default();
        let list: Vec<Value> = cards
            .iter()
            .filter(|(_, (b, _))| *b == board)
            .map(|(id, (b, t))| json!({"id": id, "board": b, "title": t}))
            .collect();
        json!({ "cards": list })
    };
    let set_title = |id: &str| {
        let title = sent["title"].as_str().unwrap_or("").to_owned();
        if let Ok(mut c) = cards.lock() {
            if let Some(card) = c.get_mut(id) {
                card.1 = title;
            }
        }
    };
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["api", "boards", b, "cards"]) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            list(b).to_string(),
        )
            .into_response(),
        ("GET", ["api", "nostore", b, "cards"]) => (
            StatusCode::OK,
            [
                ("content-type", "application/json"),
                ("cache-control", "no-store"),
            ],
            list(b).to_string(),
        )
            .into_response(),
        ("PATCH" | "PUT", ["api", "cards", id]) => {
            set_title(id);
            match card_json(&cards, id) {
                Some(v) => answer(&headers, v, &[]),
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
        // A mutation no rule knows about.
        ("POST", ["api", "misc", "rename", id]) => {
            set_title(id);
            (StatusCode::OK, "renamed").into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn backend() -> SocketAddr {
    let mut cards = BTreeMap::new();
    cards.insert("c1".to_owned(), (1, "first".to_owned()));
    cards.insert("c2".to_owned(), (2, "other board".to_owned()));
    let state: Cards = Arc::new(Mutex::new(cards));
    let router = Router::new().fallback(app).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

async fn start() -> Sidecar {
    let addr = backend().await;
    Sidecar::start(CONFIG, &addr.to_string())
        .await
        .expect("sidecar")
}

/// (status, etag, shielded by the sidecar, body).
type Polled = (u16, Option<String>, bool, String);

async fn poll(sc: &Sidecar, path: &str, cookie: Option<&str>, etag: Option<&str>) -> Polled {
    let mut req = reqwest::Client::new().get(sc.url(path));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
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
    let shielded = r.headers().contains_key("x-sse-shielded");
    (status, etag, shielded, r.text().await.unwrap_or_default())
}

async fn mutate(
    sc: &Sidecar,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .request(method.parse().expect("method"), sc.url(path))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("mutation")
}

/// One request sent as raw bytes (HTTP clients normalize dot segments before sending):
/// (status, lower-case head, body).
async fn raw(
    sc: &Sidecar,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", sc.port))
        .await
        .expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    conn.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(T, conn.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// A shielded board poll with its ETag, checked to be answered 304 on revalidation.
async fn shielded_etag(sc: &Sidecar, cookie: Option<&str>) -> String {
    let (status, etag, _, _) = poll(sc, "/api/boards/1/cards", cookie, None).await;
    assert_eq!(status, 200);
    let etag = etag.expect("a sidecar etag");
    let (status, _, shielded, _) = poll(sc, "/api/boards/1/cards", cookie, Some(&etag)).await;
    assert_eq!(
        (status, shielded),
        (304, true),
        "shielded while nothing changed"
    );
    etag
}

async fn stream(sc: &Sidecar) -> SseClient {
    let mut s = SseClient::connect(&sc.url("/api/sse/events?topics=board:1"), None)
        .await
        .expect("stream");
    assert_eq!(s.status, 200);
    s.next_of("hello", T).await.expect("hello");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_canonical_mutation_paths_are_refused_and_never_leave_a_stale_304() {
    let sc = start().await;
    let etag = shielded_etag(&sc, Some("user=alice")).await;
    for path in [
        "/api/x/../cards/c1",
        "/api/x/%2e%2e/cards/c1",
        "/api/x/%2E%2E/cards/c1",
        "//api/cards/c1",
        "/api/./cards/c1",
    ] {
        let headers = [("content-type", "application/json")];
        let (status, _, _) = raw(&sc, "PATCH", path, &headers, r#"{"title":"sneaky"}"#).await;
        assert_eq!(status, 400, "{path}");
    }
    // Nothing reached the backend: the shield still rightly answers 304.
    let (status, _, _, _) = poll(&sc, "/api/boards/1/cards", Some("user=alice"), Some(&etag)).await;
    assert_eq!(status, 304);
    let m = sc
        .metric("sse_sidecar_proxy_refusals_total{reason=\"non_canonical_path\"}")
        .await
        .expect("metrics");
    assert_eq!(m, 5.0);
    // A non-canonical GET of a shielded route is forwarded, never answered 304.
    for path in ["//api/boards/1/cards", "/api/boards/x/../1/cards"] {
        let headers = [("cookie", "user=alice"), ("if-none-match", etag.as_str())];
        let (status, head, body) = raw(&sc, "GET", path, &headers, "").await;
        assert_eq!(status, 200, "{path}");
        assert!(!head.contains("x-sse-shielded"), "{path}");
        assert!(!head.contains("etag:"), "{path}: no sidecar validator");
        assert!(body.contains("first"), "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_derive_from_a_backend_that_compresses() {
    let sc = start().await;
    let mut s = stream(&sc).await;
    // The client asks for gzip, as browsers do.
    let r = mutate(
        &sc,
        "PATCH",
        "/api/cards/c1",
        &[("accept-encoding", "gzip")],
        json!({"title": "zipped"}),
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    let gz = r
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v == "gzip");
    let raw = r.bytes().await.expect("body");
    let mut body = Vec::new();
    if gz {
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut body)
            .expect("valid gzip");
    } else {
        body = raw.to_vec();
    }
    let answer: Value = serde_json::from_slice(&body).expect("the client's answer is JSON");
    assert_eq!(answer["title"], "zipped");
    let ev = s.next_of("card.updated", T).await.expect("the event");
    assert_eq!(data(&ev)["data"]["title"], "zipped");
    // A backend that compresses even when asked not to: the captured copy is inflated.
    let r = mutate(
        &sc,
        "PATCH",
        "/api/cards/c1",
        &[("x-force-gzip", "1")],
        json!({"title": "zipped anyway"}),
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    let ev = s.next_of("card.updated", T).await.expect("the event");
    assert_eq!(data(&ev)["data"]["title"], "zipped anyway");
}

/// Takes a shielded validator of board 1's cards, makes a mutation that sets a card's title
/// to `title` (2xx), and checks that the next revalidation reaches the backend and shows it.
async fn the_next_poll_is_forwarded_after(sc: &Sidecar, method: &str, path: &str, title: &str) {
    let etag = shielded_etag(sc, Some("user=alice")).await;
    let r = mutate(sc, method, path, &[], json!({ "title": title })).await;
    assert_eq!(r.status().as_u16(), 200);
    let (status, _, shielded, body) =
        poll(sc, "/api/boards/1/cards", Some("user=alice"), Some(&etag)).await;
    assert_eq!((status, shielded), (200, false), "never a stale 304");
    assert!(body.contains(title), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_whose_event_cannot_be_derived_ends_the_304s() {
    let sc = start().await;
    // The PUT's event fails its schema: no event, but the card changed.
    the_next_poll_is_forwarded_after(&sc, "PUT", "/api/cards/c1", "replaced").await;
    let m = sc
        .metric("sse_sidecar_events_rejected_total{family=\"cards\",reason=\"schema_invalid\"}")
        .await
        .expect("metrics");
    assert_eq!(m, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_with_one_idempotency_key_both_get_their_events() {
    let sc = start().await;
    let mut s = stream(&sc).await;
    for (cookie, title) in [("user=alice", "by alice"), ("user=bob", "by bob")] {
        let r = mutate(
            &sc,
            "PATCH",
            "/api/cards/c1",
            &[("cookie", cookie), ("idempotency-key", "same-key")],
            json!({"title": title}),
        )
        .await;
        assert_eq!(r.status().as_u16(), 200);
    }
    let got = s.collect_of("card.updated", 2, T).await;
    let titles: Vec<Value> = got
        .iter()
        .map(|e| data(e)["data"]["title"].clone())
        .collect();
    assert_eq!(titles, vec![json!("by alice"), json!("by bob")]);
    // Alice's retry is still one event: a duplicate, counted.
    let r = mutate(
        &sc,
        "PATCH",
        "/api/cards/c1",
        &[("cookie", "user=alice"), ("idempotency-key", "same-key")],
        json!({"title": "by alice"}),
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    wait_for("the duplicate counted", T, || async {
        let m = sc
            .metric("sse_sidecar_events_rejected_total{family=\"cards\",reason=\"duplicate\"}")
            .await
            .ok()?;
        (m == 1.0).then_some(())
    })
    .await
    .expect("duplicate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_answers_keep_their_caching_and_are_never_shielded() {
    let sc = start().await;
    let r = reqwest::Client::new()
        .get(sc.url("/api/nostore/1/cards"))
        .header("cookie", "user=alice")
        .send()
        .await
        .expect("poll");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store", "never weakened");
    assert!(r.headers().get("etag").is_none(), "no sidecar validator");
    let m = sc
        .metric("sse_sidecar_shield_skipped_total{reason=\"no_store\"}")
        .await
        .expect("metrics");
    assert_eq!(m, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_sharing_credentials_share_one_validator() {
    let sc = start().await;
    for cookie in [Some("user=alice"), None] {
        let path = "/api/boards/1/cards";
        let (_, tab_a, _, _) = poll(&sc, path, cookie, None).await;
        let (_, tab_b, _, _) = poll(&sc, path, cookie, None).await;
        let (tab_a, tab_b) = (tab_a.expect("etag"), tab_b.expect("etag"));
        assert_eq!(tab_a, tab_b, "{cookie:?}: same content, same validator");
        for round in 0..3 {
            for etag in [&tab_a, &tab_b] {
                let (status, _, shielded, _) = poll(&sc, path, cookie, Some(etag)).await;
                assert_eq!((status, shielded), (304, true), "{cookie:?} round {round}");
            }
        }
        // A third tab forwarded (no validator) keeps the others' validators valid.
        let (_, tab_c, _, _) = poll(&sc, path, cookie, None).await;
        assert_eq!(tab_c.as_deref(), Some(tab_a.as_str()));
        let (status, _, _, _) = poll(&sc, path, cookie, Some(&tab_a)).await;
        assert_eq!(status, 304);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmatched_mutation_ends_the_304s_and_shows_as_uncovered() {
    let sc = start().await;
    the_next_poll_is_forwarded_after(&sc, "POST", "/api/misc/rename/c1", "renamed").await;
    let m = sc
        .metric("sse_sidecar_mutations_unmatched_total")
        .await
        .expect("metrics");
    assert_eq!(m, 1.0);
    // Coverage sees the change no event explains.
    wait_for("the uncovered change", T, || async {
        let st = sc.status().await.ok()?;
        let cov = st["coverage"]
            .as_array()?
            .iter()
            .find(|c| c["route"] == "GET /api/boards/{board}/cards")?
            .clone();
        (cov["uncovered_total"].as_u64()? >= 1).then_some(())
    })
    .await
    .expect("uncovered change");
    // A non-canonical path that no rule matches is forwarded unchanged (the backend
    // resolves it), and ends the 304s the same way.
    let (_, etag, _, _) = poll(&sc, "/api/boards/1/cards", Some("user=alice"), None).await;
    let etag = etag.expect("etag");
    let headers = [("content-type", "application/json")];
    let body = r#"{"title":"renamed again"}"#;
    let (status, _, _) = raw(&sc, "POST", "/api/x/../misc/rename/c1", &headers, body).await;
    assert_eq!(status, 200);
    let (status, _, _, body) =
        poll(&sc, "/api/boards/1/cards", Some("user=alice"), Some(&etag)).await;
    assert_eq!(status, 200);
    assert!(body.contains("renamed again"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncovered_change_urls_hide_query_values() {
    let sc = start().await;
    let path = "/api/boards/1/cards?secret=hunter2&flag";
    let (status, _, _, _) = poll(&sc, path, Some("user=alice"), None).await;
    assert_eq!(status, 200);
    let r = mutate(
        &sc,
        "POST",
        "/api/misc/rename/c1",
        &[],
        json!({"title": "changed"}),
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    let (_, _, _, body) = poll(&sc, path, Some("user=alice"), None).await;
    assert!(body.contains("changed"));
    let url = wait_for("the uncovered change", T, || async {
        let st = sc.status().await.ok()?;
        let cov = st["coverage"]
            .as_array()?
            .iter()
            .find(|c| c["route"] == "GET /api/boards/{board}/cards")?
            .clone();
        cov["last_uncovered_url"].as_str().map(str::to_owned)
    })
    .await
    .expect("uncovered change");
    assert_eq!(url, "/api/boards/1/cards?secret=<redacted>&flag");
    assert!(sc.log().contains("uncovered change"));
    assert!(!sc.log().contains("hunter2"), "query values never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_ids_accept_printable_ascii_and_count_what_they_refuse() {
    let sc = start().await;
    let mut s = stream(&sc).await;
    let r = mutate(
        &sc,
        "PATCH",
        "/api/cards/c1",
        &[("x-client-id", "tab 1/{x}"), ("x-mutation-id", "m=1;\"q\"")],
        json!({"title": "t1"}),
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    let ev = s.next_of("card.updated", T).await.expect("event");
    let origin = data(&ev)["origin"].clone();
    assert_eq!(
        origin,
        json!({"client": "tab 1/{x}", "mutation": "m=1;\"q\""})
    );
    let long = "a".repeat(129);
    let r = mutate(
        &sc,
        "PATCH",
        "/api/cards/c1",
        &[("x-client-id", long.as_str()), ("x-mutation-id", "ok")],
        json!({"title": "t2"}),
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    let ev = s.next_of("card.updated", T).await.expect("event");
    assert_eq!(
        data(&ev)["origin"],
        json!({"client": null, "mutation": "ok"})
    );
    let m = sc
        .metric("sse_sidecar_origin_ids_refused_total{header=\"x-client-id\",reason=\"too_long\"}")
        .await
        .expect("metrics");
    assert_eq!(m, 1.0);
}
