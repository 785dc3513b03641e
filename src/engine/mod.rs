//! The engine every way in shares (gRPC, jobs, `lote run`): a bounded queue per model, the
//! batching policy, and the model threads. This first part is the policy ([`policy`]); the
//! model threads and the gRPC inference API build on it.

pub mod policy;
