//! Optional OpenTelemetry trace export (OTLP over HTTP/protobuf) and the W3C trace context.
//!
//! Off unless `telemetry.otlp_endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set: then
//! nothing is exported, no exporter task runs and [`span`] is a no-op. When on, spans go
//! through a bounded batch processor (`OTEL_BSP_*` tune it) on a small tokio runtime of
//! its own (one worker, `otlp`), so export never runs on a proxy worker; [`shutdown`]
//! flushes what is queued before the process ends.
//!
//! The client's `traceparent`/`tracestate` are read with the W3C propagator whether export
//! is on or not: the trace id goes into the event's `origin.trace` ([`trace_id`]) so a
//! client's log joins the backend's. The headers themselves are forwarded unchanged.
//!
//! The spans of a mutation: `mutation` (the proxy, parent: the client's span), with
//! children `derive`, `hub.append` and `hub.fan_out` (the hub gets the context with the
//! event across its queue); `authorize` and `config.reload` spans stand on their own or
//! under what is current.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// The exporter, once [`init`] turned it on.
static PROVIDER: OnceLock<Exporting> = OnceLock::new();

struct Exporting {
    provider: SdkTracerProvider,
    tracer: opentelemetry_sdk::trace::SdkTracer,
    /// Runs the batch processor and the HTTP client; kept for the process's life.
    _runtime: tokio::runtime::Runtime,
}

/// The span the traces are exported under.
const SERVICE_NAME: &str = "sse-sidecar";
/// The environment variable that turns export on without a config key.
pub const ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// How long [`shutdown`] waits for the last export.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// Turns export on when `endpoint` (the config's `telemetry.otlp_endpoint`, a base URL:
/// `/v1/traces` is appended) or `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Returns whether it
/// is on, or why it could not start.
pub fn init(endpoint: Option<&str>) -> Result<bool, String> {
    let from_env = std::env::var(ENDPOINT_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty());
    if endpoint.is_none() && from_env.is_none() {
        return Ok(false);
    }
    if PROVIDER.get().is_some() {
        return Ok(true);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the OTLP export runtime: {e}"))?;
    let provider = {
        let _entered = runtime.enter();
        build_provider(endpoint)?
    };
    let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, SERVICE_NAME);
    let _ = PROVIDER.set(Exporting {
        provider,
        tracer,
        _runtime: runtime,
    });
    Ok(true)
}

fn build_provider(endpoint: Option<&str>) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    let exporter = match endpoint {
        Some(base) => exporter.with_endpoint(traces_url(base)),
        None => exporter,
    }
    .build()
    .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
    // Bounded: the default queue (2048 spans, OTEL_BSP_MAX_QUEUE_SIZE) drops beyond it.
    let config = opentelemetry_sdk::trace::BatchConfigBuilder::default().build();
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .with_batch_config(config)
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(SERVICE_NAME)
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}

/// The OTLP/HTTP traces URL of a base endpoint (as `OTEL_EXPORTER_OTLP_ENDPOINT` is read).
pub fn traces_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

/// Whether spans are exported.
pub fn enabled() -> bool {
    PROVIDER.get().is_some()
}

/// Exports what is queued and stops the exporter (bounded by a timeout).
pub fn shutdown() {
    if let Some(e) = PROVIDER.get() {
        if let Err(err) = e.provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
            tracing::warn!(error = %err, "OTLP export did not flush cleanly");
        }
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The client's trace context (`traceparent`, `tracestate`); an empty context when none
/// or malformed.
pub fn extract(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&Headers(headers))
}

/// The trace id (32 lowercase hex digits) of `cx`'s remote or local span, if valid.
pub fn trace_id(cx: &Context) -> Option<String> {
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// Starts a span named `name` under `parent` (exporting only); `None` when export is off.
pub fn start(name: &'static str, parent: &Context) -> Option<Context> {
    let e = PROVIDER.get()?;
    let span = e.tracer.start_with_context(name, parent);
    Some(parent.with_span(span))
}

/// A span that ends when dropped, under the current context; a no-op when export is off.
pub struct Guard(Option<Context>);

/// Starts a [`Guard`] span under the current context.
pub fn span(name: &'static str) -> Guard {
    Guard(start(name, &Context::current()))
}

impl Guard {
    /// Adds an attribute; `value` is not even computed when export is off.
    pub fn attr<V: Into<opentelemetry::Value>>(
        &self,
        key: &'static str,
        value: impl FnOnce() -> V,
    ) {
        if let Some(cx) = &self.0 {
            cx.span().set_attribute(KeyValue::new(key, value().into()));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(cx) = &self.0 {
            cx.span().end();
        }
    }
}

/// Records a finished span `name` under `parent` from `start` to now (the hub's append and
/// fan-out, timed around a batch). No-op when export is off or `parent` has no span.
pub fn record(name: &'static str, parent: &Context, start: SystemTime, attrs: Vec<KeyValue>) {
    let Some(e) = PROVIDER.get() else { return };
    if !parent.has_active_span() {
        return;
    }
    let mut span = e
        .tracer
        .span_builder(name)
        .with_start_time(start)
        .with_attributes(attrs)
        .start_with_context(&e.tracer, parent);
    span.end();
}

/// Ends the span of `cx` (the proxy's mutation span, at the end of the request).
pub fn end(cx: &Context, status: u16) {
    let span = cx.span();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    span.end();
}
