//! The OpenAI-compatible HTTP API on `server.http_addr` (axum): the routes the `openai` client,
//! LangChain, LlamaIndex and curl scripts call, answered by the same engine as gRPC in the
//! interactive lane, so HTTP and gRPC calls share batches; and OpenAI's Batch API on lote's
//! durable jobs ([`batch`]). Each route is a module of its own;
//! errors take OpenAI's shape, mapped from the engine's in one place ([`error`]).

pub mod batch;
mod chat;
mod choices;
mod completions;
mod embeddings;
pub mod error;
mod inputs;
mod logprobs;
mod models;
mod rerank;
mod sampling;

use std::{future::Future, sync::Arc};

use axum::{
    Router,
    routing::{get, post},
};
use tokio::net::TcpListener;

use error::ApiError;

use crate::{
    auth::ApiKeys,
    engine::{
        call::{Answered, EngineError},
        encoder::EncoderService,
        generation::GenerationService,
        policy::Lane,
        registry::{Registry, ServedModel},
    },
    settings::{LimitSettings, Task},
    tasks::{
        TaskInput, TaskResult,
        generate::{GenerationParams, GenerationResult},
        pipeline::TaskParams,
    },
};

/// How a route's calls reach the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calls {
    /// An HTTP call: the interactive lane, batched with gRPC's.
    Interactive,
    /// A batch line: the bulk lane, and a batch of its own (`alone`) when it is retried after
    /// a model failure, as every job document is.
    Bulk { alone: bool },
}

impl Calls {
    async fn answer(
        self,
        service: &EncoderService,
        items: Vec<(TaskInput, TaskParams)>,
    ) -> Result<Answered<TaskResult>, EngineError> {
        match self {
            Calls::Interactive => service.answer(items, Lane::Interactive, None).await,
            Calls::Bulk { alone: false } => service.answer(items, Lane::Bulk, None).await,
            Calls::Bulk { alone: true } => service.answer_alone(items).await,
        }
    }

    async fn generate(
        self,
        service: &GenerationService,
        items: Vec<(TaskInput, GenerationParams)>,
    ) -> Result<Answered<GenerationResult>, EngineError> {
        match self {
            Calls::Interactive => service.generate(items, Lane::Interactive, None).await,
            Calls::Bulk { alone: false } => service.generate(items, Lane::Bulk, None).await,
            Calls::Bulk { alone: true } => service.generate_alone(items).await,
        }
    }
}

/// What every route reads.
pub struct HttpState {
    pub registry: Arc<Registry>,
    pub limits: LimitSettings,
    /// Unix seconds the worker started: the `created` of every model.
    pub started: u64,
    /// None: calls need no key.
    pub keys: Option<ApiKeys>,
    pub calls: Calls,
    /// What the Batch API works with (None: its routes answer 503).
    pub batches: Option<batch::BatchContext>,
}

pub fn router(state: Arc<HttpState>) -> Router {
    let body_limit = state.limits.max_message_bytes;
    Router::new()
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::get))
        .route("/v1/embeddings", post(embeddings::create))
        .route("/v1/completions", post(completions::create))
        .route("/v1/chat/completions", post(chat::create))
        .route("/v1/rerank", post(rerank::create))
        .route(
            "/v1/files",
            get(batch::files::list)
                .post(batch::files::upload)
                // An upload is streamed into the store; its own limit is max_batch_file_bytes.
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/v1/files/{id}", get(batch::files::get).delete(batch::files::delete))
        .route("/v1/files/{id}/content", get(batch::files::content))
        .route("/v1/batches", get(batch::list).post(batch::create))
        .route("/v1/batches/{id}", get(batch::get))
        .route("/v1/batches/{id}/cancel", post(batch::cancel))
        .fallback(error::unknown_route)
        .layer(axum::middleware::from_fn_with_state(state.clone(), authorize))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Refuses a call without one of the API keys (when keys are asked for) with OpenAI's 401.
async fn authorize(
    axum::extract::State(state): axum::extract::State<Arc<HttpState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(keys) = &state.keys {
        let header = request.headers().get(axum::http::header::AUTHORIZATION);
        if let Err(refusal) = keys.check(header.map(|v| v.as_bytes())) {
            return axum::response::IntoResponse::into_response(ApiError::unauthorized(refusal));
        }
    }
    next.run(request).await
}

/// OpenAI's `usage` of a call that only reads its input.
fn usage(prompt_tokens: usize) -> serde_json::Value {
    serde_json::json!({"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens})
}

/// The encoder model named in a call, checked to serve `task`.
fn served_encoder<'a>(
    state: &'a HttpState,
    name: &str,
    task: Task,
) -> Result<&'a EncoderService, ApiError> {
    match state.registry.serving(name, task)? {
        ServedModel::Encoder(service) => Ok(service),
        ServedModel::Generation(_) => unreachable!("{task} is an encoder task"),
    }
}

/// The generative model named in a call, checked to serve `task`.
fn served_generator<'a>(
    state: &'a HttpState,
    name: &str,
    task: Task,
) -> Result<&'a GenerationService, ApiError> {
    match state.registry.serving(name, task)? {
        ServedModel::Generation(service) => Ok(service),
        ServedModel::Encoder(_) => unreachable!("{task} is a generation task"),
    }
}

/// The call's `model`.
fn model_name(body: &serde_json::Map<String, serde_json::Value>) -> Result<String, ApiError> {
    body.get("model").and_then(serde_json::Value::as_str).map(String::from).ok_or_else(|| {
        ApiError::invalid(Some("model"), "`model` is required: one of GET /v1/models")
    })
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
