//! `POST /v1/completions`: `prompt` as text or the model's token ids ([`super::inputs`]),
//! continued by a text-generation model, with OpenAI's sampling fields ([`super::sampling`]), `echo`, `n`,
//! `stop` and `stream`; 16 new tokens unless `max_tokens` says otherwise, as OpenAI's default.
//! `echo` with `logprobs` scores the prompt too (each token's log-probability given those
//! before it), and `max_tokens: 0` with `echo` only scores it: how evaluation harnesses
//! (lm-evaluation-harness) read a model's log-likelihoods.

use std::sync::Arc;

use axum::{Json, extract::State, response::Response};
use serde_json::{Map, Value};

use super::{
    HttpState,
    choices::{Call, Prompt, Shape, check_choice_count},
    error::ApiError,
    inputs::inputs,
    model_name,
    sampling::{Route, sampling},
    served_generator,
};
use crate::{settings::Task, tasks::TaskInput};

/// OpenAI's default `max_tokens` for completions.
const DEFAULT_MAX_TOKENS: usize = 16;

/// The call's prompts: texts (none empty) or the model's token ids.
fn prompts(prompt: Option<&Value>) -> Result<Vec<TaskInput>, ApiError> {
    let prompts = inputs(prompt, "prompt")?;
    if let Some(i) =
        prompts.iter().position(|p| matches!(p, TaskInput::Text { text } if text.is_empty()))
    {
        let place =
            if prompts.len() == 1 { "`prompt`".to_string() } else { format!("`prompt[{i}]`") };
        return Err(ApiError::invalid(Some("prompt"), format!("{place} is empty")));
    }
    Ok(prompts)
}

pub async fn create(
    State(state): State<Arc<HttpState>>,
    body: Result<Json<Map<String, Value>>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(mut body) = body?;
    let model = model_name(&body)?;
    let texts = prompts(body.get("prompt"))?;
    let tokenizer = &served_generator(&state, &model, Task::TextGeneration)?.pipeline().tokenizer;
    let sampling = sampling(&mut body, Route::Completions)?;
    check_choice_count(texts.len(), sampling.n, state.limits.max_inputs_per_call)?;
    let service = served_generator(&state, &model, Task::TextGeneration)?.clone();
    // `max_tokens: 0` (the prompt scored) still runs the prefill that scores it: one token,
    // left out of the answer.
    let max_new_tokens = sampling.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS).max(1);
    let mut prompts = Vec::with_capacity(texts.len());
    for input in texts {
        let echo = match (&input, sampling.echo) {
            (_, false) => None,
            (TaskInput::Text { text }, true) => Some(text.clone()),
            (TaskInput::TokenIds { token_ids }, true) => Some(
                tokenizer
                    .decode(token_ids, false)
                    .map_err(|e| ApiError::invalid(Some("prompt"), e.to_string()))?,
            ),
            (_, true) => unreachable!("prompts are texts or token ids"),
        };
        prompts.push(Prompt { input, echo, max_new_tokens });
    }
    Call { model, service, prompts, sampling, shape: Shape::Completion, calls: state.calls }
        .answer()
        .await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn prompts_are_texts_or_token_ids_never_empty() {
        let text = |t: &str| TaskInput::Text { text: t.into() };
        assert_eq!(prompts(Some(&json!("olá"))).unwrap(), [text("olá")]);
        assert_eq!(
            prompts(Some(&json!([1, 2]))).unwrap(),
            [TaskInput::TokenIds { token_ids: vec![1, 2] }]
        );
        let message = |v: Value| prompts(Some(&v)).unwrap_err().message;
        assert_eq!(message(json!("")), "`prompt` is empty");
        assert_eq!(message(json!(["a", ""])), "`prompt[1]` is empty");
        assert_eq!(prompts(None).unwrap_err().param.as_deref(), Some("prompt"));
    }
}
