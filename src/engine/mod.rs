//! The engine every way in shares (gRPC, jobs, `lote run`): a bounded queue per model, the
//! batching policy, and the model threads. So far: the policy ([`policy`]) and the per-model
//! batcher that runs it over a model thread ([`batcher`]); the tasks' models, continuous
//! batching for generation and the inference gRPC API build on them.

pub mod batcher;
pub mod policy;
