//! The e2ee crate's integration tests: one binary (see ../../../../shared/STYLE.md).
//!
//! - `vectors`: every case of `testdata/vectors.json`, which other implementations also read;
//! - `wycheproof`: Project Wycheproof vectors through the primitives as the crate uses them;
//! - `envelopes`: round trips, delivery as the server does it, and tampering with every field;
//! - `forwarding`: keys forwarded to another device of the user, and what is refused;
//! - `keys`: key generation, export and import, and inputs that must fail without panicking.
//! - `properties`: proptest: round trips for random sizes and recipient sets, single flipped bits.
//!
//! Keys come from the vectors file (generating RSA keys is slow); only `keys` generates one.

mod envelopes;
mod forwarding;
mod helpers;
mod keys;
mod properties;
mod schema;
mod vectors;
mod wycheproof;
