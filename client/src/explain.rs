//! The one place where a gRPC status becomes what the user reads: a sentence, and the kind of
//! [`Error`] (hence the exit code). Every code has a sentence; the server's own message is kept
//! where it is the information (which field is invalid, what was not found), the code's name
//! never is ([`Error::raw_status`] has it).

use std::time::Duration;

use tonic::Code;

use crate::{Error, RawStatus};

/// What a call was about, for the sentences that depend on it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Context<'a> {
    /// The server's URL, named when it cannot be reached.
    pub server: Option<&'a str>,
    /// The call is about this device itself (GetCurrentUser): NOT_FOUND means it was revoked.
    pub own_device: bool,
}

/// The sentence of a revoked device.
const REVOKED: &str = "this device was revoked; log in again (chat login <username>), which sets up this \
     profile as a new device";

/// The one mapping from a status to the sentence the user reads and the kind of error (hence
/// the exit code, see the crate docs). Every code has a sentence; the server's own message is
/// kept where it is the information (which field is invalid, what was not found), and the
/// code's name never is ([`Error::raw_status`] has it).
pub(crate) fn explain(raw: RawStatus, context: Context<'_>) -> Error {
    let sentence = sentence(&raw, context);
    let kind = kind(&raw, context);
    let code = raw.code;
    let raw = Some(Box::new(raw));
    match kind {
        Kind::Usage => Error::Usage(sentence, raw),
        Kind::Auth => Error::Auth(sentence, raw),
        Kind::NotFound => Error::NotFound(sentence, raw),
        Kind::Unavailable => Error::Unavailable(sentence, raw),
        Kind::Tls => Error::Tls(sentence, raw),
        Kind::Refused => Error::Refused {
            code,
            message: sentence,
            raw,
        },
    }
}

enum Kind {
    Usage,
    Auth,
    NotFound,
    Unavailable,
    Tls,
    Refused,
}

fn kind(raw: &RawStatus, context: Context<'_>) -> Kind {
    let reason = raw.reason.as_deref().unwrap_or_default();
    match raw.code {
        Code::InvalidArgument | Code::OutOfRange => Kind::Usage,
        Code::Unauthenticated => Kind::Auth,
        Code::NotFound if context.own_device => Kind::Auth,
        Code::NotFound => Kind::NotFound,
        Code::PermissionDenied if is_revoked_sender(raw) => Kind::Auth,
        Code::ResourceExhausted if reason == "LOGIN_THROTTLED" => Kind::Auth,
        Code::ResourceExhausted if raw.retry_after.is_some() || reason == "SLOW_CONSUMER" => {
            Kind::Unavailable
        }
        Code::Unavailable if is_tls_failure(&raw.message) => Kind::Tls,
        // CANCELLED is what the client's own transport says of a call whose connection closed
        // before an answer (this program cancels no call): its outcome is unknown, as after a
        // deadline, and a send is retried with the same client message id, never dropped.
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Kind::Unavailable,
        Code::Internal | Code::Unknown if is_transport_failure(&raw.message) => Kind::Unavailable,
        _ => Kind::Refused,
    }
}

fn sentence(raw: &RawStatus, context: Context<'_>) -> String {
    let message = raw.message.as_str();
    let reason = raw.reason.as_deref().unwrap_or_default();
    let at = context
        .server
        .map_or_else(String::new, |server| format!(" at {server}"));
    let wait = raw
        .retry_after
        .map_or_else(|| "a while".to_owned(), wait_text);
    let operator = "try again later, or tell the server's operator";
    match raw.code {
        Code::InvalidArgument | Code::OutOfRange => {
            format!("the server refused the request as invalid: {message}")
        }
        Code::Unauthenticated => match reason {
            "INVALID_CREDENTIALS" => "wrong username or password".to_owned(),
            "REFRESH_TOKEN_INVALID" => "the session ended (logged out, logged out everywhere, or \
                                        this device was revoked): log in again (chat login \
                                        <username>)"
                .to_owned(),
            // Usually renewed on the spot (a refresh, then the call again): seen when that
            // failed too, or as the reason a live stream reconnects.
            _ if message.is_empty() => "the server refused this session's access token; if it \
                                        happens again, log in again (chat login <username>)"
                .to_owned(),
            _ => format!(
                "the server refused this session's access token ({message}); if it happens \
                 again, log in again (chat login <username>)"
            ),
        },
        Code::NotFound if context.own_device => REVOKED.to_owned(),
        Code::NotFound if message.is_empty() => "not found".to_owned(),
        Code::NotFound => message.to_owned(),
        Code::PermissionDenied if is_revoked_sender(raw) => REVOKED.to_owned(),
        Code::PermissionDenied if reason == "SIGNATURE_INVALID" => format!(
            "the server refused this device's signature ({message}); if it happens again, log \
             in again"
        ),
        Code::PermissionDenied => format!("not allowed: {message}"),
        Code::AlreadyExists if message.contains("username") => {
            "that username is already taken: choose another one".to_owned()
        }
        Code::AlreadyExists => format!("it already exists: {message}"),
        Code::ResourceExhausted => match reason {
            "LOGIN_THROTTLED" => {
                format!("too many failed logins: wait {wait} before trying again")
            }
            "SLOW_CONSUMER" => "the server dropped the stream because this client read too \
                                slowly; reconnecting"
                .to_owned(),
            "TOO_MANY_STREAMS" => "this device has too many conversations open at once (chat \
                                   chat): close one and try again"
                .to_owned(),
            _ if raw.retry_after.is_some() => {
                format!("too many requests: the server asks to wait {wait} before trying again")
            }
            _ => format!("the request is too large for the server: {message}"),
        },
        Code::FailedPrecondition => match reason {
            "TOO_MANY_DEVICES" => "this account has the most active devices it may have: \
                                   revoke one (chat devices list, then chat devices revoke \
                                   <id> on another device) and log in again"
                .to_owned(),
            "DEVICE_LIST_MISMATCH" => "the recipients' devices changed while sending: send \
                                       again"
                .to_owned(),
            _ => format!("not possible now: {message}"),
        },
        Code::Unavailable if is_tls_failure(message) => explain_tls(message),
        Code::Unavailable => match connect_failure(message) {
            Some(cause) => format!(
                "cannot reach the server{at} ({cause}): is it running, and is the address \
                 right?"
            ),
            None if message.is_empty() => {
                format!("the server{at} is unavailable; try again shortly")
            }
            None => format!("the server{at} is unavailable ({message}); try again shortly"),
        },
        Code::DeadlineExceeded => format!("the server{at} took too long to answer; try again"),
        Code::Cancelled => {
            format!("the connection to the server{at} closed before it answered; try again")
        }
        Code::Internal | Code::Unknown if is_transport_failure(message) => {
            format!("the connection to the server{at} broke during the call; try again")
        }
        Code::Internal | Code::Unknown => format!("the server failed: {operator}"),
        Code::Aborted => "the server gave up because of a conflicting change: try again".to_owned(),
        Code::Unimplemented => format!(
            "the server{at} does not offer this call: is it the chat gateway, and of a matching \
             version?"
        ),
        Code::DataLoss => format!("the server reports lost data: {operator}"),
        Code::Ok => format!("the server answered without a result: {operator}"),
    }
}

/// SendMessage's answer to a device without published keys: the caller's own device, which
/// only revocation removes.
fn is_revoked_sender(raw: &RawStatus) -> bool {
    raw.code == Code::PermissionDenied
        && raw
            .message
            .contains("the sending device has no published keys")
}

/// A delay as people say it: "3 seconds", "2 minutes", "1 hour".
fn wait_text(delay: Duration) -> String {
    let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    let (n, unit) = if seconds < 120 {
        (seconds.max(1), "second")
    } else if seconds < 2 * 3600 {
        (seconds.div_ceil(60), "minute")
    } else {
        (seconds.div_ceil(3600), "hour")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// The cause of a failed connection, in words, from tonic's text of it; `None` when the
/// connection was made (the server itself answered UNAVAILABLE).
fn connect_failure(message: &str) -> Option<&'static str> {
    let lower = message.to_ascii_lowercase();
    let causes = [
        ("connection refused", "connection refused"),
        ("dns error", "its name does not resolve"),
        ("failed to lookup address", "its name does not resolve"),
        ("name or service not known", "its name does not resolve"),
        ("no route to host", "no route to the host"),
        ("network is unreachable", "the network is unreachable"),
        ("timed out", "the connection timed out"),
        ("connection reset", "the connection was reset"),
        ("tcp connect error", "the connection failed"),
        ("error trying to connect", "the connection failed"),
    ];
    causes
        .iter()
        .find(|(marker, _)| lower.contains(marker))
        .map(|(_, cause)| *cause)
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

fn explain_tls(message: &str) -> String {
    if message.contains("invalid peer certificate") {
        format!(
            "the server's certificate is not trusted ({message}); for a server with a private \
             CA, give its certificate with --ca-file (or CHAT_CA_FILE)"
        )
    } else {
        format!("the TLS handshake failed ({message}); is the server speaking TLS?")
    }
}

/// The canonical name of a code, as the gRPC spec writes it.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use tonic::Status;
    use tonic_types::StatusExt;

    use super::*;

    fn with_details(code: Code, reason: &str, retry_after: Option<Duration>) -> Status {
        let mut details = tonic_types::ErrorDetails::with_error_info(reason, "auth.v1", []);
        if let Some(delay) = retry_after {
            details.set_retry_info(Some(delay));
        }
        Status::with_error_details(code, "raw message", details)
    }

    #[test]
    fn each_status_kind_has_its_own_exit_code() {
        let code = |status: Status| Error::from(status).exit_code();

        assert_eq!(code(Status::unauthenticated("x")), 3);
        assert_eq!(code(Status::not_found("x")), 4);
        assert_eq!(code(Status::unavailable("x")), 5);
        assert_eq!(code(Status::invalid_argument("x")), 2);
        assert_eq!(code(Status::internal("x")), 1);
        assert_eq!(code(Status::already_exists("username is already taken")), 8);
        assert_eq!(code(Status::permission_denied("not an admin")), 8);
        assert_eq!(
            code(with_details(
                Code::ResourceExhausted,
                "LOGIN_THROTTLED",
                Some(Duration::from_secs(4))
            )),
            3
        );
        assert_eq!(
            code(with_details(
                Code::ResourceExhausted,
                "RATE_LIMITED",
                Some(Duration::from_millis(300))
            )),
            5
        );
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
        let cancelled = Error::from(Status::cancelled("operation was canceled"));
        assert!(cancelled.is_retryable(), "{cancelled}");
        assert_eq!(cancelled.exit_code(), 5);
    }

    #[test]
    fn every_code_reads_as_a_sentence_without_its_name() {
        for number in 1..=16 {
            let code = Code::from(number);
            let error = Error::from(Status::new(code, "raw message"));

            let text = error.to_string();

            assert!(!text.contains(code_name(code)), "{code:?}: {text}");
            assert!(!text.contains(&format!("{code:?}")), "{code:?}: {text}");
            assert!(text.len() > 10, "{code:?}: {text}");
            assert_eq!(error.raw_status().unwrap().code, code);
        }
    }

    #[test]
    fn a_wait_reads_in_the_unit_people_use() {
        assert_eq!(wait_text(Duration::from_millis(300)), "1 second");
        assert_eq!(wait_text(Duration::from_secs(8)), "8 seconds");
        assert_eq!(wait_text(Duration::from_secs(900)), "15 minutes");
        assert_eq!(wait_text(Duration::from_secs(3600)), "60 minutes");
        assert_eq!(wait_text(Duration::from_secs(3 * 3600)), "3 hours");
    }

    #[test]
    fn an_unreachable_server_is_named() {
        let raw = RawStatus::of(&Status::unavailable(
            "tcp connect error: Connection refused (os error 111)",
        ));
        let context = Context {
            server: Some("http://127.0.0.1:9"),
            own_device: false,
        };

        let error = explain(raw, context);

        assert_eq!(
            error.to_string(),
            "cannot reach the server at http://127.0.0.1:9 (connection refused): is it running, \
             and is the address right?"
        );
    }
}
