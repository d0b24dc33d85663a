//! The group service's error type and its one mapping to gRPC status.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::ids::UserId;

/// The `google.rpc.ErrorInfo` domain of group's errors.
const DOMAIN: &str = "group.v1";

/// Everything that can go wrong in the group service. Feature code returns it; `api.rs` turns it
/// into a [`Status`] through the one `From` impl below.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field breaks a documented rule; the message says which and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// The group does not exist or the caller is not a member: deliberately the same answer, so
    /// group ids cannot be probed.
    #[error("group not found")]
    GroupNotFound,
    /// The user named in a member operation is not a member of the group.
    #[error("user {0} is not a member of this group")]
    MemberNotFound(UserId),
    /// A user to add does not exist (the first one, when several do not).
    #[error("user {0} not found")]
    UserNotFound(UserId),
    /// The caller's role does not allow the operation; the message says what would.
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// A configured limit would be passed.
    #[error("{message}")]
    LimitExceeded {
        /// The limit's name in `ErrorInfo` metadata (`members_per_group`, `groups_per_user`).
        limit: &'static str,
        /// Its value.
        max: u32,
        /// What would pass it.
        message: String,
    },
    /// The change would leave the group without an owner.
    #[error("{0}")]
    LastOwner(&'static str),
    /// A WatchMembershipEvents stream cannot start (a cursor out of range) or has ended.
    #[error(transparent)]
    Feed(#[from] common::outbox::FeedError),
    /// Auth failed to answer a user or device look-up.
    #[error("auth: {}", .0.message())]
    Auth(Status),
    /// The database failed; the cause is logged, never shown to the client.
    #[error("database error")]
    Db(#[from] sqlx::Error),
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
            Error::GroupNotFound | Error::MemberNotFound(_) => Status::not_found(message),
            Error::UserNotFound(user) => with_reason(
                Code::NotFound,
                message,
                "USER_NOT_FOUND",
                [("user_id".to_owned(), user.to_string())],
            ),
            Error::PermissionDenied(_) => Status::permission_denied(message),
            Error::LimitExceeded { limit, max, .. } => with_reason(
                Code::FailedPrecondition,
                message,
                "LIMIT_EXCEEDED",
                [
                    ("limit".to_owned(), limit.to_owned()),
                    ("max".to_owned(), max.to_string()),
                ],
            ),
            Error::LastOwner(_) => with_reason(Code::FailedPrecondition, message, "LAST_OWNER", []),
            Error::Feed(error) => Status::from(error),
            Error::Auth(status) => match status.code() {
                // Worth a retry, or the caller's own token: say so rather than hide it.
                Code::Unavailable | Code::DeadlineExceeded | Code::Unauthenticated => {
                    Status::new(status.code(), message)
                }
                // tonic reports a call cut by its connection (an auth pod going away in a
                // rolling restart) as CANCELLED: the caller did not cancel, and a retry reaches
                // another pod (client/tests/cluster: rollout.rs).
                Code::Cancelled => Status::unavailable(message),
                _ => {
                    tracing::error!(code = ?status.code(), error = %status.message(), "auth call failed");
                    Status::internal("internal error")
                }
            },
            Error::Db(source) => common::db::status_of(&source),
        }
    }
}

fn with_reason<const N: usize>(
    code: Code,
    message: String,
    reason: &str,
    metadata: [(String, String); N],
) -> Status {
    let details = ErrorDetails::with_error_info(reason, DOMAIN, metadata);
    Status::with_error_details(code, message, details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_auth_call_cut_by_its_connection_is_unavailable_and_other_failures_internal() {
        let cut = Status::from(Error::Auth(Status::cancelled("operation was canceled")));
        let refused = Status::from(Error::Auth(Status::invalid_argument("bad request")));

        assert_eq!(cut.code(), Code::Unavailable);
        assert_eq!(refused.code(), Code::Internal);
    }
}
