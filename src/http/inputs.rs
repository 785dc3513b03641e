//! OpenAI's text-or-tokens inputs (`/v1/embeddings`' `input`, `/v1/completions`' `prompt`): a
//! string, a list of strings, a list of token ids (one input), or a list of such lists. Token
//! ids are the model's own, taken as given (special tokens included by the caller), as vLLM
//! and TEI take them; the engine checks them against the vocabulary.

use serde_json::Value;

use super::error::ApiError;
use crate::tasks::TaskInput;

fn token_ids(items: &[Value], field: &str) -> Result<Vec<u32>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(j, item)| {
            item.as_u64().and_then(|id| u32::try_from(id).ok()).ok_or_else(|| {
                ApiError::invalid(
                    Some(field),
                    format!(
                        "`{field}[{j}]` must be a token id (a non-negative integer), not {item}"
                    ),
                )
            })
        })
        .collect()
}

/// The inputs of `value`, the request's `field`.
pub fn inputs(value: Option<&Value>, field: &str) -> Result<Vec<TaskInput>, ApiError> {
    let bad = |message: String| ApiError::invalid(Some(field), message);
    let shape = || {
        bad(format!(
            "`{field}` must be a string, a list of strings, token ids or lists of token ids"
        ))
    };
    match value {
        None => Err(bad(format!("`{field}` is required"))),
        Some(Value::String(text)) => Ok(vec![TaskInput::Text { text: text.clone() }]),
        Some(Value::Array(items)) if items.is_empty() => Err(bad(format!("`{field}` is empty"))),
        Some(Value::Array(items)) if items[0].is_number() => {
            Ok(vec![TaskInput::TokenIds { token_ids: token_ids(items, field)? }])
        }
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(text) if items[0].is_string() => {
                    Ok(TaskInput::Text { text: text.clone() })
                }
                Value::Array(ids) if items[0].is_array() => {
                    if ids.is_empty() {
                        return Err(bad(format!("`{field}[{i}]` is empty")));
                    }
                    let place = format!("{field}[{i}]");
                    Ok(TaskInput::TokenIds {
                        token_ids: token_ids(ids, &place)
                            .map_err(|e| ApiError { param: Some(field.into()), ..e })?,
                    })
                }
                _ if items[0].is_string() => Err(bad(format!("`{field}[{i}]` must be a string"))),
                _ if items[0].is_array() => {
                    Err(bad(format!("`{field}[{i}]` must be a list of token ids")))
                }
                _ => Err(shape()),
            })
            .collect(),
        Some(_) => Err(shape()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> Result<Vec<TaskInput>, ApiError> {
        inputs(Some(&value), "input")
    }

    #[test]
    fn texts_and_token_ids_in_every_shape_openai_takes() {
        let text = |t: &str| TaskInput::Text { text: t.into() };
        let ids = |ids: &[u32]| TaskInput::TokenIds { token_ids: ids.to_vec() };
        assert_eq!(parse(json!("olá")).unwrap(), [text("olá")]);
        assert_eq!(parse(json!(["a", "b"])).unwrap(), [text("a"), text("b")]);
        assert_eq!(parse(json!([5, 6])).unwrap(), [ids(&[5, 6])]);
        assert_eq!(parse(json!([[5], [6, 7]])).unwrap(), [ids(&[5]), ids(&[6, 7])]);
    }

    #[test]
    fn bad_shapes_are_named_by_place() {
        let message = |v: Value| parse(v).unwrap_err().message;
        assert_eq!(message(json!([])), "`input` is empty");
        assert_eq!(message(json!(["a", 3])), "`input[1]` must be a string");
        assert_eq!(message(json!([[1], []])), "`input[1]` is empty");
        assert_eq!(
            message(json!([[1], [-2]])),
            "`input[1][0]` must be a token id (a non-negative integer), not -2"
        );
        assert_eq!(
            message(json!([1, "a"])),
            "`input[1]` must be a token id (a non-negative integer), not \"a\""
        );
        assert!(message(json!({"a": 1})).starts_with("`input` must be a string"));
        assert_eq!(inputs(None, "prompt").unwrap_err().message, "`prompt` is required");
    }
}
