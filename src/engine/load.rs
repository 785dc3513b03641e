//! Loading a model directory for its task, the one way every transport (gRPC, jobs, `lote run`)
//! gets a model: the tokenizer, the weights and the pipeline that runs them, on a blocking
//! thread before the model's engine thread starts.

use std::path::PathBuf;

use super::policy::Policy;
use crate::{
    device::Placement,
    settings::{ModelSettings, Task},
    tasks::{
        EncoderPipeline,
        generate::{GenerationLoadError, GenerationPipeline},
        pipeline::{BatchBudget, PipelineError},
    },
};

/// Why a model directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelLoadError {
    #[error("cannot load {}: {source}", path.display())]
    Encoder { path: PathBuf, source: PipelineError },
    #[error("cannot load {}: {source}", path.display())]
    Generator { path: PathBuf, source: GenerationLoadError },
    #[error("loading was interrupted: {0}")]
    Interrupted(String),
}

/// A model loaded on a blocking thread, before its engine thread starts.
pub enum Loaded {
    Encoder(Box<EncoderPipeline>),
    Generation(Box<GenerationPipeline>),
}

/// Loads the model directory of `settings` for its task.
pub fn load(
    settings: &ModelSettings,
    placement: &Placement,
    policy: Policy,
) -> Result<Loaded, ModelLoadError> {
    let path = settings.path.clone();
    match settings.task {
        Task::Summarization | Task::Translation | Task::TextGeneration => {
            GenerationPipeline::load(&settings.path, settings.task, placement)
                .map(|p| Loaded::Generation(Box::new(p)))
                .map_err(|source| ModelLoadError::Generator { path, source })
        }
        task => {
            let budget = BatchBudget {
                max_batch_size: policy.max_batch_size,
                max_batch_tokens: policy.max_batch_tokens,
            };
            EncoderPipeline::load(&settings.path, task, placement, budget)
                .map(|p| Loaded::Encoder(Box::new(p)))
                .map_err(|source| ModelLoadError::Encoder { path, source })
        }
    }
}
