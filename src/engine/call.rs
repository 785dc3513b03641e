//! What a call into the engine gives back besides its answers, and how a whole call fails.
//! Per-input problems stay per input ([`TaskError`]): `lote run` writes them on their lines and
//! gRPC turns the first one into INVALID_ARGUMENT; [`EngineError`] is for the call as a whole.

use std::time::Duration;

use super::{batcher::BatchError, cpu_pool::PoolError};
use crate::tasks::TaskError;

/// A call's answers, one per input, and what they cost.
#[derive(Debug)]
pub struct Answered<T> {
    pub results: Vec<Result<T, TaskError>>,
    pub report: CallReport,
}

/// Tokens and times of one call, for the response metadata and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallReport {
    pub input_tokens: usize,
    pub output_tokens: usize,
    /// The longest any of its inputs waited in the queue.
    pub queue: Duration,
    /// Tokenizing and post-processing, on the CPU pool.
    pub tokenize: Duration,
    /// Model time of the batches its inputs ran in.
    pub inference: Duration,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("no model named `{0}` is served here")]
    UnknownModel(String),
    #[error("model `{model}` serves {task}, not {wanted}")]
    WrongTask { model: String, task: String, wanted: String },
    #[error("model `{0}` is still loading")]
    Loading(String),
    #[error("inputs[{index}]: {message}")]
    InvalidInput { index: usize, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "inputs[{index}] has {tokens} tokens: more than server.limits.max_input_tokens ({limit})"
    )]
    InputTooLong { index: usize, tokens: usize, limit: usize },
    #[error("overloaded: {queued} requests are already queued for this model; retry later")]
    Overloaded { queued: usize },
    #[error("deadline exceeded before the call was answered")]
    DeadlineExceeded,
    #[error("{0}")]
    Unavailable(String),
    #[error("inputs[{index}] does not fit in the device's memory even alone: {message}")]
    OutOfMemory { index: usize, message: String },
    /// Masked: an incident reported once ([`super::incident`]).
    #[error("{0}")]
    Model(String),
}

impl EngineError {
    /// The whole-call error for a batcher refusal, or None for a per-input failure.
    pub fn from_batch(error: &BatchError) -> Option<Self> {
        match error {
            BatchError::Overloaded { queued } => Some(Self::Overloaded { queued: *queued }),
            BatchError::DeadlineExceeded => Some(Self::DeadlineExceeded),
            BatchError::Unavailable => Some(Self::Unavailable(error.to_string())),
            BatchError::Model(_) | BatchError::OutOfMemory(_) => None,
        }
    }
}

impl From<PoolError> for EngineError {
    fn from(error: PoolError) -> Self {
        match error {
            PoolError::Stopped => Self::Unavailable(error.to_string()),
            PoolError::Panicked => Self::Model(error.to_string()),
        }
    }
}

impl EngineError {
    /// The call's error for input `index`'s own failure.
    pub fn for_input(index: usize, error: &TaskError) -> Self {
        match error {
            TaskError::Model(message) => Self::Model(format!("inputs[{index}]: {message}")),
            TaskError::OutOfMemory(message) => {
                Self::OutOfMemory { index, message: message.clone() }
            }
            other => Self::InvalidInput { index, message: other.to_string() },
        }
    }
}

/// A per-input failure of the model, as the input's error.
pub fn task_error(error: BatchError) -> TaskError {
    match error {
        BatchError::OutOfMemory(message) => TaskError::OutOfMemory(message),
        other => TaskError::Model(other.to_string()),
    }
}
