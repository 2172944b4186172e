//! The presence part of the wire contract: a topic's members as `hello` lists them
//! (`PresenceSnapshot`, per presence topic) and the `presence` frame's data
//! (`PresenceUpdate`: what changed since the last one, or a whole snapshot).

use serde::Serialize;

/// One member of a presence topic: an identified subscriber, however many streams it has.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PresenceMember {
    pub id: String,
    /// The public fields the identity request gave (e.g. `name`).
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Its open streams on the topic (0 while it is in its leave grace).
    pub connections: u32,
}

/// A member whose connection count changed without joining or leaving.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PresenceCount {
    pub id: String,
    pub connections: u32,
}

/// A topic's members now: `members` (sorted by id) lists at most `presence.max_listed`;
/// `partial` says some were left out; `count` is exact; anonymous streams are only counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PresenceSnapshot {
    pub count: usize,
    pub anonymous: u32,
    pub partial: bool,
    pub members: Vec<PresenceMember>,
}

/// `event: presence` (no `id:`: never replayed, never a resume point).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PresenceUpdate {
    /// What changed on `topic` since the last frame (each list capped at
    /// `presence.max_listed`; `partial` when a list or the members were cut).
    Delta {
        topic: String,
        joined: Vec<PresenceMember>,
        left: Vec<String>,
        updated: Vec<PresenceCount>,
        count: usize,
        anonymous: u32,
        partial: bool,
    },
    /// The whole state of `topic`: the client replaces what it holds.
    Snapshot {
        topic: String,
        #[serde(flatten)]
        snapshot: PresenceSnapshot,
    },
}
