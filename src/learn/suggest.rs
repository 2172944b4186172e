//! From what was recorded to rules: the polled routes and the topic each one shows (named
//! after a subscribed topic where the page's streams asked for one), for each confirmed
//! mutation route the polled routes whose answers changed after it and the field of the
//! mutation that equalled the polled URL's parameter then (`board:{response.board_id}`),
//! families by resource, event type names, schemas from the bodies seen, `invalidate` keys
//! from the polled paths, and `polling.routes` shielded where the topics explained every
//! change seen. Every suggestion carries its evidence and a confidence.

use super::model::{Matched, Model, Pair, Route};
use super::path::{self, Seg};
use super::shape::Shape;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Share of a pair's polls (or of a source's matches) that must show the change.
const MIN_RATIO: f64 = 0.75;

/// What a rule's event carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Response,
    Request,
    /// The path parameters, by name.
    Params(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct RuleSuggestion {
    pub family: String,
    pub pattern: String,
    pub event: String,
    pub topics: Vec<String>,
    pub data: Data,
    pub invalidate: Vec<Vec<String>>,
    pub confidence: &'static str,
    pub evidence: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct PollSuggestion {
    pub pattern: String,
    pub family: String,
    pub topics: Vec<String>,
    pub shield: bool,
    pub evidence: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Suggestions {
    pub rules: Vec<RuleSuggestion>,
    pub polling: Vec<PollSuggestion>,
    /// Event type → (family, schema).
    pub event_types: BTreeMap<String, (String, Value)>,
    /// (topic pattern, check): whoever the app lets poll a route may subscribe to its topic.
    pub authorization: Vec<(String, String)>,
    /// Polled routes no mutation explains, and the like.
    pub notes: Vec<String>,
}

/// A polled route and the topic its answers show.
struct Polled {
    route: usize,
    prefix: String,
    /// The parameter the topic carries (the last one), if any.
    param: Option<usize>,
    how: String,
    /// Without a parameter: the mutation routes its changes followed when each was the only
    /// mutation route between two polls (the strong evidence).
    strong: Vec<usize>,
    /// The entities the other polled routes are about (their topics and parameter names).
    others: Vec<String>,
}

/// An accepted (mutation, polled route) pair.
struct Accepted {
    polled: usize,
    source: Option<String>,
    support: u64,
    evidence: String,
}

/// A family name: the resource, in name bytes.
fn family_of(r: &Route) -> String {
    let raw = path::resource(&r.segs).unwrap_or("root");
    let name: String = raw
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        .take(48)
        .collect();
    if name.is_empty() {
        "root".into()
    } else {
        name
    }
}

fn event_of(r: &Route) -> String {
    let action = match r.method.as_str() {
        "POST" => "created".to_owned(),
        "PUT" | "PATCH" => "updated".to_owned(),
        "DELETE" => "deleted".to_owned(),
        other => other.to_ascii_lowercase(),
    };
    format!("{}.{action}", path::singular(&family_of(r)))
}

/// The literal segments of a route worth a topic name (`api` and versions left out).
fn words(r: &Route) -> Vec<&str> {
    r.segs
        .iter()
        .filter_map(|s| match s {
            Seg::Lit(l)
                if l != "api"
                    && !(l.starts_with('v') && l[1..].bytes().all(|b| b.is_ascii_digit())) =>
            {
                Some(l.as_str())
            }
            _ => None,
        })
        .collect()
}

/// The polled routes and their topics: a subscribed `X:value` whose value the route's
/// parameter took, a subscribed name equal to one of its words, the one subscribed name
/// no route claimed for the one route left, or else its parameter's name or first word.
fn polled_routes(m: &Model) -> Vec<Polled> {
    let mut out = Vec::new();
    let mut unmatched = Vec::new();
    // A polled route that never changed needs no topic; nor does one that is not JSON.
    let worth = |r: &&Route| r.is_polled() && r.changes_total > 0 && r.response.seen > 0;
    for (i, r) in m.routes.iter().enumerate().filter(|(_, r)| worth(r)) {
        let param = r.examples.len().checked_sub(1);
        let (prefix, how) = match param {
            Some(j) => prefixed_topic(m, r, j),
            None => match words(r).iter().find(|w| m.subscriptions.contains_key(**w)) {
                Some(w) => ((*w).to_owned(), "a subscribed topic".to_owned()),
                None => {
                    unmatched.push(out.len());
                    let first = words(r).first().map_or("root", |w| w).to_owned();
                    (first, "the route's first word".to_owned())
                }
            },
        };
        let strong = if param.is_some() {
            Vec::new()
        } else {
            strong_routes(m, i)
        };
        out.push(Polled {
            route: i,
            prefix,
            param,
            how,
            strong,
            others: Vec::new(),
        });
    }
    let entities: Vec<(usize, Vec<String>)> = out
        .iter()
        .map(|p| {
            let mut names = m.routes[p.route].names();
            names.push(p.prefix.clone());
            (p.route, names)
        })
        .collect();
    for p in &mut out {
        let own = &entities
            .iter()
            .find(|(r, _)| *r == p.route)
            .map_or(&[][..], |(_, n)| &n[..])
            .to_vec();
        p.others = entities
            .iter()
            .filter(|(r, _)| *r != p.route)
            .flat_map(|(_, names)| names.iter().cloned())
            .filter(|n| n != "id" && !own.contains(n))
            .collect();
    }
    let claimed: Vec<&str> = out.iter().map(|p| p.prefix.as_str()).collect();
    let free: Vec<&String> = m
        .subscriptions
        .keys()
        .filter(|t| !t.contains(':') && !claimed.contains(&t.as_str()))
        .collect();
    if let ([one], [t]) = (unmatched.as_slice(), free.as_slice()) {
        out[*one].prefix = (*t).clone();
        out[*one].how = "the only subscribed topic no other polled route shows".into();
    }
    out
}

/// The mutation routes whose "only mutation route between two polls" evidence says the
/// polled route `p` changes after them.
fn strong_routes(m: &Model, p: usize) -> Vec<usize> {
    m.pairs
        .iter()
        .filter(|((_, pp), pair)| {
            let alone = pair.alone_changed + pair.alone_unchanged;
            *pp == p && alone >= 2 && pair.alone_changed as f64 / alone as f64 >= MIN_RATIO
        })
        .map(|((mi, _), _)| *mi)
        .collect()
}

fn prefixed_topic(m: &Model, r: &Route, j: usize) -> (String, String) {
    let examples = &r.examples[j];
    let sub = m.subscriptions.keys().find_map(|t| {
        let (prefix, value) = t.split_once(':')?;
        examples
            .iter()
            .any(|e| e == value)
            .then(|| prefix.to_owned())
    });
    match sub {
        Some(p) => (p, "a subscribed topic".into()),
        None => (r.names()[j].clone(), "the parameter's name".into()),
    }
}

/// Sources in order of preference: path parameters, then the answer, the request, the query.
fn rank(source: &str) -> u8 {
    match source.split_once('.') {
        None => 0,
        Some(("response", _)) => 1,
        Some(("request", _)) => 2,
        _ => 3,
    }
}

/// Whether a source's last field is named after the topic (`response.board_id`, `boardId`).
fn named_after(source: &str, prefix: &str) -> bool {
    let last = source.rsplit('.').next().unwrap_or(source);
    let stem = last
        .strip_suffix("_id")
        .or_else(|| last.strip_suffix("Id"))
        .unwrap_or(last);
    stem.eq_ignore_ascii_case(prefix) || path::singular(stem).eq_ignore_ascii_case(prefix)
}

/// Whether the polls in which a source equalled the parameter mostly showed a change: those
/// after which the mutation's route was the only one decide when there are two or more.
fn agrees(c: &Matched) -> bool {
    let alone = c.alone_hit + c.alone_miss;
    let (hit, all) = if alone >= 2 {
        (c.alone_hit, alone)
    } else {
        (c.hit, c.hit + c.miss)
    };
    hit >= 1 && hit as f64 / all as f64 >= MIN_RATIO
}

/// Whether the polled route's changes follow the mutation, and through which field.
/// Whether the mutation route seldom came alone and its polls mostly changed: then it
/// counts only if some change came with it and with none of the strong routes (a route
/// that always comes with a strong one, as a sign-in with the page load's activity, is
/// explained away).
fn weakly_explains(m: &Model, mi: usize, pair: &Pair, p: &Polled) -> Option<(u64, u64)> {
    let polls = pair.changed + pair.unchanged;
    let ratio = pair.changed as f64 / polls.max(1) as f64;
    let own = m.routes[p.route].changes.iter().any(|c| {
        c.causes.iter().any(|k| k.route == mi)
            && !c.causes.iter().any(|k| p.strong.contains(&k.route))
    });
    (pair.changed >= 1 && ratio >= MIN_RATIO && own).then_some((pair.changed, polls))
}

fn accept(m: &Model, mi: usize, pair: &Pair, p: &Polled) -> Option<Accepted> {
    let poll_pattern = m.routes[p.route].pattern();
    let Some(j) = p.param else {
        // Polls after which this was the only mutation route tell it from the others.
        let alone = pair.alone_changed + pair.alone_unchanged;
        let (hit, polls, how) = if alone >= 2 {
            let how = " (no other mutation route between the polls)";
            (pair.alone_changed, alone, how)
        } else {
            let (hit, polls) = weakly_explains(m, mi, pair, p).unwrap_or((0, 1));
            (hit, polls, " (not always with other mutation routes)")
        };
        let ratio = hit as f64 / polls.max(1) as f64;
        return (hit >= 1 && ratio >= MIN_RATIO).then(|| Accepted {
            polled: p.route,
            source: None,
            support: hit,
            evidence: format!("{poll_pattern} changed after {hit} of {polls}{how}"),
        });
    };
    let by = pair.by_param.get(j)?;
    // Most matches first; then a field named after the topic (`board_id` for `board`); then
    // path parameters, the answer, the request, the query. A field named after another polled
    // route's entity (`boardId` for a conversation) is never its source, whatever the values.
    let key = |src: &str, hit: u64| {
        (
            hit,
            named_after(src, &p.prefix),
            std::cmp::Reverse(rank(src)),
        )
    };
    let (src, c) = by
        .iter()
        .filter(|(src, c)| agrees(c) && !p.others.iter().any(|o| named_after(src, o)))
        .max_by(|a, b| key(a.0, a.1.hit).cmp(&key(b.0, b.1.hit)))?;
    Some(Accepted {
        polled: p.route,
        source: Some(src.clone()),
        support: c.hit,
        evidence: format!(
            "{poll_pattern} changed after {} with its parameter = {src} ({} polls matched it and showed no change; alone: {} of {})",
            c.hit, c.miss, c.alone_hit, c.alone_hit + c.alone_miss
        ),
    })
}

fn topic(p: &Polled, source: Option<&str>) -> String {
    match source {
        Some(s) => format!("{}:{{{s}}}", p.prefix),
        None => p.prefix.clone(),
    }
}

/// The polled route's path as a query key, its parameter filled from `source`.
fn invalidate_key(r: &Route, p: &Polled, source: Option<&str>) -> Vec<String> {
    let mut key = Vec::new();
    let mut j = 0;
    for s in &r.segs {
        match s {
            Seg::Lit(l) if l == "api" && key.is_empty() => {}
            Seg::Lit(l) => key.push(l.clone()),
            Seg::Param => {
                if let (Some(src), Some(pj)) = (source, p.param) {
                    if pj == j {
                        key.push(format!("{{{src}}}"));
                    }
                }
                j += 1;
            }
        }
    }
    key
}

fn confidence(support: u64) -> &'static str {
    match support {
        0 | 1 => "low",
        2..=4 => "medium",
        _ => "high",
    }
}

/// What the event of a mutation route carries, and the shape of it.
fn data_of(r: &Route) -> (Data, Shape) {
    if r.response.has_fields() && r.bodyless == 0 {
        return (Data::Response, r.response.clone());
    }
    if r.request.has_fields() {
        return (Data::Request, r.request.clone());
    }
    let names = r.names();
    let mut shape = Shape::default();
    let red = super::shape::Redaction::default();
    let obj: serde_json::Map<String, Value> =
        names.iter().map(|n| (n.clone(), json!("x"))).collect();
    shape.add(&Value::Object(obj), &red, 0);
    (Data::Params(names), shape)
}

fn suggest_rule(
    m: &Model,
    i: usize,
    polled: &[Polled],
    accepted: &mut Vec<(usize, Accepted)>,
) -> (RuleSuggestion, Shape) {
    let r = &m.routes[i];
    let family = family_of(r);
    let mut topics = Vec::new();
    let mut invalidate = Vec::new();
    let mut evidence = vec![format!(
        "{} confirmed of {} requests",
        r.confirmed(),
        r.count
    )];
    let mut support = 0;
    for p in polled {
        let Some(pair) = m.pairs.get(&(i, p.route)) else {
            continue;
        };
        let pr = &m.routes[p.route];
        let Some(a) = accept(m, i, pair, p) else {
            continue;
        };
        let t = topic(p, a.source.as_deref());
        if !topics.contains(&t) {
            topics.push(t);
        }
        invalidate.push(invalidate_key(pr, p, a.source.as_deref()));
        evidence.push(a.evidence.clone());
        support = support.max(a.support);
        accepted.push((i, a));
    }
    if topics.is_empty() {
        evidence.push(format!(
            "no polled route changed after it: the topic {family:?} is a placeholder"
        ));
        topics.push(family.clone());
    }
    let (data, shape) = data_of(r);
    let rule = RuleSuggestion {
        family,
        pattern: r.pattern(),
        event: event_of(r),
        topics,
        data,
        invalidate,
        confidence: confidence(support),
        evidence,
    };
    (rule, shape)
}

/// A polled route's `polling.routes` entry: shielded when the accepted rules explain every
/// change recorded of it.
fn suggest_poll(m: &Model, p: &Polled, accepted: &[(usize, Accepted)]) -> Option<PollSuggestion> {
    let r = &m.routes[p.route];
    let mine: Vec<&(usize, Accepted)> = accepted
        .iter()
        .filter(|(_, a)| a.polled == p.route)
        .collect();
    let (interval, keys) = (r.interval_ms().unwrap_or(0), r.polling().1);
    let seen = format!(
        "polled by {keys} client(s) every ~{:.1} s",
        interval as f64 / 1000.0
    );
    let best = mine.iter().max_by_key(|(_, a)| a.support)?;
    let explained = r
        .changes
        .iter()
        .filter(|c| {
            c.causes.iter().any(|cause| {
                mine.iter().any(|(mi, a)| {
                    *mi == cause.route
                        && match (&a.source, p.param) {
                            (Some(src), Some(j)) => {
                                cause.matches.get(j).is_some_and(|ms| ms.contains(src))
                            }
                            _ => true,
                        }
                })
            })
        })
        .count();
    let kept = r.changes.len();
    // One change in a hundred may be a mutation that raced the poll (its effect in the
    // answer of a poll that reached the sidecar first); more, and the route stays unshielded.
    let shield = kept > 0 && kept - explained <= kept / 100;
    let names = r.names();
    let topic = match p.param {
        Some(j) => format!("{}:{{{}}}", p.prefix, names[j]),
        None => p.prefix.clone(),
    };
    let evidence = vec![
        seen,
        format!(
            "{} change(s) seen, {explained} of the last {kept} explained by the rules above",
            r.changes_total
        ),
        format!("topic {topic:?} from {}", p.how),
    ];
    Some(PollSuggestion {
        pattern: r.pattern(),
        family: family_of(&m.routes[best.0]),
        topics: vec![topic],
        shield,
        evidence,
    })
}

/// Everything learn mode proposes from what it recorded.
pub fn suggest(m: &Model) -> Suggestions {
    let polled = polled_routes(m);
    let mut out = Suggestions::default();
    let mut accepted = Vec::new();
    let mut shapes: BTreeMap<String, (String, Shape)> = BTreeMap::new();
    for (i, r) in m.routes.iter().enumerate() {
        if !r.is_mutation() || r.confirmed() == 0 {
            continue;
        }
        let (rule, shape) = suggest_rule(m, i, &polled, &mut accepted);
        shapes
            .entry(rule.event.clone())
            .or_insert_with(|| (rule.family.clone(), Shape::default()))
            .1
            .merge(&shape);
        out.rules.push(rule);
    }
    for p in &polled {
        match suggest_poll(m, p, &accepted) {
            Some(s) => out.polling.push(s),
            None => out.notes.push(format!(
                "{} is polled and changed {} time(s), but no mutation seen explains it",
                m.routes[p.route].pattern(),
                m.routes[p.route].changes_total
            )),
        }
    }
    out.event_types = shapes
        .into_iter()
        .map(|(e, (f, s))| (e, (f, s.schema())))
        .collect();
    for p in &out.polling {
        let check = p.pattern.clone();
        for t in &p.topics {
            if !out.authorization.iter().any(|(have, _)| have == t) {
                out.authorization.push((t.clone(), check.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::Learn;
    use crate::learn::model::Observation;

    fn limits() -> Learn {
        Learn {
            enabled: true,
            max_routes: 50,
            samples_per_route: 3,
            max_body_bytes: 1 << 16,
            max_reads_per_second: 1000,
            redact: vec![],
        }
    }

    fn obs(
        at: u64,
        method: &str,
        path: &str,
        fp: u128,
        req: Option<Value>,
        resp: Value,
    ) -> Observation {
        Observation {
            started_ms: at,
            ended_ms: at + 5,
            method: method.into(),
            path: path.into(),
            query: vec![],
            fingerprint: fp,
            status: 200,
            body_hash: {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                resp.to_string().hash(&mut h);
                h.finish()
            },
            request: req,
            response: Some(resp),
        }
    }

    /// Two clients poll two boards' cards and the sessions list every 500 ms; cards are
    /// renamed on board 1 and 2 and sessions start, one at a time.
    fn traffic() -> Model {
        let mut m = Model::default();
        let l = limits();
        m.subscribed(&["board:1".into(), "board:2".into(), "presence".into()]);
        let mut titles = [0u32; 3];
        let mut sessions = 0;
        for tick in 0..40u64 {
            let t = tick * 500;
            if tick % 4 == 1 {
                let board = 1 + (tick / 4) % 2;
                titles[board as usize] += 1;
                let card = json!({"id": format!("c{board}"), "board_id": board.to_string(), "title": format!("t{}", titles[board as usize]), "version": 1});
                m.observe(
                    &obs(
                        t + 100,
                        "PATCH",
                        &format!("/api/cards/c{board}"),
                        1,
                        Some(json!({"title": "x"})),
                        card,
                    ),
                    &l,
                );
            }
            if tick % 8 == 3 {
                sessions += 1;
                m.observe(
                    &obs(
                        t + 100,
                        "POST",
                        "/api/sessions",
                        2,
                        Some(json!({"user": "bob"})),
                        json!({"id": format!("s{sessions}"), "user": "bob"}),
                    ),
                    &l,
                );
            }
            for fp in [1u128, 2] {
                for (b, title) in titles.iter().enumerate().skip(1) {
                    let cards = json!({"board_id": b.to_string(), "cards": [{"id": format!("c{b}"), "title": format!("t{title}")}]});
                    m.observe(
                        &obs(
                            t + 300,
                            "GET",
                            &format!("/api/boards/{b}/cards"),
                            fp,
                            None,
                            cards,
                        ),
                        &l,
                    );
                }
                m.observe(
                    &obs(
                        t + 300,
                        "GET",
                        "/api/sessions",
                        fp,
                        None,
                        json!({"sessions": sessions}),
                    ),
                    &l,
                );
            }
        }
        m
    }

    #[test]
    fn mutations_get_the_topics_of_the_polled_routes_that_changed_after_them() {
        let m = traffic();
        let s = suggest(&m);
        let rule = |p: &str| {
            s.rules
                .iter()
                .find(|r| r.pattern == p)
                .unwrap_or_else(|| panic!("no rule for {p}: {:#?}", s.rules))
        };
        let patch = rule("PATCH /api/cards/{id}");
        assert_eq!(
            patch.topics,
            vec!["board:{response.board_id}"],
            "{patch:#?}"
        );
        assert_eq!(patch.event, "card.updated");
        assert_eq!(patch.family, "cards");
        assert_eq!(patch.data, Data::Response);
        assert_eq!(
            patch.invalidate,
            vec![vec![
                "boards".to_owned(),
                "{response.board_id}".into(),
                "cards".into()
            ]]
        );
        let post = rule("POST /api/sessions");
        assert_eq!(
            post.topics,
            vec!["presence"],
            "named after the one free subscription: {post:#?}"
        );
        assert_eq!(post.event, "session.created");
        let polls: Vec<(&str, &[String], bool)> = s
            .polling
            .iter()
            .map(|p| (p.pattern.as_str(), p.topics.as_slice(), p.shield))
            .collect();
        assert!(
            polls.contains(&(
                "GET /api/boards/{board}/cards",
                &["board:{board}".to_owned()][..],
                true
            )),
            "{polls:?}"
        );
        assert!(
            polls.contains(&("GET /api/sessions", &["presence".to_owned()][..], true)),
            "{polls:?}"
        );
        let schema = &s.event_types["card.updated"].1;
        assert_eq!(
            schema["required"],
            json!(["board_id", "id", "title", "version"])
        );
    }

    /// json-server's ids: board 1 and conversation 1. Cards and messages change at nearly
    /// the same moments; a card's `boardId` must not become the conversation's topic.
    #[test]
    fn equal_ids_of_two_entities_are_told_apart() {
        let mut m = Model::default();
        let l = limits();
        let (mut cards, mut messages) = (0u32, 0u32);
        for tick in 0..60u64 {
            let t = tick * 300;
            if tick % 2 == 0 {
                cards += 1;
                let card = json!({"id": 1, "boardId": 1, "title": format!("t{cards}")});
                m.observe(
                    &obs(
                        t + 50,
                        "PATCH",
                        "/cards/1",
                        1,
                        Some(json!({"title": "x"})),
                        card,
                    ),
                    &l,
                );
            }
            if tick % 3 == 0 {
                messages += 1;
                let msg = json!({"id": messages, "conversationId": 1, "text": "hi"});
                m.observe(
                    &obs(
                        t + 60,
                        "POST",
                        "/messages",
                        1,
                        Some(json!({"conversationId": 1})),
                        msg,
                    ),
                    &l,
                );
            }
            let list = json!([{"id": 1, "boardId": 1, "title": format!("t{cards}")}]);
            m.observe(&obs(t + 200, "GET", "/boards/1/cards", 1, None, list), &l);
            let list = json!([{"id": messages, "conversationId": 1}]);
            m.observe(
                &obs(t + 200, "GET", "/conversations/1/messages", 1, None, list),
                &l,
            );
        }
        let s = suggest(&m);
        let topics = |p: &str| {
            s.rules
                .iter()
                .find(|r| r.pattern == p)
                .map(|r| r.topics.clone())
        };
        assert_eq!(
            topics("PATCH /cards/{id}"),
            Some(vec!["board:{response.boardId}".to_owned()]),
            "{:#?}",
            s.rules
        );
        assert_eq!(
            topics("POST /messages"),
            Some(vec!["conversation:{response.conversationId}".to_owned()]),
            "{:#?}",
            s.rules
        );
    }

    #[test]
    fn the_fragment_passes_the_config_check() {
        let m = traffic();
        let fragment = crate::learn::yaml::fragment(&suggest(&m), "shadow", m.observed);
        let text = format!("upstream: {{address: \"127.0.0.1:3000\"}}\n{fragment}");
        if let Err(e) = crate::config::parse_str(&text) {
            panic!("{e}\n{text}");
        }
    }
}
