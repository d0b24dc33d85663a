//! The token crate's integration tests: hostile tokens are refused with the right error, good
//! ones accepted, keys rotate, and keys come from a real gRPC `GetJwks`.

mod accepted;
mod auth_source;
mod helpers;
mod metadata;
mod refused;
mod revocation;
mod rotation;
