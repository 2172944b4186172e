//! The compiled `polling` section: the polled routes (path pattern → family, topics,
//! shield) and the coverage and shielding limits. Plain validated data; the engine that uses
//! it (topic clock, coverage, shield) is `crate::polling`. The limits' defaults are those of
//! `file::PollingFile`.

use super::file::PollingFile;
use crate::events::route::{Params, RoutePattern};
use crate::events::template::{Body, Inputs, StrTemplate};
use std::time::Duration;

/// One `polling.routes` entry, compiled.
#[derive(Debug, Clone)]
pub struct PollRoute {
    /// `polling.routes[<index>]`.
    pub location: String,
    pub pattern: RoutePattern,
    pub family: String,
    pub topics: Vec<StrTemplate>,
    pub shield: bool,
}

/// The compiled `polling` section.
#[derive(Debug, Clone)]
pub struct Polling {
    pub routes: Vec<PollRoute>,
    pub max_staleness: Duration,
    pub coverage_window: Duration,
    pub coverage_grace: Duration,
    pub max_tracked: usize,
    /// Suggested poll interval for clients that hold a live stream (0: no hint); sent to
    /// them as a number of milliseconds, so it stays one.
    pub slow_down_ms: u64,
}

impl Default for Polling {
    /// A file without a `polling` section: no routes, the limits' defaults.
    fn default() -> Self {
        Polling::limits(&PollingFile::default())
    }
}

impl Polling {
    /// The section's limits from the file, without routes.
    pub fn limits(p: &PollingFile) -> Polling {
        Polling {
            routes: Vec::new(),
            max_staleness: Duration::from_secs(p.max_staleness_seconds),
            coverage_window: Duration::from_secs(p.coverage_window_seconds),
            coverage_grace: Duration::from_millis(p.coverage_grace_ms),
            max_tracked: p.max_tracked,
            slow_down_ms: p.slow_down_interval_ms,
        }
    }
}

impl Polling {
    /// The first route matching a GET of `path`, with its parameters.
    pub fn route_for(&self, path: &str) -> Option<(usize, &PollRoute, Params)> {
        self.routes.iter().enumerate().find_map(|(i, r)| {
            r.pattern
                .matches(&http::Method::GET, path)
                .map(|p| (i, r, p))
        })
    }
}

impl Polling {
    /// The shielded routes a 2xx mutation of `path` that no rule matched could have
    /// changed: those sharing its first path segment (or starting with a parameter).
    pub fn routes_near<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a PollRoute> + 'a {
        self.routes
            .iter()
            .filter(move |r| r.shield && r.pattern.shares_first_segment(path))
    }

    /// The shielded routes of a family.
    pub fn routes_of<'a>(&'a self, family: &'a str) -> impl Iterator<Item = &'a PollRoute> + 'a {
        self.routes
            .iter()
            .filter(move |r| r.shield && r.family == family)
    }
}

impl PollRoute {
    /// The route's topics for one request (`None` when a template cannot be filled).
    pub fn topics_for(&self, params: &Params, query: &[(String, String)]) -> Option<Vec<String>> {
        let inputs = Inputs {
            params,
            query,
            headers: &[],
            request: &Body::Empty,
            response: &Body::Empty,
        };
        self.topics.iter().map(|t| t.render(&inputs).ok()).collect()
    }
}
