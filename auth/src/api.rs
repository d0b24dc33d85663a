//! The gRPC surface of the auth service: proto <-> domain, nothing else.
//!
//! Of `auth.internal.v1`, `GetActiveDevices` takes the caller's forwarded access token;
//! `WatchDeviceChanges` and `WatchRevocations`, which serve no one user, take the deployment's
//! service credential. Every revocation is handed to `State::revoked` once it has committed.

use std::{net::IpAddr, pin::Pin, sync::Arc, time::SystemTime};

use common::{
    ids::{InvalidUuid, parse_uuid},
    outbox::{FeedItem, Start},
};
use proto::auth::{internal::v1 as internal_pb, v1 as pb};
use secrecy::ExposeSecret;
use time::OffsetDateTime;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    Error,
    accounts::{self, Username},
    devices::{self, Device},
    keys,
    sessions::{self, IssuedRefreshToken, Refreshed},
    state::State,
    throttle::AttemptKeys,
};

/// At most this many users per LookupUsers call.
const MAX_LOOKUP: usize = 100;

/// Implements `auth.v1.AuthService`.
#[derive(Clone)]
pub struct AuthApi {
    state: Arc<State>,
}

impl AuthApi {
    pub(crate) fn new(state: Arc<State>) -> Self {
        Self { state }
    }

    /// `Login`, which [`pb::auth_service_server::AuthService::login`] counts by outcome.
    async fn login_unrecorded(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let address = client_address(&request);
        let request = request.into_inner();
        accounts::check_name("device name", &request.device_name)?;
        let resume_device = optional_uuid("device_id", &request.device_id).map_err(Error::from)?;
        let state = &self.state;
        // A name that breaks the rules cannot exist: it is refused like an unknown one.
        let username = Username::parse(&request.username).ok();
        let attempt = AttemptKeys::new(username.as_ref(), address);
        state.throttle.admit(&state.db, &attempt).await?;

        let credentials = match &username {
            Some(username) => accounts::find_credentials(&state.db, username).await?,
            None => None,
        };
        let (user, stored_hash) =
            credentials.map_or((None, None), |(user, hash)| (Some(user), Some(hash)));
        let verified = state
            .passwords
            .verify(request.password.into(), stored_hash)
            .await?;
        let Some(user) = user.filter(|_| verified) else {
            // Already counted as a failure when admitted.
            tracing::debug!("login refused");
            return Err(Error::InvalidCredentials.into());
        };
        state.throttle.record_success(&state.db, &attempt).await?;

        let (device, session_id, refresh) = match resume_device {
            Some(device_id) => {
                state
                    .sessions
                    .open_on_resumed_device(&state.db, user.id, device_id)
                    .await?
            }
            None => {
                let mut tx = state.db.begin().await.map_err(Error::from)?;
                let device = devices::create_device(
                    &mut tx,
                    user.id,
                    &request.device_name,
                    state.max_devices,
                )
                .await?;
                let (session_id, refresh) =
                    state.sessions.open(&mut tx, user.id, device.id).await?;
                tx.commit().await.map_err(Error::from)?;
                (device, session_id, refresh)
            }
        };
        tracing::info!(user_id = %user.id, device_id = %device.id, %session_id, "logged in");
        let subject = token::Subject {
            user_id: user.id,
            device_id: device.id,
            session_id,
        };
        Ok(Response::new(pb::LoginResponse {
            user: Some(user_pb(&user)),
            device: Some(device_pb(&device)),
            tokens: Some(self.token_pair(subject, refresh)),
        }))
    }
}

#[tonic::async_trait]
impl pb::auth_service_server::AuthService for AuthApi {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let request = request.into_inner();
        let username = Username::parse(&request.username)?;
        accounts::check_new_password(&request.password)?;
        accounts::check_name("display name", &request.display_name)?;
        let state = &self.state;
        let password_hash = state.passwords.hash(request.password.into()).await?;
        let user =
            accounts::insert_user(&state.db, &username, &request.display_name, &password_hash)
                .await?;
        tracing::info!(user_id = %user.id, "account registered");
        Ok(Response::new(pb::RegisterResponse {
            user: Some(user_pb(&user)),
        }))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let answer = self.login_unrecorded(request).await;
        let code = answer
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        self.state.metrics.login_answered(code);
        answer
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshResponse>, Status> {
        let token = request.into_inner().refresh_token;
        let refreshed = self.state.sessions.refresh(&self.state.db, &token).await;
        self.state.metrics.refresh_answered(&refreshed);
        let (owner, refresh) = match refreshed? {
            Refreshed::Rotated(owner, refresh) => (owner, refresh),
            Refreshed::Reused(owner) => {
                self.state
                    .revoked([token::Revoked::Session(owner.session_id)]);
                return Err(Error::RefreshTokenInvalid.into());
            }
        };
        let subject = token::Subject {
            user_id: owner.user_id,
            device_id: owner.device_id,
            session_id: owner.session_id,
        };
        Ok(Response::new(pb::RefreshResponse {
            tokens: Some(self.token_pair(subject, refresh)),
        }))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let caller = self.authenticate(&request).await?;
        let revoked = sessions::revoke(&self.state.db, caller.session_id, caller.user_id).await?;
        self.state
            .revoked(revoked.map(|session| token::Revoked::Session(session.session_id)));
        tracing::info!(user_id = %caller.user_id, session_id = %caller.session_id, "logged out");
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn logout_everywhere(
        &self,
        request: Request<pb::LogoutEverywhereRequest>,
    ) -> Result<Response<pb::LogoutEverywhereResponse>, Status> {
        let caller = self.authenticate(&request).await?;
        let revoked = sessions::revoke_all(&self.state.db, caller.user_id).await?;
        let count = revoked.len();
        self.state.revoked(
            revoked
                .into_iter()
                .map(|session| token::Revoked::Session(session.session_id)),
        );
        tracing::info!(user_id = %caller.user_id, revoked = count, "logged out everywhere");
        Ok(Response::new(pb::LogoutEverywhereResponse {
            revoked_sessions: u32::try_from(count).unwrap_or(u32::MAX),
        }))
    }

    async fn get_current_user(
        &self,
        request: Request<pb::GetCurrentUserRequest>,
    ) -> Result<Response<pb::GetCurrentUserResponse>, Status> {
        let caller = self.authenticate(&request).await?;
        let user = accounts::get_user(&self.state.db, caller.user_id).await?;
        let device = devices::get_active(&self.state.db, caller.user_id, caller.device_id).await?;
        Ok(Response::new(pb::GetCurrentUserResponse {
            user: Some(user_pb(&user)),
            device: Some(device_pb(&device)),
        }))
    }

    async fn upload_device_keys(
        &self,
        request: Request<pb::UploadDeviceKeysRequest>,
    ) -> Result<Response<pb::UploadDeviceKeysResponse>, Status> {
        let caller = self.authenticate(&request).await?;
        let keys = request.into_inner().keys.unwrap_or_default();
        let validated = keys::validate(&keys.encryption_public_key, &keys.signing_public_key)?;
        let device =
            devices::set_keys(&self.state.db, caller.user_id, caller.device_id, &validated).await?;
        self.state.device_events.committed();
        tracing::info!(user_id = %caller.user_id, device_id = %caller.device_id, "device keys uploaded");
        Ok(Response::new(pb::UploadDeviceKeysResponse {
            device: Some(device_pb(&device)),
        }))
    }

    async fn list_devices(
        &self,
        request: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        let caller = self.authenticate(&request).await?;
        let devices = devices::list_active(&self.state.db, caller.user_id).await?;
        Ok(Response::new(pb::ListDevicesResponse {
            devices: devices.iter().map(device_pb).collect(),
            current_device_id: caller.device_id.to_string(),
        }))
    }

    async fn revoke_device(
        &self,
        request: Request<pb::RevokeDeviceRequest>,
    ) -> Result<Response<pb::RevokeDeviceResponse>, Status> {
        let caller = self.authenticate(&request).await?;
        let device_id =
            parse_uuid("device_id", &request.get_ref().device_id).map_err(Error::from)?;
        devices::revoke(&self.state.db, caller.user_id, device_id).await?;
        self.state.revoked([token::Revoked::Device(device_id)]);
        tracing::info!(user_id = %caller.user_id, %device_id, "device revoked");
        Ok(Response::new(pb::RevokeDeviceResponse {}))
    }

    async fn rename_device(
        &self,
        request: Request<pb::RenameDeviceRequest>,
    ) -> Result<Response<pb::RenameDeviceResponse>, Status> {
        let caller = self.authenticate(&request).await?;
        let request = request.into_inner();
        let device_id = parse_uuid("device_id", &request.device_id).map_err(Error::from)?;
        let name = request.name.trim();
        if name.is_empty() {
            return Err(Error::InvalidArgument("device name must not be empty".into()).into());
        }
        accounts::check_name("device name", name)?;
        let device = devices::rename(&self.state.db, caller.user_id, device_id, name).await?;
        tracing::info!(user_id = %caller.user_id, %device_id, "device renamed");
        Ok(Response::new(pb::RenameDeviceResponse {
            device: Some(device_pb(&device)),
        }))
    }

    async fn lookup_users(
        &self,
        request: Request<pb::LookupUsersRequest>,
    ) -> Result<Response<pb::LookupUsersResponse>, Status> {
        self.authenticate(&request).await?;
        let request = request.into_inner();
        if request.user_ids.len() + request.usernames.len() > MAX_LOOKUP {
            return Err(
                Error::InvalidArgument(format!("at most {MAX_LOOKUP} users per lookup")).into(),
            );
        }
        let ids = request
            .user_ids
            .iter()
            .map(|id| parse_uuid("user_ids", id))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::from)?;
        // A name that breaks the rules cannot exist: it is only listed in `not_found`.
        let usernames: Vec<Option<Username>> = request
            .usernames
            .iter()
            .map(|name| Username::parse(name).ok())
            .collect();
        let valid_usernames: Vec<Username> = usernames.iter().flatten().cloned().collect();
        let users = accounts::find_users(&self.state.db, &ids, &valid_usernames).await?;
        let user_ids: Vec<Uuid> = users.iter().map(|user| user.id).collect();
        let mut devices_by_user = devices::keyed_devices_of(&self.state.db, &user_ids).await?;
        let not_found = request
            .user_ids
            .iter()
            .zip(&ids)
            .filter(|(_, id)| !user_ids.contains(id))
            .map(|(raw, _)| raw.clone())
            .chain(
                request
                    .usernames
                    .iter()
                    .zip(&usernames)
                    .filter(|(_, name)| {
                        !name.as_ref().is_some_and(|name| {
                            users
                                .iter()
                                .any(|user| user.username.to_ascii_lowercase() == name.canonical())
                        })
                    })
                    .map(|(raw, _)| raw.clone()),
            )
            .collect();
        let users = users
            .iter()
            .map(|user| pb::UserWithDevices {
                user: Some(user_pb(user)),
                devices: devices_by_user
                    .remove(&user.id)
                    .unwrap_or_default()
                    .iter()
                    .map(device_pb)
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::LookupUsersResponse { users, not_found }))
    }

    async fn get_jwks(
        &self,
        _: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        let keys = self
            .state
            .issuer
            .jwks()
            .into_iter()
            .map(Into::into)
            .collect();
        Ok(Response::new(pb::GetJwksResponse { keys }))
    }
}

impl AuthApi {
    async fn authenticate<T>(&self, request: &Request<T>) -> Result<token::Subject, Error> {
        Ok(self.state.validator.authenticate(request).await?.subject())
    }

    fn token_pair(&self, subject: token::Subject, refresh: IssuedRefreshToken) -> pb::TokenPair {
        let (access_token, access_expires_at) = self.state.issuer.issue(subject);
        pb::TokenPair {
            access_token,
            access_token_expires_at: Some(access_expires_at.into()),
            refresh_token: refresh.token.expose_secret().to_owned(),
            refresh_token_expires_at: Some(timestamp(refresh.expires_at)),
        }
    }
}

/// At most this many users per GetActiveDevices call.
const MAX_ACTIVE_DEVICES_USERS: usize = 1_000;

/// Implements `auth.internal.v1.AuthInternalService` (see the module docs for what is missing).
#[derive(Clone)]
pub struct AuthInternalApi {
    state: Arc<State>,
}

impl AuthInternalApi {
    pub(crate) fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

type DeviceChanges =
    Pin<Box<dyn Stream<Item = Result<internal_pb::WatchDeviceChangesResponse, Status>> + Send>>;
type RevocationStream =
    Pin<Box<dyn Stream<Item = Result<internal_pb::WatchRevocationsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl internal_pb::auth_internal_service_server::AuthInternalService for AuthInternalApi {
    type WatchDeviceChangesStream = DeviceChanges;
    type WatchRevocationsStream = RevocationStream;

    async fn get_active_devices(
        &self,
        request: Request<internal_pb::GetActiveDevicesRequest>,
    ) -> Result<Response<internal_pb::GetActiveDevicesResponse>, Status> {
        // Any valid access token: the caller's user does not filter the answer.
        self.state
            .validator
            .authenticate(&request)
            .await
            .map_err(Error::from)?;
        let request = request.into_inner();
        if request.user_ids.len() > MAX_ACTIVE_DEVICES_USERS {
            return Err(Error::InvalidArgument(format!(
                "at most {MAX_ACTIVE_DEVICES_USERS} users per call"
            ))
            .into());
        }
        let ids = request
            .user_ids
            .iter()
            .map(|id| parse_uuid("user_ids", id))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::from)?;
        let devices_by_user = devices::keyed_devices_of(&self.state.db, &ids).await?;
        let users = request
            .user_ids
            .into_iter()
            .zip(&ids)
            .map(|(user_id, id)| internal_pb::UserDevices {
                user_id,
                // A user named twice gets its devices twice, not once and then none.
                devices: devices_by_user
                    .get(id)
                    .map(|devices| devices.iter().map(device_pb).collect())
                    .unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(internal_pb::GetActiveDevicesResponse {
            users,
        }))
    }

    async fn watch_device_changes(
        &self,
        request: Request<internal_pb::WatchDeviceChangesRequest>,
    ) -> Result<Response<Self::WatchDeviceChangesStream>, Status> {
        self.state.service_credential.check(request.metadata())?;
        let request = request.into_inner();
        let start = Start::from_request(request.after_event_id, request.start_at_newest)?;
        let heartbeats = request.heartbeats;
        let items = self.state.device_events.follow_with_progress(start).await?;
        // Revoked sessions share the outbox but change no device.
        let stream = ReceiverStream::new(items).filter_map(move |item| match item {
            Ok(FeedItem::Event(event)) if !event.changes_devices() => None,
            Ok(FeedItem::Event(event)) => Some(Ok(internal_pb::WatchDeviceChangesResponse {
                event_id: u64::try_from(event.id).unwrap_or_default(),
                user_id: event.user_id.to_string(),
                device_id: event.device_id.to_string(),
                heartbeat: false,
            })),
            Ok(FeedItem::CaughtUp(cursor)) => heartbeats.then(|| {
                Ok(internal_pb::WatchDeviceChangesResponse {
                    event_id: u64::try_from(cursor).unwrap_or_default(),
                    heartbeat: true,
                    ..Default::default()
                })
            }),
            Err(error) => Some(Err(Status::from(error))),
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn watch_revocations(
        &self,
        request: Request<internal_pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        self.state.service_credential.check(request.metadata())?;
        let after = match request.into_inner().after_event_id {
            // Revocations older than a token's longest life refuse nothing: skip them.
            0 => {
                let window = self.state.revocations.retention();
                devices::recent_revocations_start(&self.state.db, window).await?
            }
            after => after,
        };
        let items = self
            .state
            .device_events
            .follow_with_progress(Start::After(after))
            .await?;
        let stream = ReceiverStream::new(items).filter_map(|item| {
            use internal_pb::watch_revocations_response::Item;
            let item = match item {
                Ok(FeedItem::Event(event)) => Item::Revocation(revocation_pb(&event)?),
                Ok(FeedItem::CaughtUp(cursor)) => Item::Heartbeat(internal_pb::Heartbeat {
                    event_id: u64::try_from(cursor).unwrap_or_default(),
                }),
                Err(error) => return Some(Err(Status::from(error))),
            };
            Some(Ok(internal_pb::WatchRevocationsResponse {
                item: Some(item),
            }))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The revocation an event records, if it records one.
fn revocation_pb(event: &devices::DeviceEvent) -> Option<internal_pb::Revocation> {
    let revocation = event.revocation()?;
    Some(internal_pb::Revocation {
        event_id: u64::try_from(event.id).unwrap_or_default(),
        user_id: event.user_id.to_string(),
        device_id: event.device_id.to_string(),
        session_id: match revocation.revoked {
            token::Revoked::Session(session) => session.to_string(),
            token::Revoked::Device(_) => String::new(),
        },
        revoked_at: Some(timestamp(event.created_at)),
    })
}

/// The client's address for throttling: the first `x-forwarded-for` entry (set by the gateway,
/// the only caller that can reach auth), else the connection's peer.
fn client_address<T>(request: &Request<T>) -> Option<IpAddr> {
    request
        .metadata()
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .and_then(|first| first.trim().parse().ok())
        .or_else(|| request.remote_addr().map(|addr| addr.ip()))
}

fn optional_uuid(field: &str, value: &str) -> Result<Option<Uuid>, InvalidUuid> {
    (!value.is_empty())
        .then(|| parse_uuid(field, value))
        .transpose()
}

fn timestamp(at: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::from(at))
}

fn user_pb(user: &accounts::User) -> pb::User {
    pb::User {
        user_id: user.id.to_string(),
        username: user.username.clone(),
        display_name: user.display_name.clone(),
        created_at: Some(timestamp(user.created_at)),
    }
}

fn device_pb(device: &Device) -> pb::Device {
    let keys = device
        .encryption_public_key
        .clone()
        .zip(device.signing_public_key.clone())
        .map(
            |(encryption_public_key, signing_public_key)| pb::DeviceKeys {
                encryption_public_key,
                signing_public_key,
            },
        );
    pb::Device {
        device_id: device.id.to_string(),
        name: device.name.clone(),
        keys,
        encryption_key_fingerprint: device
            .encryption_key_fingerprint
            .clone()
            .unwrap_or_default(),
        signing_key_fingerprint: device.signing_key_fingerprint.clone().unwrap_or_default(),
        created_at: Some(timestamp(device.created_at)),
        last_seen_at: Some(timestamp(device.last_seen_at)),
    }
}
