//! The auth service's integration tests: the real server on a loopback port, each test against its
//! own freshly migrated database.

mod accounts;
mod device_names;
mod devices;
mod helpers;
mod internal;
mod malformed;
mod metrics;
mod revocation;
mod rotation;
mod serving;
mod sessions;
mod throttling;
mod tokens;
mod usernames;
