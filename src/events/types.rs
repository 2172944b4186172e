//! Newtypes for the names and ids that cross the wire, with strict parsers: a `Topic`, an
//! `EventId` (epoch + position) and the `Event` record that is stored, replayed and encoded.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest topic name accepted.
pub const MAX_TOPIC_LEN: usize = 128;
/// Longest event-id string accepted from a client (`Last-Event-ID`).
pub const MAX_EVENT_ID_LEN: usize = 64;
/// Longest origin id (`X-Client-Id` / `X-Mutation-Id`) carried into an event.
pub const MAX_ORIGIN_ID_LEN: usize = 128;

/// Why a topic string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic is empty")]
    Empty,
    #[error("topic is longer than {MAX_TOPIC_LEN} characters")]
    TooLong,
    #[error("topic {0:?} has a character outside A-Z a-z 0-9 _ . : -")]
    BadChar(String),
    /// A part (between colons) that is exactly `.` or `..`: filled into a check path it
    /// would be a dot segment, and the backend would answer for another resource.
    #[error("topic {0:?} has a part that is `.` or `..` (not allowed: it would be a dot segment in a check path)")]
    DotPart(String),
}

/// A subscription topic such as `board:42`: 1 to 128 characters of `A-Z a-z 0-9 _ . : -`,
/// no colon-separated part exactly `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Topic(String);

impl Topic {
    pub fn parse(s: &str) -> Result<Topic, TopicError> {
        if s.is_empty() {
            return Err(TopicError::Empty);
        }
        if s.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong);
        }
        if !s.bytes().all(is_name_byte) {
            let shown: String = s.chars().take(40).collect();
            return Err(TopicError::BadChar(shown));
        }
        if s.split(':').any(|part| part == "." || part == "..") {
            return Err(TopicError::DotPart(s.to_owned()));
        }
        Ok(Topic(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The bytes allowed in topics, event type names and family names.
pub fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')
}

/// An event type or family name: 1 to 64 name bytes (same alphabet as topics).
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(is_name_byte)
}

/// An origin id from a mutation's `X-Client-Id` / `X-Mutation-Id` header; anything outside
/// the alphabet or too long is dropped rather than carried into every subscriber's stream.
pub fn sanitize_origin_id(raw: Option<&str>) -> Option<String> {
    let s = raw?.trim();
    (!s.is_empty() && s.len() <= MAX_ORIGIN_ID_LEN && s.bytes().all(is_name_byte))
        .then(|| s.to_owned())
}

/// A position in the event log: the log's epoch plus a sequence number. Rendered as the one
/// opaque string `<epoch>-<seq>`; strictly increasing within an epoch. Sequence 0 means
/// "before the first event".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId {
    pub epoch: String,
    pub seq: u64,
}

/// Why a client-supplied event id could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventIdError {
    #[error("event id is empty")]
    Empty,
    #[error("event id is longer than {MAX_EVENT_ID_LEN} characters")]
    TooLong,
    #[error("event id is not of the form <epoch>-<sequence>")]
    Malformed,
}

impl EventId {
    pub fn new(epoch: &str, seq: u64) -> Self {
        EventId {
            epoch: epoch.to_owned(),
            seq,
        }
    }

    pub fn parse(s: &str) -> Result<EventId, EventIdError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(EventIdError::Empty);
        }
        if s.len() > MAX_EVENT_ID_LEN {
            return Err(EventIdError::TooLong);
        }
        let (epoch, seq) = s.rsplit_once('-').ok_or(EventIdError::Malformed)?;
        if !is_valid_epoch(epoch) || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(EventIdError::Malformed);
        }
        let seq = seq.parse::<u64>().map_err(|_| EventIdError::Malformed)?;
        Ok(EventId::new(epoch, seq))
    }
}

/// Epochs are 1 to 32 lowercase hex digits or letters.
pub fn is_valid_epoch(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// A fresh random epoch: 12 lowercase hex digits.
pub fn new_epoch() -> String {
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

/// Who caused an event: the tab (`X-Client-Id`), the mutation (`X-Mutation-Id`) and the
/// trace id of the client's W3C `traceparent` (`trace`, absent when none, so frames
/// without one keep their bytes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    pub client: Option<String>,
    pub mutation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// One event as stored, replayed and sent. `id` is empty until the log assigns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub family: String,
    pub topics: Vec<String>,
    /// Milliseconds since the Unix epoch when the event was derived.
    pub ts: u64,
    pub origin: Origin,
    pub data: serde_json::Value,
    pub invalidate: Vec<serde_json::Value>,
    /// The tenant (normalized Host) the event belongs to under `upstream.tenancy: host`;
    /// `None` otherwise. Absent from the JSON when `None`, so logs written before tenancy
    /// load unchanged and single-tenant frames keep their bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// A concurrent edit the sidecar detected for the mutation (`conflicts: detect`):
    /// `{base, superseded}`. Absent when there was none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<serde_json::Value>,
}

/// The one key a topic is routed, replayed and clocked under: the topic itself without a
/// tenant (no allocation), `<tenant> <topic>` with one (a space is in neither alphabet, so
/// two different pairs never meet).
pub fn scoped_topic<'a>(tenant: Option<&str>, topic: &'a str) -> std::borrow::Cow<'a, str> {
    match tenant {
        None => std::borrow::Cow::Borrowed(topic),
        Some(t) => std::borrow::Cow::Owned(format!("{t} {topic}")),
    }
}

/// `scoped_topic` for a list of topics.
pub fn scoped_topics(tenant: Option<&str>, topics: &[String]) -> Vec<String> {
    topics
        .iter()
        .map(|t| scoped_topic(tenant, t).into_owned())
        .collect()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_accept_the_alphabet_and_refuse_the_rest() {
        assert!(Topic::parse("board:42").is_ok());
        assert!(Topic::parse("user_7.presence-x").is_ok());
        assert_eq!(Topic::parse(""), Err(TopicError::Empty));
        assert!(matches!(Topic::parse("a b"), Err(TopicError::BadChar(_))));
        assert!(matches!(Topic::parse("a\nb"), Err(TopicError::BadChar(_))));
        assert_eq!(Topic::parse(&"a".repeat(129)), Err(TopicError::TooLong));
    }

    #[test]
    fn dot_parts_are_refused_with_a_clear_reason() {
        for bad in [
            "board:..",
            "board:.",
            "..",
            ".",
            "org:..:board:1",
            "a:.:b",
            "..:x",
        ] {
            assert_eq!(
                Topic::parse(bad),
                Err(TopicError::DotPart(bad.into())),
                "{bad:?} should be refused"
            );
        }
        let msg = Topic::parse("board:..").unwrap_err().to_string();
        assert!(
            msg.contains("board:..") && msg.contains("dot segment"),
            "{msg}"
        );
        // Dots inside a part are fine.
        for ok in ["board:...", "board:.x", "board:x.", "v1.2:a..b", "a.b"] {
            assert!(Topic::parse(ok).is_ok(), "{ok:?} should be accepted");
        }
    }

    #[test]
    fn event_ids_round_trip_and_refuse_garbage() {
        let id = EventId::new("00ab12cd34ef", 42);
        assert_eq!(EventId::parse(&id.to_string()), Ok(id));
        for bad in [
            "",
            "x",
            "-1",
            "abc-",
            "ABC-1",
            "abc-1x",
            "abc--1",
            "abc-99999999999999999999999",
        ] {
            assert!(EventId::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(EventId::parse(&"a".repeat(65)), Err(EventIdError::TooLong));
    }

    #[test]
    fn events_without_a_tenant_keep_their_json_and_old_logs_load() {
        let old = r#"{"id":"e-1","type":"t","family":"f","topics":["x"],"ts":1,
            "origin":{"client":null,"mutation":null},"data":{},"invalidate":[]}"#;
        let e: Event = serde_json::from_str(old).expect("an event written before tenancy");
        assert_eq!(e.tenant, None);
        let json = serde_json::to_string(&e).expect("json");
        assert!(!json.contains("tenant"), "{json}");
        assert_eq!(scoped_topic(None, "x"), std::borrow::Cow::Borrowed("x"));
        assert_ne!(
            scoped_topic(Some("a"), "b:c"),
            scoped_topic(Some("a b"), "c")
        );
    }

    #[test]
    fn origin_ids_are_sanitized() {
        assert_eq!(sanitize_origin_id(Some("tab-1")), Some("tab-1".into()));
        assert_eq!(sanitize_origin_id(Some("bad id")), None);
        assert_eq!(sanitize_origin_id(Some("x\r\ny")), None);
        assert_eq!(sanitize_origin_id(None), None);
    }
}
