use std::{
    net::SocketAddr,
    sync::{Arc, LazyLock},
};

use proto::{
    auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient},
    group::{
        internal::v1::{
            self as internal_pb, group_internal_service_client::GroupInternalServiceClient,
        },
        v1::{self as pb, group_service_client::GroupServiceClient},
    },
};
use sqlx::PgPool;
use testkit::stack::Stack;
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

pub struct TestApp {
    pub addr: SocketAddr,
    /// Where group serves `/metrics`.
    pub metrics: SocketAddr,
    pub channel: Channel,
    pub auth: AuthServiceClient<Channel>,
    pub db: PgPool,
    stack: Arc<Stack>,
}

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: String,
    pub username: String,
    pub token: String,
}

/// The real auth service (tokens, users, devices) and the group service on loopback ports.
pub async fn spawn_app(db: PgPool) -> TestApp {
    spawn_app_with(db, |_| {}).await
}

/// As [`spawn_app`], with the group configuration changed by `configure`.
pub async fn spawn_app_with(db: PgPool, configure: impl FnOnce(&mut group::Config)) -> TestApp {
    spawn_apps_with(db, |_| {}, configure).await
}

/// As [`spawn_app`], with both configurations changed.
pub async fn spawn_apps_with(
    db: PgPool,
    configure_auth: impl FnOnce(&mut auth::Config),
    configure: impl FnOnce(&mut group::Config),
) -> TestApp {
    let stack = Stack::builder()
        .auth_with(configure_auth)
        .group_with(configure)
        .metrics()
        .start(&db)
        .await
        .unwrap();
    TestApp {
        addr: stack.group().addr,
        metrics: stack.group().metrics.unwrap(),
        channel: testkit::connect(stack.group().addr).await,
        auth: AuthServiceClient::new(testkit::connect(stack.auth().addr).await),
        db,
        stack: Arc::new(stack),
    }
}

/// The public keys of a device (`testkit::stack`'s first test keys).
pub static DEVICE_KEYS: LazyLock<auth_pb::DeviceKeys> =
    LazyLock::new(|| testkit::stack::public_device_keys(0));

pub use testkit::{PASSWORD, with_token};

/// The `google.rpc.ErrorInfo` reason and metadata of a status.
pub fn error_info(status: &Status) -> (String, std::collections::HashMap<String, String>) {
    status
        .get_error_details()
        .error_info()
        .map(|info| (info.reason.clone(), info.metadata.clone()))
        .unwrap_or_default()
}

pub fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), code, "{status:?}");
    status
}

/// A random id nobody has.
pub fn unknown_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl TestApp {
    /// A second group replica on the same database and auth, configured by `configure`.
    pub async fn replica(&self, configure: impl FnOnce(&mut group::Config)) -> TestApp {
        self.replica_on(self.db.clone(), configure).await
    }

    /// A second group replica on its own pool `db` (same database) and the same auth.
    pub async fn replica_on(
        &self,
        db: PgPool,
        configure: impl FnOnce(&mut group::Config),
    ) -> TestApp {
        let replica = self
            .stack
            .start_group(db.clone().into(), configure)
            .await
            .unwrap();
        TestApp {
            addr: replica.addr,
            metrics: replica.metrics.unwrap(),
            channel: testkit::connect(replica.addr).await,
            auth: self.auth.clone(),
            db,
            stack: self.stack.clone(),
        }
    }

    pub fn groups(&self) -> GroupServiceClient<Channel> {
        GroupServiceClient::new(self.channel.clone())
    }

    pub fn internal(&self) -> GroupInternalServiceClient<Channel> {
        GroupInternalServiceClient::new(self.channel.clone())
    }

    /// Registers and logs in `username` with auth; returns the access token.
    pub async fn access_token(&self, username: &str) -> String {
        self.user(username).await.token
    }

    /// Registers and logs in `username` on a new device.
    pub async fn user(&self, username: &str) -> TestUser {
        let mut auth = self.auth.clone();
        let password = PASSWORD.to_owned();
        auth.register(auth_pb::RegisterRequest {
            username: username.to_owned(),
            password: password.clone(),
            display_name: format!("{username} display"),
        })
        .await
        .unwrap();
        let login = auth
            .login(auth_pb::LoginRequest {
                username: username.to_owned(),
                password,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        TestUser {
            id: login.user.unwrap().user_id,
            username: username.to_owned(),
            token: login.tokens.unwrap().access_token,
        }
    }

    /// `count` users named `<prefix>0`, `<prefix>1`, ...
    pub async fn users(&self, prefix: &str, count: usize) -> Vec<TestUser> {
        let mut users = Vec::with_capacity(count);
        for n in 0..count {
            users.push(self.user(&format!("{prefix}{n}")).await);
        }
        users
    }

    /// Uploads keys for the user's current device; returns the device as auth lists it.
    pub async fn upload_keys(&self, user: &TestUser) -> auth_pb::Device {
        self.auth
            .clone()
            .upload_device_keys(with_token(
                auth_pb::UploadDeviceKeysRequest {
                    keys: Some(DEVICE_KEYS.clone()),
                },
                &user.token,
            ))
            .await
            .unwrap()
            .into_inner()
            .device
            .unwrap()
    }

    pub async fn create_group(
        &self,
        owner: &TestUser,
        name: &str,
        members: &[&TestUser],
    ) -> Result<pb::Group, Status> {
        self.groups()
            .create_group(with_token(
                pb::CreateGroupRequest {
                    name: name.to_owned(),
                    member_user_ids: members.iter().map(|user| user.id.clone()).collect(),
                },
                &owner.token,
            ))
            .await
            .map(|response| response.into_inner().group.unwrap())
    }

    pub async fn get_group(&self, caller: &TestUser, group_id: &str) -> Result<pb::Group, Status> {
        self.groups()
            .get_group(with_token(
                pb::GetGroupRequest {
                    group_id: group_id.to_owned(),
                },
                &caller.token,
            ))
            .await
            .map(|response| response.into_inner().group.unwrap())
    }

    pub async fn list_my_groups(
        &self,
        caller: &TestUser,
        page_size: u32,
        page_token: &str,
    ) -> Result<pb::ListMyGroupsResponse, Status> {
        self.groups()
            .list_my_groups(with_token(
                pb::ListMyGroupsRequest {
                    page_size,
                    page_token: page_token.to_owned(),
                },
                &caller.token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn rename(
        &self,
        caller: &TestUser,
        group_id: &str,
        name: &str,
    ) -> Result<pb::Group, Status> {
        self.groups()
            .rename_group(with_token(
                pb::RenameGroupRequest {
                    group_id: group_id.to_owned(),
                    name: name.to_owned(),
                },
                &caller.token,
            ))
            .await
            .map(|response| response.into_inner().group.unwrap())
    }

    pub async fn delete(&self, caller: &TestUser, group_id: &str) -> Result<(), Status> {
        self.groups()
            .delete_group(with_token(
                pb::DeleteGroupRequest {
                    group_id: group_id.to_owned(),
                },
                &caller.token,
            ))
            .await
            .map(|_| ())
    }

    pub async fn add_members(
        &self,
        caller: &TestUser,
        group_id: &str,
        users: &[&TestUser],
        role: pb::Role,
    ) -> Result<pb::AddMembersResponse, Status> {
        self.add_member_ids(
            caller,
            group_id,
            users.iter().map(|user| user.id.clone()).collect(),
            role,
        )
        .await
    }

    pub async fn add_member_ids(
        &self,
        caller: &TestUser,
        group_id: &str,
        user_ids: Vec<String>,
        role: pb::Role,
    ) -> Result<pb::AddMembersResponse, Status> {
        self.groups()
            .add_members(with_token(
                pb::AddMembersRequest {
                    group_id: group_id.to_owned(),
                    user_ids,
                    role: role.into(),
                },
                &caller.token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn remove(
        &self,
        caller: &TestUser,
        group_id: &str,
        user: &TestUser,
    ) -> Result<pb::Group, Status> {
        self.groups()
            .remove_member(with_token(
                pb::RemoveMemberRequest {
                    group_id: group_id.to_owned(),
                    user_id: user.id.clone(),
                },
                &caller.token,
            ))
            .await
            .map(|response| response.into_inner().group.unwrap())
    }

    pub async fn leave(&self, caller: &TestUser, group_id: &str) -> Result<(), Status> {
        self.groups()
            .leave_group(with_token(
                pb::LeaveGroupRequest {
                    group_id: group_id.to_owned(),
                },
                &caller.token,
            ))
            .await
            .map(|_| ())
    }

    pub async fn change_role(
        &self,
        caller: &TestUser,
        group_id: &str,
        user: &TestUser,
        role: pb::Role,
    ) -> Result<pb::Group, Status> {
        self.groups()
            .change_member_role(with_token(
                pb::ChangeMemberRoleRequest {
                    group_id: group_id.to_owned(),
                    user_id: user.id.clone(),
                    role: role.into(),
                },
                &caller.token,
            ))
            .await
            .map(|response| response.into_inner().group.unwrap())
    }

    pub async fn list_members(
        &self,
        caller: &TestUser,
        group_id: &str,
    ) -> Result<pb::ListMembersResponse, Status> {
        self.groups()
            .list_members(with_token(
                pb::ListMembersRequest {
                    group_id: group_id.to_owned(),
                },
                &caller.token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Each member's user id and role, as ListMembers returns them (ordered by user id).
    pub async fn roles(&self, caller: &TestUser, group_id: &str) -> Vec<(String, pb::Role)> {
        self.list_members(caller, group_id)
            .await
            .unwrap()
            .members
            .iter()
            .map(|member| (member.user.as_ref().unwrap().user_id.clone(), member.role()))
            .collect()
    }

    pub async fn membership(
        &self,
        token: &str,
        group_id: &str,
    ) -> Result<internal_pb::GetMembershipResponse, Status> {
        self.internal()
            .get_membership(with_token(
                internal_pb::GetMembershipRequest {
                    group_id: group_id.to_owned(),
                },
                token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// WatchMembershipEvents after `after_event_id`, with the tests' service credential.
    pub async fn watch(
        &self,
        after_event_id: u64,
    ) -> Result<tonic::Streaming<internal_pb::WatchMembershipEventsResponse>, Status> {
        self.watch_with(internal_pb::WatchMembershipEventsRequest {
            after_event_id,
            start_at_newest: false,
            heartbeats: false,
        })
        .await
    }

    /// WatchMembershipEvents with `request`, with the tests' service credential.
    pub async fn watch_with(
        &self,
        request: internal_pb::WatchMembershipEventsRequest,
    ) -> Result<tonic::Streaming<internal_pb::WatchMembershipEventsResponse>, Status> {
        let credential = common::service_credential::ServiceCredential::for_tests();
        self.internal()
            .watch_membership_events(credential.attach(tonic::Request::new(request)))
            .await
            .map(tonic::Response::into_inner)
    }
}

impl TestApp {
    /// Logs `user` in again: the same user on a new device.
    pub async fn user_login_again(&self, user: &TestUser) -> TestUser {
        let login = self
            .auth
            .clone()
            .login(auth_pb::LoginRequest {
                username: user.username.clone(),
                password: PASSWORD.to_owned(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        TestUser {
            id: user.id.clone(),
            username: user.username.clone(),
            token: login.tokens.unwrap().access_token,
        }
    }
}

impl TestApp {
    /// Registers `count` users named `<prefix>0`, ... without logging them in; returns their ids.
    pub async fn registered_ids(&self, prefix: &str, count: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(count);
        for n in 0..count {
            let user = self
                .auth
                .clone()
                .register(auth_pb::RegisterRequest {
                    username: format!("{prefix}{n}"),
                    password: PASSWORD.to_owned(),
                    display_name: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .user
                .unwrap();
            ids.push(user.user_id);
        }
        ids
    }
}
