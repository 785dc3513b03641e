//! The encoder tasks, each as transformers' pipeline of the same name computes it: prepare an
//! input (tokenize, find masks or windows), run the model over padded batches of rows, then turn
//! each row's numbers into the pipeline's output. [`EncoderPipeline`] ties the three together for
//! `lote run`; the numbers-to-answers steps are plain functions, tested on their own.

mod char_text;
pub mod classify;
pub mod embed;
pub mod fill_mask;
pub mod generate;
pub mod ner_aggregate;
pub mod numpy_f32;
pub mod output_fields;
pub mod pipeline;
pub mod qa_spans;
pub mod question_answering;
pub mod token_classification;

use serde::{Deserialize, Serialize};

pub use pipeline::EncoderPipeline;

use crate::tokenize::TokenizeError;

/// Why one input could not be answered. Each is that input's alone: the others go on.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum TaskError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Tokenize(#[from] TokenizeError),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("model failed: {0}")]
    Model(String),
    #[error("out of memory even alone: {0}")]
    OutOfMemory(String),
}

/// One input of a task.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum TaskInput {
    QuestionContext { question: String, context: String },
    Text { text: String },
}

/// A task's answer for one input, named as the `lote run` output lines name it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskOutput {
    Answers(Vec<qa_spans::Answer>),
    /// One list per mask token in the input.
    Predictions(Vec<Vec<fill_mask::MaskPrediction>>),
    Labels(Vec<classify::LabelScore>),
    Entities(Vec<ner_aggregate::Entity>),
    /// One vector when pooled, else one per token.
    Embedding(Embedding),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Embedding {
    Pooled(Vec<f32>),
    PerToken(Vec<Vec<f32>>),
}

/// A task's result with the counters every task reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskResult {
    #[serde(flatten)]
    pub output: TaskOutput,
    pub input_tokens: usize,
    pub truncated: bool,
}
