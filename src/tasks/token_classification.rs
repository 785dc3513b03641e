//! `token-classification` (NER), as transformers' TokenClassificationPipeline (4.57) runs it:
//! one encoding of the sentence with offsets, logits per token, then the aggregation in
//! [`super::ner_aggregate`].

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

pub fn prepare(
    tokenizer: &TextTokenizer,
    text: &str,
    params: &NerParams,
) -> Result<Encoded, TaskError> {
    params.strategy()?;
    Ok(tokenizer.encode(text, params.truncation)?)
}

/// `logits[t]` holds token `t`'s logits.
pub fn finish(
    tokenizer: &TextTokenizer,
    text: &str,
    encoded: &Encoded,
    logits: Vec<Vec<f32>>,
    labels: &[String],
    params: &NerParams,
) -> Result<Vec<Entity>, TaskError> {
    let tokens: Vec<NerToken> = encoded
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
        .collect();
    let settings = NerSettings {
        id2label: labels,
        strategy: params.strategy()?,
        ignore_labels: &params.ignore_labels,
        word_aware: tokenizer.word_aware,
        unk_id: tokenizer.unk_id,
    };
    ner_aggregate::aggregate(text, &tokens, &settings, &|t: &[&str]| tokenizer.tokens_to_string(t))
        .map_err(|e| TaskError::Invalid(e.to_string()))
}
