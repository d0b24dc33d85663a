//! Traces across the services: one `SendMessage` through the gateway is one trace, from the
//! client's span through the gateway and chat to auth (chat's call for the devices) and to the
//! commit of its batch, exported over OTLP to an in-process receiver.
//!
//! A batch of several sends joins the first one's trace and links the others' sends, and a
//! server's last spans are exported when its telemetry shuts down.
//!
//! The services run in this process, so they share one subscriber and one `service.name`; their
//! spans are told apart by name (`request`: the gateway's, `grpc`: a service's, `commit_batch`)
//! and by who is whose parent. The subscriber is process-wide: nextest runs each test in its own
//! process, which this test needs (it is the only one here that installs a subscriber).

use std::{net::SocketAddr, time::Duration};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value,
    trace::v1::Span,
};
use proto::chat::v1 as pb;
use sqlx::PgPool;
use tokio::{net::TcpListener, sync::mpsc};
use tonic::{Request, Response, Status};

use crate::{
    gateway::spawn_gateway,
    helpers::{spawn_app, spawn_app_with},
};

/// The client's own span, as its `traceparent` names it.
const CLIENT_SPAN_ID: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];

#[sqlx::test(migrations = "../migrations")]
async fn one_send_through_the_gateway_is_one_trace_down_to_its_commit_batch(db: PgPool) {
    let (_telemetry, mut spans) = export_to_a_receiver(Duration::from_millis(50)).await;
    let app = spawn_app(db).await;
    let gateway = spawn_gateway(&app).await;
    let alice = app.user("alice").await.on_replica(gateway).await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let envelope = alice.envelope_for(&conversation, "traced").await;
    let trace_id: [u8; 16] = *uuid::Uuid::new_v4().as_bytes();

    let mut request = alice.request(pb::SendMessageRequest {
        envelope: Some(envelope),
    });
    let traceparent = format!(
        "00-{}-{}-01",
        hex::encode(trace_id),
        hex::encode(CLIENT_SPAN_ID)
    );
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    alice.chat.clone().send_message(request).await.unwrap();
    let send_path = Some("/chat.v1.ChatService/SendMessage");
    // The conversation's first send asks auth for its devices.
    let devices_path = Some("/auth.internal.v1.AuthInternalService/GetActiveDevices");
    let trace = spans_of_trace(&mut spans, &trace_id, |trace| {
        [
            ("request", send_path),
            ("grpc", send_path),
            ("grpc", devices_path),
            ("commit_batch", None),
        ]
        .iter()
        .all(|(name, path)| position(trace, name, *path).is_some())
    })
    .await;

    let gateway_span = find(&trace, "request", send_path);
    let chat_span = find(&trace, "grpc", send_path);
    let auth_span = find(&trace, "grpc", devices_path);
    let commit_span = find(&trace, "commit_batch", None);
    assert_eq!(gateway_span.parent_span_id, CLIENT_SPAN_ID, "{trace:#?}");
    assert_eq!(chat_span.parent_span_id, gateway_span.span_id, "{trace:#?}");
    assert_eq!(auth_span.parent_span_id, chat_span.span_id, "{trace:#?}");
    assert_eq!(commit_span.parent_span_id, chat_span.span_id, "{trace:#?}");
    assert_eq!(
        string_attribute(gateway_span, "trace_id"),
        Some(hex::encode(trace_id))
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_batch_of_two_sends_joins_the_first_ones_trace_and_links_the_other(db: PgPool) {
    let (_telemetry, mut spans) = export_to_a_receiver(Duration::from_millis(50)).await;
    // Sends that arrive within 300 ms of the first are committed with it.
    let app = spawn_app_with(db, |config| {
        config.commit.window = Duration::from_millis(300);
    })
    .await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let to_bob = alice.open_direct(&bob).await;
    let to_alice = bob.open_direct(&alice).await;
    let (alices, bobs) = tokio::join!(
        alice.envelope_for(&to_bob, "one"),
        bob.envelope_for(&to_alice, "two")
    );

    let (sent_by_alice, sent_by_bob) = tokio::join!(alice.send(alices), bob.send(bobs));
    sent_by_alice.unwrap();
    sent_by_bob.unwrap();
    let send_path = Some("/chat.v1.ChatService/SendMessage");
    let mut received = Vec::new();
    let all_there = |received: &[Span]| {
        received
            .iter()
            .filter(|span| {
                span.name == "grpc" && string_attribute(span, "path").as_deref() == send_path
            })
            .count()
            == 2
            && position(received, "commit_batch", None).is_some()
    };
    let collect = async {
        while !all_there(&received) {
            received.push(spans.recv().await.expect("the receiver stopped"));
        }
    };
    tokio::time::timeout(Duration::from_secs(10), collect)
        .await
        .unwrap_or_else(|_| panic!("missing spans; received: {received:#?}"));

    let batch = find(&received, "commit_batch", None);
    let (first, other): (Vec<&Span>, Vec<&Span>) = received
        .iter()
        .filter(|span| {
            span.name == "grpc" && string_attribute(span, "path").as_deref() == send_path
        })
        .partition(|send| send.span_id == batch.parent_span_id);
    assert_eq!(string_attribute(batch, "n_sends").as_deref(), Some("2"));
    assert_eq!((first.len(), other.len()), (1, 1), "{received:#?}");
    assert_eq!(batch.trace_id, first[0].trace_id);
    let links: Vec<(&[u8], &[u8])> = batch
        .links
        .iter()
        .map(|link| (link.trace_id.as_slice(), link.span_id.as_slice()))
        .collect();
    assert_eq!(
        links,
        [(other[0].trace_id.as_slice(), other[0].span_id.as_slice())]
    );
}

#[tokio::test]
async fn shutting_the_telemetry_down_exports_the_spans_still_batched() {
    // A batch delay far longer than the test: only the shutdown exports.
    let (telemetry, mut spans) = export_to_a_receiver(Duration::from_secs(600)).await;
    tracing::info_span!("last_call").in_scope(|| {});

    tokio::time::timeout(Duration::from_secs(10), telemetry.shutdown())
        .await
        .expect("the shutdown took too long");

    let exported = spans.try_recv().expect("the span was not exported");
    assert_eq!(exported.name, "last_call");
}

/// Installs the process's subscriber, exporting every span to an in-process OTLP receiver
/// after `batch_delay`; the spans come out of the channel.
async fn export_to_a_receiver(
    batch_delay: Duration,
) -> (common::telemetry::Telemetry, mpsc::UnboundedReceiver<Span>) {
    let (collector, spans) = spawn_otlp_receiver().await;
    let telemetry = common::telemetry::init_with_traces(
        "warn",
        common::telemetry::LogFormat::Pretty,
        Some(common::telemetry::TraceExport {
            endpoint: format!("http://{collector}"),
            service_name: "chat-tests".to_owned(),
            batch_delay: Some(batch_delay),
        }),
    )
    .unwrap();
    (telemetry, spans)
}

/// The first span of `trace` named `name` (with `path`, when given); fails the test otherwise.
fn find<'a>(trace: &'a [Span], name: &str, path: Option<&str>) -> &'a Span {
    let index = position(trace, name, path)
        .unwrap_or_else(|| panic!("no span {name} {path:?} in the trace: {trace:#?}"));
    &trace[index]
}

fn position(trace: &[Span], name: &str, path: Option<&str>) -> Option<usize> {
    trace.iter().position(|span| {
        span.name == name
            && path.is_none_or(|path| string_attribute(span, "path").as_deref() == Some(path))
    })
}

fn string_attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| attribute.value.as_ref()?.value.as_ref())
        .and_then(|value| match value {
            any_value::Value::StringValue(text) => Some(text.clone()),
            // tracing's unsigned integers arrive as text (n_sends) or as integers.
            any_value::Value::IntValue(number) => Some(number.to_string()),
            _ => None,
        })
}

/// Collects the exported spans of `trace_id` until `complete` says they are all there; fails
/// after a few seconds.
async fn spans_of_trace(
    spans: &mut mpsc::UnboundedReceiver<Span>,
    trace_id: &[u8],
    complete: impl Fn(&[Span]) -> bool,
) -> Vec<Span> {
    let mut trace = Vec::new();
    let collect = async {
        while !complete(&trace) {
            let span = spans.recv().await.expect("the receiver stopped");
            if span.trace_id == trace_id {
                trace.push(span);
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), collect)
        .await
        .is_err()
    {
        panic!("the trace never completed; received: {trace:#?}");
    }
    trace
}

/// An OTLP/gRPC trace receiver on a loopback port: every span exported to it comes out of the
/// channel.
async fn spawn_otlp_receiver() -> (SocketAddr, mpsc::UnboundedReceiver<Span>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (sender, spans) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(OtlpReceiver { spans: sender }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, spans)
}

struct OtlpReceiver {
    spans: mpsc::UnboundedSender<Span>,
}

#[tonic::async_trait]
impl TraceService for OtlpReceiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|resource| resource.scope_spans)
            .flat_map(|scope| scope.spans);
        for span in spans {
            // The test may be done already.
            let _ = self.spans.send(span);
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}
