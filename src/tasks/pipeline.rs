//! One model directory serving one encoder task: tokenizer, model, pooling and the task's steps,
//! run over many inputs at once. Rows (one per input, or one per window for long QA contexts) are
//! sorted by length and cut into batches under a token budget that counts padding, so mixed
//! lengths waste little compute; every row's numbers come back as plain vectors.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::{
    Embedding, TaskError, TaskInput, TaskOutput, TaskResult, classify, embed, fill_mask,
    question_answering, rerank, text_pairs, token_classification, zero_shot,
};
use crate::{
    device::Placement,
    models::{EncoderInput, HeadKind, LoadedEncoder, ModelError, load_encoder},
    settings::Task,
    tokenize::{Encoded, TextTokenizer, TokenizeError, Truncation},
};

use crate::engine::policy::PADDING_TARGET;

/// Splits rows of ascending `widths` into consecutive batches within `budget`: at most
/// `max_batch_size` rows, at most `max_batch_tokens` computed tokens (padding counted), and a
/// batch also ends where the next (longer) row would pad it below [`PADDING_TARGET`] real
/// tokens per computed token. A single row is always a batch of its own, whatever its width.
pub fn cut_batches(widths: &[usize], budget: BatchBudget) -> Vec<std::ops::Range<usize>> {
    let mut batches = Vec::new();
    let (mut start, mut real) = (0, 0);
    for (i, &width) in widths.iter().enumerate() {
        let rows_if_added = i - start + 1;
        let computed_if_added = rows_if_added * width;
        let efficiency_if_added = (real + width) as f64 / computed_if_added.max(1) as f64;
        if i > start
            && (rows_if_added > budget.max_batch_size
                || computed_if_added > budget.max_batch_tokens
                || efficiency_if_added < PADDING_TARGET)
        {
            batches.push(start..i);
            start = i;
            real = 0;
        }
        real += width;
    }
    if start < widths.len() {
        batches.push(start..widths.len());
    }
    batches
}

/// Which model answered: the directory's name and the weights' sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelIdentity {
    pub name: String,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizeError),
    #[error("{0}")]
    Task(#[from] TaskError),
    #[error("task `{task}` needs a {needed} checkpoint; this one is {found:?} ({class})")]
    WrongHead { task: Task, needed: &'static str, found: HeadKind, class: String },
    #[error("task `{0}` is not an encoder task")]
    NotEncoderTask(Task),
    #[error(
        "task `rerank` needs a cross-encoder with one output (config.json `num_labels` 1); this \
         one has {0} labels"
    )]
    NotACrossEncoder(usize),
    #[error(
        "task `zero-shot-classification` needs an NLI model with an entailment label (a \
         config.json `id2label` name starting with \"entail\"); this one has {0:?}"
    )]
    NoEntailmentLabel(Vec<String>),
}

/// A task's parameters, parsed and checked.
#[derive(Debug, Clone)]
pub enum TaskParams {
    QuestionAnswering(question_answering::QaParams),
    FillMask(fill_mask::FillMaskParams),
    TextClassification(classify::ClassifyParams),
    TokenClassification(token_classification::NerParams),
    FeatureExtraction(embed::EmbedParams),
    Rerank(rerank::RerankParams),
    ZeroShot(zero_shot::ZeroShotParams),
}

/// Tokens the model saw: real ones and all computed (padding included).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BatchStats {
    pub batches: usize,
    pub rows: usize,
    pub real_tokens: usize,
    pub computed_tokens: usize,
    /// Wall time inside the model's forward passes (with the per-row extraction).
    pub model_seconds: f64,
}

impl BatchStats {
    /// Real tokens over computed ones: 1.0 means no padding at all.
    pub fn padding_efficiency(&self) -> f64 {
        if self.computed_tokens == 0 {
            1.0
        } else {
            self.real_tokens as f64 / self.computed_tokens as f64
        }
    }
}

/// Batch budget: rows per batch and tokens per batch, padding counted.
#[derive(Debug, Clone, Copy)]
pub struct BatchBudget {
    pub max_batch_size: usize,
    pub max_batch_tokens: usize,
}

pub struct EncoderPipeline {
    pub task: Task,
    pub identity: ModelIdentity,
    pub tokenizer: TextTokenizer,
    /// None once [`EncoderPipeline::take_model`] gave it to the engine. Behind a mutex so the
    /// tokenizer side can be shared between threads: the model is only used by one at a time.
    model: Mutex<Option<EncoderModel>>,
    labels: Vec<String>,
    /// The entailment label's id (zero-shot classification).
    entailment: Option<usize>,
    problem_type: Option<String>,
    pooling: embed::PoolingConfig,
    /// Rows of the model's word embeddings (token-id inputs must be below it).
    vocab_size: usize,
    pub budget: BatchBudget,
}

/// The model side of an encoder task: runs padded batches of rows and hands back each row's
/// numbers as plain vectors. It owns the tensors, so it lives on one thread (the engine's model
/// thread, through [`BatchModel`]); the tokenizer side stays with the callers.
pub struct EncoderModel {
    encoder: LoadedEncoder,
    task: Task,
    device: Device,
    token_types: bool,
    pad_id: u32,
    /// What this model computed, shared with whoever reports it.
    stats: Arc<Mutex<BatchStats>>,
}

/// What a row needs from the model's output.
#[derive(Debug, Clone)]
pub enum Extract {
    /// One vector per token (QA, token classification, unpooled embeddings are pooled as None).
    Tokens,
    /// The row's single output (sequence classification).
    Sequence,
    /// Softmax over the vocabulary at these positions (fill-mask).
    MaskProbabilities(Vec<i64>),
    /// Pooled (and maybe normalised) hidden states (feature extraction).
    Pooled(embed::PoolingConfig),
}

/// One row for the model: token ids and what to extract.
#[derive(Debug, Clone)]
pub struct RowRequest {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub extract: Extract,
}

/// Inputs tokenized for one call: each input's preparation (or error) and, for each row sent to
/// the model, which input and window it belongs to.
pub struct PreparedCall {
    prepared: Vec<Result<Prepared, TaskError>>,
    rows: Vec<(usize, usize)>,
}

impl PreparedCall {
    /// Each input's error, if it could not be prepared.
    pub fn errors(&self) -> impl Iterator<Item = (usize, &TaskError)> {
        self.prepared.iter().enumerate().filter_map(|(i, p)| p.as_ref().err().map(|e| (i, e)))
    }

    /// Each input's untruncated token count (0 for inputs that failed), as the per-input
    /// limit reads it: of a pair task's input, its longest pair.
    pub fn input_tokens(&self) -> Vec<usize> {
        self.prepared.iter().map(|p| p.as_ref().map_or(0, Prepared::longest_row_tokens)).collect()
    }

    /// Tokens of the whole call, every pair of a pair task counted.
    pub fn usage_tokens(&self) -> usize {
        self.prepared.iter().flatten().map(Prepared::all_rows_tokens).sum()
    }
}

/// What a prepared input asks of the model.
enum Prepared {
    Qa(question_answering::Prepared),
    FillMask(fill_mask::Prepared),
    Single(Encoded),
    /// One pair a row: (query, document) for rerank, (sequence, hypothesis) for zero-shot.
    Pairs(Vec<Encoded>),
    /// A text's windows (token classification with a stride; one without).
    Windows(Vec<Encoded>),
}

impl Prepared {
    fn rows(&self) -> Vec<&Encoded> {
        match self {
            Prepared::Qa(p) => p.windows.iter().collect(),
            Prepared::FillMask(p) => vec![&p.encoded],
            Prepared::Single(e) => vec![e],
            Prepared::Pairs(rows) | Prepared::Windows(rows) => rows.iter().collect(),
        }
    }

    fn longest_row_tokens(&self) -> usize {
        match self {
            Prepared::Pairs(pairs) => pairs.iter().map(|e| e.input_tokens).max().unwrap_or(0),
            _ => self.rows()[0].input_tokens,
        }
    }

    fn all_rows_tokens(&self) -> usize {
        match self {
            Prepared::Pairs(pairs) => pairs.iter().map(|e| e.input_tokens).sum(),
            _ => self.rows()[0].input_tokens,
        }
    }
}

/// One row's numbers: `rows x cols`, row-major.
#[derive(Debug, Clone, Default)]
pub struct RowOutput {
    cols: usize,
    values: Vec<f32>,
}

impl RowOutput {
    fn from_tensor(tensor: &Tensor) -> Result<Self, TaskError> {
        let tensor = tensor.to_kind(Kind::Float).to_device(Device::Cpu).contiguous();
        let cols = *tensor.size().last().unwrap_or(&1) as usize;
        let values = Vec::<f32>::try_from(tensor.view(-1))
            .map_err(|e| TaskError::Model(crate::engine::incident::report(&e.to_string())))?;
        Ok(Self { cols, values })
    }

    pub fn values(&self) -> &[f32] {
        &self.values
    }

    fn matrix(&self) -> Vec<Vec<f32>> {
        self.values.chunks(self.cols.max(1)).map(<[f32]>::to_vec).collect()
    }
}

impl EncoderPipeline {
    pub fn load(
        dir: &Path,
        task: Task,
        placement: &Placement,
        budget: BatchBudget,
    ) -> Result<Self, PipelineError> {
        let encoder = load_encoder(dir, placement)?;
        let positions = encoder.config.max_position_embeddings.map(|n| {
            // RoBERTa's positions start after padding_idx, so two rows are never used.
            let offset = if encoder.config.model_type == "roberta" {
                encoder.config.pad_token_id.unwrap_or(1) + 1
            } else {
                0
            };
            (n - offset).max(0) as usize
        });
        let pooling = embed::PoolingConfig::read(dir)?;
        let cap = match (positions, pooling.max_seq_length) {
            (Some(p), Some(s)) => Some(p.min(s)),
            (p, s) => p.or(s),
        };
        let tokenizer = TextTokenizer::load(dir, cap)?;
        let vocab_size = encoder.config.vocab_size.unwrap_or_else(|| tokenizer.vocab_size());
        let head = encoder.model.head().kind();
        let needed = match task {
            Task::QuestionAnswering => Some((HeadKind::QuestionAnswering, "*ForQuestionAnswering")),
            Task::FillMask => Some((HeadKind::MaskedLm, "*ForMaskedLM")),
            Task::TextClassification | Task::Rerank | Task::ZeroShotClassification => {
                Some((HeadKind::SequenceClassification, "*ForSequenceClassification"))
            }
            Task::TokenClassification => {
                Some((HeadKind::TokenClassification, "*ForTokenClassification"))
            }
            Task::FeatureExtraction => None,
            Task::Summarization | Task::Translation | Task::TextGeneration => {
                return Err(PipelineError::NotEncoderTask(task));
            }
        };
        if let Some((kind, name)) = needed
            && kind != head
        {
            let class = encoder.config.architectures.first().cloned().unwrap_or_default();
            return Err(PipelineError::WrongHead { task, needed: name, found: head, class });
        }
        let entailment = zero_shot::entailment_id(&encoder.labels);
        match task {
            Task::Rerank if encoder.labels.len() != 1 => {
                return Err(PipelineError::NotACrossEncoder(encoder.labels.len()));
            }
            Task::ZeroShotClassification if entailment.is_none() => {
                return Err(PipelineError::NoEntailmentLabel(encoder.labels.clone()));
            }
            _ => {}
        }
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dir.display().to_string());
        let token_types =
            matches!(encoder.config.model_type.as_str(), "bert" | "albert" | "electra");
        Ok(Self {
            task,
            identity: ModelIdentity { name, sha256: encoder.sha256.clone() },
            labels: encoder.labels.clone(),
            entailment,
            problem_type: encoder.config.problem_type.clone(),
            model: Mutex::new(Some(EncoderModel {
                encoder,
                task,
                device: placement.device,
                token_types,
                pad_id: tokenizer.pad_id,
                stats: Arc::default(),
            })),
            tokenizer,
            pooling,
            vocab_size,
            budget,
        })
    }

    /// Hands the model side to the engine's model thread; the pipeline keeps tokenizing and
    /// post-processing, and runs rows through [`EncoderPipeline::run_rows`].
    pub fn take_model(&mut self) -> Option<EncoderModel> {
        self.model.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }

    /// Parses a task's parameters from a JSON object; unknown names are errors.
    pub fn parse_params(&self, params: &serde_json::Value) -> Result<TaskParams, TaskError> {
        let params = if params.is_null() { serde_json::json!({}) } else { params.clone() };
        Ok(match self.task {
            Task::QuestionAnswering => {
                TaskParams::QuestionAnswering(super::params::parse(&params)?)
            }
            Task::FillMask => TaskParams::FillMask(super::params::parse(&params)?),
            Task::TextClassification => {
                TaskParams::TextClassification(super::params::parse(&params)?)
            }
            Task::TokenClassification => {
                TaskParams::TokenClassification(super::params::parse(&params)?)
            }
            Task::FeatureExtraction => {
                TaskParams::FeatureExtraction(super::params::parse(&params)?)
            }
            Task::Rerank => TaskParams::Rerank(super::params::parse(&params)?),
            Task::ZeroShotClassification => TaskParams::ZeroShot(super::params::parse(&params)?),
            Task::Summarization | Task::Translation | Task::TextGeneration => {
                return Err(TaskError::Unsupported(format!("task {}", self.task)));
            }
        })
    }

    /// Answers every input; each gets its own result or error, in input order.
    pub fn run(&self, items: &[(TaskInput, TaskParams)]) -> Vec<Result<TaskResult, TaskError>> {
        let model = self.model.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.run_rows(items, |requests| match model.as_ref() {
            Some(model) => {
                let widths: Vec<usize> = requests.iter().map(|r| r.ids.len()).collect();
                cut_batches(&widths, self.budget)
                    .into_iter()
                    .flat_map(|range| model.forward_rows(&requests[range]))
                    .collect()
            }
            None => requests
                .iter()
                .map(|_| Err(TaskError::Model("the model was handed to the engine".into())))
                .collect(),
        })
    }

    /// Answers every input, in order, with `answer` running the rows (length-sorted) on a model:
    /// directly, or through the engine's batcher. Each input gets its own result or error.
    pub fn run_rows(
        &self,
        items: &[(TaskInput, TaskParams)],
        answer: impl FnOnce(Vec<RowRequest>) -> Vec<Result<RowOutput, TaskError>>,
    ) -> Vec<Result<TaskResult, TaskError>> {
        let (call, requests) = self.prepare_rows(items);
        self.finish_rows(items, call, answer(requests))
    }

    /// Tokenizes every input into the rows the model must run, length-sorted; an input that
    /// cannot be prepared keeps its error in the returned [`PreparedCall`].
    pub fn prepare_rows(
        &self,
        items: &[(TaskInput, TaskParams)],
    ) -> (PreparedCall, Vec<RowRequest>) {
        let prepared: Vec<Result<Prepared, TaskError>> =
            items.iter().map(|(input, params)| self.prepare(input, params)).collect();
        let mut rows: Vec<(usize, usize, usize)> = Vec::new();
        for (item, prepared) in prepared.iter().enumerate() {
            if let Ok(prepared) = prepared {
                for (window, encoded) in prepared.rows().into_iter().enumerate() {
                    rows.push((item, window, encoded.len()));
                }
            }
        }
        rows.sort_by_key(|&(_, _, len)| len);
        let requests: Vec<RowRequest> = rows
            .iter()
            .map(|&(item, window, _)| {
                let encoded = prepared[item].as_ref().map(|p| p.rows()[window]).ok();
                self.row_request(&items[item].1, &prepared[item], encoded.expect("prepared"))
            })
            .collect();
        let rows = rows.into_iter().map(|(item, window, _)| (item, window)).collect();
        (PreparedCall { prepared, rows }, requests)
    }

    /// Turns each input's row outputs (in the order [`EncoderPipeline::prepare_rows`] gave the
    /// rows) into its answer.
    pub fn finish_rows(
        &self,
        items: &[(TaskInput, TaskParams)],
        call: PreparedCall,
        answers: Vec<Result<RowOutput, TaskError>>,
    ) -> Vec<Result<TaskResult, TaskError>> {
        let PreparedCall { prepared, rows } = call;
        let mut outputs: Vec<Vec<Result<RowOutput, TaskError>>> = prepared
            .iter()
            .map(|p| p.as_ref().map_or(0, |p| p.rows().len()))
            .map(|n| vec![Ok(RowOutput::default()); n])
            .collect();
        for ((item, window), result) in rows.iter().zip(answers) {
            outputs[*item][*window] = result;
        }
        prepared
            .into_iter()
            .zip(outputs)
            .zip(items)
            .map(|((prepared, rows), (input, params))| {
                let rows: Vec<RowOutput> = rows.into_iter().collect::<Result<_, _>>()?;
                self.finish(input, params, &prepared?, rows)
            })
            .collect()
    }

    /// What the model side has computed so far (batches, real and padded tokens).
    pub fn stats(&self) -> Option<Arc<Mutex<BatchStats>>> {
        let model = self.model.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        model.as_ref().map(|m| m.stats.clone())
    }

    fn prepare(&self, input: &TaskInput, params: &TaskParams) -> Result<Prepared, TaskError> {
        let tokenizer = &self.tokenizer;
        // An empty input is refused by the name of its field.
        match input {
            TaskInput::Text { text } => {
                text_pairs::non_empty("text", text)?;
            }
            TaskInput::QuestionContext { question, context } => {
                text_pairs::non_empty("question", question)?;
                text_pairs::non_empty("context", context)?;
            }
            TaskInput::Query { query, .. } => {
                text_pairs::non_empty("query", query)?;
            }
            TaskInput::TextPair { .. } | TaskInput::TokenIds { .. } => {}
        }
        match (params, input) {
            (
                TaskParams::QuestionAnswering(p),
                TaskInput::QuestionContext { question, context },
            ) => Ok(Prepared::Qa(question_answering::prepare(tokenizer, question, context, p)?)),
            (TaskParams::FillMask(p), TaskInput::Text { text }) => {
                Ok(Prepared::FillMask(fill_mask::prepare(tokenizer, text, p, self.vocab_size)?))
            }
            (TaskParams::TextClassification(p), TaskInput::Text { text }) => {
                Ok(Prepared::Single(tokenizer.encode(text, p.truncation.single())?))
            }
            (TaskParams::TextClassification(p), TaskInput::TextPair { text, text_pair }) => {
                Ok(Prepared::Single(text_pairs::encode_pair(
                    tokenizer,
                    ("text", text),
                    ("text_pair", text_pair),
                    p.truncation.pair(Truncation::OnlySecond),
                )?))
            }
            (TaskParams::TokenClassification(p), TaskInput::Text { text }) => {
                Ok(Prepared::Windows(token_classification::prepare(tokenizer, text, p)?))
            }
            (TaskParams::FeatureExtraction(p), TaskInput::Text { text }) => {
                Ok(Prepared::Single(tokenizer.encode(text, p.truncate)?))
            }
            (TaskParams::FeatureExtraction(p), TaskInput::TokenIds { token_ids }) => {
                if token_ids.is_empty() {
                    return Err(TaskError::Invalid("`token_ids` is empty".into()));
                }
                Ok(Prepared::Single(tokenizer.encode_ids(
                    token_ids,
                    p.truncate,
                    self.vocab_size,
                )?))
            }
            (TaskParams::Rerank(p), TaskInput::Query { query, documents }) => {
                if documents.is_empty() {
                    return Err(TaskError::Invalid("`documents` is empty".into()));
                }
                let truncation = p.truncation.pair(Truncation::OnlySecond);
                let pairs = documents
                    .iter()
                    .enumerate()
                    .map(|(i, document)| {
                        let field = format!("documents[{i}]");
                        text_pairs::encode_pair(
                            tokenizer,
                            ("query", query),
                            (&field, document),
                            truncation,
                        )
                        .map_err(|e| named(&field, e))
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Prepared::Pairs(pairs))
            }
            (TaskParams::ZeroShot(p), TaskInput::Text { text }) => {
                let labels = p.labels()?;
                let pairs = p
                    .hypotheses(&labels)?
                    .iter()
                    .map(|hypothesis| {
                        text_pairs::encode_pair(
                            tokenizer,
                            ("text", text),
                            ("hypothesis_template", hypothesis),
                            Truncation::OnlyFirst,
                        )
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Prepared::Pairs(pairs))
            }
            (_, input) => Err(TaskError::Invalid(wrong_input(self.task, input))),
        }
    }

    /// What the model must extract for one row of a prepared input.
    fn row_request(
        &self,
        params: &TaskParams,
        prepared: &Result<Prepared, TaskError>,
        encoded: &Encoded,
    ) -> RowRequest {
        let extract = match (self.task, params, prepared) {
            (Task::FillMask, _, Ok(Prepared::FillMask(p))) => {
                Extract::MaskProbabilities(p.mask_positions.iter().map(|&i| i as i64).collect())
            }
            (Task::TextClassification | Task::Rerank | Task::ZeroShotClassification, _, _) => {
                Extract::Sequence
            }
            (Task::FeatureExtraction, TaskParams::FeatureExtraction(params), _) => {
                Extract::Pooled(self.pooling.with_params(params))
            }
            _ => Extract::Tokens,
        };
        RowRequest { ids: encoded.ids.clone(), type_ids: encoded.type_ids.clone(), extract }
    }

    fn finish(
        &self,
        input: &TaskInput,
        params: &TaskParams,
        prepared: &Prepared,
        rows: Vec<RowOutput>,
    ) -> Result<TaskResult, TaskError> {
        let tokenizer = &self.tokenizer;
        let input_tokens = prepared.all_rows_tokens();
        let truncated = prepared.rows().iter().any(|row| row.truncated);
        let output = match (params, prepared, input) {
            (
                TaskParams::QuestionAnswering(p),
                Prepared::Qa(qa),
                TaskInput::QuestionContext { context, .. },
            ) => {
                let logits: Vec<(Vec<f32>, Vec<f32>)> = rows
                    .iter()
                    .map(|row| {
                        let m = row.matrix();
                        (m.iter().map(|r| r[0]).collect(), m.iter().map(|r| r[1]).collect())
                    })
                    .collect();
                TaskOutput::Answers(question_answering::finish(context, qa, &logits, p)?)
            }
            (TaskParams::FillMask(p), Prepared::FillMask(fm), _) => {
                TaskOutput::Predictions(fill_mask::finish(tokenizer, fm, &rows[0].matrix(), p)?)
            }
            (TaskParams::TextClassification(p), _, _) => {
                let function = p.function_to_apply.unwrap_or_else(|| {
                    classify::default_function(self.problem_type.as_deref(), self.labels.len())
                });
                TaskOutput::Labels(classify::finish(
                    &rows[0].values,
                    &self.labels,
                    function,
                    p.top_k,
                )?)
            }
            (
                TaskParams::TokenClassification(p),
                Prepared::Windows(windows),
                TaskInput::Text { text },
            ) => TaskOutput::Entities(token_classification::finish(
                tokenizer,
                text,
                windows,
                rows.iter().map(RowOutput::matrix).collect(),
                &self.labels,
                p,
            )?),
            (TaskParams::Rerank(p), _, TaskInput::Query { documents, .. }) => {
                let logits: Vec<f32> = rows.iter().map(|row| row.values[0]).collect();
                TaskOutput::Ranking(rerank::finish(documents, &logits, p)?)
            }
            (TaskParams::ZeroShot(p), _, TaskInput::Text { text }) => {
                let logits: Vec<&[f32]> = rows.iter().map(|row| row.values.as_slice()).collect();
                let entailment = self.entailment.expect("checked at load");
                let labels = p.labels()?;
                TaskOutput::ZeroShot(zero_shot::finish(
                    text,
                    &labels,
                    &logits,
                    entailment,
                    p.multi_label,
                ))
            }
            (TaskParams::FeatureExtraction(p), _, _) => {
                let pooled = self.pooling.with_params(p).pools();
                TaskOutput::Embedding(if pooled {
                    Embedding::Pooled(rows[0].values.clone())
                } else {
                    Embedding::PerToken(rows[0].matrix())
                })
            }
            _ => unreachable!("prepare matched params to input"),
        };
        Ok(TaskResult { output, input_tokens, truncated })
    }
}

/// Names the document a pair error came from (an empty one names itself already).
fn named(field: &str, error: TaskError) -> TaskError {
    match error {
        TaskError::Invalid(message) if message.contains(field) => TaskError::Invalid(message),
        other => TaskError::Invalid(format!("{field}: {other}")),
    }
}

/// Why an input of the wrong shape cannot be answered by `task`, naming the fields it takes.
fn wrong_input(task: Task, input: &TaskInput) -> String {
    let takes = match task {
        Task::QuestionAnswering => "`question` and `context`",
        Task::TextClassification => "`text`, or `text` and `text_pair`",
        Task::Rerank => "`query` and `documents`",
        _ => "`text`",
    };
    match input {
        TaskInput::TokenIds { .. } => format!(
            "`token_ids`: {task} takes {takes}; only feature-extraction and text-generation take \
             token ids"
        ),
        TaskInput::TextPair { .. } => format!(
            "`text_pair`: {task} takes {takes}; only text-classification (a pair classifier such \
             as a cross-encoder or an NLI model) takes text pairs"
        ),
        _ => format!("{task} needs {takes}"),
    }
}

impl EncoderModel {
    /// Runs `rows` as one right-padded batch; each row gets its own numbers or error.
    pub fn forward_rows(&self, rows: &[RowRequest]) -> Vec<Result<RowOutput, TaskError>> {
        let started = std::time::Instant::now();
        let outputs = self.forward_rows_untimed(rows);
        let mut stats = self.stats.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        stats.model_seconds += started.elapsed().as_secs_f64();
        outputs
    }

    fn forward_rows_untimed(&self, rows: &[RowRequest]) -> Vec<Result<RowOutput, TaskError>> {
        {
            let width = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
            let mut stats = self.stats.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            stats.batches += 1;
            stats.rows += rows.len();
            stats.real_tokens += rows.iter().map(|r| r.ids.len()).sum::<usize>();
            stats.computed_tokens += width * rows.len();
        }
        let ids: Vec<&[u32]> = rows.iter().map(|r| r.ids.as_slice()).collect();
        let types: Vec<&[u32]> = rows.iter().map(|r| r.type_ids.as_slice()).collect();
        let input = EncoderInput::from_rows(
            &ids,
            self.token_types.then_some(types.as_slice()),
            self.pad_id,
            self.device,
        );
        let model = &self.encoder.model;
        if self.task == Task::FillMask {
            return self.mask_probabilities(rows, &model.encode(&input));
        }
        // Embeddings pool per row (rows of one batch may ask for different pooling).
        let output = match self.task {
            Task::FeatureExtraction => model.encode(&input),
            _ => model.forward(&input),
        };
        rows.iter()
            .enumerate()
            .map(|(b, request)| {
                let row = output.get(b as i64);
                let len = request.ids.len() as i64;
                let tensor = match &request.extract {
                    Extract::MaskProbabilities(positions) => row
                        .index_select(0, &Tensor::from_slice(positions).to_device(self.device))
                        .softmax(-1, Kind::Float),
                    Extract::Sequence => row,
                    Extract::Pooled(pooling) => {
                        let hidden = row.narrow(0, 0, len).unsqueeze(0);
                        let mask = Tensor::ones([1, len], (Kind::Int64, self.device));
                        pooling.apply(&hidden, &mask).squeeze_dim(0)
                    }
                    Extract::Tokens => row.narrow(0, 0, len),
                };
                RowOutput::from_tensor(&tensor)
            })
            .collect()
    }

    /// Fill-mask: the vocabulary head runs on the masked positions only, not on every token
    /// (for BERT-base its matmul is half the encoder's work per token). `hidden` is `[batch,
    /// seq, hidden]`; each row gets the probabilities at its mask positions, in order.
    fn mask_probabilities(
        &self,
        rows: &[RowRequest],
        hidden: &Tensor,
    ) -> Vec<Result<RowOutput, TaskError>> {
        let _no_grad = tch::no_grad_guard();
        let (width, size) = (hidden.size()[1], hidden.size()[2]);
        let positions: Vec<&[i64]> = rows
            .iter()
            .map(|r| match &r.extract {
                Extract::MaskProbabilities(positions) => positions.as_slice(),
                _ => &[],
            })
            .collect();
        let flat: Vec<i64> = positions
            .iter()
            .enumerate()
            .flat_map(|(b, row)| row.iter().map(move |&p| b as i64 * width + p))
            .collect();
        let index = Tensor::from_slice(&flat).to_device(self.device);
        let selected = hidden.reshape([-1, size]).index_select(0, &index);
        let probabilities = self.encoder.model.head().forward(&selected).softmax(-1, Kind::Float);
        let mut start = 0;
        positions
            .iter()
            .map(|row| {
                let tensor = probabilities.narrow(0, start, row.len() as i64);
                start += row.len() as i64;
                RowOutput::from_tensor(&tensor)
            })
            .collect()
    }
}

impl crate::engine::batcher::BatchModel for EncoderModel {
    type Input = RowRequest;
    type Output = RowOutput;

    fn run(&mut self, batch: &[RowRequest]) -> Vec<Result<RowOutput, String>> {
        self.forward_rows(batch).into_iter().map(|r| r.map_err(|e| e.to_string())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: BatchBudget = BatchBudget { max_batch_size: 4, max_batch_tokens: 100 };

    #[test]
    fn batches_respect_size_and_token_budgets() {
        assert_eq!(cut_batches(&[5; 10], BUDGET), vec![0..4, 4..8, 8..10]);
        assert_eq!(cut_batches(&[30, 30, 30, 30], BUDGET), vec![0..3, 3..4]);
        assert_eq!(cut_batches(&[500], BUDGET), vec![0..1], "an oversized row still runs, alone");
        assert!(cut_batches(&[], BUDGET).is_empty());
    }

    #[test]
    fn a_much_longer_row_starts_a_new_batch_instead_of_padding_the_others() {
        // 10 + 10 + 20 would be 40 real tokens in 60 computed: below the target.
        assert_eq!(cut_batches(&[10, 10, 20, 21], BUDGET), vec![0..2, 2..4]);
        // 10, 10, 11: 31 real in 33 computed stays together.
        assert_eq!(cut_batches(&[10, 10, 11], BUDGET), vec![0..3]);
    }
}
