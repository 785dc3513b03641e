//! API keys (`server.auth.api_keys_file`) on both transports of a real `lote serve`: without a
//! key or with a wrong one, every HTTP route answers OpenAI's 401 and every gRPC call
//! UNAUTHENTICATED, health excepted; with the key both answer, `lote infer` included
//! (LOTE_API_KEY); the key never appears in the logs, and a file holding a key instead of
//! its hash stops the worker with the line named.

use std::{io::Write, time::Duration};

use crate::common::{ServeProcess, health_status, lote_command};
use lote::grpc::pb::{self, models_client::ModelsClient};
use sha2::{Digest, Sha256};

const KEY: &str = "chave-secreta-ção-0123";

fn serve_command(keys_file: &std::path::Path) -> std::process::Command {
    let mut command = lote_command();
    command
        .env("LOTE__SERVER__GRPC_ADDR", "127.0.0.1:0")
        .env("LOTE__SERVER__METRICS_ADDR", "127.0.0.1:0")
        .env("LOTE__DEVICE__KIND", "cpu")
        .env("LOTE__SERVER__AUTH__API_KEYS_FILE", keys_file)
        // Everything every crate logs, the transport's frames included, must hold no key.
        .env("LOTE__LOG__FILTER", "trace");
    command
}

/// One HTTP/1.0 GET with an optional bearer key: (status, body).
fn http_get(addr: std::net::SocketAddr, path: &str, key: Option<&str>) -> (u16, serde_json::Value) {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n{auth}\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or_default())
}

fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

/// `lote infer` against the worker at `addr`; its stderr.
fn infer(addr: std::net::SocketAddr, key: Option<&str>) -> String {
    let mut command = lote_command();
    command.args(["infer", "--addr", &format!("http://{addr}")]);
    command.args(["--model", "nenhum", "--task", "feature-extraction", "--text", "olá"]);
    command.env_remove("LOTE_API_KEY");
    if let Some(key) = key {
        command.env("LOTE_API_KEY", key);
    }
    String::from_utf8(command.output().unwrap().stderr).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_guard_http_and_grpc_but_not_health_and_are_never_logged() {
    let mut keys = tempfile::NamedTempFile::new().unwrap();
    let hash: String = Sha256::digest(KEY).iter().map(|b| format!("{b:02x}")).collect();
    writeln!(keys, "# one key\n{hash}  -").unwrap();
    let mut process = ServeProcess::start(serve_command(keys.path()));
    let http = process.http_addr.expect("the HTTP API is on");

    let (status, body) = http_get(http, "/v1/models", None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("Authorization: Bearer"));
    let (status, body) = http_get(http, "/v1/models", Some("outra-chave"));
    assert_eq!(
        (status, &body["error"]["message"]),
        (401, &"the API key is not one of this server's keys".into())
    );
    assert_eq!(http_get(http, "/v1/nowhere", None).0, 401, "unknown routes are guarded too");
    let (status, body) = http_get(http, "/v1/models", Some(KEY));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");

    let channel = tonic::transport::Channel::from_shared(format!("http://{}", process.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(health_status(channel.clone(), "").await.unwrap(), "Serving", "health needs no key");
    let mut models = ModelsClient::new(channel);
    let refused = models.list_models(pb::ListModelsRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let wrong =
        models.list_models(with_key(pb::ListModelsRequest::default(), "x")).await.unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    assert_eq!(wrong.message(), "the API key is not one of this server's keys");
    models.list_models(with_key(pb::ListModelsRequest::default(), KEY)).await.unwrap();

    // `lote infer` sends LOTE_API_KEY: past the key, the worker says it has no such model.
    let addr = process.grpc_addr;
    let without = tokio::task::spawn_blocking(move || infer(addr, None)).await.unwrap();
    assert!(without.contains("Unauthenticated"), "{without}");
    let with = tokio::task::spawn_blocking(move || infer(addr, Some(KEY))).await.unwrap();
    assert!(with.contains("no model named `nenhum`"), "{with}");

    process.child.kill().unwrap();
    process.child.wait().unwrap();
    let logs: Vec<String> =
        std::iter::from_fn(|| process.stderr.recv_timeout(Duration::from_secs(5)).ok()).collect();
    assert!(logs.len() > 20, "the calls were logged at trace level: {logs:?}");
    assert!(
        logs.iter().all(|line| !line.contains(KEY) && !line.contains("outra-chave")),
        "{logs:?}"
    );
}

#[test]
fn a_keys_file_holding_a_key_instead_of_its_hash_stops_the_worker_naming_the_line() {
    let mut keys = tempfile::NamedTempFile::new().unwrap();
    writeln!(keys, "{KEY}").unwrap();
    let output = serve_command(keys.path()).arg("serve").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 1: not a sha256"), "{stderr}");
    assert!(!stderr.contains(KEY), "the key is not repeated: {stderr}");
}
