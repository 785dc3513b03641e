//! `POST /v1/embeddings`: `input` as one string or a list of strings, `encoding_format` float
//! or base64 (little-endian float32, as OpenAI's client decodes it), `dimensions` (the first N
//! components, renormalised, Matryoshka-style), `usage.prompt_tokens`. One call is one engine
//! call in the interactive lane, batched with gRPC's.

use std::sync::Arc;

use axum::{Json, extract::State};
use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::{HttpState, error::ApiError, model_name, served_encoder, usage};
use crate::{
    engine::policy::Lane,
    settings::Task,
    tasks::{Embedding, TaskInput, TaskOutput},
};

/// The request's texts, each named by its place for errors.
fn texts(input: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let bad = |message: &str| ApiError::invalid(Some("input"), message);
    match input {
        None => Err(bad("`input` is required")),
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(items)) if items.is_empty() => Err(bad("`input` is empty")),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(text) => Ok(text.clone()),
                Value::Number(_) | Value::Array(_) => Err(bad(
                    "`input` as token ids is not taken: lote tokenizes with the model's own \
                     tokenizer; send the text",
                )),
                _ => {
                    Err(ApiError::invalid(Some("input"), format!("`input[{i}]` must be a string")))
                }
            })
            .collect(),
        Some(_) => Err(bad("`input` must be a string or a list of strings")),
    }
}

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
    let inputs = texts(body.get("input"))?;
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
    let items = inputs.into_iter().map(|text| (TaskInput::Text { text }, params.clone())).collect();
    let answered = service.answer(items, Lane::Interactive, None).await?;
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
    fn inputs_are_a_string_or_strings_and_bad_ones_are_named() {
        assert_eq!(texts(Some(&json!("olá"))).unwrap(), ["olá"]);
        assert_eq!(texts(Some(&json!(["a", "b"]))).unwrap(), ["a", "b"]);
        assert_eq!(texts(Some(&json!(["a", 3]))).unwrap_err().param.as_deref(), Some("input"));
        assert_eq!(texts(Some(&json!([]))).unwrap_err().message, "`input` is empty");
        assert!(texts(Some(&json!([[1, 2]]))).unwrap_err().message.contains("token ids"));
        assert_eq!(texts(None).unwrap_err().message, "`input` is required");
    }

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
