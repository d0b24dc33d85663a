//! The gRPC surface of the auth service: proto <-> domain, nothing else.
//!
//! Not implemented yet: every RPC answers UNIMPLEMENTED until the auth issue lands
//! (accounts, devices, tokens).

use std::pin::Pin;

use common::grpc::not_implemented;
use proto::auth::{internal::v1 as internal_pb, v1 as pb};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Implements `auth.v1.AuthService`.
#[derive(Debug, Default)]
pub struct AuthApi;

#[tonic::async_trait]
impl pb::auth_service_server::AuthService for AuthApi {
    async fn register(
        &self,
        _: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        Err(not_implemented("Register"))
    }

    async fn login(
        &self,
        _: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        Err(not_implemented("Login"))
    }

    async fn refresh(
        &self,
        _: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshResponse>, Status> {
        Err(not_implemented("Refresh"))
    }

    async fn logout(
        &self,
        _: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        Err(not_implemented("Logout"))
    }

    async fn logout_everywhere(
        &self,
        _: Request<pb::LogoutEverywhereRequest>,
    ) -> Result<Response<pb::LogoutEverywhereResponse>, Status> {
        Err(not_implemented("LogoutEverywhere"))
    }

    async fn get_current_user(
        &self,
        _: Request<pb::GetCurrentUserRequest>,
    ) -> Result<Response<pb::GetCurrentUserResponse>, Status> {
        Err(not_implemented("GetCurrentUser"))
    }

    async fn upload_device_keys(
        &self,
        _: Request<pb::UploadDeviceKeysRequest>,
    ) -> Result<Response<pb::UploadDeviceKeysResponse>, Status> {
        Err(not_implemented("UploadDeviceKeys"))
    }

    async fn list_devices(
        &self,
        _: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        Err(not_implemented("ListDevices"))
    }

    async fn revoke_device(
        &self,
        _: Request<pb::RevokeDeviceRequest>,
    ) -> Result<Response<pb::RevokeDeviceResponse>, Status> {
        Err(not_implemented("RevokeDevice"))
    }

    async fn lookup_users(
        &self,
        _: Request<pb::LookupUsersRequest>,
    ) -> Result<Response<pb::LookupUsersResponse>, Status> {
        Err(not_implemented("LookupUsers"))
    }

    async fn get_jwks(
        &self,
        _: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        Err(not_implemented("GetJwks"))
    }
}

/// Implements `auth.internal.v1.AuthInternalService`.
#[derive(Debug, Default)]
pub struct AuthInternalApi;

type DeviceChanges =
    Pin<Box<dyn Stream<Item = Result<internal_pb::WatchDeviceChangesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl internal_pb::auth_internal_service_server::AuthInternalService for AuthInternalApi {
    type WatchDeviceChangesStream = DeviceChanges;

    async fn get_active_devices(
        &self,
        _: Request<internal_pb::GetActiveDevicesRequest>,
    ) -> Result<Response<internal_pb::GetActiveDevicesResponse>, Status> {
        Err(not_implemented("GetActiveDevices"))
    }

    async fn watch_device_changes(
        &self,
        _: Request<internal_pb::WatchDeviceChangesRequest>,
    ) -> Result<Response<Self::WatchDeviceChangesStream>, Status> {
        Err(not_implemented("WatchDeviceChanges"))
    }
}
