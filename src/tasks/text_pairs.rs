//! Text pairs for the classification heads: a cross-encoder or NLI model reads two texts as one
//! input, tokenized as the model's tokenizer pairs them. The `truncation` parameter takes what
//! transformers' tokenizers take: `true` / `false`, or a strategy by name; for a pair, `true`
//! cuts only the second text (`only_second`, the document of a query-document pair), for a
//! single text it cuts the text.

use serde::Deserialize;

use super::TaskError;
use crate::tokenize::{Encoded, TextTokenizer, Truncation};

/// `truncation` as a caller writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruncationParam {
    Flag(bool),
    Strategy(Truncation),
}

const STRATEGIES: &str =
    "true, false, \"do_not_truncate\", \"longest_first\", \"only_first\" or \"only_second\"";

impl<'de> Deserialize<'de> for TruncationParam {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Bool(flag) => Ok(TruncationParam::Flag(flag)),
            serde_json::Value::String(name) => {
                serde_json::from_value(serde_json::Value::String(name.clone()))
                    .map(TruncationParam::Strategy)
                    .map_err(|_| D::Error::custom(format!("`{name}` is not one of {STRATEGIES}")))
            }
            other => Err(D::Error::custom(format!("expected {STRATEGIES}, got {other}"))),
        }
    }
}

impl Default for TruncationParam {
    fn default() -> Self {
        TruncationParam::Flag(true)
    }
}

impl TruncationParam {
    /// For one text: whether it may be cut.
    pub fn single(self) -> bool {
        !matches!(self, TruncationParam::Flag(false) | TruncationParam::Strategy(Truncation::None))
    }

    /// For a pair: the strategy, `only_second` when the caller just said `true`.
    pub fn pair(self, default: Truncation) -> Truncation {
        match self {
            TruncationParam::Flag(true) => default,
            TruncationParam::Flag(false) => Truncation::None,
            TruncationParam::Strategy(strategy) => strategy,
        }
    }
}

/// A text that must not be empty, or an error naming its field.
pub fn non_empty<'a>(field: &str, text: &'a str) -> Result<&'a str, TaskError> {
    if text.trim().is_empty() {
        return Err(TaskError::Invalid(format!("`{field}` is empty")));
    }
    Ok(text)
}

/// Encodes (`first`, `second`), both non-empty (the error names the empty one's field).
pub fn encode_pair(
    tokenizer: &TextTokenizer,
    (first_field, first): (&str, &str),
    (second_field, second): (&str, &str),
    truncation: Truncation,
) -> Result<Encoded, TaskError> {
    let first = non_empty(first_field, first)?;
    let second = non_empty(second_field, second)?;
    Ok(tokenizer.encode_pair(first, second, truncation)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TruncationParam, serde_json::Error> {
        serde_json::from_str(text)
    }

    #[test]
    fn truncation_takes_a_flag_or_a_strategy() {
        assert_eq!(parse("true").unwrap().pair(Truncation::OnlySecond), Truncation::OnlySecond);
        assert_eq!(parse("false").unwrap().pair(Truncation::OnlySecond), Truncation::None);
        assert_eq!(
            parse("\"longest_first\"").unwrap().pair(Truncation::OnlySecond),
            Truncation::LongestFirst
        );
        assert_eq!(
            parse("\"only_first\"").unwrap().pair(Truncation::OnlySecond),
            Truncation::OnlyFirst
        );
        assert!(!parse("\"do_not_truncate\"").unwrap().single());
        assert!(parse("\"only_second\"").unwrap().single());
        assert!(parse("\"middle\"").is_err());
    }

    #[test]
    fn an_empty_text_names_its_field() {
        assert_eq!(
            non_empty("text_pair", "  ").unwrap_err(),
            TaskError::Invalid("`text_pair` is empty".into())
        );
    }
}
