//! Fuzzing every parser of bytes that come from outside (issue 21, section 2).
//!
//! Each target is a function in [`targets`] that takes the fuzzer's bytes, feeds them to one
//! parser as the service or client does, and panics only when a property fails (a panic in the
//! parser itself is also a finding). The same functions run in two ways:
//!
//! - under libFuzzer, `cargo +nightly fuzz run <target> --features libfuzzer` (the thin
//!   `fuzz_targets/*.rs`; see `README.md` for how to run them longer);
//! - on stable, in CI, `tests/corpus.rs` replays the committed corpus (`corpus/<target>/`,
//!   seeded by `cargo run -p fuzz --bin fuzz-seeds` from what the tests send, then grown by the
//!   fuzzer and minimised) and every input that once failed (`regressions/<target>/`).

pub mod fixtures;
pub mod targets;
