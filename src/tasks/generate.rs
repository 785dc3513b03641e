//! `summarization`, `translation` and `text-generation`, as transformers' pipelines of those
//! names drive `generate` (4.57): the model's generation defaults, then `task_specific_params`
//! (with T5's "summarize: " prefix, or the translation direction's, see [`super::translation`]),
//! then the call's parameters; outputs decoded without special tokens.
//! Long documents are truncated by default or, with `long_document=chunked`, summarized in
//! overlapping chunks whose summaries are summarized again.

use std::{path::Path, sync::Arc};

use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    TaskError, TaskInput,
    chat_template::{ChatTemplate, ChatTemplateError},
    pipeline::ModelIdentity,
    translation::{Resolved, TranslationLoadError, Translator},
};
use crate::{
    device::Placement,
    engine::scheduler::StopFn,
    generation::{GenerateConfig, GenerateOverrides, PromptLogprobs, TokenIds, TokenLogprob},
    models::{
        ModelError,
        generative::{LoadedGenerator, load_generator},
    },
    settings::Task,
    tokenize::TextTokenizer,
};

/// Parameters `lote run` accepts besides transformers' generation settings.
const OWN_PARAMS: &[&str] = &[
    "stop",
    "return_full_text",
    "truncation",
    "long_document",
    "chunk_tokens",
    "chunk_overlap",
    "src_lang",
    "tgt_lang",
];

/// transformers' generation settings a call may set.
const GENERATE_PARAMS: &[&str] = &[
    "max_length",
    "max_new_tokens",
    "min_length",
    "min_new_tokens",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "num_beams",
    "num_return_sequences",
    "length_penalty",
    "early_stopping",
    "no_repeat_ngram_size",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "bad_words_ids",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "decoder_start_token_id",
    "eos_token_id",
    "pad_token_id",
    "seed",
];

/// How a document longer than the model's input is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongDocument {
    Truncate,
    Chunked { tokens: usize, overlap: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    pub generate: GenerateConfig,
    pub stop: Vec<String>,
    pub return_full_text: bool,
    pub truncation: bool,
    pub long_document: LongDocument,
    /// The call's translation direction (translation only).
    pub translation: Option<Resolved>,
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Eos,
    Length,
    StopString,
}

/// One input's answer with the counters every task reports.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationResult {
    pub generation: Generation,
    pub input_tokens: usize,
    pub truncated: bool,
}

/// The sequences generated for one input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generation {
    pub texts: Vec<String>,
    pub output_tokens: Vec<usize>,
    pub finish_reasons: Vec<FinishReason>,
    /// Per sequence, each of its `output_tokens`' log-probabilities, when asked for
    /// (`GenerateConfig::logprobs`).
    #[serde(skip)]
    pub logprobs: Option<Vec<Vec<TokenLogprob>>>,
    /// Each prompt token's log-probability after the first, when asked for
    /// (`GenerateConfig::prompt_logprobs`).
    #[serde(skip)]
    pub prompt_logprobs: Option<PromptLogprobs>,
}

pub struct GenerationPipeline {
    pub task: Task,
    pub identity: ModelIdentity,
    pub tokenizer: TextTokenizer,
    /// None once [`GenerationPipeline::take_generator`] gave it to the engine's scheduler; a
    /// mutex so the tokenizer side can be shared between threads.
    generator: std::sync::Mutex<Option<LoadedGenerator>>,
    /// The model's defaults with the task's settings applied.
    defaults: GenerateConfig,
    prefix: String,
    /// How the model is told what to translate (translation only).
    translator: Option<Translator>,
    /// Positions the model can attend to (its context length).
    pub max_positions: usize,
    /// Logits per step: every token-id parameter must be below it.
    pub vocab_size: usize,
    pub encoder_decoder: bool,
    /// The model's chat template (text-generation), None when it has none; a template that
    /// does not compile is kept as its error, for chat calls to report.
    chat_template: Result<Option<ChatTemplate>, ChatTemplateError>,
}

/// What transformers' summarization and translation pipelines (Text2TextGenerationPipeline's
/// `_default_generation_config`: 4 beams, 256 new tokens) do to the model's settings
/// (pipelines/base.py, 4.57): a pipeline default that differs from transformers' global default
/// wins over the model's value, so every call starts from 4 beams, and the 256 new tokens give
/// way to a `max_length` the model sets. The task's own settings and the call's come after.
fn text2text_pipeline_defaults(config: &mut GenerateConfig) {
    config.num_beams = 4;
    config.max_new_tokens =
        (config.max_length == GenerateConfig::default().max_length).then_some(256);
}

/// Every token id a call's parameters name, checked against the model's `vocabulary` before
/// anything runs: `bad_words_ids[0][0]: 1000000000 is not a token id of this model
/// (vocabulary 400)`.
fn check_token_ids(overrides: &GenerateOverrides, vocabulary: usize) -> Result<(), TaskError> {
    let mut named: Vec<(String, i64)> = Vec::new();
    let mut one = |name: &str, id: Option<i64>| named.extend(id.map(|id| (name.to_string(), id)));
    one("decoder_start_token_id", overrides.decoder_start_token_id);
    one("pad_token_id", overrides.pad_token_id);
    one("forced_bos_token_id", overrides.forced_bos_token_id.flatten());
    let mut list = |name: &str, ids: Option<&TokenIds>| match ids {
        Some(TokenIds::One(id)) => named.push((name.to_string(), *id)),
        Some(TokenIds::Many(ids)) => {
            named.extend(ids.iter().enumerate().map(|(i, id)| (format!("{name}[{i}]"), *id)))
        }
        None => {}
    };
    list("eos_token_id", overrides.eos_token_id.as_ref());
    list("forced_eos_token_id", overrides.forced_eos_token_id.as_ref().and_then(Option::as_ref));
    for (i, word) in overrides.bad_words_ids.iter().flatten().enumerate() {
        if word.is_empty() {
            return Err(TaskError::Invalid(format!("bad params: `bad_words_ids[{i}]` is empty")));
        }
        named.extend(
            word.iter().enumerate().map(|(j, id)| (format!("bad_words_ids[{i}][{j}]"), *id)),
        );
    }
    match named.into_iter().find(|(_, id)| *id < 0 || *id as usize >= vocabulary) {
        Some((name, id)) => Err(TaskError::Invalid(format!(
            "bad params: `{name}`: {id} is not a token id of this model (vocabulary {vocabulary})"
        ))),
        None => Ok(()),
    }
}

/// A prompt ready for the scheduler: its ids, untruncated length, and whether it was cut.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub ids: Vec<u32>,
    pub input_tokens: usize,
    pub truncated: bool,
}

/// How one input is generated: one prompt, or (chunked summaries) the chunks' prompts first.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Single(Prompt),
    Chunks { prompts: Vec<Vec<u32>>, input_tokens: usize },
}

#[derive(Debug, thiserror::Error)]
pub enum GenerationLoadError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenize::TokenizeError),
    #[error("task `{0}` is not a generation task")]
    NotGenerationTask(Task),
    #[error("task `{task}` needs {needed}; this is a `{model_type}` model")]
    WrongModel { task: Task, needed: &'static str, model_type: String },
    #[error(transparent)]
    Translation(#[from] TranslationLoadError),
}

impl GenerationPipeline {
    pub fn load(
        dir: &Path,
        task: Task,
        placement: &Placement,
    ) -> Result<Self, GenerationLoadError> {
        let generator = load_generator(dir, placement)?;
        let model_type = generator.config["model_type"].as_str().unwrap_or_default().to_string();
        let encoder_decoder = generator.is_encoder_decoder();
        let (task_key, fits, needed) = match task {
            Task::Summarization => {
                ("summarization", encoder_decoder, "an encoder-decoder model (BART, mBART, T5)")
            }
            Task::Translation => {
                ("translation", encoder_decoder, "an encoder-decoder model (T5, mBART)")
            }
            Task::TextGeneration => {
                ("text-generation", !encoder_decoder, "a decoder-only model (GPT-2)")
            }
            other => return Err(GenerationLoadError::NotGenerationTask(other)),
        };
        if !fits {
            return Err(GenerationLoadError::WrongModel { task, needed, model_type });
        }
        let (task_overrides, prefix) = generator.task_params(task_key)?;
        let mut defaults = generator.generation.clone();
        if encoder_decoder {
            text2text_pipeline_defaults(&mut defaults);
        }
        defaults.apply(&task_overrides).map_err(|e| ModelError::Config(e.to_string()))?;
        let tokenizer = TextTokenizer::load(dir, Some(generator.max_positions))?;
        let vocab_size = generator.config["vocab_size"]
            .as_u64()
            .map_or_else(|| tokenizer.vocab_size(), |n| n as usize);
        let translator = (task == Task::Translation)
            .then(|| Translator::load(dir, &generator.config, &tokenizer))
            .transpose()?;
        let chat_template = match task {
            Task::TextGeneration => ChatTemplate::load(dir),
            _ => Ok(None),
        };
        if let Err(error) = &chat_template {
            tracing::warn!(model = %dir.display(), %error, "chat calls will be refused");
        }
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dir.display().to_string());
        Ok(Self {
            task,
            identity: ModelIdentity { name, sha256: generator.sha256.clone() },
            tokenizer,
            defaults,
            prefix: prefix.unwrap_or_default(),
            translator,
            max_positions: generator.max_positions,
            vocab_size,
            encoder_decoder,
            chat_template,
            generator: std::sync::Mutex::new(Some(generator)),
        })
    }

    /// The chat prompt for `messages` (a JSON list of `{role, content}`), rendered with the
    /// model's chat template and the assistant's turn opened, as transformers'
    /// `apply_chat_template(messages, add_generation_prompt=True)`.
    pub fn chat_prompt(&self, messages: &Value) -> Result<String, TaskError> {
        match &self.chat_template {
            Ok(Some(template)) => template.render(messages, true).map_err(|e| match e {
                ChatTemplateError::Refused(_) => TaskError::Invalid(e.to_string()),
                other => TaskError::Unsupported(other.to_string()),
            }),
            Ok(None) => Err(TaskError::Unsupported(
                "the model has no chat template (no chat_template.jinja, no `chat_template` in \
                 tokenizer_config.json): send a plain prompt to /v1/completions"
                    .into(),
            )),
            Err(error) => Err(TaskError::Unsupported(error.to_string())),
        }
    }

    /// Hands the model to the engine's scheduler; the pipeline keeps tokenizing and decoding.
    pub fn take_generator(&mut self) -> Option<LoadedGenerator> {
        self.generator.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }

    /// Parses a call's parameters; unknown names and wrong types are errors.
    pub fn parse_params(&self, params: &Value) -> Result<GenerationParams, TaskError> {
        let invalid = |m: String| TaskError::Invalid(m);
        let mut map: Map<String, Value> = match params {
            Value::Null => Map::new(),
            Value::Object(map) => map.clone(),
            _ => return Err(invalid("params must be an object".into())),
        };
        if let Some(unknown) = map
            .keys()
            .find(|k| !OWN_PARAMS.contains(&k.as_str()) && !GENERATE_PARAMS.contains(&k.as_str()))
        {
            return Err(invalid(format!("bad params: unknown parameter `{unknown}`")));
        }
        let stop = match map.remove("stop") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s],
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) if !s.is_empty() => Ok(s),
                    other => Err(invalid(format!(
                        "bad params: stop strings must be non-empty strings, not {other}"
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(invalid(format!(
                    "bad params: `stop` must be a string or a list of strings, not {other}"
                )));
            }
        };
        let flag =
            |map: &mut Map<String, Value>, key: &str, default: bool| -> Result<bool, TaskError> {
                match map.remove(key) {
                    None | Some(Value::Null) => Ok(default),
                    Some(Value::Bool(b)) => Ok(b),
                    Some(other) => Err(invalid(format!(
                        "bad params: `{key}` must be true or false, not {other}"
                    ))),
                }
            };
        let return_full_text = flag(&mut map, "return_full_text", true)?;
        let truncation = flag(&mut map, "truncation", self.task != Task::TextGeneration)?;
        let translation = self.translation_of(&mut map)?;
        let count =
            |map: &mut Map<String, Value>, key: &str, default: usize| -> Result<usize, TaskError> {
                match map.remove(key) {
                    None | Some(Value::Null) => Ok(default),
                    Some(value) => value.as_u64().map(|n| n as usize).ok_or_else(|| {
                        invalid(format!("bad params: `{key}` must be a non-negative integer"))
                    }),
                }
            };
        let limit = self.tokenizer.max_length;
        let chunk_tokens = count(&mut map, "chunk_tokens", limit)?;
        let chunk_overlap = count(&mut map, "chunk_overlap", chunk_tokens / 8)?;
        let long_document = match map.remove("long_document") {
            None | Some(Value::Null) => LongDocument::Truncate,
            Some(Value::String(s)) if s == "truncate" => LongDocument::Truncate,
            Some(Value::String(s)) if s == "chunked" => {
                if chunk_tokens < 8 || chunk_tokens > limit || chunk_overlap >= chunk_tokens {
                    return Err(invalid(format!(
                        "bad params: chunk_tokens must be in [8, {limit}] and chunk_overlap below it"
                    )));
                }
                LongDocument::Chunked { tokens: chunk_tokens, overlap: chunk_overlap }
            }
            Some(other) => {
                return Err(invalid(format!(
                    "bad params: long_document must be \"truncate\" or \"chunked\", not {other}"
                )));
            }
        };
        let overrides: GenerateOverrides = super::params::parse(&Value::Object(map))?;
        check_token_ids(&overrides, self.vocab_size)?;
        let mut generate = self.defaults.clone();
        if let Some(direction) = translation.as_ref().and_then(|t| t.overrides.as_ref()) {
            generate.apply(direction).map_err(|e| invalid(e.to_string()))?;
        }
        generate.apply(&overrides).map_err(|e| invalid(e.to_string()))?;
        if let Some(code) = translation.as_ref().and_then(|t| t.target) {
            // The target language's code is the first token generated (mBART).
            generate.forced_bos_token_id = Some(code.into());
        }
        generate.validate(self.max_positions).map_err(|e| invalid(e.to_string()))?;
        Ok(GenerationParams {
            generate,
            stop,
            return_full_text,
            truncation,
            long_document,
            translation,
        })
    }

    /// The call's `src_lang` and `tgt_lang`, resolved against the model (translation), or an
    /// error when another task is given them.
    fn translation_of(&self, map: &mut Map<String, Value>) -> Result<Option<Resolved>, TaskError> {
        let mut language = |key: &str| match map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(code)) => Ok(Some(code)),
            Some(other) => Err(TaskError::Invalid(format!(
                "bad params: `{key}` must be a string, not {other}"
            ))),
        };
        let (src, tgt) = (language("src_lang")?, language("tgt_lang")?);
        match &self.translator {
            Some(translator) => translator.resolve(src.as_deref(), tgt.as_deref()).map(Some),
            None if src.is_some() || tgt.is_some() => Err(TaskError::Invalid(format!(
                "bad params: `{}` is for task translation; this model serves {}",
                if src.is_some() { "src_lang" } else { "tgt_lang" },
                self.task
            ))),
            None => Ok(None),
        }
    }

    /// How `input` is generated: its prompt, or its chunks' prompts (chunked summaries).
    pub fn plan(&self, input: &TaskInput, params: &GenerationParams) -> Result<Plan, TaskError> {
        if let (Task::TextGeneration, TaskInput::TokenIds { token_ids }) = (self.task, input) {
            if token_ids.is_empty() {
                return Err(TaskError::Invalid("`token_ids` is empty".into()));
            }
            crate::tokenize::check_ids(token_ids, self.vocab_size)?;
            let (ids, input_tokens, truncated) = self.fit_to_context(token_ids.clone(), params)?;
            return Ok(Plan::Single(Prompt { ids, input_tokens, truncated }));
        }
        let TaskInput::Text { text } = input else {
            return Err(TaskError::Invalid(format!("{} needs `text`", self.task)));
        };
        super::text_pairs::non_empty("text", text)?;
        if let (Task::Summarization, LongDocument::Chunked { tokens, overlap }) =
            (self.task, params.long_document)
            && let Some(chunks) = self.chunk_prompts(text, tokens, overlap)?
        {
            return Ok(chunks);
        }
        let (ids, input_tokens, truncated) = self.prompt_ids(text, params)?;
        Ok(Plan::Single(Prompt { ids, input_tokens, truncated }))
    }

    /// The prompt that summarizes the chunks' summaries.
    pub fn final_prompt(&self, summaries: &[String]) -> Result<Vec<u32>, TaskError> {
        let joined = summaries.iter().map(|s| s.trim()).collect::<Vec<_>>().join(" ");
        Ok(self.tokenizer.encode(&format!("{}{joined}", self.prefix), true)?.ids)
    }

    /// The generation settings for a prompt of `prompt_len` tokens, and the total length
    /// (start sequence included) at which it stops.
    pub fn request_config(
        &self,
        prompt_len: usize,
        params: &GenerationParams,
    ) -> Result<(GenerateConfig, usize), TaskError> {
        let config = params.generate.clone();
        let start_len = if self.encoder_decoder {
            if config.decoder_start_token_id.is_none() {
                return Err(TaskError::Unsupported(
                    "the model has no decoder_start_token_id".into(),
                ));
            }
            1
        } else {
            prompt_len
        };
        let max_length = config.max_new_tokens.map_or(config.max_length, |n| n + start_len);
        if max_length <= start_len {
            return Err(TaskError::Invalid(format!(
                "max_length ({max_length}) leaves no room after the {start_len} start tokens; set max_new_tokens"
            )));
        }
        Ok((config, max_length))
    }

    /// The stop-string check of a call, if it has stop strings.
    pub fn stop_check(&self, params: &GenerationParams) -> Option<StopFn> {
        if params.stop.is_empty() {
            return None;
        }
        let tokenizer = self.tokenizer.clone();
        let stop = params.stop.clone();
        Some(Arc::new(move |tokens: &[i64]| {
            let ids: Vec<u32> = tokens.iter().map(|&t| t as u32).collect();
            let text = tokenizer.decode(&ids, true).unwrap_or_default();
            stop.iter().any(|s| text.contains(s.as_str()))
        }))
    }

    /// Texts, token counts and finish reasons of a prompt's generated sequences (new tokens
    /// only, padding after an eos included).
    pub fn generation_of(
        &self,
        prompt: &[u32],
        sequences: &[Vec<i64>],
        params: &GenerationParams,
    ) -> Result<Generation, TaskError> {
        let mut generation = Generation {
            texts: Vec::new(),
            output_tokens: Vec::new(),
            finish_reasons: Vec::new(),
            logprobs: None,
            prompt_logprobs: None,
        };
        for new in sequences {
            let (tokens, reason) = self.trim(new, &params.generate, &params.stop);
            generation.texts.push(self.text_of(prompt, &tokens, params, self.encoder_decoder)?);
            generation.output_tokens.push(tokens.len());
            generation.finish_reasons.push(reason);
        }
        Ok(generation)
    }

    /// The input's token ids, its untruncated length, and whether it was cut.
    fn prompt_ids(
        &self,
        text: &str,
        params: &GenerationParams,
    ) -> Result<(Vec<u32>, usize, bool), TaskError> {
        if let Some(translation) = &params.translation {
            let text = format!("{}{text}", translation.prefix);
            let content = || self.tokenizer.encode_plain(&text);
            if let Some(wrapped) =
                translation.wrap(content()?, self.tokenizer.max_length, params.truncation)
            {
                return Ok(wrapped?);
            }
            let encoded = self.tokenizer.encode(&text, params.truncation)?;
            return Ok((encoded.ids.clone(), encoded.input_tokens, encoded.truncated));
        }
        if self.task == Task::Summarization {
            let encoded =
                self.tokenizer.encode(&format!("{}{text}", self.prefix), params.truncation)?;
            return Ok((encoded.ids.clone(), encoded.input_tokens, encoded.truncated));
        }
        self.fit_to_context(self.tokenizer.encode_plain(text)?, params)
    }

    /// A decoder-only prompt with room for its new tokens: as it is, or (truncation on) its
    /// end; with its untruncated length and whether it was cut.
    fn fit_to_context(
        &self,
        ids: Vec<u32>,
        params: &GenerationParams,
    ) -> Result<(Vec<u32>, usize, bool), TaskError> {
        let context = self.max_positions;
        let new = params
            .generate
            .max_new_tokens
            .unwrap_or_else(|| params.generate.max_length.saturating_sub(ids.len()));
        if ids.len() + new <= context {
            let tokens = ids.len();
            return Ok((ids, tokens, false));
        }
        if !params.truncation || new >= context {
            return Err(TaskError::Invalid(format!(
                "prompt has {} tokens and {new} new tokens are asked for: more than the model's context of {context} (set truncation=true to keep the prompt's end)",
                ids.len()
            )));
        }
        let keep = context - new;
        Ok((ids[ids.len() - keep..].to_vec(), ids.len(), true))
    }

    /// The generated tokens up to and including the first eos (padding after it dropped), and
    /// why the sequence ended.
    fn trim(
        &self,
        new: &[i64],
        config: &GenerateConfig,
        stop: &[String],
    ) -> (Vec<u32>, FinishReason) {
        if let Some(at) = new.iter().position(|t| config.eos_token_ids.contains(t)) {
            return (new[..=at].iter().map(|&t| t as u32).collect(), FinishReason::Eos);
        }
        let tokens: Vec<u32> = new.iter().map(|&t| t as u32).collect();
        let text = self.tokenizer.decode(&tokens, true).unwrap_or_default();
        let reason = if stop.iter().any(|s| text.contains(s.as_str())) {
            FinishReason::StopString
        } else {
            FinishReason::Length
        };
        (tokens, reason)
    }

    fn text_of(
        &self,
        prompt: &[u32],
        tokens: &[u32],
        params: &GenerationParams,
        encoder_decoder: bool,
    ) -> Result<String, TaskError> {
        if encoder_decoder {
            return Ok(self.tokenizer.decode(tokens, true)?);
        }
        // As the text-generation pipeline: decode prompt + new tokens, cut the decoded prompt off.
        let full: Vec<u32> = prompt.iter().chain(tokens).copied().collect();
        let all = self.tokenizer.decode(&full, true)?;
        let prompt_text = self.tokenizer.decode(prompt, true)?;
        let new_text = if all.starts_with(&prompt_text) {
            all[prompt_text.len()..].to_string()
        } else {
            self.tokenizer.decode(tokens, true)?
        };
        Ok(if params.return_full_text { format!("{prompt_text}{new_text}") } else { new_text })
    }

    /// The chunks' prompts of a long document ([`Plan::Chunks`]); None when it fits in one.
    fn chunk_prompts(
        &self,
        text: &str,
        size: usize,
        overlap: usize,
    ) -> Result<Option<Plan>, TaskError> {
        let ids = self.tokenizer.encode_plain(&format!("{}{text}", self.prefix))?;
        let room = size.saturating_sub(2).max(1);
        let step = room.saturating_sub(overlap).max(1);
        let mut chunks = Vec::new();
        let mut start = 0;
        loop {
            let end = (start + room).min(ids.len());
            chunks.push(self.tokenizer.decode(&ids[start..end], true)?);
            if end == ids.len() {
                break;
            }
            start += step;
        }
        if chunks.len() == 1 {
            return Ok(None);
        }
        let prompts = chunks
            .iter()
            .map(|chunk| Ok(self.tokenizer.encode(&format!("{}{chunk}", self.prefix), true)?.ids))
            .collect::<Result<Vec<_>, TaskError>>()?;
        Ok(Some(Plan::Chunks { prompts, input_tokens: ids.len() }))
    }
}
