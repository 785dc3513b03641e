//! Job state, the one truth every worker reads: SQLite on a single node, PostgreSQL for a
//! cluster, through sqlx's Any driver with one set of portable SQL and embedded migrations.
//!
//! A document's result is written once: [`JobStore::finish_document`] changes a document only
//! while it is pending, and counts it in its job in the same transaction, so a redelivered
//! message can never count twice or replace a committed result.
//!
//! Lock order: a transaction that writes a job's documents locks the job's row first
//! ([`lock_job`]). Cancelling (job, then its pending documents) and settling (a document, then
//! its job's counters) once took the same rows in opposite orders and PostgreSQL broke the
//! deadlock by failing one of them.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sqlx::{AnyPool, Connection, Row, any::AnyPoolOptions};

use super::{DocumentRecord, DocumentState, JobRecord, JobState, NewDocument, NewJob};
use crate::settings::Task;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job store: {0}")]
    Database(#[from] sqlx::Error),
    #[error("job store migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("job store holds a bad row: {0}")]
    Corrupt(String),
    /// A group commit this write was part of failed: the store's error as text (every waiting
    /// write gets a copy), already prefixed "job store: ".
    #[error("{0}")]
    Batch(String),
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[derive(Clone)]
pub struct JobStore {
    pub(super) pool: AnyPool,
}

const JOB_COLUMNS: &str = "id, idempotency_key, task, model, params, state, total, succeeded, \
                           failed, external, endpoint, created_ms, started_ms, finished_ms";
const DOCUMENT_COLUMNS: &str =
    "job_id, seq, custom_id, input, params, state, result, error, finished_ms";

impl JobStore {
    /// Connects to `sqlite://PATH` (created when missing) or `postgres://...`, and migrates.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url =
            if sqlite && !url.contains('?') { format!("{url}?mode=rwc") } else { url.to_string() };
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 16 })
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if sqlite {
                        // A writer waits for another instead of failing at once.
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *connection)
                            .await?;
                    }
                    Ok(())
                })
            })
            // A connection comes back once the rollback of a failed transaction has run (the
            // ping runs after it), and is closed if it still counts a transaction open: SQLite
            // rolls back on its own on some errors (a full disk), so sqlx's ROLLBACK fails and
            // its count stays up; reused, the next BEGIN would be a SAVEPOINT that a later
            // failure leaves open, holding the write lock for good.
            .after_release(|connection, _| {
                Box::pin(async move {
                    connection.ping().await?;
                    Ok(!connection.is_in_transaction())
                })
            })
            .connect(&url)
            .await?;
        if sqlite {
            // Readers do not wait for the writer. Set once: the mode is kept in the file.
            sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await?;
        }
        sqlx::migrate!("src/jobs/migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Closes the pool: later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Creates a job with its documents; with an idempotency key already used, returns that
    /// job instead (and false).
    pub async fn create_job(
        &self,
        job: &NewJob,
        documents: &[NewDocument],
    ) -> Result<(JobRecord, bool), StoreError> {
        if let Some(key) = &job.idempotency_key
            && let Some(existing) = self.job_by_key(key).await?
        {
            return Ok((existing, false));
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let total = documents.len() as i64 + job.arriving_later as i64;
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, idempotency_key, task, model, params, state, total, external, \
             endpoint, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&job.id)
        .bind(job.idempotency_key.clone())
        .bind(job.task.as_str())
        .bind(&job.model)
        .bind(job.params.to_string())
        .bind(JobState::Queued.as_str())
        .bind(total)
        .bind(job.external as i64)
        .bind(job.endpoint.clone())
        .bind(now)
        .execute(&mut *tx)
        .await;
        if let Err(error) = inserted {
            // Two submissions with one key at once: the other one won.
            drop(tx);
            if let Some(key) = &job.idempotency_key
                && let Some(existing) = self.job_by_key(key).await?
            {
                return Ok((existing, false));
            }
            return Err(error.into());
        }
        for (seq, document) in documents.iter().enumerate() {
            insert_document(&mut tx, &job.id, seq as i64, document, now).await?;
        }
        tx.commit().await?;
        let record = self.job(&job.id).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("job {} vanished after it was created", job.id))
        })?;
        Ok((record, true))
    }

    /// Adds a document published straight to the queue to its external job (first sight
    /// only); false when the job already holds `total` documents or is not external.
    pub async fn add_external_document(
        &self,
        job: &JobRecord,
        document: &NewDocument,
    ) -> Result<bool, StoreError> {
        if !job.external {
            return Ok(false);
        }
        let mut tx = self.pool.begin().await?;
        lock_job(&mut tx, &job.id).await?;
        let row = sqlx::query("SELECT COUNT(*) FROM documents WHERE job_id = $1")
            .bind(&job.id)
            .fetch_one(&mut *tx)
            .await?;
        let count: i64 = row.try_get(0)?;
        if count >= job.total {
            return Ok(false);
        }
        // Two first sightings at once collide on (job, seq) or (job, custom_id): the loser's
        // error sends its message back to the queue, and the retry sees the row.
        insert_document(&mut tx, &job.id, count, document, now_ms()).await?;
        // Published by its sender: the outbox has nothing to do for it.
        sqlx::query("UPDATE documents SET published = 1 WHERE job_id = $1 AND custom_id = $2")
            .bind(&job.id)
            .bind(&document.custom_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Appends documents `first_seq..` to a job created with `arriving_later` of them (a batch
    /// file read in chunks): false, and nothing written, once the job is cancelled or over.
    pub async fn append_documents(
        &self,
        job: &str,
        first_seq: i64,
        documents: &[NewDocument],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_job(&mut tx, job).await?;
        let state: Option<String> = sqlx::query("SELECT state FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
        let live = state
            .is_some_and(|s| s == JobState::Queued.as_str() || s == JobState::Running.as_str());
        if !live {
            return Ok(false);
        }
        let now = now_ms();
        for (i, document) in documents.iter().enumerate() {
            insert_document(&mut tx, job, first_seq + i as i64, document, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// How many documents a job holds so far.
    pub async fn document_count(&self, job: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM documents WHERE job_id = $1")
            .bind(job)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    pub async fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| job_from_row(&row)).transpose()
    }

    async fn job_by_key(&self, key: &str) -> Result<Option<JobRecord>, StoreError> {
        let row =
            sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key = $1"))
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|row| job_from_row(&row)).transpose()
    }

    /// Jobs newest first, `limit` at a time, after the job `after` (a page token); optionally
    /// only those in `state`.
    pub async fn list_jobs(
        &self,
        state: Option<JobState>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let cursor = match after {
            Some(id) => self.job(id).await?.map(|job| (job.created_ms, job.id)),
            None => None,
        };
        let mut conditions = Vec::new();
        if cursor.is_some() {
            conditions.push("(created_ms < $1 OR (created_ms = $1 AND id < $2))".to_string());
        }
        if state.is_some() {
            let n = if cursor.is_some() { 3 } else { 1 };
            conditions.push(format!("state = ${n}"));
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let limit_at = 1 + conditions.len() + usize::from(cursor.is_some());
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs {filter} ORDER BY created_ms DESC, id DESC LIMIT ${limit_at}"
        );
        let mut query = sqlx::query(&sql);
        if let Some((created, id)) = cursor {
            query = query.bind(created).bind(id);
        }
        if let Some(state) = state {
            query = query.bind(state.as_str());
        }
        query = query.bind(limit as i64);
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Documents of `job` after sequence number `after` (-1 for the first), in order.
    pub async fn documents(
        &self,
        job: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<DocumentRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE job_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3"
        ))
        .bind(job)
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(document_from_row).collect()
    }

    /// Documents of `job` finished after `(finished_ms, seq)` = `after`, in the order they
    /// finished (keyset pages).
    pub async fn finished_after(
        &self,
        job: &str,
        after: (i64, i64),
        limit: usize,
    ) -> Result<Vec<DocumentRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE job_id = $1 AND \
             (finished_ms > $2 OR (finished_ms = $2 AND seq > $3)) \
             ORDER BY finished_ms, seq LIMIT $4"
        ))
        .bind(job)
        .bind(after.0)
        .bind(after.1)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(document_from_row).collect()
    }

    pub async fn document(
        &self,
        job: &str,
        custom_id: &str,
    ) -> Result<Option<DocumentRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE job_id = $1 AND custom_id = $2"
        ))
        .bind(job)
        .bind(custom_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| document_from_row(&row)).transpose()
    }

    /// Pending documents of live jobs, oldest first (the in-process queue's source).
    pub async fn pending_documents(&self, limit: usize) -> Result<Vec<DocumentRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE state = $1 \
             ORDER BY created_ms, job_id, seq LIMIT $2"
        ))
        .bind(DocumentState::Pending.as_str())
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(document_from_row).collect()
    }

    /// Pending documents not yet confirmed by the broker, created before `before_ms` (the
    /// outbox: a worker that died between storing and publishing leaves them here).
    pub async fn unpublished(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<(JobRecord, DocumentRecord)>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE state = $1 AND published = 0 \
             AND created_ms <= $2 ORDER BY created_ms, job_id, seq LIMIT $3"
        ))
        .bind(DocumentState::Pending.as_str())
        .bind(before_ms)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut jobs: std::collections::HashMap<String, JobRecord> = Default::default();
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let document = document_from_row(row)?;
            if !jobs.contains_key(&document.job_id)
                && let Some(job) = self.job(&document.job_id).await?
            {
                jobs.insert(job.id.clone(), job);
            }
            if let Some(job) = jobs.get(&document.job_id) {
                out.push((job.clone(), document));
            }
        }
        Ok(out)
    }

    /// Marks documents `seqs` of `job` as confirmed by the broker.
    pub async fn mark_published(&self, job: &str, seqs: &[i64]) -> Result<(), StoreError> {
        for chunk in seqs.chunks(500) {
            let placeholders: Vec<String> =
                (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "UPDATE documents SET published = 1 WHERE job_id = $1 AND seq IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(job);
            for seq in chunk {
                query = query.bind(*seq);
            }
            let mut tx = self.pool.begin().await?;
            lock_job(&mut tx, job).await?;
            query.execute(&mut *tx).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Records a document's result (Ok: the output fields) or failure, if it is still
    /// pending: true when this call wrote it. Moves the job to running, then to completed or
    /// failed once every document is accounted for.
    pub async fn finish_document(
        &self,
        job: &str,
        custom_id: &str,
        outcome: &Result<Value, String>,
    ) -> Result<bool, StoreError> {
        let written = self.finish_documents(&[(job, custom_id, outcome)]).await?;
        Ok(written[0])
    }

    /// [`JobStore::finish_document`] for many documents in one transaction (one commit, one
    /// sync to disk): the group commit of the job transport. Returns, in order, whether each
    /// was written (false for a document no longer pending, or named twice).
    pub async fn finish_documents(
        &self,
        finishes: &[(&str, &str, &Result<Value, String>)],
    ) -> Result<Vec<bool>, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // Jobs locked in one order, so two group commits cannot wait on each other.
        let jobs: std::collections::BTreeSet<&str> = finishes.iter().map(|f| f.0).collect();
        for job in &jobs {
            lock_job(&mut tx, job).await?;
        }
        let mut counts: std::collections::BTreeMap<&str, (i64, i64)> = Default::default();
        let mut written = Vec::with_capacity(finishes.len());
        for &(job, custom_id, outcome) in finishes {
            let (state, result, error) = match outcome {
                Ok(fields) => (DocumentState::Succeeded, Some(fields.to_string()), None),
                Err(reason) => (DocumentState::Failed, None, Some(reason.clone())),
            };
            let wrote = sqlx::query(
                "UPDATE documents SET state = $1, result = $2, error = $3, finished_ms = $4 \
                 WHERE job_id = $5 AND custom_id = $6 AND state = $7",
            )
            .bind(state.as_str())
            .bind(result)
            .bind(error)
            .bind(now)
            .bind(job)
            .bind(custom_id)
            .bind(DocumentState::Pending.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if wrote {
                let count = counts.entry(job).or_default();
                if state == DocumentState::Succeeded {
                    count.0 += 1;
                } else {
                    count.1 += 1;
                }
            }
            written.push(wrote);
        }
        for (job, (succeeded, failed)) in counts {
            sqlx::query(
                "UPDATE jobs SET succeeded = succeeded + $1, failed = failed + $2, \
                 started_ms = COALESCE(started_ms, $3), \
                 state = CASE WHEN state = $4 THEN $5 ELSE state END WHERE id = $6",
            )
            .bind(succeeded)
            .bind(failed)
            .bind(now)
            .bind(JobState::Queued.as_str())
            .bind(JobState::Running.as_str())
            .bind(job)
            .execute(&mut *tx)
            .await?;
            // Every document accounted for: completed, or failed when none succeeded.
            sqlx::query(
                "UPDATE jobs SET finished_ms = $1, \
                 state = CASE WHEN succeeded = 0 THEN $2 ELSE $3 END \
                 WHERE id = $4 AND succeeded + failed = total AND state IN ($5, $6)",
            )
            .bind(now)
            .bind(JobState::Failed.as_str())
            .bind(JobState::Completed.as_str())
            .bind(job)
            .bind(JobState::Queued.as_str())
            .bind(JobState::Running.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(written)
    }

    /// Cancels a job that has not ended: its pending documents will not be computed. Returns
    /// the job as it is after (None for an unknown job).
    pub async fn cancel_job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let live = sqlx::query("UPDATE jobs SET state = $1 WHERE id = $2 AND state IN ($3, $4)")
            .bind(JobState::Cancelling.as_str())
            .bind(id)
            .bind(JobState::Queued.as_str())
            .bind(JobState::Running.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if live {
            sqlx::query("UPDATE documents SET state = $1, finished_ms = $2 WHERE job_id = $3 AND state = $4")
                .bind(DocumentState::Cancelled.as_str())
                .bind(now)
                .bind(id)
                .bind(DocumentState::Pending.as_str())
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE jobs SET state = $1, finished_ms = $2 WHERE id = $3")
                .bind(JobState::Cancelled.as_str())
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.job(id).await
    }
}

/// Locks `job`'s row until the transaction ends (see the lock order in the header). SQLite
/// has one writer at a time, so there it only joins the write.
async fn lock_job(tx: &mut sqlx::Transaction<'_, sqlx::Any>, job: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE jobs SET state = state WHERE id = $1").bind(job).execute(&mut **tx).await?;
    Ok(())
}

async fn insert_document(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    job: &str,
    seq: i64,
    document: &NewDocument,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO documents (job_id, seq, custom_id, input, params, state, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(job)
    .bind(seq)
    .bind(&document.custom_id)
    .bind(document.input.to_string())
    .bind(document.params.as_ref().map(Value::to_string))
    .bind(DocumentState::Pending.as_str())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A stored JSON text, read back.
pub(super) fn json(text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn job_from_row(row: &sqlx::any::AnyRow) -> Result<JobRecord, StoreError> {
    let task: String = row.try_get("task")?;
    let state: String = row.try_get("state")?;
    Ok(JobRecord {
        id: row.try_get("id")?,
        idempotency_key: row.try_get("idempotency_key")?,
        task: task.parse::<Task>().map_err(StoreError::Corrupt)?,
        model: row.try_get("model")?,
        params: json(&row.try_get::<String, _>("params")?)?,
        state: state.parse().map_err(StoreError::Corrupt)?,
        total: row.try_get("total")?,
        succeeded: row.try_get("succeeded")?,
        failed: row.try_get("failed")?,
        external: row.try_get::<i64, _>("external")? != 0,
        endpoint: row.try_get("endpoint")?,
        created_ms: row.try_get("created_ms")?,
        started_ms: row.try_get("started_ms")?,
        finished_ms: row.try_get("finished_ms")?,
    })
}

fn document_from_row(row: &sqlx::any::AnyRow) -> Result<DocumentRecord, StoreError> {
    let state: String = row.try_get("state")?;
    let params: Option<String> = row.try_get("params")?;
    let result: Option<String> = row.try_get("result")?;
    Ok(DocumentRecord {
        job_id: row.try_get("job_id")?,
        seq: row.try_get("seq")?,
        custom_id: row.try_get("custom_id")?,
        input: json(&row.try_get::<String, _>("input")?)?,
        params: params.as_deref().map(json).transpose()?,
        state: state.parse().map_err(StoreError::Corrupt)?,
        result: result.as_deref().map(json).transpose()?,
        error: row.try_get("error")?,
        finished_ms: row.try_get("finished_ms")?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::jobs::test_job;

    /// Sets `PRAGMA max_page_count` on every connection of the pool (all held at once).
    async fn limit_pages(store: &JobStore, pages: i64) {
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut connection = store.pool.acquire().await.unwrap();
            let sql = format!("PRAGMA max_page_count = {pages}");
            sqlx::query(&sql).execute(&mut *connection).await.unwrap();
            held.push(connection);
        }
    }

    async fn create(store: &JobStore, documents: usize) -> Result<(JobRecord, bool), StoreError> {
        let job = test_job();
        let text = "ação e coração ".repeat(200);
        let documents: Vec<NewDocument> = (0..documents)
            .map(|i| NewDocument {
                custom_id: format!("doc-{i}"),
                input: json!({"text": text}),
                params: None,
            })
            .collect();
        store.create_job(&job, &documents).await
    }

    /// A full store (here SQLite's page limit, which gives the same SQLITE_FULL) fails the
    /// writes that need room, saying so, and once there is room again every write works. The
    /// page limit does not make SQLite roll a transaction back on its own as a full disk
    /// does, so the connection check of `after_release` is exercised by `make faults`
    /// (disk-full, a real tmpfs), not here.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_store_refuses_writes_clearly_then_takes_them_when_there_is_room() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
        let store = JobStore::connect(&url).await.unwrap();
        create(&store, 1).await.unwrap();
        let pages: i64 =
            sqlx::query("PRAGMA page_count").fetch_one(&store.pool).await.unwrap().get(0);
        limit_pages(&store, pages + 40).await;
        let mut refusals = Vec::new();
        for _ in 0..40 {
            // Writers at once, as the worker's group commit and submissions are.
            let (a, b) = tokio::join!(create(&store, 30), create(&store, 30));
            refusals.extend([a, b].into_iter().filter_map(Result::err).map(|e| e.to_string()));
        }
        assert!(!refusals.is_empty(), "the page limit was never reached");
        assert!(refusals.iter().all(|r| r.contains("database or disk is full")), "{refusals:?}");
        limit_pages(&store, 1 << 30).await;
        for _ in 0..10 {
            let (job, _) = create(&store, 30).await.unwrap();
            assert_eq!(store.job(&job.id).await.unwrap().unwrap().total, 30);
        }
        store.close().await;
    }
}
