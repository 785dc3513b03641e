//! Submitting and cancelling jobs: the checks every submission passes before anything is
//! stored (documents present, custom ids unique, model and task and parameters valid), then
//! the store, then the queue. gRPC's `Jobs` service calls this; so could any other way in.

use std::{collections::HashMap, sync::Arc, time::Duration};

use serde_json::Value;

use super::{
    JobRecord, NewDocument, NewJob,
    amqp::{self, stopped},
    local::LocalQueueHandle,
    new_job_id,
    store::{JobStore, StoreError},
    worker::{Executor, task_input},
};
use crate::{engine::call::EngineError, settings::Task};

/// Why a job call failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("no job `{0}`")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How documents reach the workers.
#[derive(Clone)]
pub enum Dispatch {
    /// The in-process queue reads the store; it only needs waking.
    Local(LocalQueueHandle),
    /// RabbitMQ: documents are published (and republished until confirmed).
    Amqp(amqp::Publisher),
}

/// A job as submitted.
#[derive(Debug, Clone)]
pub struct Submission {
    pub task: Task,
    pub model: String,
    pub params: Value,
    pub documents: Vec<NewDocument>,
    pub idempotency_key: Option<String>,
    /// Documents the caller publishes to the queue itself.
    pub external_documents: usize,
}

#[derive(Clone)]
pub struct Jobs {
    pub store: JobStore,
    executor: Arc<dyn Executor>,
    dispatch: Dispatch,
    /// Most documents of one rerank document (`server.limits.max_inputs_per_call`).
    max_rerank_documents: usize,
}

impl Jobs {
    pub fn new(
        store: JobStore,
        executor: Arc<dyn Executor>,
        dispatch: Dispatch,
        max_rerank_documents: usize,
    ) -> Self {
        Self { store, executor, dispatch, max_rerank_documents }
    }

    /// Checks and stores a job, then hands its documents to the queue.
    pub async fn submit(&self, submission: Submission) -> Result<JobRecord, JobError> {
        let Submission { task, model, params, documents, idempotency_key, external_documents } =
            submission;
        let params = if params.is_null() { Value::Object(Default::default()) } else { params };
        if !params.is_object() {
            return Err(JobError::Invalid("params must be a JSON object".into()));
        }
        match (documents.is_empty(), external_documents) {
            (true, 0) => return Err(JobError::Invalid("a job needs at least one document".into())),
            (false, n) if n > 0 => {
                return Err(JobError::Invalid(
                    "give documents or external_documents, not both".into(),
                ));
            }
            _ => {}
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (index, document) in documents.iter().enumerate() {
            if document.custom_id.is_empty() {
                return Err(JobError::Invalid(format!("documents[{index}]: custom_id is empty")));
            }
            if let Some(first) = seen.insert(&document.custom_id, index) {
                return Err(JobError::Invalid(format!(
                    "documents[{index}]: custom_id `{}` is already used by documents[{first}]",
                    document.custom_id
                )));
            }
            task_input(task, &document.input, self.max_rerank_documents)
                .map_err(|why| JobError::Invalid(format!("documents[{index}]: {why}")))?;
            if document.params.as_ref().is_some_and(|p| !p.is_object()) {
                return Err(JobError::Invalid(format!(
                    "documents[{index}]: params must be a JSON object"
                )));
            }
        }
        self.executor.check(&model, task, &params)?;
        let job = NewJob {
            id: new_job_id(),
            idempotency_key,
            task,
            model,
            params,
            external: external_documents > 0,
            arriving_later: external_documents,
            endpoint: None,
        };
        let (record, created) = self.store.create_job(&job, &documents).await?;
        if created {
            metrics::counter!("lote_jobs_submitted_total").increment(1);
            self.dispatch().await;
        }
        Ok(record)
    }

    /// Wakes the local queue, or publishes what is stored and unpublished (after documents
    /// were stored by another way in: a batch file's lines).
    pub async fn dispatch(&self) {
        match &self.dispatch {
            Dispatch::Local(handle) => handle.wake(),
            Dispatch::Amqp(publisher) => {
                let (store, publisher) = (self.store.clone(), publisher.clone());
                // The caller does not wait for the broker: the sweeper retries what fails.
                tokio::spawn(async move {
                    if let Err(error) =
                        amqp::publish_pending(&store, &publisher, Duration::ZERO).await
                    {
                        tracing::warn!(%error, "documents not published yet; the sweeper retries");
                    }
                });
            }
        }
    }

    pub async fn job(&self, id: &str) -> Result<JobRecord, JobError> {
        self.store.job(id).await?.ok_or_else(|| JobError::NotFound(id.to_string()))
    }

    pub async fn cancel(&self, id: &str) -> Result<JobRecord, JobError> {
        self.store.cancel_job(id).await?.ok_or_else(|| JobError::NotFound(id.to_string()))
    }
}

/// Deletes ended jobs older than `retention` (with their documents, results and batches), at
/// start and then every quarter of the retention (at most a minute apart), until `stop`.
pub async fn sweep_ended(
    store: JobStore,
    retention: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let every = (retention / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
    loop {
        let before = super::store::now_ms() - retention.as_millis() as i64;
        loop {
            match store.delete_ended_jobs(before, 100).await {
                Ok(0) => break,
                Ok(n) => tracing::info!(jobs = n, ?retention, "deleted jobs past their retention"),
                Err(error) => {
                    tracing::debug!(%error, "retention sweep: store unreachable");
                    break;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Republishes, every few seconds, documents stored but never confirmed by the broker (a worker
/// died between the two), until `stop` turns true.
pub async fn sweep_unpublished(
    store: JobStore,
    publisher: amqp::Publisher,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stopped(&mut stop) => return,
        }
        match amqp::publish_pending(&store, &publisher, Duration::from_secs(5)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(documents = n, "republished documents never confirmed"),
            Err(error) => tracing::debug!(%error, "sweeper: not published yet"),
        }
    }
}
