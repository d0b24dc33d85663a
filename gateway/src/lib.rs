//! The gateway is the only component exposed to the outside. One port serves native gRPC (HTTP/2
//! with prior knowledge, or TLS with ALPN), gRPC-Web (HTTP/1.1 and HTTP/2, through
//! `tonic_web::GrpcWebLayer`) and plain HTTP (`/healthz`, `/readyz`, `/metrics`,
//! `/.well-known/jwks.json`). With `GATEWAY_METRICS_LISTEN_ADDR`, `/metrics` moves to a port of
//! its own, so that the public port does not expose it.
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
mod limits;
mod methods;
pub mod observability;
mod proxy;
mod revocation;
pub mod server;
mod upstream;

use std::{future::Future, sync::Arc, time::Duration};

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::ServingStatus;

pub use config::{
    Config, DEFAULT_LISTEN_ADDR, InvalidUpstreamUrls, Limits, UpstreamSettings, UpstreamUrls,
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
    let upstreams = Upstreams::start(&config.upstreams);
    let validator = revocation::start_validator(&config, upstreams.pool(Upstream::Auth))?;
    let rate_limits = RateLimits::new(&config.limits);
    tokio::spawn(forget_idle_rate_limit_keys(rate_limits.clone()));
    let proxy = Arc::new(Proxy {
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
    let metrics_server = match config.metrics_listen_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await?;
            tracing::info!(addr = %listener.local_addr()?, "gateway metrics listening");
            let routes = observability::metrics_route(metrics.clone());
            Some(tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, routes).await {
                    tracing::error!(%error, "the metrics server failed");
                }
            }))
        }
        None => None,
    };
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
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    Ok(())
}

/// The gateway's HTTP router: its own gRPC health and reflection, the proxy for every other gRPC
/// path, and the plain HTTP routes, wrapped (outermost first) in request ids, tracing, CORS, then
/// gRPC-Web translation and metrics on the gRPC routes (metrics must see plain gRPC).
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
    let own_services =
        common::grpc::with_reflection(Routes::new(health_service), proto::PUBLIC_SERVICES)?;
    // GrpcWebLayer answers 400 to anything that is not gRPC, so it wraps the gRPC routes only.
    let grpc = own_services
        .prepare()
        .into_axum_router()
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
    if config.metrics_listen_addr.is_none() {
        http = http.merge(observability::metrics_route(metrics.clone()));
    }
    if let Some(root) = &config.web_root {
        http = http
            .route_service(
                "/",
                tower_http::services::ServeFile::new(root.join("index.html")),
            )
            .nest_service("/static", tower_http::services::ServeDir::new(root));
    }
    let http = http.layer(observability::MetricsLayer::new(metrics));
    Ok(http
        .merge(grpc)
        .layer(cors::cors_layer(&config.cors_allowed_origins))
        .layer(observability::trace_layer())
        .layer(observability::request_id_layers())
        // Turns every route into its final service once, instead of on each request.
        .with_state(()))
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
