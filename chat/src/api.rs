//! The one place that speaks `chat.v1` to clients (with `wire.rs`, which encodes each message
//! once for every stream): `handlers.rs` authenticates each call and turns proto into domain
//! calls on `service.rs`, `convert.rs` turns answers back into proto, `server.rs` serves it all
//! with the streams' own codec (`codec.rs`).

mod codec;
mod convert;
mod handlers;
mod server;

pub use handlers::ChatApi;
pub use server::ChatServer;
