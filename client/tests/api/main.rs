//! End-to-end tests of the client library and the `chat` binary against the real services and
//! the real gateway, each test on its own database.

#[path = "../common/attacks.rs"]
mod attacks;
mod chains;
mod cli;
mod cli_conversations;
mod cli_errors;
mod cli_outbox;
mod decryption;
#[path = "../common/dishonest.rs"]
mod dishonest;
mod forwarding;
mod groups;
mod helpers;
mod malicious;
mod messaging;
#[path = "../common/rewriting_proxy.rs"]
mod rewriting_proxy;
mod tls;
