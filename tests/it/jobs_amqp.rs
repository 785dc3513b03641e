//! Jobs across workers through the real RabbitMQ and PostgreSQL on loopback (fresh database and
//! unique queue names per test): a 1,000-document job on two worker processes, one of them
//! killed mid-job, documents published straight to the queue by another service, cancel, and
//! poison and malformed messages ending in the dead-letter queue with their documents failed.

use crate::common;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use common::{
    TestServer, broker, fixture_model,
    jobs::{
        assert_every_document_once, jobs_client, phrase, results, submission, text_documents,
        two_workers, wait_for, wait_ready, watch_to_end, worker_config,
    },
    test_settings,
};
use lote::{
    Settings,
    engine::call::EngineError,
    jobs::{
        JobRecord, NewDocument,
        runtime::prepare_with,
        service::Submission,
        store::JobStore,
        wire::{self, DocumentMessage},
        worker::{Executor, Failure},
    },
    settings::{ModelSettings, Task},
};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_documents_on_two_workers_give_a_thousand_results() {
    let dir = tempfile::tempdir().unwrap();
    let (prefix, store) = (broker::unique_prefix(), broker::fresh_postgres().await);
    let config =
        worker_config(dir.path(), &prefix, &store, ("cls", "text-classification", "bert-cls"));
    let (a, b) = two_workers(&config).await;
    let mut client = jobs_client(a.grpc_addr).await;
    let request = submission("cls", "text-classification", "", text_documents(1000, phrase));
    let job = client.submit_job(request).await.unwrap().into_inner();
    // Watched on the other worker: both read the same store.
    let mut other = jobs_client(b.grpc_addr).await;
    let (done, watched) = watch_to_end(&mut other, &job.id).await;
    assert_eq!((done.state.as_str(), done.succeeded, done.failed), ("completed", 1000, 0));
    assert_eq!(watched.len(), 1000);
    assert_every_document_once(&results(&mut other, &job.id, -1).await, 1000);
    assert_eq!(broker::ready_messages(&format!("{prefix}.documents.cls")).await, 0);
    drop((a, b));
    broker::delete_queues(&prefix, &["cls"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (prefix, store) = (broker::unique_prefix(), broker::fresh_postgres().await);
    let config =
        worker_config(dir.path(), &prefix, &store, ("gpt2", "text-generation", "generation/gpt2"));
    let (mut a, b) = two_workers(&config).await;
    let mut client = jobs_client(b.grpc_addr).await;
    let params = r#"{"max_new_tokens": 24, "min_new_tokens": 24}"#;
    let request = submission("gpt2", "text-generation", params, text_documents(120, phrase));
    let job = client.submit_job(request).await.unwrap().into_inner();
    wait_for(&mut client, &job.id, |job| job.succeeded >= 10).await;
    common::send_signal(&a.child, libc::SIGKILL);
    let _ = a.child.wait();
    let (done, _) = watch_to_end(&mut client, &job.id).await;
    assert_eq!((done.state.as_str(), done.succeeded, done.failed), ("completed", 120, 0));
    assert_every_document_once(&results(&mut client, &job.id, -1).await, 120);
    drop(b);
    broker::delete_queues(&prefix, &["gpt2"]).await;
}

async fn amqp_server(model: ModelSettings) -> (TestServer, String) {
    let prefix = broker::unique_prefix();
    let mut settings = test_settings();
    settings.amqp.enabled = true;
    settings.amqp.queue_prefix = prefix.clone();
    settings.amqp.prefetch = 4;
    settings.store.url = broker::fresh_postgres().await;
    settings.models = vec![model];
    let server = TestServer::start(settings).await;
    wait_ready(server.grpc_addr).await;
    broker::wait_for_consumer(&format!("{prefix}.documents.{}", server_model(&prefix))).await;
    (server, prefix)
}

/// The one model every amqp_server test uses is named `m`.
fn server_model(_prefix: &str) -> &'static str {
    "m"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_is_not_computed_further() {
    let model = ModelSettings {
        name: "m".into(),
        task: Task::TextGeneration,
        path: fixture_model("generation/gpt2"),
        dtype: None,
    };
    let (server, prefix) = amqp_server(model).await;
    let mut client = jobs_client(server.grpc_addr).await;
    let params = r#"{"max_new_tokens": 40, "min_new_tokens": 40}"#;
    let request = submission("m", "text-generation", params, text_documents(200, phrase));
    let job = client.submit_job(request).await.unwrap().into_inner();
    wait_for(&mut client, &job.id, |job| job.succeeded >= 1).await;
    let cancelled =
        client.cancel_job(lote::grpc::pb::CancelJobRequest { id: job.id.clone() }).await;
    let cancelled = cancelled.unwrap().into_inner();
    assert_eq!(cancelled.state, "cancelled");
    // The rest of the queue drains without computing.
    for _ in 0..300 {
        if broker::ready_messages(&format!("{prefix}.documents.m")).await == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let later = client.get_job(lote::grpc::pb::GetJobRequest { id: job.id.clone() }).await;
    let later = later.unwrap().into_inner();
    assert_eq!(later.state, "cancelled");
    assert!(later.succeeded < 200);
    let all = results(&mut client, &job.id, -1).await;
    assert_eq!(all.len(), 200, "every document accounted for");
    assert_eq!(all.iter().filter(|r| r.state == "cancelled").count() as u64 + later.succeeded, 200);
    broker::delete_queues(&prefix, &["m"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_service_publishes_documents_straight_to_the_queue() {
    let model = ModelSettings {
        name: "m".into(),
        task: Task::FeatureExtraction,
        path: fixture_model("bert-embed-mean"),
        dtype: None,
    };
    let (server, prefix) = amqp_server(model).await;
    let mut client = jobs_client(server.grpc_addr).await;
    let mut request = submission("m", "feature-extraction", r#"{"normalize": true}"#, vec![]);
    request.external_documents = 3;
    let job = client.submit_job(request).await.unwrap().into_inner();
    assert_eq!((job.total, job.state.as_str()), (3, "queued"));
    let message = |custom_id: &str, text: &str| DocumentMessage {
        job_id: job.id.clone(),
        custom_id: custom_id.into(),
        text: Some(text.into()),
        question: None,
        text_pair: None,
        query: None,
        documents: None,
        context: None,
        params: None,
    };
    let json = format!(r#"{{"job_id": "{}", "custom_id": "a", "text": "Olá, você"}}"#, job.id);
    broker::publish_raw(&prefix, "m", json.as_bytes(), wire::JSON).await;
    broker::publish_raw(&prefix, "m", &message("b", "São Paulo").encode_json(), wire::JSON).await;
    broker::publish_raw(&prefix, "m", &message("c", "maçã").encode_protobuf(), wire::PROTOBUF)
        .await;
    let (done, _) = watch_to_end(&mut client, &job.id).await;
    assert_eq!((done.state.as_str(), done.succeeded), ("completed", 3));
    let all = results(&mut client, &job.id, -1).await;
    assert_every_document_once(&all, 3);
    broker::delete_queues(&prefix, &["m"]).await;
}

/// A stand-in model: echoes its text; "boom" crashes it (a failure that is transient in a
/// batch and permanent alone, as the engine classes a model panic); "busy" never succeeds.
struct Stand {
    crashes_in_batch: AtomicUsize,
}

#[tonic::async_trait]
impl Executor for Stand {
    fn check(&self, _model: &str, _task: Task, _params: &Value) -> Result<(), EngineError> {
        Ok(())
    }

    async fn execute(
        &self,
        _job: &JobRecord,
        input: &Value,
        _params: &Value,
        alone: bool,
    ) -> Result<Value, Failure> {
        match input["text"].as_str() {
            Some("boom") if alone => Err(Failure::Permanent("the model crashed".into())),
            Some("boom") => {
                self.crashes_in_batch.fetch_add(1, Ordering::Relaxed);
                Err(Failure::Transient("the model crashed".into()))
            }
            Some("busy") => Err(Failure::Transient("always busy".into())),
            other => Ok(json!({ "echo": other })),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_and_malformed_messages_end_in_the_dead_letter_queue_with_reasons() {
    let prefix = broker::unique_prefix();
    let mut settings = Settings::default();
    settings.amqp.enabled = true;
    settings.amqp.queue_prefix = prefix.clone();
    settings.amqp.delivery_limit = 3;
    settings.amqp.prefetch = 8;
    settings.models = vec![ModelSettings {
        name: "stand".into(),
        task: Task::TextClassification,
        path: "/nowhere".into(),
        dtype: None,
    }];
    let store = JobStore::connect(&broker::fresh_postgres().await).await.unwrap();
    let stand = Arc::new(Stand { crashes_in_batch: AtomicUsize::new(0) });
    let (jobs, consumers) = prepare_with(&settings, store.clone(), stand.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let consuming = tokio::spawn(consumers.run(stopped));
    broker::wait_for_consumer(&format!("{prefix}.documents.stand")).await;

    let texts = ["um", "boom", "dois", "busy", "três"];
    let documents = texts
        .iter()
        .map(|t| NewDocument { custom_id: (*t).into(), input: json!({ "text": t }), params: None })
        .collect();
    let job = jobs
        .submit(Submission {
            task: Task::TextClassification,
            model: "stand".into(),
            params: Value::Null,
            documents,
            idempotency_key: None,
            external_documents: 0,
        })
        .await
        .unwrap();
    for (body, content_type) in [
        (&b"not json at all"[..], wire::JSON),
        (&br#"{"job_id": "x", "custom_id": "y", "text": 7}"#[..], wire::JSON),
        (&b"{\"job_id\": \"x\", \"custom_id\": \"y\", \"text\": \"\xff\xfe\"}"[..], wire::JSON),
        (&br#"{"job_id": "job_unknown", "custom_id": "y", "text": "x"}"#[..], wire::JSON),
    ] {
        broker::publish_raw(&prefix, "stand", body, content_type).await;
    }
    let mut done = None;
    for _ in 0..600 {
        let now = store.job(&job.id).await.unwrap().unwrap();
        if now.state.is_final() {
            done = Some(now);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let done = done.expect("the job ends");
    assert_eq!((done.state.as_str(), done.succeeded, done.failed), ("completed", 3, 2));
    let boom = store.document(&job.id, "boom").await.unwrap().unwrap();
    assert_eq!(boom.error.as_deref(), Some("the model crashed"));
    assert!(stand.crashes_in_batch.load(Ordering::Relaxed) >= 1, "it crashed in a batch first");
    let busy = store.document(&job.id, "busy").await.unwrap().unwrap();
    assert_eq!(busy.error.as_deref(), Some("dead-lettered: the delivery limit was reached"));
    for text in ["um", "dois", "três"] {
        let document = store.document(&job.id, text).await.unwrap().unwrap();
        assert_eq!(document.result.unwrap()["echo"], *text, "batch-mates of the poison succeed");
    }
    // 4 malformed or unknown, the poison document, and the one past the delivery limit.
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead.extend(broker::dead_letters(&prefix).await);
        if dead.len() >= 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        dead.len(),
        6,
        "{:?}",
        dead.iter().map(|d| String::from_utf8_lossy(d)).collect::<Vec<_>>()
    );
    let _ = stop.send(true);
    consuming.await.unwrap();
    broker::delete_queues(&prefix, &["stand"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_cancelled_by_the_broker_subscribes_again() {
    let model = ModelSettings {
        name: "m".into(),
        task: Task::FeatureExtraction,
        path: fixture_model("bert-embed-mean"),
        dtype: None,
    };
    let (server, prefix) = amqp_server(model).await;
    // Deleting the queue cancels the worker's consumer on it (a broker-side cancel).
    let queue = format!("{prefix}.documents.m");
    let connection = broker::connect().await;
    let channel = connection.create_channel().await.unwrap();
    channel.queue_delete(queue.as_str().into(), Default::default()).await.unwrap();
    let _ = connection.close(200, "done".into()).await;
    broker::wait_for_consumer(&queue).await;
    let mut client = jobs_client(server.grpc_addr).await;
    let request = submission("m", "feature-extraction", "", text_documents(5, phrase));
    let job = client.submit_job(request).await.unwrap().into_inner();
    let (done, _) = watch_to_end(&mut client, &job.id).await;
    assert_eq!((done.state.as_str(), done.succeeded), ("completed", 5));
    broker::delete_queues(&prefix, &["m"]).await;
}
