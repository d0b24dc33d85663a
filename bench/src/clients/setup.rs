//! Users, devices, groups, direct conversations and streams, made the way clients make them:
//! users register, log in and upload their keys at auth (directly, as in `chat-send`); groups
//! are created and filled, conversations opened and streams subscribed through the gateway.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use proto::{
    auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient},
    chat::v1::{self as chat_pb, chat_service_client::ChatServiceClient},
    group::v1::{self as group_pb, group_service_client::GroupServiceClient},
};
use tokio::task::JoinSet;
use tonic::{Code, Status, transport::Channel};

use super::{
    seal::Route,
    tracker::{Tracker, spawn_reader},
};
use crate::server::RunningServer;

/// Users registered at once.
const SETUP_CONCURRENCY: usize = 16;
/// Streams subscribed at once.
const SUBSCRIBE_CONCURRENCY: usize = 32;
/// At most this many users per CreateGroup or AddMembers call (group's default limit).
const USERS_PER_ADD: usize = 100;
/// How long setup calls are retried while a service still fetches auth's token keys.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a new stream may take to replay and say CaughtUp.
const CAUGHT_UP_TIMEOUT: Duration = Duration::from_secs(30);
const PASSWORD: &str = "chat bench password";

/// A logged-in user's one device, with its keys uploaded.
#[derive(Clone)]
pub(crate) struct Identity {
    pub user_id: String,
    pub device_id: String,
    pub token: String,
    signing: ed25519_dalek::SigningKey,
}

/// A device that sends, with what it needs to seal.
pub(crate) struct SendingDevice {
    pub identity: Identity,
    pub keys: e2ee::DeviceKeys,
}

/// The RSA key every device shares (the server never decrypts; generating one per device would
/// take longer than the run).
pub(crate) struct SharedRsa {
    pkcs8: Vec<u8>,
    pub spki: Vec<u8>,
}

impl SharedRsa {
    /// A new RSA key of `bits`.
    pub(crate) fn generate(bits: usize) -> anyhow::Result<Self> {
        let keys = e2ee::DeviceKeys::generate(bits)?;
        Ok(Self {
            pkcs8: keys.encryption_pkcs8_der()?.to_vec(),
            spki: keys.public_keys().encryption_spki.clone(),
        })
    }
}

impl Identity {
    /// This device's keys, to send with.
    pub(crate) fn sending(&self, rsa: &SharedRsa) -> anyhow::Result<SendingDevice> {
        let signing_pkcs8 = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&self.signing)?;
        Ok(SendingDevice {
            identity: self.clone(),
            keys: e2ee::DeviceKeys::from_pkcs8_der(&rsa.pkcs8, signing_pkcs8.as_bytes())?,
        })
    }

    /// This device as a recipient.
    pub(crate) fn recipient(&self, rsa: &SharedRsa) -> e2ee::RecipientDevice {
        e2ee::RecipientDevice {
            device_id: self.device_id.clone(),
            encryption_spki: rsa.spki.clone(),
        }
    }
}

/// Registers `count` users named `<prefix>-<n>`, each with one logged-in device whose keys are
/// uploaded, `SETUP_CONCURRENCY` at a time.
pub(crate) async fn register_users(
    auth: &RunningServer,
    rsa: &Arc<SharedRsa>,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<Identity>> {
    let channel = auth.connect().await?;
    in_parallel(count, SETUP_CONCURRENCY, |index| {
        let auth = AuthServiceClient::new(channel.clone());
        let (rsa, username) = (rsa.clone(), format!("{prefix}-{index}"));
        async move { register_user(auth, &rsa, &username).await }
    })
    .await
}

async fn register_user(
    mut auth: AuthServiceClient<Channel>,
    rsa: &SharedRsa,
    username: &str,
) -> anyhow::Result<Identity> {
    auth.register(auth_pb::RegisterRequest {
        username: username.to_owned(),
        password: PASSWORD.to_owned(),
        display_name: String::new(),
    })
    .await
    .context("Register")?;
    let login = auth
        .login(auth_pb::LoginRequest {
            username: username.to_owned(),
            password: PASSWORD.to_owned(),
            ..Default::default()
        })
        .await
        .context("Login")?
        .into_inner();
    let token = login.tokens.context("login without tokens")?.access_token;
    let signing = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    auth.upload_device_keys(with_token(
        auth_pb::UploadDeviceKeysRequest {
            keys: Some(auth_pb::DeviceKeys {
                encryption_public_key: rsa.spki.clone(),
                signing_public_key: signing.verifying_key().to_bytes().to_vec(),
            }),
        },
        &token,
    ))
    .await
    .context("UploadDeviceKeys")?;
    Ok(Identity {
        user_id: login.user.context("login without user")?.user_id,
        device_id: login.device.context("login without device")?.device_id,
        token,
        signing,
    })
}

/// Creates a group owned by `owner` with every one of `members`, through the gateway: one
/// CreateGroup and AddMembers calls of at most `USERS_PER_ADD` users. Returns its id (also
/// its conversation's).
pub(crate) async fn create_group(
    gateway: &Channel,
    owner: &Identity,
    members: &[Identity],
    name: &str,
) -> anyhow::Result<String> {
    let mut groups = GroupServiceClient::new(gateway.clone());
    let user_ids: Vec<String> = members.iter().map(|m| m.user_id.clone()).collect();
    let first = user_ids.len().min(USERS_PER_ADD - 1);
    let request = group_pb::CreateGroupRequest {
        name: name.to_owned(),
        member_user_ids: user_ids[..first].to_vec(),
    };
    let group = when_ready(|| {
        let mut groups = groups.clone();
        let request = with_token(request.clone(), &owner.token);
        async move { groups.create_group(request).await }
    })
    .await
    .context("CreateGroup")?
    .into_inner()
    .group
    .context("CreateGroup answered no group")?;
    for chunk in user_ids[first..].chunks(USERS_PER_ADD) {
        let request = group_pb::AddMembersRequest {
            group_id: group.group_id.clone(),
            user_ids: chunk.to_vec(),
            role: group_pb::Role::Member.into(),
        };
        groups
            .add_members(with_token(request, &owner.token))
            .await
            .context("AddMembers")?;
    }
    Ok(group.group_id)
}

/// Opens the direct conversation of `sender` and `peer` through the gateway.
pub(crate) async fn open_direct(
    gateway: &Channel,
    sender: &Identity,
    peer: &Identity,
) -> anyhow::Result<String> {
    let chat = ChatServiceClient::new(gateway.clone());
    let request = chat_pb::OpenDirectConversationRequest {
        peer_user_id: peer.user_id.clone(),
    };
    let response = when_ready(|| {
        let mut chat = chat.clone();
        let request = with_token(request.clone(), &sender.token);
        async move { chat.open_direct_conversation(request).await }
    })
    .await
    .context("OpenDirectConversation")?;
    Ok(response
        .into_inner()
        .conversation
        .context("OpenDirectConversation answered no conversation")?
        .conversation_id)
}

/// Opens a direct conversation for each `(senders[i], peers[i])` through the gateway; returns
/// each sender's route to its peer's one device.
pub(crate) async fn direct_routes(
    gateway: &Channel,
    rsa: &SharedRsa,
    senders: &[Identity],
    peers: &[Identity],
) -> anyhow::Result<Vec<Arc<Route>>> {
    let mut routes = Vec::with_capacity(senders.len());
    for (sender, peer) in senders.iter().zip(peers) {
        routes.push(Arc::new(Route {
            conversation_id: open_direct(gateway, sender, peer).await?,
            sender: Arc::new(sender.sending(rsa)?),
            recipients: Arc::new(vec![peer.recipient(rsa)]),
        }));
    }
    Ok(routes)
}

/// Subscribes every one of `devices` through the gateway, `per_connection` streams on each new
/// connection, waits for each stream's CaughtUp, and hands it to a reader task in `readers`.
pub(crate) async fn subscribe_all(
    gateway: &RunningServer,
    devices: &[Identity],
    per_connection: usize,
    tracker: &Arc<Tracker>,
    readers: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    let mut channels = Vec::new();
    for _ in 0..devices.len().div_ceil(per_connection) {
        channels.push(gateway.connect().await?);
    }
    let tokens: Arc<Vec<String>> = Arc::new(devices.iter().map(|d| d.token.clone()).collect());
    let streams = in_parallel(devices.len(), SUBSCRIBE_CONCURRENCY, |index| {
        let chat = ChatServiceClient::new(channels[index / per_connection].clone());
        let tokens = tokens.clone();
        async move { subscribe(chat, &tokens[index]).await }
    })
    .await?;
    for stream in streams {
        spawn_reader(readers, tracker, stream);
    }
    Ok(())
}

/// Subscribes with `token` (no cursor) and waits for the stream's CaughtUp.
///
/// # Errors
/// When the call fails, or the stream ends or says nothing for `CAUGHT_UP_TIMEOUT` first.
pub(crate) async fn subscribe(
    chat: ChatServiceClient<Channel>,
    token: &str,
) -> anyhow::Result<tonic::Streaming<chat_pb::SubscribeResponse>> {
    let mut stream = when_ready(|| {
        let mut chat = chat.clone();
        let request = with_token(chat_pb::SubscribeRequest::default(), token);
        async move { chat.subscribe(request).await }
    })
    .await
    .context("Subscribe")?
    .into_inner();
    let caught_up = async {
        while let Some(response) = stream.message().await? {
            let event = response.event.and_then(|event| event.event);
            if matches!(event, Some(chat_pb::stream_event::Event::CaughtUp(_))) {
                return Ok(());
            }
        }
        bail!("the stream ended before CaughtUp")
    };
    tokio::time::timeout(CAUGHT_UP_TIMEOUT, caught_up)
        .await
        .context("no CaughtUp in time")??;
    Ok(stream)
}

pub(crate) use testkit::with_token;

/// Calls `call` until it answers anything but UNAVAILABLE (a service that has not fetched auth's
/// token keys yet), for at most `READY_TIMEOUT`.
async fn when_ready<T, F, Fut>(call: F) -> Result<T, Status>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match call().await {
            Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answer => return answer,
        }
    }
}

/// Runs `make(0..count)` with at most `concurrency` at once; the results in index order.
pub(crate) async fn in_parallel<T, F, Fut>(
    count: usize,
    concurrency: usize,
    make: F,
) -> anyhow::Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut running = JoinSet::new();
    let mut results: Vec<Option<T>> = (0..count).map(|_| None).collect();
    for index in 0..count {
        if running.len() >= concurrency
            && let Some(joined) = running.join_next().await
        {
            let (done, result): (usize, anyhow::Result<T>) = joined?;
            results[done] = Some(result?);
        }
        let next = make(index);
        running.spawn(async move { (index, next.await) });
    }
    while let Some(joined) = running.join_next().await {
        let (done, result) = joined?;
        results[done] = Some(result?);
    }
    results
        .into_iter()
        .map(|result| result.context("a task did not finish"))
        .collect()
}
