//! A presence topic as one stream sees it: the `hello` snapshot, then the `presence` frames
//! applied (what a client holds), with every frame kept and when it arrived.

use super::{data, SseClient};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The `id`s of a members list (`joined`, `members`, …) in a presence frame or snapshot.
pub fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str())
        .collect()
}

pub struct Member {
    pub sse: SseClient,
    /// The presence topic whose members `view` follows.
    pub topic: String,
    /// id → connections, as the hello and the frames so far say.
    pub view: BTreeMap<String, u64>,
    pub frames: Vec<(Instant, Value)>,
}

impl Member {
    /// `user`'s stream (the demo app's `user` cookie) on `topics`, following `topic`.
    pub async fn open(url: &str, user: &str, topic: &str) -> anyhow::Result<Member> {
        let cookie = format!("user={user}");
        let mut sse = SseClient::connect_with(url, None, &[("cookie", &cookie)]).await?;
        anyhow::ensure!(sse.status == 200, "{user}: stream status {}", sse.status);
        let hello = data(&sse.next_of("hello", Duration::from_secs(10)).await?);
        let mut m = Member {
            sse,
            topic: topic.to_owned(),
            view: BTreeMap::new(),
            frames: Vec::new(),
        };
        for member in hello["presence"][topic]["members"]
            .as_array()
            .into_iter()
            .flatten()
        {
            m.set(member["id"].as_str(), member["connections"].as_u64());
        }
        Ok(m)
    }

    fn set(&mut self, id: Option<&str>, connections: Option<u64>) {
        let id = id.unwrap_or_default().to_owned();
        self.view.insert(id, connections.unwrap_or(0));
    }

    pub fn apply(&mut self, f: Value) {
        if f["topic"] == self.topic.as_str() {
            for m in f["joined"].as_array().into_iter().flatten() {
                self.set(m["id"].as_str(), m["connections"].as_u64());
            }
            for u in f["updated"].as_array().into_iter().flatten() {
                self.set(u["id"].as_str(), u["connections"].as_u64());
            }
            for id in f["left"].as_array().into_iter().flatten() {
                self.view.remove(id.as_str().unwrap_or_default());
            }
        }
        self.frames.push((Instant::now(), f));
    }

    /// Applies the presence frames that arrive within `window`.
    pub async fn read_for(&mut self, window: Duration) {
        for ev in self.sse.collect_for(window).await {
            if ev.event == "presence" {
                self.apply(data(&ev));
            }
        }
    }

    /// Reads until the view is `want` (or fails after `timeout`).
    pub async fn until(&mut self, want: &[(&str, u64)], timeout: Duration) -> anyhow::Result<()> {
        let want: BTreeMap<String, u64> = want.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let deadline = Instant::now() + timeout;
        while self.view != want {
            anyhow::ensure!(
                Instant::now() < deadline,
                "view {:?}, wanted {want:?}; frames {:?}",
                self.view,
                self.frames
            );
            if let Some(ev) = self.sse.next(Duration::from_millis(100)).await {
                if ev.event == "presence" {
                    self.apply(data(&ev));
                }
            }
        }
        Ok(())
    }

    /// When the frame saying `id` left arrived.
    pub fn left_at(&self, id: &str) -> Option<Instant> {
        self.frames.iter().find_map(|(at, f)| {
            let left = f["left"].as_array()?;
            left.iter().any(|x| x == id).then_some(*at)
        })
    }
}
