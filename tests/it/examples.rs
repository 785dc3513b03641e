//! The Python examples in examples/python run against a live worker, so they cannot rot: the
//! gRPC client (stubs generated from proto/ at run time) embeds Portuguese text and shows a bad
//! input's status, and the AMQP publisher (pika) sends a job's documents straight to the
//! worker's quorum queue, in JSON and in protobuf, and reads every result back.
//! Python comes from the venv `make test` prepares (LOTE_VENV, else .venv): grpcio,
//! grpcio-tools and pika are in scripts/requirements.txt. A missing venv or package fails the
//! test with its name.

use crate::common;

use std::{path::PathBuf, process::Command};

use common::{
    ServeProcess, broker,
    jobs::{wait_ready, worker, worker_config},
    temp_store_url, venv_python,
};
use serde_json::Value;

/// Runs an example script; its stdout is one JSON object.
fn example(script: &str, args: &[&str]) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/python").join(script);
    let output = Command::new(venv_python(&["grpc", "grpc_tools", "pika"]))
        .arg(path)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{script}: {e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_grpc_client_and_amqp_publisher_work_against_a_live_worker() {
    // One embedding model, jobs on RabbitMQ under a queue prefix of its own, SQLite state.
    let (dir, prefix) = (tempfile::tempdir().unwrap(), broker::unique_prefix());
    let model = ("embed", "feature-extraction", "bert-embed-mean");
    let process =
        ServeProcess::start(worker(&worker_config(dir.path(), &prefix, &temp_store_url(), model)));
    wait_ready(process.grpc_addr).await;
    let addr = process.grpc_addr.to_string();

    let client = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || {
            example(
                "grpc_client.py",
                &["--addr", &addr, "--text", "O médico não pôde vir à reunião.", "--show-error"],
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(client["model"], "embed");
    assert_eq!(client["task"], "feature-extraction");
    assert_eq!(client["results"].as_array().unwrap().len(), 1, "{client}");
    assert_eq!(client["bad_input"]["code"], "INVALID_ARGUMENT", "{client}");

    for content_type in ["json", "protobuf"] {
        let published = tokio::task::spawn_blocking({
            let (addr, prefix) = (addr.clone(), prefix.clone());
            move || {
                example(
                    "amqp_publisher.py",
                    &[
                        "--addr",
                        &addr,
                        "--amqp-url",
                        broker::AMQP_URL,
                        "--queue-prefix",
                        &prefix,
                        "--model",
                        "embed",
                        "--count",
                        "25",
                        "--content-type",
                        content_type,
                    ],
                )
            }
        })
        .await
        .unwrap();
        assert_eq!(published["queue"], format!("{prefix}.documents.embed"));
        assert_eq!(published["state"], "completed", "{published}");
        assert_eq!(
            (&published["succeeded"], &published["failed"], &published["results"]),
            (&Value::from(25), &Value::from(0), &Value::from(25)),
            "{content_type}: {published}"
        );
        assert_eq!(published["distinct_custom_ids"], 25);
    }
    drop(process);
    broker::delete_queues(&prefix, &["embed"]).await;
}
