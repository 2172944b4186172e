//! Events and their parts: ids, topics, names, the event record itself (`types`); the rule
//! language every section of the config is written in (`route`, `template`, `pattern` for
//! topic patterns, `condition` for checks on an answer); the pure machinery that turns a
//! confirmed mutation into an event (`derive`); and the fan-out hub that delivers them.

pub mod condition;
pub mod derive;
pub mod hub;
pub mod pattern;
pub mod route;
pub mod template;
pub mod types;

pub use types::{Event, EventId, Origin, Topic, TopicError};
