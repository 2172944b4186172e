//! Presence, end to end: the real sidecar in front of the bundled legacy app (its `/api/me`
//! says who a cookie is; its boards say who may see them), with the demo config's
//! `presence` section. Streams are read with a real SSE client; each test follows what a
//! client would hold (the `hello` snapshot, then the `presence` frames applied).

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const GRACE_MS: u64 = 1_500;
const DEBOUNCE_MS: u64 = 100;

async fn world() -> anyhow::Result<(LegacyApp, Sidecar)> {
    let app = LegacyApp::start()?;
    let env = vec![
        (
            "SSE_SIDECAR__PRESENCE__LEAVE_GRACE_MS".into(),
            GRACE_MS.to_string(),
        ),
        (
            "SSE_SIDECAR__PRESENCE__DEBOUNCE_MS".into(),
            DEBOUNCE_MS.to_string(),
        ),
    ];
    let sidecar =
        Sidecar::start_with(&demo_config(), &app.addr.to_string(), SidecarOpts { env }).await?;
    Ok((app, sidecar))
}

/// One user's stream on `topics`, with what it knows of `board:2`'s members.
struct Member {
    sse: SseClient,
    /// id → connections, as the hello and the frames so far say.
    view: BTreeMap<String, u64>,
    frames: Vec<(Instant, Value)>,
}

impl Member {
    async fn open(sidecar: &Sidecar, user: &str, topics: &str) -> anyhow::Result<Member> {
        let url = sidecar.url(&format!("/api/sse/events?topics={topics}"));
        let cookie = format!("user={user}");
        let mut sse = SseClient::connect_with(&url, None, &[("cookie", &cookie)]).await?;
        anyhow::ensure!(sse.status == 200, "{user}: stream status {}", sse.status);
        let hello = data(&sse.next_of("hello", Duration::from_secs(10)).await?);
        let mut view = BTreeMap::new();
        for m in hello["presence"]["board:2"]["members"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let id = m["id"].as_str().unwrap_or_default().to_owned();
            view.insert(id, m["connections"].as_u64().unwrap_or(0));
        }
        Ok(Member {
            sse,
            view,
            frames: Vec::new(),
        })
    }

    /// Applies the presence frames that arrive within `window`.
    async fn read_for(&mut self, window: Duration) {
        for ev in self.sse.collect_for(window).await {
            if ev.event == "presence" {
                self.apply(data(&ev));
            }
        }
    }

    fn apply(&mut self, f: Value) {
        if f["topic"] == "board:2" {
            for m in f["joined"].as_array().into_iter().flatten() {
                let id = m["id"].as_str().unwrap_or_default().to_owned();
                self.view.insert(id, m["connections"].as_u64().unwrap_or(0));
            }
            for u in f["updated"].as_array().into_iter().flatten() {
                let id = u["id"].as_str().unwrap_or_default().to_owned();
                self.view.insert(id, u["connections"].as_u64().unwrap_or(0));
            }
            for id in f["left"].as_array().into_iter().flatten() {
                self.view.remove(id.as_str().unwrap_or_default());
            }
        }
        self.frames.push((Instant::now(), f));
    }

    /// Reads until the view equals `want` (or fails after `timeout`).
    async fn until(&mut self, want: &[(&str, u64)], timeout: Duration) -> anyhow::Result<()> {
        let want: BTreeMap<String, u64> = want.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let deadline = Instant::now() + timeout;
        while self.view != want {
            anyhow::ensure!(
                Instant::now() < deadline,
                "view {:?}, wanted {want:?}",
                self.view
            );
            if let Some(ev) = self.sse.next(Duration::from_millis(200)).await {
                if ev.event == "presence" {
                    self.apply(data(&ev));
                }
            }
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_listed_once_with_their_connections_and_leave_after_the_grace(
) -> anyhow::Result<()> {
    let (_app, sidecar) = world().await?;
    let all = [("alice", 2), ("bob", 1), ("carol", 1)];
    let mut streams = Vec::new();
    for user in ["alice", "alice", "bob", "carol"] {
        streams.push(Member::open(&sidecar, user, "board:2").await?);
    }
    // A stream opened after all of them sees everyone in its hello.
    let late = Member::open(&sidecar, "carol", "board:2").await?;
    assert_eq!(
        late.view,
        [("alice", 2), ("bob", 1), ("carol", 2)]
            .map(|(k, v)| (k.to_string(), v))
            .into(),
        "the hello lists every member once, with its connections"
    );
    drop(late);
    for s in &mut streams {
        s.until(&all, Duration::from_secs(5)).await?;
    }

    // carol reloads her page within the grace: no left/joined pair for her.
    for s in &mut streams {
        s.frames.clear();
    }
    let carol = streams.pop().expect("carol");
    drop(carol);
    let carol = Member::open(&sidecar, "carol", "board:2").await?;
    assert!(
        carol.view.contains_key("carol"),
        "still listed: {:?}",
        carol.view
    );
    streams.push(carol);

    // bob closes: announced as left after the grace, not before.
    let bob = streams.remove(2);
    let closed = Instant::now();
    drop(bob);
    let want = [("alice", 2), ("carol", 1)];
    for s in &mut streams {
        s.until(&want, Duration::from_secs(10)).await?;
    }
    for s in &streams {
        for (at, f) in &s.frames {
            let left: Vec<&str> = f["left"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            assert!(
                !left.contains(&"carol"),
                "carol's reload was announced: {f}"
            );
            if left.contains(&"bob") {
                let after = at.duration_since(closed);
                assert!(
                    after >= Duration::from_millis(GRACE_MS),
                    "bob's leave came {after:?} after he closed (grace {GRACE_MS} ms)"
                );
            }
            let joined: Vec<&str> = f["joined"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["id"].as_str())
                .collect();
            assert!(
                !joined.contains(&"carol"),
                "carol's reload was announced: {f}"
            );
        }
    }
    assert!(sidecar.metric("sse_sidecar_presence_frames_total").await? > 0.0);
    assert_eq!(sidecar.metric("sse_sidecar_presence_topics").await?, 1.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_is_on_a_private_board_is_told_only_to_its_members() -> anyhow::Result<()> {
    let (_app, sidecar) = world().await?;
    let _alice = Member::open(&sidecar, "alice", "board:1,board:2").await?;
    let mut carol = Member::open(&sidecar, "carol", "board:1,board:2").await?;
    let presence_get = |user: &'static str| {
        let url = sidecar.url("/api/sse/presence?topic=board:1");
        async move {
            let resp = reqwest::Client::new()
                .get(url)
                .header("cookie", format!("user={user}"))
                .send()
                .await?;
            let status = resp.status().as_u16();
            anyhow::Ok((status, resp.text().await?))
        }
    };
    let (status, body) = presence_get("carol").await?;
    assert_eq!(status, 403, "carol may not see board 1: {body}");
    assert!(!body.contains("alice"), "{body}");
    let bob = Member::open(&sidecar, "bob", "board:1").await?;
    let (status, body) = presence_get("bob").await?;
    assert_eq!(status, 200, "{body}");
    let snap: Value = serde_json::from_str(&body)?;
    let ids: Vec<&str> = snap["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(
        (snap["topic"].as_str(), ids),
        (Some("board:1"), vec!["alice", "bob"])
    );
    drop(bob);
    carol
        .read_for(Duration::from_millis(GRACE_MS + 4 * DEBOUNCE_MS))
        .await;
    assert!(
        carol.frames.iter().all(|(_, f)| f["topic"] != "board:1"),
        "carol was told about board 1: {:?}",
        carol.frames
    );
    let status = reqwest::get(sidecar.url("/api/sse/presence?topic=card:1"))
        .await?
        .status();
    assert_eq!(status.as_u16(), 404, "not a presence topic");
    let status = reqwest::get(sidecar.url("/api/sse/presence"))
        .await?
        .status();
    assert_eq!(status.as_u16(), 400, "no topic");
    Ok(())
}
