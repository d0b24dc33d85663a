//! One `tracing` subscriber per binary: log lines on stderr, and, when an OTLP endpoint is
//! configured, the same spans exported to it as OpenTelemetry traces.
//!
//! Tracing is off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set ([`TraceExport::from_lookup`]). Off,
//! the subscriber is what it always was (no OpenTelemetry layer, no propagation work: every
//! function of [`propagation`] returns at once). On, spans at INFO and above (whatever the log
//! filter says) go through a batch exporter over OTLP/gRPC, and W3C `traceparent` is read from
//! incoming calls and written on outgoing ones ([`propagation`]), so one request is one trace
//! across the gateway and the services.

pub mod propagation;

use std::{
    io::IsTerminal,
    str::FromStr,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use tracing_subscriber::{
    EnvFilter, Layer, Registry, filter::LevelFilter, layer::SubscriberExt as _,
    util::SubscriberInitExt as _,
};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    Pretty,
    /// One JSON object per line, for log collectors in a cluster.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "pretty" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            other => Err(format!("expected \"pretty\" or \"json\", got {other:?}")),
        }
    }
}

/// Where and as whom spans are exported. Built from the standard OpenTelemetry variables by
/// [`TraceExport::from_lookup`], or directly (tests, which then need not touch the environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceExport {
    /// The collector's OTLP/gRPC endpoint, e.g. `http://otel-collector:4317`.
    pub endpoint: String,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// How long spans wait to be exported in a batch; `None` keeps the SDK's default (5 s, or
    /// `OTEL_BSP_SCHEDULE_DELAY`).
    pub batch_delay: Option<Duration>,
}

impl TraceExport {
    /// From the standard variables, read through `lookup`: `OTEL_EXPORTER_OTLP_ENDPOINT` (unset
    /// or empty: no export) and `OTEL_SERVICE_NAME` (default `service_name`). The services read
    /// them with the rest of their configuration (`crate::config::ServerSettings`).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        service_name: &str,
    ) -> Option<Self> {
        // Both are read either way, so the documented variables are those the code reads.
        let service_name = lookup("OTEL_SERVICE_NAME")
            .filter(|value| !value.is_empty())
            .unwrap_or_else(|| service_name.to_owned());
        let endpoint = lookup("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|value| !value.is_empty())?;
        Some(Self {
            endpoint,
            service_name,
            batch_delay: None,
        })
    }
}

/// What [`init`] could not set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter is not a valid directive.
    #[error("invalid log filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// The OTLP exporter refused its configuration (e.g. an endpoint that is not a URI).
    #[error("cannot export traces to OTEL_EXPORTER_OTLP_ENDPOINT: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The installed telemetry. [`Telemetry::shutdown`] exports the spans still waiting; dropping
/// it without that loses them.
#[must_use = "call shutdown() before exiting, or the last spans are lost"]
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is still batched and stops the exporter, waiting at most
    /// [`FLUSH_TIMEOUT`].
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK blocks until its exporter thread is done; keep that off the runtime's threads.
        let outcome =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT))
                .await;
        if let Ok(Err(error)) = outcome {
            tracing::warn!(%error, "the last traces could not be exported");
        }
    }
}

/// How long [`Telemetry::shutdown`] waits for the last spans to be exported: after the drain,
/// within the pod's grace period (the chart's leave 5 s beyond the pre-stop sleep and the drain).
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether spans are exported (an [`init_with_traces`] set up a [`TraceExport`]). Everything
/// that only serves traces checks it first, so tracing off costs nothing.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Installs the global subscriber writing log lines to stderr, filtered by `filter` (`RUST_LOG`
/// syntax, e.g. `info,sqlx=warn`), and exporting no spans. Call once, first thing in `main`; a
/// second call (as in tests that start several services) keeps the first subscriber.
///
/// # Errors
/// When `filter` is not a valid filter directive.
pub fn init(filter: &str, format: LogFormat) -> Result<(), TelemetryError> {
    // Nothing to flush without an exporter.
    let _logs_only = init_with_traces(filter, format, None)?;
    Ok(())
}

/// As [`init`], and exports spans to `export` when given (the services' `main`, with their
/// `ServerSettings::trace_export`). Call it inside the runtime: the exporter's client needs it. A
/// second call keeps the first subscriber and exports nothing.
///
/// # Errors
/// When `filter` is not a valid filter directive, or the exporter refuses `export`.
pub fn init_with_traces(
    filter: &str,
    format: LogFormat,
    export: Option<TraceExport>,
) -> Result<Telemetry, TelemetryError> {
    let provider = export.map(tracer_provider).transpose()?;
    let writer = LogWriter {
        make: std::io::stderr,
        ansi: std::io::stderr().is_terminal(),
    };
    let installed = subscriber(filter, format, provider.as_ref(), writer)?
        .try_init()
        .is_ok();
    let provider = provider.filter(|_| installed);
    if provider.is_some() {
        EXPORTING.store(true, Ordering::Relaxed);
    }
    Ok(Telemetry { provider })
}

/// Where log lines go, and whether they may carry terminal colours.
struct LogWriter<W> {
    make: W,
    ansi: bool,
}

/// The subscriber [`init_with_traces`] installs, writing log lines to `writer`.
fn subscriber<W>(
    filter: &str,
    format: LogFormat,
    provider: Option<&SdkTracerProvider>,
    writer: LogWriter<W>,
) -> Result<impl tracing::Subscriber + Send + Sync, TelemetryError>
where
    W: for<'writer> tracing_subscriber::fmt::MakeWriter<'writer> + Send + Sync + 'static,
{
    let log_layer = log_layer(format, writer).with_filter(EnvFilter::try_new(filter)?);
    let trace_layer = provider.map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("chat-platform"))
            // Spans are what a trace is made of, whatever the log filter keeps; below INFO are
            // the libraries' own (h2, hyper, tonic), one per frame or poll.
            .with_filter(LevelFilter::INFO)
    });
    Ok(tracing_subscriber::registry()
        .with(log_layer)
        .with(trace_layer))
}

fn log_layer<W>(format: LogFormat, writer: LogWriter<W>) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'writer> tracing_subscriber::fmt::MakeWriter<'writer> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(writer.ansi)
        .with_writer(writer.make);
    match format {
        LogFormat::Pretty => layer.boxed(),
        // Each line carries its spans' fields, the request span's `trace_id` among them.
        LogFormat::Json => layer.json().flatten_event(true).boxed(),
    }
}

fn tracer_provider(export: TraceExport) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(export.endpoint)
        .build()?;
    let mut batch = BatchConfigBuilder::default();
    if let Some(delay) = export.batch_delay {
        batch = batch.with_scheduled_delay(delay);
    }
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch.build())
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(export.service_name)
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        move |key| vars.get(key).cloned()
    }

    #[test]
    fn traces_are_exported_only_when_an_endpoint_is_set() {
        assert_eq!(TraceExport::from_lookup(lookup(&[]), "chat"), None);
        assert_eq!(
            TraceExport::from_lookup(lookup(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]), "chat"),
            None
        );

        let export = TraceExport::from_lookup(
            lookup(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")]),
            "chat",
        )
        .unwrap();

        assert_eq!(export.endpoint, "http://collector:4317");
        assert_eq!(export.service_name, "chat");
    }

    /// Log lines written to memory.
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_log_lines_of_a_request_carry_the_trace_id_its_caller_sent() {
        let lines = Lines::default();
        let writer = LogWriter {
            make: {
                let lines = lines.clone();
                move || lines.clone()
            },
            ansi: false,
        };
        // Spans are made but go nowhere: no exporter.
        let provider = SdkTracerProvider::builder().build();
        let subscriber = subscriber("info", LogFormat::Json, Some(&provider), writer).unwrap();
        EXPORTING.store(true, Ordering::Relaxed);
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );

        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("grpc", trace_id = tracing::field::Empty);
            propagation::continue_trace(&span, &headers);
            span.in_scope(|| tracing::info!("handled"));
        });

        let written = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(written.trim()).unwrap();
        assert_eq!(line["message"], "handled");
        assert_eq!(line["span"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn otel_service_name_overrides_the_services_own_name() {
        let export = TraceExport::from_lookup(
            lookup(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_SERVICE_NAME", "chat-eu"),
            ]),
            "chat",
        )
        .unwrap();

        assert_eq!(export.service_name, "chat-eu");
    }
}
