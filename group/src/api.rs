//! The gRPC surface of the group service: proto <-> domain, nothing else.
//!
//! Every RPC of both services checks its caller first, so a call that bypasses the gateway is
//! refused too: an access token everywhere (`group.internal.v1` accepts any valid one: the user
//! in it does not filter results, or the service credential instead), except
//! `WatchMembershipEvents`, which acts for no user and requires the deployment's service
//! credential (`common::service_credential`).

use std::{pin::Pin, sync::Arc, time::SystemTime};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use common::{
    credentials::Credentials,
    ids::parse_uuid,
    outbox::{FeedItem, Start},
    service_credential::ServiceCredential,
};
use proto::group::{internal::v1 as internal_pb, v1 as pb};
use time::OffsetDateTime;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    Error,
    events::{EventKind, MembershipEvent},
    groups::{Group, PageCursor},
    ids::{GroupId, Role, UserId},
    service::{Caller, GroupService, MemberWithDevices},
};

/// Implements `group.v1.GroupService`.
#[derive(Clone)]
pub struct GroupApi {
    validator: token::RemoteValidator,
    service: Arc<GroupService>,
}

impl GroupApi {
    pub(crate) fn new(validator: token::RemoteValidator, service: Arc<GroupService>) -> Self {
        Self { validator, service }
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let claims = self.validator.authenticate(request).await?;
        Ok(Caller {
            user: UserId(claims.user_id),
            credentials: Credentials::of(request),
        })
    }
}

#[tonic::async_trait]
impl pb::group_service_server::GroupService for GroupApi {
    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::CreateGroupResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let members = user_ids("member_user_ids", &request.member_user_ids)?;
        let created = self
            .service
            .create_group(&caller, request.name, members)
            .await;
        let group = self.service.metrics.operation("create_group", created)?;
        Ok(Response::new(pb::CreateGroupResponse {
            group: Some(group_pb(&group)),
        }))
    }

    async fn get_group(
        &self,
        request: Request<pb::GetGroupRequest>,
    ) -> Result<Response<pb::GetGroupResponse>, Status> {
        let caller = self.caller(&request).await?;
        let group = group_id(&request.get_ref().group_id)?;
        let group = self.service.get_group(&caller, group).await?;
        Ok(Response::new(pb::GetGroupResponse {
            group: Some(group_pb(&group)),
        }))
    }

    async fn list_my_groups(
        &self,
        request: Request<pb::ListMyGroupsRequest>,
    ) -> Result<Response<pb::ListMyGroupsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let after = parse_page_token(&request.page_token)?;
        let page = self
            .service
            .list_my_groups(&caller, request.page_size, after)
            .await?;
        Ok(Response::new(pb::ListMyGroupsResponse {
            groups: page.groups.iter().map(group_pb).collect(),
            next_page_token: page.next.map(page_token).unwrap_or_default(),
        }))
    }

    async fn rename_group(
        &self,
        request: Request<pb::RenameGroupRequest>,
    ) -> Result<Response<pb::RenameGroupResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let group = group_id(&request.group_id)?;
        let renamed = self
            .service
            .rename_group(&caller, group, request.name)
            .await;
        let group = self.service.metrics.operation("rename_group", renamed)?;
        Ok(Response::new(pb::RenameGroupResponse {
            group: Some(group_pb(&group)),
        }))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        let caller = self.caller(&request).await?;
        let group = group_id(&request.get_ref().group_id)?;
        let deleted = self.service.delete_group(&caller, group).await;
        self.service.metrics.operation("delete_group", deleted)?;
        Ok(Response::new(pb::DeleteGroupResponse {}))
    }

    async fn add_members(
        &self,
        request: Request<pb::AddMembersRequest>,
    ) -> Result<Response<pb::AddMembersResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let group = group_id(&request.group_id)?;
        let users = user_ids("user_ids", &request.user_ids)?;
        let role = match request.role {
            0 => Role::Member,
            value => role_from_pb(value)?,
        };
        let added = self.service.add_members(&caller, group, users, role).await;
        let (group, added) = self.service.metrics.operation("add_members", added)?;
        Ok(Response::new(pb::AddMembersResponse {
            group: Some(group_pb(&group)),
            added_user_ids: added.iter().map(ToString::to_string).collect(),
        }))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.get_ref();
        let group = group_id(&request.group_id)?;
        let user = user_id("user_id", &request.user_id)?;
        let removed = self.service.remove_member(&caller, group, user).await;
        let group = self.service.metrics.operation("remove_member", removed)?;
        Ok(Response::new(pb::RemoveMemberResponse {
            group: Some(group_pb(&group)),
        }))
    }

    async fn leave_group(
        &self,
        request: Request<pb::LeaveGroupRequest>,
    ) -> Result<Response<pb::LeaveGroupResponse>, Status> {
        let caller = self.caller(&request).await?;
        let group = group_id(&request.get_ref().group_id)?;
        let left = self.service.leave_group(&caller, group).await;
        self.service.metrics.operation("leave_group", left)?;
        Ok(Response::new(pb::LeaveGroupResponse {}))
    }

    async fn change_member_role(
        &self,
        request: Request<pb::ChangeMemberRoleRequest>,
    ) -> Result<Response<pb::ChangeMemberRoleResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.get_ref();
        let group = group_id(&request.group_id)?;
        let user = user_id("user_id", &request.user_id)?;
        let role = role_from_pb(request.role)?;
        let changed = self
            .service
            .change_member_role(&caller, group, user, role)
            .await;
        let group = self
            .service
            .metrics
            .operation("change_member_role", changed)?;
        Ok(Response::new(pb::ChangeMemberRoleResponse {
            group: Some(group_pb(&group)),
        }))
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let caller = self.caller(&request).await?;
        let group = group_id(&request.get_ref().group_id)?;
        let (members, version) = self.service.list_members(&caller, group).await?;
        Ok(Response::new(pb::ListMembersResponse {
            members: members.into_iter().map(member_pb).collect(),
            membership_version: version_pb(version),
        }))
    }
}

/// Implements `group.internal.v1.GroupInternalService`.
#[derive(Clone)]
pub struct GroupInternalApi {
    validator: token::RemoteValidator,
    /// What WatchMembershipEvents, which acts for no user, requires instead of a token.
    service_credential: ServiceCredential,
    service: Arc<GroupService>,
}

impl GroupInternalApi {
    pub(crate) fn new(
        validator: token::RemoteValidator,
        service_credential: ServiceCredential,
        service: Arc<GroupService>,
    ) -> Self {
        Self {
            validator,
            service_credential,
            service,
        }
    }
}

impl GroupInternalApi {
    /// Any valid access token (the caller's user does not filter the answer), or the service
    /// credential for calls on nobody's behalf.
    async fn authenticate<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if request
            .metadata()
            .contains_key(common::service_credential::HEADER)
        {
            self.service_credential.check(request.metadata())
        } else {
            self.validator.authenticate(request).await.map(drop)
        }
    }
}

type MembershipEvents =
    Pin<Box<dyn Stream<Item = Result<internal_pb::WatchMembershipEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl internal_pb::group_internal_service_server::GroupInternalService for GroupInternalApi {
    type WatchMembershipEventsStream = MembershipEvents;

    async fn get_membership(
        &self,
        request: Request<internal_pb::GetMembershipRequest>,
    ) -> Result<Response<internal_pb::GetMembershipResponse>, Status> {
        self.authenticate(&request).await?;
        let group = group_id(&request.get_ref().group_id)?;
        let membership = self.service.membership(group).await?;
        Ok(Response::new(internal_pb::GetMembershipResponse {
            members: membership
                .members
                .iter()
                .map(|member| internal_pb::GroupMember {
                    user_id: member.user.to_string(),
                    role: role_pb(member.role),
                })
                .collect(),
            membership_version: version_pb(membership.membership_version),
        }))
    }

    async fn list_user_groups(
        &self,
        request: Request<internal_pb::ListUserGroupsRequest>,
    ) -> Result<Response<internal_pb::ListUserGroupsResponse>, Status> {
        self.authenticate(&request).await?;
        let user = user_id("user_id", &request.get_ref().user_id)?;
        let groups = self.service.user_groups(user).await?;
        Ok(Response::new(internal_pb::ListUserGroupsResponse {
            group_ids: groups.iter().map(ToString::to_string).collect(),
        }))
    }

    async fn watch_membership_events(
        &self,
        request: Request<internal_pb::WatchMembershipEventsRequest>,
    ) -> Result<Response<Self::WatchMembershipEventsStream>, Status> {
        self.service_credential.check(request.metadata())?;
        let request = request.get_ref();
        let start = Start::from_request(request.after_event_id, request.start_at_newest)
            .map_err(Error::Feed)?;
        let heartbeats = request.heartbeats;
        let receiver = self.service.watch_events(start).await?;
        let stream = ReceiverStream::new(receiver).filter_map(move |item| match item {
            Ok(FeedItem::Event(event)) => Some(Ok(event_pb(&event))),
            Ok(FeedItem::CaughtUp(cursor)) => heartbeats.then(|| {
                Ok(internal_pb::WatchMembershipEventsResponse {
                    event_id: version_pb(cursor),
                    heartbeat: true,
                    ..Default::default()
                })
            }),
            Err(error) => Some(Err(Status::from(error))),
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

fn group_id(value: &str) -> Result<GroupId, Error> {
    Ok(GroupId(parse_uuid("group_id", value)?))
}

fn user_id(field: &str, value: &str) -> Result<UserId, Error> {
    Ok(UserId(parse_uuid(field, value)?))
}

fn user_ids(field: &str, values: &[String]) -> Result<Vec<UserId>, Error> {
    values.iter().map(|value| user_id(field, value)).collect()
}

fn role_from_pb(value: i32) -> Result<Role, Error> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::Owner) => Ok(Role::Owner),
        Ok(pb::Role::Admin) => Ok(Role::Admin),
        Ok(pb::Role::Member) => Ok(Role::Member),
        Ok(pb::Role::Unspecified) | Err(_) => Err(Error::InvalidArgument(
            "role must be ROLE_OWNER, ROLE_ADMIN or ROLE_MEMBER".into(),
        )),
    }
}

fn role_pb(role: Role) -> i32 {
    match role {
        Role::Owner => pb::Role::Owner,
        Role::Admin => pb::Role::Admin,
        Role::Member => pb::Role::Member,
    }
    .into()
}

/// Page tokens are opaque to clients: base64url of `<updated_at micros>.<group id>`.
fn page_token(cursor: PageCursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}.{}", cursor.updated_at_micros, cursor.id))
}

fn parse_page_token(token: &str) -> Result<Option<PageCursor>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let malformed = || Error::InvalidArgument("page_token is malformed".into());
    let decoded = URL_SAFE_NO_PAD.decode(token).map_err(|_| malformed())?;
    let text = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (micros, id) = text.split_once('.').ok_or_else(malformed)?;
    Ok(Some(PageCursor {
        updated_at_micros: micros.parse().map_err(|_| malformed())?,
        id: Uuid::try_parse(id).map_err(|_| malformed())?,
    }))
}

fn version_pb(version: i64) -> u64 {
    u64::try_from(version).unwrap_or_default()
}

fn timestamp(at: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::from(at))
}

fn group_pb(group: &Group) -> pb::Group {
    pb::Group {
        group_id: group.id.to_string(),
        name: group.name.clone(),
        my_role: group.my_role.map_or(0, role_pb),
        member_count: group.member_count,
        membership_version: version_pb(group.membership_version),
        created_at: Some(timestamp(group.created_at)),
        updated_at: Some(timestamp(group.updated_at)),
    }
}

fn member_pb((member, known): MemberWithDevices) -> pb::Member {
    let (user, devices) = match known {
        Some(found) => (found.user, found.devices),
        // Auth no longer knows the user: the id alone, and no device to encrypt for.
        None => (
            Some(proto::auth::v1::User {
                user_id: member.user.to_string(),
                ..Default::default()
            }),
            Vec::new(),
        ),
    };
    pb::Member {
        user,
        role: role_pb(member.role),
        joined_at: Some(timestamp(member.joined_at)),
        devices,
    }
}

fn event_pb(event: &MembershipEvent) -> internal_pb::WatchMembershipEventsResponse {
    use internal_pb::MembershipEventKind as Kind;
    let kind = match event.kind {
        EventKind::MemberAdded => Kind::MemberAdded,
        EventKind::MemberRemoved => Kind::MemberRemoved,
        EventKind::RoleChanged => Kind::RoleChanged,
        EventKind::GroupRenamed => Kind::GroupRenamed,
        EventKind::GroupDeleted => Kind::GroupDeleted,
    };
    internal_pb::WatchMembershipEventsResponse {
        event_id: version_pb(event.id),
        group_id: event.group.to_string(),
        kind: kind.into(),
        user_id: event.user.map(|user| user.to_string()).unwrap_or_default(),
        role: event.role.map_or(0, role_pb),
        membership_version: version_pb(event.membership_version),
        heartbeat: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_token_round_trips() {
        let cursor = PageCursor {
            updated_at_micros: 1_764_000_000_123_456,
            id: Uuid::now_v7(),
        };

        assert_eq!(parse_page_token(&page_token(cursor)).unwrap(), Some(cursor));
        assert_eq!(parse_page_token("").unwrap(), None);
    }

    #[test]
    fn unknown_role_values_are_invalid() {
        assert!(role_from_pb(0).is_err());
        assert!(role_from_pb(42).is_err());
        assert_eq!(role_from_pb(pb::Role::Admin.into()).unwrap(), Role::Admin);
    }
}
