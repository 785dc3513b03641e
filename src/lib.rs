//! lote serves transformer models on LibTorch: question answering, fill-mask, classification,
//! embeddings, summarization and generation, in dynamic batches, on CPU or CUDA, over gRPC,
//! RabbitMQ jobs and JSONL files.
//!
//! The library holds everything; the `lote` binary is a thin command line over it, so tests can
//! start the real server in-process with [`run`] or [`Server::bind`] on port 0.

pub mod auth;
pub mod cli;
pub mod client;
pub mod device;
pub mod engine;
pub mod generation;
pub mod grpc;
pub mod health_check;
pub mod http;
pub mod hub;
pub mod jobs;
pub mod jobs_client;
pub mod metrics;
pub mod models;
pub mod run;
pub mod server;
pub mod settings;
mod shim;
pub mod shutdown;
pub mod tasks;
pub mod telemetry;
pub mod tokenize;

pub use server::{RunError, Server, run};
pub use settings::Settings;
