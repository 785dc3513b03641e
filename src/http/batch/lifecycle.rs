//! Moves batches through OpenAI's states, on every worker, once a second: a validating batch
//! nobody holds is taken and validated ([`super::intake`]); a batch whose job has ended
//! finalizes (its output and error files are sized and recorded) and completes; a batch past
//! its `completion_window` has its pending lines cancelled and expires; a cancelling batch
//! has its job cancelled and ends cancelled. Every step is a compare-and-set in the store, and
//! redoing a step a dead worker left half done is harmless, so workers need not agree on who
//! drives which batch.

use std::time::Duration;

use tokio::sync::watch;

use super::{BatchContext, intake};
use crate::jobs::{
    batch_store::{BatchRecord, BatchState, FileKind},
    store::{StoreError, now_ms},
};

/// How often batches are looked at.
const TICK: Duration = Duration::from_secs(1);

/// The id of a batch's output or error file (fixed, so a step redone records the same file).
pub fn file_id(batch_id: &str, kind: FileKind) -> String {
    let suffix = batch_id.trim_start_matches("batch_");
    match kind {
        FileKind::BatchError => format!("file-{suffix}-errors"),
        _ => format!("file-{suffix}-output"),
    }
}

/// Drives every live batch until `stop` turns true.
pub async fn run(cx: BatchContext, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match cx.jobs.store.live_batches(now_ms()).await {
            Ok(batches) => {
                for batch in batches {
                    if let Err(error) = step(&cx, batch).await {
                        tracing::warn!(%error, "batch step failed; it is retried");
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "batches: store unreachable"),
        }
    }
}

/// Takes a batch's next step, if it has one.
pub async fn step(cx: &BatchContext, batch: BatchRecord) -> Result<(), StoreError> {
    let store = &cx.jobs.store;
    let now = now_ms();
    let expired = now >= batch.expires_ms;
    match batch.state {
        BatchState::Validating if expired => close(cx, &batch, BatchState::Expired).await?,
        BatchState::Validating => {
            if store.claim_batch(&batch.id, now + intake::LEASE_MS).await? {
                spawn_intake(cx.clone(), batch);
            }
        }
        BatchState::InProgress => {
            let Some(job) = &batch.job_id else { return Ok(()) };
            // A job that ended in time completes its batch even if this look comes late.
            let ended = store.job(job).await?.is_none_or(|job| {
                job.state.is_final() && job.finished_ms.is_none_or(|at| at < batch.expires_ms)
            });
            if ended
                && store
                    .move_batch(&batch.id, &[BatchState::InProgress], BatchState::Finalizing)
                    .await?
            {
                close(cx, &batch, BatchState::Completed).await?;
            } else if expired {
                close(cx, &batch, BatchState::Expired).await?;
            }
        }
        BatchState::Finalizing => close(cx, &batch, BatchState::Completed).await?,
        BatchState::Cancelling => close(cx, &batch, BatchState::Cancelled).await?,
        BatchState::Failed
        | BatchState::Completed
        | BatchState::Expired
        | BatchState::Cancelled => {}
    }
    Ok(())
}

/// Validates a batch this worker has just taken, in the background.
pub fn spawn_intake(cx: BatchContext, batch: BatchRecord) {
    tokio::spawn(async move {
        if let Err(error) = intake::intake(&cx, &batch).await {
            tracing::warn!(batch = %batch.id, %error, "batch validation stopped; another try follows");
            // Let the next tick (here or on another worker) take it over at once.
            let _ = cx.jobs.store.renew_batch(&batch.id, 0).await;
        }
    });
}

/// Ends a batch in `to`: lines not run yet are cancelled (unless it completes), its files are
/// sized and recorded, and its state moves.
async fn close(cx: &BatchContext, batch: &BatchRecord, to: BatchState) -> Result<(), StoreError> {
    let store = &cx.jobs.store;
    // Read again: the job may have been tied to the batch since `batch` was read (it cannot
    // be any more, see `set_batch_job`), and every worker closing it must see the same job.
    let Some(batch) = store.batch(&batch.id).await? else { return Ok(()) };
    if batch.state.is_final() {
        return Ok(());
    }
    let batch = &batch;
    let (mut output, mut errors) = (None, None);
    if let Some(job) = &batch.job_id
        && to != BatchState::Completed
    {
        store.cancel_job(job).await?;
    }
    let sizes = super::output::sizes(store, batch, to).await?;
    for (kind, lines, bytes, slot) in [
        (FileKind::BatchOutput, sizes.output_lines, sizes.output_bytes, &mut output),
        (FileKind::BatchError, sizes.error_lines, sizes.error_bytes, &mut errors),
    ] {
        if lines > 0 {
            let id = file_id(&batch.id, kind);
            store.put_batch_file(&id, kind, &batch.id, bytes).await?;
            *slot = Some(id);
        }
    }
    store.set_batch_files(&batch.id, output.as_deref(), errors.as_deref()).await?;
    let from = [
        BatchState::Validating,
        BatchState::InProgress,
        BatchState::Finalizing,
        BatchState::Cancelling,
    ];
    if store.move_batch(&batch.id, &from, to).await? {
        tracing::info!(batch = %batch.id, state = %to, "batch ended");
    }
    Ok(())
}
