//! The gRPC server metric families (grpc-ecosystem names), their bounded label values, the
//! registry a service adds its own families to, and the `/metrics` route.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use prost::Message as _;
use tonic::Code;

/// The label value for anything outside the known set: unknown services, unknown methods of a
/// known service, and paths that are not `/package.Service/Method`.
pub const UNKNOWN: &str = "unknown";

/// The content type of [`Metrics::render`]'s output (OpenMetrics 1.0 text, which Prometheus reads).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the latency buckets, in seconds: 100 µs to 60 s, about 2.5x apart.
const LATENCY_BUCKETS: [f64; 18] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// The reflection services every server serves (v1, and v1alpha for grpcurl 1.8): each has one method.
const REFLECTION_METHOD_PATHS: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// A server's metrics: a prometheus-client [`Registry`] and handles to the gRPC server families
/// every server has (the gateway and each service). A service registers its own families into
/// [`Metrics::registry_mut`] before sharing it.
///
/// - `grpc_server_handled_total{service, method, code}`: finished gRPC calls, `code` being the
///   status name (`OK`, `UNAUTHENTICATED`, ...).
/// - `grpc_server_handling_seconds{service, method}`: time from the request reaching the layer to
///   the call's end (for a streaming RPC, the stream's lifetime).
/// - `grpc_server_open_streams{service}`: gRPC calls in flight (for streams, the open streams).
/// - `http_requests_total{path_kind, status}`: every other request, by a fixed set of path kinds
///   (`healthz`, `metrics`, `well_known`, `other`) and HTTP status code.
///
/// Label values are bounded: `service` and `method` are only ever values from the set given to
/// [`Metrics::new`] or [`UNKNOWN`], so clients cannot create new series by inventing paths.
pub struct Metrics {
    registry: Registry,
    handled: Family<HandledLabels, Counter>,
    handling_seconds: Family<MethodLabels, Histogram, fn() -> Histogram>,
    open_streams: Family<ServiceLabels, Gauge>,
    http_requests: Family<HttpLabels, Counter>,
    /// Known service name -> its known method names.
    known: HashMap<String, HashSet<String>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    service: String,
    method: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    service: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    path_kind: &'static str,
    status: u16,
}

impl Metrics {
    /// A fresh registry whose `service`/`method` labels may take the values of `known_method_paths`
    /// (full gRPC paths, `/package.Service/Method`; see [`served_method_paths`]). Entries that are
    /// not of that form are ignored.
    pub fn new<I>(known_method_paths: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut known: HashMap<String, HashSet<String>> = HashMap::new();
        for path in known_method_paths {
            match split_method_path(path.as_ref()) {
                Some((service, method)) => {
                    known
                        .entry(service.to_owned())
                        .or_default()
                        .insert(method.to_owned());
                }
                None => tracing::warn!(
                    path = path.as_ref(),
                    "ignoring a malformed gRPC method path"
                ),
            }
        }
        let handled = Family::<HandledLabels, Counter>::default();
        let handling_seconds: Family<MethodLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        let open_streams = Family::<ServiceLabels, Gauge>::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let mut registry = Registry::default();
        registry.register(
            "grpc_server_handled",
            "gRPC calls finished, by status code",
            handled.clone(),
        );
        registry.register_with_unit(
            "grpc_server_handling",
            "Duration of gRPC calls (of streams: their lifetime)",
            Unit::Seconds,
            handling_seconds.clone(),
        );
        registry.register(
            "grpc_server_open_streams",
            "gRPC calls in flight",
            open_streams.clone(),
        );
        registry.register(
            "http_requests",
            "Non-gRPC HTTP requests answered",
            http_requests.clone(),
        );
        Self {
            registry,
            handled,
            handling_seconds,
            open_streams,
            http_requests,
            known,
        }
    }

    /// The registry, for a service to register its own families (or collectors) into before the
    /// metrics are shared.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Every metric in the OpenMetrics text format (see [`OPENMETRICS_CONTENT_TYPE`]), ending in `# EOF`.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// The bounded `(service, method)` labels for a request path.
    pub(super) fn grpc_labels(&self, path: &str) -> (String, String) {
        let Some((service, method)) = split_method_path(path) else {
            return (UNKNOWN.to_owned(), UNKNOWN.to_owned());
        };
        match self.known.get(service) {
            Some(methods) if methods.contains(method) => (service.to_owned(), method.to_owned()),
            Some(_) => (service.to_owned(), UNKNOWN.to_owned()),
            None => (UNKNOWN.to_owned(), UNKNOWN.to_owned()),
        }
    }

    pub(super) fn grpc_started(&self, service: &str) {
        self.open_streams
            .get_or_create(&ServiceLabels {
                service: service.to_owned(),
            })
            .inc();
    }

    pub(super) fn grpc_finished(
        &self,
        service: String,
        method: String,
        code: Code,
        elapsed: Duration,
    ) {
        self.open_streams
            .get_or_create(&ServiceLabels {
                service: service.clone(),
            })
            .dec();
        let labels = MethodLabels { service, method };
        self.handling_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        let labels = HandledLabels {
            service: labels.service,
            method: labels.method,
            code: code_name(code),
        };
        self.handled.get_or_create(&labels).inc();
    }

    pub(super) fn http_answered(&self, path_kind: &'static str, status: http::StatusCode) {
        let labels = HttpLabels {
            path_kind,
            status: status.as_u16(),
        };
        self.http_requests.get_or_create(&labels).inc();
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("known_services", &self.known.len())
            .finish_non_exhaustive()
    }
}

/// `GET /metrics`, answering [`Metrics::render`] with [`OPENMETRICS_CONTENT_TYPE`].
///
/// Every server serves this router on its metrics port only (`<SERVICE>_METRICS_LISTEN_ADDR`, see
/// [`super::spawn_server`]), which scrapers reach and clients do not; the gateway's public port
/// answers 404 for `/metrics`.
pub fn metrics_route(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = Arc::clone(&metrics);
            async move { ([(CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], metrics.render()) }
        }),
    )
}

/// The full method paths (`/package.Service/Method`) of `services`, read from an encoded
/// `FileDescriptorSet`. Services missing from the set contribute nothing.
///
/// # Errors
/// When `descriptor_set` is not a valid encoded `FileDescriptorSet`.
pub fn method_paths(
    descriptor_set: &[u8],
    services: &[&str],
) -> Result<Vec<String>, prost::DecodeError> {
    let set = prost_types::FileDescriptorSet::decode(descriptor_set)?;
    let mut paths = Vec::new();
    for file in &set.file {
        for service in &file.service {
            let full_name = match file.package() {
                "" => service.name().to_owned(),
                package => format!("{package}.{}", service.name()),
            };
            if services.contains(&full_name.as_str()) {
                paths.extend(
                    service
                        .method
                        .iter()
                        .map(|method| format!("/{full_name}/{}", method.name())),
                );
            }
        }
    }
    Ok(paths)
}

/// Every method of `services` (full names, from [`proto::FILE_DESCRIPTOR_SET`]), plus
/// `grpc.health.v1.Health` and server reflection (v1 and v1alpha), which every server answers.
/// Pass it to [`Metrics::new`].
pub fn served_method_paths(services: &[&str]) -> Vec<String> {
    // Both descriptor sets are compiled in, so a decoding failure is a build defect, not a runtime condition.
    let mut paths = method_paths(proto::FILE_DESCRIPTOR_SET, services)
        .expect("the embedded API descriptor set decodes");
    paths.extend(
        method_paths(
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            &["grpc.health.v1.Health"],
        )
        .expect("the embedded health descriptor set decodes"),
    );
    paths.extend(
        REFLECTION_METHOD_PATHS
            .iter()
            .map(|path| (*path).to_owned()),
    );
    paths
}

/// `("pkg.Service", "Method")` for `/pkg.Service/Method`; `None` for any other shape.
fn split_method_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let well_formed = !service.is_empty() && !method.is_empty() && !method.contains('/');
    well_formed.then_some((service, method))
}

/// A fixed, small set of path kinds for non-gRPC requests, so paths never become label values.
pub(super) fn path_kind(path: &str) -> &'static str {
    match path {
        "/healthz" => "healthz",
        "/metrics" => "metrics",
        _ if path.starts_with("/.well-known/") => "well_known",
        _ => "other",
    }
}

/// The canonical name of a gRPC status code, as in the gRPC spec and grpc-go's metrics.
pub(super) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_method_paths_cover_the_services_health_and_reflection() {
        let paths = served_method_paths(&["auth.v1.AuthService"]);

        for expected in [
            "/auth.v1.AuthService/Login",
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(
                paths.iter().any(|path| path == expected),
                "{expected} missing from {paths:?}"
            );
        }
        assert!(
            !paths.iter().any(|path| path.starts_with("/group.")),
            "services not asked for are not listed"
        );
    }

    #[test]
    fn only_paths_of_the_form_package_service_method_are_split() {
        assert_eq!(split_method_path("/a.v1.S/M"), Some(("a.v1.S", "M")));
        for malformed in [
            "",
            "/",
            "/a.v1.S",
            "/a.v1.S/",
            "//M",
            "/a.v1.S/M/x",
            "a.v1.S/M",
        ] {
            assert_eq!(split_method_path(malformed), None, "{malformed:?}");
        }
    }
}
