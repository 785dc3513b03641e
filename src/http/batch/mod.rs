//! OpenAI's Batch API on lote's durable jobs: `POST /v1/batches` takes an uploaded JSONL file
//! ([`files`]) of requests to one route, checks its lines ([`lines`]) and turns them into a
//! job ([`intake`]) whose documents every worker computes through the same route handlers as
//! HTTP calls, in the bulk lane ([`executor`]); [`lifecycle`] moves each batch through
//! validating, in_progress, finalizing and completed (or failed, expired, cancelling,
//! cancelled), and its output and error files are rendered from the job's results when read
//! ([`output`]). The job store holds it all, so a batch survives any worker, and on RabbitMQ
//! and PostgreSQL any worker of the cluster carries it on.

pub mod executor;
mod file_lines;
pub mod files;
mod intake;
pub mod lifecycle;
pub mod lines;
mod output;

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, Query, State},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{HttpState, error::ApiError};
use crate::{
    engine::registry::Registry,
    jobs::{
        JobRecord,
        batch_store::{BatchRecord, BatchState, FileKind, NewBatch},
        service::Jobs,
        store::{StoreError, now_ms},
    },
    settings::LimitSettings,
};

/// What the Batch API works with, on every worker.
#[derive(Clone)]
pub struct BatchContext {
    pub jobs: Jobs,
    pub registry: Arc<Registry>,
    pub limits: LimitSettings,
}

/// The batch context of a state (the internal routers that compute batch lines have none).
fn context(state: &HttpState) -> Result<&BatchContext, ApiError> {
    state.batches.as_ref().ok_or_else(|| ApiError {
        status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
        ..ApiError::invalid(None, "batches are not served here")
    })
}

impl From<StoreError> for ApiError {
    /// The store's failure, logged; the caller hears only that the store is unreachable.
    fn from(error: StoreError) -> Self {
        tracing::warn!(%error, "job store call failed");
        ApiError {
            status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
            kind: "server_error",
            ..ApiError::invalid(None, "the job store is unreachable; try again")
        }
    }
}

fn seconds(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| json!(ms / 1000))
}

/// A batch in OpenAI's shape, with its job's counts.
fn batch_object(batch: &BatchRecord, job: Option<&JobRecord>) -> Value {
    let counts = job.map_or((0, 0, 0), |job| (job.total, job.succeeded, job.failed));
    let errors = batch.errors.as_ref().map(|data| json!({"object": "list", "data": data}));
    json!({
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "model": batch.model,
        "errors": errors,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": batch.state.as_str(),
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "created_at": batch.created_ms / 1000,
        "in_progress_at": seconds(batch.in_progress_ms),
        "expires_at": batch.expires_ms / 1000,
        "finalizing_at": seconds(batch.finalizing_ms),
        "completed_at": seconds(batch.completed_ms),
        "failed_at": seconds(batch.failed_ms),
        "expired_at": seconds(batch.expired_ms),
        "cancelling_at": seconds(batch.cancelling_ms),
        "cancelled_at": seconds(batch.cancelled_ms),
        "request_counts": {"total": counts.0, "completed": counts.1, "failed": counts.2},
        "metadata": batch.metadata,
    })
}

async fn answer(cx: &BatchContext, batch: &BatchRecord) -> Result<Json<Value>, ApiError> {
    let job = match &batch.job_id {
        Some(id) => cx.jobs.store.job(id).await?,
        None => None,
    };
    Ok(Json(batch_object(batch, job.as_ref())))
}

/// `completion_window`: OpenAI's `24h`, or any `<n>h`, `<n>m`, `<n>s` up to 7 days.
fn completion_window(text: &str) -> Result<i64, ApiError> {
    let refuse = || {
        ApiError::invalid(
            Some("completion_window"),
            format!(
                "`completion_window` is `{text}`: give a duration such as `24h` (or `<n>h`, `<n>m`, `<n>s`, at most 7 days)"
            ),
        )
    };
    let (digits, unit) = text.split_at(text.len().saturating_sub(1));
    let count: i64 = digits.parse().map_err(|_| refuse())?;
    let ms = match unit {
        "h" => count.checked_mul(3_600_000),
        "m" => count.checked_mul(60_000),
        "s" => count.checked_mul(1000),
        _ => None,
    }
    .ok_or_else(refuse)?;
    if ms <= 0 || ms > 7 * 24 * 3_600_000 {
        return Err(refuse());
    }
    Ok(ms)
}

/// `metadata`: at most 16 string pairs, keys to 64 characters, values to 512 (OpenAI's rule).
fn metadata(value: Option<Value>) -> Result<Option<Value>, ApiError> {
    let refuse = |message: String| ApiError::invalid(Some("metadata"), message);
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(pairs)) => {
            if pairs.len() > 16 {
                return Err(refuse(format!("`metadata` has {} keys; at most 16", pairs.len())));
            }
            for (key, value) in &pairs {
                if key.chars().count() > 64 {
                    return Err(refuse(format!("`metadata` key `{key}` is over 64 characters")));
                }
                match value {
                    Value::String(v) if v.chars().count() <= 512 => {}
                    Value::String(_) => {
                        return Err(refuse(format!("`metadata.{key}` is over 512 characters")));
                    }
                    _ => return Err(refuse(format!("`metadata.{key}` must be a string"))),
                }
            }
            Ok(Some(Value::Object(pairs)))
        }
        Some(_) => Err(refuse("`metadata` must be an object of strings".into())),
    }
}

fn required_string(body: &mut Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match body.remove(field) {
        Some(Value::String(text)) if !text.is_empty() => Ok(text),
        Some(Value::String(_)) | None => {
            Err(ApiError::invalid(Some(field), format!("`{field}` is required")))
        }
        Some(_) => Err(ApiError::invalid(Some(field), format!("`{field}` must be a string"))),
    }
}

/// `POST /v1/batches`.
pub async fn create(
    State(state): State<Arc<HttpState>>,
    body: Result<Json<Map<String, Value>>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let cx = context(&state)?;
    let Json(mut body) = body?;
    let input_file_id = required_string(&mut body, "input_file_id")?;
    let endpoint = required_string(&mut body, "endpoint")?;
    if lines::endpoint_task(&endpoint).is_none() {
        let routes: Vec<&str> = lines::ENDPOINTS.iter().map(|(route, _)| *route).collect();
        return Err(ApiError::invalid(
            Some("endpoint"),
            format!("`endpoint` is `{endpoint}`: batches run {}", routes.join(", ")),
        ));
    }
    let window = required_string(&mut body, "completion_window")?;
    let window_ms = completion_window(&window)?;
    let metadata = metadata(body.remove("metadata"))?;
    if let Some(field) = body.keys().next() {
        return Err(ApiError::invalid(
            Some(field),
            format!(
                "unknown field `{field}`: a batch has input_file_id, endpoint, completion_window and metadata"
            ),
        ));
    }
    let store = &cx.jobs.store;
    match store.file(&input_file_id).await? {
        Some(file) if file.kind == FileKind::Upload && file.purpose == "batch" => {}
        Some(_) => {
            return Err(ApiError::invalid(
                Some("input_file_id"),
                format!("file `{input_file_id}` is not a batch input (purpose `batch`)"),
            ));
        }
        None => {
            return Err(ApiError {
                param: Some("input_file_id".into()),
                code: Some("file_not_found"),
                ..ApiError::not_found(format!("no file `{input_file_id}`"))
            });
        }
    }
    let new = NewBatch {
        id: format!("batch_{}", uuid::Uuid::now_v7().simple()),
        endpoint,
        input_file_id,
        completion_window: window,
        metadata,
        expires_ms: now_ms() + window_ms,
    };
    let batch = store.create_batch(&new).await?;
    if store.claim_batch(&batch.id, now_ms() + intake::LEASE_MS).await? {
        lifecycle::spawn_intake(cx.clone(), batch.clone());
    }
    answer(cx, &batch).await
}

async fn found(cx: &BatchContext, id: &str) -> Result<BatchRecord, ApiError> {
    cx.jobs.store.batch(id).await?.ok_or_else(|| ApiError {
        code: Some("batch_not_found"),
        ..ApiError::not_found(format!("no batch `{id}`"))
    })
}

/// `GET /v1/batches/{id}`.
pub async fn get(
    State(state): State<Arc<HttpState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let cx = context(&state)?;
    answer(cx, &found(cx, &id).await?).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    after: Option<String>,
    limit: Option<usize>,
}

/// A page's `limit`: 1 to `most`, `default` when not given.
pub fn page_limit(limit: Option<usize>, default: usize, most: usize) -> Result<usize, ApiError> {
    match limit.unwrap_or(default) {
        n if (1..=most).contains(&n) => Ok(n),
        n => Err(ApiError::invalid(Some("limit"), format!("`limit` is {n}: give 1 to {most}"))),
    }
}

/// OpenAI's list shape of one page (`data` holds one more than the page when there is more).
pub fn list_object(mut data: Vec<Value>, limit: usize) -> Value {
    let has_more = data.len() > limit;
    data.truncate(limit);
    let first = data.first().map(|item| item["id"].clone());
    let last = data.last().map(|item| item["id"].clone());
    json!({"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": has_more})
}

/// `GET /v1/batches?after=&limit=`: newest first.
pub async fn list(
    State(state): State<Arc<HttpState>>,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let cx = context(&state)?;
    let Query(page) = page.map_err(|e| ApiError::invalid(None, e.body_text()))?;
    let limit = page_limit(page.limit, 20, 100)?;
    let batches = cx.jobs.store.list_batches(page.after.as_deref(), limit + 1).await?;
    let mut data = Vec::with_capacity(batches.len());
    for batch in &batches {
        let job = match &batch.job_id {
            Some(id) => cx.jobs.store.job(id).await?,
            None => None,
        };
        data.push(batch_object(batch, job.as_ref()));
    }
    Ok(Json(list_object(data, limit)))
}

/// `POST /v1/batches/{id}/cancel`: pending lines are not run; the batch is cancelling, then
/// cancelled with the lines already answered in its output file.
pub async fn cancel(
    State(state): State<Arc<HttpState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let cx = context(&state)?;
    let batch = found(cx, &id).await?;
    let live = [BatchState::Validating, BatchState::InProgress];
    if !cx.jobs.store.move_batch(&id, &live, BatchState::Cancelling).await? {
        let batch = found(cx, &id).await?;
        if batch.state != BatchState::Cancelling && batch.state != BatchState::Cancelled {
            return Err(ApiError {
                status: axum::http::StatusCode::CONFLICT,
                code: Some("batch_not_cancellable"),
                ..ApiError::invalid(
                    None,
                    format!("batch `{id}` is {}: it can no longer be cancelled", batch.state),
                )
            });
        }
        return answer(cx, &batch).await;
    }
    let cancelling = found(cx, &batch.id).await?;
    let answered = answer(cx, &cancelling).await;
    let cx = cx.clone();
    tokio::spawn(async move {
        if let Err(error) = lifecycle::step(&cx, cancelling).await {
            tracing::warn!(%error, "cancelling a batch: the lifecycle retries");
        }
    });
    answered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_windows_are_durations_up_to_a_week() {
        assert_eq!(completion_window("24h").unwrap(), 86_400_000);
        assert_eq!(completion_window("90s").unwrap(), 90_000);
        assert_eq!(completion_window("168h").unwrap(), 7 * 86_400_000);
        for bad in ["", "h", "24", "0h", "-1h", "169h", "1d", "1.5h", "99999999999999999h"] {
            let error = completion_window(bad).unwrap_err();
            assert_eq!(error.param.as_deref(), Some("completion_window"), "{bad}");
        }
    }

    #[test]
    fn metadata_is_a_few_short_strings() {
        assert_eq!(metadata(None).unwrap(), None);
        assert_eq!(metadata(Some(json!({"a": "b"}))).unwrap(), Some(json!({"a": "b"})));
        let message = |v: Value| metadata(Some(v)).unwrap_err().message;
        assert_eq!(message(json!({"a": 1})), "`metadata.a` must be a string");
        assert_eq!(message(json!([1])), "`metadata` must be an object of strings");
        let many: Map<String, Value> = (0..17).map(|i| (i.to_string(), json!("v"))).collect();
        assert_eq!(message(Value::Object(many)), "`metadata` has 17 keys; at most 16");
        assert_eq!(message(json!({"k": "x".repeat(513)})), "`metadata.k` is over 512 characters");
    }

    #[test]
    fn pages_say_whether_there_is_more() {
        let items = |n: usize| (0..n).map(|i| json!({"id": i})).collect::<Vec<_>>();
        let page = list_object(items(3), 2);
        assert_eq!(page["has_more"], true);
        assert_eq!((page["first_id"].clone(), page["last_id"].clone()), (json!(0), json!(1)));
        assert_eq!(list_object(items(0), 2)["first_id"], Value::Null);
        assert!(page_limit(Some(0), 20, 100).is_err());
        assert_eq!(page_limit(None, 20, 100).unwrap(), 20);
    }
}
