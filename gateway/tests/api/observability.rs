//! Metrics, request ids and CORS, driven through the gateway's public layers with `oneshot` on
//! small services that answer hand-made gRPC responses (trailers included).

mod cors;
mod metrics;
mod request_ids;
