//! sse-sidecar: a Pingora reverse proxy that forwards every request to an unchanged legacy
//! backend and, from the mutations it sees succeed, derives typed events that it serves to
//! browsers over one multiplexed Server-Sent Events stream.
//!
//! The crate is a library plus a thin binary (`src/main.rs`); integration tests start the
//! binary. Module map:
//! - [`config`]: YAML file types, validation with YAML paths, the validated model, diffs.
//! - [`reload`]: the hot-reload handle (ArcSwap), file watch and SIGHUP.
//! - [`proxy`]: the Pingora `ProxyHttp` implementation: classify, capture, forward.
//! - [`events`]: ids, topics, templates, derivation, schema registry, the fan-out hub.
//! - [`pipeline`]: what happens to an event once it exists: dedup, the topic clock tick,
//!   shadow vs live, the hand-off to the hub and the strict-durability commit wait.
//! - [`store`]: the `EventLog` trait and its backends.
//! - [`wire`]: SSE framing and the typed frames every stream writes.
//! - [`sys`]: the system calls std lacks (the fan-out's direct write, the effective uid).
//! - [`sse`]: the stream handler, the status endpoint and the client modules.
//! - [`listener`]: the listener's front: stream requests served on the socket, the rest
//!   handed to the proxy.
//! - [`upstream`]: the backend as a Pingora peer (pass-through and checks share it).
//! - [`auth`]: topic authorization delegated to the backend, decision cache.
//! - [`polling`]: coverage check of polled routes and poll shielding.
//! - [`http`]: plain answers written to a Pingora session, shared by the edges.
//! - [`control`]: the safety controller (SSE mode and kill switch, breakers, degradation,
//!   coalescing) and its once-a-second loop.
//! - [`admin`]: metrics, health and admin endpoints.
//! - [`app`]: the composition root that wires everything into a Pingora server.

#![forbid(unsafe_code)]
#![warn(clippy::disallowed_methods)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod config;
pub mod control;
pub mod events;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod pipeline;
pub mod polling;
pub mod proxy;
pub mod reload;
pub mod safety;
pub mod sse;
pub mod state;
pub mod store;
pub mod sys;
pub mod upstream;
pub mod wire;
