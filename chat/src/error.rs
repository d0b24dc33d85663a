//! The chat service's error type and its mappings to the wire: a gRPC [`Status`] (with
//! `google.rpc.ErrorInfo`, `RetryInfo` and `chat.v1.DeviceListMismatch` details) and, for sends on
//! a bidirectional stream, a `chat.v1.SendRejected`. Both are built here and only here, and both
//! stay within `common::status`'s bounds whatever the request held: a mismatch lists at most
//! [`MAX_MISMATCH_IDS_PER_LIST`] ids of each kind, with the full counts.

use std::time::Duration;

use prost::Message as _;
use proto::chat::v1 as pb;
use tonic::{Code, Status};

/// The `google.rpc.ErrorInfo` domain of chat's errors.
const DOMAIN: &str = "chat.v1";

/// Most ids each list of a `chat.v1.DeviceListMismatch` carries (the proto comment documents it).
/// Three full lists of UUIDs, their counts and the `ErrorInfo` take under 4 KiB, within
/// `common::status::MAX_DETAILS_BYTES` (a test below checks it); a send may name 10,000 devices.
pub const MAX_MISMATCH_IDS_PER_LIST: usize = 32;

/// Everything that can go wrong in the chat service. Feature code returns it; `api/` turns it
/// into a [`Status`] through the one `From` impl below.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field breaks a documented rule; the message says which.
    #[error("{0}")]
    InvalidArgument(String),
    /// The conversation does not exist or the caller does not take part in it (deliberately
    /// indistinguishable).
    #[error("conversation not found")]
    ConversationNotFound,
    /// The peer of a direct conversation does not exist.
    #[error("user not found")]
    UserNotFound,
    /// A message id of ForwardKeys is not one of the conversation's messages.
    #[error("message {0} not found in this conversation")]
    MessageNotFound(uuid::Uuid),
    /// ForwardKeys between devices that may not: the message says which rule.
    #[error("{0}")]
    ForwardingDenied(String),
    /// ForwardKeys for a recipient key that is not the device's current one: refetch the
    /// user's devices and forward again.
    #[error("{0}")]
    StaleRecipientKey(String),
    /// The envelope names another sender than the caller, or its signature does not verify with
    /// the sender device's published key.
    #[error("signature invalid: {0}")]
    SignatureInvalid(String),
    /// The wrapped keys are not exactly the conversation's current devices.
    #[error("the wrapped keys do not match the current devices; refetch keys and retry")]
    DeviceListMismatch(DeviceListMismatch),
    /// The client message id was used by this device for a different envelope.
    #[error("client message id already used for a different message")]
    ClientMessageIdReused,
    /// Above a rate limit.
    #[error("rate limited; retry later")]
    RateLimited {
        /// When to retry.
        retry_after: Duration,
    },
    /// The stream's outgoing queue overflowed.
    #[error("the stream fell behind; reconnect and resume from the last sequence received")]
    SlowConsumer,
    /// The device has the most streams a replica allows.
    #[error("too many open streams for this device")]
    TooManyStreams,
    /// The access token of a stream expired.
    #[error("access token expired; refresh it and resume")]
    TokenExpired,
    /// The access token of a stream was revoked, or its revocation can no longer be checked.
    #[error("{0}")]
    Token(token::TokenError),
    /// The server is shutting down.
    #[error("server shutting down; reconnect and resume")]
    ShuttingDown,
    /// A call to the auth service failed; the cause is logged. UNAUTHENTICATED is passed on.
    #[error("auth service: {0}")]
    Auth(Status),
    /// A call to the group service failed; the cause is logged. UNAUTHENTICATED is passed on.
    #[error("group service: {0}")]
    Group(Status),
    /// The database failed; the cause is logged, never shown to the client.
    #[error("database error")]
    Db(#[from] sqlx::Error),
    /// A send's batch could not be committed because the database was unreachable or the
    /// connection broke: it may or may not be stored. The client retries with the same client
    /// message id, which stores it at most once and answers with the original if it was.
    #[error("the message may not have been stored; retry it with the same client message id")]
    CommitOutcomeUnknown,
    /// Something that should not happen (a dropped committer); logged, not shown.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Which device ids of a send did not match the conversation's current devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceListMismatch {
    /// Current devices without a wrapped key.
    pub missing: Vec<String>,
    /// Wrapped keys for devices that are not recipients.
    pub extra: Vec<String>,
    /// Devices whose wrapped key names another key fingerprint than their current one.
    pub stale: Vec<String>,
}

impl DeviceListMismatch {
    /// True when nothing differs.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.stale.is_empty()
    }

    /// The wire form: each list cut to its first [`MAX_MISMATCH_IDS_PER_LIST`] ids, with the full
    /// counts.
    fn into_wire(self) -> pb::DeviceListMismatch {
        let count = |ids: &[String]| u32::try_from(ids.len()).unwrap_or(u32::MAX);
        let cut = |mut ids: Vec<String>| {
            ids.truncate(MAX_MISMATCH_IDS_PER_LIST);
            ids
        };
        pb::DeviceListMismatch {
            missing_device_count: count(&self.missing),
            extra_device_count: count(&self.extra),
            stale_device_count: count(&self.stale),
            truncated: [&self.missing, &self.extra, &self.stale]
                .iter()
                .any(|ids| ids.len() > MAX_MISMATCH_IDS_PER_LIST),
            missing_device_ids: cut(self.missing),
            extra_device_ids: cut(self.extra),
            stale_device_ids: cut(self.stale),
        }
    }
}

impl From<common::ids::InvalidUuid> for Error {
    fn from(error: common::ids::InvalidUuid) -> Self {
        Error::InvalidArgument(error.to_string())
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let wire = Wire::of(error);
        let mut details = Vec::new();
        if let Some(reason) = wire.reason {
            details.push(any(
                "google.rpc.ErrorInfo",
                &tonic_types::pb::ErrorInfo {
                    reason: reason.to_owned(),
                    domain: DOMAIN.to_owned(),
                    metadata: Default::default(),
                },
            ));
        }
        if let Some(delay) = wire.retry_after {
            details.push(any(
                "google.rpc.RetryInfo",
                &tonic_types::pb::RetryInfo {
                    retry_delay: prost_types::Duration::try_from(delay).ok(),
                },
            ));
        }
        if let Some(mismatch) = &wire.mismatch {
            details.push(any("chat.v1.DeviceListMismatch", mismatch));
        }
        if details.is_empty() {
            return Status::new(wire.code, wire.message);
        }
        let status = tonic_types::pb::Status {
            code: wire.code as i32,
            message: wire.message.clone(),
            details,
        };
        Status::with_details(wire.code, wire.message, status.encode_to_vec().into())
    }
}

/// A refused send on OpenStream: the same code, message and details SendMessage would return.
pub(crate) fn send_rejected(request_id: String, error: Error) -> pb::SendRejected {
    let wire = Wire::of(error);
    pb::SendRejected {
        request_id,
        code: wire.code as i32,
        message: common::status::bound_message(&wire.message).into_owned(),
        reason: wire.reason.unwrap_or_default().to_owned(),
        device_list_mismatch: wire.mismatch,
        retry_after: wire
            .retry_after
            .and_then(|delay| prost_types::Duration::try_from(delay).ok()),
    }
}

/// What an error looks like on the wire, before it becomes a Status or a SendRejected.
struct Wire {
    code: Code,
    message: String,
    reason: Option<&'static str>,
    retry_after: Option<Duration>,
    mismatch: Option<pb::DeviceListMismatch>,
}

impl Wire {
    fn of(error: Error) -> Self {
        let message = error.to_string();
        let plain = |code| Wire {
            code,
            message: message.clone(),
            reason: None,
            retry_after: None,
            mismatch: None,
        };
        let with_reason = |code, reason| Wire {
            reason: Some(reason),
            ..plain(code)
        };
        match error {
            Error::InvalidArgument(_) => plain(Code::InvalidArgument),
            Error::ConversationNotFound | Error::UserNotFound | Error::MessageNotFound(_) => {
                plain(Code::NotFound)
            }
            Error::ForwardingDenied(_) => plain(Code::PermissionDenied),
            Error::StaleRecipientKey(_) => plain(Code::FailedPrecondition),
            Error::SignatureInvalid(_) => with_reason(Code::PermissionDenied, "SIGNATURE_INVALID"),
            Error::DeviceListMismatch(mismatch) => Wire {
                mismatch: Some(mismatch.into_wire()),
                ..with_reason(Code::FailedPrecondition, "DEVICE_LIST_MISMATCH")
            },
            Error::ClientMessageIdReused => {
                with_reason(Code::AlreadyExists, "CLIENT_MESSAGE_ID_REUSED")
            }
            Error::RateLimited { retry_after } => Wire {
                retry_after: Some(retry_after),
                ..with_reason(Code::ResourceExhausted, "RATE_LIMITED")
            },
            Error::SlowConsumer => with_reason(Code::ResourceExhausted, "SLOW_CONSUMER"),
            Error::TooManyStreams => with_reason(Code::ResourceExhausted, "TOO_MANY_STREAMS"),
            Error::TokenExpired => plain(Code::Unauthenticated),
            Error::Token(ref refused) => plain(refused.code()),
            Error::ShuttingDown | Error::CommitOutcomeUnknown => plain(Code::Unavailable),
            Error::Auth(status) | Error::Group(status)
                if status.code() == Code::Unauthenticated =>
            {
                Wire {
                    message: status.message().to_owned(),
                    ..plain(Code::Unauthenticated)
                }
            }
            Error::Group(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "group call failed");
                Wire {
                    message: "group membership is unavailable; retry shortly".to_owned(),
                    ..plain(Code::Unavailable)
                }
            }
            Error::Auth(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "auth call failed");
                Wire {
                    message: "the device directory is unavailable; retry shortly".to_owned(),
                    ..plain(Code::Unavailable)
                }
            }
            Error::Db(source) => {
                let status = common::db::status_of(&source);
                Wire {
                    message: status.message().to_owned(),
                    ..plain(status.code())
                }
            }
            Error::Internal(cause) => {
                tracing::error!(cause, "internal error");
                Wire {
                    message: "internal error".to_owned(),
                    ..plain(Code::Internal)
                }
            }
        }
    }
}

fn any(type_name: &str, message: &impl prost::Message) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("type.googleapis.com/{type_name}"),
        value: message.encode_to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect()
    }

    #[test]
    fn the_largest_mismatch_fits_the_status_bound_with_full_counts() {
        let mismatch = DeviceListMismatch {
            missing: ids(10_000),
            extra: ids(10_000),
            stale: ids(MAX_MISMATCH_IDS_PER_LIST),
        };
        let first_extra = mismatch.extra[..MAX_MISMATCH_IDS_PER_LIST].to_vec();

        let status = Status::from(Error::DeviceListMismatch(mismatch));
        let rejected = send_rejected(
            "r".to_owned(),
            Error::DeviceListMismatch(DeviceListMismatch {
                extra: ids(10_000),
                ..Default::default()
            }),
        );

        assert!(status.details().len() <= common::status::MAX_DETAILS_BYTES);
        assert!(status.message().len() <= common::status::MAX_MESSAGE_BYTES);
        let details = tonic_types::pb::Status::decode(status.details()).unwrap();
        let detail = details.details.last().unwrap();
        assert!(detail.type_url.ends_with("/chat.v1.DeviceListMismatch"));
        let wire = pb::DeviceListMismatch::decode(detail.value.as_slice()).unwrap();
        assert_eq!(
            (
                wire.missing_device_count,
                wire.extra_device_count,
                wire.stale_device_count
            ),
            (10_000, 10_000, 32)
        );
        assert!(wire.truncated);
        assert_eq!(wire.missing_device_ids.len(), MAX_MISMATCH_IDS_PER_LIST);
        assert_eq!(wire.extra_device_ids, first_extra);
        assert_eq!(wire.stale_device_ids.len(), MAX_MISMATCH_IDS_PER_LIST);
        let rejected = rejected.device_list_mismatch.unwrap();
        assert_eq!(rejected.extra_device_ids.len(), MAX_MISMATCH_IDS_PER_LIST);
        assert_eq!(rejected.extra_device_count, 10_000);
    }

    #[test]
    fn a_short_mismatch_is_whole_and_not_truncated() {
        let mismatch = DeviceListMismatch {
            missing: ids(MAX_MISMATCH_IDS_PER_LIST),
            ..Default::default()
        };

        let wire = mismatch.clone().into_wire();

        assert_eq!(wire.missing_device_ids, mismatch.missing);
        assert_eq!(wire.missing_device_count, 32);
        assert!(!wire.truncated);
    }
}
