//! lote's integration tests, one module per area, in one test crate: the crate links libtorch
//! once, where 20 crates linked it 20 times (cargo's own suite is laid out the same way, in
//! `tests/testsuite/`). Unit tests stay beside their code in src/.
//!
//! `tests/jobs_faults.rs` stays a crate of its own: it closes every RabbitMQ connection and
//! restarts PostgreSQL, which would break the job tests running beside it in this process.

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod bench_smoke;
mod binary;
mod chat_templates;
mod cluster;
mod continuous_batching;
mod encoder_parity;
mod engine_encoder;
mod examples;
mod generation_parity;
mod inference;
mod int8;
mod job_store;
mod jobs_amqp;
mod jobs_local;
mod minilm;
mod model_failures;
mod models_pull;
mod openai_batch;
mod openai_http;
mod pair_tasks;
mod pipeline_parity;
mod prerequisites;
mod run_cli;
mod run_generation;
mod server;
mod settings;
mod slow_tokenizers;
mod store_tls;
mod tls;
mod translation;
