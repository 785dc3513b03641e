//! What a worker does with one document message, whichever queue it came from: read it, skip
//! it if its job is cancelled or it already has a result, compute it with the engine, commit
//! the result, and only then settle the message. The decision table is here, in one place:
//!
//! | outcome | store | message |
//! | --- | --- | --- |
//! | result | succeeded (first write wins) | ack |
//! | undecodable message, unknown job or document | - | dead-letter |
//! | invalid input or parameters | failed, with the reason | dead-letter |
//! | model failure, first delivery | - | requeue (it comes back alone) |
//! | model failure when alone | failed, with the reason | dead-letter |
//! | overloaded, shutting down, store unreachable | - | requeue |
//! | job cancelled, or document already finished | - | ack |

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{
    DocumentRecord, DocumentState, JobRecord, JobState, NewDocument,
    group_commit::GroupCommit,
    store::{JobStore, StoreError},
    wire::{DocumentMessage, WireError},
};
use crate::{
    engine::{
        call::EngineError,
        policy::Lane,
        registry::{Registry, ServedModel},
    },
    settings::Task,
    tasks::{
        TaskError, TaskInput,
        output_fields::{generation_fields, result_fields},
    },
};

/// What happens to a message once it is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    Ack,
    /// Back to the queue; it is redelivered (and then computed alone).
    Requeue,
    /// Rejected without requeue: the broker moves it to the dead-letter queue.
    DeadLetter(String),
}

/// Why a document could not be computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// It will never succeed: the reason is recorded.
    Permanent(String),
    /// It may succeed later: the message goes back to the queue.
    Transient(String),
}

/// Computes one document; the engine in production, a stand-in in scheduling tests.
#[tonic::async_trait]
pub trait Executor: Send + Sync + 'static {
    /// Checks a job before it is accepted: the model exists, serves the task, and the
    /// parameters parse.
    fn check(&self, model: &str, task: Task, params: &Value) -> Result<(), EngineError>;
    /// The output fields of one document (`alone`: in a batch of its own).
    async fn execute(
        &self,
        job: &JobRecord,
        input: &Value,
        params: &Value,
        alone: bool,
    ) -> Result<Value, Failure>;
}

/// The engine as an executor: the bulk lane of the models the registry serves.
pub struct EngineExecutor {
    registry: Arc<Registry>,
}

impl EngineExecutor {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }

    fn model(&self, model: &str, task: Task) -> Result<&ServedModel, EngineError> {
        self.registry.serving(model, task)
    }
}

/// The task input of stored input fields (checked at submission against `max_documents`; a
/// worker reading them back passes `usize::MAX`).
pub fn task_input(task: Task, input: &Value, max_documents: usize) -> Result<TaskInput, String> {
    let mut fields = input.as_object().cloned().unwrap_or_default();
    crate::tasks::input_from_fields(task, &mut fields, max_documents)
}

/// How an engine failure of one document is classed.
fn failure(error: EngineError, alone: bool) -> Failure {
    match error {
        EngineError::Overloaded { .. }
        | EngineError::DeadlineExceeded
        | EngineError::Unavailable(_)
        | EngineError::Loading(_) => Failure::Transient(error.to_string()),
        EngineError::Model(_) | EngineError::OutOfMemory { .. } if !alone => {
            Failure::Transient(error.to_string())
        }
        other => Failure::Permanent(other.to_string()),
    }
}

fn task_failure(error: TaskError, alone: bool) -> Failure {
    match error {
        TaskError::Model(_) | TaskError::OutOfMemory(_) if !alone => {
            Failure::Transient(error.to_string())
        }
        other => Failure::Permanent(other.to_string()),
    }
}

#[tonic::async_trait]
impl Executor for EngineExecutor {
    fn check(&self, model: &str, task: Task, params: &Value) -> Result<(), EngineError> {
        let invalid = |e: TaskError| EngineError::Invalid(e.to_string());
        match self.model(model, task)? {
            ServedModel::Encoder(service) => {
                service.pipeline().parse_params(params).map(|_| ()).map_err(invalid)
            }
            ServedModel::Generation(service) => {
                service.pipeline().parse_params(params).map(|_| ()).map_err(invalid)
            }
        }
    }

    async fn execute(
        &self,
        job: &JobRecord,
        input: &Value,
        params: &Value,
        alone: bool,
    ) -> Result<Value, Failure> {
        let served = self.model(&job.model, job.task).map_err(|e| failure(e, alone))?;
        let input = task_input(job.task, input, usize::MAX).map_err(Failure::Permanent)?;
        let mut fields = match served {
            ServedModel::Encoder(service) => {
                let parsed = service
                    .pipeline()
                    .parse_params(params)
                    .map_err(|e| Failure::Permanent(e.to_string()))?;
                let items = vec![(input, parsed)];
                let answered = if alone {
                    service.answer_alone(items).await
                } else {
                    service.answer(items, Lane::Bulk, None).await
                };
                let result = answered.map_err(|e| failure(e, alone))?.results.remove(0);
                result_fields(&result.map_err(|e| task_failure(e, alone))?)
            }
            ServedModel::Generation(service) => {
                let parsed = service
                    .pipeline()
                    .parse_params(params)
                    .map_err(|e| Failure::Permanent(e.to_string()))?;
                let items = vec![(input, parsed)];
                let answered = if alone {
                    service.generate_alone(items).await
                } else {
                    service.generate(items, Lane::Bulk, None).await
                };
                let result = answered.map_err(|e| failure(e, alone))?.results.remove(0);
                let result = result.map_err(|e| task_failure(e, alone))?;
                generation_fields(
                    job.task,
                    &result.generation,
                    result.input_tokens,
                    result.truncated,
                )
            }
        };
        fields.insert("model".into(), json!(served.identity()));
        fields.insert("params".into(), params.clone());
        Ok(Value::Object(fields))
    }
}

/// The job's parameters with the document's own over them.
pub fn merged_params(job: &Value, document: Option<&Value>) -> Value {
    let mut params: Map<String, Value> = job.as_object().cloned().unwrap_or_default();
    if let Some(Value::Object(own)) = document {
        params.extend(own.clone());
    }
    Value::Object(params)
}

/// Handles document messages against the store with an executor; `on_result` hears of each
/// result committed here (the AMQP transport publishes it to `lote.results`).
pub struct DocumentHandler {
    pub store: JobStore,
    pub executor: Arc<dyn Executor>,
    /// Results go to the store through one group-commit writer.
    commits: GroupCommit,
}

/// What a handled message did, for the caller to settle and announce.
#[derive(Debug)]
pub struct Handled {
    pub settle: Settle,
    /// The document as this call committed it (None when nothing was committed here: a
    /// redelivery whose result another delivery wrote first announces nothing twice).
    pub finished: Option<DocumentRecord>,
}

impl DocumentHandler {
    /// A handler with its group-commit writer, started on the current tokio runtime.
    pub fn new(store: JobStore, executor: Arc<dyn Executor>) -> Self {
        let commits = GroupCommit::start(store.clone());
        Self { store, executor, commits }
    }

    pub async fn handle(
        &self,
        message: Result<DocumentMessage, WireError>,
        redelivered: bool,
    ) -> Handled {
        let settle = |settle| Handled { settle, finished: None };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                metrics::counter!("lote_job_documents_total", "outcome" => "undecodable")
                    .increment(1);
                return settle(Settle::DeadLetter(error.to_string()));
            }
        };
        match self.handle_document(message, redelivered).await {
            Ok(handled) => handled,
            Err(error) => {
                tracing::warn!(%error, "job store unreachable; the document goes back to the queue");
                settle(Settle::Requeue)
            }
        }
    }

    async fn handle_document(
        &self,
        message: DocumentMessage,
        redelivered: bool,
    ) -> Result<Handled, StoreError> {
        let settle = |settle| Handled { settle, finished: None };
        let Some(job) = self.store.job(&message.job_id).await? else {
            return Ok(settle(Settle::DeadLetter(format!("unknown job `{}`", message.job_id))));
        };
        if matches!(job.state, JobState::Cancelling | JobState::Cancelled) {
            metrics::counter!("lote_job_documents_total", "outcome" => "cancelled").increment(1);
            return Ok(settle(Settle::Ack));
        }
        let mut document = self.store.document(&job.id, &message.custom_id).await?;
        if document.is_none() && job.external {
            if !message.has_input() {
                return Ok(settle(Settle::DeadLetter(
                    "bad document: a document needs `text`, `question` or `query`".into(),
                )));
            }
            let new = NewDocument {
                custom_id: message.custom_id.clone(),
                input: message.input(),
                params: message.params.clone().map(Value::Object),
            };
            self.store.add_external_document(&job, &new).await?;
            document = self.store.document(&job.id, &message.custom_id).await?;
        }
        let Some(document) = document else {
            return Ok(settle(Settle::DeadLetter(format!(
                "job `{}` has no document `{}`",
                job.id, message.custom_id
            ))));
        };
        if document.state != DocumentState::Pending {
            return Ok(settle(Settle::Ack));
        }
        let params = merged_params(&job.params, document.params.as_ref());
        let outcome = self.executor.execute(&job, &document.input, &params, redelivered).await;
        let (stored, settle_as) = match outcome {
            Ok(fields) => (Ok(fields), Settle::Ack),
            Err(Failure::Permanent(reason)) => (Err(reason.clone()), Settle::DeadLetter(reason)),
            Err(Failure::Transient(reason)) => {
                tracing::info!(job = %job.id, custom_id = %document.custom_id, %reason, "requeued");
                metrics::counter!("lote_job_documents_total", "outcome" => "requeued").increment(1);
                return Ok(settle(Settle::Requeue));
            }
        };
        let written = self.commits.finish(&job.id, &document.custom_id, &stored).await?;
        let outcome = if stored.is_ok() { "succeeded" } else { "failed" };
        metrics::counter!("lote_job_documents_total", "outcome" => outcome).increment(1);
        let finished = written.then(|| {
            let (state, result, error) = match stored {
                Ok(fields) => (DocumentState::Succeeded, Some(fields), None),
                Err(reason) => (DocumentState::Failed, None, Some(reason)),
            };
            DocumentRecord { state, result, error, ..document }
        });
        Ok(Handled { settle: settle_as, finished })
    }

    /// A message the broker dead-lettered (rejected here, or past the delivery limit): its
    /// document, if still pending, is recorded as failed with `reason`.
    pub async fn account_dead_letter(
        &self,
        message: &DocumentMessage,
        reason: &str,
    ) -> Result<(), StoreError> {
        if let Some(document) = self.store.document(&message.job_id, &message.custom_id).await?
            && document.state == DocumentState::Pending
        {
            let failed = Err(format!("dead-lettered: {reason}"));
            self.store.finish_document(&message.job_id, &message.custom_id, &failed).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_failure_is_retried_alone_before_it_is_final() {
        let crash = || EngineError::Model("the model panicked".into());
        assert!(matches!(failure(crash(), false), Failure::Transient(_)));
        assert!(matches!(failure(crash(), true), Failure::Permanent(_)));
        let oom = || TaskError::OutOfMemory("CUDA out of memory".into());
        assert!(matches!(task_failure(oom(), false), Failure::Transient(_)));
        assert!(matches!(task_failure(oom(), true), Failure::Permanent(_)));
    }

    #[test]
    fn busy_or_stopping_engines_requeue_and_bad_input_does_not() {
        for busy in [
            EngineError::Overloaded { queued: 9 },
            EngineError::Unavailable("stopping".into()),
            EngineError::Loading("m".into()),
            EngineError::DeadlineExceeded,
        ] {
            assert!(matches!(failure(busy, true), Failure::Transient(_)));
        }
        let invalid = TaskError::Invalid("bad params: unknown field `x`".into());
        assert_eq!(
            task_failure(invalid, false),
            Failure::Permanent("bad params: unknown field `x`".into())
        );
        assert_eq!(
            task_input(Task::QuestionAnswering, &json!({"text": "x"}), 1),
            Err("missing field `question`".into())
        );
    }

    #[test]
    fn a_document_s_params_override_the_job_s() {
        let merged =
            merged_params(&json!({"top_k": 1, "truncation": true}), Some(&json!({"top_k": 3})));
        assert_eq!(merged, json!({"top_k": 3, "truncation": true}));
        assert_eq!(merged_params(&json!({}), None), json!({}));
    }
}
