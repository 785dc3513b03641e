//! A pool of plain OS threads for the CPU work around a model call: tokenizing inputs before
//! the batcher sees them, and turning the model's numbers into answers after. It keeps that work
//! off the async runtime (a long document must not stall other calls' I/O) and off the model
//! threads (which only run batches), as text-embeddings-inference does with its tokenizer pool.
//! A job that panics (a tokenizer library asserting on an input it does not take) fails its own
//! call, is logged once, and leaves its thread serving the others.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{Arc, Mutex, mpsc},
};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A cheap cloneable handle; the threads stop when the last handle is dropped.
#[derive(Clone)]
pub struct CpuPool {
    jobs: mpsc::Sender<Job>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("the tokenizer pool stopped")]
    Stopped,
    /// The message stays in the log: callers get no library internals.
    #[error("tokenizing or post-processing this call failed unexpectedly (the worker logged why)")]
    Panicked,
}

impl CpuPool {
    /// Starts `threads` workers (at least one).
    pub fn new(threads: usize) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("lote-tokenize-{index}"))
                .spawn(move || {
                    loop {
                        // Hold the lock only while taking a job, not while running it.
                        let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .expect("a tokenizer thread starts");
        }
        Self { jobs }
    }

    /// One thread per core, at least two.
    pub fn for_this_machine() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, |n| n.get()).max(2))
    }

    /// Runs `work` on a pool thread and waits for its result without blocking the runtime.
    pub async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, PoolError> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let outcome = catch_unwind(AssertUnwindSafe(work)).map_err(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(%message, "a tokenizer pool job panicked; its call fails");
                PoolError::Panicked
            });
            let _ = done.send(outcome);
        });
        self.jobs.send(job).map_err(|_| PoolError::Stopped)?;
        result.await.map_err(|_| PoolError::Stopped)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_off_the_runtime_and_comes_back() {
        let pool = CpuPool::new(2);
        let caller = std::thread::current().id();
        let (value, thread) =
            pool.run(move || (21 * 2, std::thread::current().id())).await.unwrap();
        assert_eq!(value, 42);
        assert_ne!(thread, caller);
        let name = pool.run(|| std::thread::current().name().map(String::from)).await.unwrap();
        assert!(name.unwrap().starts_with("lote-tokenize-"));
    }

    #[tokio::test]
    async fn a_job_that_panics_fails_alone_and_the_thread_goes_on() {
        let pool = CpuPool::new(1);
        let failed = pool.run(|| -> u32 { panic!("an assertion in a library") }).await;
        assert_eq!(failed, Err(PoolError::Panicked));
        assert_eq!(pool.run(|| 7).await, Ok(7), "the one thread still serves");
    }

    #[tokio::test]
    async fn many_jobs_share_the_threads() {
        let pool = CpuPool::new(2);
        let jobs: Vec<_> = (0..50u64).map(|i| pool.run(move || i * i)).collect();
        let results = futures::future::join_all(jobs).await;
        let total: u64 = results.into_iter().map(Result::unwrap).sum();
        assert_eq!(total, (0..50u64).map(|i| i * i).sum::<u64>());
    }
}
