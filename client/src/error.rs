//! The one error type of the crate and the exit code of each kind. A gRPC status becomes an
//! error in one place (`explain.rs`); the status itself is kept ([`RawStatus`]) for `--verbose`
//! and `--json`, never shown otherwise.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::explain::{Context, code_name, explain};

/// What can go wrong. Messages never contain secrets (tokens, passwords, keys, plaintext).
/// Errors that come from a server's status carry it as a [`RawStatus`] ([`Error::raw_status`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command or its arguments are wrong, or the server found the request invalid (exit
    /// code 2).
    #[error("{0}")]
    Usage(String, Option<Box<RawStatus>>),
    /// Not logged in, wrong password or passphrase, the session ended, this device was revoked,
    /// or too many failed logins (exit code 3).
    #[error("{0}")]
    Auth(String, Option<Box<RawStatus>>),
    /// A user, group, device or conversation does not exist (exit code 4).
    #[error("{0}")]
    NotFound(String, Option<Box<RawStatus>>),
    /// The server cannot be reached or is unavailable, or a rate limit says to wait (exit code
    /// 5).
    #[error("{0}")]
    Unavailable(String, Option<Box<RawStatus>>),
    /// TLS failed: the server's certificate is not trusted or the handshake failed (exit code
    /// 5). Never followed by a plaintext attempt.
    #[error("TLS: {0}")]
    Tls(String, Option<Box<RawStatus>>),
    /// The server refused the call: exit code 8 when it will not do it as asked (a name taken,
    /// not allowed, a limit such as the number of devices), else 1.
    #[error("{message}")]
    Refused {
        /// The gRPC status code.
        code: Code,
        /// What happened, as a sentence.
        message: String,
        /// The status as the server sent it.
        raw: Option<Box<RawStatus>>,
    },
    /// The profile directory could not be read or written (exit code 1).
    #[error("profile: {0}")]
    Profile(String),
    /// Local cryptography failed (exit code 1).
    #[error("cryptography: {0}")]
    Crypto(String),
    /// Nothing was sealed: a participant's keys changed and the user has not accepted them yet
    /// (`chat trust`, `chat verify`) (exit code 7).
    #[error("{0}")]
    Untrusted(String),
}

/// A gRPC status as the server (or tonic, for a failed connection) gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawStatus {
    /// The status code.
    pub code: Code,
    /// The status message.
    pub message: String,
    /// The `google.rpc.ErrorInfo` reason, when there is one (e.g. `LOGIN_THROTTLED`).
    pub reason: Option<String>,
    /// The `google.rpc.RetryInfo` delay, when there is one.
    pub retry_after: Option<Duration>,
}

/// A specialised `Result` for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthands for local errors (no server status).
    #[must_use]
    pub fn usage(message: impl Into<String>) -> Error {
        Error::Usage(message.into(), None)
    }

    /// An authentication error without a server status.
    #[must_use]
    pub fn auth(message: impl Into<String>) -> Error {
        Error::Auth(message.into(), None)
    }

    /// A not-found error without a server status.
    #[must_use]
    pub fn not_found(message: impl Into<String>) -> Error {
        Error::NotFound(message.into(), None)
    }

    /// An unavailable error without a server status.
    #[must_use]
    pub fn unavailable(message: impl Into<String>) -> Error {
        Error::Unavailable(message.into(), None)
    }

    /// The process exit code of this error (see the crate docs). Code 6 is not an error of
    /// the library: `chat` exits with it after showing a message that failed verification.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(..) => 2,
            Error::Auth(..) => 3,
            Error::NotFound(..) => 4,
            Error::Unavailable(..) | Error::Tls(..) => 5,
            Error::Untrusted(_) => 7,
            Error::Refused {
                code: Code::AlreadyExists | Code::PermissionDenied | Code::FailedPrecondition,
                ..
            } => 8,
            Error::Refused { .. } | Error::Profile(_) | Error::Crypto(_) => 1,
        }
    }

    /// Whether the same call may succeed later unchanged (the server or the network was
    /// unavailable): a send is then retried with the same envelope
    /// ([`crate::Session::send_prepared`]), which the server stores at most once. A rate limit
    /// is not: the caller waits as told.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(..))
            && self
                .raw_status()
                .is_none_or(|raw| raw.code != Code::ResourceExhausted)
    }

    /// The gRPC status code this error came from, or stands for: UNAVAILABLE for a server or
    /// stream that could not be reached or broke (DEADLINE_EXCEEDED and tonic's INTERNAL for a
    /// reset stream included); `None` for local errors.
    #[must_use]
    pub fn status_code(&self) -> Option<Code> {
        let raw = self.raw_status().map(|raw| raw.code);
        match self {
            Error::Unavailable(..) | Error::Tls(..) => match raw {
                Some(Code::ResourceExhausted) => Some(Code::ResourceExhausted),
                _ => Some(Code::Unavailable),
            },
            _ if raw.is_some() => raw,
            Error::Auth(..) => Some(Code::Unauthenticated),
            Error::NotFound(..) => Some(Code::NotFound),
            Error::Refused { code, .. } => Some(*code),
            Error::Usage(..) | Error::Profile(_) | Error::Crypto(_) | Error::Untrusted(_) => None,
        }
    }

    /// The server's status behind this error, when there was one: for `--verbose` and
    /// `--json`, not for the sentence.
    #[must_use]
    pub fn raw_status(&self) -> Option<&RawStatus> {
        match self {
            Error::Usage(_, raw)
            | Error::Auth(_, raw)
            | Error::NotFound(_, raw)
            | Error::Unavailable(_, raw)
            | Error::Tls(_, raw)
            | Error::Refused { raw, .. } => raw.as_deref(),
            Error::Profile(_) | Error::Crypto(_) | Error::Untrusted(_) => None,
        }
    }

    /// The same error, explained again for `context` (from its status, when it has one).
    pub(crate) fn in_context(self, context: Context<'_>) -> Error {
        match self.raw_status() {
            Some(raw) => explain(raw.clone(), context),
            None => self,
        }
    }
}

impl RawStatus {
    /// The status of `status`, with the reason and delay of its details.
    #[must_use]
    pub fn of(status: &Status) -> RawStatus {
        // tonic's own statuses for a failed connection say only "tcp connect error": the cause
        // ("Connection refused") is in their source.
        let message = match std::error::Error::source(status) {
            Some(source) => {
                let chain = crate::server::error_chain(source);
                if chain.is_empty() || status.message().contains(&chain) {
                    status.message().to_owned()
                } else if chain.contains(status.message()) {
                    chain
                } else {
                    format!("{}: {chain}", status.message())
                }
            }
            None => status.message().to_owned(),
        };
        RawStatus {
            code: status.code(),
            message,
            reason: status.get_details_error_info().map(|info| info.reason),
            retry_after: status
                .get_details_retry_info()
                .and_then(|info| info.retry_delay),
        }
    }

    /// As JSON: `{"code": "RESOURCE_EXHAUSTED", "message": .., "reason": .., "retry_after_ms": ..}`.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "code": code_name(self.code),
            "message": self.message,
            "reason": self.reason,
            "retry_after_ms": self.retry_after.map(|delay| u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
        })
    }
}

impl std::fmt::Display for RawStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", code_name(self.code), self.message)?;
        if let Some(reason) = &self.reason {
            write!(f, " (reason {reason})")?;
        }
        if let Some(delay) = self.retry_after {
            write!(f, " (retry after {delay:?})")?;
        }
        Ok(())
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        explain(RawStatus::of(&status), Context::default())
    }
}

impl From<tonic::transport::Error> for Error {
    fn from(error: tonic::transport::Error) -> Self {
        let raw = RawStatus {
            code: Code::Unavailable,
            message: crate::server::error_chain(&error),
            reason: None,
            retry_after: None,
        };
        explain(raw, Context::default())
    }
}

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Self {
        Error::Profile(error.to_string())
    }
}

impl From<e2ee::Error> for Error {
    fn from(error: e2ee::Error) -> Self {
        Error::Crypto(error.name().to_owned())
    }
}
