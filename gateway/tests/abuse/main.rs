//! Protocol abuse against the gateway (issue 21, section 1): the real gateway binary, attacked
//! over raw HTTP/2 frames, the `h2` crate and raw HTTP/1.1, while a legitimate client calls
//! through it at a steady rate. Every attack must leave the gateway up, its memory under a bound,
//! the offending connection closed (or its streams refused) within a bound, and the legitimate
//! client's calls succeeding with their p99 within 10 times the p99 before the attack, or twice
//! the floor (its p99 under a harmless load as busy as the attack; see `harness.rs`). The table
//! of outcomes and bounds is in ABUSE.md.
//!
//! Each test starts its own gateway and runs alone (`.config/nextest.toml`): the attacks load the
//! machine, and the latency comparison would otherwise measure the neighbours.

mod frames;
mod grpc_web;
mod h2_floods;
mod h2_streams;
mod harness;
mod kernel;
mod processes;
mod web_client;
