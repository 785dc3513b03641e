//! The engine every way in shares (gRPC, jobs, `lote run`): per model, a bounded queue under
//! one batching policy ([`policy`]) and a model thread; encoder tasks run padded batches through
//! the [`batcher`], generation runs continuous batching in the [`scheduler`]. Tokenizing and
//! post-processing run on a shared [`cpu_pool`]. [`encoder`] and [`generation`] are the
//! task-level services callers use, [`load`] loads a model directory for its task, and
//! [`registry`] holds every model of the settings.

pub mod batcher;
pub mod call;
pub mod cpu_pool;
pub mod encoder;
pub mod generation;
pub mod incident;
pub mod load;
pub mod policy;
pub mod registry;
pub mod scheduler;
