//! Integration tests of what every service shares, against a real PostgreSQL and real gRPC.

mod drain;
mod health;
mod metrics;
mod migrations;
mod status;
