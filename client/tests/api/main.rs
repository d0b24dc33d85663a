//! End-to-end tests of the client library and the `chat` binary against the real services and
//! the real gateway, each test on its own database.

mod chains;
mod cli;
mod groups;
mod helpers;
mod messaging;
mod tls;
