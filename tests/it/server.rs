//! The real server in-process on port 0: health, reflection, lote.v1.Worker, metrics, and the
//! shutdown sequence (NOT_SERVING, in-flight calls finish, then nothing answers).

use crate::common;

use std::time::Duration;

use common::{TestServer, health_status, test_settings};
use lote::grpc::pb::{GetInfoRequest, worker_client::WorkerClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

#[tokio::test]
async fn health_is_serving_overall_and_for_the_worker_service() {
    let mut server = TestServer::start(test_settings()).await;
    let channel = server.channel().await;
    assert_eq!(health_status(channel.clone(), "").await.unwrap(), "Serving");
    assert_eq!(health_status(channel.clone(), "lote.v1.Worker").await.unwrap(), "Serving");
    let unknown = health_status(channel, "lote.v1.Nope").await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    server.stop();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn worker_reports_version_libtorch_and_device() {
    let mut server = TestServer::start(test_settings()).await;
    let info = WorkerClient::new(server.channel().await)
        .get_info(GetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert!(info.libtorch_version.starts_with("2.11.0"), "{}", info.libtorch_version);
    assert_eq!(info.device, "cpu");
    assert_eq!(info.dtype, "fp32");
    server.stop();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn reflection_lists_health_and_lote_services() {
    let mut server = TestServer::start(test_settings()).await;
    let services = list_services(&server).await;
    for expected in ["grpc.health.v1.Health", "lote.v1.Worker"] {
        assert!(services.iter().any(|s| s == expected), "{expected} missing from {services:?}");
    }
    server.stop();
    server.task.await.unwrap().unwrap();
}

async fn list_services(server: &TestServer) -> Vec<String> {
    let mut client = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses =
        client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response {response:?}")
    };
    list.service.into_iter().map(|s| s.name).collect()
}

#[tokio::test]
async fn metrics_endpoint_serves_build_info() {
    let mut server = TestServer::start(test_settings()).await;
    let addr = server.metrics_addr.expect("metrics enabled");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("lote_build_info{"), "{body}");
    server.stop();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn after_shutdown_the_server_returns_and_nothing_answers() {
    let mut server = TestServer::start(test_settings()).await;
    let channel = server.channel().await;
    assert_eq!(health_status(channel, "").await.unwrap(), "Serving");
    server.stop();
    tokio::time::timeout(Duration::from_secs(5), &mut server.task)
        .await
        .expect("serve returns after the shutdown future fires")
        .unwrap()
        .unwrap();
    let refused = tonic::transport::Channel::from_shared(server.url()).unwrap().connect().await;
    assert!(refused.is_err(), "nothing listens after shutdown");
    let metrics = tokio::net::TcpStream::connect(server.metrics_addr.unwrap()).await;
    assert!(metrics.is_err(), "metrics endpoint closed too");
}

#[tokio::test]
async fn health_flips_to_not_serving_while_draining() {
    let mut settings = test_settings();
    settings.server.drain_delay = Duration::from_millis(1500);
    let mut server = TestServer::start(settings).await;
    let channel = server.channel().await;
    assert_eq!(health_status(channel.clone(), "").await.unwrap(), "Serving");
    server.stop();
    // During the drain the server still answers, but says it is going away.
    let mut status = String::new();
    for _ in 0..50 {
        status = health_status(channel.clone(), "").await.unwrap();
        if status == "NotServing" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, "NotServing");
    assert_eq!(health_status(channel, "lote.v1.Worker").await.unwrap(), "NotServing");
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn in_flight_call_finishes_after_shutdown_starts() {
    let mut server = TestServer::start(test_settings()).await;
    let mut client = ServerReflectionClient::new(server.channel().await);
    // A bidirectional stream that is open when shutdown starts: the server must keep serving it.
    let (requests_tx, requests_rx) = tokio::sync::mpsc::channel(4);
    let list = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    requests_tx.send(list()).await.unwrap();
    let mut responses = client
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(requests_rx))
        .await
        .unwrap()
        .into_inner();
    assert!(responses.next().await.unwrap().is_ok());

    server.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!server.task.is_finished(), "the server waits for the open call");
    requests_tx.send(list()).await.unwrap();
    let answer = responses.next().await.expect("a second answer on the in-flight call");
    assert!(answer.is_ok(), "{answer:?}");
    drop(requests_tx);
    assert!(responses.next().await.is_none(), "the call ends normally");
    tokio::time::timeout(Duration::from_secs(5), &mut server.task)
        .await
        .expect("serve returns once the in-flight call is done")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn shutdown_timeout_bounds_a_call_that_never_ends() {
    let mut settings = test_settings();
    settings.server.shutdown_timeout = Duration::from_millis(300);
    let mut server = TestServer::start(settings).await;
    let mut client = ServerReflectionClient::new(server.channel().await);
    let (requests_tx, requests_rx) = tokio::sync::mpsc::channel::<ServerReflectionRequest>(1);
    let _responses = client
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(requests_rx))
        .await
        .unwrap();
    server.stop();
    tokio::time::timeout(Duration::from_secs(5), &mut server.task)
        .await
        .expect("serve returns after shutdown_timeout even with a call open")
        .unwrap()
        .unwrap();
    drop(requests_tx);
}
