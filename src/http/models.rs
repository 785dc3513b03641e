//! `GET /v1/models` and `GET /v1/models/{id}`: the models this worker serves, in OpenAI's list
//! shape, with lote's task beside each.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
};
use serde_json::{Value, json};

use super::{HttpState, error::ApiError};
use crate::engine::registry::ModelInfo;

fn model_object(info: &ModelInfo, created: u64) -> Value {
    json!({
        "id": info.name,
        "object": "model",
        "created": created,
        "owned_by": "lote",
        "task": info.task.as_str(),
        "ready": info.ready,
    })
}

pub async fn list(State(state): State<Arc<HttpState>>) -> Json<Value> {
    let data: Vec<Value> =
        state.registry.info().iter().map(|info| model_object(info, state.started)).collect();
    Json(json!({"object": "list", "data": data}))
}

pub async fn get(
    State(state): State<Arc<HttpState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .registry
        .info()
        .iter()
        .find(|info| info.name == id)
        .map(|info| Json(model_object(info, state.started)))
        .ok_or_else(|| ApiError::not_found(format!("no model named `{id}` is served here")))
}
