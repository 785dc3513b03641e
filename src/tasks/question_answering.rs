//! `question-answering`, as transformers' QuestionAnsweringPipeline (4.57) prepares it: the
//! context split into windows of `max_seq_len` tokens overlapping by `doc_stride`, only the
//! context truncated, and a p_mask that keeps answers inside the context (the CLS token stays
//! available for "no answer"). The span search over all windows is in [`super::qa_spans`].

use serde::Deserialize;

use super::{TaskError, qa_spans};
use crate::tokenize::{Encoded, TextTokenizer};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QaParams {
    /// Answers returned, best first. Default 1.
    #[serde(default = "one")]
    pub top_k: usize,
    /// Overlap between windows, in tokens. Default min(max_seq_len / 2, 128).
    #[serde(default)]
    pub doc_stride: Option<usize>,
    /// Longest answer, in tokens. Default 15.
    #[serde(default = "fifteen")]
    pub max_answer_len: usize,
    /// Window length, question included. Default min(model limit, 384).
    #[serde(default)]
    pub max_seq_len: Option<usize>,
    /// Accepted for compatibility; fast tokenizers never truncate the question (as in
    /// transformers).
    #[serde(default = "sixty_four")]
    pub max_question_len: usize,
    /// Let the empty answer compete with the spans. Default false.
    #[serde(default)]
    pub handle_impossible_answer: bool,
    /// Widen answers to whole words. Default true.
    #[serde(default = "yes")]
    pub align_to_words: bool,
}

fn one() -> usize {
    1
}
fn fifteen() -> usize {
    15
}
fn sixty_four() -> usize {
    64
}
fn yes() -> bool {
    true
}

/// The windows of one (question, context) pair.
pub struct Prepared {
    pub windows: Vec<Encoded>,
    pub p_masks: Vec<Vec<bool>>,
}

pub fn prepare(
    tokenizer: &TextTokenizer,
    question: &str,
    context: &str,
    params: &QaParams,
) -> Result<Prepared, TaskError> {
    if params.top_k == 0 {
        return Err(TaskError::Invalid("top_k parameter should be >= 1 (got 0)".into()));
    }
    if params.max_answer_len == 0 {
        return Err(TaskError::Invalid("max_answer_len parameter should be >= 1 (got 0)".into()));
    }
    let limit = tokenizer.max_length;
    let max_seq_len = params.max_seq_len.unwrap_or(limit.min(384));
    if max_seq_len > limit {
        return Err(TaskError::Invalid(format!(
            "max_seq_len ({max_seq_len}) is larger than the model's limit ({limit})"
        )));
    }
    let doc_stride = params.doc_stride.unwrap_or((max_seq_len / 2).min(128));
    if doc_stride > max_seq_len {
        return Err(TaskError::Invalid(format!(
            "`doc_stride` ({doc_stride}) is larger than `max_seq_len` ({max_seq_len})"
        )));
    }
    let windows = tokenizer.encode_pair_windows(question, context, max_seq_len, doc_stride)?;
    let p_masks = windows
        .iter()
        .map(|window| {
            window
                .sequence_ids
                .iter()
                .zip(&window.ids)
                .map(|(sequence, &id)| *sequence != Some(1) && Some(id) != tokenizer.cls_id)
                .collect()
        })
        .collect();
    Ok(Prepared { windows, p_masks })
}

/// `logits[w]` holds window `w`'s (start, end) logits per token.
pub fn finish(
    context: &str,
    prepared: &Prepared,
    logits: &[(Vec<f32>, Vec<f32>)],
    params: &QaParams,
) -> Result<Vec<qa_spans::Answer>, TaskError> {
    let windows: Vec<qa_spans::QaWindow> = prepared
        .windows
        .iter()
        .zip(&prepared.p_masks)
        .zip(logits)
        .map(|((window, p_mask), (start, end))| qa_spans::QaWindow {
            start_logits: start.clone(),
            end_logits: end.clone(),
            p_mask: p_mask.clone(),
            attention_mask: vec![true; window.len()],
            offsets: window.offsets.clone(),
            word_ids: window
                .word_ids
                .iter()
                .zip(&window.sequence_ids)
                .map(|(word, sequence)| match sequence {
                    Some(1) => word.map(|w| w as usize),
                    _ => None,
                })
                .collect(),
        })
        .collect();
    let spans = qa_spans::QaParams {
        top_k: params.top_k,
        max_answer_len: params.max_answer_len,
        handle_impossible_answer: params.handle_impossible_answer,
        align_to_words: params.align_to_words,
    };
    qa_spans::decode(context, &windows, &spans).map_err(|e| TaskError::Invalid(e.to_string()))
}
