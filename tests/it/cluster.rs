//! A rolling update of a three-worker fleet under a running job, on one machine: the real
//! RabbitMQ and PostgreSQL on loopback, three `lote serve` processes. Each worker in turn gets
//! SIGTERM and is started again, as Kubernetes does; its health must say NOT_SERVING before it
//! goes, it must exit cleanly, and the job must end with every document exactly once.
//!
//! The job's documents are published to the queue in waves (a job of external documents), one
//! wave just before each SIGTERM and the last after the final restart, so every restart happens
//! with documents in flight and the job still running, however fast the machine is.

use crate::common;

use std::time::{Duration, Instant};

use common::{
    ServeProcess, broker, health_status,
    jobs::{
        assert_every_document_once, jobs_client, phrase, results, submission, wait_for, wait_ready,
        watch_to_end, worker, worker_config,
    },
    send_signal, wait_exit,
};
use lote::jobs::wire::{self, DocumentMessage};
use tonic::transport::Channel;

const WORKERS: usize = 3;
/// One wave to start, one before each restart, one after the last.
const WAVES: usize = WORKERS + 2;
const WAVE: usize = 150;
const DOCUMENTS: usize = WAVES * WAVE;

/// A worker that drains for a second after SIGTERM (long enough to be seen NOT_SERVING).
fn start_worker(config: &std::path::Path) -> ServeProcess {
    let mut command = worker(config);
    command.env("LOTE__SERVER__DRAIN_DELAY", "1s").env("LOTE__SERVER__SHUTDOWN_TIMEOUT", "60s");
    ServeProcess::start(command)
}

/// Polls the worker's overall health until it stops saying SERVING; returns what it said then.
async fn health_after_sigterm(addr: std::net::SocketAddr) -> String {
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = health_status(channel.clone(), "").await;
        match status.as_deref() {
            Ok("Serving") if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Ok(other) => return other.to_string(),
            Err(error) => return format!("unreachable: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_a_running_job_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (prefix, store) = (broker::unique_prefix(), broker::fresh_postgres().await);
    let config =
        worker_config(dir.path(), &prefix, &store, ("gpt2", "text-generation", "generation/gpt2"));
    let mut fleet: Vec<ServeProcess> = (0..WORKERS).map(|_| start_worker(&config)).collect();
    for process in &fleet {
        wait_ready(process.grpc_addr).await;
    }
    let mut client = jobs_client(fleet[0].grpc_addr).await;
    let params = r#"{"max_new_tokens": 16, "min_new_tokens": 16}"#;
    let mut request = submission("gpt2", "text-generation", params, vec![]);
    request.external_documents = DOCUMENTS as u32;
    let job = client.submit_job(request).await.unwrap().into_inner();
    let publish_wave = |wave: usize| {
        let bodies: Vec<Vec<u8>> = (wave * WAVE..(wave + 1) * WAVE)
            .map(|i| {
                DocumentMessage {
                    job_id: job.id.clone(),
                    custom_id: format!("doc-{i}"),
                    text: Some(phrase(i)),
                    question: None,
                    text_pair: None,
                    query: None,
                    documents: None,
                    context: None,
                    params: None,
                }
                .encode_json()
            })
            .collect();
        let prefix = prefix.clone();
        async move { broker::publish_many(&prefix, "gpt2", &bodies, wire::JSON).await }
    };
    publish_wave(0).await;
    wait_for(&mut client, &job.id, |job| job.succeeded >= 20).await;

    for slot in 0..WORKERS {
        publish_wave(slot + 1).await;
        // Ask a worker that stays up about the job's progress.
        let mut client = jobs_client(fleet[(slot + 1) % WORKERS].grpc_addr).await;
        let before = wait_for(&mut client, &job.id, |_| true).await;
        assert_eq!(before.state, "running", "worker {slot} is restarted while the job runs");
        let old = &mut fleet[slot];
        send_signal(&old.child, libc::SIGTERM);
        assert_eq!(health_after_sigterm(old.grpc_addr).await, "NotServing", "worker {slot}");
        let code =
            tokio::task::block_in_place(|| wait_exit(&mut old.child, Duration::from_secs(90)));
        assert_eq!(code, Some(0), "worker {slot} exits cleanly after SIGTERM");
        // The child has exited, so its stderr closes and the reader ends the channel.
        let logs: Vec<String> =
            std::iter::from_fn(|| old.stderr.recv_timeout(Duration::from_secs(5)).ok()).collect();
        assert!(
            !logs.iter().any(|l| l.contains("still in flight after the shutdown timeout")),
            "worker {slot} finished its in-flight documents: {logs:?}"
        );
        let new = start_worker(&config);
        wait_ready(new.grpc_addr).await;
        fleet[slot] = new;
    }

    publish_wave(WAVES - 1).await;
    publish_wave(WAVES - 1).await;
    let mut client = jobs_client(fleet[0].grpc_addr).await;
    let (done, _) = watch_to_end(&mut client, &job.id).await;
    assert_eq!(
        (done.state.as_str(), done.succeeded, done.failed),
        ("completed", DOCUMENTS as u64, 0)
    );
    assert_every_document_once(&results(&mut client, &job.id, -1).await, DOCUMENTS);
    assert_eq!(broker::ready_messages(&format!("{prefix}.documents.gpt2")).await, 0);
    drop(fleet);
    broker::delete_queues(&prefix, &["gpt2"]).await;
}
