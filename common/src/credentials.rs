//! The caller's own credentials, forwarded on calls made on its behalf: a call between services
//! for a user carries that user's token, so the service called checks it like any other call.

use tonic::metadata::AsciiMetadataValue;

/// The `authorization` metadata a call came with, forwarded as it came (or nothing, when it
/// came without). Its `Debug` never shows the token (it may be logged with a request).
#[derive(Clone)]
pub struct Credentials(Option<AsciiMetadataValue>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.0.is_some() { "present" } else { "none" };
        f.debug_tuple("Credentials").field(&shown).finish()
    }
}

impl Credentials {
    /// The credentials `request` came with.
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        Self(request.metadata().get("authorization").cloned())
    }

    /// A request carrying these credentials, and the current trace context when traces are
    /// exported (`crate::telemetry::propagation`).
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        crate::telemetry::propagation::inject_current_into_metadata(request.metadata_mut());
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_carries_the_callers_authorization_and_nothing_when_it_had_none() {
        let mut incoming = tonic::Request::new(());
        incoming
            .metadata_mut()
            .insert("authorization", "Bearer t".parse().unwrap());

        let forwarded = Credentials::of(&incoming).request(1);
        let anonymous = Credentials::of(&tonic::Request::new(())).request(2);

        assert_eq!(
            forwarded.metadata().get("authorization").unwrap(),
            "Bearer t"
        );
        assert!(anonymous.metadata().get("authorization").is_none());
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let mut incoming = tonic::Request::new(());
        incoming
            .metadata_mut()
            .insert("authorization", "Bearer secret-token".parse().unwrap());

        let shown = format!("{:?}", Credentials::of(&incoming));

        assert!(!shown.contains("secret-token"), "{shown}");
        assert_eq!(shown, "Credentials(\"present\")");
    }
}
