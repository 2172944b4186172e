//! Every frame the server writes on an event stream, as one typed enum: the wire contract's
//! single source. `Frame::encode` is the only way a stream's bytes are made (through
//! `encode`'s framing), and `examples()` lists one of each (but `Snapshot`, the admin
//! dashboard's feed) for the fixture the browser client's tests replay (`clients/js/test/fixtures/frames.sse`), so the two sides of the
//! contract cannot drift apart unnoticed.
//!
//! JSON objects go out with their keys sorted (through `serde_json::Value`), as they always
//! have: clients never depend on the order, and the bytes stay the same across releases.

use super::encode;
use crate::events::Event;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Why a client must refetch everything (`event: reset`): the reasons replay cannot cover.
/// The same names are the wire reason, the `resets_total` label and the test rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetReason {
    /// The client's id cannot be parsed (or could not be read at all).
    MalformedId,
    /// The id is from another epoch of the log.
    UnknownEpoch,
    /// The id is ahead of the head.
    FutureId,
    /// The id is from before SSE was last switched back on (or SSE went off and on while
    /// the stream was busy): changes made meanwhile were never recorded.
    SseWasOff,
    /// More than `sse.replay_max_events` behind.
    TooFarBehind,
    /// Events after the id could not be stored.
    EventsLost,
    /// Retention evicted the id.
    Evicted,
    /// The log could not be read for replay.
    StoreUnavailable,
    /// The log did not answer the replay in time.
    StoreTimeout,
    /// A shared log lost continuity (this instance's tailer missed entries).
    LogGap,
    /// A shared log started a new epoch.
    EpochChanged,
}

impl ResetReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::MalformedId => "malformed_id",
            ResetReason::UnknownEpoch => "unknown_epoch",
            ResetReason::FutureId => "future_id",
            ResetReason::SseWasOff => "sse_was_off",
            ResetReason::TooFarBehind => "too_far_behind",
            ResetReason::EventsLost => "events_lost",
            ResetReason::Evicted => "evicted",
            ResetReason::StoreUnavailable => "store_unavailable",
            ResetReason::StoreTimeout => "store_timeout",
            ResetReason::LogGap => "log_gap",
            ResetReason::EpochChanged => "epoch_changed",
        }
    }
}

/// The `hello` frame's data: what the stream was granted and how it will behave.
#[derive(Debug, Clone, Serialize)]
pub struct Hello {
    pub epoch: String,
    pub head: String,
    pub topics: Vec<String>,
    pub denied: Vec<String>,
    pub denied_reasons: serde_json::Map<String, serde_json::Value>,
    pub heartbeat_ms: u64,
    pub types: Vec<String>,
    pub polling_families: Vec<String>,
    /// The client id the stream was opened with (`?client=`): the browser whose mutations'
    /// receipts it gets. `null` when it gave none.
    pub client: Option<String>,
    /// Per presence topic granted: its members when the stream opened (left out when
    /// none).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub presence: std::collections::BTreeMap<String, super::PresenceSnapshot>,
}

/// What became of a mutation, as its receipt says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptOutcome {
    /// Its events were stored and delivered live (`events` lists their ids).
    Delivered,
    /// Its family is in shadow: derived and counted, never delivered.
    Shadow,
    /// The backend confirmed it, but no event was made (`reason` says why).
    Dropped,
    /// The backend (or the proxy, for an unreachable backend) answered non-2xx (`status`).
    Failed,
}

impl ReceiptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptOutcome::Delivered => "delivered",
            ReceiptOutcome::Shadow => "shadow",
            ReceiptOutcome::Dropped => "dropped",
            ReceiptOutcome::Failed => "failed",
        }
    }
}

/// `event: receipt`: the outcome of one of this browser's mutations, sent to its stream only
/// (no `id:`, so it never moves the client's resume point).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// The mutation's full `X-Client-Id` (the tab).
    pub client: String,
    /// Its `X-Mutation-Id`.
    pub mutation: String,
    pub outcome: ReceiptOutcome,
    /// The ids of the events stored for it, in order.
    pub events: Vec<String>,
    /// Why nothing was delivered (`dropped`): the derive or hub reason label.
    pub reason: Option<String>,
    /// The HTTP status the client got.
    pub status: u16,
    /// A conflict the sidecar detected for it, when it did.
    pub conflict: Option<serde_json::Value>,
}

/// `event: control`: the server tells the client to change how it gets its data.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// SSE is off: poll (the stream closes).
    Polling { reason: String },
    /// These families are not live right now: poll just them.
    PollingFamilies { families: Vec<String> },
    /// Come back after `retry_ms` (drain).
    Reconnect { reason: &'static str, retry_ms: u64 },
    /// A re-check denied these topics; `topics` is what is left.
    Revoked {
        revoked: Vec<(String, &'static str)>,
        topics: Vec<String>,
    },
    /// A reload changed the event types: listen for these names.
    Types { types: Vec<String> },
}

impl Control {
    fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Control::Polling { reason } => json!({ "mode": "polling", "reason": reason }),
            Control::PollingFamilies { families } => {
                json!({ "mode": "polling", "reason": "rollout", "families": families })
            }
            Control::Reconnect { reason, retry_ms } => {
                json!({ "mode": "reconnect", "reason": reason, "retry_ms": retry_ms })
            }
            Control::Revoked { revoked, topics } => {
                let names: Vec<&str> = revoked.iter().map(|(t, _)| t.as_str()).collect();
                let reasons: serde_json::Map<String, serde_json::Value> = revoked
                    .iter()
                    .map(|(t, r)| (t.clone(), serde_json::Value::from(*r)))
                    .collect();
                json!({ "revoked": names, "reasons": reasons, "topics": topics })
            }
            Control::Types { types } => json!({ "reason": "types_changed", "types": types }),
        }
    }
}

/// One frame of an event stream.
#[derive(Debug, Clone)]
pub enum Frame<'a> {
    /// `retry: <ms>`: how long EventSource waits before reconnecting.
    Retry(u64),
    /// `id: <head>` + `event: hello`: the first frame; its id makes any spec-following client
    /// resume exactly after the head.
    Hello(&'a Hello),
    /// `event: heartbeat` with `{head}`: a visible sign of life.
    Heartbeat {
        head: &'a str,
    },
    Control(Control),
    /// `event: reset` with `{reason, head}`: refetch everything, then continue.
    Reset {
        reason: ResetReason,
        head: &'a str,
    },
    /// A stored event (encoded once, when it is appended to the log).
    Event(&'a Event),
    /// `event: receipt`: the outcome of one of this browser's mutations.
    Receipt(&'a Receipt),
    /// `event: presence`: who joined or left a presence topic (or its whole state).
    Presence(&'a super::PresenceUpdate),
    /// `event: snapshot` with the dashboard's JSON: the admin listener's `/admin/stream`,
    /// never an event stream's (so not in the client fixture).
    Snapshot(&'a str),
}

impl Frame<'_> {
    /// The frame's bytes on the wire (before chunked framing).
    pub fn encode(&self) -> Bytes {
        use serde_json::json;
        match self {
            Frame::Retry(ms) => encode::retry(*ms),
            Frame::Hello(h) => {
                let data = serde_json::to_value(h).unwrap_or_default().to_string();
                encode::frame(Some(&h.head), "hello", &data)
            }
            Frame::Heartbeat { head } => {
                encode::control_frame("heartbeat", &json!({ "head": head }))
            }
            Frame::Control(c) => encode::control_frame("control", &c.to_json()),
            Frame::Reset { reason, head } => {
                encode::control_frame("reset", &json!({ "reason": reason, "head": head }))
            }
            Frame::Event(e) => encode::event_frame(e),
            Frame::Receipt(r) => {
                encode::control_frame("receipt", &serde_json::to_value(r).unwrap_or_default())
            }
            Frame::Presence(p) => {
                encode::control_frame("presence", &serde_json::to_value(p).unwrap_or_default())
            }
            Frame::Snapshot(json) => encode::frame(None, "snapshot", json),
        }
    }
}

/// The `hello` of the fixture (see `examples`).
pub fn example_hello() -> Hello {
    Hello {
        epoch: "ep1".into(),
        head: "ep1-41".into(),
        topics: vec!["board:1".into()],
        denied: vec!["board:2".into()],
        denied_reasons: [("board:2".to_string(), serde_json::Value::from("forbidden"))]
            .into_iter()
            .collect(),
        heartbeat_ms: 15_000,
        types: vec!["card.updated".into()],
        polling_families: vec![],
        client: Some("b1".into()),
        presence: [("board:1".to_string(), example_presence_snapshot())]
            .into_iter()
            .collect(),
    }
}

fn example_member(id: &str, name: &str, connections: u32) -> super::PresenceMember {
    super::PresenceMember {
        id: id.into(),
        fields: [("name".to_string(), serde_json::Value::from(name))]
            .into_iter()
            .collect(),
        connections,
    }
}

fn example_presence_snapshot() -> super::PresenceSnapshot {
    super::PresenceSnapshot {
        count: 2,
        anonymous: 1,
        partial: false,
        members: vec![
            example_member("alice", "Alice", 2),
            example_member("bob", "Bob", 1),
        ],
    }
}

/// The `presence` frames of the fixture (see `examples`): a delta, then a whole snapshot.
pub fn example_presence() -> [super::PresenceUpdate; 2] {
    [
        super::PresenceUpdate::Delta {
            topic: "board:1".into(),
            joined: vec![example_member("carol", "Carol", 1)],
            left: vec!["bob".into()],
            updated: vec![super::PresenceCount {
                id: "alice".into(),
                connections: 1,
            }],
            count: 2,
            anonymous: 0,
            partial: false,
        },
        super::PresenceUpdate::Snapshot {
            topic: "board:1".into(),
            snapshot: example_presence_snapshot(),
        },
    ]
}

/// The `receipt` of the fixture (see `examples`).
pub fn example_receipt() -> Receipt {
    Receipt {
        client: "b1.t1".into(),
        mutation: "m-1".into(),
        outcome: ReceiptOutcome::Delivered,
        events: vec!["ep1-42".into()],
        reason: None,
        status: 200,
        conflict: None,
    }
}

/// One example of every frame the server writes, in the order of a stream's life: the
/// fixture the browser client's tests replay.
pub fn examples<'a>(
    hello: &'a Hello,
    event: &'a Event,
    receipt: &'a Receipt,
    presence: &'a [super::PresenceUpdate; 2],
) -> Vec<Frame<'a>> {
    vec![
        Frame::Retry(2_000),
        Frame::Hello(hello),
        Frame::Event(event),
        Frame::Receipt(receipt),
        Frame::Presence(&presence[0]),
        Frame::Presence(&presence[1]),
        Frame::Heartbeat { head: "ep1-42" },
        Frame::Control(Control::Types {
            types: vec!["card.updated".into(), "card.moved".into()],
        }),
        Frame::Control(Control::PollingFamilies {
            families: vec!["sessions".into()],
        }),
        Frame::Control(Control::Revoked {
            revoked: vec![("board:1".into(), "forbidden")],
            topics: vec!["board:3".into()],
        }),
        Frame::Reset {
            reason: ResetReason::EventsLost,
            head: "ep1-43",
        },
        Frame::Control(Control::Reconnect {
            reason: "draining",
            retry_ms: 1_500,
        }),
        Frame::Control(Control::Polling {
            reason: "admin: drill".into(),
        }),
    ]
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "tests write their config files and fixtures"
)]
mod tests {
    use super::*;

    /// Where the browser client's tests read the frames from.
    const FIXTURE: &str = "clients/js/test/fixtures/frames.sse";

    fn example_event() -> Event {
        Event {
            id: "ep1-42".into(),
            event_type: "card.updated".into(),
            family: "cards".into(),
            topics: vec!["board:1".into()],
            ts: 1_700_000_000_000,
            origin: crate::events::types::Origin {
                client: Some("tab-1".into()),
                mutation: Some("m-1".into()),
                trace: None,
            },
            data: serde_json::json!({ "id": "c1", "title": "x" }),
            invalidate: vec![serde_json::json!(["cards", "1"])],
            tenant: None,
            conflict: None,
        }
    }

    /// A name per variant: a new variant does not compile until it is named here, and the
    /// test below then fails until `examples` shows it.
    fn kind(f: &Frame<'_>) -> &'static str {
        match f {
            Frame::Retry(_) => "retry",
            Frame::Hello(_) => "hello",
            Frame::Heartbeat { .. } => "heartbeat",
            Frame::Reset { .. } => "reset",
            Frame::Event(_) => "event",
            Frame::Receipt(_) => "receipt",
            Frame::Presence(super::super::PresenceUpdate::Delta { .. }) => "presence.delta",
            Frame::Presence(super::super::PresenceUpdate::Snapshot { .. }) => "presence.snapshot",
            Frame::Control(Control::Polling { .. }) => "control.polling",
            Frame::Control(Control::PollingFamilies { .. }) => "control.polling_families",
            Frame::Control(Control::Reconnect { .. }) => "control.reconnect",
            Frame::Control(Control::Revoked { .. }) => "control.revoked",
            Frame::Control(Control::Types { .. }) => "control.types",
            // The admin feed's frame: the browser client never reads it (see below).
            Frame::Snapshot(_) => "admin.snapshot",
        }
    }
    /// Every variant but `Snapshot`, which only the dashboard reads.
    const KINDS: usize = 13;

    #[test]
    fn the_client_fixture_holds_one_of_every_frame_the_server_writes() {
        let (hello, event, receipt) = (example_hello(), example_event(), example_receipt());
        let presence = example_presence();
        let frames = examples(&hello, &event, &receipt, &presence);
        let kinds: std::collections::BTreeSet<_> = frames.iter().map(kind).collect();
        assert_eq!(
            kinds.len(),
            KINDS,
            "every variant has an example: {kinds:?}"
        );
        let text: String = frames
            .iter()
            .map(|f| String::from_utf8_lossy(&f.encode()).into_owned())
            .collect();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
        if std::env::var_os("UPDATE_FIXTURES").is_some() {
            std::fs::write(&path, &text).expect("write the fixture");
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            on_disk, text,
            "the wire changed: run `UPDATE_FIXTURES=1 cargo test --lib wire` and make the \
             client (clients/js) handle what changed"
        );
    }

    #[test]
    fn the_dashboard_snapshot_is_an_unnamed_snapshot_event() {
        assert_eq!(
            &Frame::Snapshot("{\"a\":1}").encode()[..],
            b"event: snapshot\ndata: {\"a\":1}\n\n"
        );
    }

    #[test]
    fn hello_carries_its_head_as_id_and_resets_name_their_reason() {
        let hello = example_hello();
        let f = Frame::Hello(&hello).encode();
        assert!(f.starts_with(b"id: ep1-41\nevent: hello\ndata: {"));
        let r = Frame::Reset {
            reason: ResetReason::SseWasOff,
            head: "ep1-9",
        }
        .encode();
        assert_eq!(
            &r[..],
            b"event: reset\ndata: {\"head\":\"ep1-9\",\"reason\":\"sse_was_off\"}\n\n"
        );
    }
}
