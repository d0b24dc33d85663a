//! Attacks of a malicious server on the clients, through the rewriting proxies in front of each
//! service ([`MaliciousServer`]): the test binaries of the CLI (`tests/api`) and of the web demo
//! (`tests/web_demo`) share them.

#![allow(dead_code)] // Each test binary uses a part.

use std::sync::Arc;

use proto::{
    auth::{internal::v1 as auth_internal_pb, v1 as auth_pb},
    group::{internal::v1 as group_internal_pb, v1 as group_pb},
};
use sqlx::PgPool;

use crate::rewriting_proxy::RewritingProxy;

/// A rewriting proxy in front of each service, for every caller: auth's answers to the gateway,
/// chat and group; group's to the gateway and chat; chat's to the gateway.
pub struct MaliciousServer {
    pub auth: RewritingProxy,
    pub group: RewritingProxy,
    pub chat: RewritingProxy,
}

pub const LOOKUP_USERS: &str = "/auth.v1.AuthService/LookupUsers";
pub const GET_ACTIVE_DEVICES: &str = "/auth.internal.v1.AuthInternalService/GetActiveDevices";
pub const LIST_MEMBERS: &str = "/group.v1.GroupService/ListMembers";
pub const GET_MEMBERSHIP: &str = "/group.internal.v1.GroupInternalService/GetMembership";
pub const LIST_MESSAGES: &str = "/chat.v1.ChatService/ListMessages";

/// The attacker's device keys, and what auth would publish for them.
pub struct Attacker {
    pub keys: e2ee::DeviceKeys,
}

impl Attacker {
    pub fn new() -> Self {
        Attacker {
            keys: e2ee::DeviceKeys::generate(2048).unwrap(),
        }
    }

    pub fn public(&self) -> auth_pb::DeviceKeys {
        let public = self.keys.public_keys();
        auth_pb::DeviceKeys {
            encryption_public_key: public.encryption_spki.clone(),
            signing_public_key: public.signing_public_key.to_vec(),
        }
    }

    pub fn encryption_fingerprint(&self) -> Vec<u8> {
        self.keys.public_keys().encryption_key_fingerprint.to_vec()
    }

    /// A device of the attacker's, as auth would list it.
    pub fn device(&self, device_id: &str) -> auth_pb::Device {
        let public = self.keys.public_keys();
        auth_pb::Device {
            device_id: device_id.to_owned(),
            name: "not a ghost".to_owned(),
            keys: Some(self.public()),
            encryption_key_fingerprint: public.encryption_key_fingerprint.to_vec(),
            signing_key_fingerprint: public.signing_key_fingerprint.to_vec(),
            ..Default::default()
        }
    }

    /// How many stored messages the attacker can read: those with a content key wrapped for the
    /// attacker's key that unwraps to the message's committed key.
    pub async fn reads(&self, db: &PgPool) -> usize {
        let wrapped: Vec<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "select k.wrapped_key, m.key_commitment
             from chat.message_keys k join chat.messages m using (conversation_id, sequence)
             where k.key_fingerprint = $1",
        )
        .bind(self.encryption_fingerprint())
        .fetch_all(db)
        .await
        .unwrap();
        let private =
            e2ee::primitives::parse_rsa_private_key(&self.keys.encryption_pkcs8_der().unwrap())
                .unwrap();
        wrapped
            .iter()
            .filter(|(wrapped_key, commitment)| {
                e2ee::primitives::rsa_oaep_unwrap(&private, wrapped_key)
                    .ok()
                    .and_then(|key| <[u8; 32]>::try_from(key.as_slice()).ok())
                    .is_some_and(|key| e2ee::key_commitment(&key).as_slice() == commitment)
            })
            .count()
    }
}

/// Makes auth list `user_id`'s devices changed by `to_clients` in its answers to clients (what
/// they pin and seal for) and by `to_services` in its answers to chat and group (what chat
/// checks envelopes against), so that chat accepts what the clients are led to seal.
pub fn lie_about_devices(
    server: &MaliciousServer,
    user_id: &str,
    to_clients: impl Fn(&mut Vec<auth_pb::Device>) + Send + Sync + 'static,
    to_services: impl Fn(&mut Vec<auth_pb::Device>) + Send + Sync + 'static,
) {
    let to_clients = Arc::new(to_clients);
    let user = user_id.to_owned();
    let rewrite_lookup = to_clients.clone();
    server.auth.rewrite(
        LOOKUP_USERS,
        move |response: &mut auth_pb::LookupUsersResponse| {
            for found in &mut response.users {
                if found.user.as_ref().is_some_and(|u| u.user_id == user) {
                    rewrite_lookup(&mut found.devices);
                }
            }
        },
    );
    let user = user_id.to_owned();
    server.auth.rewrite(
        GET_ACTIVE_DEVICES,
        move |response: &mut auth_internal_pb::GetActiveDevicesResponse| {
            for found in &mut response.users {
                if found.user_id == user {
                    to_services(&mut found.devices);
                }
            }
        },
    );
}

/// Puts the attacker's encryption key under `device_id` of `user_id`. Chat and group are told its
/// real fingerprint (so that chat accepts envelopes sealed for it); clients are told the device's
/// old fingerprints when `old_fingerprint`, else the real one too.
pub fn substitute_key(
    server: &MaliciousServer,
    user_id: &str,
    device_id: &str,
    mallory: &Attacker,
    old_fingerprint: bool,
) {
    let key = mallory.public().encryption_public_key;
    let fingerprint = mallory.encryption_fingerprint();
    let substitute = move |keep_fingerprint: bool| {
        let (device_id, key, fingerprint) =
            (device_id.to_owned(), key.clone(), fingerprint.clone());
        move |devices: &mut Vec<auth_pb::Device>| {
            for listed in devices.iter_mut().filter(|d| d.device_id == device_id) {
                listed.keys.as_mut().unwrap().encryption_public_key = key.clone();
                if !keep_fingerprint {
                    listed.encryption_key_fingerprint = fingerprint.clone();
                }
            }
        }
    };
    lie_about_devices(
        server,
        user_id,
        substitute(old_fingerprint),
        substitute(false),
    );
}

/// Adds a device of the attacker's to `user_id`'s devices, for clients and services alike.
pub fn add_ghost_device(server: &MaliciousServer, user_id: &str, mallory: &Attacker) -> String {
    let ghost_id = uuid::Uuid::new_v4().to_string();
    let ghost = mallory.device(&ghost_id);
    let add = move |devices: &mut Vec<auth_pb::Device>| {
        devices.push(ghost.clone());
        devices.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    };
    lie_about_devices(server, user_id, add.clone(), add);
    ghost_id
}

/// Lists `ghost` as a member of the (only) group, to clients and to chat.
pub fn add_ghost_member(server: &MaliciousServer, ghost: auth_pb::UserWithDevices) {
    let member = group_pb::Member {
        user: ghost.user.clone(),
        role: group_pb::Role::Member as i32,
        devices: ghost.devices.clone(),
        ..Default::default()
    };
    server.group.rewrite(
        LIST_MEMBERS,
        move |response: &mut group_pb::ListMembersResponse| {
            response.members.push(member.clone());
        },
    );
    let ghost_id = ghost.user.unwrap().user_id;
    server.group.rewrite(
        GET_MEMBERSHIP,
        move |response: &mut group_internal_pb::GetMembershipResponse| {
            response.members.push(group_internal_pb::GroupMember {
                user_id: ghost_id.clone(),
                role: group_pb::Role::Member as i32,
            });
            response.members.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        },
    );
}
