//! Jobs on a single node: SQLite and the in-process queue, with the tiny fixture models. Every
//! document gets exactly one result; bad jobs are refused with their codes; a cancelled job
//! stops computing; a worker killed mid-job picks its documents up again when it restarts.

use crate::common;

use common::{
    ServeProcess, fixture_model,
    jobs::{
        assert_every_document_once, jobs_client, results, submission, text_documents, wait_for,
        wait_ready, watch_to_end,
    },
    start_ready, test_settings,
};
use lote::{
    Settings,
    grpc::pb,
    settings::{ModelSettings, Task},
};
use tonic::Code;

fn settings() -> Settings {
    let mut settings = test_settings();
    settings.models = vec![
        ModelSettings {
            name: "embed".into(),
            task: Task::FeatureExtraction,
            path: fixture_model("bert-embed-mean"),
            dtype: None,
        },
        ModelSettings {
            name: "gpt2".into(),
            task: Task::TextGeneration,
            path: fixture_model("generation/gpt2"),
            dtype: None,
        },
    ];
    settings
}

fn phrase(i: usize) -> String {
    let words = ["ação", "São Paulo", "você", "maçã", "pão", "coração", "João"];
    (0..1 + i % 9).map(|j| words[(i + j) % words.len()]).collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_with_one_result_per_document() {
    let server = start_ready(settings()).await;
    let mut client = jobs_client(server.grpc_addr).await;
    let request = submission(
        "embed",
        "feature-extraction",
        r#"{"normalize": true}"#,
        text_documents(200, phrase),
    );
    let job = client.submit_job(request).await.unwrap().into_inner();
    assert_eq!((job.total, job.pending), (200, 200));
    assert!(["queued", "running"].contains(&job.state.as_str()), "{job:?}");

    let (job, watched) = watch_to_end(&mut client, &job.id).await;
    assert_eq!(
        (job.state.as_str(), job.succeeded, job.failed, job.pending),
        ("completed", 200, 0, 0)
    );
    assert!(job.started_ms >= job.created_ms && job.finished_ms >= job.started_ms);
    let mut watched_ids = watched.clone();
    watched_ids.sort();
    watched_ids.dedup();
    assert_eq!(watched_ids.len(), 200, "the watch carried each document's result once");

    let all = results(&mut client, &job.id, -1).await;
    assert_every_document_once(&all, 200);
    let first: serde_json::Value = serde_json::from_str(&all[0].result_json).unwrap();
    assert_eq!(first["model"]["name"], "bert-embed-mean");
    assert_eq!(first["params"]["normalize"], true);
    let norm: f64 =
        first["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap().powi(2)).sum();
    assert!((norm - 1.0).abs() < 1e-4);
    // Resuming after the 100th gives the other 100.
    let rest = results(&mut client, &job.id, all[99].seq).await;
    assert_eq!(rest.len(), 100);
    assert_eq!(rest[0].custom_id, all[100].custom_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jobs_are_refused_with_their_codes_and_the_worker_goes_on() {
    let server = start_ready(settings()).await;
    let mut client = jobs_client(server.grpc_addr).await;
    let failure = |result: Result<tonic::Response<pb::Job>, tonic::Status>| {
        let status = result.expect_err("refused");
        (status.code(), status.message().to_string())
    };
    let two = || text_documents(2, phrase);

    let empty = submission("embed", "feature-extraction", "", vec![]);
    assert_eq!(
        failure(client.submit_job(empty).await),
        (Code::InvalidArgument, "a job needs at least one document".into())
    );
    let mut duplicate = text_documents(3, phrase);
    duplicate[2].custom_id = "doc-0".into();
    assert_eq!(
        failure(client.submit_job(submission("embed", "feature-extraction", "", duplicate)).await),
        (
            Code::InvalidArgument,
            "documents[2]: custom_id `doc-0` is already used by documents[0]".into()
        )
    );
    assert_eq!(
        failure(client.submit_job(submission("nope", "feature-extraction", "", two())).await),
        (Code::NotFound, "no model named `nope` is served here".into())
    );
    assert_eq!(
        failure(client.submit_job(submission("embed", "summarization", "", two())).await),
        (
            Code::FailedPrecondition,
            "model `embed` serves feature-extraction, not summarization".into()
        )
    );
    let (code, message) =
        failure(client.submit_job(submission("embed", "speech-recognition", "", two())).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.starts_with("task: "), "{message}");
    let (code, message) = failure(
        client
            .submit_job(submission("embed", "feature-extraction", r#"{"pooling": 3}"#, two()))
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.starts_with("bad params"), "{message}");
    assert_eq!(
        failure(client.submit_job(submission("embed", "feature-extraction", "[1]", two())).await),
        (Code::InvalidArgument, "params_json must be a JSON object".into())
    );
    let missing = client.get_job(pb::GetJobRequest { id: "job_x".into() }).await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
    let missing = client.cancel_job(pb::CancelJobRequest { id: "job_x".into() }).await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);

    // One bad document fails alone, with its reason; a job of only bad ones ends failed.
    let mut mixed = text_documents(4, phrase);
    mixed[1].text = "   ".into();
    let job =
        client.submit_job(submission("embed", "feature-extraction", "", mixed)).await.unwrap();
    let (job, _) = watch_to_end(&mut client, &job.into_inner().id).await;
    assert_eq!((job.state.as_str(), job.succeeded, job.failed), ("completed", 3, 1));
    let all = results(&mut client, &job.id, -1).await;
    let bad = all.iter().find(|r| r.custom_id == "doc-1").unwrap();
    assert_eq!((bad.state.as_str(), bad.error.as_str()), ("failed", "`text` is empty"));
    let mut hopeless = text_documents(2, phrase);
    hopeless.iter_mut().for_each(|d| d.text = String::new());
    let job =
        client.submit_job(submission("embed", "feature-extraction", "", hopeless)).await.unwrap();
    let (job, _) = watch_to_end(&mut client, &job.into_inner().id).await;
    assert_eq!((job.state.as_str(), job.failed), ("failed", 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_gives_the_same_job_and_jobs_are_listed_by_page() {
    let server = start_ready(settings()).await;
    let mut client = jobs_client(server.grpc_addr).await;
    let mut request = submission("embed", "feature-extraction", "", text_documents(3, phrase));
    request.idempotency_key = "nightly-2026-11-26".into();
    let first = client.submit_job(request.clone()).await.unwrap().into_inner();
    let again = client.submit_job(request).await.unwrap().into_inner();
    assert_eq!(first.id, again.id);
    for _ in 0..4 {
        let request = submission("embed", "feature-extraction", "", text_documents(1, phrase));
        client.submit_job(request).await.unwrap();
    }
    wait_for(&mut client, &first.id, |job| job.state == "completed").await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_jobs(pb::ListJobsRequest {
                state: String::new(),
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.jobs.len() <= 2);
        seen.extend(page.jobs.into_iter().map(|j| j.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 5, "five distinct jobs, newest first: {seen:?}");
    assert_eq!(seen.last().unwrap(), &first.id);
    let bad_state = client
        .list_jobs(pb::ListJobsRequest {
            state: "done".into(),
            page_size: 2,
            page_token: String::new(),
        })
        .await;
    assert_eq!(bad_state.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_stops_computing() {
    let mut settings = settings();
    settings.amqp.prefetch = 2;
    let server = start_ready(settings).await;
    let mut client = jobs_client(server.grpc_addr).await;
    let params = r#"{"max_new_tokens": 40, "min_new_tokens": 40}"#;
    let request = submission("gpt2", "text-generation", params, text_documents(60, phrase));
    let job = client.submit_job(request).await.unwrap().into_inner();
    wait_for(&mut client, &job.id, |job| job.succeeded >= 1).await;
    let cancelled = client.cancel_job(pb::CancelJobRequest { id: job.id.clone() }).await.unwrap();
    let cancelled = cancelled.into_inner();
    assert_eq!(cancelled.state, "cancelled");
    assert!(cancelled.succeeded < 60, "{cancelled:?}");
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let later =
        client.get_job(pb::GetJobRequest { id: job.id.clone() }).await.unwrap().into_inner();
    assert_eq!(later.state, "cancelled");
    assert_eq!(later.succeeded, cancelled.succeeded, "nothing is computed after the cancel");
    let all = results(&mut client, &job.id, -1).await;
    assert_eq!(all.len(), 60, "every document is accounted for");
    let left = all.iter().filter(|r| r.state == "cancelled").count() as u64;
    assert_eq!(left + later.succeeded + later.failed, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_finishes_it_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lote.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ngrpc_addr = \"127.0.0.1:0\"\nmetrics_addr = \"127.0.0.1:0\"\n\
             [device]\nkind = \"cpu\"\n[amqp]\nprefetch = 4\n\
             [store]\nurl = \"sqlite://{}\"\n\
             [[models]]\nname = \"gpt2\"\ntask = \"text-generation\"\npath = \"{}\"\n",
            dir.path().join("jobs.db").display(),
            fixture_model("generation/gpt2").display()
        ),
    )
    .unwrap();
    let command = || {
        let mut command = common::lote_command();
        command.env_remove("LOTE__STORE__URL").arg("--config").arg(&config);
        command
    };
    let mut first = ServeProcess::start(command());
    wait_ready(first.grpc_addr).await;
    let mut client = jobs_client(first.grpc_addr).await;
    let params = r#"{"max_new_tokens": 30, "min_new_tokens": 30}"#;
    let request = submission("gpt2", "text-generation", params, text_documents(40, phrase));
    let job = client.submit_job(request).await.unwrap().into_inner();
    wait_for(&mut client, &job.id, |job| job.succeeded >= 2).await;
    common::send_signal(&first.child, libc::SIGKILL);
    let _ = first.child.wait();

    let second = ServeProcess::start(command());
    wait_ready(second.grpc_addr).await;
    let mut client = jobs_client(second.grpc_addr).await;
    let (done, _) = watch_to_end(&mut client, &job.id).await;
    assert_eq!((done.state.as_str(), done.succeeded), ("completed", 40));
    assert_every_document_once(&results(&mut client, &job.id, -1).await, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_jobs_are_deleted_after_their_retention_and_live_ones_are_not() {
    let mut settings = settings();
    settings.jobs.retention = std::time::Duration::from_millis(1500);
    let server = start_ready(settings).await;
    let mut client = jobs_client(server.grpc_addr).await;
    let request = submission("embed", "feature-extraction", "{}", text_documents(3, phrase));
    let ended = client.submit_job(request).await.unwrap().into_inner();
    let (job, _) = watch_to_end(&mut client, &ended.id).await;
    assert_eq!(job.state, "completed");
    // A job still running (documents published later by their sender) is kept however old.
    let live = pb::SubmitJobRequest {
        external_documents: 5,
        ..submission("embed", "feature-extraction", "{}", vec![])
    };
    let live = client.submit_job(live).await.unwrap().into_inner();
    let get = |id: &str| pb::GetJobRequest { id: id.into() };
    assert!(client.get_job(get(&ended.id)).await.is_ok(), "kept within its retention");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match client.get_job(get(&ended.id)).await {
            Err(status) if status.code() == Code::NotFound => break,
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            other => panic!("the ended job was not deleted after its retention: {other:?}"),
        }
    }
    let results = client
        .get_results(pb::GetResultsRequest { id: ended.id.clone(), ..Default::default() })
        .await;
    assert_eq!(results.unwrap_err().code(), Code::NotFound);
    assert_eq!(client.get_job(get(&live.id)).await.unwrap().into_inner().state, "queued");
}
