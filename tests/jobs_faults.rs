//! Broker and database faults mid-job, in a test binary of their own (they touch every
//! connection on the machine): RabbitMQ closes all connections, then PostgreSQL restarts; the
//! worker recovers from both and the job ends with every document's result exactly once.

mod common;

use std::{process::Command, time::Duration};

use common::{
    TestServer, broker, fixture_model,
    jobs::{
        assert_every_document_once, jobs_client, results, submission, text_documents, wait_for,
        wait_ready, watch_to_end,
    },
    test_settings,
};
use lote::{
    grpc::pb::GetJobRequest,
    settings::{ModelSettings, Task},
};

fn run(program: &str, args: &[&str]) {
    let status =
        Command::new(program).args(args).status().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed");
}

fn postgres_cluster() -> String {
    let versions = std::fs::read_dir("/etc/postgresql").expect("a Debian PostgreSQL cluster");
    versions
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .max()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_closing_connections_and_postgres_restarting_lose_nothing() {
    let prefix = broker::unique_prefix();
    let mut settings = test_settings();
    settings.amqp.enabled = true;
    settings.amqp.queue_prefix = prefix.clone();
    settings.amqp.prefetch = 8;
    settings.store.url = broker::fresh_postgres().await;
    settings.models = vec![ModelSettings {
        name: "gpt2".into(),
        task: Task::TextGeneration,
        path: fixture_model("generation/gpt2"),
        dtype: None,
    }];
    let server = TestServer::start(settings).await;
    wait_ready(server.grpc_addr).await;
    broker::wait_for_consumer(&format!("{prefix}.documents.gpt2")).await;
    let mut client = jobs_client(server.grpc_addr).await;
    let params = r#"{"max_new_tokens": 20, "min_new_tokens": 20}"#;
    let texts = text_documents(300, |i| format!("Documento número {i} de São Paulo"));
    let job =
        client.submit_job(submission("gpt2", "text-generation", params, texts)).await.unwrap();
    let job = job.into_inner();

    wait_for(&mut client, &job.id, |job| job.succeeded >= 20).await;
    run("rabbitmqctl", &["close_all_connections", "lote test: broker closes every connection"]);
    wait_for(&mut client, &job.id, |job| job.succeeded >= 120).await;
    run("pg_ctlcluster", &["--skip-systemctl-redirect", &postgres_cluster(), "main", "restart"]);
    // While PostgreSQL comes back, calls may fail; the job itself must still end whole.
    let mut done = None;
    for _ in 0..600 {
        let connect = tokio::time::timeout(Duration::from_secs(5), jobs_client(server.grpc_addr));
        if let Ok(mut client) = connect.await
            && let Ok(response) = client.get_job(GetJobRequest { id: job.id.clone() }).await
            && ["completed", "failed"].contains(&response.get_ref().state.as_str())
        {
            done = Some(response.into_inner());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let done = done.expect("the job ends after the faults");
    assert_eq!((done.state.as_str(), done.succeeded, done.failed), ("completed", 300, 0));
    let (watched, _) = watch_to_end(&mut client, &job.id).await;
    assert_eq!(watched.succeeded, 300);
    assert_every_document_once(&results(&mut client, &job.id, -1).await, 300);
    broker::delete_queues(&prefix, &["gpt2"]).await;
}
