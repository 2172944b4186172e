//! Issue 15 item 13 on the real binary: `upstream.tenancy: host` in front of a backend that
//! serves two tenants by Host, each with its own board 1. Events, replay and the poll shield
//! stay within the tenant a request was sent to.

mod common;

use common::{data, wait_for, Sidecar, SseClient};
use eventsource_stream::Event as SseEvent;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(10);

fn config(tenancy: &str) -> String {
    format!(
        r#"
upstream: {{address: "127.0.0.1:1", tenancy: {tenancy}}}
sse: {{handshakes_per_client_per_second: 100000, handshake_burst: 100000}}
store: {{backend: memory, retention: {{max_events: 200}}}}
rollout: {{phase: 1}}
families:
  cards:
    phase: 1
    rules:
      - match: "POST /boards/{{board}}/cards"
        event: card.created
        topics: ["board:{{board}}"]
        data: response
event_types:
  card.created: {{family: cards, schema: {{type: object}}}}
authorization:
  rules:
    - topic: "board:{{b}}"
      check: "GET /check/board/{{b}}"
polling:
  max_staleness_seconds: 60
  routes:
    - match: "GET /boards/{{board}}/cards"
      family: cards
      topics: ["board:{{board}}"]
      shield: true
"#
    )
}

/// A backend that routes tenants by Host: `a.example` (alice's) and `b.example` (bob's),
/// each with its own board 1 whose card count `POST /boards/1/cards` raises.
/// `GET /check/board/1` grants alice on a.example and bob on b.example, nobody else.
async fn tenant_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let cards: Arc<Mutex<HashMap<String, u64>>> = Default::default();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let cards = cards.clone();
            tokio::spawn(async move {
                while let Some((line, headers)) = read_request(&mut s).await {
                    let (status, body) = answer(&cards, &line, &headers);
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\n\r\n",
                        body.len()
                    );
                    if s.write_all(head.as_bytes()).await.is_err()
                        || s.write_all(body.as_bytes()).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn answer(
    cards: &Mutex<HashMap<String, u64>>,
    line: &str,
    headers: &HashMap<String, String>,
) -> (&'static str, String) {
    let host = headers.get("host").cloned().unwrap_or_default();
    let cookie = headers.get("cookie").cloned().unwrap_or_default();
    let mut cards = cards.lock().expect("cards");
    match line.split(' ').take(2).collect::<Vec<_>>()[..] {
        ["GET", "/check/board/1"] => {
            let ok = (host == "a.example" && cookie == "user=alice")
                || (host == "b.example" && cookie == "user=bob");
            if ok {
                ("200 OK", "{}".into())
            } else {
                ("403 Forbidden", "{}".into())
            }
        }
        ["POST", "/boards/1/cards"] => {
            let n = cards.entry(host.clone()).or_insert(0);
            *n += 1;
            ("200 OK", format!(r#"{{"host":"{host}","n":{n}}}"#))
        }
        ["GET", "/boards/1/cards"] => {
            let n = cards.get(&host).copied().unwrap_or(0);
            ("200 OK", format!(r#"{{"host":"{host}","cards":{n}}}"#))
        }
        _ => ("404 Not Found", "{}".into()),
    }
}

/// Reads one request (head lower-cased, body by content-length); `None` at the end.
async fn read_request(s: &mut tokio::net::TcpStream) -> Option<(String, HashMap<String, String>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.lines();
    let line = lines.next()?.to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut have = buf.len() - end;
    while have < len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        have += n;
    }
    Some((line, headers))
}

struct Setup {
    sc: Sidecar,
    http: reqwest::Client,
}

async fn setup(tenancy: &str) -> Setup {
    let backend = tenant_backend().await;
    let sc = Sidecar::start(&config(tenancy), &backend.to_string())
        .await
        .expect("sidecar");
    Setup {
        sc,
        http: reqwest::Client::new(),
    }
}

impl Setup {
    async fn stream(&self, host: &str, user: &str, last_id: Option<&str>) -> SseClient {
        let cookie = format!("user={user}");
        let url = self.sc.url("/api/sse/events?topics=board:1");
        let mut c = SseClient::connect_with(&url, last_id, &[("host", host), ("cookie", &cookie)])
            .await
            .expect("stream");
        assert_eq!(c.status, 200, "{user} is granted board:1 on {host}");
        c.next_of("hello", T).await.expect("hello");
        c
    }

    /// A card created on `host`'s board 1; returns the backend's answer.
    async fn mutate(&self, host: &str, user: &str) -> serde_json::Value {
        let r = self
            .http
            .post(self.sc.url("/boards/1/cards"))
            .header("host", host)
            .header("cookie", format!("user={user}"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("mutation");
        assert!(r.status().is_success(), "{}", r.status());
        r.json().await.expect("json")
    }

    /// A poll of `host`'s board 1: (status, ETag).
    async fn poll(&self, host: &str, user: &str, etag: Option<&str>) -> (u16, Option<String>) {
        let mut req = self
            .http
            .get(self.sc.url("/boards/1/cards"))
            .header("host", host)
            .header("cookie", format!("user={user}"));
        if let Some(e) = etag {
            req = req.header("if-none-match", e);
        }
        let r = req.send().await.expect("poll");
        let etag = r
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (r.status().as_u16(), etag)
    }
}

/// The event's `data.host` (which tenant's backend answered the mutation).
fn host_of(e: &SseEvent) -> String {
    data(e)["data"]["host"].as_str().unwrap_or("").to_owned()
}

/// (a) alice's mutation on a.example reaches alice's stream and never bob's on b.example:
/// bob's first event is his own tenant's later mutation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_event_reaches_only_that_tenants_streams() {
    let s = setup("host").await;
    let mut alice = s.stream("a.example", "alice", None).await;
    let mut bob = s.stream("b.example", "bob", None).await;
    s.mutate("a.example", "alice").await;
    let got = alice
        .next_of("card.created", T)
        .await
        .expect("alice's event");
    assert_eq!(host_of(&got), "a.example");
    s.mutate("b.example", "bob").await;
    let first = bob.next_of("card.created", T).await.expect("bob's event");
    assert_eq!(
        host_of(&first),
        "b.example",
        "bob's first event is his own tenant's: a.example's never reached him"
    );
    let more = alice.collect_for(Duration::from_millis(500)).await;
    assert!(
        more.iter().all(|e| e.event != "card.created"),
        "b.example's event never reached alice: {more:?}"
    );
}

/// (b) replay after a reconnect on b.example holds b.example's events only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_holds_only_the_streams_tenant() {
    let s = setup("host").await;
    let mut bob = s.stream("b.example", "bob", None).await;
    let mut alice = s.stream("a.example", "alice", None).await;
    let before = bob.last_id.clone().expect("hello's id");
    s.mutate("a.example", "alice").await;
    alice
        .next_of("card.created", T)
        .await
        .expect("alice's event");
    s.mutate("b.example", "bob").await;
    bob.next_of("card.created", T).await.expect("bob's event");
    drop(bob);
    let mut again = s.stream("b.example", "bob", Some(&before)).await;
    let replayed = again
        .collect_of("card.created", 2, Duration::from_secs(2))
        .await;
    let hosts: Vec<String> = replayed.iter().map(host_of).collect();
    assert_eq!(hosts, vec!["b.example".to_owned()], "replay on b.example");
}

/// (c) a shielded poll on b.example keeps its 304 after a mutation on a.example and gets
/// 200 after one on b.example.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_mutation_never_touches_another_tenants_shield() {
    let s = setup("host").await;
    let mut alice = s.stream("a.example", "alice", None).await;
    let mut bob = s.stream("b.example", "bob", None).await;
    let (st, etag) = s.poll("b.example", "bob", None).await;
    assert_eq!(st, 200);
    let etag = etag.expect("a shield ETag");
    assert_eq!(s.poll("b.example", "bob", Some(&etag)).await.0, 304);
    s.mutate("a.example", "alice").await;
    alice
        .next_of("card.created", T)
        .await
        .expect("alice's event");
    assert_eq!(
        s.poll("b.example", "bob", Some(&etag)).await.0,
        304,
        "a.example's mutation leaves b.example's board unchanged: still 304"
    );
    s.mutate("b.example", "bob").await;
    bob.next_of("card.created", T).await.expect("bob's event");
    wait_for("b.example's poll forwarded", T, || async {
        (s.poll("b.example", "bob", Some(&etag)).await.0 == 200).then_some(())
    })
    .await
    .expect("200 after b.example's own mutation");
}

/// Without a usable Host a tenant stream is refused (400), never scoped to a guess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_a_usable_host_is_refused() {
    let s = setup("host").await;
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", s.sc.port))
        .await
        .expect("connect");
    sock.write_all(b"GET /api/sse/events?topics=board:1 HTTP/1.1\r\nHost: a/b\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(T, sock.read(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
}

/// `tenancy: none` keeps the old behaviour: Host plays no part (one board 1 for everyone
/// granted it), and events carry no `tenant`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tenancy_host_plays_no_part_in_topics() {
    let s = setup("none").await;
    let mut alice = s.stream("a.example", "alice", None).await;
    let mut bob = s.stream("b.example", "bob", None).await;
    s.mutate("a.example", "alice").await;
    let a = alice
        .next_of("card.created", T)
        .await
        .expect("alice's event");
    let b = bob
        .next_of("card.created", T)
        .await
        .expect("bob gets it too");
    assert_eq!(a.data, b.data);
    assert!(data(&a).get("tenant").is_none(), "{}", a.data);
}

/// `POST /admin/publish` under tenancy: the event goes to the named tenant's streams only;
/// without a `tenant` it is refused (no stream could receive it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_publish_names_its_tenant() {
    let s = setup("host").await;
    let mut alice = s.stream("a.example", "alice", None).await;
    let mut bob = s.stream("b.example", "bob", None).await;
    let publish = |body: serde_json::Value| {
        s.http
            .post(s.sc.admin_url("/admin/publish"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let untargeted = serde_json::json!({"type": "card.created", "topics": ["board:1"], "data": {"host": "none"}});
    let r = publish(untargeted).await.expect("publish");
    assert_eq!(r.status().as_u16(), 400, "a tenant is required");
    for host in ["A.Example", "b.example"] {
        let body = serde_json::json!({"type": "card.created", "topics": ["board:1"],
            "data": {"host": host.to_ascii_lowercase()}, "tenant": host});
        let r = publish(body).await.expect("publish");
        assert!(r.status().is_success(), "{}", r.status());
    }
    let a = alice
        .next_of("card.created", T)
        .await
        .expect("alice's event");
    assert_eq!(
        host_of(&a),
        "a.example",
        "the tenant is the Host, lower-cased"
    );
    let b = bob.next_of("card.created", T).await.expect("bob's event");
    assert_eq!(host_of(&b), "b.example", "bob's first event is b.example's");
}
