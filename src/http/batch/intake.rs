//! A validating batch becomes a job: its input file read through once to check every line
//! ([`super::lines`]), then again to store each line's body as a document, a few hundred at a
//! time (the file is never held whole). A worker doing this holds the batch for
//! [`LEASE_MS`] and renews the hold at each chunk; if it dies, another worker takes the
//! batch over and carries on where the stored documents end (the job is found again by its
//! idempotency key, the batch id), so no line is stored twice.

use serde_json::{Value, json};

use super::{
    BatchContext,
    file_lines::FileLines,
    lines::{LineChecker, LineError, endpoint_task},
};
use crate::jobs::{
    NewDocument, NewJob,
    batch_store::{BatchRecord, BatchState},
    new_job_id,
    store::{StoreError, now_ms},
};

/// How long a worker holds a validating batch without renewing.
pub const LEASE_MS: i64 = 30_000;

/// Documents stored in one transaction.
const CHUNK: usize = 500;

/// Most validation errors reported for one file.
const MAX_ERRORS: usize = 100;

/// The first pass: the model and the number of lines, or what is wrong with the file.
async fn check_file(
    cx: &BatchContext,
    batch: &BatchRecord,
) -> Result<Result<(String, usize), Vec<LineError>>, StoreError> {
    let store = &cx.jobs.store;
    let task = endpoint_task(&batch.endpoint).expect("the endpoint was checked at creation");
    if store.file(&batch.input_file_id).await?.is_none() {
        let message = format!("input file `{}` no longer exists", batch.input_file_id);
        return Ok(Err(vec![LineError::of_file("invalid_request", message)]));
    }
    let registry = cx.registry.clone();
    let task_of = move |model: &str| registry.task_of(model);
    let mut checker =
        LineChecker::new(&batch.endpoint, task, &task_of, cx.limits.max_message_bytes);
    let mut lines = FileLines::new(store.clone(), &batch.input_file_id);
    let (mut count, mut errors) = (0usize, Vec::new());
    while let Some((number, text)) = lines.next().await? {
        match checker.check(number, &text) {
            Ok(Some(_)) => count += 1,
            Ok(None) => {}
            Err(error) => {
                errors.push(error);
                if errors.len() == MAX_ERRORS {
                    break;
                }
            }
        }
    }
    let limit = cx.limits.max_documents_per_job;
    if count > limit {
        let message = format!(
            "the file has {count} requests, over server.limits.max_documents_per_job ({limit})"
        );
        errors.push(LineError::of_file("too_many_tasks", message));
    }
    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    match checker.model() {
        Some(model) => Ok(Ok((model.to_string(), count))),
        None => Ok(Err(vec![LineError::of_file("empty_file", "the input file has no requests")])),
    }
}

/// Validates a batch this worker holds and, when every line passes, stores its job and
/// documents and moves it to in_progress; otherwise fails it with the errors.
pub async fn intake(cx: &BatchContext, batch: &BatchRecord) -> Result<(), StoreError> {
    let store = &cx.jobs.store;
    let (model, count) = match check_file(cx, batch).await? {
        Ok(checked) => checked,
        Err(errors) => {
            let entries: Vec<Value> = errors.iter().map(LineError::entry).collect();
            store.fail_batch(&batch.id, &json!(entries)).await?;
            return Ok(());
        }
    };
    store.renew_batch(&batch.id, now_ms() + LEASE_MS).await?;
    let task = endpoint_task(&batch.endpoint).expect("the endpoint was checked at creation");
    let job = NewJob {
        id: new_job_id(),
        idempotency_key: Some(batch.id.clone()),
        task,
        model: model.clone(),
        params: json!({}),
        external: false,
        arriving_later: count,
        endpoint: Some(batch.endpoint.clone()),
    };
    let (job, _) = store.create_job(&job, &[]).await?;
    if !store.set_batch_job(&batch.id, &job.id, &model).await? {
        // Cancelled or expired meanwhile: the job never runs.
        store.cancel_job(&job.id).await?;
        return Ok(());
    }
    let stored = store.document_count(&job.id).await?;
    let registry = cx.registry.clone();
    let task_of = move |model: &str| registry.task_of(model);
    let mut checker = LineChecker::new(&batch.endpoint, task, &task_of, usize::MAX);
    let mut lines = FileLines::new(store.clone(), &batch.input_file_id);
    let (mut seq, mut first, mut chunk) = (0i64, stored, Vec::with_capacity(CHUNK));
    loop {
        let next = lines.next().await?;
        let line = match &next {
            Some((number, text)) => checker.check(*number, text).map_err(|e| {
                StoreError::Corrupt(format!(
                    "input file changed after it was checked: {}",
                    e.message
                ))
            })?,
            None => None,
        };
        if let Some(line) = line {
            if seq >= stored {
                chunk.push(NewDocument {
                    custom_id: line.custom_id,
                    input: Value::Object(line.body),
                    params: None,
                });
            }
            seq += 1;
        }
        if chunk.len() == CHUNK || (next.is_none() && !chunk.is_empty()) {
            if !store.append_documents(&job.id, first, &chunk).await? {
                return Ok(());
            }
            first += chunk.len() as i64;
            chunk.clear();
            store.renew_batch(&batch.id, now_ms() + LEASE_MS).await?;
            cx.jobs.dispatch().await;
        }
        if next.is_none() {
            break;
        }
    }
    store.move_batch(&batch.id, &[BatchState::Validating], BatchState::InProgress).await?;
    Ok(())
}
