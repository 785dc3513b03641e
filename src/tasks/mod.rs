//! The encoder tasks, each as transformers' pipeline of the same name computes it: prepare an
//! input (tokenize, find masks or windows), run the model over padded batches of rows, then turn
//! each row's numbers into the pipeline's output. [`EncoderPipeline`] ties the three together for
//! `lote run`; the numbers-to-answers steps are plain functions, tested on their own.

mod char_text;
pub mod chat_template;
pub mod classify;
pub mod embed;
pub mod fill_mask;
pub mod generate;
pub mod ner_aggregate;
pub mod numpy_f32;
pub mod output_fields;
mod params;
pub mod pipeline;
pub mod qa_spans;
pub mod question_answering;
pub mod rerank;
pub mod text_pairs;
pub mod token_classification;
pub mod translation;
pub mod zero_shot;

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
    /// Masked: an incident reported once (`engine::incident`).
    #[error("{0}")]
    Model(String),
    #[error("out of memory even alone: {0}")]
    OutOfMemory(String),
}

/// One input of a task.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum TaskInput {
    QuestionContext {
        question: String,
        context: String,
    },
    /// A query and the documents to rank against it (rerank).
    Query {
        query: String,
        documents: Vec<String>,
    },
    /// Two texts read as one input (cross-encoders, NLI).
    TextPair {
        text: String,
        text_pair: String,
    },
    Text {
        text: String,
    },
    /// The model's own token ids, instead of a text (OpenAI's token-id `input` and `prompt`;
    /// feature-extraction and text-generation).
    TokenIds {
        token_ids: Vec<u32>,
    },
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
    /// Documents best first (rerank).
    Ranking(Vec<rerank::Ranked>),
    ZeroShot(zero_shot::ZeroShotOutput),
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

/// Reads a task's input from the fields of a JSON object (a `lote run` line, a stored or queued
/// job document), taking the fields it uses out of `object`: `question` and `context`
/// (question-answering), `query` and `documents` (rerank), `text` and, for text
/// classification, an optional `text_pair`; `text` for the others. `max_documents` bounds a
/// rerank input's documents. The error names the field.
pub fn input_from_fields(
    task: crate::settings::Task,
    object: &mut serde_json::Map<String, serde_json::Value>,
    max_documents: usize,
) -> Result<TaskInput, String> {
    use crate::settings::Task;
    use serde_json::Value;
    let mut take = |field: &str| -> Result<Option<String>, String> {
        match object.remove(field) {
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(format!("`{field}` must be a string")),
            None => Ok(None),
        }
    };
    let mut required = |field: &str| take(field)?.ok_or_else(|| format!("missing field `{field}`"));
    Ok(match task {
        Task::QuestionAnswering => TaskInput::QuestionContext {
            question: required("question")?,
            context: required("context")?,
        },
        Task::Rerank => {
            let query = required("query")?;
            let documents = match object.remove("documents") {
                Some(Value::Array(items)) => items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| match item {
                        Value::String(text) => Ok(text),
                        _ => Err(format!("`documents[{i}]` must be a string")),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                Some(_) => return Err("`documents` must be a list of strings".into()),
                None => return Err("missing field `documents`".into()),
            };
            rerank::check_documents(&documents, max_documents).map_err(|e| e.to_string())?;
            TaskInput::Query { query, documents }
        }
        Task::TextClassification => {
            let text = required("text")?;
            match take("text_pair")? {
                Some(text_pair) => TaskInput::TextPair { text, text_pair },
                None => TaskInput::Text { text },
            }
        }
        _ => TaskInput::Text { text: required("text")? },
    })
}
