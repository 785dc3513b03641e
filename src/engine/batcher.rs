//! The engine loop for one model: a tokio task owns the [`BatchQueue`], a dedicated OS thread
//! owns the model (tch tensors stay on it), and callers hold a cheap cloneable [`Batcher`]
//! handle. A request is answered through a oneshot channel: with its output, or with
//! [`BatchError::DeadlineExceeded`] if its deadline passed while it waited, or dropped unanswered
//! if its caller went away before it was computed. A full queue refuses at once.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::policy::{BatchQueue, Decision, Entry, Lane, Policy};

/// What runs batches: the model side of a task. Runs on its own OS thread.
pub trait BatchModel: Send + 'static {
    type Input: Send + 'static;
    type Output: Send + 'static;
    /// One output (or error message) per input, in order.
    fn run(&mut self, batch: Vec<Self::Input>) -> Vec<Result<Self::Output, String>>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("overloaded: {queued} requests are already queued for this model")]
    Overloaded { queued: usize },
    #[error("deadline exceeded while queued")]
    DeadlineExceeded,
    #[error("the model failed: {0}")]
    Model(String),
    #[error("the model is shutting down")]
    Unavailable,
}

/// One request in the queue.
struct Request<I, O> {
    input: I,
    reply: oneshot::Sender<Result<O, BatchError>>,
}

/// A cheap handle to one model's batcher.
pub struct Batcher<M: BatchModel> {
    requests: mpsc::UnboundedSender<Entry<Request<M::Input, M::Output>>>,
}

impl<M: BatchModel> Clone for Batcher<M> {
    fn clone(&self) -> Self {
        Self { requests: self.requests.clone() }
    }
}

impl<M: BatchModel> Batcher<M> {
    /// Starts the model thread and the queue task (on the current tokio runtime).
    pub fn start(model: M, policy: Policy) -> Self {
        let (requests, incoming) = mpsc::unbounded_channel();
        let (work, work_rx) = std::sync::mpsc::channel::<Work<M>>();
        std::thread::Builder::new()
            .name("lote-model".into())
            .spawn(move || model_thread(model, work_rx))
            .expect("the model thread starts");
        tokio::spawn(queue_task::<M>(policy, incoming, work));
        Self { requests }
    }

    /// Queues `input` (of `tokens` tokens) and waits for its output.
    pub async fn infer(
        &self,
        input: M::Input,
        tokens: usize,
        lane: Lane,
        deadline: Option<Duration>,
    ) -> Result<M::Output, BatchError> {
        let (reply, answer) = oneshot::channel();
        // tokio's clock, so that tests with paused time see the same instants as the queue.
        let now = tokio::time::Instant::now().into_std();
        let entry = Entry {
            item: Request { input, reply },
            lane,
            tokens,
            enqueued: now,
            deadline: deadline.map(|d| now + d),
        };
        self.requests.send(entry).map_err(|_| BatchError::Unavailable)?;
        answer.await.unwrap_or(Err(BatchError::Unavailable))
    }
}

fn model_thread<M: BatchModel>(mut model: M, work: std::sync::mpsc::Receiver<Work<M>>) {
    while let Ok((batch, done)) = work.recv() {
        let _ = done.send(model.run(batch));
    }
}

/// One output (or error message) per input of a batch.
type Outputs<O> = Vec<Result<O, String>>;

/// A batch for the model thread, and where its outputs go.
type Work<M> = (Vec<<M as BatchModel>::Input>, oneshot::Sender<Outputs<<M as BatchModel>::Output>>);

/// The batch on the model thread: its callers, and its outputs to come.
struct Running<O> {
    replies: Vec<oneshot::Sender<Result<O, BatchError>>>,
    outputs: oneshot::Receiver<Outputs<O>>,
}

async fn queue_task<M: BatchModel>(
    policy: Policy,
    mut incoming: mpsc::UnboundedReceiver<Entry<Request<M::Input, M::Output>>>,
    work: std::sync::mpsc::Sender<Work<M>>,
) {
    let mut queue: BatchQueue<Request<M::Input, M::Output>> = BatchQueue::new(policy);
    let mut running: Option<Running<M::Output>> = None;
    let mut open = true;
    loop {
        let now = tokio::time::Instant::now().into_std();
        for expired in queue.take_expired(now) {
            let _ = expired.item.reply.send(Err(BatchError::DeadlineExceeded));
        }
        queue.remove_where(|request| request.reply.is_closed());
        let mut wake = None;
        if running.is_none() {
            match queue.next_batch(now) {
                Decision::Run(batch) => {
                    let (inputs, replies): (Vec<_>, Vec<_>) =
                        batch.into_iter().map(|e| (e.item.input, e.item.reply)).unzip();
                    let (done, result) = oneshot::channel();
                    if work.send((inputs, done)).is_err() {
                        for reply in replies {
                            let _ = reply.send(Err(BatchError::Unavailable));
                        }
                        return;
                    }
                    running = Some(Running { replies, outputs: result });
                    continue;
                }
                Decision::WaitUntil(at) => wake = Some(at),
                Decision::Idle if !open => return,
                Decision::Idle => {}
            }
        }
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        let finished = async {
            match running.as_mut() {
                Some(batch) => (&mut batch.outputs).await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            entry = incoming.recv(), if open => match entry {
                Some(entry) => {
                    if let Err((overloaded, entry)) = queue.push(entry) {
                        let _ = entry.item.reply.send(Err(BatchError::Overloaded { queued: overloaded.queued }));
                    }
                }
                None => open = false,
            },
            outputs = finished => {
                let replies = running.take().expect("a batch was running").replies;
                match outputs {
                    Some(outputs) => {
                        for (reply, output) in replies.into_iter().zip(outputs) {
                            let _ = reply.send(output.map_err(BatchError::Model));
                        }
                    }
                    None => {
                        for reply in replies {
                            let _ = reply.send(Err(BatchError::Model("the model thread stopped".into())));
                        }
                    }
                }
            }
            _ = sleep => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Echoes its inputs doubled (13 fails), records each batch, and takes `pause` of real
    /// time per batch.
    struct Recorder {
        batches: Log,
        pause: Duration,
    }

    impl BatchModel for Recorder {
        type Input = u32;
        type Output = u32;
        fn run(&mut self, batch: Vec<u32>) -> Vec<Result<u32, String>> {
            std::thread::sleep(self.pause);
            self.batches.lock().unwrap().push(batch.clone());
            batch
                .into_iter()
                .map(|x| if x == 13 { Err("unlucky".into()) } else { Ok(x * 2) })
                .collect()
        }
    }

    fn policy() -> Policy {
        Policy {
            max_batch_tokens: 1000,
            max_batch_size: 4,
            max_batch_delay: Duration::from_millis(20),
            max_queued: 6,
            bulk_share: 0.25,
        }
    }

    /// The batches the mock model ran.
    type Log = Arc<Mutex<Vec<Vec<u32>>>>;

    fn start_with(pause: Duration) -> (Batcher<Recorder>, Log) {
        let batches = Arc::new(Mutex::new(Vec::new()));
        (Batcher::start(Recorder { batches: batches.clone(), pause }, policy()), batches)
    }

    fn start() -> (Batcher<Recorder>, Log) {
        start_with(Duration::ZERO)
    }

    fn ran(batches: &Log) -> Vec<Vec<u32>> {
        batches.lock().unwrap().clone()
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_requests_share_a_batch_and_get_their_own_answers() {
        let (batcher, batches) = start();
        let calls: Vec<_> = (0..4u32)
            .map(|i| {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.infer(i, 10, Lane::Interactive, None).await })
            })
            .collect();
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.unwrap());
        }
        assert_eq!(answers, vec![Ok(0), Ok(2), Ok(4), Ok(6)]);
        assert_eq!(ran(&batches), vec![vec![0, 1, 2, 3]], "one batch");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_input_fails_alone() {
        let (batcher, _) = start();
        let (a, b) = tokio::join!(
            batcher.infer(13, 10, Lane::Interactive, None),
            batcher.infer(1, 10, Lane::Interactive, None)
        );
        assert_eq!(a, Err(BatchError::Model("unlucky".into())));
        assert_eq!(b, Ok(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_its_deadline_is_not_computed() {
        let (batcher, batches) = start();
        // The batch delay (20 ms) outlasts this deadline (1 ms).
        let late = batcher.infer(7, 10, Lane::Interactive, Some(Duration::from_millis(1))).await;
        assert_eq!(late, Err(BatchError::DeadlineExceeded));
        assert!(ran(&batches).is_empty());
        assert_eq!(batcher.infer(1, 10, Lane::Interactive, None).await, Ok(2), "still serving");
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_goes_away_is_dropped_before_computing() {
        let (batcher, batches) = start();
        let abandoned = {
            let batcher = batcher.clone();
            tokio::spawn(async move { batcher.infer(5, 10, Lane::Interactive, None).await })
        };
        tokio::time::sleep(Duration::from_millis(2)).await;
        abandoned.abort();
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(
            batches.lock().unwrap().iter().all(|b| !b.contains(&5)),
            "{:?}",
            batches.lock().unwrap()
        );
        assert_eq!(batcher.infer(1, 10, Lane::Interactive, None).await, Ok(2));
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_queue_bound_calls_fail_at_once_and_the_rest_are_served() {
        // While the first batch takes its (real) 200 ms, every other call has arrived.
        let (batcher, _) = start_with(Duration::from_millis(200));
        let calls: Vec<_> = (0..24u32)
            .map(|i| {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.infer(i, 10, Lane::Bulk, None).await })
            })
            .collect();
        let mut served = 0;
        let mut refused = 0;
        for call in calls {
            match call.await.unwrap() {
                Ok(_) => served += 1,
                Err(BatchError::Overloaded { .. }) => refused += 1,
                Err(other) => panic!("{other:?}"),
            }
        }
        // 4 in the running batch, 6 queued (the bound), the other 14 refused at once.
        assert_eq!((served, refused), (10, 14));
        assert_eq!(batcher.infer(1, 10, Lane::Interactive, None).await, Ok(2), "still serving");
    }
}
