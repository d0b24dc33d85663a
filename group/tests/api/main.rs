//! The group service's integration tests: the real server (and the real auth service) on loopback
//! ports, each test against its own freshly migrated database.

mod groups;
mod helpers;
mod internal;
mod limits;
mod malformed;
mod members;
mod metrics;
mod properties;
mod serving;
