//! Continuous batching for generation (text-generation-inference's shape): one OS thread owns a
//! generative model and one running batch of decoder rows. Between two decode steps, rows of
//! finished generations leave and waiting requests join: their prompts are prefilled together
//! in one step of their own, then their caches are appended to the running batch's (padded and
//! masked, so every row computes what it computes alone). Each generation keeps its own search
//! ([`Search`]: greedy, sampling or beams, with its own processors), so requests with different
//! parameters share the model's forward passes.
//!
//! Admission follows the batching policy ([`BatchQueue`]): lanes, the queue bound, deadlines, and
//! the token budget, where a request costs its rows (beams or sampled copies) times its longest
//! length (prompt plus new tokens). A request whose caller has gone (or whose token stream was
//! closed) leaves at the next step. Seeded sampling draws from its own generator
//! (generation::rng) and runs alone, so a seed always gives the same text from the logits it
//! gets alone. Out of memory during a step restarts the batch's requests from the queue with a
//! lower budget; a request that runs out of memory alone fails alone.

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use tch::{Device, Kind, Tensor};
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

use super::{
    batcher::{BatchError, is_out_of_memory},
    policy::{BatchQueue, Decision, Entry, Lane, Policy},
};
use crate::generation::{
    DecoderStep, GenerateConfig, PromptLogprobs, TokenLogprob,
    search::{self, Advance, Search, StopCheck},
};

/// What the scheduler needs of a generative model.
pub trait StepModel {
    /// GPT-2 feeds the prompt to the decoder; BART and T5 encode it and start the decoder anew.
    fn is_encoder_decoder(&self) -> bool;
    /// A decoder step over `ids` `[batch, len]` with `mask` (1 = real token).
    fn start<'a>(&'a self, ids: &Tensor, mask: &Tensor) -> Box<dyn DecoderStep + 'a>;
    fn device(&self) -> Device;
}

impl StepModel for crate::models::generative::LoadedGenerator {
    fn is_encoder_decoder(&self) -> bool {
        crate::models::generative::LoadedGenerator::is_encoder_decoder(self)
    }

    fn start<'a>(&'a self, ids: &Tensor, mask: &Tensor) -> Box<dyn DecoderStep + 'a> {
        self.step(ids, mask)
    }

    fn device(&self) -> Device {
        self.device
    }
}

/// Tells whether a sequence's generated tokens hold a stop string.
pub type StopFn = Arc<dyn Fn(&[i64]) -> bool + Send + Sync>;

/// One generation asked of the scheduler.
pub struct GenerationRequest {
    /// The prompt (GPT-2) or the encoder input (BART, T5), special tokens included.
    pub prompt: Vec<u32>,
    pub config: GenerateConfig,
    /// Total length (start sequence included) at which generation stops.
    pub max_length: usize,
    pub stop: Option<StopFn>,
    pub lane: Lane,
    pub deadline: Option<Instant>,
    /// Runs with no other generation beside it (a redelivered job document).
    pub alone: bool,
    /// Each new token of the single sequence, as it is chosen (streaming), with its
    /// log-probabilities when the config asks for them; the prompt's first, when asked for.
    pub tokens: Option<tokio_mpsc::UnboundedSender<Emitted>>,
    pub reply: oneshot::Sender<Result<Generated, BatchError>>,
}

/// What a streamed generation sends as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Emitted {
    /// Once, after the prefill: the log-probability of each prompt token after the first
    /// (`GenerateConfig::prompt_logprobs`).
    Prompt(PromptLogprobs),
    /// A new token of the sequence, with its log-probabilities when the config asks for them.
    Token(i64, Option<TokenLogprob>),
}

/// A finished generation: the new tokens of each returned sequence (start sequence removed,
/// padding kept for the caller to trim), and its times.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub sequences: Vec<Vec<i64>>,
    /// Each sequence's steps' log-probabilities, when the config asked for them.
    pub logprobs: Option<Vec<Vec<TokenLogprob>>>,
    /// Each prompt token's after the first, when the config asked for them.
    pub prompt_logprobs: Option<PromptLogprobs>,
    pub queued: Duration,
    pub computed: Duration,
}

impl GenerationRequest {
    /// Decoder rows it occupies: beams or sampled copies.
    fn rows(&self) -> usize {
        if self.config.num_beams > 1 {
            self.config.num_beams
        } else if self.config.do_sample {
            self.config.num_return_sequences
        } else {
            1
        }
    }

    /// Its share of `budget`: rows times the longest length it can reach, or all of it when
    /// it must run alone.
    fn cost(&self, budget: usize) -> usize {
        if self.alone { budget } else { self.rows() * (self.prompt.len() + self.max_length) }
    }

    fn abandoned(&self) -> bool {
        self.reply.is_closed() || self.tokens.as_ref().is_some_and(|t| t.is_closed())
    }
}

/// A handle to one generative model's scheduler thread.
#[derive(Clone)]
pub struct Scheduler {
    requests: mpsc::Sender<GenerationRequest>,
}

impl Scheduler {
    /// Starts the scheduler thread, which owns `model` from then on. `name` labels its metrics.
    pub fn start<M: StepModel + Send + 'static>(name: &str, model: M, policy: Policy) -> Self {
        let (requests, incoming) = mpsc::channel();
        let label = name.to_string();
        std::thread::Builder::new()
            .name(format!("lote-generate-{name}"))
            .spawn(move || Worker::new(&model, label, policy, incoming).run())
            .expect("the scheduler thread starts");
        Self { requests }
    }

    /// Queues a generation; its answer comes through `request.reply`.
    pub fn submit(&self, request: GenerationRequest) -> Result<(), BatchError> {
        self.requests.send(request).map_err(|_| BatchError::Unavailable)
    }
}

/// A generation in the running batch.
struct Group {
    request: GenerationRequest,
    search: Search,
    /// Its tokens to feed at the next step, `[rows, 1]`.
    feed: Tensor,
    /// Length of its start sequence (prompt for GPT-2, decoder start for the others).
    start_len: usize,
    /// Its prompt's log-probabilities, when asked for.
    prompt_logprobs: Option<PromptLogprobs>,
    enqueued: Instant,
    joined: Instant,
}

/// A joiner after its prefill.
struct Prefilled {
    search: Search,
    advance: Advance,
    start_len: usize,
    prompt_logprobs: Option<PromptLogprobs>,
}

/// The scheduler's metrics, registered once (the decode loop records them every step).
struct Meters {
    queue_depth: metrics::Gauge,
    running_rows: metrics::Gauge,
    prefill_size: metrics::Histogram,
    decode_rows: metrics::Histogram,
    decode_seconds: metrics::Histogram,
}

impl Meters {
    fn new(model: &str) -> Self {
        let label = || ("model", model.to_string());
        Self {
            queue_depth: metrics::gauge!("lote_queue_depth", &[label()]),
            running_rows: metrics::gauge!("lote_running_rows", &[label()]),
            prefill_size: metrics::histogram!("lote_batch_size", &[label()]),
            decode_rows: metrics::histogram!("lote_decode_rows", &[label()]),
            decode_seconds: metrics::histogram!(
                "lote_stage_seconds",
                &[label(), ("stage", "decode_step".to_string())]
            ),
        }
    }
}

struct Worker<'m, M: StepModel> {
    model: &'m M,
    meters: Meters,
    queue: BatchQueue<GenerationRequest>,
    /// Seeded requests: each runs alone.
    seeded: std::collections::VecDeque<Entry<GenerationRequest>>,
    max_queued: usize,
    max_rows: usize,
    incoming: mpsc::Receiver<GenerationRequest>,
    open: bool,
    step: Option<Box<dyn DecoderStep + 'm>>,
    groups: Vec<Group>,
}

/// Why a step could not run.
enum StepFailure {
    OutOfMemory(String),
    Other(String),
}

fn guarded<T>(work: impl FnOnce() -> T) -> Result<T, StepFailure> {
    std::panic::catch_unwind(AssertUnwindSafe(work)).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the model panicked".into());
        if is_out_of_memory(&message) {
            StepFailure::OutOfMemory(message)
        } else {
            StepFailure::Other(message)
        }
    })
}

impl<'m, M: StepModel> Worker<'m, M> {
    fn new(
        model: &'m M,
        name: String,
        policy: Policy,
        incoming: mpsc::Receiver<GenerationRequest>,
    ) -> Self {
        Self {
            model,
            meters: Meters::new(&name),
            queue: BatchQueue::new(policy),
            seeded: Default::default(),
            max_queued: policy.max_queued,
            max_rows: policy.max_batch_size,
            incoming,
            open: true,
            step: None,
            groups: Vec::new(),
        }
    }

    fn run(mut self) {
        let _no_grad = tch::no_grad_guard();
        loop {
            if !self.take_requests() {
                return;
            }
            self.drop_expired_and_abandoned();
            self.admit();
            if !self.groups.is_empty() {
                self.decode();
            }
            self.meters.queue_depth.set((self.queue.len() + self.seeded.len()) as f64);
            self.meters.running_rows.set(self.rows() as f64);
        }
    }

    fn rows(&self) -> usize {
        self.groups.iter().map(|g| g.search.rows() as usize).sum()
    }

    fn cost(&self) -> usize {
        let budget = self.queue.token_budget();
        self.groups.iter().map(|g| g.request.cost(budget)).sum()
    }

    /// Moves arrived requests into the queue, blocking while there is nothing to do (until the
    /// next batch is due). False once every handle is gone and no work is left.
    fn take_requests(&mut self) -> bool {
        let idle = self.groups.is_empty();
        if idle && self.queue.is_empty() && self.seeded.is_empty() {
            if !self.open {
                return false;
            }
            match self.incoming.recv() {
                Ok(request) => self.enqueue(request),
                Err(_) => return false,
            }
        } else if idle && self.seeded.is_empty() {
            // Waiting for company: until the oldest request's delay is over, or one arrives.
            if let Some(at) = self.queue.due_at()
                && let Some(wait) = at.checked_duration_since(Instant::now())
            {
                match self.incoming.recv_timeout(wait) {
                    Ok(request) => self.enqueue(request),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => self.open = false,
                }
            }
        }
        loop {
            match self.incoming.try_recv() {
                Ok(request) => self.enqueue(request),
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.open = false;
                    return true;
                }
            }
        }
    }

    fn enqueue(&mut self, request: GenerationRequest) {
        let now = Instant::now();
        let entry = Entry {
            lane: request.lane,
            tokens: request.cost(self.queue.token_budget()),
            rows: request.rows(),
            enqueued: now,
            deadline: request.deadline,
            item: request,
        };
        if entry.item.config.do_sample && entry.item.config.seed.is_some() {
            if self.queue.len() + self.seeded.len() >= self.max_queued {
                let queued = self.queue.len() + self.seeded.len();
                let _ = entry.item.reply.send(Err(BatchError::Overloaded { queued }));
            } else {
                self.seeded.push_back(entry);
            }
            return;
        }
        let seeded = self.seeded.len();
        if self.queue.len() + seeded >= self.max_queued {
            let queued = self.queue.len() + seeded;
            let _ = entry.item.reply.send(Err(BatchError::Overloaded { queued }));
            return;
        }
        if let Err((overloaded, entry)) = self.queue.push(entry) {
            let _ =
                entry.item.reply.send(Err(BatchError::Overloaded { queued: overloaded.queued }));
        }
    }

    fn drop_expired_and_abandoned(&mut self) {
        let now = Instant::now();
        for expired in self.queue.take_expired(now) {
            let _ = expired.item.reply.send(Err(BatchError::DeadlineExceeded));
        }
        self.queue.remove_where(GenerationRequest::abandoned);
        self.seeded.retain(|entry| {
            let expired = entry.deadline.is_some_and(|d| d <= now);
            !expired && !entry.item.abandoned()
        });
        let gone: Vec<usize> = (0..self.groups.len())
            .filter(|&i| {
                let request = &self.groups[i].request;
                request.abandoned() || request.deadline.is_some_and(|d| d <= now)
            })
            .collect();
        if gone.is_empty() {
            return;
        }
        let mut keep = Vec::new();
        let mut offset = 0;
        let mut groups = Vec::with_capacity(self.groups.len());
        for (i, group) in std::mem::take(&mut self.groups).into_iter().enumerate() {
            let rows = group.search.rows();
            if gone.contains(&i) {
                if group.request.deadline.is_some_and(|d| d <= now) {
                    let _ = group.request.reply.send(Err(BatchError::DeadlineExceeded));
                }
            } else {
                keep.push(Tensor::arange_start(
                    offset,
                    offset + rows,
                    (Kind::Int64, self.model.device()),
                ));
                groups.push(group);
            }
            offset += rows;
        }
        self.groups = groups;
        self.keep_rows(keep);
    }

    /// Keeps these rows of the running batch (or ends it when none are left).
    fn keep_rows(&mut self, keep: Vec<Tensor>) {
        if keep.is_empty() {
            self.step = None;
        } else if let Some(step) = self.step.as_mut() {
            step.select_rows(&Tensor::cat(&keep, 0));
        }
    }

    /// Starts waiting requests that fit beside the running ones.
    fn admit(&mut self) {
        let now = Instant::now();
        let seeded_running = self.groups.iter().any(|g| g.request.config.seed.is_some());
        if seeded_running {
            return;
        }
        let joiners = if self.groups.is_empty() {
            if let Some(entry) = self.seeded.pop_front() {
                vec![entry]
            } else {
                match self.queue.next_batch(now) {
                    Decision::Run(batch) => batch,
                    _ => return,
                }
            }
        } else {
            let free_tokens = self.queue.token_budget().saturating_sub(self.cost());
            let free_rows = self.max_rows.saturating_sub(self.rows());
            self.queue.admit(free_tokens, free_rows)
        };
        if joiners.is_empty() {
            return;
        }
        self.meters.prefill_size.record(joiners.len() as f64);
        let started = Instant::now();
        let joiners: Vec<(GenerationRequest, Instant)> =
            joiners.into_iter().map(|e| (e.item, e.enqueued)).collect();
        let model = self.model;
        // The prefill step is built outside the guard: it borrows the model for the batch's life.
        let mut fresh: Option<Box<dyn DecoderStep + 'm>> = None;
        let result = guarded(|| prefill(model, &joiners, &mut fresh));
        match result {
            Ok(searches) => {
                let mut joined = Vec::new();
                let mut keep = Vec::new();
                let mut offset = 0;
                for ((request, enqueued), prefilled) in joiners.into_iter().zip(searches) {
                    let Prefilled { search, advance, start_len, prompt_logprobs } = prefilled;
                    let rows = search.rows();
                    if let (Some(tokens), Some(logprobs)) = (&request.tokens, &prompt_logprobs) {
                        let _ = tokens.send(Emitted::Prompt(logprobs.clone()));
                    }
                    let mut group = Group {
                        request,
                        search,
                        feed: Tensor::zeros([0], (Kind::Int64, Device::Cpu)),
                        start_len,
                        prompt_logprobs,
                        enqueued,
                        joined: started,
                    };
                    match group.take(advance, offset) {
                        Some(rows_kept) => {
                            keep.push(rows_kept);
                            joined.push(group);
                        }
                        None => group.finish(),
                    }
                    offset += rows;
                }
                let Some(mut step) = fresh else { return };
                if keep.is_empty() {
                    return;
                }
                step.select_rows(&Tensor::cat(&keep, 0));
                match self.step.as_mut() {
                    Some(running) => running.append_rows(step.into_rows()),
                    None => self.step = Some(step),
                }
                self.groups.extend(joined);
            }
            Err(failure) => {
                drop(fresh);
                let budget = self.queue.token_budget();
                let requests: Vec<Entry<GenerationRequest>> = joiners
                    .into_iter()
                    .map(|(item, enqueued)| Entry {
                        lane: item.lane,
                        tokens: item.cost(budget),
                        rows: item.rows(),
                        enqueued,
                        deadline: item.deadline,
                        item,
                    })
                    .collect();
                self.recover(failure, requests);
            }
        }
    }

    /// One decode step for every running row.
    fn decode(&mut self) {
        let feed =
            Tensor::cat(&self.groups.iter().map(|g| g.feed.shallow_clone()).collect::<Vec<_>>(), 0);
        let Some(step) = self.step.as_mut() else { return };
        self.meters.decode_rows.record(feed.size()[0] as f64);
        let started = Instant::now();
        let result = guarded(|| step.step(&feed));
        self.meters.decode_seconds.record(started.elapsed().as_secs_f64());
        let logits = match result {
            Ok(logits) => logits,
            Err(failure) => {
                self.step = None;
                let budget = self.queue.token_budget();
                let requests = std::mem::take(&mut self.groups)
                    .into_iter()
                    .map(|g| Entry {
                        lane: g.request.lane,
                        tokens: g.request.cost(budget),
                        rows: g.request.rows(),
                        enqueued: g.enqueued,
                        deadline: g.request.deadline,
                        item: g.request,
                    })
                    .collect();
                self.recover(failure, requests);
                return;
            }
        };
        let mut keep = Vec::new();
        let mut offset = 0;
        let mut groups = Vec::with_capacity(self.groups.len());
        let mut changed = false;
        for mut group in std::mem::take(&mut self.groups) {
            let rows = group.search.rows();
            let stop = group.request.stop.clone();
            let stop_ref = stop.as_deref().map(|f| f as &dyn Fn(&[i64]) -> bool);
            let streamed = group.request.tokens.is_some();
            let advance = group.search.advance(logits.narrow(0, offset, rows), stop_ref, streamed);
            changed |= advance.reorder.is_some() || advance.feed.is_none();
            match group.take(advance, offset) {
                Some(rows_kept) => {
                    keep.push(rows_kept);
                    groups.push(group);
                }
                None => group.finish(),
            }
            offset += rows;
        }
        self.groups = groups;
        if changed {
            self.keep_rows(keep);
        }
    }

    /// After a failed step (a decode step of the running batch, whose state is then gone, or a
    /// prefill of joiners, which leaves the running batch as it was): out of memory lowers the
    /// budget and queues the requests again (one that was alone fails alone, as does a stream,
    /// whose tokens a restart would repeat); any other failure queues each again to run alone,
    /// so only the request at fault fails.
    fn recover(&mut self, failure: StepFailure, requests: Vec<Entry<GenerationRequest>>) {
        match failure {
            StepFailure::OutOfMemory(message) => {
                metrics::counter!("lote_out_of_memory_total").increment(1);
                let cost: usize = requests.iter().map(|e| e.tokens).sum();
                self.queue.lower_token_budget(cost / 2);
                let alone = requests.len() == 1;
                for entry in requests {
                    if alone || entry.item.tokens.is_some() {
                        let error = BatchError::OutOfMemory(message.clone());
                        let _ = entry.item.reply.send(Err(error));
                    } else {
                        self.queue.push_front(entry);
                    }
                }
            }
            // Alone, or a stream whose tokens a restart would repeat: it fails, masked.
            // Otherwise each request runs again alone, so only the one at fault fails.
            StepFailure::Other(message) => {
                let alone = requests.len() == 1;
                let budget = self.queue.token_budget();
                let mut told = None;
                for mut entry in requests {
                    if alone || entry.item.tokens.is_some() {
                        let told = told.get_or_insert_with(|| super::incident::report(&message));
                        let _ = entry.item.reply.send(Err(BatchError::Model(told.clone())));
                    } else {
                        entry.item.alone = true;
                        entry.tokens = entry.item.cost(budget);
                        self.queue.push_front(entry);
                    }
                }
            }
        }
    }
}

/// Prefills `joiners` in one batch: builds their start tensors, runs the first step, and lets
/// each one's search take its logits (and reads the prompt's log-probabilities of those that
/// ask). The step is left in `fresh` (its rows expanded for beams and copies, not yet
/// reordered).
fn prefill<'m, M: StepModel>(
    model: &'m M,
    joiners: &[(GenerationRequest, Instant)],
    fresh: &mut Option<Box<dyn DecoderStep + 'm>>,
) -> Vec<Prefilled> {
    let device = model.device();
    let encoder_decoder = model.is_encoder_decoder();
    let width = joiners.iter().map(|(r, _)| r.prompt.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(joiners.len() * width);
    let mut mask = Vec::with_capacity(joiners.len() * width);
    for (request, _) in joiners {
        let padding = width - request.prompt.len();
        let real = request.prompt.iter().map(|&t| i64::from(t));
        let pads = std::iter::repeat_n(0i64, padding);
        let (ones, zeros) =
            (std::iter::repeat_n(1i64, request.prompt.len()), std::iter::repeat_n(0i64, padding));
        if encoder_decoder {
            ids.extend(real.chain(pads));
            mask.extend(ones.chain(zeros));
        } else {
            ids.extend(pads.chain(real));
            mask.extend(zeros.chain(ones));
        }
    }
    let shape = [joiners.len() as i64, width as i64];
    let ids = Tensor::from_slice(&ids).view(shape).to_device(device);
    let mask = Tensor::from_slice(&mask).view(shape).to_device(device);
    let mut step = model.start(&ids, &mask);
    // Each joiner's own start sequence and search; the batch's rows expanded to match.
    let mut expand = Vec::new();
    let mut searches = Vec::new();
    let mut feeds = Vec::new();
    // (joiner, its first row) of those whose prompt is scored.
    let mut scored = Vec::new();
    for (index, (request, _)) in joiners.iter().enumerate() {
        if request.config.prompt_logprobs.is_some() && !encoder_decoder {
            scored.push((index, expand.len() as i64));
        }
        let start = if encoder_decoder {
            let token = request.config.decoder_start_token_id.unwrap_or(0);
            Tensor::full([1, 1], token, (Kind::Int64, device))
        } else {
            let own: Vec<i64> = request.prompt.iter().map(|&t| i64::from(t)).collect();
            Tensor::from_slice(&own).view([1, -1]).to_device(device)
        };
        // The search's own expansion is of this one input: its rows are `copies` of it.
        let (search, _) = Search::new(&start, &request.config, request.max_length);
        let copies = search.rows();
        let padded_feed =
            if encoder_decoder { start.shallow_clone() } else { ids.narrow(0, index as i64, 1) };
        for _ in 0..copies {
            expand.push(index as i64);
            feeds.push(padded_feed.shallow_clone());
        }
        let start_len = start.size()[1] as usize;
        searches.push((search, start_len));
    }
    let expand = Tensor::from_slice(&expand).to_device(device);
    step.select_rows(&expand);
    let feed = Tensor::cat(&feeds, 0);
    let (logits, scored_logits) = if scored.is_empty() {
        (step.step(&feed), None)
    } else {
        let rows: Vec<i64> = scored.iter().map(|&(_, row)| row).collect();
        step.step_scoring(&feed, &Tensor::from_slice(&rows).to_device(device))
    };
    let mut prompt_logprobs: Vec<Option<PromptLogprobs>> = vec![None; joiners.len()];
    if let Some(all) = scored_logits {
        for (k, &(index, _)) in scored.iter().enumerate() {
            let logits = all.get(k as i64);
            prompt_logprobs[index] = Some(prompt_scores(&joiners[index].0, &logits, width));
        }
    }
    let mut offset = 0;
    let mut out = Vec::with_capacity(searches.len());
    for (((mut search, start_len), (request, _)), prompt_logprobs) in
        searches.into_iter().zip(joiners).zip(prompt_logprobs)
    {
        let rows = search.rows();
        let stop: Option<StopCheck<'_>> =
            request.stop.as_deref().map(|f| f as &dyn Fn(&[i64]) -> bool);
        let advance =
            search.advance(logits.narrow(0, offset, rows), stop, request.tokens.is_some());
        offset += rows;
        out.push(Prefilled { search, advance, start_len, prompt_logprobs });
    }
    *fresh = Some(step);
    out
}

/// A left-padded prompt's log-probabilities from its logits `[width, vocab]` at every position.
fn prompt_scores(request: &GenerationRequest, logits: &Tensor, width: usize) -> PromptLogprobs {
    let real = request.prompt.len() as i64;
    let targets: Vec<i64> = request.prompt.iter().skip(1).map(|&t| i64::from(t)).collect();
    let targets = Tensor::from_slice(&targets).to_device(logits.device());
    // Position `p` predicts token `p + 1`: the real positions but the last.
    let predicting = logits.narrow(0, width as i64 - real, (real - 1).max(0));
    let top = request.config.prompt_logprobs.unwrap_or(0);
    PromptLogprobs {
        first: request.prompt.first().copied().unwrap_or_default(),
        rest: search::scored_tokens(&predicting, &targets, top),
    }
}

impl Group {
    /// Takes a step's outcome: streams its tokens, and returns the batch rows it keeps (its
    /// reorder shifted to where its rows sit in the batch), or None when it is finished.
    fn take(&mut self, advance: Advance, offset: i64) -> Option<Tensor> {
        if let Some(tokens) = &self.request.tokens {
            let mut logprobs = advance.emitted_logprobs.into_iter();
            for (row, token) in advance.emitted.iter() {
                let logprob = logprobs.next();
                if *row == 0 {
                    let _ = tokens.send(Emitted::Token(*token, logprob));
                }
            }
        }
        let feed = advance.feed?;
        let rows = self.search.rows();
        let device = feed.device();
        let kept = match advance.reorder {
            Some(reorder) => reorder + offset,
            None => Tensor::arange_start(offset, offset + rows, (Kind::Int64, device)),
        };
        self.feed = feed;
        Some(kept)
    }

    /// Sends the finished sequences to the caller.
    fn finish(self) {
        let computed = self.joined.elapsed();
        let queued = self.joined.saturating_duration_since(self.enqueued);
        let start_len = self.start_len;
        let finished = self.search.finish();
        let sequences = finished.sequences.to_device(Device::Cpu);
        let reply = match Vec::<Vec<i64>>::try_from(sequences) {
            Ok(rows) => Ok(Generated {
                sequences: rows.into_iter().map(|row| row[start_len..].to_vec()).collect(),
                logprobs: finished.logprobs,
                prompt_logprobs: self.prompt_logprobs,
                queued,
                computed,
            }),
            Err(e) => Err(BatchError::Model(super::incident::report(&e.to_string()))),
        };
        let _ = self.request.reply.send(reply);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::generation::{PadSide, RowState, append_padded};

    /// A decoder that always prefers the token after the last one fed (mod 50), and logs the
    /// rows of every step it runs.
    struct Counter {
        steps: Arc<Mutex<Vec<i64>>>,
        /// Time each step takes.
        pause: Duration,
    }

    struct CounterStep {
        steps: Arc<Mutex<Vec<i64>>>,
        pause: Duration,
        /// Per-row state, so selecting and appending rows are checked too: each row's origin.
        origin: Tensor,
    }

    impl StepModel for Counter {
        fn is_encoder_decoder(&self) -> bool {
            false
        }

        fn start<'a>(&'a self, ids: &Tensor, _mask: &Tensor) -> Box<dyn DecoderStep + 'a> {
            let origin = ids.narrow(1, ids.size()[1] - 1, 1).copy();
            Box::new(CounterStep { steps: self.steps.clone(), pause: self.pause, origin })
        }

        fn device(&self) -> Device {
            Device::Cpu
        }
    }

    impl DecoderStep for CounterStep {
        fn step(&mut self, tokens: &Tensor) -> Tensor {
            let (rows, n) = tokens.size2().unwrap();
            assert_eq!(rows, self.origin.size()[0], "the state follows the rows");
            if Vec::<i64>::try_from(tokens.view(-1)).unwrap().contains(&99) {
                panic!("token 99 breaks this model");
            }
            self.steps.lock().unwrap().push(rows);
            std::thread::sleep(self.pause);
            let next = (tokens.select(1, n - 1) + 1).remainder(50);
            next.one_hot(50).to_kind(Kind::Float) * 10.0
        }

        fn select_rows(&mut self, rows: &Tensor) {
            self.origin = self.origin.index_select(0, rows);
        }

        fn into_rows(self: Box<Self>) -> RowState {
            RowState { parts: vec![(self.origin, 1, PadSide::Start)] }
        }

        fn append_rows(&mut self, other: RowState) {
            let (origin, dim, side) = other.parts.into_iter().next().unwrap();
            self.origin = append_padded(&self.origin, &origin, dim, side);
        }
    }

    fn policy() -> Policy {
        Policy {
            max_batch_tokens: 10_000,
            max_batch_size: 8,
            max_batch_delay: Duration::ZERO,
            max_queued: 8,
            bulk_share: 0.2,
        }
    }

    fn request(
        prompt: u32,
        new: usize,
    ) -> (GenerationRequest, oneshot::Receiver<Result<Generated, BatchError>>) {
        let (reply, answer) = oneshot::channel();
        let request = GenerationRequest {
            prompt: vec![prompt],
            config: GenerateConfig::default(),
            max_length: 1 + new,
            stop: None,
            lane: Lane::Interactive,
            deadline: None,
            alone: false,
            tokens: None,
            reply,
        };
        (request, answer)
    }

    #[tokio::test]
    async fn a_request_joins_a_running_batch_and_each_leaves_when_done() {
        let steps = Arc::new(Mutex::new(Vec::new()));
        let counter = Counter { steps: steps.clone(), pause: Duration::from_millis(1) };
        let scheduler = Scheduler::start("counter", counter, policy());
        // The long one runs 300 steps of a millisecond: the short one arrives well within.
        let (mut long, long_answer) = request(1, 300);
        let (tokens, mut streamed) = tokio_mpsc::unbounded_channel();
        long.tokens = Some(tokens);
        scheduler.submit(long).unwrap();
        assert_eq!(streamed.recv().await, Some(Emitted::Token(2, None)));
        let (short, short_answer) = request(20, 3);
        scheduler.submit(short).unwrap();
        let short = short_answer.await.unwrap().unwrap();
        assert_eq!(short.sequences, vec![vec![21, 22, 23]]);
        let long = long_answer.await.unwrap().unwrap();
        let expected: Vec<i64> = (0..300).map(|i| (2 + i) % 50).collect();
        assert_eq!(long.sequences, vec![expected]);

        let steps = steps.lock().unwrap().clone();
        let together = steps.iter().filter(|&&rows| rows == 2).count();
        assert_eq!(together, 2, "the short one decoded twice beside the long one: {steps:?}");
        let last_joint = steps.iter().rposition(|&rows| rows == 2).unwrap();
        assert!(steps[last_joint + 1..].iter().all(|&rows| rows == 1), "it left: {steps:?}");
        assert_eq!(steps.len(), 300 + 1, "300 steps for the long one, one prefill for the short");
    }

    #[tokio::test]
    async fn a_caller_that_leaves_frees_its_rows_at_the_next_step() {
        let steps = Arc::new(Mutex::new(Vec::new()));
        let counter = Counter { steps: steps.clone(), pause: Duration::from_millis(1) };
        let scheduler = Scheduler::start("counter", counter, policy());
        let (mut gone, gone_answer) = request(1, 400);
        let (tokens, mut streamed) = tokio_mpsc::unbounded_channel();
        gone.tokens = Some(tokens);
        scheduler.submit(gone).unwrap();
        assert_eq!(streamed.recv().await, Some(Emitted::Token(2, None)));
        drop((streamed, gone_answer));
        let (after, answer) = request(30, 2);
        scheduler.submit(after).unwrap();
        assert_eq!(answer.await.unwrap().unwrap().sequences, vec![vec![31, 32]]);
        let steps = steps.lock().unwrap().clone();
        assert!(steps.len() < 400, "the abandoned generation stopped early: {steps:?}");
    }

    #[tokio::test]
    async fn past_the_bound_requests_are_refused_at_once() {
        let steps = Arc::new(Mutex::new(Vec::new()));
        let policy = Policy { max_queued: 2, max_batch_size: 1, ..policy() };
        let counter = Counter { steps, pause: Duration::from_millis(1) };
        let scheduler = Scheduler::start("counter", counter, policy);
        let answers: Vec<_> = (0..8)
            .map(|i| {
                let (request, answer) = request(i, 500);
                scheduler.submit(request).unwrap();
                answer
            })
            .collect();
        let mut refused = 0;
        for answer in answers {
            if let Err(BatchError::Overloaded { .. }) = answer.await.unwrap() {
                refused += 1;
            }
        }
        assert!(refused >= 4, "at most one running and two queued: {refused} refused");
    }

    #[tokio::test]
    async fn requests_batched_with_one_that_breaks_the_model_run_again_alone_and_succeed() {
        let steps = Arc::new(Mutex::new(Vec::new()));
        let counter = Counter { steps: steps.clone(), pause: Duration::ZERO };
        let policy = Policy { max_batch_delay: Duration::from_millis(50), ..policy() };
        let scheduler = Scheduler::start("counter", counter, policy);
        let (good, good_answer) = request(1, 3);
        let (broken, broken_answer) = request(99, 3);
        let (other, other_answer) = request(20, 2);
        for r in [good, broken, other] {
            scheduler.submit(r).unwrap();
        }
        let failed = broken_answer.await.unwrap();
        let Err(BatchError::Model(told)) = &failed else { panic!("{failed:?}") };
        assert!(told.starts_with("the model failed on this input (request "), "{told}");
        assert!(!told.contains("breaks this model"), "the panic's text stays in the log: {told}");
        assert_eq!(good_answer.await.unwrap().unwrap().sequences, vec![vec![2, 3, 4]]);
        assert_eq!(other_answer.await.unwrap().unwrap().sequences, vec![vec![21, 22]]);
    }

    #[tokio::test]
    async fn a_joiner_that_breaks_the_model_fails_alone_and_the_batch_goes_on() {
        let steps = Arc::new(Mutex::new(Vec::new()));
        let counter = Counter { steps, pause: Duration::from_millis(1) };
        let scheduler = Scheduler::start("counter", counter, policy());
        let (mut long, long_answer) = request(1, 100);
        let (tokens, mut streamed) = tokio_mpsc::unbounded_channel();
        long.tokens = Some(tokens);
        scheduler.submit(long).unwrap();
        assert_eq!(streamed.recv().await, Some(Emitted::Token(2, None)));
        let (broken, broken_answer) = request(99, 3);
        scheduler.submit(broken).unwrap();
        let failed = broken_answer.await.unwrap();
        assert!(
            matches!(&failed, Err(BatchError::Model(m)) if m.starts_with("the model failed on this input")),
            "{failed:?}"
        );
        let long = long_answer.await.unwrap().unwrap();
        assert_eq!(long.sequences[0].len(), 100, "the running batch was not disturbed");
        let (after, answer) = request(10, 2);
        scheduler.submit(after).unwrap();
        assert_eq!(answer.await.unwrap().unwrap().sequences, vec![vec![11, 12]]);
    }
}
