//! The group service's integration tests: the real server on a loopback port, each test against its
//! own freshly migrated database.

mod helpers;
mod serving;
