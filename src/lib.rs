//! sse-sidecar: a Pingora reverse proxy that forwards every request to an unchanged legacy
//! backend and, from the mutations it sees succeed, derives typed events that it serves to
//! browsers over one multiplexed Server-Sent Events stream.
//!
//! The crate is a library plus a thin binary (`src/main.rs`); integration tests start the
//! binary. Module map, by layer (an import points down, never up; `tests/architecture.rs`
//! checks it and that no modules import each other in a circle):
//!
//! - L0, shared vocabulary: [`headers`] (secret header names, Host grammar, tenant key),
//!   [`events`] (ids, topics, the event record, and the rule language: route, template,
//!   topic pattern, condition), [`wire`] (SSE framing and the typed frames every stream
//!   writes), [`metrics`], [`sys`] (the system calls std lacks: the fan-out's direct write,
//!   the effective uid), [`telemetry`] (optional OTLP span export, the W3C trace context).
//! - L1, validated data and pure state machines: [`config`] (file types, validation with
//!   YAML paths, the model, diffs), [`safety`] (limiter, dedup, breakers, stream health).
//! - L2, engines: [`store`] (the `EventLog` trait and its backends), [`hub`] (fan-out),
//!   [`derive`] (mutation → event), [`auth`] (topic authorization by the backend),
//!   [`polling`] (topic clock, coverage, shielding), [`presence`] (who is on a topic, from
//!   the streams), [`reload`] (hot reload), [`upstream`] (the backend as a Pingora peer).
//! - L3, the runtime: [`state`] (the handle given to the edges), [`control`] (the safety
//!   controller and its loop), [`pipeline`] (what happens to an event once it exists),
//!   [`http`] (plain answers, the one refusal type, the own-endpoints seam).
//! - L4, edges that never import each other: [`proxy`] (Pingora `ProxyHttp`: capture,
//!   forward), [`sse`] (stream admission and session, status, client modules), [`admin`]
//!   (admin API, dashboard, metrics endpoint).
//! - L5, composition: [`app`] (builds every component, the Pingora server, lifecycle) and
//!   [`listener`] (the listener's front: streams on the socket, the rest to the proxy).

#![forbid(unsafe_code)]
#![warn(clippy::disallowed_methods)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod config;
pub mod control;
pub mod derive;
pub mod events;
pub mod headers;
pub mod http;
pub mod hub;
pub mod learn;
pub mod listener;
pub mod metrics;
pub mod pipeline;
pub mod polling;
pub mod presence;
pub mod proxy;
pub mod reload;
pub mod safety;
pub mod sse;
pub mod state;
pub mod store;
pub mod sys;
pub mod telemetry;
pub mod upstream;
pub mod wire;
