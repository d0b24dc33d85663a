//! The gateway is the only component exposed to the outside. One port serves native gRPC (HTTP/2
//! with prior knowledge, or TLS with ALPN), gRPC-Web (HTTP/1.1 and HTTP/2, through
//! `tonic_web::GrpcWebLayer`) and plain HTTP (`/healthz`, `/readyz`, `/.well-known/jwks.json`).
//! `/metrics` has a port of its own (`GATEWAY_METRICS_LISTEN_ADDR`) for scrapers; the public port
//! answers 404 there.
//!
//! It serves gRPC health and server reflection for every public API itself, and proxies every
//! other call by path to the auth, chat and group services (`proxy.rs`): the access token is
//! validated first (`token::Validator`, fed by auth's key set and revocations: `revocation.rs`),
//! identity headers from the client are stripped, rate limits apply, and bodies stream through
//! both ways. Upstreams validate the token again themselves; the gateway is a first line, not the
//! only one.
//!
//! Start reading at [`run`], then `router` below, then `proxy.rs`.

mod config;
pub mod cors;
mod frames;
mod limits;
mod linger;
mod methods;
pub mod observability;
mod proxy;
mod revocation;
pub mod server;
mod upstream;
mod web;

use std::{future::Future, sync::Arc, time::Duration};

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::IntoResponse,
    routing::{any, get},
};
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::ServingStatus;

pub use config::{
    Config, DEFAULT_LISTEN_ADDR, DEFAULT_METRICS_LISTEN_ADDR, InvalidUpstreamUrls, Limits,
    UpstreamSettings, UpstreamUrls,
};
use limits::RateLimits;
use methods::{MethodTable, Upstream};
use proxy::Proxy;
use upstream::Upstreams;

/// Serves the gateway on `listener` until `shutdown` resolves, then drains in-flight requests for
/// at most the configured shutdown timeout.
///
/// # Errors
/// When the router cannot be built or the server fails.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics_listener = TcpListener::bind(config.metrics_listen_addr)
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "binding GATEWAY_METRICS_LISTEN_ADDR {}: {error}",
                config.metrics_listen_addr
            )
        })?;
    run_with_metrics_listener(config, listener, metrics_listener, shutdown).await
}

/// As [`run`], with `/metrics` served on `metrics_listener` (bound by the caller) instead of on
/// `config.metrics_listen_addr`.
///
/// # Errors
/// When the router cannot be built or the server fails.
pub async fn run_with_metrics_listener(
    config: Config,
    listener: TcpListener,
    metrics_listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let upstreams = Upstreams::start(&config.upstreams);
    let validator = revocation::start_validator(&config, upstreams.pool(Upstream::Auth))?;
    let rate_limits = RateLimits::new(&config.limits);
    tokio::spawn(forget_idle_rate_limit_keys(rate_limits.clone()));
    // Cancelled as the drain starts: streams end with UNAVAILABLE (proxy.rs), so that clients
    // resume elsewhere at once instead of being cut when the drain times out.
    let stopping = tokio_util::sync::CancellationToken::new();
    let shutdown = {
        let stopping = stopping.clone();
        async move {
            shutdown.await;
            stopping.cancel();
        }
    };
    let proxy = Arc::new(Proxy {
        stopping,
        methods: MethodTable::from_embedded_descriptors(),
        upstreams,
        validator,
        rate_limits,
        unary_timeout: config.limits.unary_timeout,
        max_message_bytes: config.limits.max_message_bytes,
    });
    let metrics = Arc::new(observability::Metrics::new(
        observability::gateway_method_paths(),
    ));
    let _metrics_server = common::metrics::spawn_server(Some(metrics_listener), metrics.clone())?;
    let app = router(proxy, metrics, &config).await?;
    let tls = match &config.tls {
        Some((certificate_chain, private_key)) => Some(server::tls_acceptor(&server::TlsFiles {
            certificate_chain: certificate_chain.clone(),
            private_key: private_key.clone(),
        })?),
        None => None,
    };
    let limits = server::ServerLimits {
        max_concurrent_streams: config.limits.max_concurrent_streams,
        max_header_list_bytes: config.limits.max_header_list_bytes,
        keepalive_interval: config.limits.keepalive_interval,
        keepalive_timeout: config.limits.keepalive_timeout,
        idle_timeout: config.limits.idle_timeout,
        header_read_timeout: config.limits.header_read_timeout,
        send_timeout: config.limits.send_timeout,
    };
    server::serve(
        listener,
        app,
        limits,
        tls,
        shutdown,
        config.server.shutdown_timeout,
    )
    .await;
    Ok(())
}

/// The gateway's HTTP router: its own gRPC health and reflection, the proxy for every other gRPC
/// path, and the plain HTTP routes (the web root's with their browser defences, `web.rs`),
/// wrapped (outermost first) in HSTS when serving TLS, request ids, tracing, CORS, then gRPC-Web
/// translation and metrics on the gRPC routes (metrics must see plain gRPC).
///
/// # Errors
/// When the reflection service cannot be built from the embedded descriptors.
async fn router(
    proxy: Arc<Proxy>,
    metrics: Arc<observability::Metrics>,
    config: &Config,
) -> anyhow::Result<axum::Router> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::Serving).await;
    let own_services = common::grpc::with_reflection(
        Routes::new(health_service),
        proto::PUBLIC_FILE_DESCRIPTOR_SET,
        proto::PUBLIC_SERVICES,
    )?;
    // GrpcWebLayer answers 400 to anything that is not gRPC, so it wraps the gRPC routes only.
    let grpc = own_services
        .prepare()
        .into_axum_router()
        // Malformed requests to the gateway's own services answer as they do on every service;
        // the proxy checks the framing of the rest, and the upstreams their messages.
        // Statuses are cut to size as every service's are (reflection's NOT_FOUND names what
        // the caller asked for).
        .layer(common::status::BoundStatusLayer)
        .layer(common::grpc_guard::GrpcGuardLayer::new(
            common::grpc_guard::workspace_schemas(),
        ))
        .layer(axum::middleware::from_fn({
            let unary_timeout = config.limits.unary_timeout;
            move |request, next| own_response_head_within(unary_timeout, request, next)
        }))
        .layer(axum::middleware::from_fn({
            let rate_limits = proxy.rate_limits.clone();
            move |request, next| limit_reflection(rate_limits.clone(), request, next)
        }))
        .fallback({
            let proxy = proxy.clone();
            move |request| proxy::proxy(proxy.clone(), request)
        })
        .layer(observability::MetricsLayer::new(metrics.clone()))
        .layer(tonic_web::GrpcWebLayer::new());
    let mut http = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(proxy);
    // Scrapers use the metrics port; here /metrics is only a path that does not exist.
    http = http.route("/metrics", any(|| async { StatusCode::NOT_FOUND }));
    if let Some(root) = &config.web_root {
        http = http.merge(web::routes(root));
    }
    let http = http.layer(observability::MetricsLayer::new(metrics));
    let mut app = http
        .merge(grpc)
        .layer(cors::cors_layer(&config.cors_allowed_origins))
        .layer(observability::trace_layer())
        .layer(observability::request_id_layers());
    if config.tls.is_some() {
        app = app.layer(axum::middleware::map_response(web::with_hsts));
    }
    // Turns every route into its final service once, instead of on each request.
    Ok(app.with_state(()))
}

/// Bounds the gateway's own services as the proxy bounds unary calls: the response head must
/// come within `limit`. That is the whole call for health's `Check`, and the request message for
/// `Watch`; reflection's bidirectional stream answers its head at once, so it is not bounded.
/// Without it, a request body that never ends (slowloris on the body) held the call for ever.
async fn own_response_head_within(
    limit: Duration,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => tonic::Status::deadline_exceeded(format!(
            "the request was not complete within {} s",
            limit.as_secs()
        ))
        .into_http(),
    }
}

/// Reflection's answers are tens of KB each and need no token: they count against the per-address
/// limit of public calls. Health (probes, load balancers, all from one address) does not.
async fn limit_reflection(
    rate_limits: RateLimits,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|axum::extract::ConnectInfo(address)| address.ip());
    if request.uri().path().starts_with("/grpc.reflection.")
        && let Some(address) = peer
        && let Err(status) = rate_limits.check_public(address)
    {
        return status.into_http();
    }
    next.run(request).await
}

/// Ready when auth's key set has been fetched and its revocations read (so tokens can be checked).
async fn readyz(State(proxy): State<Arc<Proxy>>) -> impl IntoResponse {
    if proxy.validator.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for auth's key set and revocations\n",
        )
    }
}

/// The token verification keys as a JSON Web Key Set.
async fn jwks(State(proxy): State<Arc<Proxy>>) -> impl IntoResponse {
    match proxy.validator.get() {
        Some(validator) => {
            let body = token::jwks_json(validator.key_set().jwks());
            ([("content-type", "application/jwk-set+json")], body).into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json("key set not fetched yet"),
        )
            .into_response(),
    }
}

/// Fetches auth's key set over the gateway's own connections to auth.
pub(crate) struct AuthKeySource(upstream::UpstreamPool);

#[token::async_trait]
impl token::KeySource for AuthKeySource {
    async fn fetch(&self) -> Result<Vec<token::Jwk>, token::KeySourceError> {
        let mut auth = proto::auth::v1::auth_service_client::AuthServiceClient::new(self.0.clone());
        let response = auth.get_jwks(proto::auth::v1::GetJwksRequest {}).await?;
        Ok(response
            .into_inner()
            .keys
            .into_iter()
            .map(token::Jwk::from)
            .collect())
    }
}

async fn forget_idle_rate_limit_keys(rate_limits: RateLimits) {
    let mut interval = tokio::time::interval(Duration::from_secs(60));
    loop {
        interval.tick().await;
        rate_limits.forget_idle_keys();
    }
}
