//! `/v1/files`: batch input files uploaded (multipart, purpose `batch`) straight into the job
//! store in parts of about a megabyte as they arrive, and read back the same way; a batch's
//! output and error files are listed and read here too, rendered from its job
//! ([`super::output`]). Nothing here holds a whole file.

use std::sync::Arc;

use axum::{
    Json,
    body::{Body, Bytes},
    extract::{Multipart, Path, Query, State, multipart::MultipartError},
    http::{StatusCode, header},
    response::Response,
};
use futures::{TryStreamExt, stream};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{BatchContext, context, list_object, output, page_limit};
use crate::{
    http::{HttpState, error::ApiError},
    jobs::{
        batch_store::{FileKind, FileRecord},
        store::{JobStore, StoreError},
    },
};

/// Bytes of a stored part (cut at a character boundary, so a part may be a little shorter).
const PART_BYTES: usize = 1 << 20;

fn file_object(file: &FileRecord) -> Value {
    json!({
        "id": file.id,
        "object": "file",
        "bytes": file.bytes,
        "created_at": file.created_ms / 1000,
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",
        "status_details": null,
        "expires_at": null,
    })
}

fn not_found(id: &str) -> ApiError {
    ApiError { code: Some("file_not_found"), ..ApiError::not_found(format!("no file `{id}`")) }
}

fn multipart_error(error: MultipartError) -> ApiError {
    ApiError { status: error.status(), ..ApiError::invalid(None, error.body_text()) }
}

/// An upload being written: parts are stored as they fill; dropped unfinished, the caller
/// deletes what was stored.
struct Upload<'a> {
    store: &'a JobStore,
    id: String,
    pending: Vec<u8>,
    parts: i64,
    bytes: usize,
    limit: usize,
}

impl Upload<'_> {
    async fn push(&mut self, chunk: &[u8]) -> Result<(), ApiError> {
        self.bytes += chunk.len();
        if self.bytes > self.limit {
            return Err(ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                ..ApiError::invalid(
                    Some("file"),
                    format!(
                        "the file is over server.limits.max_batch_file_bytes ({} bytes)",
                        self.limit
                    ),
                )
            });
        }
        self.pending.extend_from_slice(chunk);
        if self.pending.len() >= PART_BYTES {
            self.flush(false).await?;
        }
        Ok(())
    }

    /// Stores what is pending up to its last whole character (all of it when `last`).
    async fn flush(&mut self, last: bool) -> Result<(), ApiError> {
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(error) if error.error_len().is_none() && !last => error.valid_up_to(),
            Err(error) => {
                let at = self.bytes - self.pending.len() + error.valid_up_to();
                return Err(ApiError::invalid(
                    Some("file"),
                    format!("the file is not UTF-8 text (byte {at}): a batch file is JSON lines"),
                ));
            }
        };
        if valid == 0 {
            return Ok(());
        }
        let rest = self.pending.split_off(valid);
        let text = String::from_utf8(std::mem::replace(&mut self.pending, rest))
            .expect("checked to be UTF-8");
        self.store.put_file_part(&self.id, self.parts, &text).await?;
        self.parts += 1;
        Ok(())
    }
}

/// `POST /v1/files` (multipart: `purpose`, `file`).
pub async fn upload(
    State(state): State<Arc<HttpState>>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Json<Value>, ApiError> {
    let cx = context(&state)?;
    let mut multipart = multipart.map_err(|e| ApiError::invalid(None, e.body_text()))?;
    let id = format!("file-{}", uuid::Uuid::now_v7().simple());
    let store = &cx.jobs.store;
    let received = receive(cx, &id, &mut multipart).await;
    match received {
        Ok(file) => Ok(Json(file_object(&file))),
        Err(error) => {
            if let Err(cleanup) = store.delete_file(&id).await {
                tracing::warn!(file = %id, error = %cleanup, "a refused upload was not removed");
            }
            Err(error)
        }
    }
}

async fn receive(
    cx: &BatchContext,
    id: &str,
    multipart: &mut Multipart,
) -> Result<FileRecord, ApiError> {
    let store = &cx.jobs.store;
    let (mut purpose, mut upload) = (None, None);
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("purpose") => purpose = Some(field.text().await.map_err(multipart_error)?),
            Some("file") => {
                if upload.is_some() {
                    return Err(ApiError::invalid(Some("file"), "give one `file`"));
                }
                let filename = field.file_name().unwrap_or("upload.jsonl").to_string();
                store.begin_upload(id, &filename).await?;
                let mut writing = Upload {
                    store,
                    id: id.to_string(),
                    pending: Vec::new(),
                    parts: 0,
                    bytes: 0,
                    limit: cx.limits.max_batch_file_bytes,
                };
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    writing.push(&chunk).await?;
                }
                writing.flush(true).await?;
                upload = Some(writing.bytes);
            }
            Some(other) => {
                return Err(ApiError::invalid(
                    Some(other),
                    format!("unknown field `{other}`: an upload has `purpose` and `file`"),
                ));
            }
            None => return Err(ApiError::invalid(None, "a multipart field has no name")),
        }
    }
    match purpose.as_deref() {
        Some("batch") => {}
        Some(other) => {
            return Err(ApiError::invalid(
                Some("purpose"),
                format!("`purpose` is `{other}`: lote keeps files for batches only (`batch`)"),
            ));
        }
        None => return Err(ApiError::invalid(Some("purpose"), "`purpose` is required")),
    }
    let Some(bytes) = upload else {
        return Err(ApiError::invalid(Some("file"), "`file` is required"));
    };
    store.complete_upload(id, "batch", bytes as i64).await?;
    store.file(id).await?.ok_or_else(|| not_found(id))
}

async fn found(cx: &BatchContext, id: &str) -> Result<FileRecord, ApiError> {
    cx.jobs.store.file(id).await?.ok_or_else(|| not_found(id))
}

/// `GET /v1/files/{id}`.
pub async fn get(
    State(state): State<Arc<HttpState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(file_object(&found(context(&state)?, &id).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePage {
    purpose: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/files?purpose=&after=&limit=`: newest first.
pub async fn list(
    State(state): State<Arc<HttpState>>,
    page: Result<Query<FilePage>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let cx = context(&state)?;
    let Query(page) = page.map_err(|e| ApiError::invalid(None, e.body_text()))?;
    let limit = page_limit(page.limit, 100, 10_000)?;
    let files =
        cx.jobs.store.list_files(page.purpose.as_deref(), page.after.as_deref(), limit + 1).await?;
    Ok(Json(list_object(files.iter().map(file_object).collect(), limit)))
}

/// `DELETE /v1/files/{id}`.
pub async fn delete(
    State(state): State<Arc<HttpState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let cx = context(&state)?;
    found(cx, &id).await?;
    cx.jobs.store.delete_file(&id).await?;
    Ok(Json(json!({"id": id, "object": "file", "deleted": true})))
}

/// A store failure in the middle of a download: the body breaks off (the caller sees a
/// truncated transfer, never a partial file passed off as whole).
fn broken(error: StoreError) -> std::io::Error {
    tracing::warn!(%error, "a file download broke off: job store");
    std::io::Error::other("job store unreachable")
}

/// `GET /v1/files/{id}/content`: streamed.
pub async fn content(
    State(state): State<Arc<HttpState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let cx = context(&state)?;
    let file = found(cx, &id).await?;
    let store = cx.jobs.store.clone();
    let body = match file.kind {
        FileKind::Upload => {
            let parts = stream::try_unfold(Some(-1i64), move |after| {
                let (store, id) = (store.clone(), id.clone());
                async move {
                    let Some(after) = after else { return Ok(None) };
                    let part = store.file_parts(&id, after, 1).await?.pop();
                    Ok(part.map(|(seq, data)| (Bytes::from(data), Some(seq))))
                }
            });
            Body::from_stream(parts.map_err(broken))
        }
        FileKind::BatchOutput | FileKind::BatchError => {
            let batch_id = file.batch_id.clone().unwrap_or_default();
            let batch = cx.jobs.store.batch(&batch_id).await?.ok_or_else(|| not_found(&id))?;
            let state = batch.state;
            let lines = output::lines(store, batch, state, file.kind);
            Body::from_stream(lines.map_ok(Bytes::from).map_err(broken))
        }
    };
    let mut response = Response::builder().header(header::CONTENT_TYPE, "application/jsonl");
    if file.kind == FileKind::Upload {
        // Rendered files are sent chunked: their size is recorded, but a length header would
        // let a mismatch cut the file short without a word.
        response = response.header(header::CONTENT_LENGTH, file.bytes);
    }
    Ok(response.body(body).expect("a content type and a length are valid headers"))
}
