//! Files and batches of OpenAI's Batch API, in the job store beside the jobs they become: an
//! uploaded file is kept in parts of about a megabyte (written as they arrive, read back one at
//! a time, so a large file never sits in memory); a batch row records its life (OpenAI's
//! states and their times) and the job that computes its lines.
//!
//! Every change of state is a compare-and-set on the current state, so two workers driving
//! the same batch (each runs the lifecycle) never both take one step.

use serde_json::Value;
use sqlx::Row;

use super::store::{JobStore, StoreError, json, now_ms};

crate::settings::named_values! {
    /// What a file is.
    FileKind {
        /// Uploaded through `POST /v1/files`: its bytes are in parts.
        Upload = "upload",
        /// A batch's answered lines, rendered from its job's results when read.
        BatchOutput = "batch_output",
        /// A batch's failed, expired and cancelled lines, rendered the same way.
        BatchError = "batch_error",
    }
}

crate::settings::named_values! {
    /// OpenAI's batch states.
    BatchState {
        Validating = "validating",
        Failed = "failed",
        InProgress = "in_progress",
        Finalizing = "finalizing",
        Completed = "completed",
        Expired = "expired",
        Cancelling = "cancelling",
        Cancelled = "cancelled",
    }
}

impl BatchState {
    /// The column holding the time the batch entered this state.
    fn time_column(self) -> &'static str {
        match self {
            BatchState::Validating => "created_ms",
            BatchState::Failed => "failed_ms",
            BatchState::InProgress => "in_progress_ms",
            BatchState::Finalizing => "finalizing_ms",
            BatchState::Completed => "completed_ms",
            BatchState::Expired => "expired_ms",
            BatchState::Cancelling => "cancelling_ms",
            BatchState::Cancelled => "cancelled_ms",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            BatchState::Failed
                | BatchState::Completed
                | BatchState::Expired
                | BatchState::Cancelled
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileRecord {
    pub id: String,
    pub purpose: String,
    pub filename: String,
    pub bytes: i64,
    pub kind: FileKind,
    pub batch_id: Option<String>,
    pub created_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BatchRecord {
    pub id: String,
    pub endpoint: String,
    pub input_file_id: String,
    pub completion_window: String,
    pub metadata: Option<Value>,
    pub state: BatchState,
    pub model: Option<String>,
    pub job_id: Option<String>,
    /// Validation errors: OpenAI's `errors.data` entries.
    pub errors: Option<Value>,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    pub lease_until_ms: i64,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub in_progress_ms: Option<i64>,
    pub finalizing_ms: Option<i64>,
    pub completed_ms: Option<i64>,
    pub failed_ms: Option<i64>,
    pub expired_ms: Option<i64>,
    pub cancelling_ms: Option<i64>,
    pub cancelled_ms: Option<i64>,
}

/// A batch to create.
#[derive(Debug, Clone)]
pub struct NewBatch {
    pub id: String,
    pub endpoint: String,
    pub input_file_id: String,
    pub completion_window: String,
    pub metadata: Option<Value>,
    pub expires_ms: i64,
}

const FILE_COLUMNS: &str = "id, purpose, filename, bytes, kind, batch_id, created_ms";
const BATCH_COLUMNS: &str = "id, endpoint, input_file_id, completion_window, metadata, state, \
    model, job_id, errors, output_file_id, error_file_id, lease_until_ms, created_ms, expires_ms, \
    in_progress_ms, finalizing_ms, completed_ms, failed_ms, expired_ms, cancelling_ms, cancelled_ms";

impl JobStore {
    /// Starts an upload: the file exists, incomplete (unlisted, unreadable), until
    /// [`JobStore::complete_upload`].
    pub async fn begin_upload(&self, id: &str, filename: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO files (id, purpose, filename, bytes, kind, complete, created_ms) \
             VALUES ($1, $2, $3, 0, $4, 0, $5)",
        )
        .bind(id)
        .bind("")
        .bind(filename)
        .bind(FileKind::Upload.as_str())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Writes part `seq` of an upload.
    pub async fn put_file_part(&self, id: &str, seq: i64, data: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO file_parts (file_id, seq, data) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(seq)
            .bind(data)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends an upload: the file is listed and read from now on.
    pub async fn complete_upload(
        &self,
        id: &str,
        purpose: &str,
        bytes: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE files SET complete = 1, purpose = $1, bytes = $2 WHERE id = $3")
            .bind(purpose)
            .bind(bytes)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A complete file.
    pub async fn file(&self, id: &str) -> Result<Option<FileRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE id = $1 AND complete = 1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| file_from_row(&row)).transpose()
    }

    /// Complete files newest first, after the file `after`, optionally of one purpose.
    pub async fn list_files(
        &self,
        purpose: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<FileRecord>, StoreError> {
        let cursor = match after {
            Some(id) => self.file(id).await?.map(|f| (f.created_ms, f.id)),
            None => None,
        };
        let (cursor_ms, cursor_id) = cursor.unwrap_or((i64::MAX, String::new()));
        let rows = sqlx::query(&format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE complete = 1 \
             AND (created_ms < $1 OR (created_ms = $1 AND id < $2) OR $3 = 1) \
             AND ($4 = '' OR purpose = $4) ORDER BY created_ms DESC, id DESC LIMIT $5"
        ))
        .bind(cursor_ms)
        .bind(cursor_id)
        .bind(i64::from(after.is_none()))
        .bind(purpose.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(file_from_row).collect()
    }

    /// Up to `limit` parts of an uploaded file after part `after` (-1 for the first), in order.
    pub async fn file_parts(
        &self,
        id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, data FROM file_parts WHERE file_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(id)
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
    }

    /// Deletes a file (complete or not) and its parts: true when there was one.
    pub async fn delete_file(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM file_parts WHERE file_id = $1").bind(id).execute(&mut *tx).await?;
        let deleted = sqlx::query("DELETE FROM files WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        tx.commit().await?;
        Ok(deleted)
    }

    /// Records a batch's output or error file (once: a second call with the same id is a no-op).
    pub async fn put_batch_file(
        &self,
        id: &str,
        kind: FileKind,
        batch_id: &str,
        bytes: i64,
    ) -> Result<(), StoreError> {
        let filename = match kind {
            FileKind::BatchError => format!("{batch_id}_error.jsonl"),
            _ => format!("{batch_id}_output.jsonl"),
        };
        sqlx::query(
            "INSERT INTO files (id, purpose, filename, bytes, kind, batch_id, complete, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind("batch_output")
        .bind(filename)
        .bind(bytes)
        .bind(kind.as_str())
        .bind(batch_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn create_batch(&self, batch: &NewBatch) -> Result<BatchRecord, StoreError> {
        sqlx::query(
            "INSERT INTO batches (id, endpoint, input_file_id, completion_window, metadata, state, \
             created_ms, expires_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&batch.id)
        .bind(&batch.endpoint)
        .bind(&batch.input_file_id)
        .bind(&batch.completion_window)
        .bind(batch.metadata.as_ref().map(Value::to_string))
        .bind(BatchState::Validating.as_str())
        .bind(now_ms())
        .bind(batch.expires_ms)
        .execute(&self.pool)
        .await?;
        self.batch(&batch.id).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("batch {} vanished after it was created", batch.id))
        })
    }

    pub async fn batch(&self, id: &str) -> Result<Option<BatchRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| batch_from_row(&row)).transpose()
    }

    /// Batches newest first, after the batch `after`.
    pub async fn list_batches(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BatchRecord>, StoreError> {
        let cursor = match after {
            Some(id) => self.batch(id).await?.map(|b| (b.created_ms, b.id)),
            None => None,
        };
        let (cursor_ms, cursor_id) = cursor.unwrap_or((i64::MAX, String::new()));
        let rows = sqlx::query(&format!(
            "SELECT {BATCH_COLUMNS} FROM batches \
             WHERE created_ms < $1 OR (created_ms = $1 AND id < $2) OR $3 = 1 \
             ORDER BY created_ms DESC, id DESC LIMIT $4"
        ))
        .bind(cursor_ms)
        .bind(cursor_id)
        .bind(i64::from(after.is_none()))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(batch_from_row).collect()
    }

    /// Batches with a step to take: validating ones nobody holds, and those in progress,
    /// finalizing or cancelling.
    pub async fn live_batches(&self, now: i64) -> Result<Vec<BatchRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {BATCH_COLUMNS} FROM batches WHERE (state = $1 AND lease_until_ms < $2) \
             OR state IN ($3, $4, $5) ORDER BY created_ms LIMIT 100"
        ))
        .bind(BatchState::Validating.as_str())
        .bind(now)
        .bind(BatchState::InProgress.as_str())
        .bind(BatchState::Finalizing.as_str())
        .bind(BatchState::Cancelling.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(batch_from_row).collect()
    }

    /// Holds a validating batch until `until` (ms): true when this call took it, i.e. no one
    /// held it (or their hold ran out).
    pub async fn claim_batch(&self, id: &str, until: i64) -> Result<bool, StoreError> {
        let taken = sqlx::query(
            "UPDATE batches SET lease_until_ms = $1 WHERE id = $2 AND state = $3 \
             AND lease_until_ms < $4",
        )
        .bind(until)
        .bind(id)
        .bind(BatchState::Validating.as_str())
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(taken == 1)
    }

    /// Extends the hold of the worker validating a batch.
    pub async fn renew_batch(&self, id: &str, until: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE batches SET lease_until_ms = $1 WHERE id = $2")
            .bind(until)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ties a validating batch to its job (first time only, or the same job again): false when
    /// the batch is no longer validating (cancelled meanwhile) or its window has ended. Once
    /// a batch is cancelling or past its window its job is therefore fixed, and whoever
    /// closes it renders the same files.
    pub async fn set_batch_job(
        &self,
        id: &str,
        job: &str,
        model: &str,
    ) -> Result<bool, StoreError> {
        let set = sqlx::query(
            "UPDATE batches SET job_id = $1, model = $2 WHERE id = $3 AND state = $4 \
             AND (job_id IS NULL OR job_id = $1) AND expires_ms > $5",
        )
        .bind(job)
        .bind(model)
        .bind(id)
        .bind(BatchState::Validating.as_str())
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(set == 1)
    }

    /// Moves a batch from one of `from` to `to`, stamping the time: true when this call did.
    pub async fn move_batch(
        &self,
        id: &str,
        from: &[BatchState],
        to: BatchState,
    ) -> Result<bool, StoreError> {
        let placeholders: Vec<String> = (0..from.len()).map(|i| format!("${}", i + 4)).collect();
        let sql = format!(
            "UPDATE batches SET state = $1, {} = $2 WHERE id = $3 AND state IN ({})",
            to.time_column(),
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(to.as_str()).bind(now_ms()).bind(id);
        for state in from {
            query = query.bind(state.as_str());
        }
        Ok(query.execute(&self.pool).await?.rows_affected() == 1)
    }

    /// Fails a validating batch with OpenAI's `errors.data` entries.
    pub async fn fail_batch(&self, id: &str, errors: &Value) -> Result<bool, StoreError> {
        let failed = sqlx::query(
            "UPDATE batches SET state = $1, failed_ms = $2, errors = $3 WHERE id = $4 AND state = $5",
        )
        .bind(BatchState::Failed.as_str())
        .bind(now_ms())
        .bind(errors.to_string())
        .bind(id)
        .bind(BatchState::Validating.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(failed == 1)
    }

    /// Records a finished batch's output and error files.
    pub async fn set_batch_files(
        &self,
        id: &str,
        output: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE batches SET output_file_id = $1, error_file_id = $2 WHERE id = $3")
            .bind(output)
            .bind(error)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl JobStore {
    /// Deletes up to `limit` jobs that ended before `before_ms`, with their documents and
    /// results, and the batches they computed (with those batches' output and error files):
    /// how many jobs went.
    pub async fn delete_ended_jobs(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM jobs WHERE state IN ($1, $2, $3) AND finished_ms < $4 \
             ORDER BY finished_ms LIMIT $5",
        )
        .bind(super::JobState::Completed.as_str())
        .bind(super::JobState::Failed.as_str())
        .bind(super::JobState::Cancelled.as_str())
        .bind(before_ms)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        let ids: Vec<String> = rows.iter().map(|row| row.try_get(0)).collect::<Result<_, _>>()?;
        for id in &ids {
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "DELETE FROM files WHERE batch_id IN (SELECT id FROM batches WHERE job_id = $1)",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM batches WHERE job_id = $1").bind(id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM documents WHERE job_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM jobs WHERE id = $1").bind(id).execute(&mut *tx).await?;
            tx.commit().await?;
        }
        // Batches that ended without a job (their file failed validation).
        sqlx::query(
            "DELETE FROM batches WHERE job_id IS NULL AND state IN ($1, $2, $3, $4) \
                     AND created_ms < $5",
        )
        .bind(BatchState::Failed.as_str())
        .bind(BatchState::Expired.as_str())
        .bind(BatchState::Cancelled.as_str())
        .bind(BatchState::Completed.as_str())
        .bind(before_ms)
        .execute(&self.pool)
        .await?;
        Ok(ids.len())
    }
}

fn file_from_row(row: &sqlx::any::AnyRow) -> Result<FileRecord, StoreError> {
    let kind: String = row.try_get("kind")?;
    Ok(FileRecord {
        id: row.try_get("id")?,
        purpose: row.try_get("purpose")?,
        filename: row.try_get("filename")?,
        bytes: row.try_get("bytes")?,
        kind: kind.parse().map_err(StoreError::Corrupt)?,
        batch_id: row.try_get("batch_id")?,
        created_ms: row.try_get("created_ms")?,
    })
}

fn batch_from_row(row: &sqlx::any::AnyRow) -> Result<BatchRecord, StoreError> {
    let state: String = row.try_get("state")?;
    let metadata: Option<String> = row.try_get("metadata")?;
    let errors: Option<String> = row.try_get("errors")?;
    Ok(BatchRecord {
        id: row.try_get("id")?,
        endpoint: row.try_get("endpoint")?,
        input_file_id: row.try_get("input_file_id")?,
        completion_window: row.try_get("completion_window")?,
        metadata: metadata.as_deref().map(json).transpose()?,
        state: state.parse().map_err(StoreError::Corrupt)?,
        model: row.try_get("model")?,
        job_id: row.try_get("job_id")?,
        errors: errors.as_deref().map(json).transpose()?,
        output_file_id: row.try_get("output_file_id")?,
        error_file_id: row.try_get("error_file_id")?,
        lease_until_ms: row.try_get("lease_until_ms")?,
        created_ms: row.try_get("created_ms")?,
        expires_ms: row.try_get("expires_ms")?,
        in_progress_ms: row.try_get("in_progress_ms")?,
        finalizing_ms: row.try_get("finalizing_ms")?,
        completed_ms: row.try_get("completed_ms")?,
        failed_ms: row.try_get("failed_ms")?,
        expired_ms: row.try_get("expired_ms")?,
        cancelling_ms: row.try_get("cancelling_ms")?,
        cancelled_ms: row.try_get("cancelled_ms")?,
    })
}
