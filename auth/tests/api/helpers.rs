use std::{
    net::{IpAddr, SocketAddr},
    sync::LazyLock,
    time::Duration,
};

use proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use sqlx::PgPool;
use testkit::stack::Stack;
use tonic::{
    Code, Status,
    transport::{Channel, Endpoint},
};
use tonic_types::StatusExt;

pub use testkit::{PASSWORD, with_token};

pub struct TestApp {
    pub addr: SocketAddr,
    pub channel: Channel,
    pub client: AuthServiceClient<Channel>,
    pub db: PgPool,
}

pub async fn spawn_app(db: PgPool) -> TestApp {
    spawn_app_with(db, auth::Config::for_tests()).await
}

pub async fn spawn_app_with(db: PgPool, config: auth::Config) -> TestApp {
    let stack = Stack::builder()
        .auth_with(|default| *default = config)
        .start(&db)
        .await
        .unwrap();
    TestApp::of(stack.auth(), db).await
}

/// As [`spawn_app`], also serving `/metrics` on a loopback port: the app and that port.
pub async fn spawn_app_with_metrics(db: PgPool) -> (TestApp, SocketAddr) {
    let stack = Stack::builder().auth().metrics().start(&db).await.unwrap();
    let auth = stack.auth();
    (TestApp::of(auth, db).await, auth.metrics.unwrap())
}

/// Auth behind the real gateway, which tells auth each caller's address (`x-forwarded-for`, from
/// the TCP peer). Chat and group are not running: these tests call auth only.
pub struct BehindGateway {
    pub gateway: SocketAddr,
    pub db: PgPool,
}

pub async fn spawn_behind_gateway(db: PgPool, config: auth::Config) -> BehindGateway {
    let stack = Stack::builder()
        .auth_with(|default| *default = config)
        .gateway()
        .start(&db)
        .await
        .unwrap();
    BehindGateway {
        gateway: stack.gateway().addr,
        db,
    }
}

impl BehindGateway {
    /// A client whose connections to the gateway come from `address` (any of 127.0.0.0/8 works
    /// on Linux without setup), so that one test can play several machines.
    pub async fn client_from(&self, address: &str) -> AuthServiceClient<Channel> {
        let address: IpAddr = address.parse().unwrap();
        let channel = Endpoint::from_shared(format!("http://{}", self.gateway))
            .unwrap()
            .local_address(Some(address))
            .connect()
            .await
            .unwrap();
        AuthServiceClient::new(channel)
    }

    pub async fn register(&self, username: &str) {
        self.client_from("127.0.0.1")
            .await
            .register(pb::RegisterRequest {
                username: username.into(),
                password: PASSWORD.into(),
                display_name: String::new(),
            })
            .await
            .unwrap();
    }

    /// A login of `username` from `address` through the gateway.
    pub async fn login_from(
        &self,
        address: &str,
        username: &str,
        password: &str,
    ) -> Result<pb::LoginResponse, Status> {
        self.client_from(address)
            .await
            .login(pb::LoginRequest {
                username: username.into(),
                password: password.into(),
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Lets every pair's current delay end, as if that much time had passed.
    pub async fn end_pair_delays(&self) {
        sqlx::query(
            "update auth.login_throttles set blocked_until = now() - interval '1 second'
             where throttle_key like 'pair:%'",
        )
        .execute(&self.db)
        .await
        .unwrap();
    }
}

/// Auth's refusal of a throttled login: RESOURCE_EXHAUSTED, reason LOGIN_THROTTLED from auth
/// (not the gateway's own rate limit), with the RetryInfo delay it carries.
pub fn throttled(result: Result<impl std::fmt::Debug, Status>) -> Duration {
    let status = assert_code(result, Code::ResourceExhausted);
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("LOGIN_THROTTLED", "auth.v1")
    );
    details
        .retry_info()
        .and_then(|retry| retry.retry_delay)
        .expect("RetryInfo with a delay")
}

/// The public keys of a device (`testkit::stack`'s first test keys).
pub static DEVICE_KEYS: LazyLock<pb::DeviceKeys> =
    LazyLock::new(|| testkit::stack::public_device_keys(0));

pub fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

pub fn assert_code(result: Result<impl std::fmt::Debug, Status>, code: Code) -> Status {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), code, "{status:?}");
    status
}

impl TestApp {
    async fn of(auth: &testkit::stack::Server, db: PgPool) -> Self {
        let channel = testkit::connect(auth.addr).await; // already bound and ready
        TestApp {
            addr: auth.addr,
            client: AuthServiceClient::new(channel.clone()),
            channel,
            db,
        }
    }

    pub async fn register(&self, username: &str) -> pb::User {
        self.client
            .clone()
            .register(pb::RegisterRequest {
                username: username.into(),
                password: PASSWORD.into(),
                display_name: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap()
    }

    pub async fn login(&self, username: &str, password: &str) -> Result<pb::LoginResponse, Status> {
        self.login_as(pb::LoginRequest {
            username: username.into(),
            password: password.into(),
            ..Default::default()
        })
        .await
    }

    pub async fn login_as(&self, request: pb::LoginRequest) -> Result<pb::LoginResponse, Status> {
        self.client
            .clone()
            .login(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Registers `username` and logs in on a new device: the user, device and tokens.
    pub async fn signed_up(&self, username: &str) -> pb::LoginResponse {
        self.register(username).await;
        self.login(username, PASSWORD).await.unwrap()
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<pb::TokenPair, Status> {
        self.client
            .clone()
            .refresh(pb::RefreshRequest {
                refresh_token: refresh_token.into(),
            })
            .await
            .map(|response| response.into_inner().tokens.unwrap())
    }

    pub async fn current_user(
        &self,
        access_token: &str,
    ) -> Result<pb::GetCurrentUserResponse, Status> {
        self.client
            .clone()
            .get_current_user(with_token(pb::GetCurrentUserRequest {}, access_token))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn upload_keys(
        &self,
        access_token: &str,
        keys: pb::DeviceKeys,
    ) -> Result<pb::Device, Status> {
        self.client
            .clone()
            .upload_device_keys(with_token(
                pb::UploadDeviceKeysRequest { keys: Some(keys) },
                access_token,
            ))
            .await
            .map(|response| response.into_inner().device.unwrap())
    }

    pub async fn lookup(
        &self,
        access_token: &str,
        user_ids: &[&str],
        usernames: &[&str],
    ) -> Result<pb::LookupUsersResponse, Status> {
        self.client
            .clone()
            .lookup_users(with_token(
                pb::LookupUsersRequest {
                    user_ids: user_ids.iter().map(|id| (*id).to_owned()).collect(),
                    usernames: usernames.iter().map(|name| (*name).to_owned()).collect(),
                },
                access_token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }
}

pub fn tokens(login: &pb::LoginResponse) -> &pb::TokenPair {
    login.tokens.as_ref().unwrap()
}
