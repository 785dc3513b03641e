//! `POST /v1/completions`: `prompt` as a string or a list of strings continued by a
//! text-generation model, with OpenAI's sampling fields ([`super::sampling`]), `echo`, `n`,
//! `stop` and `stream`; 16 new tokens unless `max_tokens` says otherwise, as OpenAI's default.

use std::sync::Arc;

use axum::{Json, extract::State, response::Response};
use serde_json::{Map, Value};

use super::{
    HttpState,
    choices::{Call, Prompt, Shape},
    error::ApiError,
    model_name,
    sampling::{Route, sampling},
    served_generator,
};
use crate::settings::Task;

/// OpenAI's default `max_tokens` for completions.
const DEFAULT_MAX_TOKENS: usize = 16;

/// The call's prompts; token-id prompts are refused (lote tokenizes with the model's tokenizer).
fn prompts(prompt: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let bad = |message: String| ApiError::invalid(Some("prompt"), message);
    let one = |i: Option<usize>, value: &Value| match value {
        Value::String(text) if text.is_empty() => Err(bad(match i {
            Some(i) => format!("`prompt[{i}]` is empty"),
            None => "`prompt` is empty".into(),
        })),
        Value::String(text) => Ok(text.clone()),
        Value::Number(_) | Value::Array(_) => Err(bad(
            "`prompt` as token ids is not taken: lote tokenizes with the model's own tokenizer; \
             send the text"
                .into(),
        )),
        _ => Err(bad("`prompt` must be a string or a list of strings".into())),
    };
    match prompt {
        None => Err(bad("`prompt` is required".into())),
        Some(Value::Array(items)) if items.is_empty() => Err(bad("`prompt` is empty".into())),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            items.iter().enumerate().map(|(i, item)| one(Some(i), item)).collect()
        }
        Some(value) => one(None, value).map(|text| vec![text]),
    }
}

pub async fn create(
    State(state): State<Arc<HttpState>>,
    body: Result<Json<Map<String, Value>>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(mut body) = body?;
    let model = model_name(&body)?;
    let texts = prompts(body.get("prompt"))?;
    let sampling = sampling(&mut body, Route::Completions)?;
    let choices = texts.len() * sampling.n;
    if choices > state.limits.max_inputs_per_call {
        return Err(ApiError::invalid(
            Some("n"),
            format!(
                "{} prompts x n = {choices} choices: more than server.limits.max_inputs_per_call ({})",
                texts.len(),
                state.limits.max_inputs_per_call
            ),
        ));
    }
    let service = served_generator(&state, &model, Task::TextGeneration)?.clone();
    let max_new_tokens = sampling.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    let prompts = texts
        .into_iter()
        .map(|text| Prompt { echo: sampling.echo.then(|| text.clone()), text, max_new_tokens })
        .collect();
    Call { model, service, prompts, sampling, shape: Shape::Completion }.answer().await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn prompts_are_a_string_or_strings_never_token_ids_or_empty() {
        assert_eq!(prompts(Some(&json!("olá"))).unwrap(), ["olá"]);
        assert_eq!(prompts(Some(&json!(["a", "b"]))).unwrap(), ["a", "b"]);
        let message = |v: Value| prompts(Some(&v)).unwrap_err().message;
        assert_eq!(message(json!("")), "`prompt` is empty");
        assert_eq!(message(json!(["a", ""])), "`prompt[1]` is empty");
        assert!(message(json!([1, 2])).contains("token ids"));
        assert!(message(json!([[1, 2]])).contains("token ids"));
        assert_eq!(prompts(None).unwrap_err().param.as_deref(), Some("prompt"));
    }
}
