//! `token-classification` (NER), as transformers' TokenClassificationPipeline (4.57) runs it:
//! one encoding of the sentence with offsets (or, with `stride`, overlapping windows of the
//! model's length, as the pipeline's `return_overflowing_tokens`), logits per token, then the
//! aggregation in [`super::ner_aggregate`], which merges the windows' entities.

use serde::Deserialize;

use super::{
    TaskError,
    ner_aggregate::{self, Aggregation, Entity, NerSettings, NerToken},
};
use crate::tokenize::{Encoded, TextTokenizer};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NerParams {
    /// none (default), simple, first, average or max.
    #[serde(default = "none")]
    pub aggregation_strategy: String,
    /// Labels left out of the result. Default ["O"].
    #[serde(default = "outside")]
    pub ignore_labels: Vec<String>,
    #[serde(default = "yes")]
    pub truncation: bool,
    /// Tokens shared by consecutive windows of a text longer than the model: the whole text
    /// is read. Needs an aggregation other than `none`, and less than the model's length.
    #[serde(default)]
    pub stride: Option<usize>,
}

fn none() -> String {
    "none".into()
}
fn outside() -> Vec<String> {
    vec!["O".into()]
}
fn yes() -> bool {
    true
}

impl NerParams {
    pub fn strategy(&self) -> Result<Aggregation, TaskError> {
        self.aggregation_strategy.parse().map_err(TaskError::Invalid)
    }
}

/// The rows the model reads: the encoding, or with `stride` the text's windows.
pub fn prepare(
    tokenizer: &TextTokenizer,
    text: &str,
    params: &NerParams,
) -> Result<Vec<Encoded>, TaskError> {
    let strategy = params.strategy()?;
    let Some(stride) = params.stride else {
        return Ok(vec![tokenizer.encode(text, params.truncation)?]);
    };
    if strategy == Aggregation::None {
        return Err(TaskError::Invalid(
            "`stride` needs an `aggregation_strategy` other than \"none\" (simple, first, \
             average or max), to merge the windows' entities"
                .into(),
        ));
    }
    if stride >= tokenizer.max_length {
        return Err(TaskError::Invalid(format!(
            "`stride` {stride} must be less than the model's length ({} tokens, special tokens \
             included)",
            tokenizer.max_length
        )));
    }
    let room = tokenizer.max_length - tokenizer.special_tokens_added();
    if stride >= room {
        return Err(TaskError::Invalid(format!(
            "`stride` {stride} leaves no room in a window: the model reads {} tokens, {room} of \
             them text; give a stride below {room}",
            tokenizer.max_length
        )));
    }
    Ok(tokenizer.encode_windows(text, stride)?)
}

/// `logits[w][t]` holds window `w`'s token `t`'s logits.
pub fn finish(
    tokenizer: &TextTokenizer,
    text: &str,
    windows: &[Encoded],
    logits: Vec<Vec<Vec<f32>>>,
    labels: &[String],
    params: &NerParams,
) -> Result<Vec<Entity>, TaskError> {
    let chunks: Vec<Vec<NerToken>> = windows
        .iter()
        .zip(logits)
        .map(|(encoded, logits)| {
            encoded
                .ids
                .iter()
                .zip(logits)
                .enumerate()
                .map(|(i, (&id, logits))| NerToken {
                    id,
                    token: tokenizer.id_to_token(id).unwrap_or_default(),
                    offsets: encoded.offsets[i],
                    special: encoded.special[i],
                    logits,
                })
                .collect()
        })
        .collect();
    let chunks: Vec<&[NerToken]> = chunks.iter().map(Vec::as_slice).collect();
    let settings = NerSettings {
        id2label: labels,
        strategy: params.strategy()?,
        ignore_labels: &params.ignore_labels,
        word_aware: tokenizer.word_aware,
        unk_id: tokenizer.unk_id,
    };
    let to_string = |t: &[&str]| tokenizer.tokens_to_string(t);
    ner_aggregate::aggregate_chunks(text, &chunks, &settings, &to_string)
        .map_err(|e| TaskError::Invalid(e.to_string()))
}
