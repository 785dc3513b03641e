//! Group commit of document results: the documents a worker finishes while the store is busy
//! committing wait together and go in the next transaction, one commit (one sync to disk) for
//! all of them, as PostgreSQL groups WAL flushes. A lone document is committed at once, so
//! nothing waits on a timer; under load the batch grows with the commit's latency.
//!
//! A message is acknowledged only after its result is committed, so a crash between the two
//! redelivers it, and the store's write-once rule keeps the count right.

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::store::{JobStore, StoreError};

/// At most this many results per transaction.
const MAX_BATCH: usize = 256;

struct Finish {
    job: String,
    custom_id: String,
    outcome: Result<Value, String>,
    written: oneshot::Sender<Result<bool, String>>,
}

/// The writer task's mailbox; cheap to clone. The task ends when every clone is dropped.
#[derive(Clone)]
pub struct GroupCommit {
    sender: mpsc::Sender<Finish>,
}

impl GroupCommit {
    /// Starts the writer on the current tokio runtime.
    pub fn start(store: JobStore) -> Self {
        let (sender, receiver) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(write_batches(store, receiver));
        Self { sender }
    }

    /// [`JobStore::finish_document`], committed with whatever else is waiting.
    pub async fn finish(
        &self,
        job: &str,
        custom_id: &str,
        outcome: &Result<Value, String>,
    ) -> Result<bool, StoreError> {
        let (written, answer) = oneshot::channel();
        let finish = Finish {
            job: job.to_string(),
            custom_id: custom_id.to_string(),
            outcome: outcome.clone(),
            written,
        };
        let stopped = || StoreError::Batch("job store: the group-commit writer stopped".into());
        self.sender.send(finish).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?.map_err(StoreError::Batch)
    }
}

async fn write_batches(store: JobStore, mut receiver: mpsc::Receiver<Finish>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let finishes: Vec<(&str, &str, &Result<Value, String>)> =
            batch.iter().map(|f| (f.job.as_str(), f.custom_id.as_str(), &f.outcome)).collect();
        metrics::histogram!("lote_job_commit_documents").record(finishes.len() as f64);
        match store.finish_documents(&finishes).await {
            Ok(written) => {
                for (finish, written) in batch.drain(..).zip(written) {
                    let _ = finish.written.send(Ok(written));
                }
            }
            Err(error) => {
                // Every message of the batch goes back to the queue and is tried again.
                let reason = error.to_string();
                for finish in batch.drain(..) {
                    let _ = finish.written.send(Err(reason.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{NewDocument, test_job};
    use serde_json::json;

    async fn store_with_job(documents: usize) -> (JobStore, String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
        let store = JobStore::connect(&url).await.unwrap();
        let job = test_job();
        let new: Vec<NewDocument> = (0..documents)
            .map(|i| NewDocument {
                custom_id: format!("d{i}"),
                input: json!({"text": "x"}),
                params: None,
            })
            .collect();
        store.create_job(&job, &new).await.unwrap();
        (store, job.id, dir)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_finishes_are_each_written_once_and_counted() {
        let (store, job, _dir) = store_with_job(300).await;
        let commit = GroupCommit::start(store.clone());
        let mut tasks = tokio::task::JoinSet::new();
        // Every document twice, as a redelivery would: one write each.
        for round in 0..2 {
            for i in 0..300 {
                let (commit, job) = (commit.clone(), job.clone());
                tasks.spawn(async move {
                    let outcome =
                        if i % 10 == 0 { Err("bad".to_string()) } else { Ok(json!({"r": round})) };
                    commit.finish(&job, &format!("d{i}"), &outcome).await.unwrap()
                });
            }
        }
        let mut written = 0;
        while let Some(wrote) = tasks.join_next().await {
            written += wrote.unwrap() as usize;
        }
        assert_eq!(written, 300);
        let record = store.job(&job).await.unwrap().unwrap();
        assert_eq!((record.succeeded, record.failed), (270, 30));
        assert_eq!(record.state, crate::jobs::JobState::Completed);
    }

    #[tokio::test]
    async fn a_failed_commit_fails_every_waiting_finish() {
        let (store, job, dir) = store_with_job(2).await;
        let commit = GroupCommit::start(store.clone());
        // The pool is closed under the writer: its next transaction cannot begin.
        store.close().await;
        drop(dir);
        let finishes = (0..2).map(|i| {
            let (commit, job) = (commit.clone(), job.clone());
            tokio::spawn(async move { commit.finish(&job, &format!("d{i}"), &Ok(json!({}))).await })
        });
        for finish in finishes.collect::<Vec<_>>() {
            let error = finish.await.unwrap().unwrap_err();
            assert!(error.to_string().starts_with("job store: "), "{error}");
        }
    }
}
