//! Every status a service sends is bounded, however it was built (`common::status`): a service
//! that answers with a huge message and huge details, in a trailers-only response or in trailers
//! after a body, reaches a real tonic client with its code, a cut message and the details that fit.

use std::{
    convert::Infallible,
    task::{Context, Poll},
    time::Duration,
};

use http_body_util::BodyExt as _;
use prost::Message as _;
use tokio::net::TcpListener;
use tonic::{Code, Status, body::Body, codegen::Bytes, service::Routes};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Answers Check with a huge trailers-only status and Watch with response headers, then a huge
/// status in the trailers.
#[derive(Clone)]
struct HugeStatuses;

impl tonic::server::NamedService for HugeStatuses {
    const NAME: &'static str = "grpc.health.v1.Health";
}

fn huge_status() -> Status {
    let details = tonic_types::pb::Status {
        code: Code::FailedPrecondition as i32,
        message: "m".repeat(100_000),
        details: vec![
            prost_types::Any {
                type_url: "type.googleapis.com/google.rpc.ErrorInfo".to_owned(),
                value: tonic_types::pb::ErrorInfo {
                    reason: "HUGE".to_owned(),
                    domain: "test".to_owned(),
                    metadata: Default::default(),
                }
                .encode_to_vec(),
            },
            prost_types::Any {
                type_url: "type.googleapis.com/test.Huge".to_owned(),
                value: vec![7; 100_000],
            },
        ],
    };
    Status::with_details(
        Code::FailedPrecondition,
        "ü".repeat(50_000),
        details.encode_to_vec().into(),
    )
}

impl tower::Service<http::Request<Body>> for HugeStatuses {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path().ends_with("/Check") {
            return std::future::ready(Ok(huge_status().into_http()));
        }
        let mut trailers = http::HeaderMap::new();
        huge_status().add_header(&mut trailers).unwrap();
        let body =
            http_body_util::Empty::<Bytes>::new().with_trailers(async move { Some(Ok(trailers)) });
        let response = http::Response::builder()
            .header("content-type", "application/grpc")
            .body(Body::new(body))
            .unwrap();
        std::future::ready(Ok(response))
    }
}

async fn serve_huge_statuses() -> HealthClient<tonic::transport::Channel> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(common::grpc::serve(
        Routes::new(HugeStatuses),
        &[],
        std::sync::Arc::new(common::metrics::Metrics::new(Vec::<String>::new())),
        listener,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    HealthClient::new(testkit::connect(addr).await)
}

fn assert_bounded(status: &Status) {
    use tonic_types::StatusExt as _;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().len() <= common::status::MAX_MESSAGE_BYTES);
    assert!(status.message().starts_with("üü"));
    assert!(status.message().ends_with('…'));
    assert!(status.details().len() <= common::status::MAX_DETAILS_BYTES);
    assert_eq!(status.get_details_error_info().unwrap().reason, "HUGE");
}

#[tokio::test]
async fn a_huge_trailers_only_status_reaches_the_client_bounded() {
    let mut client = serve_huge_statuses().await;

    let status = client
        .check(HealthCheckRequest::default())
        .await
        .unwrap_err();

    assert_bounded(&status);
}

#[tokio::test]
async fn a_huge_status_in_trailers_reaches_the_client_bounded() {
    let mut client = serve_huge_statuses().await;

    let mut stream = client
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let status = stream.message().await.unwrap_err();

    assert_bounded(&status);
}
