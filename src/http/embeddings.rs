//! `POST /v1/embeddings`: `input` as text or the model's token ids ([`super::inputs`]),
//! `encoding_format` float
//! or base64 (little-endian float32, as OpenAI's client decodes it), `dimensions` (the first N
//! components, renormalised, Matryoshka-style), `usage.prompt_tokens`. One call is one engine
//! call in the interactive lane, batched with gRPC's.

use std::sync::Arc;

use axum::{Json, extract::State};
use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::{HttpState, error::ApiError, inputs::inputs, model_name, served_encoder, usage};
use crate::{
    settings::Task,
    tasks::{Embedding, TaskOutput},
};

/// The first `dimensions` components, L2-normalised again.
fn shorten(mut vector: Vec<f32>, dimensions: Option<usize>) -> Result<Vec<f32>, ApiError> {
    let Some(n) = dimensions else { return Ok(vector) };
    if n == 0 || n > vector.len() {
        return Err(ApiError::invalid(
            Some("dimensions"),
            format!(
                "`dimensions` must be between 1 and the model's {} dimensions, not {n}",
                vector.len()
            ),
        ));
    }
    vector.truncate(n);
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|v| *v /= norm);
    }
    Ok(vector)
}

fn encode(vector: &[f32], base64: bool) -> Value {
    if base64 {
        let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
        Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
    } else {
        json!(vector)
    }
}

pub async fn create(
    State(state): State<Arc<HttpState>>,
    body: Result<Json<Map<String, Value>>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    let model = &model_name(&body)?;
    let inputs = inputs(body.get("input"), "input")?;
    if inputs.len() > state.limits.max_inputs_per_call {
        return Err(ApiError::invalid(
            Some("input"),
            format!(
                "{} inputs: more than server.limits.max_inputs_per_call ({})",
                inputs.len(),
                state.limits.max_inputs_per_call
            ),
        ));
    }
    let base64 = match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                Some("encoding_format"),
                format!("`encoding_format` must be \"float\" or \"base64\", not \"{other}\""),
            ));
        }
    };
    let dimensions = match body.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(value) => Some(value.as_u64().map(|n| n as usize).ok_or_else(|| {
            ApiError::invalid(Some("dimensions"), "`dimensions` must be a positive integer")
        })?),
    };
    let service = served_encoder(&state, model, Task::FeatureExtraction)?;
    let params = service
        .pipeline()
        .parse_params(&Value::Object(Map::new()))
        .map_err(|e| ApiError::invalid(None, e.to_string()))?;
    let items = inputs.into_iter().map(|input| (input, params.clone())).collect();
    let answered = state.calls.answer(service, items).await?;
    let mut data = Vec::with_capacity(answered.results.len());
    for (index, result) in answered.results.into_iter().enumerate() {
        let result = result.map_err(|e| ApiError {
            param: Some("input".into()),
            ..ApiError::invalid(None, format!("input[{index}]: {e}"))
        })?;
        let TaskOutput::Embedding(Embedding::Pooled(vector)) = result.output else {
            return Err(ApiError::invalid(
                Some("model"),
                format!(
                    "model `{model}` gives one vector per token (no pooling): it has no sentence embedding"
                ),
            ));
        };
        let vector = shorten(vector, dimensions)?;
        data.push(
            json!({"object": "embedding", "index": index, "embedding": encode(&vector, base64)}),
        );
    }
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": usage(answered.report.input_tokens),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_shorten_and_renormalise() {
        let v = shorten(vec![3.0, 4.0, 12.0], Some(2)).unwrap();
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        assert_eq!(shorten(vec![1.0], Some(2)).unwrap_err().param.as_deref(), Some("dimensions"));
        assert!(shorten(vec![1.0], Some(0)).is_err());
    }

    #[test]
    fn base64_is_little_endian_float32() {
        let Value::String(text) = encode(&[1.0, -2.5], true) else { panic!() };
        let bytes = base64::engine::general_purpose::STANDARD.decode(text).unwrap();
        assert_eq!(bytes, [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat());
    }
}
