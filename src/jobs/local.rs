//! The single-node queue: no broker, the job store is the queue. Pending documents of live jobs
//! are handed to the worker oldest first, `concurrency` at a time (so the engine can batch
//! them); a requeued one comes back later, computed alone. After a crash or a restart the
//! documents that were in flight are simply still pending, and are picked up again.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::Notify;

use super::{
    store::JobStore,
    wire::DocumentMessage,
    worker::{DocumentHandler, Settle},
};

/// A document in the store: (job id, custom id).
type Key = (String, String);

/// Wakes the queue when work arrives (a job is submitted) instead of at its next poll.
#[derive(Clone, Default)]
pub struct LocalQueueHandle {
    notify: Arc<Notify>,
}

impl LocalQueueHandle {
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

/// Runs the queue until `stop` resolves; in-flight documents finish first.
pub async fn run(
    store: JobStore,
    handler: Arc<DocumentHandler>,
    concurrency: usize,
    handle: LocalQueueHandle,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let in_flight: Arc<Mutex<HashSet<Key>>> = Arc::default();
    let attempts: Arc<Mutex<HashMap<Key, u32>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let busy = in_flight.lock().unwrap_or_else(|p| p.into_inner()).len();
        let free = concurrency.saturating_sub(busy);
        if free > 0 {
            // A slow store must not hold up a stop.
            let pending = tokio::select! {
                _ = &mut stop => break,
                pending = store.pending_documents(busy + free) => pending,
            };
            match pending {
                Ok(documents) => {
                    for document in documents {
                        let key = (document.job_id.clone(), document.custom_id.clone());
                        {
                            let mut flying = in_flight.lock().unwrap_or_else(|p| p.into_inner());
                            if flying.len() >= concurrency || !flying.insert(key.clone()) {
                                continue;
                            }
                        }
                        let redelivered = attempts
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get(&key)
                            .is_some_and(|&n| n > 0);
                        let (handler, in_flight, attempts, handle) =
                            (handler.clone(), in_flight.clone(), attempts.clone(), handle.clone());
                        let message = DocumentMessage::from_record(&document);
                        tasks.spawn(async move {
                            let handled = handler.handle(Ok(message.clone()), redelivered).await;
                            match handled.settle {
                                Settle::Ack => {
                                    attempts.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                                }
                                Settle::Requeue => {
                                    *attempts
                                        .lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .entry(key.clone())
                                        .or_default() += 1;
                                    // Not at once: whatever was transient gets a moment.
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                                Settle::DeadLetter(reason) => {
                                    // No dead-letter queue here: the document is failed with
                                    // the reason (if the handler has not done so already).
                                    let _ = handler.account_dead_letter(&message, &reason).await;
                                    attempts.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                                }
                            }
                            in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                            handle.wake();
                        });
                    }
                }
                Err(error) => tracing::warn!(%error, "job store unreachable; retrying"),
            }
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = handle.notify.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
}
