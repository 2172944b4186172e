//! Events and their parts: ids, topics, names, the event record itself, and the pure
//! machinery that turns a confirmed mutation into an event (`route`, `template`, `derive`)
//! plus the fan-out hub that delivers them.

pub mod derive;
pub mod hub;
pub mod route;
pub mod template;
pub mod types;

pub use types::{Event, EventId, Origin, Topic, TopicError};
