//! A generation task served by the engine: prompts are planned (tokenized, truncated or split
//! into chunks) and answers decoded on the CPU pool; the [`Scheduler`] generates with continuous
//! batching. Unary calls, streams and `lote run` all come through here.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{StreamExt, future::try_join_all};
use tokio::sync::{mpsc, oneshot};

use super::{
    batcher::BatchError,
    call::{Answered, CallReport, EngineError, task_error},
    cpu_pool::CpuPool,
    policy::{Lane, Policy},
    scheduler::{Emitted, GenerationRequest, Scheduler},
};
use crate::{
    generation::{PromptLogprobs, TokenLogprob, stream::TextStream},
    tasks::{
        TaskError, TaskInput,
        generate::{
            FinishReason, Generation, GenerationParams, GenerationPipeline, GenerationResult,
            LongDocument, Plan,
        },
    },
};

/// A cheap cloneable handle to one generative model.
#[derive(Clone)]
pub struct GenerationService {
    pipeline: Arc<GenerationPipeline>,
    scheduler: Scheduler,
    pool: CpuPool,
    max_input_tokens: Option<usize>,
    bulk_in_flight: usize,
}

/// What a stream sends: text as it becomes final, then how it ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// First, when asked for: each prompt token's log-probability after the first.
    Prompt {
        logprobs: PromptLogprobs,
    },
    Token {
        token: u32,
        text: String,
        /// When the config asks for log-probabilities.
        logprob: Option<TokenLogprob>,
    },
    /// `rest` is text held back until the end (an incomplete character).
    Finished {
        reason: FinishReason,
        rest: String,
        report: CallReport,
    },
    Failed(EngineError),
}

/// How a generation enters the scheduler.
#[derive(Debug, Clone, Copy)]
struct Admit {
    lane: Lane,
    deadline: Option<tokio::time::Instant>,
    /// With no other generation in its batch.
    alone: bool,
}

/// One generation's outcome from the scheduler, with its times.
struct Sequences {
    sequences: Vec<Vec<i64>>,
    logprobs: Option<Vec<Vec<TokenLogprob>>>,
    prompt_logprobs: Option<PromptLogprobs>,
    queued: Duration,
    computed: Duration,
}

impl GenerationService {
    /// Takes the pipeline's model onto its scheduler thread.
    pub fn start(
        name: &str,
        mut pipeline: GenerationPipeline,
        policy: Policy,
        pool: CpuPool,
        max_input_tokens: Option<usize>,
    ) -> Self {
        let generator = pipeline.take_generator().expect("a freshly loaded pipeline has its model");
        Self {
            pipeline: Arc::new(pipeline),
            scheduler: Scheduler::start(name, generator, policy),
            pool,
            max_input_tokens,
            bulk_in_flight: (policy.max_queued / 2).max(1),
        }
    }

    pub fn pipeline(&self) -> &GenerationPipeline {
        &self.pipeline
    }

    /// Generates for every input; each gets its own result. Fails as a whole when the model
    /// refuses the call (overloaded, deadline, shutting down) or an input is over the limit.
    pub async fn generate(
        &self,
        items: Vec<(TaskInput, GenerationParams)>,
        lane: Lane,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Answered<GenerationResult>, EngineError> {
        self.generate_with(items, lane, deadline, false).await
    }

    /// Like [`GenerationService::generate`] in the bulk lane, each generation with no other in
    /// its batch (a redelivered job document that may have crashed the model).
    pub async fn generate_alone(
        &self,
        items: Vec<(TaskInput, GenerationParams)>,
    ) -> Result<Answered<GenerationResult>, EngineError> {
        self.generate_with(items, Lane::Bulk, None, true).await
    }

    async fn generate_with(
        &self,
        items: Vec<(TaskInput, GenerationParams)>,
        lane: Lane,
        deadline: Option<tokio::time::Instant>,
        alone: bool,
    ) -> Result<Answered<GenerationResult>, EngineError> {
        let started = Instant::now();
        let plans = {
            let (pipeline, items) = (self.pipeline.clone(), items.clone());
            self.pool
                .run(move || {
                    items.iter().map(|(input, params)| pipeline.plan(input, params)).collect()
                })
                .await?
        };
        let plans: Vec<Result<Plan, TaskError>> = plans;
        let mut report = CallReport { tokenize: started.elapsed(), ..CallReport::default() };
        for (index, plan) in plans.iter().enumerate() {
            if let Ok(plan) = plan {
                let tokens = match plan {
                    Plan::Single(prompt) => prompt.input_tokens,
                    Plan::Chunks { input_tokens, .. } => *input_tokens,
                };
                if let Some(limit) = self.max_input_tokens
                    && tokens > limit
                {
                    return Err(EngineError::InputTooLong { index, tokens, limit });
                }
                report.input_tokens += tokens;
            }
        }
        let calls = plans.into_iter().zip(items).map(|(plan, (_, params))| async move {
            match plan {
                Ok(plan) => self.run_plan(plan, params, Admit { lane, deadline, alone }).await,
                Err(error) => Ok((Err(error), CallReport::default())),
            }
        });
        // Bulk calls keep at most half the queue bound in flight, so they never overflow it.
        let in_flight = match lane {
            Lane::Interactive => usize::MAX,
            Lane::Bulk => self.bulk_in_flight,
        };
        let mut results = Vec::new();
        let outcomes: Vec<_> =
            futures::stream::iter(calls).buffered(in_flight.max(1)).collect().await;
        for outcome in outcomes {
            let (result, cost) = outcome?;
            report.output_tokens += cost.output_tokens;
            report.queue = report.queue.max(cost.queue);
            report.tokenize += cost.tokenize;
            report.inference = report.inference.max(cost.inference);
            results.push(result);
        }
        Ok(Answered { results, report })
    }

    /// One input: its prompt, or its chunks then the summary of their summaries.
    async fn run_plan(
        &self,
        plan: Plan,
        params: GenerationParams,
        admit: Admit,
    ) -> Result<(Result<GenerationResult, TaskError>, CallReport), EngineError> {
        let mut report = CallReport::default();
        let (prompt, input_tokens, truncated) = match plan {
            Plan::Single(prompt) => (prompt.ids, prompt.input_tokens, prompt.truncated),
            Plan::Chunks { prompts, input_tokens } => {
                let chunks = prompts
                    .iter()
                    .map(|prompt| self.generate_one(prompt.clone(), &params, admit, None));
                let mut summaries = Vec::new();
                for (prompt, outcome) in prompts.iter().zip(try_join_all(chunks).await?) {
                    let sequences = match outcome {
                        Ok(sequences) => sequences,
                        Err(error) => return Ok((Err(error), report)),
                    };
                    report.queue = report.queue.max(sequences.queued);
                    report.inference += sequences.computed;
                    match self.decode(prompt.clone(), sequences.sequences, &params).await? {
                        Ok(generation) => summaries.push(generation.texts[0].clone()),
                        Err(error) => return Ok((Err(error), report)),
                    }
                }
                let pipeline = self.pipeline.clone();
                let prompt = match self.pool.run(move || pipeline.final_prompt(&summaries)).await? {
                    Ok(prompt) => prompt,
                    Err(error) => return Ok((Err(error), report)),
                };
                (prompt, input_tokens, false)
            }
        };
        let sequences = match self.generate_one(prompt.clone(), &params, admit, None).await? {
            Ok(sequences) => sequences,
            Err(error) => return Ok((Err(error), report)),
        };
        report.queue = report.queue.max(sequences.queued);
        report.inference += sequences.computed;
        let started = Instant::now();
        let (logprobs, prompt_logprobs) = (sequences.logprobs, sequences.prompt_logprobs);
        let generation = self.decode(prompt, sequences.sequences, &params).await?;
        report.tokenize += started.elapsed();
        let result = generation.map(|mut generation| {
            generation.logprobs = logprobs.map(|rows| {
                let kept = rows.into_iter().zip(&generation.output_tokens);
                kept.map(|(steps, &n)| steps.into_iter().take(n).collect()).collect()
            });
            generation.prompt_logprobs = prompt_logprobs;
            report.output_tokens += generation.output_tokens.iter().sum::<usize>();
            GenerationResult { generation, input_tokens, truncated }
        });
        Ok((result, report))
    }

    /// Decodes a prompt's sequences on the pool.
    async fn decode(
        &self,
        prompt: Vec<u32>,
        sequences: Vec<Vec<i64>>,
        params: &GenerationParams,
    ) -> Result<Result<Generation, TaskError>, EngineError> {
        let (pipeline, params) = (self.pipeline.clone(), params.clone());
        Ok(self.pool.run(move || pipeline.generation_of(&prompt, &sequences, &params)).await?)
    }

    /// Queues one prompt with the scheduler and waits for its sequences.
    async fn generate_one(
        &self,
        prompt: Vec<u32>,
        params: &GenerationParams,
        admit: Admit,
        tokens: Option<mpsc::UnboundedSender<Emitted>>,
    ) -> Result<Result<Sequences, TaskError>, EngineError> {
        let Admit { lane, deadline, alone } = admit;
        let (config, max_length) = match self.pipeline.request_config(prompt.len(), params) {
            Ok(config) => config,
            Err(error) => return Ok(Err(error)),
        };
        let (reply, answer) = oneshot::channel();
        self.scheduler
            .submit(GenerationRequest {
                prompt,
                config,
                max_length,
                stop: self.pipeline.stop_check(params),
                lane,
                deadline: deadline.map(tokio::time::Instant::into_std),
                alone,
                tokens,
                reply,
            })
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        match answer.await {
            Ok(Ok(generated)) => Ok(Ok(Sequences {
                sequences: generated.sequences,
                logprobs: generated.logprobs,
                prompt_logprobs: generated.prompt_logprobs,
                queued: generated.queued,
                computed: generated.computed,
            })),
            Ok(Err(error)) => match EngineError::from_batch(&error) {
                Some(refusal) => Err(refusal),
                None => Ok(Err(task_error(error))),
            },
            Err(_) => Err(EngineError::Unavailable(BatchError::Unavailable.to_string())),
        }
    }

    /// Streams one prompt's single sequence. Events end with `Finished` or `Failed`; dropping
    /// the receiver stops the generation at its next step.
    pub async fn stream(
        &self,
        input: TaskInput,
        params: GenerationParams,
        lane: Lane,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<mpsc::Receiver<StreamEvent>, EngineError> {
        let config = &params.generate;
        if config.num_beams > 1 || (config.do_sample && config.num_return_sequences > 1) {
            return Err(EngineError::Invalid(
                "a stream carries one sequence: num_beams and num_return_sequences must be 1"
                    .into(),
            ));
        }
        if matches!(params.long_document, LongDocument::Chunked { .. }) {
            return Err(EngineError::Invalid(
                "long_document=chunked summaries cannot be streamed".into(),
            ));
        }
        let started = Instant::now();
        let plan = {
            let (pipeline, input, params) = (self.pipeline.clone(), input, params.clone());
            self.pool.run(move || pipeline.plan(&input, &params)).await?
        };
        let prompt = match plan {
            Ok(Plan::Single(prompt)) => prompt,
            Ok(Plan::Chunks { .. }) => unreachable!("chunked plans were refused above"),
            Err(error) => return Err(EngineError::for_input(0, &error)),
        };
        if let Some(limit) = self.max_input_tokens
            && prompt.input_tokens > limit
        {
            return Err(EngineError::InputTooLong { index: 0, tokens: prompt.input_tokens, limit });
        }
        let tokenize = started.elapsed();
        let (events, receiver) = mpsc::channel(64);
        let (tokens_tx, mut tokens) = mpsc::unbounded_channel();
        let service = self.clone();
        tokio::spawn(async move {
            let ids = prompt.ids.clone();
            let admit = Admit { lane, deadline, alone: false };
            let generation = service.generate_one(ids, &params, admit, Some(tokens_tx));
            tokio::pin!(generation);
            let tokenizer = service.pipeline.tokenizer.clone();
            let mut text =
                TextStream::new(move |t: &[u32]| tokenizer.decode(t, true).unwrap_or_default());
            let outcome = loop {
                tokio::select! {
                    outcome = &mut generation => break outcome,
                    Some(emitted) = tokens.recv() => {
                        if events.send(event_of(emitted, &mut text)).await.is_err() {
                            return; // the caller left: dropping `tokens` stops the generation
                        }
                    }
                }
            };
            // Tokens sent just before the end.
            while let Ok(emitted) = tokens.try_recv() {
                let _ = events.send(event_of(emitted, &mut text)).await;
            }
            let last = match outcome {
                Ok(Ok(sequences)) => {
                    let rest = text.finish().unwrap_or_default();
                    let decoded = service
                        .decode(prompt.ids.clone(), sequences.sequences.clone(), &params)
                        .await;
                    match decoded {
                        Ok(Ok(generation)) => StreamEvent::Finished {
                            reason: generation.finish_reasons[0],
                            rest,
                            report: CallReport {
                                input_tokens: prompt.input_tokens,
                                output_tokens: generation.output_tokens[0],
                                queue: sequences.queued,
                                tokenize,
                                inference: sequences.computed,
                            },
                        },
                        Ok(Err(error)) => StreamEvent::Failed(EngineError::for_input(0, &error)),
                        Err(error) => StreamEvent::Failed(error),
                    }
                }
                Ok(Err(error)) => StreamEvent::Failed(EngineError::for_input(0, &error)),
                Err(error) => StreamEvent::Failed(error),
            };
            let _ = events.send(last).await;
        });
        Ok(receiver)
    }
}

/// The stream event of what the scheduler sent, a token's text decoded as it becomes final.
fn event_of<F: Fn(&[u32]) -> String>(emitted: Emitted, text: &mut TextStream<F>) -> StreamEvent {
    match emitted {
        Emitted::Prompt(logprobs) => StreamEvent::Prompt { logprobs },
        Emitted::Token(token, logprob) => {
            let piece = text.push(token as u32).unwrap_or_default();
            StreamEvent::Token { token: token as u32, text: piece, logprob }
        }
    }
}
