//! W3C Trace Context (`traceparent`, `tracestate`) across calls.
//!
//! Server side, a request's span continues the trace its caller sent ([`continue_trace`], called
//! where the request span is made: `common::grpc::serve`'s trace layer for every service, the
//! gateway's `observability::trace_layer`). Client side, a call made for a request carries the
//! current span's context ([`inject_current`] in the gateway's proxy,
//! [`inject_current_into_metadata`] in `crate::credentials::Credentials::request`, which every
//! call between services on a user's behalf goes through).
//!
//! Every function returns at once unless spans are exported ([`super::exporting`]). With tracing
//! off, a client's `traceparent` passes through the gateway untouched, so a service that does
//! export still joins the client's trace.

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator as _},
    trace::{TraceContextExt as _, TraceId},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{AsciiMetadataValue, MetadataKey, MetadataMap};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Makes `span`, a request's span not yet entered, the child of the span the caller's
/// `traceparent` names (a new trace without one), and records the trace id in the span's
/// `trace_id` field (declare it `tracing::field::Empty`), so every log line of the request
/// carries it.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if !super::exporting() || span.is_disabled() {
        return;
    }
    let caller = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    // Fails only when the span was already started, which a new span is not.
    let _ = span.set_parent(caller);
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
}

/// Writes the current span's context into `headers` as `traceparent` (and `tracestate`),
/// replacing the caller's: the next hop is the child of this one. Leaves `headers` alone when
/// there is no exported span.
pub fn inject_current(headers: &mut http::HeaderMap) {
    if let Some(context) = current_context() {
        TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
    }
}

/// As [`inject_current`], into a tonic request's metadata.
pub fn inject_current_into_metadata(metadata: &mut MetadataMap) {
    if let Some(context) = current_context() {
        TraceContextPropagator::new().inject_context(&context, &mut MetadataInjector(metadata));
    }
}

/// The current span's context, when spans are exported and it has one.
fn current_context() -> Option<Context> {
    if !super::exporting() {
        return None;
    }
    let context = tracing::Span::current().context();
    context.span().span_context().is_valid().then_some(context)
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            AsciiMetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}
