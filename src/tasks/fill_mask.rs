//! `fill-mask`, as transformers' FillMaskPipeline (4.57) answers it: for each mask token, the
//! softmax over the vocabulary (computed by libtorch, as the pipeline does), the top_k tokens
//! (or the top among `targets`), each with the sequence that token would make. With one mask the
//! sequence drops special tokens; with several, each mask gets its own list and the sequences
//! keep them (the pipeline's own behaviour).

use serde::{Deserialize, Serialize};

use super::TaskError;
use crate::tokenize::{Encoded, TextTokenizer};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FillMaskParams {
    /// Predictions per mask. Default 5.
    #[serde(default = "five")]
    pub top_k: usize,
    /// Restrict predictions to these words. A word not in the vocabulary counts as its first
    /// sub-word token, as in transformers.
    #[serde(default)]
    pub targets: Option<Vec<String>>,
    /// Truncate inputs longer than the model's limit (default) or refuse them.
    #[serde(default = "yes")]
    pub truncation: bool,
}

fn five() -> usize {
    5
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaskPrediction {
    pub score: f32,
    pub token: u32,
    pub token_str: String,
    pub sequence: String,
}

/// What the model must hand back for one input: its tokens and where the masks are.
pub struct Prepared {
    pub encoded: Encoded,
    pub mask_positions: Vec<usize>,
    pub targets: Option<Vec<u32>>,
}

pub fn prepare(
    tokenizer: &TextTokenizer,
    text: &str,
    params: &FillMaskParams,
    vocabulary: usize,
) -> Result<Prepared, TaskError> {
    let (mask_text, mask_id) = tokenizer
        .mask
        .clone()
        .ok_or_else(|| TaskError::Unsupported("this model's tokenizer has no mask token".into()))?;
    if params.top_k == 0 {
        return Err(TaskError::Invalid("top_k must be at least 1".into()));
    }
    let encoded = tokenizer.encode(text, params.truncation)?;
    let mask_positions: Vec<usize> =
        encoded.ids.iter().enumerate().filter(|(_, id)| **id == mask_id).map(|(i, _)| i).collect();
    if mask_positions.is_empty() {
        return Err(TaskError::Invalid(format!("no mask token `{mask_text}` in the input")));
    }
    let targets = match &params.targets {
        Some(words) => Some(target_ids(tokenizer, words, vocabulary)?),
        None => None,
    };
    Ok(Prepared { encoded, mask_positions, targets })
}

/// transformers' get_target_ids: the word's own id, else the first token of its encoding;
/// duplicates removed. A token the tokenizer has but the model does not (an added token past
/// the model's vocabulary) is refused by name.
fn target_ids(
    tokenizer: &TextTokenizer,
    words: &[String],
    vocabulary: usize,
) -> Result<Vec<u32>, TaskError> {
    let mut ids = Vec::new();
    for (i, word) in words.iter().enumerate() {
        let id = match tokenizer.token_to_id(word) {
            Some(id) => Some(id),
            None => tokenizer.encode_plain(word)?.first().copied(),
        };
        if let Some(id) = id
            && id as usize >= vocabulary
        {
            return Err(TaskError::Invalid(format!(
                "bad params: `targets[{i}]`: `{word}` is token {id}, not a token id of this model (vocabulary {vocabulary})"
            )));
        }
        ids.extend(id);
    }
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Err(TaskError::Invalid("at least one target must be provided".into()));
    }
    Ok(ids)
}

/// `probabilities[m]` is the softmax over the vocabulary at mask `m` of the input.
pub fn finish(
    tokenizer: &TextTokenizer,
    prepared: &Prepared,
    probabilities: &[Vec<f32>],
    params: &FillMaskParams,
) -> Result<Vec<Vec<MaskPrediction>>, TaskError> {
    let single_mask = prepared.mask_positions.len() == 1;
    let mut per_mask = Vec::with_capacity(probabilities.len());
    for (&position, probs) in prepared.mask_positions.iter().zip(probabilities) {
        let candidates: Vec<(u32, f32)> = match &prepared.targets {
            Some(targets) => targets.iter().map(|&id| (id, probs[id as usize])).collect(),
            None => probs.iter().enumerate().map(|(id, &p)| (id as u32, p)).collect(),
        };
        let mut predictions = Vec::new();
        for (token, score) in top_k(candidates, params.top_k) {
            let mut ids = prepared.encoded.ids.clone();
            ids[position] = token;
            ids.retain(|&id| id != tokenizer.pad_id);
            predictions.push(MaskPrediction {
                score,
                token,
                token_str: tokenizer.decode(&[token], false)?,
                sequence: tokenizer.decode(&ids, single_mask)?,
            });
        }
        per_mask.push(predictions);
    }
    Ok(per_mask)
}

/// The `k` highest scores, highest first; equal scores keep the lower id first.
fn top_k(mut candidates: Vec<(u32, f32)>, k: usize) -> Vec<(u32, f32)> {
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    candidates.truncate(k);
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_score_then_id() {
        let ranked = top_k(vec![(3, 0.1), (1, 0.5), (2, 0.5), (0, 0.2)], 3);
        assert_eq!(ranked, vec![(1, 0.5), (2, 0.5), (0, 0.2)]);
    }
}
