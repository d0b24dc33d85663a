//! The one error type of the crate, and the exit code of each kind.

use tonic::{Code, Status};

/// What can go wrong. Messages never contain secrets (tokens, passwords, keys, plaintext).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command or its arguments are wrong (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// Not logged in, wrong password or passphrase, or the session ended (exit code 3).
    #[error("{0}")]
    Auth(String),
    /// A user, group, device or conversation does not exist (exit code 4).
    #[error("{0}")]
    NotFound(String),
    /// The server cannot be reached or is unavailable (exit code 5).
    #[error("the server is unavailable: {0}")]
    Unavailable(String),
    /// TLS failed: the server's certificate is not trusted or the handshake failed (exit code
    /// 5). Never followed by a plaintext attempt.
    #[error("TLS: {0}")]
    Tls(String),
    /// The server refused the call for another reason (exit code 1).
    #[error("the server refused: {code:?}: {message}")]
    Refused {
        /// The gRPC status code.
        code: Code,
        /// The server's message.
        message: String,
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

/// A specialised `Result` for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process exit code of this error (see the crate docs). Code 6 is not an error of
    /// the library: `chat` exits with it after showing a message that failed verification.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::Auth(_) => 3,
            Error::NotFound(_) => 4,
            Error::Unavailable(_) | Error::Tls(_) => 5,
            Error::Refused { .. } | Error::Profile(_) | Error::Crypto(_) => 1,
            Error::Untrusted(_) => 7,
        }
    }
}

impl Error {
    /// Whether the same call may succeed later unchanged (the server or the network was
    /// unavailable): a send is then retried with the same envelope
    /// ([`crate::Session::send_prepared`]), which the server stores at most once.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }

    /// The gRPC status code this error came from, or stands for: UNAVAILABLE for a server or
    /// stream that could not be reached or broke; `None` for local errors.
    #[must_use]
    pub fn status_code(&self) -> Option<Code> {
        match self {
            Error::Unavailable(_) | Error::Tls(_) => Some(Code::Unavailable),
            Error::Auth(_) => Some(Code::Unauthenticated),
            Error::NotFound(_) => Some(Code::NotFound),
            Error::Refused { code, .. } => Some(*code),
            Error::Usage(_) | Error::Profile(_) | Error::Crypto(_) | Error::Untrusted(_) => None,
        }
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            Code::Unauthenticated => Error::Auth(if message.is_empty() {
                "not authenticated".to_owned()
            } else {
                message
            }),
            Code::NotFound => Error::NotFound(message),
            Code::InvalidArgument => Error::Usage(message),
            Code::Unavailable if is_tls_failure(&message) => Error::Tls(explain_tls(message)),
            Code::Unavailable | Code::DeadlineExceeded => Error::Unavailable(message),
            Code::Internal | Code::Unknown if is_transport_failure(&message) => {
                Error::Unavailable(message)
            }
            code => Error::Refused { code, message },
        }
    }
}

impl From<tonic::transport::Error> for Error {
    fn from(error: tonic::transport::Error) -> Self {
        Error::Unavailable(crate::server::error_chain(&error))
    }
}

/// Whether a status was made up by tonic for a broken connection or stream, or for a proxy's
/// non-gRPC answer, rather than sent by a gRPC server: an HTTP/2 stream reset (a proxy in front
/// losing its upstream, the gateway killed mid-call), or an HTML error page of nginx with 502,
/// 503 or 504 (which the gRPC spec maps to UNAVAILABLE, but which tonic reports as INTERNAL when
/// the page arrives with a body it tries to decode). The call may succeed when tried again, as
/// for UNAVAILABLE; a server's own INTERNAL never reads like this.
fn is_transport_failure(message: &str) -> bool {
    let reset = [
        "h2 protocol error",
        "transport error",
        "error reading a body from connection",
    ]
    .iter()
    .any(|marker| message.starts_with(marker));
    let proxy_page = ["502", "503", "504"]
        .iter()
        .any(|status| message.contains(&format!("while receiving response with status: {status}")));
    reset || proxy_page
}

/// Whether a connection failure came from TLS. tonic reports a failed connection as
/// UNAVAILABLE carrying only the cause's text, so the text is all there is to go on: rustls'
/// messages and tonic's own TLS ones.
pub(crate) fn is_tls_failure(message: &str) -> bool {
    [
        "invalid peer certificate",
        "received corrupt message",
        "peer is incompatible",
        "HTTP/2 was not negotiated",
        "TLS handshake",
        "received fatal alert",
    ]
    .iter()
    .any(|marker| message.contains(marker))
}

fn explain_tls(message: String) -> String {
    if message.contains("invalid peer certificate") {
        format!(
            "the server's certificate is not trusted ({message}); for a server with a private \
             CA, give its certificate with --ca-file (or CHAT_CA_FILE)"
        )
    } else {
        format!("the TLS handshake failed ({message}); is the server speaking TLS?")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_kind_has_its_own_exit_code() {
        let code = |status: Status| Error::from(status).exit_code();

        assert_eq!(code(Status::unauthenticated("x")), 3);
        assert_eq!(code(Status::not_found("x")), 4);
        assert_eq!(code(Status::unavailable("x")), 5);
        assert_eq!(code(Status::invalid_argument("x")), 2);
        assert_eq!(code(Status::internal("x")), 1);
        assert_eq!(
            code(Status::internal(
                "h2 protocol error: stream error received: unexpected internal error encountered"
            )),
            5
        );
        assert_eq!(
            code(Status::internal(
                "protocol error: received message with invalid compression flag: 60 (valid flags \
                 are 0 and 1) while receiving response with status: 502 Bad Gateway"
            )),
            5
        );
        assert_eq!(
            code(Status::unavailable(
                "invalid peer certificate: UnknownIssuer"
            )),
            5
        );
    }
}
