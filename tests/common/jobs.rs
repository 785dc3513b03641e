//! Helpers for the job tests: documents, waiting for a job to end, reading its results.

use std::time::Duration;

use lote::grpc::pb::{self, jobs_client::JobsClient};
use tonic::transport::Channel;

pub fn text_documents(count: usize, text: impl Fn(usize) -> String) -> Vec<pb::JobDocument> {
    (0..count)
        .map(|i| pb::JobDocument {
            custom_id: format!("doc-{i}"),
            text: text(i),
            ..Default::default()
        })
        .collect()
}

pub fn submission(
    model: &str,
    task: &str,
    params: &str,
    documents: Vec<pb::JobDocument>,
) -> pb::SubmitJobRequest {
    pb::SubmitJobRequest {
        model: model.into(),
        task: task.into(),
        params_json: params.into(),
        documents,
        ..Default::default()
    }
}

pub async fn jobs_client(addr: std::net::SocketAddr) -> JobsClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    JobsClient::new(channel).max_decoding_message_size(usize::MAX)
}

/// Follows WatchJob until the job ends; returns its last state and the custom ids of the
/// documents whose results the watch carried.
pub async fn watch_to_end(client: &mut JobsClient<Channel>, id: &str) -> (pb::Job, Vec<String>) {
    let mut stream =
        client.watch_job(pb::WatchJobRequest { id: id.into() }).await.unwrap().into_inner();
    let mut last = None;
    let mut documents = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let next = tokio::time::timeout_at(deadline, stream.message()).await;
        match next.expect("the job ends within 5 minutes").unwrap() {
            Some(event) => {
                if let Some(document) = event.document {
                    documents.push(document.custom_id);
                }
                last = event.job;
            }
            None => break,
        }
    }
    (last.expect("the watch sent the job"), documents)
}

/// Polls GetJob until `done` holds for it.
pub async fn wait_for(
    client: &mut JobsClient<Channel>,
    id: &str,
    done: impl Fn(&pb::Job) -> bool,
) -> pb::Job {
    for _ in 0..3000 {
        let job = client.get_job(pb::GetJobRequest { id: id.into() }).await.unwrap().into_inner();
        if done(&job) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {id} did not get there in 5 minutes");
}

pub async fn results(
    client: &mut JobsClient<Channel>,
    id: &str,
    after: i64,
) -> Vec<pb::DocumentResult> {
    let request = pb::GetResultsRequest { id: id.into(), after, from_start: after < 0 };
    let mut stream = client.get_results(request).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(result) = stream.message().await.unwrap() {
        out.push(result);
    }
    out
}

/// Exactly one result per custom id, `count` of them, all succeeded.
pub fn assert_every_document_once(results: &[pb::DocumentResult], count: usize) {
    let mut ids: Vec<&str> = results.iter().map(|r| r.custom_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "distinct documents with results");
    assert_eq!(results.len(), count, "one result per document");
    for result in results {
        assert_eq!(result.state, "succeeded", "{result:?}");
        assert!(!result.result_json.is_empty());
    }
}

/// Waits until the worker at `addr` has loaded every model (health SERVING).
pub async fn wait_ready(addr: std::net::SocketAddr) {
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    for _ in 0..1200 {
        if super::health_status(channel.clone(), "").await.ok().as_deref() == Some("Serving") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the worker at {addr} did not load its models in 60 s");
}

/// A worker process's settings file: RabbitMQ, PostgreSQL, one model (name, task, fixture).
pub fn worker_config(
    dir: &std::path::Path,
    prefix: &str,
    store: &str,
    model: (&str, &str, &str),
) -> std::path::PathBuf {
    let (name, task, fixture) = model;
    let path = dir.join(format!("{prefix}.toml"));
    std::fs::write(
        &path,
        format!(
            "[server]\ngrpc_addr = \"127.0.0.1:0\"\nmetrics_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\n\
             [device]\nkind = \"cpu\"\nthreads = 1\n\
             [amqp]\nenabled = true\nqueue_prefix = \"{prefix}\"\nprefetch = 16\n\
             [store]\nurl = \"{store}\"\n\
             [[models]]\nname = \"{name}\"\ntask = \"{task}\"\npath = \"{}\"\n",
            super::fixture_model(fixture).display()
        ),
    )
    .unwrap();
    path
}

/// `lote --config CONFIG` (add `serve` with [`super::ServeProcess::start`]).
pub fn worker(config: &std::path::Path) -> std::process::Command {
    let mut command = super::lote_command();
    command.env_remove("LOTE__STORE__URL").arg("--config").arg(config);
    command
}

pub async fn two_workers(config: &std::path::Path) -> (super::ServeProcess, super::ServeProcess) {
    let a = super::ServeProcess::start(worker(config));
    let b = super::ServeProcess::start(worker(config));
    wait_ready(a.grpc_addr).await;
    wait_ready(b.grpc_addr).await;
    (a, b)
}

/// Portuguese words with accents, 1 to 11 of them.
pub fn phrase(i: usize) -> String {
    let words = ["ação", "São Paulo", "você", "maçã", "pão", "coração", "João", "avó"];
    (0..1 + i % 11).map(|j| words[(i * 7 + j) % words.len()]).collect::<Vec<_>>().join(" ")
}
