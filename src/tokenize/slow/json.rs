//! JSON as Python's `json.load` sees it: objects keep their keys in file order.
//!
//! transformers walks tokenizer_config.json, special_tokens_map.json and added_tokens.json in
//! key order, and which token wins a clash depends on it; `serde_json::Value` sorts keys (unless
//! a crate somewhere turns on `preserve_order`), so the configs are read into this instead. A key
//! written twice keeps its first place and its last value, as in a Python dict.

use std::{fmt, fs, io, path::Path};

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::error::SlowTokenizerError;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// What the value is, for error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Json::Null => "null".into(),
            Json::Bool(b) => b.to_string(),
            Json::Number(n) => n.to_string(),
            Json::String(s) => format!("{s:?}"),
            Json::Array(_) => "a list".into(),
            Json::Object(_) => "an object".into(),
        }
    }
}

/// Inserts like a Python dict assignment: an existing key keeps its place, takes the new value.
pub(crate) fn insert<V>(entries: &mut Vec<(String, V)>, key: String, value: V) {
    match entries.iter_mut().find(|(k, _)| *k == key) {
        Some(entry) => entry.1 = value,
        None => entries.push((key, value)),
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        // JSON has no NaN or infinity, so this is always Some; Null is only a fallback.
        Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            insert(&mut entries, key, value);
        }
        Ok(Json::Object(entries))
    }
}

/// Reads `path` as text; `Ok(None)` when it does not exist.
pub(crate) fn read_optional_text(path: &Path) -> Result<Option<String>, SlowTokenizerError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SlowTokenizerError::Read { path: path.to_owned(), source }),
    }
}

pub(crate) fn read_text(path: &Path) -> Result<String, SlowTokenizerError> {
    fs::read_to_string(path)
        .map_err(|source| SlowTokenizerError::Read { path: path.into(), source })
}

/// Parses `text`, read from `path`, into any deserializable type, with serde's line and column.
pub(crate) fn parse<T: for<'de> Deserialize<'de>>(
    path: &Path,
    text: &str,
) -> Result<T, SlowTokenizerError> {
    serde_json::from_str(text).map_err(|e| SlowTokenizerError::Json {
        path: path.to_owned(),
        line: e.line(),
        column: e.column(),
        message: error_message(&e),
    })
}

/// serde's message without its own " at line L column C" tail (the error says it already).
fn error_message(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let tail = format!(" at line {} column {}", error.line(), error.column());
    message.strip_suffix(&tail).unwrap_or(&message).to_owned()
}

/// Reads an optional JSON object file (tokenizer_config.json and friends); a file that holds
/// something other than an object is refused as Python's `dict` methods would refuse it.
pub(crate) fn read_optional_object(
    path: &Path,
) -> Result<Option<Vec<(String, Json)>>, SlowTokenizerError> {
    let Some(text) = read_optional_text(path)? else { return Ok(None) };
    match parse(path, &text)? {
        Json::Object(entries) => Ok(Some(entries)),
        other => Err(SlowTokenizerError::Config {
            path: path.to_owned(),
            reason: format!(
                "holds {} where a JSON object was expected; fix the file or download it again",
                other.describe()
            ),
        }),
    }
}
