//! The one readiness wait, for a service in process ([`super::Server`]) and for a service's binary
//! ([`super::process::Process`]): gRPC health SERVING (what the chart's readiness probe asks),
//! then, with a probe token, until a call with it is no longer UNAVAILABLE (the service has
//! fetched auth's key set and caught up with its revocations).

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    time::{Duration, Instant},
};

use anyhow::bail;
use proto::{
    auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient},
    chat::v1::{self as chat_pb, chat_service_client::ChatServiceClient},
    group::v1::{self as group_pb, group_service_client::GroupServiceClient},
};
use tonic::{Code, Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::with_token;

/// How often readiness is asked again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Which service is waited for: what its health reports, and which call probes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Auth,
    Group,
    Chat,
    /// Its own health (`""`, the whole server); its probe goes through it to auth.
    Gateway,
}

impl Service {
    /// The name its gRPC health reports SERVING for (the chart's readiness probe's `service`).
    pub fn health_name(self) -> &'static str {
        match self {
            Self::Auth => auth::SERVICES[0],
            Self::Group => group::SERVICES[0],
            Self::Chat => chat::SERVICES[0],
            Self::Gateway => "",
        }
    }

    /// A call with `token` that reads nothing of anyone's: UNAVAILABLE while the service
    /// cannot check tokens yet. Auth checks its own tokens from the start: no probe.
    fn probe(self, channel: Channel, token: &str) -> Option<ProbeCall> {
        Some(match self {
            Self::Auth => return None,
            Self::Group => {
                let request = with_token(group_pb::ListMyGroupsRequest::default(), token);
                Box::pin(async move {
                    let mut group = GroupServiceClient::new(channel);
                    group.list_my_groups(request).await.map(drop)
                })
            }
            Self::Chat => {
                let request = with_token(chat_pb::ListConversationsRequest::default(), token);
                Box::pin(async move {
                    let mut chat = ChatServiceClient::new(channel);
                    chat.list_conversations(request).await.map(drop)
                })
            }
            Self::Gateway => {
                let request = with_token(auth_pb::GetCurrentUserRequest {}, token);
                Box::pin(async move {
                    let mut auth = AuthServiceClient::new(channel);
                    auth.get_current_user(request).await.map(drop)
                })
            }
        })
    }
}

type ProbeCall = Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>;

/// Waits until `service` at `addr` reports SERVING, then, with `probe_token`, until a call with
/// it is no longer UNAVAILABLE. `ended` says why waiting is pointless (the service's task or
/// process ended), checked between attempts.
///
/// # Errors
/// When `ended` says so, or the service is not ready `within`.
pub async fn wait_until_ready(
    addr: SocketAddr,
    service: Service,
    probe_token: Option<&str>,
    within: Duration,
    mut ended: impl FnMut() -> Option<String>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let mut check_waiting = waiting(service, deadline, &mut ended);
    // Lazily: a process may not listen yet.
    let channel = Channel::from_shared(format!("http://{addr}"))?.connect_lazy();
    let mut health = HealthClient::new(channel.clone());
    loop {
        let request = HealthCheckRequest {
            service: service.health_name().to_owned(),
        };
        let status = health
            .check(request)
            .await
            .map(|response| response.into_inner().status());
        if matches!(status, Ok(ServingStatus::Serving)) {
            break;
        }
        check_waiting(&|| format!("{service:?} at {addr} SERVING (last: {status:?})"))?;
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    match probe_token {
        Some(token) => probe_until_available(channel, addr, service, token, check_waiting).await,
        None => Ok(()),
    }
}

/// Waits until a call of `service` with `probe_token` at `addr` is no longer UNAVAILABLE:
/// `addr` may be the service, or a proxy in front of it (a gateway: the call then also tells
/// that the gateway reaches it again after it was restarted).
///
/// # Errors
/// When it still answers UNAVAILABLE after `within`.
pub async fn wait_until_available(
    addr: SocketAddr,
    service: Service,
    probe_token: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let mut not_ended = || None;
    let check_waiting = waiting(service, Instant::now() + within, &mut not_ended);
    let channel = Channel::from_shared(format!("http://{addr}"))?.connect_lazy();
    probe_until_available(channel, addr, service, probe_token, check_waiting).await
}

async fn probe_until_available(
    channel: Channel,
    addr: SocketAddr,
    service: Service,
    token: &str,
    mut check_waiting: impl FnMut(&dyn Fn() -> String) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    while let Some(call) = service.probe(channel.clone(), token) {
        match call.await {
            Err(status) if status.code() == Code::Unavailable => {
                check_waiting(&|| format!("{service:?} at {addr} to check tokens ({status:?})"))?;
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            _ => break,
        }
    }
    Ok(())
}

/// Fails once `ended` says why, or the deadline has passed; `what` names what was waited for.
fn waiting(
    service: Service,
    deadline: Instant,
    ended: &mut impl FnMut() -> Option<String>,
) -> impl FnMut(&dyn Fn() -> String) -> anyhow::Result<()> {
    move |what| {
        if let Some(how) = ended() {
            bail!("{service:?} ended ({how}) while waiting for {}", what());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {}", what());
        }
        Ok(())
    }
}

/// The serving status `service` at `addr` reports now on gRPC health (as the kubelet asks it, on
/// a connection of its own, within 1 s), `None` when it does not answer.
pub async fn serving_status(addr: SocketAddr, service: Service) -> Option<ServingStatus> {
    let endpoint = Channel::from_shared(format!("http://{addr}"))
        .ok()?
        .timeout(Duration::from_secs(1));
    let channel = endpoint.connect().await.ok()?;
    let request = HealthCheckRequest {
        service: service.health_name().to_owned(),
    };
    let response = HealthClient::new(channel).check(request).await.ok()?;
    Some(response.into_inner().status())
}
