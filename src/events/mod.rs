//! Events and their parts: ids, topics, names, the event record itself (`types`); the rule
//! language every section of the config is written in (`route`, `template`, `pattern` for
//! topic patterns, `condition` for checks on an answer). The engines built on them live
//! beside this module: `crate::derive` (mutation → event) and `crate::hub` (fan-out).

pub mod condition;
pub mod pattern;
pub mod route;
pub mod template;
pub mod types;

pub use types::{Event, EventId, Origin, Topic, TopicError};
