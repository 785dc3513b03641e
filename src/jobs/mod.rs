//! Bulk jobs: a task, a model, parameters and many documents, each with the caller's
//! `custom_id`. The job store ([`store`]) is the one truth; documents travel to workers through
//! RabbitMQ ([`amqp`], one persistent message per document on a quorum queue per model) or,
//! on a single node, through an in-process queue fed from the store ([`local`]). A worker
//! ([`worker`]) computes documents with the same engine as gRPC (bulk lane), commits each result
//! to the store, and only then acknowledges its message: nothing is lost, and a redelivery can
//! never write a second result.

pub mod amqp;
pub mod batch_store;
pub mod group_commit;
pub mod local;
pub mod runtime;
pub mod service;
pub mod store;
pub mod wire;
pub mod worker;

use serde_json::Value;

use crate::settings::Task;

crate::settings::named_values! {
    /// Where a job is in its life.
    JobState {
        Queued = "queued",
        Running = "running",
        Completed = "completed",
        /// Every document failed.
        Failed = "failed",
        Cancelling = "cancelling",
        Cancelled = "cancelled",
    }
}

crate::settings::named_values! {
    /// Where a document is.
    DocumentState {
        Pending = "pending",
        Succeeded = "succeeded",
        Failed = "failed",
        /// Its job was cancelled before it was computed.
        Cancelled = "cancelled",
    }
}

impl JobState {
    /// Whether the job has ended (no document will be computed any more).
    pub fn is_final(&self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed | JobState::Cancelled)
    }
}

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub idempotency_key: Option<String>,
    pub task: Task,
    pub model: String,
    /// Parameters for every document (a JSON object, `lote run --param` names).
    pub params: Value,
    /// Documents published straight to the queue by the caller.
    pub external: bool,
    /// Documents counted in the job's total that arrive after it is created: published by the
    /// caller (external), or appended from a batch file ([`store::JobStore::append_documents`]).
    pub arriving_later: usize,
    /// The OpenAI route (`/v1/chat/completions`, ...) a batch job's documents are bodies of;
    /// None for lote's own jobs, whose documents are input fields.
    pub endpoint: Option<String>,
}

/// A document to create: its input fields (`text`, or `question` and `context`) and its own
/// parameter overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDocument {
    pub custom_id: String,
    pub input: Value,
    pub params: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: String,
    pub idempotency_key: Option<String>,
    pub task: Task,
    pub model: String,
    pub params: Value,
    pub state: JobState,
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub external: bool,
    pub endpoint: Option<String>,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
}

impl JobRecord {
    /// Documents neither succeeded nor failed (cancelled ones included once cancelled).
    pub fn pending(&self) -> i64 {
        self.total - self.succeeded - self.failed
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DocumentRecord {
    pub job_id: String,
    pub seq: i64,
    pub custom_id: String,
    pub input: Value,
    pub params: Option<Value>,
    pub state: DocumentState,
    /// The output fields, with the model identity and the parameters used.
    pub result: Option<Value>,
    pub error: Option<String>,
    pub finished_ms: Option<i64>,
}

/// A fresh job id: time-ordered, unique across workers.
pub fn new_job_id() -> String {
    format!("job_{}", uuid::Uuid::now_v7().simple())
}

/// A fresh feature-extraction job of model `m` for the unit tests of the store's users.
#[cfg(test)]
pub(crate) fn test_job() -> NewJob {
    NewJob {
        id: new_job_id(),
        idempotency_key: None,
        task: crate::settings::Task::FeatureExtraction,
        model: "m".into(),
        params: serde_json::json!({}),
        external: false,
        arriving_later: 0,
        endpoint: None,
    }
}
