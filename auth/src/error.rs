//! The auth service's error type and its one mapping to gRPC status.

use tonic::Status;

/// Everything that can go wrong in the auth service. Feature code returns it; `api.rs` turns it
/// into a [`Status`] through the one `From` impl below.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed; the cause is logged, never shown to the client.
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match error {
            Error::Db(source) => {
                tracing::error!(error = %source, "database error");
                Status::internal("internal error")
            }
        }
    }
}
