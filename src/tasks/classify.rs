//! `text-classification`, as transformers' TextClassificationPipeline (4.57) scores it: sigmoid
//! for multi-label or single-logit models, softmax otherwise (or as `function_to_apply` says),
//! computed in float32 the way numpy does, labels from id2label.

use serde::{Deserialize, Serialize};

use super::{TaskError, numpy_f32, text_pairs::TruncationParam};

/// How logits become scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreFunction {
    Sigmoid,
    Softmax,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyParams {
    /// Labels returned, best first. Default 1; `null` returns every label.
    #[serde(default = "one")]
    pub top_k: Option<usize>,
    /// Default: from the model's problem_type and label count, as transformers chooses.
    #[serde(default)]
    pub function_to_apply: Option<ScoreFunction>,
    /// `true` (default), `false`, or a strategy; a text pair is cut `only_second` by default.
    #[serde(default)]
    pub truncation: TruncationParam,
}

fn one() -> Option<usize> {
    Some(1)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

/// transformers' default: regression -> none; multi-label or one label -> sigmoid; else softmax.
pub fn default_function(problem_type: Option<&str>, labels: usize) -> ScoreFunction {
    match problem_type {
        Some("regression") => ScoreFunction::None,
        Some("multi_label_classification") => ScoreFunction::Sigmoid,
        _ if labels == 1 => ScoreFunction::Sigmoid,
        _ => ScoreFunction::Softmax,
    }
}

pub fn finish(
    logits: &[f32],
    labels: &[String],
    function: ScoreFunction,
    top_k: Option<usize>,
) -> Result<Vec<LabelScore>, TaskError> {
    if top_k == Some(0) {
        return Err(TaskError::Invalid("top_k must be at least 1 (or null for all)".into()));
    }
    let scores: Vec<f32> = match function {
        ScoreFunction::Sigmoid => {
            logits.iter().map(|&x| 1.0 / (1.0 + numpy_f32::exp(-x))).collect()
        }
        ScoreFunction::Softmax => softmax(logits),
        ScoreFunction::None => logits.to_vec(),
    };
    let mut ranked: Vec<LabelScore> = scores
        .into_iter()
        .zip(labels)
        .map(|(score, label)| LabelScore { label: label.clone(), score })
        .collect();
    // Python's sort is stable: equal scores keep label order.
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    if let Some(k) = top_k {
        ranked.truncate(k);
    }
    Ok(ranked)
}

/// numpy's `exp(x - max) / exp(x - max).sum()` in float32.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&x| numpy_f32::exp(x - max)).collect();
    let total = numpy_f32::sum(&exps);
    exps.into_iter().map(|e| e / total).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_function_follows_transformers() {
        assert_eq!(default_function(Some("multi_label_classification"), 4), ScoreFunction::Sigmoid);
        assert_eq!(default_function(Some("regression"), 1), ScoreFunction::None);
        assert_eq!(default_function(None, 1), ScoreFunction::Sigmoid);
        assert_eq!(default_function(None, 3), ScoreFunction::Softmax);
    }

    #[test]
    fn top_k_sorts_and_cuts() {
        let labels = ["a".to_string(), "b".to_string(), "c".to_string()];
        let out = finish(&[0.0, 2.0, 1.0], &labels, ScoreFunction::None, Some(2)).unwrap();
        assert_eq!(out.iter().map(|l| l.label.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        assert!(finish(&[0.0], &labels[..1], ScoreFunction::None, Some(0)).is_err());
    }
}
