//! Pure derivation: a confirmed mutation plus its rule becomes a typed event, or a reason
//! why not. Schema validation happens here too, so nothing invalid reaches the hub.

use crate::config::{Config, DataSpec, Rule};
use crate::events::template::{FillError, Inputs};
use crate::events::types::{now_ms, Event, Origin, Topic};
use serde_json::Value;

/// Why no event was derived; `reason()` is the metrics label.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeriveError {
    #[error("{0}")]
    Fill(#[from] FillError),
    #[error("rendered topic {0:?} is not a valid topic")]
    InvalidTopic(String),
    #[error("event type {0:?} is not registered")]
    UnknownType(String),
    #[error("data does not match the schema of {event_type}: {message}")]
    Schema { event_type: String, message: String },
    #[error("the event's data is {size} bytes, over sse.max_event_bytes ({max})")]
    TooLarge { size: usize, max: usize },
}

impl DeriveError {
    pub fn reason(&self) -> &'static str {
        match self {
            DeriveError::Fill(f) => f.reason(),
            DeriveError::InvalidTopic(_) => "invalid_topic",
            DeriveError::UnknownType(_) => "unknown_type",
            DeriveError::Schema { .. } => "schema_invalid",
            DeriveError::TooLarge { .. } => "event_too_large",
        }
    }
}

/// Fills a rule's templates from a mutation and validates the result (no tenant).
pub fn derive(
    cfg: &Config,
    rule: &Rule,
    inputs: &Inputs,
    origin: Origin,
) -> Result<Event, DeriveError> {
    derive_for(cfg, rule, inputs, origin, None)
}

/// `derive` for the tenant the mutation was sent to (`upstream.tenancy: host`: its
/// normalized Host), which the event then carries and is routed by.
pub fn derive_for(
    cfg: &Config,
    rule: &Rule,
    inputs: &Inputs,
    origin: Origin,
    tenant: Option<String>,
) -> Result<Event, DeriveError> {
    let mut topics = Vec::with_capacity(rule.topics.len());
    for t in &rule.topics {
        let rendered = t.render(inputs)?;
        let topic =
            Topic::parse(&rendered).map_err(|_| DeriveError::InvalidTopic(rendered.clone()))?;
        if !topics.iter().any(|x: &String| x == topic.as_str()) {
            topics.push(topic.as_str().to_owned());
        }
    }
    let data = match &rule.data {
        DataSpec::None => Value::Object(Default::default()),
        DataSpec::Request => body_value(inputs.request, "request")?,
        DataSpec::Response => body_value(inputs.response, "response")?,
        DataSpec::Template(t) => t.render(inputs)?,
    };
    let invalidate = rule
        .invalidate
        .iter()
        .map(|t| t.render(inputs))
        .collect::<Result<Vec<_>, _>>()?;
    let event = Event {
        id: String::new(),
        event_type: rule.event_type.clone(),
        family: rule.family.clone(),
        topics,
        ts: now_ms(),
        origin,
        data,
        invalidate,
        tenant,
        conflict: None,
    };
    validate(cfg, &event)?;
    Ok(event)
}

fn body_value(b: &crate::events::template::Body, which: &'static str) -> Result<Value, FillError> {
    use crate::events::template::Body;
    match b {
        Body::Json(v) => Ok(v.clone()),
        Body::Empty => Err(FillError::EmptyBody(which)),
        Body::NotJson => Err(FillError::NotJson(which)),
        Body::TooLarge => Err(FillError::TooLarge(which)),
    }
}

/// The length of a value's JSON text, counted without building it.
fn json_size(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// Checks an event's type is registered and its data matches the type's schema.
pub fn validate(cfg: &Config, event: &Event) -> Result<(), DeriveError> {
    let t = cfg
        .event_types
        .get(&event.event_type)
        .ok_or_else(|| DeriveError::UnknownType(event.event_type.clone()))?;
    let size = json_size(&event.data);
    if size > cfg.sse.max_event_bytes {
        return Err(DeriveError::TooLarge {
            size,
            max: cfg.sse.max_event_bytes,
        });
    }
    if let Err(e) = t.validator.validate(&event.data) {
        return Err(DeriveError::Schema {
            event_type: event.event_type.clone(),
            message: format!("{} at {}", e, e.instance_path()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::route::Params;
    use crate::events::template::Body;
    use serde_json::json;

    const CFG: &str = r#"
upstream: {address: "127.0.0.1:3000"}
rollout: {phase: 3}
families:
  cards:
    phase: 3
    rules:
      - match: "PATCH /api/cards/{id}"
        event: card.updated
        topics: ["board:{response.board_id}", "card:{id}", "board:{response.board_id}"]
        invalidate: [["cards", "{response.board_id}"], ["card", "{id}"]]
      - match: "POST /api/cards/{id}/notes"
        event: card.noted
        topics: ["card:{request.name}"]
        data: {card: "{id}", note: "{request.text}"}
event_types:
  card.updated:
    family: cards
    schema: {type: object, required: [id, board_id], properties: {id: {type: string}}}
  card.noted:
    family: cards
    schema: {type: object, required: [note]}
"#;

    fn run(rule: usize, params: Params, req: Body, resp: Body) -> Result<Event, DeriveError> {
        let cfg = crate::config::parse_str(CFG).expect("valid");
        let inputs = Inputs {
            params: &params,
            query: &[],
            headers: &[],
            request: &req,
            response: &resp,
        };
        derive(&cfg, &cfg.rules[rule], &inputs, Origin::default())
    }

    fn id(v: &str) -> Params {
        let mut p = Params::new();
        p.insert("id".into(), v.into());
        p
    }

    #[test]
    fn derives_a_full_event() {
        let ev = run(
            0,
            id("7"),
            Body::Empty,
            Body::Json(json!({"id": "7", "board_id": 1})),
        )
        .expect("derived");
        assert_eq!(
            ev.topics,
            vec!["board:1", "card:7"],
            "deduplicated, in order"
        );
        assert_eq!(
            ev.invalidate,
            vec![json!(["cards", 1]), json!(["card", "7"])]
        );
        assert_eq!(ev.data, json!({"id": "7", "board_id": 1}));
    }

    #[test]
    fn oversized_events_are_refused() {
        let cfg = crate::config::parse_str(&format!("{CFG}\nsse: {{max_event_bytes: 256}}\n"))
            .expect("valid");
        let params = id("7");
        let big = Body::Json(json!({"id": "7", "board_id": 1, "pad": "x".repeat(300)}));
        let inputs = Inputs {
            params: &params,
            query: &[],
            headers: &[],
            request: &Body::Empty,
            response: &big,
        };
        let e = derive(&cfg, &cfg.rules[0], &inputs, Origin::default()).expect_err("too large");
        assert_eq!(e.reason(), "event_too_large");
        assert_eq!(json_size(&json!({"a": [1, "b"]})), r#"{"a":[1,"b"]}"#.len());
    }

    #[test]
    fn schema_failures_and_bad_topics_are_refused() {
        let e = run(
            0,
            id("7"),
            Body::Empty,
            Body::Json(json!({"id": 7, "board_id": 1})),
        )
        .expect_err("schema");
        assert_eq!(e.reason(), "schema_invalid");
        let e = run(
            0,
            id("7"),
            Body::Empty,
            Body::Json(json!({"id": "7", "board_id": "a b"})),
        )
        .expect_err("topic");
        assert_eq!(e.reason(), "invalid_topic");
        let e =
            run(1, id("7"), Body::Json(json!({"name": "x"})), Body::Empty).expect_err("missing");
        assert_eq!(e.reason(), "template_missing_field");
        let ev = run(
            1,
            id("7"),
            Body::Json(json!({"name": "x", "text": "a\nb"})),
            Body::Empty,
        )
        .expect("derived");
        assert_eq!(ev.data, json!({"card": "7", "note": "a\nb"}));
    }
}
