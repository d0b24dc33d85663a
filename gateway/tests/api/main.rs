//! The gateway's integration tests: the real server on a loopback port, spoken to with real
//! clients (tonic, grpcurl, raw HTTP/1.1 for gRPC-Web and /healthz).

mod helpers;
mod serving;
