//! The compiled `authorization` section: rules (topic pattern → public or backend check),
//! the forwarded credential headers, cache and check limits. Plain validated data; the
//! engine that uses it is `crate::auth`.

use crate::events::condition::Condition;
use crate::events::pattern::TopicPattern;
use crate::events::template::StrTemplate;
use std::time::Duration;

/// A backend check: method, path template (topic parameters only) and optional condition.
#[derive(Debug, Clone)]
pub struct Check {
    pub method: http::Method,
    pub path: StrTemplate,
    pub condition: Option<Condition>,
}

/// One compiled `authorization.rules` entry.
#[derive(Debug, Clone)]
pub struct AuthRule {
    /// `authorization.rules[<index>]`, for logs and reports.
    pub location: String,
    pub pattern: TopicPattern,
    /// `None`: public, allowed without a check.
    pub check: Option<Check>,
}

/// The compiled `authorization` section.
#[derive(Debug, Clone)]
pub struct Policy {
    pub rules: Vec<AuthRule>,
    /// Lower-case names of the subscriber's headers forwarded to checks.
    pub forward_headers: Vec<String>,
    pub cache_ttl: Duration,
    /// How long a failed check (`check_failed`) is remembered: short, so a backend that
    /// recovers is asked again soon, but long enough to spare it a storm while it is down.
    pub failure_ttl: Duration,
    pub cache_max_entries: usize,
    pub check_timeout: Duration,
    pub max_concurrent_checks: usize,
    /// Largest check answer read for a condition.
    pub max_response_bytes: usize,
}

impl Policy {
    /// The first rule matching `topic`, with the pattern's captured parameters.
    pub fn rule_for(
        &self,
        topic: &str,
    ) -> Option<(usize, &AuthRule, crate::events::route::Params)> {
        self.rules
            .iter()
            .enumerate()
            .find_map(|(i, r)| r.pattern.matches(topic).map(|p| (i, r, p)))
    }
}
