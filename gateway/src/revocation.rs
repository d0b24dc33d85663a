//! Revocation at the gateway: the validator follows auth's `WatchRevocations` over the gateway's
//! own connections to auth (with the deployment's service credential), so a revoked session's or
//! device's token is refused here before any upstream call, and [`RevocableBody`] ends a server
//! stream (Subscribe, OpenStream) of a revoked session or device with UNAUTHENTICATED trailers,
//! whatever the upstream does.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::http::HeaderMap;
use bytes::Bytes;
use common::service_credential::ServiceCredential;
use http_body::{Body, Frame, SizeHint};
use tonic::Status;

use crate::{AuthKeySource, Config, upstream::UpstreamPool};

/// The gateway's validator: keys and revocations from auth over `auth`.
///
/// # Errors
/// When the service secret cannot be read or is invalid.
pub(crate) fn start_validator(
    config: &Config,
    auth: &UpstreamPool,
) -> anyhow::Result<token::RemoteValidator> {
    let credential = ServiceCredential::new(&config.service_secret.read()?)?;
    let revocations = token::AuthServiceRevocationSource::new(
        auth.clone(),
        Arc::new(move |request| credential.attach(request)),
    );
    Ok(token::RemoteValidator::start(
        token::ValidationSettings::new(config.token_issuer.clone(), config.token_audience.clone()),
        Arc::new(AuthKeySource(auth.clone())),
        Arc::new(revocations),
        config.revocation_max_staleness,
    ))
}

pin_project_lite::pin_project! {
    /// A server stream's response body that ends with the refusal's status in trailers when the
    /// caller's session or device is revoked, or revocations can no longer be checked
    /// (`token::Revocations::ended`). Dropping the inner body then cancels the upstream call.
    pub(crate) struct RevocableBody<B> {
        #[pin]
        inner: Option<B>,
        revoked: Pin<Box<dyn Future<Output = token::TokenError> + Send>>,
    }
}

impl<B> RevocableBody<B> {
    /// `inner`, ended when `revoked` resolves.
    pub(crate) fn new(
        inner: B,
        revoked: impl Future<Output = token::TokenError> + Send + 'static,
    ) -> Self {
        Self {
            inner: Some(inner),
            revoked: Box::pin(revoked),
        }
    }
}

impl<B> Body for RevocableBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(frame) = inner.poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let Poll::Ready(refused) = this.revoked.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        this.inner.set(None);
        let mut trailers = HeaderMap::new();
        Status::from(refused).add_header(&mut trailers).ok();
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
