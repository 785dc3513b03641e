//! Text generation, written once over a small decoder-step trait ([`DecoderStep`]) that each
//! generative model implements: greedy search, sampling and beam search as transformers'
//! `generate` (4.57) runs them, with its logits processors ([`processors`]) and stopping rules.
//! Settings resolve as transformers resolves them: its defaults, then config.json, then
//! generation_config.json, then the task's `task_specific_params`, then the call's parameters.

pub mod processors;
pub mod rng;
pub mod search;
pub mod stream;

use serde::Deserialize;
use tch::Tensor;

/// One model the search can drive: feed tokens, get the next-token logits.
pub trait DecoderStep {
    /// Feeds `tokens` `[rows, n]`: the whole start sequence on the first call, then the one new
    /// token of each row. Returns each row's logits for the next token, `[rows, vocab]`, fp32.
    fn step(&mut self, tokens: &Tensor) -> Tensor;
    /// Like [`DecoderStep::step`], and also the logits at every position fed of rows `scored`
    /// (int64 indices), `[scored, n, vocab]` fp32: what each prompt token's log-probability is
    /// read from. None where the model does not decode its prompt (encoder-decoder models).
    fn step_scoring(&mut self, tokens: &Tensor, scored: &Tensor) -> (Tensor, Option<Tensor>) {
        let _ = scored;
        (self.step(tokens), None)
    }
    /// Keeps rows `rows` (int64 indices, repeats allowed), in order: expanding inputs into beams,
    /// reordering beams and dropping finished rows are all this.
    fn select_rows(&mut self, rows: &Tensor);
    /// This step's per-row state (caches, masks, encoder output), for another step of the same
    /// model to take in with [`DecoderStep::append_rows`].
    fn into_rows(self: Box<Self>) -> RowState;
    /// Appends the rows of another step of the same model after this one's (continuous batching:
    /// a request joins a running batch after its own prefill). State of different lengths is
    /// padded with masked zeros, so each row computes what it computes alone.
    fn append_rows(&mut self, other: RowState);
}

/// Which end of its length axis a per-row tensor is padded at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadSide {
    /// Left: histories that end at the current step (decoder caches and their masks).
    Start,
    /// Right: inputs that start at position 0 (encoder output, its mask and cross-attention).
    End,
}

/// Tensors of a decoder step, dim 0 the row (or the input, for state an input's rows share),
/// in an order its model knows, each with the axis along which rows may differ in length and
/// where that axis is padded.
#[derive(Default)]
pub struct RowState {
    pub parts: Vec<(Tensor, i64, PadSide)>,
}

/// `a`'s rows followed by `b`'s, the shorter padded with zeros along `dim` at `side`.
pub fn append_padded(a: &Tensor, b: &Tensor, dim: i64, side: PadSide) -> Tensor {
    let width = a.size()[dim as usize].max(b.size()[dim as usize]);
    let pad = |t: &Tensor| {
        let missing = width - t.size()[dim as usize];
        if missing == 0 {
            return t.shallow_clone();
        }
        let mut shape = t.size();
        shape[dim as usize] = missing;
        let zeros = Tensor::zeros(shape.as_slice(), (t.kind(), t.device()));
        match side {
            PadSide::Start => Tensor::cat(&[&zeros, t], dim),
            PadSide::End => Tensor::cat(&[t, &zeros], dim),
        }
    };
    Tensor::cat(&[pad(a), pad(b)], 0)
}

/// Everything that shapes one generation, resolved (no "unset" left but `max_new_tokens` and
/// `min_new_tokens`, which override the lengths when given).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    pub max_length: usize,
    pub max_new_tokens: Option<usize>,
    pub min_length: usize,
    pub min_new_tokens: Option<usize>,
    pub do_sample: bool,
    pub temperature: f64,
    pub top_k: i64,
    pub top_p: f64,
    pub typical_p: f64,
    pub num_beams: usize,
    pub num_return_sequences: usize,
    pub length_penalty: f64,
    /// true, false, or None for "never".
    pub early_stopping: Option<bool>,
    pub no_repeat_ngram_size: usize,
    pub repetition_penalty: f64,
    /// OpenAI's penalties, subtracted from the logits of tokens already generated (not the
    /// prompt's), as vLLM applies them: `presence` once per token seen, `frequency` per time.
    pub presence_penalty: f64,
    pub frequency_penalty: f64,
    pub bad_words_ids: Vec<Vec<i64>>,
    pub forced_bos_token_id: Option<i64>,
    pub forced_eos_token_id: Option<Vec<i64>>,
    pub decoder_start_token_id: Option<i64>,
    pub eos_token_ids: Vec<i64>,
    pub pad_token_id: Option<i64>,
    pub seed: Option<u64>,
    /// Record each chosen token's log-probability and this many alternatives (greedy and
    /// sampled search; OpenAI's `logprobs`). Not a transformers setting: set by the HTTP API.
    pub logprobs: Option<usize>,
    /// Also each prompt token's log-probability given the tokens before it, with this many
    /// alternatives (OpenAI's `echo` with `logprobs`; decoder-only models). Set by the HTTP API.
    pub prompt_logprobs: Option<usize>,
}

/// A chosen token's log-probability under the model (log-softmax of its logits, before any
/// processor, as vLLM reports them) and the most likely tokens of that step with theirs.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// A prompt's own log-probabilities: its first token, which nothing before it predicts, and
/// each later token's given the tokens before it.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptLogprobs {
    pub first: u32,
    pub rest: Vec<TokenLogprob>,
}

impl Default for GenerateConfig {
    /// transformers' GenerationConfig defaults.
    fn default() -> Self {
        Self {
            max_length: 20,
            max_new_tokens: None,
            min_length: 0,
            min_new_tokens: None,
            do_sample: false,
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            typical_p: 1.0,
            num_beams: 1,
            num_return_sequences: 1,
            length_penalty: 1.0,
            early_stopping: Some(false),
            no_repeat_ngram_size: 0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            bad_words_ids: Vec::new(),
            forced_bos_token_id: None,
            forced_eos_token_id: None,
            decoder_start_token_id: None,
            eos_token_ids: Vec::new(),
            pad_token_id: None,
            seed: None,
            logprobs: None,
            prompt_logprobs: None,
        }
    }
}

/// Generation settings as written in config.json, generation_config.json, task_specific_params
/// or a call: every field optional, later layers overriding earlier ones.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct GenerateOverrides {
    pub max_length: Option<usize>,
    pub max_new_tokens: Option<usize>,
    pub min_length: Option<usize>,
    pub min_new_tokens: Option<usize>,
    pub do_sample: Option<bool>,
    pub temperature: Option<f64>,
    pub top_k: Option<i64>,
    pub top_p: Option<f64>,
    pub typical_p: Option<f64>,
    pub num_beams: Option<usize>,
    pub num_return_sequences: Option<usize>,
    pub length_penalty: Option<f64>,
    pub early_stopping: Option<serde_json::Value>,
    pub no_repeat_ngram_size: Option<usize>,
    pub repetition_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub bad_words_ids: Option<Vec<Vec<i64>>>,
    /// `null` removes the forced token (as passing None to transformers does).
    #[serde(default, deserialize_with = "present")]
    pub forced_bos_token_id: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub forced_eos_token_id: Option<Option<TokenIds>>,
    pub decoder_start_token_id: Option<i64>,
    pub eos_token_id: Option<TokenIds>,
    pub pad_token_id: Option<i64>,
    pub seed: Option<u64>,
}

/// Tells "absent" (None) from "set to null" (Some(None)).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// One id or a list of ids (`eos_token_id` may be either).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(i64),
    Many(Vec<i64>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<i64> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenerateError {
    #[error("{0}")]
    Invalid(String),
}

impl GenerateConfig {
    /// Applies one layer of overrides; `null` values in JSON count as absent.
    pub fn apply(&mut self, o: &GenerateOverrides) -> Result<(), GenerateError> {
        macro_rules! take {
            ($($field:ident),*) => { $( if let Some(v) = &o.$field { self.$field = v.clone(); } )* };
        }
        take!(
            max_length,
            min_length,
            do_sample,
            temperature,
            top_k,
            top_p,
            typical_p,
            num_beams,
            num_return_sequences,
            length_penalty,
            no_repeat_ngram_size,
            repetition_penalty,
            presence_penalty,
            frequency_penalty,
            bad_words_ids
        );
        if o.max_new_tokens.is_some() {
            self.max_new_tokens = o.max_new_tokens;
        }
        if o.min_new_tokens.is_some() {
            self.min_new_tokens = o.min_new_tokens;
        }
        if let Some(id) = o.forced_bos_token_id {
            self.forced_bos_token_id = id;
        }
        if let Some(ids) = &o.forced_eos_token_id {
            self.forced_eos_token_id = ids.as_ref().map(TokenIds::to_vec);
        }
        if o.decoder_start_token_id.is_some() {
            self.decoder_start_token_id = o.decoder_start_token_id;
        }
        if let Some(ids) = &o.eos_token_id {
            self.eos_token_ids = ids.to_vec();
        }
        if o.pad_token_id.is_some() {
            self.pad_token_id = o.pad_token_id;
        }
        if o.seed.is_some() {
            self.seed = o.seed;
        }
        if let Some(value) = &o.early_stopping {
            self.early_stopping = match value {
                serde_json::Value::Bool(flag) => Some(*flag),
                serde_json::Value::String(word) if word == "never" => None,
                other => {
                    return Err(GenerateError::Invalid(format!(
                        "early_stopping must be true, false or \"never\", not {other}"
                    )));
                }
            };
        }
        Ok(())
    }

    /// The bad inputs of the issue, each a clear error: lengths, beams, sampling ranges.
    pub fn validate(&self, model_limit: usize) -> Result<(), GenerateError> {
        let bad = |message: String| Err(GenerateError::Invalid(message));
        if self.max_new_tokens == Some(0) {
            return bad("max_new_tokens must be at least 1".into());
        }
        if let Some(n) = self.max_new_tokens
            && n > model_limit
        {
            return bad(format!("max_new_tokens ({n}) is above the model's limit ({model_limit})"));
        }
        if self.num_beams == 0 {
            return bad("num_beams must be at least 1".into());
        }
        if self.num_return_sequences == 0 {
            return bad("num_return_sequences must be at least 1".into());
        }
        // Sampling without beams draws each returned sequence on its own; otherwise they are
        // the best beams, so there must be as many beams.
        let sampling_alone = self.do_sample && self.num_beams == 1;
        if self.num_beams < self.num_return_sequences && !sampling_alone {
            return bad(format!(
                "num_return_sequences ({}) must be at most num_beams ({})",
                self.num_return_sequences, self.num_beams
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], not {}", self.top_p));
        }
        if !(self.typical_p > 0.0 && self.typical_p <= 1.0) {
            return bad(format!("typical_p must be in (0, 1], not {}", self.typical_p));
        }
        if self.temperature < 0.0 || (self.do_sample && self.temperature == 0.0) {
            return bad(format!("temperature must be positive, not {}", self.temperature));
        }
        if self.top_k < 0 {
            return bad(format!("top_k must be 0 (off) or positive, not {}", self.top_k));
        }
        for (name, value) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !(-2.0..=2.0).contains(&value) {
                return bad(format!("{name} must be in [-2, 2], not {value}"));
            }
        }
        if self.repetition_penalty <= 0.0 {
            return bad(format!(
                "repetition_penalty must be positive, not {}",
                self.repetition_penalty
            ));
        }
        if self.bad_words_ids.iter().any(Vec::is_empty) {
            return bad("bad_words_ids must not contain an empty list".into());
        }
        Ok(())
    }
}
