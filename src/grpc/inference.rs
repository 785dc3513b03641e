//! `lote.v1.Inference`: each call checks its size limits, finds its model, turns its proto
//! parameters into the task's parameters (the same names and checks as `lote run --param`),
//! and waits for the engine in the interactive lane, bounded by the call's deadline.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{Map, Value, json};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::{pb, status::grpc_timeout};
use crate::{
    engine::{
        call::{CallReport, EngineError},
        cpu_pool::CpuPool,
        encoder::EncoderService,
        generation::{GenerationService, StreamEvent},
        policy::Lane,
        registry::{Registry, ServedModel},
    },
    settings::{LimitSettings, Task},
    tasks::{Embedding, TaskInput, TaskOutput, TaskResult, generate::GenerationResult, rerank},
};

/// Room left before the transport's own deadline fires (it would answer CANCELLED), so that
/// the call ends with DEADLINE_EXCEEDED from here instead.
const DEADLINE_MARGIN: Duration = Duration::from_millis(2);

pub struct InferenceService {
    registry: Arc<Registry>,
    limits: LimitSettings,
    pool: CpuPool,
}

impl InferenceService {
    pub fn new(registry: Arc<Registry>, limits: LimitSettings, pool: CpuPool) -> Self {
        Self { registry, limits, pool }
    }

    /// Runs one call: deadline, metrics by status code, errors turned into statuses.
    async fn call<T, Fut>(
        &self,
        method: &'static str,
        metadata: &tonic::metadata::MetadataMap,
        work: impl FnOnce(Option<tokio::time::Instant>) -> Fut,
    ) -> Result<Response<T>, Status>
    where
        Fut: Future<Output = Result<T, EngineError>>,
    {
        let started = Instant::now();
        let result = match grpc_timeout(metadata) {
            None => work(None).await,
            Some(timeout) => match timeout.checked_sub(DEADLINE_MARGIN) {
                Some(budget) if !budget.is_zero() => {
                    let deadline = tokio::time::Instant::now() + budget;
                    tokio::time::timeout_at(deadline, work(Some(deadline)))
                        .await
                        .unwrap_or(Err(EngineError::DeadlineExceeded))
                }
                _ => Err(EngineError::DeadlineExceeded),
            },
        };
        let result = result.map(Response::new).map_err(Status::from);
        record(method, started, result.as_ref().err());
        result
    }

    /// The call's inputs within the limits.
    fn check_inputs(&self, count: usize) -> Result<(), EngineError> {
        if count == 0 {
            return Err(EngineError::Invalid("`inputs` is empty".into()));
        }
        let limit = self.limits.max_inputs_per_call;
        if count > limit {
            return Err(EngineError::Invalid(format!(
                "{count} inputs: more than server.limits.max_inputs_per_call ({limit})"
            )));
        }
        Ok(())
    }

    fn model(&self, name: &str, task: Task) -> Result<&ServedModel, EngineError> {
        self.registry.serving(name, task)
    }

    fn encoder(&self, name: &str, task: Task) -> Result<&EncoderService, EngineError> {
        match self.model(name, task)? {
            ServedModel::Encoder(service) => Ok(service),
            ServedModel::Generation(_) => unreachable!("{task} is an encoder task"),
        }
    }

    fn generator(&self, name: &str, task: Task) -> Result<&GenerationService, EngineError> {
        match self.model(name, task)? {
            ServedModel::Generation(service) => Ok(service),
            ServedModel::Encoder(_) => unreachable!("{task} is a generation task"),
        }
    }

    /// Runs an encoder task over `inputs`; the first input that fails fails the call.
    async fn run_encoder(
        &self,
        name: &str,
        task: Task,
        inputs: Vec<TaskInput>,
        params: Map<String, Value>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(Vec<TaskResult>, pb::ResponseMetadata), EngineError> {
        self.check_inputs(inputs.len())?;
        let service = self.encoder(name, task)?;
        let params = service
            .pipeline()
            .parse_params(&Value::Object(params))
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        let items = inputs.into_iter().map(|input| (input, params.clone())).collect();
        let answered = service.answer(items, Lane::Interactive, deadline).await?;
        let results = answered
            .results
            .into_iter()
            .enumerate()
            .map(|(index, result)| result.map_err(|e| EngineError::for_input(index, &e)))
            .collect::<Result<Vec<_>, _>>()?;
        let identity = &service.pipeline().identity;
        Ok((results, metadata(name, &identity.sha256, &answered.report)))
    }

    /// Runs a generation task over `inputs`.
    async fn run_generation(
        &self,
        name: &str,
        task: Task,
        inputs: Vec<String>,
        parameters: Option<pb::GenerationParameters>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<pb::GenerateResponse, EngineError> {
        self.check_inputs(inputs.len())?;
        let service = self.generator(name, task)?;
        let params = service
            .pipeline()
            .parse_params(&Value::Object(generation_params(parameters.unwrap_or_default())))
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        let items =
            inputs.into_iter().map(|text| (TaskInput::Text { text }, params.clone())).collect();
        let answered = service.generate(items, Lane::Interactive, deadline).await?;
        let results = answered
            .results
            .into_iter()
            .enumerate()
            .map(|(index, result)| {
                result.map(generation_message).map_err(|e| EngineError::for_input(index, &e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let sha = &service.pipeline().identity.sha256;
        Ok(pb::GenerateResponse { results, metadata: Some(metadata(name, sha, &answered.report)) })
    }
}

/// Counts the call by method and status code, and times it.
fn record(method: &'static str, started: Instant, error: Option<&Status>) {
    let code = error.map_or(tonic::Code::Ok, Status::code);
    metrics::counter!("lote_requests_total", "method" => method, "code" => format!("{code:?}"))
        .increment(1);
    metrics::histogram!("lote_request_seconds", "method" => method)
        .record(started.elapsed().as_secs_f64());
}

fn metadata(model: &str, sha256: &str, report: &CallReport) -> pb::ResponseMetadata {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    pb::ResponseMetadata {
        model: model.into(),
        weights_sha256: sha256.into(),
        input_tokens: report.input_tokens as u64,
        output_tokens: report.output_tokens as u64,
        queue_ms: ms(report.queue),
        tokenize_ms: ms(report.tokenize),
        inference_ms: ms(report.inference),
    }
}

/// Sets `key` when the proto field is present.
fn put<T: Into<Value>>(params: &mut Map<String, Value>, key: &str, value: Option<T>) {
    if let Some(value) = value {
        params.insert(key.into(), value.into());
    }
}

fn texts(inputs: Vec<String>) -> Vec<TaskInput> {
    inputs.into_iter().map(|text| TaskInput::Text { text }).collect()
}

/// The generation parameters as `lote run` names them.
fn generation_params(p: pb::GenerationParameters) -> Map<String, Value> {
    let mut m = Map::new();
    put(&mut m, "max_length", p.max_length);
    put(&mut m, "max_new_tokens", p.max_new_tokens);
    put(&mut m, "min_length", p.min_length);
    put(&mut m, "min_new_tokens", p.min_new_tokens);
    put(&mut m, "do_sample", p.do_sample);
    put(&mut m, "temperature", p.temperature);
    put(&mut m, "top_k", p.top_k);
    put(&mut m, "top_p", p.top_p);
    put(&mut m, "typical_p", p.typical_p);
    put(&mut m, "num_beams", p.num_beams);
    put(&mut m, "num_return_sequences", p.num_return_sequences);
    put(&mut m, "length_penalty", p.length_penalty);
    put(
        &mut m,
        "early_stopping",
        p.early_stopping.map(|s| match s.as_str() {
            "true" => json!(true),
            "false" => json!(false),
            other => json!(other),
        }),
    );
    put(&mut m, "no_repeat_ngram_size", p.no_repeat_ngram_size);
    put(&mut m, "repetition_penalty", p.repetition_penalty);
    put(&mut m, "presence_penalty", p.presence_penalty);
    put(&mut m, "frequency_penalty", p.frequency_penalty);
    if !p.bad_words_ids.is_empty() {
        m.insert(
            "bad_words_ids".into(),
            json!(p.bad_words_ids.iter().map(|t| &t.ids).collect::<Vec<_>>()),
        );
    }
    put(&mut m, "seed", p.seed);
    if !p.stop.is_empty() {
        m.insert("stop".into(), json!(p.stop));
    }
    put(&mut m, "return_full_text", p.return_full_text);
    put(&mut m, "truncation", p.truncation);
    put(&mut m, "long_document", p.long_document);
    put(&mut m, "chunk_tokens", p.chunk_tokens);
    put(&mut m, "chunk_overlap", p.chunk_overlap);
    put(&mut m, "src_lang", p.src_lang);
    put(&mut m, "tgt_lang", p.tgt_lang);
    m
}

fn generation_message(result: GenerationResult) -> pb::Generation {
    let g = result.generation;
    let sequences = g
        .texts
        .into_iter()
        .zip(g.output_tokens)
        .zip(g.finish_reasons)
        .map(|((text, tokens), reason)| pb::GeneratedSequence {
            text,
            output_tokens: tokens as u32,
            finish_reason: finish_reason(reason),
        })
        .collect();
    pb::Generation {
        sequences,
        input_tokens: result.input_tokens as u32,
        truncated: result.truncated,
    }
}

fn finish_reason(reason: crate::tasks::generate::FinishReason) -> String {
    serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::GenerateStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::inference_server::Inference for InferenceService {
    async fn embed(
        &self,
        request: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        let (metadata_map, _, r) = request.into_parts();
        self.call("Embed", &metadata_map, |deadline| async move {
            let mut params = Map::new();
            put(&mut params, "pooling", r.pooling);
            put(&mut params, "normalize", r.normalize);
            put(&mut params, "truncate", r.truncate);
            let (results, metadata) = self
                .run_encoder(&r.model, Task::FeatureExtraction, texts(r.inputs), params, deadline)
                .await?;
            let embeddings = results
                .into_iter()
                .map(|result| {
                    let TaskOutput::Embedding(embedding) = result.output else {
                        unreachable!("feature-extraction gives embeddings")
                    };
                    match embedding {
                        Embedding::Pooled(values) => pb::Embedding {
                            pooled: values,
                            tokens: Vec::new(),
                            truncated: result.truncated,
                        },
                        Embedding::PerToken(rows) => pb::Embedding {
                            pooled: Vec::new(),
                            tokens: rows.into_iter().map(|values| pb::Vector { values }).collect(),
                            truncated: result.truncated,
                        },
                    }
                })
                .collect();
            Ok(pb::EmbedResponse { embeddings, metadata: Some(metadata) })
        })
        .await
    }

    async fn classify(
        &self,
        request: Request<pb::ClassifyRequest>,
    ) -> Result<Response<pb::ClassifyResponse>, Status> {
        let (metadata_map, _, r) = request.into_parts();
        self.call("Classify", &metadata_map, |deadline| async move {
            let mut params = Map::new();
            // 0 asks for every label, as top_k=None does in transformers.
            if let Some(top_k) = r.top_k {
                params.insert("top_k".into(), if top_k == 0 { Value::Null } else { json!(top_k) });
            }
            put(&mut params, "function_to_apply", r.function_to_apply);
            put(&mut params, "truncation", r.truncation);
            let inputs = if r.text_pairs.is_empty() {
                texts(r.inputs)
            } else if r.text_pairs.len() == r.inputs.len() {
                let pairs = r.inputs.into_iter().zip(r.text_pairs);
                pairs.map(|(text, text_pair)| TaskInput::TextPair { text, text_pair }).collect()
            } else {
                return Err(EngineError::Invalid(format!(
                    "`text_pairs` has {} texts for {} inputs: give one per input, or none",
                    r.text_pairs.len(),
                    r.inputs.len()
                )));
            };
            let (results, metadata) = self
                .run_encoder(&r.model, Task::TextClassification, inputs, params, deadline)
                .await?;
            let results = results
                .into_iter()
                .map(|result| {
                    let TaskOutput::Labels(labels) = result.output else {
                        unreachable!("text-classification gives labels")
                    };
                    pb::Classification {
                        labels: labels
                            .into_iter()
                            .map(|l| pb::LabelScore { label: l.label, score: l.score })
                            .collect(),
                        truncated: result.truncated,
                    }
                })
                .collect();
            Ok(pb::ClassifyResponse { results, metadata: Some(metadata) })
        })
        .await
    }

    async fn rerank(
        &self,
        request: Request<pb::RerankRequest>,
    ) -> Result<Response<pb::RerankResponse>, Status> {
        let (metadata_map, _, r) = request.into_parts();
        self.call("Rerank", &metadata_map, |deadline| async move {
            rerank::check_documents(&r.documents, self.limits.max_inputs_per_call)
                .map_err(|e| EngineError::Invalid(e.to_string()))?;
            let mut params = Map::new();
            put(&mut params, "top_n", r.top_n);
            params.insert("return_documents".into(), json!(r.return_documents));
            params.insert("raw_scores".into(), json!(r.raw_scores));
            put(
                &mut params,
                "truncation",
                r.truncation.map(|t| match t.as_str() {
                    "true" => json!(true),
                    "false" => json!(false),
                    other => json!(other),
                }),
            );
            let input = TaskInput::Query { query: r.query, documents: r.documents };
            let (mut results, metadata) = self
                .run_encoder(&r.model, Task::Rerank, vec![input], params, deadline)
                .await
                .map_err(|error| match error {
                    // One input a call: its error is the call's, without an input index.
                    EngineError::InvalidInput { message, .. } => EngineError::Invalid(message),
                    other => other,
                })?;
            let result = results.pop().expect("one result for one input");
            let TaskOutput::Ranking(ranked) = result.output else {
                unreachable!("rerank gives a ranking")
            };
            let results = ranked
                .into_iter()
                .map(|r| pb::RankedDocument {
                    index: r.index as u32,
                    score: r.score,
                    document: r.document,
                })
                .collect();
            Ok(pb::RerankResponse {
                results,
                truncated: result.truncated,
                metadata: Some(metadata),
            })
        })
        .await
    }

    async fn classify_zero_shot(
        &self,
        request: Request<pb::ClassifyZeroShotRequest>,
    ) -> Result<Response<pb::ClassifyZeroShotResponse>, Status> {
        let (metadata_map, _, r) = request.into_parts();
        self.call("ClassifyZeroShot", &metadata_map, |deadline| async move {
            let mut params = Map::new();
            params.insert("candidate_labels".into(), json!(r.candidate_labels));
            put(&mut params, "hypothesis_template", r.hypothesis_template);
            params.insert("multi_label".into(), json!(r.multi_label));
            let task = Task::ZeroShotClassification;
            let (results, metadata) =
                self.run_encoder(&r.model, task, texts(r.inputs), params, deadline).await?;
            let results = results
                .into_iter()
                .map(|result| {
                    let TaskOutput::ZeroShot(answer) = result.output else {
                        unreachable!("zero-shot-classification gives labels and scores")
                    };
                    pb::ZeroShotClassification {
                        sequence: answer.sequence,
                        labels: answer.labels,
                        scores: answer.scores,
                        truncated: result.truncated,
                    }
                })
                .collect();
            Ok(pb::ClassifyZeroShotResponse { results, metadata: Some(metadata) })
        })
        .await
    }

    async fn classify_tokens(
        &self,
        request: Request<pb::ClassifyTokensRequest>,
    ) -> Result<Response<pb::ClassifyTokensResponse>, Status> {
        let (metadata_map, _, r) = request.into_parts();
        self.call("ClassifyTokens", &metadata_map, |deadline| async move {
            let mut params = Map::new();
            put(&mut params, "aggregation_strategy", r.aggregation_strategy);
            if r.ignore_none {
                params.insert("ignore_labels".into(), json!([]));
            } else if !r.ignore_labels.is_empty() {
                params.insert("ignore_labels".into(), json!(r.ignore_labels));
            }
            put(&mut params, "truncation", r.truncation);
            put(&mut params, "stride", r.stride);
            let task = Task::TokenClassification;
            let (results, metadata) =
                self.run_encoder(&r.model, task, texts(r.inputs), params, deadline).await?;
            let results = results
                .into_iter()
                .map(|result| {
                    let TaskOutput::Entities(entities) = result.output else {
                        unreachable!("token-classification gives entities")
                    };
                    pb::TokenClassification {
                        entities: entities
                            .into_iter()
                            .map(|e| pb::Entity {
                                label: e.label,
                                score: e.score,
                                word: e.word,
                                start: e.start as u32,
                                end: e.end as u32,
                                index: e.index.map(|i| i as u32),
                            })
                            .collect(),
                        truncated: result.truncated,
                    }
                })
                .collect();
            Ok(pb::ClassifyTokensResponse { results, metadata: Some(metadata) })
        })
        .await
    }

    async fn answer_question(
        &self,
        request: Request<pb::AnswerQuestionRequest>,
    ) -> Result<Response<pb::AnswerQuestionResponse>, Status> {
        let (metadata_map, _, r) = request.into_parts();
        self.call("AnswerQuestion", &metadata_map, |deadline| async move {
            let mut params = Map::new();
            put(&mut params, "top_k", r.top_k);
            put(&mut params, "doc_stride", r.doc_stride);
            put(&mut params, "max_answer_len", r.max_answer_len);
            put(&mut params, "max_seq_len", r.max_seq_len);
            put(&mut params, "max_question_len", r.max_question_len);
            put(&mut params, "handle_impossible_answer", r.handle_impossible_answer);
            put(&mut params, "align_to_words", r.align_to_words);
            let inputs = r
                .inputs
                .into_iter()
                .map(|qc| TaskInput::QuestionContext { question: qc.question, context: qc.context })
                .collect();
            let task = Task::QuestionAnswering;
            let (results, metadata) =
                self.run_encoder(&r.model, task, inputs, params, deadline).await?;
            let results = results
                .into_iter()
                .map(|result| {
                    let TaskOutput::Answers(answers) = result.output else {
                        unreachable!("question-answering gives answers")
                    };
                    pb::Answers {
                        answers: answers
                            .into_iter()
                            .map(|a| pb::Answer {
                                answer: a.answer,
                                score: a.score,
                                start: a.start as u32,
                                end: a.end as u32,
                            })
                            .collect(),
                        truncated: result.truncated,
                    }
                })
                .collect();
            Ok(pb::AnswerQuestionResponse { results, metadata: Some(metadata) })
        })
        .await
    }

    async fn fill_mask(
        &self,
        request: Request<pb::FillMaskRequest>,
    ) -> Result<Response<pb::FillMaskResponse>, Status> {
        let (metadata_map, _, r) = request.into_parts();
        self.call("FillMask", &metadata_map, |deadline| async move {
            let mut params = Map::new();
            put(&mut params, "top_k", r.top_k);
            if !r.targets.is_empty() {
                params.insert("targets".into(), json!(r.targets));
            }
            put(&mut params, "truncation", r.truncation);
            let (results, metadata) = self
                .run_encoder(&r.model, Task::FillMask, texts(r.inputs), params, deadline)
                .await?;
            let results = results
                .into_iter()
                .map(|result| {
                    let TaskOutput::Predictions(masks) = result.output else {
                        unreachable!("fill-mask gives predictions")
                    };
                    pb::FillMaskResult {
                        masks: masks
                            .into_iter()
                            .map(|predictions| pb::MaskPredictions {
                                predictions: predictions
                                    .into_iter()
                                    .map(|p| pb::MaskPrediction {
                                        score: p.score,
                                        token: p.token,
                                        token_str: p.token_str,
                                        sequence: p.sequence,
                                    })
                                    .collect(),
                            })
                            .collect(),
                        truncated: result.truncated,
                    }
                })
                .collect();
            Ok(pb::FillMaskResponse { results, metadata: Some(metadata) })
        })
        .await
    }

    async fn summarize(
        &self,
        request: Request<pb::SummarizeRequest>,
    ) -> Result<Response<pb::GenerateResponse>, Status> {
        let (metadata_map, _, r) = request.into_parts();
        self.call("Summarize", &metadata_map, |deadline| async move {
            self.run_generation(&r.model, Task::Summarization, r.inputs, r.parameters, deadline)
                .await
        })
        .await
    }

    async fn translate(
        &self,
        request: Request<pb::TranslateRequest>,
    ) -> Result<Response<pb::GenerateResponse>, Status> {
        let (metadata_map, _, r) = request.into_parts();
        self.call("Translate", &metadata_map, |deadline| async move {
            self.run_generation(&r.model, Task::Translation, r.inputs, r.parameters, deadline).await
        })
        .await
    }

    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<pb::GenerateResponse>, Status> {
        let (metadata_map, _, r) = request.into_parts();
        self.call("Generate", &metadata_map, |deadline| async move {
            self.run_generation(&r.model, Task::TextGeneration, r.inputs, r.parameters, deadline)
                .await
        })
        .await
    }

    type GenerateStreamStream = EventStream;

    async fn generate_stream(
        &self,
        request: Request<pb::GenerateStreamRequest>,
    ) -> Result<Response<Self::GenerateStreamStream>, Status> {
        let (metadata_map, _, r) = request.into_parts();
        let registry = self.registry.clone();
        self.call("GenerateStream", &metadata_map, |deadline| async move {
            let service = self.generator(&r.model, Task::TextGeneration)?;
            let params = service
                .pipeline()
                .parse_params(&Value::Object(generation_params(r.parameters.unwrap_or_default())))
                .map_err(|e| EngineError::Invalid(e.to_string()))?;
            let input = TaskInput::Text { text: r.input };
            let events = service.stream(input, params, Lane::Interactive, deadline).await?;
            let model = r.model.clone();
            let sha = service.pipeline().identity.sha256.clone();
            drop(registry);
            // gRPC never asks for the prompt's log-probabilities: no `Prompt` event comes.
            let stream =
                tokio_stream::StreamExt::filter_map(ReceiverStream::new(events), move |event| {
                    match event {
                        StreamEvent::Prompt { .. } => None,
                        StreamEvent::Token { token, text, .. } => {
                            Some(Ok(pb::GenerateStreamResponse {
                                text,
                                token,
                                finish_reason: None,
                                metadata: None,
                            }))
                        }
                        StreamEvent::Finished { reason, rest, report } => {
                            Some(Ok(pb::GenerateStreamResponse {
                                text: rest,
                                token: 0,
                                finish_reason: Some(finish_reason(reason)),
                                metadata: Some(metadata(&model, &sha, &report)),
                            }))
                        }
                        StreamEvent::Failed(error) => Some(Err(Status::from(error))),
                    }
                });
            Ok(Box::pin(stream) as EventStream)
        })
        .await
    }

    async fn tokenize(
        &self,
        request: Request<pb::TokenizeRequest>,
    ) -> Result<Response<pb::TokenizeResponse>, Status> {
        let (metadata_map, _, r) = request.into_parts();
        self.call("Tokenize", &metadata_map, |_| async move {
            self.check_inputs(r.inputs.len())?;
            let served = self.registry.get(&r.model)?;
            let (tokenizer, sha) = (served.tokenizer().clone(), served.identity().sha256.clone());
            let special = r.add_special_tokens.unwrap_or(true);
            let started = Instant::now();
            let inputs = r.inputs;
            let tokenized = self
                .pool
                .run(move || {
                    let mut results = Vec::with_capacity(inputs.len());
                    let mut count = 0;
                    for (index, text) in inputs.iter().enumerate() {
                        let encoded = tokenizer.tokenize(text, special).map_err(|e| {
                            EngineError::InvalidInput { index, message: e.to_string() }
                        })?;
                        count += encoded.len();
                        let tokens = (0..encoded.len())
                            .map(|i| pb::Token {
                                id: encoded.ids[i],
                                text: tokenizer.id_to_token(encoded.ids[i]).unwrap_or_default(),
                                start: encoded.offsets[i].0 as u32,
                                end: encoded.offsets[i].1 as u32,
                                special: encoded.special[i],
                            })
                            .collect();
                        results.push(pb::Tokenized { tokens });
                    }
                    Ok::<_, EngineError>((results, count))
                })
                .await?;
            let (results, count) = tokenized?;
            let report = CallReport {
                input_tokens: count,
                tokenize: started.elapsed(),
                ..Default::default()
            };
            Ok(pb::TokenizeResponse { results, metadata: Some(metadata(&r.model, &sha, &report)) })
        })
        .await
    }
}
