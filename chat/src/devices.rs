//! Devices and keys, asked from auth over gRPC (chat never reads auth's tables).
//!
//! Each call forwards the caller's own `authorization` metadata: auth checks the token like any
//! other call. Device lists are fetched on every send and not cached: caching needs
//! `WatchDeviceChanges` for invalidation (a stale cache would refuse good sends or accept sends
//! that miss a new device), which is left for later.

use std::collections::HashMap;

use proto::auth::{internal::v1 as internal_pb, v1 as auth_pb};
use tonic::{metadata::AsciiMetadataValue, transport::Channel};
use uuid::Uuid;

use crate::{
    Error,
    ids::{DeviceId, UserId},
};

/// One active device with keys, as auth publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveDevice {
    /// The device.
    pub device_id: DeviceId,
    /// SHA-256 of its RSA-OAEP key: what wrapped keys must name.
    pub encryption_key_fingerprint: Vec<u8>,
    /// Its raw Ed25519 public key: verifies what it sends.
    pub signing_public_key: Vec<u8>,
}

/// The caller's credentials, forwarded as they came.
#[derive(Debug, Clone)]
pub struct Credentials(pub Option<AsciiMetadataValue>);

/// Auth's device directory.
#[derive(Clone)]
pub struct Directory {
    channel: Channel,
}

impl Directory {
    /// Talks to auth at `auth_url`, connecting lazily.
    ///
    /// # Errors
    /// When `auth_url` is not a valid URI.
    pub fn new(auth_url: &str) -> Result<Self, tonic::transport::Error> {
        let channel = tonic::transport::Endpoint::from_shared(auth_url.to_owned())?
            .connect_timeout(std::time::Duration::from_secs(2))
            .connect_lazy();
        Ok(Self { channel })
    }

    /// Whether `user` exists.
    ///
    /// # Errors
    /// [`Error::Auth`] when auth fails.
    pub async fn user_exists(
        &self,
        credentials: &Credentials,
        user: UserId,
    ) -> Result<bool, Error> {
        let mut client = auth_pb::auth_service_client::AuthServiceClient::new(self.channel.clone());
        let request = credentials.request(auth_pb::LookupUsersRequest {
            user_ids: vec![user.0.to_string()],
            usernames: Vec::new(),
        });
        let response = client.lookup_users(request).await.map_err(Error::Auth)?;
        Ok(response.into_inner().not_found.is_empty())
    }

    /// The active, keyed devices of each of `users` (unknown users have none).
    ///
    /// # Errors
    /// [`Error::Auth`] when auth fails or answers with a malformed id.
    pub async fn active_devices(
        &self,
        credentials: &Credentials,
        users: &[UserId],
    ) -> Result<HashMap<UserId, Vec<ActiveDevice>>, Error> {
        let mut client = internal_pb::auth_internal_service_client::AuthInternalServiceClient::new(
            self.channel.clone(),
        );
        let request = credentials.request(internal_pb::GetActiveDevicesRequest {
            user_ids: users.iter().map(|user| user.0.to_string()).collect(),
        });
        let response = client
            .get_active_devices(request)
            .await
            .map_err(Error::Auth)?;
        let mut devices = HashMap::with_capacity(users.len());
        for user in response.into_inner().users {
            let user_id = UserId(parse_from_auth(&user.user_id)?);
            let entry: &mut Vec<ActiveDevice> = devices.entry(user_id).or_default();
            for device in user.devices {
                let Some(keys) = device.keys else { continue };
                entry.push(ActiveDevice {
                    device_id: DeviceId(parse_from_auth(&device.device_id)?),
                    encryption_key_fingerprint: device.encryption_key_fingerprint,
                    signing_public_key: keys.signing_public_key,
                });
            }
        }
        Ok(devices)
    }
}

impl Credentials {
    /// A request carrying these credentials.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        request
    }
}

fn parse_from_auth(id: &str) -> Result<Uuid, Error> {
    Uuid::try_parse(id).map_err(|_| Error::Auth(tonic::Status::internal("malformed id from auth")))
}
