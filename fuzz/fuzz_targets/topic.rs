//! Topics from the query string (`?topics=`), topic patterns of authorization rules, and
//! the stream request's header intake: no panic; whatever is accepted is valid.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sse_sidecar::auth::TopicPattern;
use sse_sidecar::events::route::parse_query;
use sse_sidecar::events::types::{is_name_byte, Topic, MAX_TOPIC_LEN};
use sse_sidecar::sse::stream::{cross_origin, parse_topics, StreamRequest};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = Topic::parse(s) {
        assert!(!t.as_str().is_empty() && t.as_str().len() <= MAX_TOPIC_LEN);
        assert!(t.as_str().bytes().all(is_name_byte));
    }
    if let Ok(topics) = parse_topics(&parse_query(s), 32) {
        assert!(!topics.is_empty() && topics.len() <= 32);
        for t in &topics {
            assert!(Topic::parse(t).is_ok(), "accepted invalid topic {t:?}");
        }
        assert!(topics.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
    }
    // Pattern and topic from the two halves of the input.
    let (p, t) = s.split_once('\u{1}').unwrap_or((s, s));
    if let Ok(pattern) = TopicPattern::parse(p) {
        if let Some(params) = pattern.matches(t) {
            for v in params.values() {
                assert!(!v.is_empty() && !v.contains(':'));
            }
        }
    }
    let mut req = StreamRequest::default();
    for line in s.split('\n') {
        if let Some((k, v)) = line.split_once(':') {
            req.header(k, v.as_bytes());
        }
    }
    let _ = cross_origin(
        req.origin.as_deref(),
        req.host.as_deref(),
        &["https://a.example".into()],
    );
});
