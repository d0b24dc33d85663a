//! The gRPC surface of the group service: proto <-> domain, nothing else.
//!
//! Not implemented yet: every RPC answers UNIMPLEMENTED until the groups issue lands (groups,
//! membership, roles, membership events).

use std::pin::Pin;

use common::grpc::not_implemented;
use proto::group::{internal::v1 as internal_pb, v1 as pb};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Implements `group.v1.GroupService`. Every RPC checks the caller's access
/// token first, so a call that bypasses the gateway is refused too.
#[derive(Clone)]
pub struct GroupApi {
    validator: token::RemoteValidator,
}

impl GroupApi {
    /// The API, checking tokens with `validator`.
    pub fn new(validator: token::RemoteValidator) -> Self {
        Self { validator }
    }
}

#[tonic::async_trait]
impl pb::group_service_server::GroupService for GroupApi {
    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::CreateGroupResponse>, Status> {
        self.validator.authenticate(&request).await?;
        Err(not_implemented("CreateGroup"))
    }

    async fn get_group(
        &self,
        request: Request<pb::GetGroupRequest>,
    ) -> Result<Response<pb::GetGroupResponse>, Status> {
        self.validator.authenticate(&request).await?;
        Err(not_implemented("GetGroup"))
    }

    async fn list_my_groups(
        &self,
        request: Request<pb::ListMyGroupsRequest>,
    ) -> Result<Response<pb::ListMyGroupsResponse>, Status> {
        self.validator.authenticate(&request).await?;
        Err(not_implemented("ListMyGroups"))
    }

    async fn rename_group(
        &self,
        request: Request<pb::RenameGroupRequest>,
    ) -> Result<Response<pb::RenameGroupResponse>, Status> {
        self.validator.authenticate(&request).await?;
        Err(not_implemented("RenameGroup"))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        self.validator.authenticate(&request).await?;
        Err(not_implemented("DeleteGroup"))
    }

    async fn add_members(
        &self,
        request: Request<pb::AddMembersRequest>,
    ) -> Result<Response<pb::AddMembersResponse>, Status> {
        self.validator.authenticate(&request).await?;
        Err(not_implemented("AddMembers"))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        self.validator.authenticate(&request).await?;
        Err(not_implemented("RemoveMember"))
    }

    async fn leave_group(
        &self,
        request: Request<pb::LeaveGroupRequest>,
    ) -> Result<Response<pb::LeaveGroupResponse>, Status> {
        self.validator.authenticate(&request).await?;
        Err(not_implemented("LeaveGroup"))
    }

    async fn change_member_role(
        &self,
        request: Request<pb::ChangeMemberRoleRequest>,
    ) -> Result<Response<pb::ChangeMemberRoleResponse>, Status> {
        self.validator.authenticate(&request).await?;
        Err(not_implemented("ChangeMemberRole"))
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        self.validator.authenticate(&request).await?;
        Err(not_implemented("ListMembers"))
    }
}

/// Implements `group.internal.v1.GroupInternalService`.
#[derive(Debug, Default)]
pub struct GroupInternalApi;

type MembershipEvents =
    Pin<Box<dyn Stream<Item = Result<internal_pb::WatchMembershipEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl internal_pb::group_internal_service_server::GroupInternalService for GroupInternalApi {
    type WatchMembershipEventsStream = MembershipEvents;

    async fn get_membership(
        &self,
        _: Request<internal_pb::GetMembershipRequest>,
    ) -> Result<Response<internal_pb::GetMembershipResponse>, Status> {
        Err(not_implemented("GetMembership"))
    }

    async fn list_user_groups(
        &self,
        _: Request<internal_pb::ListUserGroupsRequest>,
    ) -> Result<Response<internal_pb::ListUserGroupsResponse>, Status> {
        Err(not_implemented("ListUserGroups"))
    }

    async fn watch_membership_events(
        &self,
        _: Request<internal_pb::WatchMembershipEventsRequest>,
    ) -> Result<Response<Self::WatchMembershipEventsStream>, Status> {
        Err(not_implemented("WatchMembershipEvents"))
    }
}
