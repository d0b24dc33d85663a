//! The gateway's integration tests: the real server on a loopback port in front of the real auth
//! and group services (and a scripted chat double for streaming), spoken to with real clients
//! (tonic, grpcurl, raw HTTP/1.1 for gRPC-Web and plain HTTP).

mod chat_double;
mod grpc_web;
mod grpc_web_client;
mod header_limits;
mod helpers;
mod malformed;
mod observability;
mod proxying;
mod reflection;
mod revocation;
mod server;
mod serving;
mod statuses;
mod token_lifetime;
mod upstream_failures;
mod upstream_request_ids;
mod web_root;
