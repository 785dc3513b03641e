//! `rerank`: a query against many documents through a cross-encoder (one logit per pair), with
//! the semantics of text-embeddings-inference's `/rerank`: every document scored as
//! sentence-transformers' `CrossEncoder.predict` scores it (sigmoid of the logit, or the logit
//! itself with `raw_scores`), sorted best first with its index in the call, cut to `top_n`.

use serde::{Deserialize, Serialize};

use super::{TaskError, numpy_f32, text_pairs::TruncationParam};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RerankParams {
    /// Documents returned, best first; all by default.
    #[serde(default)]
    pub top_n: Option<usize>,
    /// Put each document's text beside its score.
    #[serde(default)]
    pub return_documents: bool,
    /// The logits themselves instead of their sigmoid.
    #[serde(default)]
    pub raw_scores: bool,
    /// For pairs `true` cuts only the document (`only_second`).
    #[serde(default)]
    pub truncation: TruncationParam,
}

/// One document's place in the ranking.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    /// Its position in the call's `documents`.
    pub index: usize,
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
}

/// Checks a call's documents: at least one, at most `limit` (the server's inputs per call).
pub fn check_documents(documents: &[String], limit: usize) -> Result<(), TaskError> {
    if documents.is_empty() {
        return Err(TaskError::Invalid("`documents` is empty".into()));
    }
    if documents.len() > limit {
        return Err(TaskError::Invalid(format!(
            "`documents` has {} documents, more than server.limits.max_inputs_per_call ({limit})",
            documents.len()
        )));
    }
    Ok(())
}

/// The ranking from each document's logit (in document order).
pub fn finish(
    documents: &[String],
    logits: &[f32],
    params: &RerankParams,
) -> Result<Vec<Ranked>, TaskError> {
    if params.top_n == Some(0) {
        return Err(TaskError::Invalid("`top_n` must be at least 1 (or absent for all)".into()));
    }
    let mut ranked: Vec<Ranked> = logits
        .iter()
        .enumerate()
        .map(|(index, &logit)| Ranked {
            index,
            score: if params.raw_scores { logit } else { sigmoid(logit) },
            document: params.return_documents.then(|| documents[index].clone()),
        })
        .collect();
    // Stable: equal scores keep the documents' order.
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    if let Some(n) = params.top_n {
        ranked.truncate(n);
    }
    Ok(ranked)
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + numpy_f32::exp(-x))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(json: &str) -> RerankParams {
        serde_json::from_str(json).unwrap()
    }

    fn docs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("documento {i}")).collect()
    }

    #[test]
    fn documents_come_back_best_first_with_their_index() {
        let ranked = finish(&docs(3), &[0.5, 2.0, -1.0], &params("{}")).unwrap();
        assert_eq!(ranked.iter().map(|r| r.index).collect::<Vec<_>>(), [1, 0, 2]);
        assert!((ranked[0].score - 0.880_797).abs() < 1e-6);
        assert!(ranked.iter().all(|r| r.document.is_none()));
        let top = finish(
            &docs(3),
            &[0.5, 2.0, -1.0],
            &params(r#"{"top_n": 1, "raw_scores": true, "return_documents": true}"#),
        )
        .unwrap();
        assert_eq!(top, [Ranked { index: 1, score: 2.0, document: Some("documento 1".into()) }]);
        assert!(finish(&docs(1), &[0.0], &params(r#"{"top_n": 0}"#)).is_err());
    }

    #[test]
    fn no_documents_or_too_many_are_refused_by_name() {
        assert_eq!(check_documents(&[], 4).unwrap_err().to_string(), "`documents` is empty");
        assert_eq!(
            check_documents(&docs(5), 4).unwrap_err().to_string(),
            "`documents` has 5 documents, more than server.limits.max_inputs_per_call (4)"
        );
        assert!(check_documents(&docs(4), 4).is_ok());
    }
}
