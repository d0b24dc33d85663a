//! Reflection on the gateway describes the public APIs and nothing internal: not by symbol, not
//! by file name, not through a public file's dependencies. Every internal file, service, method,
//! message and enum of the full descriptor set is asked for, with the real grpcurl and with a raw
//! reflection client.

use std::collections::{HashSet, VecDeque};

use prost::Message as _;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, ServerReflectionResponse, server_reflection_client,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::helpers::spawn_app;

fn is_internal(file: &FileDescriptorProto) -> bool {
    file.package().split('.').any(|part| part == "internal")
}

/// The files of the internal APIs, from the full set the services serve on their own ports.
fn internal_files() -> Vec<FileDescriptorProto> {
    let set = FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
    let internal: Vec<_> = set.file.into_iter().filter(is_internal).collect();
    assert!(internal.len() >= 2, "auth's and group's internal APIs");
    internal
}

/// Every fully qualified symbol `file` defines: services, methods, messages and enums (nested too).
fn symbols(file: &FileDescriptorProto) -> Vec<String> {
    fn messages(prefix: &str, message: &DescriptorProto, into: &mut Vec<String>) {
        let name = format!("{prefix}.{}", message.name());
        for nested in &message.nested_type {
            messages(&name, nested, into);
        }
        enums(&name, &message.enum_type, into);
        into.push(name);
    }
    fn enums(prefix: &str, all: &[EnumDescriptorProto], into: &mut Vec<String>) {
        into.extend(all.iter().map(|e| format!("{prefix}.{}", e.name())));
    }
    let package = file.package();
    let mut all = Vec::new();
    for service in &file.service {
        let name = format!("{package}.{}", service.name());
        all.extend(
            service
                .method
                .iter()
                .map(|m| format!("{name}.{}", m.name())),
        );
        all.push(name);
    }
    for message in &file.message_type {
        messages(package, message, &mut all);
    }
    enums(package, &file.enum_type, &mut all);
    all
}

/// Asks the gateway at `addr` `request` on a reflection v1 stream of its own (tonic's reflection
/// ends the stream at the first error).
async fn reflect(
    addr: std::net::SocketAddr,
    request: MessageRequest,
) -> Result<MessageResponse, tonic::Status> {
    let mut client =
        server_reflection_client::ServerReflectionClient::new(testkit::connect(addr).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let ServerReflectionResponse {
        message_response, ..
    } = responses.message().await?.expect("an answer");
    Ok(message_response.expect("a message response"))
}

/// The files of a file descriptor response.
fn files(answer: &MessageResponse) -> Vec<FileDescriptorProto> {
    let MessageResponse::FileDescriptorResponse(response) = answer else {
        panic!("expected files, got {answer:?}");
    };
    let decode = |bytes: &Vec<u8>| FileDescriptorProto::decode(bytes.as_slice()).unwrap();
    response.file_descriptor_proto.iter().map(decode).collect()
}

#[tokio::test]
async fn grpcurl_describes_every_public_service_with_its_documentation() {
    let app = spawn_app().await;

    let descriptions = tokio::task::spawn_blocking(move || {
        proto::PUBLIC_SERVICES
            .iter()
            .map(|service| testkit::grpcurl_describe(app.addr, service))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();

    for (service, description) in proto::PUBLIC_SERVICES.iter().zip(&descriptions) {
        let name = service.rsplit('.').next().unwrap();
        assert!(
            description.contains(&format!("service {name} {{")),
            "{description}"
        );
        // The proto comments come along: every RPC is documented.
        assert!(description.contains("\n  // "), "{description}");
    }
    assert!(descriptions[1].contains("End-to-end encrypted messaging"));
}

#[tokio::test]
async fn grpcurl_cannot_describe_any_internal_service_method_message_or_enum() {
    let app = spawn_app().await;
    let symbols: Vec<String> = internal_files().iter().flat_map(symbols).collect();
    assert!(
        symbols
            .iter()
            .any(|s| s == "auth.internal.v1.AuthInternalService")
    );

    let outputs = tokio::task::spawn_blocking(move || {
        symbols
            .into_iter()
            .map(|symbol| {
                let output = testkit::grpcurl(&[], app.addr, &["describe", &symbol]);
                (symbol, output)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();

    for (symbol, output) in outputs {
        assert!(!output.success, "{symbol} was described: {}", output.stdout);
        assert!(
            output.stderr.to_lowercase().contains("not found"),
            "{symbol}: {}",
            output.stderr
        );
    }
}

#[tokio::test]
async fn reflection_answers_not_found_for_every_internal_file_and_symbol() {
    let app = spawn_app().await;
    let internal = internal_files();
    let mut requests: Vec<MessageRequest> = internal
        .iter()
        .map(|file| MessageRequest::FileByFilename(file.name().to_owned()))
        .collect();
    requests.extend(
        internal
            .iter()
            .flat_map(symbols)
            .map(MessageRequest::FileContainingSymbol),
    );

    for request in requests {
        let answer = reflect(app.addr, request.clone()).await;

        let code = match answer {
            Err(status) => status.code() as i32,
            Ok(MessageResponse::ErrorResponse(error)) => error.error_code,
            Ok(answer) => {
                let names: Vec<String> =
                    files(&answer).iter().map(|f| f.name().to_owned()).collect();
                panic!("{request:?} was described: {names:?}");
            }
        };
        assert_eq!(code, tonic::Code::NotFound as i32, "{request:?}");
    }
}

#[tokio::test]
async fn the_files_of_public_services_and_all_their_dependencies_are_public() {
    let app = spawn_app().await;
    let mut seen = HashSet::new();
    let mut to_fetch: VecDeque<MessageRequest> = proto::PUBLIC_SERVICES
        .iter()
        .map(|service| MessageRequest::FileContainingSymbol((*service).to_owned()))
        .collect();

    // Follow every dependency by file name until none is new.
    while let Some(request) = to_fetch.pop_front() {
        let answer = reflect(app.addr, request).await.unwrap();
        for file in files(&answer) {
            assert!(!is_internal(&file), "{} is internal", file.name());
            if seen.insert(file.name().to_owned()) {
                let new = file.dependency.into_iter().filter(|d| !seen.contains(d));
                to_fetch.extend(new.map(MessageRequest::FileByFilename));
            }
        }
    }

    assert!(seen.contains("chat/v1/chat.proto"), "{seen:?}");
    assert!(seen.contains("auth/v1/auth.proto"), "{seen:?}");
    assert!(seen.contains("google/protobuf/timestamp.proto"), "{seen:?}");
}
