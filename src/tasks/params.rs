//! A call's parameters deserialized with the path of a bad field in the error and serde's type
//! names said as a user reads them: `bad params: `top_k`: expected a non-negative integer, got
//! -1` rather than `invalid value: integer `-1`, expected usize`.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::TaskError;

/// `params` as `T`, or an error naming the field, what it takes and what it got.
pub fn parse<T: DeserializeOwned>(params: &Value) -> Result<T, TaskError> {
    serde_path_to_error::deserialize::<_, T>(params).map_err(|error| {
        let path = error.path().to_string();
        let message = error.inner().to_string();
        if path == "." || message.starts_with("unknown field") {
            return TaskError::Invalid(format!("bad params: {}", message));
        }
        let got = pointer(params, &path).map_or_else(String::new, |v| format!(", got {v}"));
        match expected(&message) {
            Some(takes) => {
                TaskError::Invalid(format!("bad params: `{path}`: expected {takes}{got}"))
            }
            None => TaskError::Invalid(format!("bad params: `{path}`: {}", message)),
        }
    })
}

/// The value at serde_path_to_error's dotted path (`bad_words_ids[0][1]`, `a.b`).
fn pointer<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = value;
    for part in path.split('.') {
        let (name, indices) = part.split_once('[').map_or((part, ""), |(n, rest)| (n, rest));
        if !name.is_empty() {
            current = current.get(name)?;
        }
        for index in indices.split('[').filter(|s| !s.is_empty()) {
            current = current.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(current)
}

/// What serde's "expected X" says, in a user's words.
fn expected(message: &str) -> Option<&'static str> {
    let wanted = message.rsplit_once("expected ")?.1;
    Some(match wanted {
        "usize" | "u64" | "u32" | "u16" | "u8" => "a non-negative integer",
        "i64" | "i32" => "an integer",
        "f64" | "f32" => "a number",
        "a boolean" => "true or false",
        "a string" => "a string",
        "a sequence" => "a list",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Params {
        top_k: Option<usize>,
        temperature: Option<f64>,
        bad_words_ids: Option<Vec<Vec<i64>>>,
    }

    fn message(params: Value) -> String {
        parse::<Params>(&params).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field_what_it_takes_and_what_it_got() {
        assert_eq!(
            message(json!({"top_k": -1})),
            "bad params: `top_k`: expected a non-negative integer, got -1"
        );
        assert_eq!(
            message(json!({"top_k": "três"})),
            "bad params: `top_k`: expected a non-negative integer, got \"três\""
        );
        assert_eq!(
            message(json!({"temperature": true})),
            "bad params: `temperature`: expected a number, got true"
        );
        assert_eq!(
            message(json!({"bad_words_ids": [[1, "x"]]})),
            "bad params: `bad_words_ids[0][1]`: expected an integer, got \"x\""
        );
        assert!(message(json!({"top_q": 1})).starts_with("bad params: unknown field `top_q`"));
        assert!(parse::<Params>(&json!({"top_k": 3})).is_ok());
    }
}
