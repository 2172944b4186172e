//! The `polling` step: the coverage and shielding limits, and each polled route (a GET
//! pattern, a defined family, topics that use only its `{params}` and `{query.x}`).

use super::Collector;
use crate::config::file::{PollRouteFile, PollingFile};
use crate::config::model::Family;
use crate::config::polling::{PollRoute, Polling};
use crate::events::route::RoutePattern;
use crate::events::template::{Source, StrTemplate};
use std::collections::BTreeMap;

pub(super) fn compile_polling(
    c: &mut Collector,
    p: PollingFile,
    families: &BTreeMap<String, Family>,
) -> Polling {
    c.ranges(&[
        (
            "polling.max_staleness_seconds",
            p.max_staleness_seconds,
            1,
            86_400,
        ),
        (
            "polling.coverage_window_seconds",
            p.coverage_window_seconds,
            60,
            30 * 86_400,
        ),
        ("polling.coverage_grace_ms", p.coverage_grace_ms, 0, 60_000),
        ("polling.max_tracked", p.max_tracked as u64, 16, 10_000_000),
        (
            "polling.slow_down_interval_ms",
            p.slow_down_interval_ms,
            0,
            3_600_000,
        ),
    ]);
    let routes = p
        .routes
        .iter()
        .enumerate()
        .filter_map(|(i, raw)| compile_poll_route(c, i, raw, families))
        .collect();
    Polling {
        routes,
        ..Polling::limits(&p)
    }
}

fn compile_poll_route(
    c: &mut Collector,
    i: usize,
    raw: &serde_yaml::Value,
    families: &BTreeMap<String, Family>,
) -> Option<PollRoute> {
    let path = format!("polling.routes[{i}]");
    let r = c.section::<PollRouteFile>(&path, raw)?;
    let pattern = match RoutePattern::parse(&r.matches) {
        Ok(pat) if pat.method == http::Method::GET => pat,
        Ok(_) => {
            c.push(
                format!("{path}.match"),
                "polled routes are GET requests",
                Some("e.g. \"GET /api/boards/{board}/cards\""),
            );
            return None;
        }
        Err(e) => {
            c.push(format!("{path}.match"), e, None);
            return None;
        }
    };
    if !families.contains_key(&r.family) {
        c.push(
            format!("{path}.family"),
            format!("family {:?} is not defined under families", r.family),
            Some("name the family whose events change this route's answers"),
        );
    }
    if r.topics.is_empty() {
        c.push(
            format!("{path}.topics"),
            "a polled route needs the topics whose events change it",
            None,
        );
    }
    let topics = compile_poll_topics(c, &path, &r.topics, &pattern);
    Some(PollRoute {
        location: path,
        pattern,
        family: r.family,
        topics,
        shield: r.shield,
    })
}

/// A polled route's topics: templates of its `{params}` and `{query.x}` only.
fn compile_poll_topics(
    c: &mut Collector,
    path: &str,
    topics: &[String],
    pattern: &RoutePattern,
) -> Vec<StrTemplate> {
    let params: Vec<&str> = pattern.param_names().collect();
    let mut out = Vec::new();
    for (j, t) in topics.iter().enumerate() {
        match StrTemplate::parse(t) {
            Ok(tpl) => {
                for src in tpl.sources() {
                    let ok = match src {
                        Source::Param(p) => params.contains(&p.as_str()),
                        Source::Query(_) => true,
                        _ => false,
                    };
                    if !ok {
                        c.push(
                            format!("{path}.topics[{j}]"),
                            format!("{} is not available on a GET", src.describe()),
                            Some("use the route's {params} or {query.x}"),
                        );
                    }
                }
                out.push(tpl);
            }
            Err(e) => c.push(format!("{path}.topics[{j}]"), e, None),
        }
    }
    out
}
