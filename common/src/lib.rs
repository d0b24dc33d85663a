//! What every service binary shares, so that each service crate holds only its own domain.
//!
//! - [`config`]: reading `<SERVICE>_<SETTING>` environment variables into typed settings, with
//!   errors that name the variable.
//! - [`telemetry`]: one `tracing` subscriber per binary (pretty for people, JSON for clusters).
//! - [`shutdown`]: the signal that starts a graceful shutdown (SIGTERM or Ctrl-C).
//! - [`db`]: the PostgreSQL pool, the embedded migrations, and the status a database failure
//!   answers.
//! - [`grpc`]: serving a tonic router with reflection and a bounded drain.
//! - [`status`]: the bound on the size of every status a service sends.
//! - [`grpc_guard`]: malformed requests answer INVALID_ARGUMENT (not tonic's INTERNAL), and no
//!   response carries more metadata than a client accepts; every service and the gateway use it.
//! - [`ids`]: parsing UUID fields of requests, with the one message a malformed id gets.
//! - [`health`]: gRPC health that follows the database's reachability.
//! - [`outbox`]: streaming an outbox table to watchers (replay, then follow; NOTIFY wake-ups after
//!   commit; pruning), shared by group's membership events and auth's device changes.
//! - [`credentials`]: a caller's token, forwarded on the calls made on its behalf.
//! - [`service`]: the end of every service's `run`: health, serving, ending streams at shutdown.
//! - [`metrics`]: Prometheus metrics on a port of their own: the registry, gRPC server metrics
//!   (the same for every server), the database pool's gauges.
//! - [`service_credential`]: the shared secret services present to each other for calls made on
//!   nobody's behalf.
//! - [`sync`]: locks that keep serving after a panic poisoned them.
//! - [`resolve`]: names resolved again and again (headless Services), as one set of addresses;
//!   the gateway's upstream pools follow their names with it.
//! - [`balance`]: a tonic `Channel` balanced over every address of a name, re-resolved: the
//!   calls between services.
//!
//! It deliberately holds no domain logic and no knowledge of any one service.

pub mod balance;
pub mod config;
pub mod credentials;
pub mod db;
pub mod grpc;
pub mod grpc_guard;
pub mod health;
pub mod ids;
pub mod metrics;
pub mod outbox;
pub mod resolve;
pub mod service;
pub mod service_credential;
pub mod shutdown;
pub mod status;
pub mod sync;
pub mod telemetry;
