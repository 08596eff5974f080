//! What every gRPC service offers besides its own RPCs: health and reflection.

use tokio_stream::StreamExt;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::harness::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_the_server_and_the_auth_service_as_serving() {
    let app = spawn_app().await;
    for service in ["", "roster.v1.AuthService"] {
        let status = app
            .health
            .clone()
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap_or_else(|err| panic!("health of {service:?}: {err:?}"))
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = app
        .health
        .clone()
        .check(HealthCheckRequest {
            service: "no.such.Service".to_owned(),
        })
        .await
        .expect_err("an unknown service is not found");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_lists_the_services_and_serves_the_http_annotations() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let app = spawn_app().await;
    let mut client = ServerReflectionClient::new(app.channel.clone());
    let requests = tokio_stream::iter([
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "roster.v1.AuthService".to_owned(),
            )),
        },
    ]);
    let mut responses = client
        .server_reflection_info(requests)
        .await
        .expect("reflection stream")
        .into_inner();

    let Some(MessageResponse::ListServicesResponse(list)) = responses
        .next()
        .await
        .expect("a first answer")
        .expect("list services")
        .message_response
    else {
        panic!("expected a list of services");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "roster.v1.AuthService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    let Some(MessageResponse::FileDescriptorResponse(files)) = responses
        .next()
        .await
        .expect("a second answer")
        .expect("file containing symbol")
        .message_response
    else {
        panic!("expected file descriptors");
    };
    // The gateway transcodes from these descriptors: the google.api.http options must survive.
    let auth_file = files
        .file_descriptor_proto
        .iter()
        .find(|bytes| contains(bytes, b"roster/v1/auth.proto"))
        .expect("auth.proto is served");
    assert!(contains(auth_file, b"/v1/auth/login"), "http rule missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1alpha_lists_the_services_for_older_clients() {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let app = spawn_app().await;
    let mut client = ServerReflectionClient::new(app.channel.clone());
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }]))
        .await
        .expect("reflection stream")
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = responses
        .next()
        .await
        .expect("an answer")
        .expect("list services")
        .message_response
    else {
        panic!("expected a list of services");
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "roster.v1.AuthService"),
        "{list:?}"
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_migrating_refuses_a_database_that_lacks_migrations_until_they_are_applied() {
    let (_database, url) = crate::harness::empty_database().await;
    let settings = |migrate: &str| {
        roster::config::Settings::from_pairs(&[("database-url", &url), ("migrate", migrate)])
            .expect("valid settings")
    };
    let refused = roster::server::open_store(&settings("false"))
        .await
        .expect_err("an empty database is refused");
    let message = format!("{refused:#}");
    assert!(
        message.contains("lacks") && message.contains("roster migrate"),
        "{message}"
    );
    // Nothing was created: the check reads only.
    let store = roster::server::open_store(&settings("true")).await.unwrap();
    assert!(store.pending_migrations().await.unwrap().is_empty());
    store.close().await;
    let store = roster::server::open_store(&settings("false"))
        .await
        .unwrap();
    store.close().await;
    let bad = roster::config::Settings::from_pairs(&[("database-url", &url), ("migrate", "maybe")])
        .expect_err("a bad value is refused");
    assert!(bad.to_string().contains("ROSTER_MIGRATE"), "{bad}");
}
