//! `lote.v1.Jobs`: submit, watch, list, read results and cancel bulk jobs. The store is polled
//! for progress, so every worker of a cluster answers with the same truth.

use std::{collections::HashSet, pin::Pin, time::Duration};

use serde_json::Value;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::pb;
use crate::{
    jobs::{
        DocumentRecord, DocumentState, JobRecord, JobState, NewDocument,
        service::{JobError, Jobs, Submission},
    },
    settings::Task,
};

/// How often a watch or a results stream looks at the store.
const POLL: Duration = Duration::from_millis(200);
/// Documents read from the store at once.
const PAGE: usize = 500;
/// How far back in finish times each watch pass looks again.
const WATCH_LOOKBACK_MS: i64 = 3000;

pub struct JobsService {
    jobs: Jobs,
    max_documents: usize,
}

impl JobsService {
    pub fn new(jobs: Jobs, max_documents: usize) -> Self {
        Self { jobs, max_documents }
    }
}

pub fn job_message(job: &JobRecord) -> pb::Job {
    pb::Job {
        id: job.id.clone(),
        model: job.model.clone(),
        task: job.task.to_string(),
        params_json: job.params.to_string(),
        state: job.state.to_string(),
        total: job.total as u64,
        succeeded: job.succeeded as u64,
        failed: job.failed as u64,
        pending: job.pending() as u64,
        created_ms: job.created_ms,
        started_ms: job.started_ms.unwrap_or(0),
        finished_ms: job.finished_ms.unwrap_or(0),
        idempotency_key: job.idempotency_key.clone().unwrap_or_default(),
    }
}

fn document_message(document: &DocumentRecord) -> pb::DocumentResult {
    pb::DocumentResult {
        job_id: document.job_id.clone(),
        custom_id: document.custom_id.clone(),
        seq: document.seq,
        state: document.state.to_string(),
        result_json: document.result.as_ref().map(Value::to_string).unwrap_or_default(),
        error: document.error.clone().unwrap_or_default(),
    }
}

fn json_object(text: &str, what: &str) -> Result<Option<Value>, JobError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    match serde_json::from_str(text) {
        Ok(value @ Value::Object(_)) => Ok(Some(value)),
        _ => Err(JobError::Invalid(format!("{what} must be a JSON object"))),
    }
}

fn new_document(index: usize, d: pb::JobDocument) -> Result<NewDocument, JobError> {
    let input = if !d.question.is_empty() || !d.context.is_empty() {
        serde_json::json!({ "question": d.question, "context": d.context })
    } else if !d.query.is_empty() || !d.documents.is_empty() {
        serde_json::json!({ "query": d.query, "documents": d.documents })
    } else if !d.text_pair.is_empty() {
        serde_json::json!({ "text": d.text, "text_pair": d.text_pair })
    } else {
        serde_json::json!({ "text": d.text })
    };
    let params = json_object(&d.params_json, &format!("documents[{index}].params_json"))?;
    Ok(NewDocument { custom_id: d.custom_id, input, params })
}

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl JobsService {
    async fn submit(
        &self,
        header: pb::SubmitJobRequest,
        documents: Vec<pb::JobDocument>,
    ) -> Result<pb::Job, JobError> {
        let task: Task =
            header.task.parse().map_err(|e: String| JobError::Invalid(format!("task: {e}")))?;
        if documents.len() > self.max_documents {
            return Err(JobError::Invalid(format!(
                "{} documents: more than server.limits.max_documents_per_job ({})",
                documents.len(),
                self.max_documents
            )));
        }
        let documents = documents
            .into_iter()
            .enumerate()
            .map(|(index, d)| new_document(index, d))
            .collect::<Result<Vec<_>, _>>()?;
        let params = json_object(&header.params_json, "params_json")?.unwrap_or(Value::Null);
        let submission = Submission {
            task,
            model: header.model,
            params,
            documents,
            idempotency_key: Some(header.idempotency_key).filter(|k| !k.is_empty()),
            external_documents: header.external_documents as usize,
        };
        Ok(job_message(&self.jobs.submit(submission).await?))
    }
}

#[tonic::async_trait]
impl pb::jobs_server::Jobs for JobsService {
    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let mut header = request.into_inner();
        let documents = std::mem::take(&mut header.documents);
        Ok(Response::new(self.submit(header, documents).await?))
    }

    async fn submit_job_stream(
        &self,
        request: Request<Streaming<pb::SubmitJobRequest>>,
    ) -> Result<Response<pb::Job>, Status> {
        let mut stream = request.into_inner();
        let Some(mut header) = stream.message().await? else {
            return Err(JobError::Invalid("the stream carried no job".into()).into());
        };
        let mut documents = std::mem::take(&mut header.documents);
        while let Some(mut more) = stream.message().await? {
            documents.append(&mut more.documents);
            if documents.len() > self.max_documents {
                break;
            }
        }
        Ok(Response::new(self.submit(header, documents).await?))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let job = self.jobs.job(&request.into_inner().id).await?;
        Ok(Response::new(job_message(&job)))
    }

    type WatchJobStream = Stream_<pb::JobEvent>;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let id = request.into_inner().id;
        let first = self.jobs.job(&id).await?;
        let store = self.jobs.store.clone();
        let (events, receiver) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let send = |job: &JobRecord, document: Option<&DocumentRecord>| {
                let event = pb::JobEvent {
                    job: Some(job_message(job)),
                    document: document.map(document_message),
                };
                events.send(Ok(event))
            };
            if send(&first, None).await.is_err() {
                return;
            }
            let mut seen: HashSet<String> = HashSet::new();
            // Finish times are taken before their transactions commit, so a document can
            // appear with a time a little older than one already seen: each pass looks back
            // WATCH_LOOKBACK_MS, and `seen` drops the repeats.
            let mut horizon = 0;
            loop {
                // The job first: if it had ended, every document it counted is read below.
                let before = match store.job(&id).await {
                    Ok(Some(job)) => job,
                    Ok(None) => return,
                    Err(error) => {
                        let _ = events.send(Err(Status::from(JobError::from(error)))).await;
                        return;
                    }
                };
                let mut cursor = (horizon - WATCH_LOOKBACK_MS, -1);
                loop {
                    let page = match store.finished_after(&id, cursor, PAGE).await {
                        Ok(page) => page,
                        Err(error) => {
                            let _ = events.send(Err(Status::from(JobError::from(error)))).await;
                            return;
                        }
                    };
                    let fresh: Vec<&DocumentRecord> =
                        page.iter().filter(|d| !seen.contains(&d.custom_id)).collect();
                    let job =
                        if fresh.is_empty() { None } else { store.job(&id).await.ok().flatten() };
                    for document in fresh {
                        seen.insert(document.custom_id.clone());
                        let job = job.as_ref().unwrap_or(&before);
                        if send(job, Some(document)).await.is_err() {
                            return;
                        }
                    }
                    if let Some(last) = page.last() {
                        let finished = last.finished_ms.unwrap_or(0);
                        cursor = (finished, last.seq);
                        horizon = horizon.max(finished);
                    }
                    if page.len() < PAGE {
                        break;
                    }
                }
                if before.state.is_final() {
                    let last = store.job(&id).await.ok().flatten().unwrap_or(before);
                    let _ = send(&last, None).await;
                    return;
                }
                tokio::time::sleep(POLL).await;
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let request = request.into_inner();
        let state = match request.state.as_str() {
            "" => None,
            text => Some(text.parse::<JobState>().map_err(JobError::Invalid)?),
        };
        let size = match request.page_size {
            0 => 50,
            n => (n as usize).min(1000),
        };
        let after = Some(request.page_token.as_str()).filter(|t| !t.is_empty());
        let mut jobs =
            self.jobs.store.list_jobs(state, after, size + 1).await.map_err(JobError::from)?;
        let next_page_token = if jobs.len() > size {
            jobs.truncate(size);
            jobs.last().map(|job| job.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        let jobs = jobs.iter().map(job_message).collect();
        Ok(Response::new(pb::ListJobsResponse { jobs, next_page_token }))
    }

    type GetResultsStream = Stream_<pb::DocumentResult>;

    async fn get_results(
        &self,
        request: Request<pb::GetResultsRequest>,
    ) -> Result<Response<Self::GetResultsStream>, Status> {
        let request = request.into_inner();
        self.jobs.job(&request.id).await?;
        let store = self.jobs.store.clone();
        let mut after = if request.from_start { -1 } else { request.after };
        let (results, receiver) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                let page = match store.documents(&request.id, after, PAGE).await {
                    Ok(page) => page,
                    Err(error) => {
                        let _ = results.send(Err(Status::from(JobError::from(error)))).await;
                        return;
                    }
                };
                for document in &page {
                    after = document.seq;
                    if document.state == DocumentState::Pending {
                        continue;
                    }
                    if results.send(Ok(document_message(document))).await.is_err() {
                        return;
                    }
                }
                if page.len() < PAGE {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let job = self.jobs.cancel(&request.into_inner().id).await?;
        Ok(Response::new(job_message(&job)))
    }
}
