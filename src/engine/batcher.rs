//! The engine loop for one model: a tokio task owns the [`BatchQueue`], a dedicated OS thread
//! owns the model (tch tensors stay on it), and callers hold a cheap cloneable [`Batcher`]
//! handle. A request is answered through a oneshot channel: with its output and its times, or
//! with [`BatchError::DeadlineExceeded`] if its deadline passed while it waited, or dropped
//! unanswered if its caller went away before it was computed. A full queue refuses at once.
//!
//! Out of memory on a batch (CUDA's allocator, or the CPU's) is not the end of it: the model
//! thread splits the batch in halves and runs each, down to single inputs, and the queue lowers
//! its token budget so the next batches fit; an input that fails alone gets its own error.
//! Any other failure of a whole batch (a panic, a libtorch error) runs its inputs again one
//! by one, so only the input at fault fails, with a masked message ([`super::incident`]).

use std::{
    panic::AssertUnwindSafe,
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};

use super::policy::{BatchQueue, Decision, Entry, Lane, Policy};

/// What runs batches: the model side of a task. Runs on its own OS thread.
pub trait BatchModel: Send + 'static {
    type Input: Send + 'static;
    type Output: Send + 'static;
    /// One output (or error message) per input, in order. A panic (libtorch raised) fails
    /// the batch; one that says the memory ran out makes the batch run again in halves.
    fn run(&mut self, batch: &[Self::Input]) -> Vec<Result<Self::Output, String>>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("overloaded: {queued} requests are already queued for this model")]
    Overloaded { queued: usize },
    #[error("deadline exceeded while queued")]
    DeadlineExceeded,
    /// The caller's message: an incident reported once ([`super::incident`]).
    #[error("{0}")]
    Model(String),
    #[error("out of memory: the input does not fit on the device even alone ({0})")]
    OutOfMemory(String),
    #[error("the model is shutting down")]
    Unavailable,
}

/// An answered request: its output, how long it waited, and its batch's compute time and size.
#[derive(Debug, Clone, PartialEq)]
pub struct Served<O> {
    pub output: O,
    pub queued: Duration,
    pub computed: Duration,
    pub batch_size: usize,
    /// Which batch of this model it ran in (rows of one call may share one).
    pub batch: u64,
}

type Reply<O> = oneshot::Sender<Result<Served<O>, BatchError>>;

/// One request in the queue.
struct Request<I, O> {
    input: I,
    reply: Reply<O>,
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
    /// Starts the model thread and the queue task (on the current tokio runtime). `name` labels
    /// the model's metrics.
    pub fn start(name: &str, model: M, policy: Policy) -> Self {
        let (requests, incoming) = mpsc::unbounded_channel();
        let (work, work_rx) = std::sync::mpsc::channel::<Work<M>>();
        std::thread::Builder::new()
            .name(format!("lote-model-{name}"))
            .spawn(move || model_thread(model, work_rx))
            .expect("the model thread starts");
        tokio::spawn(queue_task::<M>(name.to_string(), policy, incoming, work));
        Self { requests }
    }

    /// Queues `input` (of `tokens` tokens) and waits for its output. `deadline` is an instant
    /// of tokio's clock.
    pub async fn infer(
        &self,
        input: M::Input,
        tokens: usize,
        lane: Lane,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Served<M::Output>, BatchError> {
        let (reply, answer) = oneshot::channel();
        // tokio's clock, so that tests with paused time see the same instants as the queue.
        let now = tokio::time::Instant::now().into_std();
        let entry = Entry {
            item: Request { input, reply },
            lane,
            tokens,
            rows: 1,
            enqueued: now,
            deadline: deadline.map(tokio::time::Instant::into_std),
        };
        self.requests.send(entry).map_err(|_| BatchError::Unavailable)?;
        answer.await.unwrap_or(Err(BatchError::Unavailable))
    }
}

/// Whether a libtorch error message says an allocation failed.
pub fn is_out_of_memory(message: &str) -> bool {
    let message = message.to_lowercase();
    ["out of memory", "not enough memory", "can't allocate memory", "bad_alloc"]
        .iter()
        .any(|needle| message.contains(needle))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "the model panicked".into())
}

/// Why a batch could not run as a whole.
enum Failure {
    OutOfMemory(String),
    Other(String),
}

/// A batch's outputs, and the padded token count of the largest sub-batch that ran out of
/// memory (so the queue can lower its budget below it).
struct Outcome<O> {
    outputs: Outputs<O>,
    out_of_memory_at: Option<usize>,
}

fn run_guarded<M: BatchModel>(
    model: &mut M,
    batch: &[M::Input],
) -> Result<Outputs<M::Output>, Failure> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| model.run(batch))) {
        Ok(outputs) => Ok(outputs
            .into_iter()
            .map(|o| o.map_err(|raw| BatchError::Model(super::incident::report(&raw))))
            .collect()),
        Err(panic) => {
            let message = panic_message(panic.as_ref());
            if is_out_of_memory(&message) {
                Err(Failure::OutOfMemory(message))
            } else {
                Err(Failure::Other(message))
            }
        }
    }
}

/// Runs `inputs` (of `tokens` tokens each); on out-of-memory, runs its halves (recursively).
fn run_splitting<M: BatchModel>(
    model: &mut M,
    inputs: &[M::Input],
    tokens: &[usize],
    outcome: &mut Outcome<M::Output>,
) {
    match run_guarded(model, inputs) {
        Ok(outputs) => outcome.outputs.extend(outputs),
        Err(Failure::Other(message)) if inputs.len() == 1 => {
            outcome.outputs.push(Err(BatchError::Model(super::incident::report(&message))));
        }
        // One input broke the batch: each runs alone, so only that one fails.
        Err(Failure::Other(_)) => {
            for (input, tokens) in inputs
                .iter()
                .zip(tokens)
                .map(|(i, t)| (std::slice::from_ref(i), std::slice::from_ref(t)))
            {
                run_splitting(model, input, tokens, outcome);
            }
        }
        Err(Failure::OutOfMemory(message)) => {
            let computed = tokens.iter().max().copied().unwrap_or(0) * inputs.len();
            outcome.out_of_memory_at =
                Some(outcome.out_of_memory_at.map_or(computed, |c| c.max(computed)));
            metrics::counter!("lote_out_of_memory_total").increment(1);
            if inputs.len() == 1 {
                outcome.outputs.push(Err(BatchError::OutOfMemory(message)));
            } else {
                let half = inputs.len() / 2;
                run_splitting(model, &inputs[..half], &tokens[..half], outcome);
                run_splitting(model, &inputs[half..], &tokens[half..], outcome);
            }
        }
    }
}

fn model_thread<M: BatchModel>(mut model: M, work: std::sync::mpsc::Receiver<Work<M>>) {
    while let Ok((inputs, tokens, done)) = work.recv() {
        let mut outcome =
            Outcome { outputs: Vec::with_capacity(inputs.len()), out_of_memory_at: None };
        run_splitting(&mut model, &inputs, &tokens, &mut outcome);
        let _ = done.send(outcome);
    }
}

/// One output (or error) per input of a batch.
type Outputs<O> = Vec<Result<O, BatchError>>;

/// A batch for the model thread (inputs and their token counts), and where its outcome goes.
type Work<M> = (
    Vec<<M as BatchModel>::Input>,
    Vec<usize>,
    oneshot::Sender<Outcome<<M as BatchModel>::Output>>,
);

/// The batch on the model thread: its callers (with when they were queued), when it started,
/// and its outcome to come.
struct Running<O> {
    replies: Vec<(Reply<O>, Instant)>,
    started: Instant,
    batch: u64,
    outcome: oneshot::Receiver<Outcome<O>>,
}

/// Records what the policy chose: batch size, tokens computed and the share that is padding.
fn record_batch<T>(model: &str, batch: &[Entry<T>]) {
    let width = batch.iter().map(|e| e.tokens).max().unwrap_or(0);
    let computed = width * batch.len();
    let real: usize = batch.iter().map(|e| e.tokens).sum();
    let labels = [("model", model.to_string())];
    metrics::histogram!("lote_batch_size", &labels).record(batch.len() as f64);
    metrics::histogram!("lote_batch_tokens", &labels).record(computed as f64);
    if computed > 0 {
        let padding = 1.0 - real as f64 / computed as f64;
        metrics::histogram!("lote_batch_padding_ratio", &labels).record(padding);
    }
}

async fn queue_task<M: BatchModel>(
    model: String,
    policy: Policy,
    mut incoming: mpsc::UnboundedReceiver<Entry<Request<M::Input, M::Output>>>,
    work: std::sync::mpsc::Sender<Work<M>>,
) {
    let mut queue: BatchQueue<Request<M::Input, M::Output>> = BatchQueue::new(policy);
    let mut running: Option<Running<M::Output>> = None;
    let mut open = true;
    let mut batches = 0u64;
    let depth = metrics::gauge!("lote_queue_depth", "model" => model.clone());
    loop {
        let now = tokio::time::Instant::now().into_std();
        for expired in queue.take_expired(now) {
            let _ = expired.item.reply.send(Err(BatchError::DeadlineExceeded));
        }
        queue.remove_where(|request| request.reply.is_closed());
        depth.set(queue.len() as f64);
        let mut wake = None;
        if running.is_none() {
            match queue.next_batch(now) {
                Decision::Run(batch) => {
                    record_batch(&model, &batch);
                    let mut inputs = Vec::with_capacity(batch.len());
                    let mut tokens = Vec::with_capacity(batch.len());
                    let mut replies = Vec::with_capacity(batch.len());
                    for entry in batch {
                        inputs.push(entry.item.input);
                        tokens.push(entry.tokens);
                        replies.push((entry.item.reply, entry.enqueued));
                    }
                    let (done, outcome) = oneshot::channel();
                    if work.send((inputs, tokens, done)).is_err() {
                        for (reply, _) in replies {
                            let _ = reply.send(Err(BatchError::Unavailable));
                        }
                        return;
                    }
                    batches += 1;
                    running = Some(Running { replies, started: now, batch: batches, outcome });
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
                Some(batch) => (&mut batch.outcome).await.ok(),
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
            outcome = finished => {
                let Running { replies, started, batch, .. } =
                    running.take().expect("a batch was running");
                let ended = tokio::time::Instant::now().into_std();
                let computed = ended - started;
                let batch_size = replies.len();
                metrics::histogram!("lote_stage_seconds", "model" => model.clone(), "stage" => "inference")
                    .record(computed.as_secs_f64());
                match outcome {
                    Some(outcome) => {
                        if let Some(tokens) = outcome.out_of_memory_at {
                            queue.lower_token_budget(tokens / 2);
                        }
                        for ((reply, enqueued), output) in replies.into_iter().zip(outcome.outputs) {
                            let queued = started - enqueued;
                            metrics::histogram!("lote_stage_seconds", "model" => model.clone(), "stage" => "queue")
                                .record(queued.as_secs_f64());
                            let served = output.map(|output| Served { output, queued, computed, batch_size, batch });
                            let _ = reply.send(served);
                        }
                    }
                    None => {
                        for (reply, _) in replies {
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
        fn run(&mut self, batch: &[u32]) -> Vec<Result<u32, String>> {
            std::thread::sleep(self.pause);
            self.batches.lock().unwrap().push(batch.to_vec());
            batch.iter().map(|&x| if x == 13 { Err("unlucky".into()) } else { Ok(x * 2) }).collect()
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
        (
            Batcher::start("recorder", Recorder { batches: batches.clone(), pause }, policy()),
            batches,
        )
    }

    fn start() -> (Batcher<Recorder>, Log) {
        start_with(Duration::ZERO)
    }

    /// Just the output of an answer.
    async fn output(
        batcher: &Batcher<Recorder>,
        input: u32,
        deadline: Option<Duration>,
    ) -> Result<u32, BatchError> {
        let deadline = deadline.map(|d| tokio::time::Instant::now() + d);
        batcher.infer(input, 10, Lane::Interactive, deadline).await.map(|served| served.output)
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
                tokio::spawn(async move { output(&batcher, i, None).await })
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
        let (a, b) = tokio::join!(output(&batcher, 13, None), output(&batcher, 1, None));
        assert!(
            matches!(&a, Err(BatchError::Model(m)) if m.starts_with("the model failed on this input (request ")),
            "{a:?}"
        );
        assert_eq!(b, Ok(2));
    }

    /// Panics (as a libtorch error unwrapped would) on any batch holding 7.
    struct Fragile {
        batches: Log,
    }

    impl BatchModel for Fragile {
        type Input = u32;
        type Output = u32;
        fn run(&mut self, batch: &[u32]) -> Vec<Result<u32, String>> {
            self.batches.lock().unwrap().push(batch.to_vec());
            if batch.contains(&7) {
                panic!("Torch(\"index 7 is out of bounds\") at /opt/libtorch/lib/libtorch_cpu.so");
            }
            batch.iter().map(|&x| Ok(x + 1)).collect()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_one_input_breaks_runs_again_input_by_input_and_only_it_fails() {
        let batches: Log = Arc::default();
        let batcher = Batcher::start("fragile", Fragile { batches: batches.clone() }, policy());
        let calls: Vec<_> = [1u32, 7, 3]
            .into_iter()
            .map(|i| {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.infer(i, 10, Lane::Bulk, None).await })
            })
            .collect();
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.unwrap().map(|served| served.output));
        }
        assert_eq!((&answers[0], &answers[2]), (&Ok(2), &Ok(4)));
        let Err(BatchError::Model(told)) = &answers[1] else { panic!("{:?}", answers[1]) };
        assert!(told.starts_with("the model failed on this input (request "), "{told}");
        assert!(!told.contains("libtorch") && !told.contains("Torch"), "nothing raw: {told}");
        assert_eq!(ran(&batches), vec![vec![1, 7, 3], vec![1], vec![7], vec![3]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_its_deadline_is_not_computed() {
        let (batcher, batches) = start();
        // The batch delay (20 ms) outlasts this deadline (1 ms).
        let late = output(&batcher, 7, Some(Duration::from_millis(1))).await;
        assert_eq!(late, Err(BatchError::DeadlineExceeded));
        assert!(ran(&batches).is_empty());
        assert_eq!(output(&batcher, 1, None).await, Ok(2), "still serving");
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_goes_away_is_dropped_before_computing() {
        let (batcher, batches) = start();
        let abandoned = {
            let batcher = batcher.clone();
            tokio::spawn(async move { output(&batcher, 5, None).await })
        };
        tokio::time::sleep(Duration::from_millis(2)).await;
        abandoned.abort();
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(
            batches.lock().unwrap().iter().all(|b| !b.contains(&5)),
            "{:?}",
            batches.lock().unwrap()
        );
        assert_eq!(output(&batcher, 1, None).await, Ok(2));
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
        assert_eq!(output(&batcher, 1, None).await, Ok(2), "still serving");
    }

    /// Runs out of memory on batches of more than two inputs, and on input 99 always.
    struct SmallDevice {
        batches: Log,
    }

    impl BatchModel for SmallDevice {
        type Input = u32;
        type Output = u32;
        fn run(&mut self, batch: &[u32]) -> Vec<Result<u32, String>> {
            self.batches.lock().unwrap().push(batch.to_vec());
            if batch.len() > 2 || batch.contains(&99) {
                panic!("CUDA out of memory. Tried to allocate 2.00 GiB");
            }
            batch.iter().map(|&x| Ok(x + 1)).collect()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn out_of_memory_splits_the_batch_lowers_the_budget_and_fails_only_the_culprit() {
        let batches: Log = Arc::default();
        let policy = Policy { max_queued: 100, ..policy() };
        let batcher = Batcher::start("small", SmallDevice { batches: batches.clone() }, policy);
        let calls: Vec<_> = [1u32, 2, 99, 4]
            .into_iter()
            .map(|i| {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.infer(i, 10, Lane::Bulk, None).await })
            })
            .collect();
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.unwrap().map(|served| served.output));
        }
        assert_eq!(answers[0], Ok(2));
        assert_eq!(answers[1], Ok(3));
        assert!(matches!(&answers[2], Err(BatchError::OutOfMemory(m)) if m.contains("2.00 GiB")));
        assert_eq!(answers[3], Ok(5));
        // 4 inputs, then halves [1, 2] and [99, 4], then [99] and [4] alone.
        assert_eq!(
            ran(&batches),
            vec![vec![1, 2, 99, 4], vec![1, 2], vec![99, 4], vec![99], vec![4]]
        );
        // The budget came down to half of the 40 tokens that failed: two inputs of 10.
        let calls: Vec<_> = (0..4u32)
            .map(|i| {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.infer(i, 10, Lane::Bulk, None).await })
            })
            .collect();
        for call in calls {
            assert!(call.await.unwrap().is_ok());
        }
        let after: Vec<usize> = ran(&batches)[5..].iter().map(Vec::len).collect();
        assert_eq!(after, vec![2, 2], "no batch runs out of memory again");
    }

    #[test]
    fn allocation_failures_are_recognised() {
        assert!(is_out_of_memory("CUDA out of memory. Tried to allocate 20.00 MiB"));
        assert!(is_out_of_memory(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory"
        ));
        assert!(!is_out_of_memory("shape '[2, 3]' is invalid for input of size 7"));
    }
}
