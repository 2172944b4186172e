//! The compiled `presence` section: the topic patterns whose streams are members, the
//! identity request (who a subscriber is, asked of the backend), and the bounds of what is
//! tracked and sent. Plain validated data; the engine that uses it is `crate::presence`,
//! the identity request is made by `crate::auth`.

use crate::events::pattern::TopicPattern;
use crate::events::template::StrTemplate;
use std::time::Duration;

/// `presence.identity`, compiled.
#[derive(Debug, Clone)]
pub struct Identity {
    pub method: http::Method,
    /// The request path (no placeholders).
    pub path: String,
    /// The member id, from the answer (`{response.…}` only).
    pub id: StrTemplate,
    /// Public fields (name → template of the answer), in name order.
    pub fields: Vec<(String, StrTemplate)>,
    pub cache_ttl: Duration,
}

/// The compiled `presence` section.
#[derive(Debug, Clone)]
pub struct Presence {
    /// None: presence is off.
    pub topics: Vec<TopicPattern>,
    /// None: every stream is anonymous.
    pub identity: Option<Identity>,
    pub max_listed: usize,
    pub debounce: Duration,
    pub leave_grace: Duration,
    pub max_members_per_topic: usize,
    pub max_topics: usize,
    pub max_topics_per_stream: usize,
    pub max_field_bytes: usize,
    pub expiry: Duration,
}

impl Presence {
    /// Whether streams granted `topic` are its members.
    pub fn tracks(&self, topic: &str) -> bool {
        self.topics.iter().any(|p| p.matches(topic).is_some())
    }

    /// The presence topics among a stream's granted topics, at most
    /// `max_topics_per_stream` of them (in the order given).
    pub fn topics_of<'a>(&self, granted: &'a [String]) -> Vec<&'a String> {
        granted
            .iter()
            .filter(|t| self.tracks(t))
            .take(self.max_topics_per_stream)
            .collect()
    }
}

impl Default for Presence {
    fn default() -> Self {
        Presence {
            topics: Vec::new(),
            identity: None,
            max_listed: 100,
            debounce: Duration::from_millis(250),
            leave_grace: Duration::from_secs(5),
            max_members_per_topic: 10_000,
            max_topics: 10_000,
            max_topics_per_stream: 8,
            max_field_bytes: 512,
            expiry: Duration::from_secs(30),
        }
    }
}
