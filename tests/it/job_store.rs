//! The job store under contention on the real PostgreSQL: workers settling documents while
//! the job is cancelled and its outbox marked, the writes that once deadlocked each other.

use crate::common;

use common::broker::fresh_postgres;
use lote::jobs::{NewDocument, NewJob, new_job_id, store::JobStore};
use lote::settings::Task;
use serde_json::json;

const DOCUMENTS: usize = 120;
const SETTLERS: usize = 8;

async fn job_with_documents(store: &JobStore) -> String {
    let job = NewJob {
        id: new_job_id(),
        idempotency_key: None,
        task: Task::TextGeneration,
        model: "m".into(),
        params: json!({}),
        external: false,
        arriving_later: 0,
        endpoint: None,
    };
    let documents: Vec<NewDocument> = (0..DOCUMENTS)
        .map(|i| NewDocument {
            custom_id: format!("doc-{i}"),
            input: json!({"text": "olá"}),
            params: None,
        })
        .collect();
    store.create_job(&job, &documents).await.unwrap();
    job.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settling_marking_and_cancelling_at_once_never_fail_on_postgres() {
    contend(JobStore::connect(&fresh_postgres().await).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settling_marking_and_cancelling_at_once_never_fail_on_sqlite() {
    contend(JobStore::connect(&common::temp_store_url()).await.unwrap()).await;
}

async fn contend(store: JobStore) {
    for round in 0..10 {
        let job = job_with_documents(&store).await;
        let mut tasks = tokio::task::JoinSet::new();
        for settler in 0..SETTLERS {
            let (store, job) = (store.clone(), job.clone());
            // Settlers walk the documents in different orders, as competing consumers do.
            tasks.spawn(async move {
                let mut written = 0;
                for i in 0..DOCUMENTS {
                    let doc = (i * (settler + 1) + settler) % DOCUMENTS;
                    let outcome = Ok(json!({"generated_text": "x"}));
                    if store.finish_document(&job, &format!("doc-{doc}"), &outcome).await? {
                        written += 1;
                    }
                }
                Ok::<usize, lote::jobs::store::StoreError>(written)
            });
        }
        {
            let (store, job) = (store.clone(), job.clone());
            tasks.spawn(async move {
                let seqs: Vec<i64> = (0..DOCUMENTS as i64).rev().collect();
                store.mark_published(&job, &seqs).await.map(|_| 0)
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(2 * round)).await;
        let cancelled = store.cancel_job(&job).await.unwrap().unwrap();
        let mut succeeded = 0;
        while let Some(joined) = tasks.join_next().await {
            succeeded += joined.unwrap().unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
        let after = store.job(&job).await.unwrap().unwrap();
        assert_eq!(after.succeeded as usize, succeeded, "round {round}: each write counted once");
        let documents = store.documents(&job, -1, DOCUMENTS).await.unwrap();
        let cancelled_documents =
            documents.iter().filter(|d| d.state == lote::jobs::DocumentState::Cancelled).count();
        assert_eq!(
            succeeded + cancelled_documents,
            DOCUMENTS,
            "round {round}: every document settled or cancelled (job was {:?})",
            cancelled.state
        );
    }
}
