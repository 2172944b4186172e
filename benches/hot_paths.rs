//! Criterion micro-benchmarks of the hot pure functions: SSE frame encoding, rule matching,
//! template filling (a whole derivation, schema check included), topic parsing, and the
//! hub's fan-out to many subscribers.
//!
//! `cargo bench --bench hot_paths`

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use sse_sidecar::config::parse_str;
use sse_sidecar::derive::derive;
use sse_sidecar::events::route::Params;
use sse_sidecar::events::template::{Body, Inputs};
use sse_sidecar::events::types::now_ms;
use sse_sidecar::events::{Event, Origin};
use sse_sidecar::hub::{Drained, Hub};
use sse_sidecar::metrics::Metrics;
use sse_sidecar::sse::stream::parse_topics;
use sse_sidecar::store::memory::MemoryLog;
use sse_sidecar::wire::encode::event_frame;
use std::sync::Arc;
use std::time::Duration;

const DEMO: &str = include_str!("../conf/demo.yaml");

fn card_event() -> Event {
    Event {
        id: "0a1b2c3d4e5f-123456".into(),
        event_type: "card.updated".into(),
        family: "cards".into(),
        topics: vec!["board:1".into(), "card:c42".into()],
        ts: now_ms(),
        origin: Origin {
            client: Some("tab-7f3a".into()),
            mutation: Some("m-91c2".into()),
            trace: None,
        },
        data: serde_json::json!({"id": "c42", "board_id": "1", "title": "Ship the sidecar", "column": "doing", "updated_at": 1764190000000u64, "version": 3}),
        invalidate: vec![
            serde_json::json!(["cards", "1"]),
            serde_json::json!(["card", "c42"]),
        ],
        tenant: None,
        conflict: None,
    }
}

fn bench(c: &mut Criterion) {
    let cfg = parse_str(DEMO).expect("demo config");
    let ev = card_event();
    c.bench_function("encode event frame", |b| {
        b.iter(|| event_frame(black_box(&ev)))
    });

    let method = http::Method::PATCH;
    c.bench_function("match rules (demo config, 9 rules)", |b| {
        b.iter(|| {
            cfg.matching_rules(black_box(&method), black_box("/api/cards/c42"))
                .count()
        })
    });
    c.bench_function("match rules, no match", |b| {
        b.iter(|| {
            cfg.matching_rules(black_box(&method), black_box("/api/other/thing"))
                .count()
        })
    });

    let (idx, params): (usize, Params) = cfg
        .matching_rules(&method, "/api/cards/c42")
        .next()
        .expect("a rule");
    let rule = &cfg.rules[idx];
    let response = Body::from_capture(br#"{"id":"c42","board_id":"1","title":"Ship the sidecar","column":"doing","updated_at":1764190000000,"version":3}"#, false);
    let request = Body::from_capture(br#"{"title":"Ship the sidecar"}"#, false);
    c.bench_function("derive (fill templates + schema check)", |b| {
        b.iter(|| {
            let inputs = Inputs {
                params: &params,
                query: &[],
                headers: &[],
                request: &request,
                response: &response,
            };
            derive(&cfg, rule, &inputs, Origin::default()).expect("derived")
        })
    });
    c.bench_function("parse captured response body", |b| {
        b.iter(|| Body::from_capture(black_box(br#"{"id":"c42","board_id":"1","title":"Ship the sidecar","column":"doing","updated_at":1764190000000,"version":3}"#), false))
    });

    let query = sse_sidecar::events::route::parse_query(
        "topics=board:1,board:2,presence,conversation:general,activity,ui",
    );
    c.bench_function("parse topics (6)", |b| {
        b.iter(|| parse_topics(black_box(&query), 32))
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    for subscribers in [1_000usize, 10_000] {
        let hub = Hub::new(
            Arc::new(MemoryLog::new(10_000, Duration::from_secs(3600))),
            1024,
            Arc::new(Metrics::new()),
        );
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        rt.spawn(hub.clone().run(stop_rx));
        let subs: Vec<_> = (0..subscribers)
            .map(|_| hub.subscribe(vec!["board:1".into()], 1 << 20).0)
            .collect();
        c.bench_function(
            &format!("publish + fan out to {subscribers} subscribers"),
            |b| {
                b.iter_batched(
                    card_event,
                    |ev| {
                        rt.block_on(hub.publish(ev)).expect("published");
                        for s in &subs {
                            if let Drained::Overflowed = hub.drain(&s.sub) {
                                panic!("overflow");
                            }
                        }
                    },
                    BatchSize::SmallInput,
                )
            },
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
