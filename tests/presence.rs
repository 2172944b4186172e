//! Presence, end to end: the real sidecar in front of the bundled legacy app (its `/api/me`
//! says who a cookie is; its boards say who may see them), with the demo config's
//! `presence` section. Streams are read with a real SSE client; each test follows what a
//! client would hold (the `hello` snapshot, then the `presence` frames applied).

mod common;

use common::presence::{ids, Member};
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const GRACE_MS: u64 = 1_500;
const DEBOUNCE_MS: u64 = 100;

async fn world() -> anyhow::Result<(LegacyApp, Sidecar)> {
    world_with(&[]).await
}

/// The demo behind the sidecar, with a short grace and debounce and these env overrides.
async fn world_with(extra: &[(&str, &str)]) -> anyhow::Result<(LegacyApp, Sidecar)> {
    let app = LegacyApp::start()?;
    let mut env: Vec<(String, String)> = [
        (
            "SSE_SIDECAR__PRESENCE__LEAVE_GRACE_MS",
            GRACE_MS.to_string(),
        ),
        (
            "SSE_SIDECAR__PRESENCE__DEBOUNCE_MS",
            DEBOUNCE_MS.to_string(),
        ),
    ]
    .map(|(k, v)| (k.to_owned(), v))
    .to_vec();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let sidecar =
        Sidecar::start_with(&demo_config(), &app.addr.to_string(), SidecarOpts { env }).await?;
    Ok((app, sidecar))
}

/// `user`'s stream on `topics`, following `board:2`.
async fn open(sidecar: &Sidecar, user: &str, topics: &str) -> anyhow::Result<Member> {
    following(sidecar, user, topics, "board:2").await
}

/// `user`'s stream on `topics`, following `topic`.
async fn following(
    sidecar: &Sidecar,
    user: &str,
    topics: &str,
    topic: &str,
) -> anyhow::Result<Member> {
    Member::open(
        &sidecar.url(&format!("/api/sse/events?topics={topics}")),
        user,
        topic,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_listed_once_with_their_connections_and_leave_after_the_grace(
) -> anyhow::Result<()> {
    let (_app, sidecar) = world().await?;
    let all = [("alice", 2), ("bob", 1), ("carol", 1)];
    let mut streams = Vec::new();
    for user in ["alice", "alice", "bob", "carol"] {
        streams.push(open(&sidecar, user, "board:2").await?);
    }
    // A stream opened after all of them sees everyone in its hello.
    let late = open(&sidecar, "carol", "board:2").await?;
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
    let carol = open(&sidecar, "carol", "board:2").await?;
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
            let joined = ids(&f["joined"]);
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
    let _alice = open(&sidecar, "alice", "board:1,board:2").await?;
    let mut carol = open(&sidecar, "carol", "board:1,board:2").await?;
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
    let bob = open(&sidecar, "bob", "board:1").await?;
    let (status, body) = presence_get("bob").await?;
    assert_eq!(status, 200, "{body}");
    let snap: Value = serde_json::from_str(&body)?;
    let members = ids(&snap["members"]);
    assert_eq!(
        (snap["topic"].as_str(), members),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_topic_is_revoked_leaves_it_and_stays_where_it_is_granted(
) -> anyhow::Result<()> {
    let (app, sidecar) =
        world_with(&[("SSE_SIDECAR__AUTHORIZATION__CACHE_TTL_SECONDS", "1")]).await?;
    let mut alice = following(&sidecar, "alice", "board:1", "board:1").await?;
    let mut bob = following(&sidecar, "bob", "board:1,board:2", "board:2").await?;
    alice
        .until(&[("alice", 1), ("bob", 1)], Duration::from_secs(5))
        .await?;
    bob.until(&[("bob", 1)], Duration::from_secs(5)).await?;
    // The app takes bob off board 1: his stream's re-check revokes the topic.
    let resp = reqwest::Client::new()
        .put(app.url("/api/boards/1/members"))
        .header("cookie", "user=alice")
        .json(&serde_json::json!({"members": ["alice"]}))
        .send()
        .await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "membership change: {}",
        resp.status()
    );
    alice
        .until(&[("alice", 1)], Duration::from_secs(10))
        .await?;
    let snap: Value = reqwest::Client::new()
        .get(sidecar.url("/api/sse/presence?topic=board:2"))
        .header("cookie", "user=carol")
        .send()
        .await?
        .json()
        .await?;
    let members = ids(&snap["members"]);
    assert_eq!(members, ["bob"], "bob's stream stays on board 2: {snap}");
    Ok(())
}
