//! OpenTelemetry span export. When `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (and `OTEL_SDK_DISABLED` / `OTEL_TRACES_EXPORTER=none`
//! do not turn it off), kiln's `tracing` spans (`job`, `queue_wait`, `run`, `store_result`, …)
//! are exported over OTLP http/protobuf, batched on the tokio runtime; the exporter reads the
//! other standard variables itself (`OTEL_EXPORTER_OTLP_*HEADERS`, `*TIMEOUT`,
//! `OTEL_SERVICE_NAME`, `OTEL_BSP_*`).
//!
//! A job's span joins its caller's W3C trace ([`join`]) under the span id kiln already chose
//! for it ([`crate::tracectx::TraceContext::span_id`], the parent it sends downstream), so the
//! exported tree and kiln's `traceparent` headers agree.

use crate::tracectx::TraceContext;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracer, SdkTracerProvider};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Spans of kiln's own crates are exported; library internals are not (and the exporter's own
/// HTTP client never feeds spans back into the export).
pub const SPAN_FILTER: &str = "kiln_worker=info,kiln_jobs=info,kiln_kernels=info";

static ENABLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The span id the next span built on this thread takes (see [`join`]).
    static NEXT_SPAN_ID: Cell<Option<SpanId>> = const { Cell::new(None) };
}

/// Random ids, except where [`join`] asked for a given span id.
#[derive(Debug, Default)]
struct KilnIds(RandomIdGenerator);

impl IdGenerator for KilnIds {
    fn new_trace_id(&self) -> TraceId {
        self.0.new_trace_id()
    }

    fn new_span_id(&self) -> SpanId {
        NEXT_SPAN_ID.with(Cell::take).unwrap_or_else(|| self.0.new_span_id())
    }
}

fn env_set(var: &str) -> Option<String> {
    std::env::var(var).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Whether the environment asks for span export.
pub fn configured() -> bool {
    if env_set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return false;
    }
    if env_set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none")) {
        return false;
    }
    env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some() || env_set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
}

/// The tracer provider and tracer when export is configured, with notes to log once logging
/// is up (a protocol other than http/protobuf, a failed build). Needs a tokio runtime entered.
pub fn provider() -> (Option<(SdkTracerProvider, SdkTracer)>, Vec<String>) {
    let mut notes = Vec::new();
    if !configured() {
        return (None, notes);
    }
    if tokio::runtime::Handle::try_current().is_err() {
        notes.push("OTLP export needs the async runtime; spans are not exported".into());
        return (None, notes);
    }
    let protocol = env_set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| env_set("OTEL_EXPORTER_OTLP_PROTOCOL"));
    if let Some(p) = protocol.filter(|p| p != "http/protobuf") {
        notes.push(format!("OTLP protocol {p:?} is not built in; exporting over http/protobuf"));
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(Protocol::HttpBinary).build() {
        Ok(e) => e,
        Err(e) => {
            notes.push(format!("OTLP exporter not started: {e}"));
            return (None, notes);
        }
    };
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
            .build();
    let service = env_set("OTEL_SERVICE_NAME").unwrap_or_else(|| "kiln".into());
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_id_generator(KilnIds::default())
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("kiln");
    ENABLED.store(true, Ordering::Relaxed);
    (Some((provider, tracer)), notes)
}

/// Makes `span` (just created, not yet entered) a child of the caller's span in the caller's
/// trace, under the job's own span id. Does nothing when spans are not exported.
pub fn join(span: &tracing::Span, t: &TraceContext) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let (Ok(trace_id), Ok(parent), Ok(own)) =
        (TraceId::from_hex(&t.trace_id), SpanId::from_hex(&t.parent_id), SpanId::from_hex(&t.span_id))
    else {
        return;
    };
    let remote = SpanContext::new(trace_id, parent, TraceFlags::new(t.flags), true, TraceState::default());
    if span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote)).is_err() {
        return;
    }
    // Build the span now, on this thread, so it takes the job's span id.
    NEXT_SPAN_ID.with(|n| n.set(Some(own)));
    let _ = span.context();
    NEXT_SPAN_ID.with(|n| n.set(None));
}

/// Flushes and stops the exporter, waiting at most `limit` (a collector that does not answer
/// must not hold the exit).
pub fn shutdown(provider: SdkTracerProvider, limit: Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name("kiln-otel-flush".into()).spawn(move || {
        let _ = tx.send(provider.shutdown_with_timeout(limit));
    });
    if spawned.is_err() {
        return;
    }
    match rx.recv_timeout(limit + Duration::from_millis(200)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "span export did not finish"),
        Err(_) => tracing::warn!("span export did not finish in time"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_asks_for_the_jobs_own_span_id() {
        let ids = KilnIds::default();
        let want = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        NEXT_SPAN_ID.with(|n| n.set(Some(want)));
        assert_eq!(ids.new_span_id(), want);
        assert_ne!(ids.new_span_id(), want, "only the next span takes it");
    }
}
