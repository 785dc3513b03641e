//! `POST /v1/chat/completions`: `messages` rendered with the model's chat template as
//! transformers' `apply_chat_template(add_generation_prompt=True)` renders them
//! ([`crate::tasks::chat_template`]), tokenized without special tokens as transformers does
//! the rendered text, then continued like a completion. Content given as parts keeps its text
//! parts joined by newlines (as vLLM does); a model without a template answers 400 saying so.
//! Without `max_completion_tokens` (or `max_tokens`) the answer may fill the model's context.

use std::sync::Arc;

use axum::{Json, extract::State, response::Response};
use serde_json::{Map, Value};

use super::{
    HttpState,
    choices::{Call, Prompt, Shape, check_choice_count},
    error::ApiError,
    model_name,
    sampling::{Route, sampling},
    served_generator,
};
use crate::{
    settings::Task,
    tasks::{TaskError, TaskInput},
};

/// The messages as the template takes them: every message an object with a string `role`,
/// its `content` a string, null, or text parts (joined).
fn messages(value: Option<&Value>) -> Result<Value, ApiError> {
    let bad = |message: String| ApiError::invalid(Some("messages"), message);
    let items = match value {
        None => return Err(bad("`messages` is required".into())),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(bad("`messages` is empty".into()));
        }
        Some(Value::Array(items)) => items,
        Some(_) => return Err(bad("`messages` must be a list of messages".into())),
    };
    let mut messages = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(message) = item else {
            return Err(bad(format!(
                "`messages[{i}]` must be an object with `role` and `content`"
            )));
        };
        let mut message = message.clone();
        if !message.get("role").is_some_and(Value::is_string) {
            return Err(bad(format!("`messages[{i}].role` must be a string")));
        }
        match message.get("content") {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(Value::Array(parts)) => {
                let mut texts = Vec::with_capacity(parts.len());
                for (k, part) in parts.iter().enumerate() {
                    match (part["type"].as_str(), part["text"].as_str()) {
                        (Some("text"), Some(text)) => texts.push(text),
                        _ => {
                            return Err(bad(format!(
                                "`messages[{i}].content[{k}]`: only text parts are taken \
                                 (`{{\"type\": \"text\", \"text\": ...}}`)"
                            )));
                        }
                    }
                }
                message.insert("content".into(), texts.join("\n").into());
            }
            Some(_) => {
                return Err(bad(format!(
                    "`messages[{i}].content` must be a string or a list of text parts"
                )));
            }
        }
        messages.push(Value::Object(message));
    }
    Ok(Value::Array(messages))
}

pub async fn create(
    State(state): State<Arc<HttpState>>,
    body: Result<Json<Map<String, Value>>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(mut body) = body?;
    let model = model_name(&body)?;
    let messages = messages(body.get("messages"))?;
    let sampling = sampling(&mut body, Route::Chat)?;
    check_choice_count(1, sampling.n, state.limits.max_inputs_per_call)?;
    let service = served_generator(&state, &model, Task::TextGeneration)?.clone();
    let pipeline = service.pipeline();
    let text = pipeline.chat_prompt(&messages).map_err(|e| match e {
        TaskError::Unsupported(message) => {
            ApiError::invalid(Some("model"), format!("model `{model}`: {message}"))
        }
        other => ApiError::invalid(Some("messages"), other.to_string()),
    })?;
    // Tokenized once here (as transformers tokenizes the rendered text, no special tokens
    // added) and handed to the engine as ids.
    let token_ids = pipeline
        .tokenizer
        .encode_plain(&text)
        .map_err(|e| ApiError::invalid(Some("messages"), e.to_string()))?;
    if token_ids.is_empty() {
        return Err(ApiError::invalid(Some("messages"), "the chat template rendered no text"));
    }
    let prompt_tokens = token_ids.len();
    let room = pipeline.max_positions.saturating_sub(prompt_tokens);
    if room == 0 {
        return Err(ApiError {
            code: Some("context_length_exceeded"),
            ..ApiError::invalid(
                Some("messages"),
                format!(
                    "the messages take {prompt_tokens} tokens: the model's context is {}",
                    pipeline.max_positions
                ),
            )
        });
    }
    let max_new_tokens = sampling.max_tokens.unwrap_or(room);
    let prompts =
        vec![Prompt { input: TaskInput::TokenIds { token_ids }, max_new_tokens, echo: None }];
    Call { model, service, prompts, sampling, shape: Shape::Chat, calls: state.calls }
        .answer()
        .await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_parts_are_joined_and_other_parts_refused_by_place() {
        let parts = json!([{"role": "user", "content": [
            {"type": "text", "text": "Olá"}, {"type": "text", "text": "ação"}]}]);
        assert_eq!(
            messages(Some(&parts)).unwrap(),
            json!([{"role": "user", "content": "Olá\nação"}])
        );
        let image = json!([{"role": "user", "content": "a"}, {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "x"}}]}]);
        assert!(
            messages(Some(&image)).unwrap_err().message.starts_with("`messages[1].content[0]`")
        );
        let message = |v: Value| messages(Some(&v)).unwrap_err().message;
        assert_eq!(message(json!([])), "`messages` is empty");
        assert_eq!(message(json!([{"content": "a"}])), "`messages[0].role` must be a string");
        assert_eq!(
            message(json!(["a"])),
            "`messages[0]` must be an object with `role` and `content`"
        );
        let null = json!([{"role": "assistant", "content": null}]);
        assert_eq!(messages(Some(&null)).unwrap(), null);
    }
}
