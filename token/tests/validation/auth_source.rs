//! `AuthServiceKeySource` against a real tonic server on a loopback port that implements only
//! `GetJwks`.

use std::net::SocketAddr;
use std::sync::Arc;

use pb::auth_service_server::{AuthService, AuthServiceServer};
use proto::auth::v1 as pb;
use token::{AuthServiceKeySource, Jwk, KeySource, KeySourceError, Validator};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};

use crate::helpers::{TestKey, claims, settings};

/// Publishes `keys`, or fails with `UNAVAILABLE` when there are none.
struct JwksOnly {
    keys: Vec<Jwk>,
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl AuthService for JwksOnly {
    async fn get_jwks(&self, _: Request<pb::GetJwksRequest>) -> Reply<pb::GetJwksResponse> {
        if self.keys.is_empty() {
            return Err(Status::unavailable("no keys yet"));
        }
        let keys = self.keys.iter().cloned().map(pb::Jwk::from).collect();
        Ok(Response::new(pb::GetJwksResponse { keys }))
    }

    async fn register(&self, _: Request<pb::RegisterRequest>) -> Reply<pb::RegisterResponse> {
        Err(Status::unimplemented("test server"))
    }
    async fn login(&self, _: Request<pb::LoginRequest>) -> Reply<pb::LoginResponse> {
        Err(Status::unimplemented("test server"))
    }
    async fn refresh(&self, _: Request<pb::RefreshRequest>) -> Reply<pb::RefreshResponse> {
        Err(Status::unimplemented("test server"))
    }
    async fn logout(&self, _: Request<pb::LogoutRequest>) -> Reply<pb::LogoutResponse> {
        Err(Status::unimplemented("test server"))
    }
    async fn logout_everywhere(
        &self,
        _: Request<pb::LogoutEverywhereRequest>,
    ) -> Reply<pb::LogoutEverywhereResponse> {
        Err(Status::unimplemented("test server"))
    }
    async fn get_current_user(
        &self,
        _: Request<pb::GetCurrentUserRequest>,
    ) -> Reply<pb::GetCurrentUserResponse> {
        Err(Status::unimplemented("test server"))
    }
    async fn upload_device_keys(
        &self,
        _: Request<pb::UploadDeviceKeysRequest>,
    ) -> Reply<pb::UploadDeviceKeysResponse> {
        Err(Status::unimplemented("test server"))
    }
    async fn list_devices(
        &self,
        _: Request<pb::ListDevicesRequest>,
    ) -> Reply<pb::ListDevicesResponse> {
        Err(Status::unimplemented("test server"))
    }
    async fn revoke_device(
        &self,
        _: Request<pb::RevokeDeviceRequest>,
    ) -> Reply<pb::RevokeDeviceResponse> {
        Err(Status::unimplemented("test server"))
    }
    async fn rename_device(
        &self,
        _: Request<pb::RenameDeviceRequest>,
    ) -> Reply<pb::RenameDeviceResponse> {
        Err(Status::unimplemented("test server"))
    }
    async fn lookup_users(
        &self,
        _: Request<pb::LookupUsersRequest>,
    ) -> Reply<pb::LookupUsersResponse> {
        Err(Status::unimplemented("test server"))
    }
}

/// Serves `JwksOnly { keys }` on 127.0.0.1:0 until the test ends; returns its address.
async fn spawn_auth(keys: Vec<Jwk>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(AuthServiceServer::new(JwksOnly { keys }))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    addr
}

#[tokio::test]
async fn the_auth_service_source_fetches_the_published_keys_over_grpc() {
    let (current, previous) = (TestKey::generate(), TestKey::generate());
    let addr = spawn_auth(vec![current.jwk(), previous.jwk()]).await;
    let source = AuthServiceKeySource::new(testkit::connect(addr).await);

    let keys = source.fetch().await.unwrap();

    assert_eq!(keys, [current.jwk(), previous.jwk()]);
}

#[tokio::test]
async fn a_validator_fed_by_the_auth_service_accepts_its_tokens() {
    let key = TestKey::generate();
    let addr = spawn_auth(vec![key.jwk()]).await;
    let source = Arc::new(AuthServiceKeySource::new(testkit::connect(addr).await));
    let validator = Validator::with_key_source(settings(), source)
        .await
        .unwrap();
    let claims = claims();

    let validated = validator.validate(&key.key.sign(&claims)).await.unwrap();

    assert_eq!(validated, claims);
}

#[tokio::test]
async fn an_error_from_the_auth_service_is_reported_with_its_status() {
    let addr = spawn_auth(vec![]).await;
    let source = AuthServiceKeySource::new(testkit::connect(addr).await);

    let err = source.fetch().await.unwrap_err();

    assert!(matches!(err, KeySourceError::Rpc(status) if status.code() == Code::Unavailable));
}
