//! Devices and keys, asked from auth over gRPC (chat never reads auth's tables).
//!
//! Each call forwards the caller's own `authorization` metadata: auth checks the token like any
//! other call. Users' device lists are cached (`followed_cache.rs`), trusted only while
//! `device_events.rs` follows auth's `WatchDeviceChanges`, each change dropping its user's entry:
//! a stale list would refuse good sends or accept sends that miss a new device.

use std::{collections::HashMap, sync::Arc};

use common::credentials::Credentials;
use proto::auth::{internal::v1 as internal_pb, v1 as auth_pb};
use tonic::transport::Channel;
use uuid::Uuid;

use crate::{
    Error,
    ids::{DeviceId, UserId},
    membership::followed_cache::FollowedCache,
};

/// Users' active, keyed devices as auth last answered.
pub type DevicesCache = FollowedCache<UserId, Arc<[ActiveDevice]>>;

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

/// Auth's device directory.
#[derive(Clone)]
pub struct Directory {
    channel: Channel,
    cache: Arc<DevicesCache>,
}

impl Directory {
    /// Talks to auth at `auth_url`, connecting lazily.
    ///
    /// # Errors
    /// When `auth_url` is not a valid URI.
    pub fn new(auth_url: &str) -> Result<Self, tonic::transport::Error> {
        let channel = crate::membership::watch::peer_channel(auth_url)?;
        Ok(Self {
            channel,
            cache: Arc::default(),
        })
    }

    /// The channel to auth (shared with the event follower).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The device cache, for the event follower to keep right.
    pub fn cache(&self) -> Arc<DevicesCache> {
        self.cache.clone()
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

    /// The active, keyed devices of each of `users` (unknown users have none): from the cache,
    /// else from auth in one call for all the users missing from it.
    ///
    /// # Errors
    /// [`Error::Auth`] when auth fails or answers with a malformed id.
    pub async fn active_devices(
        &self,
        credentials: &Credentials,
        users: &[UserId],
    ) -> Result<HashMap<UserId, Arc<[ActiveDevice]>>, Error> {
        let mut devices = HashMap::with_capacity(users.len());
        let mut missing = Vec::new();
        for user in users {
            match self.cache.get(*user) {
                Some(cached) => {
                    devices.insert(*user, cached);
                }
                None => missing.push(*user),
            }
        }
        if missing.is_empty() {
            return Ok(devices);
        }
        let generation = self.cache.generation();
        let fetched = self.fetch_active_devices(credentials, &missing).await?;
        self.cache.store(
            generation,
            fetched.iter().map(|(user, list)| (*user, list.clone())),
        );
        devices.extend(fetched);
        Ok(devices)
    }

    /// Like [`Directory::active_devices`], but asks auth for every user (refreshing the cache):
    /// for a send the cached lists refused.
    ///
    /// # Errors
    /// [`Error::Auth`] when auth fails or answers with a malformed id.
    pub async fn current_devices(
        &self,
        credentials: &Credentials,
        users: &[UserId],
    ) -> Result<HashMap<UserId, Arc<[ActiveDevice]>>, Error> {
        let generation = self.cache.generation();
        let fetched = self.fetch_active_devices(credentials, users).await?;
        self.cache.store(
            generation,
            fetched.iter().map(|(user, list)| (*user, list.clone())),
        );
        Ok(fetched)
    }

    async fn fetch_active_devices(
        &self,
        credentials: &Credentials,
        users: &[UserId],
    ) -> Result<HashMap<UserId, Arc<[ActiveDevice]>>, Error> {
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
        let mut devices: HashMap<UserId, Vec<ActiveDevice>> =
            users.iter().map(|user| (*user, Vec::new())).collect();
        for user in response.into_inner().users {
            let user_id = UserId(parse_from_auth(&user.user_id)?);
            let entry = devices.entry(user_id).or_default();
            for device in user.devices {
                let Some(keys) = device.keys else { continue };
                entry.push(ActiveDevice {
                    device_id: DeviceId(parse_from_auth(&device.device_id)?),
                    encryption_key_fingerprint: device.encryption_key_fingerprint,
                    signing_public_key: keys.signing_public_key,
                });
            }
        }
        Ok(devices
            .into_iter()
            .map(|(user, list)| (user, Arc::from(list)))
            .collect())
    }
}

fn parse_from_auth(id: &str) -> Result<Uuid, Error> {
    Uuid::try_parse(id).map_err(|_| Error::Auth(tonic::Status::internal("malformed id from auth")))
}
