//! A batch's output and error files, rendered from its job's documents in input order each
//! time they are read (never stored twice, never held whole): a line per document in OpenAI's
//! format `{id, custom_id, response: {status_code, request_id, body}, error}`. Answered
//! lines go to the output file; lines the route refused or the model failed go to the error
//! file with their response, and lines the batch never ran (expired, cancelled) with OpenAI's
//! `batch_expired` / `batch_cancelled` error (those never stored as documents, when the batch
//! ended while its file was being read, are taken from the input file).

use futures::{Stream, TryStreamExt, stream};
use serde_json::{Value, json};

use super::file_lines::FileLines;
use crate::jobs::{
    DocumentRecord, DocumentState,
    batch_store::{BatchRecord, BatchState, FileKind},
    store::{JobStore, StoreError},
};

/// Documents read from the store at a time.
const PAGE: usize = 256;

/// How a document a worker computed is stored: the route's answer.
pub fn stored_response(status: u16, body: Value) -> Value {
    json!({"status_code": status, "body": body})
}

/// The `id` and `request_id` of line `seq` of a batch.
fn line_ids(batch_id: &str, seq: i64) -> (String, String) {
    let suffix = batch_id.trim_start_matches("batch_");
    (format!("batch_req_{suffix}_{seq}"), format!("req_{suffix}_{seq}"))
}

/// The error line of a request its batch never ran (it expired or was cancelled first).
fn never_run(batch_id: &str, state: BatchState, seq: i64, custom_id: &str) -> Value {
    let error = if state == BatchState::Expired {
        json!({"code": "batch_expired",
               "message": "This request could not be executed before the completion window expired."})
    } else {
        json!({"code": "batch_cancelled",
               "message": "This request was not executed: its batch was cancelled."})
    };
    let (id, _) = line_ids(batch_id, seq);
    json!({"id": id, "custom_id": custom_id, "response": null, "error": error})
}

/// The file a document's line belongs to, and the line (None for a document still pending).
pub fn line_of(
    batch_id: &str,
    state: BatchState,
    document: &DocumentRecord,
) -> Option<(FileKind, Value)> {
    let (id, request_id) = line_ids(batch_id, document.seq);
    let response = |stored: &Value| {
        json!({
            "status_code": stored["status_code"],
            "request_id": request_id,
            "body": stored["body"],
        })
    };
    let (kind, response, error) = match document.state {
        DocumentState::Pending => return None,
        DocumentState::Succeeded => {
            let stored = document.result.clone().unwrap_or(Value::Null);
            (FileKind::BatchOutput, response(&stored), Value::Null)
        }
        DocumentState::Failed => {
            let reason = document.error.clone().unwrap_or_default();
            match serde_json::from_str::<Value>(&reason) {
                Ok(stored) if stored.get("status_code").is_some() => {
                    (FileKind::BatchError, response(&stored), Value::Null)
                }
                _ => (
                    FileKind::BatchError,
                    Value::Null,
                    json!({"code": "server_error", "message": reason}),
                ),
            }
        }
        DocumentState::Cancelled => {
            let line = never_run(batch_id, state, document.seq, &document.custom_id);
            return Some((FileKind::BatchError, line));
        }
    };
    let line =
        json!({"id": id, "custom_id": document.custom_id, "response": response, "error": error});
    Some((kind, line))
}

/// The text of a line: compact JSON and a newline.
fn text(line: &Value) -> String {
    let mut text = line.to_string();
    text.push('\n');
    text
}

/// Where the rendering of a batch's files is.
enum Phase {
    /// Its job's documents after this sequence number.
    Documents {
        after: i64,
    },
    /// Lines of the input file never stored as documents (a batch cancelled or expired while
    /// its file was being read): `stored` documents came first.
    Unstored {
        lines: Box<FileLines>,
        index: i64,
        stored: i64,
    },
    Done,
}

/// Every line of a batch's two files, a page at a time, as the batch ends in `state`: its
/// documents in input order, then the lines it never stored, so each input line is in one
/// of the two files once.
fn pages(
    store: JobStore,
    batch: BatchRecord,
    state: BatchState,
) -> impl Stream<Item = Result<Vec<(FileKind, String)>, StoreError>> {
    let first = match batch.job_id {
        Some(_) => Phase::Documents { after: -1 },
        None => Phase::Unstored {
            lines: Box::new(FileLines::new(store.clone(), &batch.input_file_id)),
            index: 0,
            stored: 0,
        },
    };
    stream::try_unfold(first, move |phase| {
        let (store, batch) = (store.clone(), batch.clone());
        async move {
            let mut page = Vec::new();
            let next = match phase {
                Phase::Done => return Ok(None),
                Phase::Documents { after } => {
                    let job = batch.job_id.as_deref().unwrap_or_default();
                    let documents = store.documents(job, after, PAGE).await?;
                    for document in &documents {
                        if let Some((kind, line)) = line_of(&batch.id, state, document) {
                            page.push((kind, text(&line)));
                        }
                    }
                    let last = documents.last().map_or(after, |d| d.seq);
                    if documents.len() == PAGE {
                        Phase::Documents { after: last }
                    } else {
                        Phase::Unstored {
                            lines: Box::new(FileLines::new(store.clone(), &batch.input_file_id)),
                            index: 0,
                            stored: last + 1,
                        }
                    }
                }
                Phase::Unstored { .. }
                    if !matches!(state, BatchState::Cancelled | BatchState::Expired) =>
                {
                    Phase::Done
                }
                Phase::Unstored { mut lines, mut index, stored } => {
                    let mut done = true;
                    while let Some((_, line)) = lines.next().await? {
                        if line.trim().is_empty() {
                            continue;
                        }
                        let seq = index;
                        index += 1;
                        if seq < stored {
                            continue;
                        }
                        let parsed = serde_json::from_str::<Value>(&line).ok();
                        if let Some(custom_id) =
                            parsed.as_ref().and_then(|v| v["custom_id"].as_str())
                        {
                            let line = never_run(&batch.id, state, seq, custom_id);
                            page.push((FileKind::BatchError, text(&line)));
                        }
                        if page.len() == PAGE {
                            done = false;
                            break;
                        }
                    }
                    if done { Phase::Done } else { Phase::Unstored { lines, index, stored } }
                }
            };
            Ok(Some((page, next)))
        }
    })
}

/// The `kind` file of a batch that ended in `state`, a page of text at a time.
pub fn lines(
    store: JobStore,
    batch: BatchRecord,
    state: BatchState,
    kind: FileKind,
) -> impl Stream<Item = Result<String, StoreError>> {
    pages(store, batch, state)
        .map_ok(move |page| {
            page.into_iter().filter(|(of, _)| *of == kind).map(|(_, text)| text).collect::<String>()
        })
        .try_filter(|text| std::future::ready(!text.is_empty()))
}

/// The bytes and line counts of a batch's two files, read through once when it finalizes.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Sizes {
    pub output_bytes: i64,
    pub output_lines: i64,
    pub error_bytes: i64,
    pub error_lines: i64,
}

pub async fn sizes(
    store: &JobStore,
    batch: &BatchRecord,
    state: BatchState,
) -> Result<Sizes, StoreError> {
    let mut sizes = Sizes::default();
    let pages = pages(store.clone(), batch.clone(), state);
    futures::pin_mut!(pages);
    while let Some(page) = pages.try_next().await? {
        for (kind, text) in page {
            if kind == FileKind::BatchOutput {
                sizes.output_bytes += text.len() as i64;
                sizes.output_lines += 1;
            } else {
                sizes.error_bytes += text.len() as i64;
                sizes.error_lines += 1;
            }
        }
    }
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(
        state: DocumentState,
        result: Option<Value>,
        error: Option<&str>,
    ) -> DocumentRecord {
        DocumentRecord {
            job_id: "job_1".into(),
            seq: 4,
            custom_id: "c-4".into(),
            input: json!({}),
            params: None,
            state,
            result,
            error: error.map(String::from),
            finished_ms: Some(1),
        }
    }

    #[test]
    fn each_document_state_has_its_line() {
        let answered =
            document(DocumentState::Succeeded, Some(stored_response(200, json!({"x": 1}))), None);
        let (kind, line) = line_of("batch_ab", BatchState::Completed, &answered).unwrap();
        assert_eq!(kind, FileKind::BatchOutput);
        assert_eq!(
            line,
            json!({"id": "batch_req_ab_4", "custom_id": "c-4", "error": null,
                   "response": {"status_code": 200, "request_id": "req_ab_4", "body": {"x": 1}}})
        );
        let refused = stored_response(400, json!({"error": {"message": "bad"}})).to_string();
        let refused = document(DocumentState::Failed, None, Some(&refused));
        let (kind, line) = line_of("batch_ab", BatchState::Completed, &refused).unwrap();
        assert_eq!(kind, FileKind::BatchError);
        assert_eq!(line["response"]["status_code"], 400);
        let dead = document(DocumentState::Failed, None, Some("dead-lettered: x"));
        let (_, line) = line_of("batch_ab", BatchState::Completed, &dead).unwrap();
        assert_eq!(line["error"], json!({"code": "server_error", "message": "dead-lettered: x"}));
        assert_eq!(line["response"], Value::Null);
        let never = document(DocumentState::Cancelled, None, None);
        assert_eq!(
            line_of("batch_ab", BatchState::Expired, &never).unwrap().1["error"]["code"],
            "batch_expired"
        );
        assert_eq!(
            line_of("batch_ab", BatchState::Cancelled, &never).unwrap().1["error"]["code"],
            "batch_cancelled"
        );
        assert_eq!(
            line_of(
                "batch_ab",
                BatchState::InProgress,
                &document(DocumentState::Pending, None, None)
            ),
            None
        );
    }
}
