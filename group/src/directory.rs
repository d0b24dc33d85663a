//! Users, devices and keys, asked from auth over gRPC (group never reads auth's tables).
//!
//! Each call forwards the caller's own `authorization` metadata: auth checks the token like any
//! other call. `auth.v1.LookupUsers` is used rather than `auth.internal.v1.GetActiveDevices`
//! because group needs both things it returns: whether users exist (AddMembers' USER_NOT_FOUND)
//! and their profiles (`group.v1.Member.user`), besides the same active, keyed devices. It takes
//! at most 100 users, so larger lists are asked in concurrent chunks.
//!
//! The auth messages (`auth.v1.User`, `auth.v1.Device`) pass through to `group.v1.Member`
//! unchanged, so they are kept as they are rather than mapped to domain types and back.

use std::{collections::HashMap, time::Duration};

use common::credentials::Credentials;
use proto::auth::v1 as auth_pb;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::{Error, ids::UserId};

/// Users per LookupUsers call (auth's limit).
const LOOKUP_CHUNK: usize = 100;

/// Auth's user directory.
#[derive(Clone)]
pub struct Directory {
    channel: Channel,
}

/// What auth knows about some users.
#[derive(Debug, Default)]
pub struct Lookup {
    /// The users found, with their active, keyed devices (ordered by device id).
    pub found: HashMap<UserId, auth_pb::UserWithDevices>,
    /// The users auth does not know, in request order.
    pub not_found: Vec<UserId>,
}

impl Directory {
    /// Talks to auth at `auth_url`, connecting lazily, balanced over every pod the name
    /// resolves to (a headless Service), re-resolved (`common::balance`).
    ///
    /// # Errors
    /// When `auth_url` is not a valid URI.
    pub fn new(auth_url: &str) -> Result<Self, tonic::transport::Error> {
        let channel = common::balance::channel(auth_url, |endpoint| {
            endpoint
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(10))
        })?;
        Ok(Self { channel })
    }

    /// Looks `users` up (profiles, devices, existence).
    ///
    /// # Errors
    /// [`Error::Auth`] when auth fails or answers with a malformed id.
    pub async fn lookup(
        &self,
        credentials: &Credentials,
        users: &[UserId],
    ) -> Result<Lookup, Error> {
        let calls = users
            .chunks(LOOKUP_CHUNK)
            .map(|chunk| self.lookup_chunk(credentials, chunk));
        let mut lookup = Lookup::default();
        for answer in futures::future::try_join_all(calls).await? {
            for user in answer.users {
                let id = user.user.as_ref().map_or("", |user| user.user_id.as_str());
                lookup.found.insert(UserId(parse_from_auth(id)?), user);
            }
            for missing in answer.not_found {
                lookup.not_found.push(UserId(parse_from_auth(&missing)?));
            }
        }
        Ok(lookup)
    }

    async fn lookup_chunk(
        &self,
        credentials: &Credentials,
        users: &[UserId],
    ) -> Result<auth_pb::LookupUsersResponse, Error> {
        let mut client = auth_pb::auth_service_client::AuthServiceClient::new(self.channel.clone());
        let request = credentials.request(auth_pb::LookupUsersRequest {
            user_ids: users.iter().map(|user| user.0.to_string()).collect(),
            usernames: Vec::new(),
        });
        let response = client.lookup_users(request).await.map_err(Error::Auth)?;
        Ok(response.into_inner())
    }
}

fn parse_from_auth(id: &str) -> Result<Uuid, Error> {
    Uuid::try_parse(id)
        .map_err(|_| Error::Auth(tonic::Status::internal("malformed user id from auth")))
}
