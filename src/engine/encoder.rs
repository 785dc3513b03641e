//! An encoder task served by the engine: the pipeline tokenizes and post-processes on the CPU
//! pool, the [`Batcher`] runs each row on the model thread in a batch with every other caller's.
//! gRPC calls (interactive lane), `lote run` and jobs (bulk lane) all come through here.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::future::join_all;

use super::{
    batcher::{BatchError, Batcher, Served},
    call::{Answered, CallReport, EngineError, task_error},
    cpu_pool::CpuPool,
    policy::{Lane, Policy},
};
use crate::tasks::{
    EncoderPipeline, TaskError, TaskInput, TaskResult,
    pipeline::{EncoderModel, RowOutput, TaskParams},
};

/// A cheap cloneable handle to one encoder model.
#[derive(Clone)]
pub struct EncoderService {
    pipeline: Arc<EncoderPipeline>,
    batcher: Batcher<EncoderModel>,
    pool: CpuPool,
    /// Rows of one bulk call in the queue at once, so bulk work never overflows the bound.
    bulk_in_flight: usize,
    /// Most tokens one input may have; None for no limit (`lote run`).
    max_input_tokens: Option<usize>,
    /// A row that must run alone claims the whole token budget.
    budget: usize,
}

impl EncoderService {
    /// Takes the pipeline's model onto a model thread (the current tokio runtime runs its
    /// queue).
    pub fn start(
        name: &str,
        mut pipeline: EncoderPipeline,
        policy: Policy,
        pool: CpuPool,
        max_input_tokens: Option<usize>,
    ) -> Self {
        let model = pipeline.take_model().expect("a freshly loaded pipeline has its model");
        Self {
            pipeline: Arc::new(pipeline),
            batcher: Batcher::start(name, model, policy),
            pool,
            bulk_in_flight: (policy.max_queued / 2).max(1),
            max_input_tokens,
            budget: policy.max_batch_tokens,
        }
    }

    pub fn pipeline(&self) -> &EncoderPipeline {
        &self.pipeline
    }

    /// Answers every input (each its own result); fails as a whole when the model refuses the
    /// call (overloaded, deadline, shutting down) or an input is over the token limit.
    pub async fn answer(
        &self,
        items: Vec<(TaskInput, TaskParams)>,
        lane: Lane,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Answered<TaskResult>, EngineError> {
        self.answer_with(items, lane, deadline, false).await
    }

    /// Like [`EncoderService::answer`] in the bulk lane, each row in a batch of its own: a
    /// redelivered job document that may have crashed the model cannot take others with it.
    pub async fn answer_alone(
        &self,
        items: Vec<(TaskInput, TaskParams)>,
    ) -> Result<Answered<TaskResult>, EngineError> {
        self.answer_with(items, Lane::Bulk, None, true).await
    }

    async fn answer_with(
        &self,
        items: Vec<(TaskInput, TaskParams)>,
        lane: Lane,
        deadline: Option<tokio::time::Instant>,
        alone: bool,
    ) -> Result<Answered<TaskResult>, EngineError> {
        let items = Arc::new(items);
        let started = Instant::now();
        let (call, requests) = {
            let (pipeline, items) = (self.pipeline.clone(), items.clone());
            self.pool.run(move || pipeline.prepare_rows(&items)).await?
        };
        let mut tokenize = started.elapsed();
        let input_tokens = call.input_tokens();
        let usage_tokens = call.usage_tokens();
        if let Some(limit) = self.max_input_tokens
            && let Some((index, &tokens)) =
                input_tokens.iter().enumerate().find(|&(_, &tokens)| tokens > limit)
        {
            return Err(EngineError::InputTooLong { index, tokens, limit });
        }
        let chunk = match lane {
            Lane::Interactive => requests.len().max(1),
            Lane::Bulk => self.bulk_in_flight,
        };
        let mut answers: Vec<Result<RowOutput, TaskError>> = Vec::with_capacity(requests.len());
        let (mut queue, mut batches) = (Duration::ZERO, BTreeMap::new());
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            let calls = requests.by_ref().take(chunk).map(|request| {
                let tokens =
                    if alone { self.budget.max(request.ids.len()) } else { request.ids.len() };
                self.batcher.infer(request, tokens, lane, deadline)
            });
            for answer in join_all(calls).await {
                answers.push(self.take(answer, &mut queue, &mut batches)?);
            }
        }
        let finishing = Instant::now();
        let results = {
            let pipeline = self.pipeline.clone();
            self.pool.run(move || pipeline.finish_rows(&items, call, answers)).await?
        };
        tokenize += finishing.elapsed();
        let report = CallReport {
            input_tokens: usage_tokens,
            output_tokens: 0,
            queue,
            tokenize,
            inference: batches.values().sum(),
        };
        Ok(Answered { results, report })
    }

    /// One row's answer: its output or its own error; a refusal fails the whole call.
    fn take(
        &self,
        answer: Result<Served<RowOutput>, BatchError>,
        queue: &mut Duration,
        batches: &mut BTreeMap<u64, Duration>,
    ) -> Result<Result<RowOutput, TaskError>, EngineError> {
        match answer {
            Ok(served) => {
                *queue = (*queue).max(served.queued);
                batches.insert(served.batch, served.computed);
                Ok(Ok(served.output))
            }
            Err(error) => match EngineError::from_batch(&error) {
                Some(refusal) => Err(refusal),
                None => Ok(Err(task_error(error))),
            },
        }
    }
}
