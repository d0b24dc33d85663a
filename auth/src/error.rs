//! The auth service's error type and its one mapping to gRPC status.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `google.rpc.ErrorInfo` domain of auth's errors.
const DOMAIN: &str = "auth.v1";

/// Everything that can go wrong in the auth service. Feature code returns it; `api.rs` turns it
/// into a [`Status`] through the one `From` impl below.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field breaks a documented rule; the message says which and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// Registration with a username someone already has.
    #[error("username is already taken")]
    UsernameTaken,
    /// Unknown user or wrong password; deliberately indistinguishable.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// Too many failed logins for the account or the address.
    #[error("too many failed logins; try again later")]
    LoginThrottled {
        /// When the block ends.
        retry_after: Duration,
    },
    /// The refresh token is unknown, expired, revoked or was reused.
    #[error("refresh token is invalid; log in again")]
    RefreshTokenInvalid,
    /// The access token did not validate.
    #[error(transparent)]
    AccessToken(#[from] token::TokenError),
    /// A device id that is not an active device of the user.
    #[error("device not found")]
    DeviceNotFound,
    /// A new device would pass the per-user limit.
    #[error("too many active devices (at most {max}); revoke one first")]
    TooManyDevices {
        /// The limit.
        max: u32,
    },
    /// An uploaded public key was rejected.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(String),
    /// Password hashing is saturated; the caller should retry shortly.
    #[error("the server is busy; retry shortly")]
    Busy,
    /// The database failed; the cause is logged, never shown to the client.
    #[error("database error")]
    Db(#[from] sqlx::Error),
    /// An unexpected failure (a panicked blocking task, a clock before 1970); logged, not shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<common::ids::InvalidUuid> for Error {
    fn from(error: common::ids::InvalidUuid) -> Self {
        Error::InvalidArgument(error.to_string())
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let message = error.to_string();
        match error {
            Error::InvalidArgument(_) => Status::invalid_argument(message),
            Error::UsernameTaken => Status::already_exists(message),
            Error::InvalidCredentials => {
                with_reason(Code::Unauthenticated, message, "INVALID_CREDENTIALS", None)
            }
            Error::LoginThrottled { retry_after } => with_reason(
                Code::ResourceExhausted,
                message,
                "LOGIN_THROTTLED",
                Some(retry_after),
            ),
            Error::RefreshTokenInvalid => with_reason(
                Code::Unauthenticated,
                message,
                "REFRESH_TOKEN_INVALID",
                None,
            ),
            Error::AccessToken(token_error) => token_error.into(),
            Error::DeviceNotFound => Status::not_found(message),
            Error::TooManyDevices { .. } => {
                with_reason(Code::FailedPrecondition, message, "TOO_MANY_DEVICES", None)
            }
            Error::InvalidPublicKey(_) => {
                with_reason(Code::InvalidArgument, message, "INVALID_PUBLIC_KEY", None)
            }
            Error::Busy => Status::unavailable(message),
            Error::Db(source) => common::db::status_of(&source),
            Error::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

fn with_reason(code: Code, message: String, reason: &str, retry_after: Option<Duration>) -> Status {
    let mut details = ErrorDetails::with_error_info(reason, DOMAIN, []);
    if let Some(delay) = retry_after {
        details.set_retry_info(Some(delay));
    }
    Status::with_error_details(code, message, details)
}
