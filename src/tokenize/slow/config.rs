//! tokenizer_config.json, special_tokens_map.json and added_tokens.json, merged into the keyword
//! arguments a transformers tokenizer class is built with.
//!
//! This follows `PreTrainedTokenizerBase._from_pretrained` step by step, quirks included, because
//! the special tokens' flags (lstrip, normalized...) decide how text around them is split. A
//! tokenizer_config.json written by transformers 4.x carries `added_tokens_decoder`, and then
//! special_tokens_map.json and added_tokens.json are not read at all; older repositories have only
//! those two, which are merged in as transformers merges them.

use std::path::{Path, PathBuf};

use tokenizers::AddedToken;

use super::{
    error::SlowTokenizerError,
    json::{self, Json},
};

pub(crate) const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
pub(crate) const SPECIAL_TOKENS_MAP: &str = "special_tokens_map.json";
pub(crate) const ADDED_TOKENS: &str = "added_tokens.json";
pub(crate) const MODEL_CONFIG: &str = "config.json";

/// transformers' `SpecialTokensMixin.SPECIAL_TOKENS_ATTRIBUTES`, in its order.
pub(crate) const SPECIAL_TOKEN_KEYS: [&str; 8] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
    "additional_special_tokens",
];

/// A Python `tokenizers.AddedToken`. `normalized` left unset follows `special` (a special token
/// is not normalized) until something fixes it, as the Python object does.
#[derive(Clone, Debug)]
pub(crate) struct PyToken {
    pub content: String,
    pub single_word: bool,
    pub lstrip: bool,
    pub rstrip: bool,
    pub normalized: Option<bool>,
    pub special: bool,
}

impl PyToken {
    pub(crate) fn new(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: None,
            special: false,
        }
    }

    /// The Rust token the Python one hands to the tokenizer.
    pub(crate) fn resolved(&self) -> AddedToken {
        AddedToken {
            content: self.content.clone(),
            single_word: self.single_word,
            lstrip: self.lstrip,
            rstrip: self.rstrip,
            normalized: self.normalized.unwrap_or(!self.special),
            special: self.special,
        }
    }

    /// What `copy.deepcopy` makes of it: the pickled state carries `normalized` as resolved.
    pub(crate) fn materialized(&self) -> Self {
        Self { normalized: Some(self.normalized.unwrap_or(!self.special)), ..self.clone() }
    }

    /// Python `==` between two AddedTokens compares every resolved field.
    pub(crate) fn same(&self, other: &PyToken) -> bool {
        self.resolved() == other.resolved()
    }

    /// `AddedToken(**entry)`, `special` forced when the caller says so.
    fn from_object(
        entries: &[(String, Json)],
        force_special: bool,
        path: &Path,
    ) -> Result<Self, SlowTokenizerError> {
        let bad = |reason: String| SlowTokenizerError::Config { path: path.to_owned(), reason };
        let content =
            entries.iter().find(|(k, _)| k == "content").and_then(|(_, v)| v.as_str()).ok_or_else(
                || bad("an added token has no \"content\" string; fix the file".into()),
            )?;
        let mut token = PyToken::new(content);
        for (key, value) in entries {
            let field = match key.as_str() {
                "single_word" => &mut token.single_word,
                "lstrip" => &mut token.lstrip,
                "rstrip" => &mut token.rstrip,
                "special" => &mut token.special,
                "normalized" => {
                    token.normalized = match value {
                        Json::Null => None,
                        Json::Bool(b) => Some(*b),
                        other => return Err(bad(not_bool(content, key, other))),
                    };
                    continue;
                }
                _ => continue,
            };
            match value {
                Json::Bool(b) => *field = *b,
                Json::Null => {}
                other => return Err(bad(not_bool(content, key, other))),
            }
        }
        if force_special {
            token.special = true;
        }
        Ok(token)
    }
}

fn not_bool(content: &str, key: &str, value: &Json) -> String {
    format!(
        "added token {content:?} has {key} = {}, not true or false; fix the file",
        value.describe()
    )
}

/// A keyword argument's value once the AddedToken objects in it are rebuilt.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    Json(Json),
    Token(PyToken),
    List(Vec<Value>),
    Object(Vec<(String, Value)>),
}

impl Value {
    /// Python's `str(value)` where it can equal a token's text; None for containers.
    pub(crate) fn python_str(&self) -> Option<String> {
        match self {
            Value::Token(t) => Some(t.content.clone()),
            Value::Json(Json::String(s)) => Some(s.clone()),
            Value::Json(Json::Number(n)) => Some(n.to_string()),
            Value::Json(Json::Bool(true)) => Some("True".into()),
            Value::Json(Json::Bool(false)) => Some("False".into()),
            Value::Json(Json::Null) => Some("None".into()),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self, Value::Json(Json::Null))
    }

    /// Python `==`: an AddedToken never equals a string, two AddedTokens compare every field.
    fn python_eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Token(a), Value::Token(b)) => a.same(b),
            (Value::Json(a), Value::Json(b)) => a == b,
            _ => false,
        }
    }

    /// `convert_added_tokens`: `{"__type": "AddedToken", ...}` objects become tokens, anywhere.
    fn converted(self, path: &Path) -> Result<Value, SlowTokenizerError> {
        Ok(match self {
            Value::Json(json) => Value::convert(json, path)?,
            Value::List(items) => {
                Value::List(items.into_iter().map(|v| v.converted(path)).collect::<Result<_, _>>()?)
            }
            Value::Object(entries) => Value::Object(
                entries.into_iter().map(|(k, v)| Ok((k, v.converted(path)?))).collect::<Result<
                    _,
                    SlowTokenizerError,
                >>(
                )?,
            ),
            token @ Value::Token(_) => token,
        })
    }

    fn convert(json: Json, path: &Path) -> Result<Value, SlowTokenizerError> {
        Ok(match json {
            Json::Object(entries)
                if entries
                    .iter()
                    .any(|(k, v)| k == "__type" && v.as_str() == Some("AddedToken")) =>
            {
                Value::Token(PyToken::from_object(&entries, false, path)?)
            }
            Json::Object(entries) => Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| Ok((k, Value::convert(v, path)?)))
                    .collect::<Result<_, SlowTokenizerError>>()?,
            ),
            Json::Array(items) => Value::List(
                items.into_iter().map(|v| Value::convert(v, path)).collect::<Result<_, _>>()?,
            ),
            other => Value::Json(other),
        })
    }
}

/// A keyword argument and the file it came from (for error messages).
#[derive(Clone, Debug)]
struct Entry {
    key: String,
    value: Value,
    file: &'static str,
}

/// The keyword arguments the tokenizer class is constructed with, after the merge.
#[derive(Clone, Debug)]
pub(crate) struct Kwargs {
    dir: PathBuf,
    entries: Vec<Entry>,
}

/// A boolean setting: missing, `null`, or a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flag {
    Absent,
    Null,
    Set(bool),
}

impl Flag {
    /// The value, `default` when the setting is missing; `null` counts as Python's falsy None.
    pub(crate) fn or(self, default: bool) -> bool {
        match self {
            Flag::Absent => default,
            Flag::Null => false,
            Flag::Set(b) => b,
        }
    }
}

impl Kwargs {
    pub(crate) fn value(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|e| e.key == key).map(|e| &e.value)
    }

    /// The file a setting came from, for error messages.
    pub(crate) fn path_of(&self, key: &str) -> PathBuf {
        let file = self.entries.iter().find(|e| e.key == key).map_or(TOKENIZER_CONFIG, |e| e.file);
        self.dir.join(file)
    }

    fn invalid(&self, key: &str, what: &str, value: &Value) -> SlowTokenizerError {
        let found = match value {
            Value::Json(json) => json.describe(),
            Value::Token(t) => format!("the added token {:?}", t.content),
            Value::List(_) => "a list".into(),
            Value::Object(_) => "an object".into(),
        };
        SlowTokenizerError::Config {
            path: self.path_of(key),
            reason: format!("{key} is {found}, not {what}; fix the file"),
        }
    }

    pub(crate) fn flag(&self, key: &str) -> Result<Flag, SlowTokenizerError> {
        match self.value(key) {
            None => Ok(Flag::Absent),
            Some(Value::Json(Json::Null)) => Ok(Flag::Null),
            Some(Value::Json(Json::Bool(b))) => Ok(Flag::Set(*b)),
            Some(other) => Err(self.invalid(key, "true or false", other)),
        }
    }

    /// A boolean setting with transformers' default when it is missing.
    pub(crate) fn bool_or(&self, key: &str, default: bool) -> Result<bool, SlowTokenizerError> {
        Ok(self.flag(key)?.or(default))
    }

    pub(crate) fn integer(&self, key: &str) -> Result<Option<i64>, SlowTokenizerError> {
        match self.value(key) {
            None | Some(Value::Json(Json::Null)) => Ok(None),
            Some(Value::Json(Json::Number(n))) if n.as_i64().is_some() => Ok(n.as_i64()),
            Some(other) => Err(self.invalid(key, "a whole number", other)),
        }
    }

    pub(crate) fn string(&self, key: &str) -> Result<Option<String>, SlowTokenizerError> {
        match self.value(key) {
            None | Some(Value::Json(Json::Null)) => Ok(None),
            Some(Value::Json(Json::String(s))) => Ok(Some(s.clone())),
            Some(other) => Err(self.invalid(key, "a string", other)),
        }
    }

    /// A special token setting: missing (`None`), `null` (`Some(None)`), or a token.
    pub(crate) fn special(&self, key: &str) -> Result<Option<Option<Special>>, SlowTokenizerError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Json(Json::Null)) => Ok(Some(None)),
            Some(value) => Special::from_value(value)
                .map(|s| Some(Some(s)))
                .ok_or_else(|| self.invalid(key, "a string or an AddedToken object", value)),
        }
    }

    /// A list of special tokens (additional_special_tokens); `None` when missing or `null`.
    pub(crate) fn special_list(
        &self,
        key: &str,
    ) -> Result<Option<Vec<Special>>, SlowTokenizerError> {
        match self.value(key) {
            None | Some(Value::Json(Json::Null)) => Ok(None),
            Some(Value::List(items)) => items
                .iter()
                .map(|v| Special::from_value(v).ok_or_else(|| self.invalid(key, TOKEN_LIST, v)))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(self.invalid(key, TOKEN_LIST, other)),
        }
    }

    /// `extra_special_tokens`: named special tokens beyond the standard ones, in file order.
    pub(crate) fn special_map(
        &self,
        key: &str,
    ) -> Result<Vec<(String, Special)>, SlowTokenizerError> {
        match self.value(key) {
            None | Some(Value::Json(Json::Null)) => Ok(Vec::new()),
            Some(Value::List(items)) if items.is_empty() => Ok(Vec::new()),
            Some(Value::Object(entries)) => entries
                .iter()
                .map(|(name, v)| {
                    Special::from_value(v)
                        .map(|s| (name.clone(), s))
                        .ok_or_else(|| self.invalid(key, "an object of special tokens", v))
                })
                .collect(),
            Some(other) => Err(self.invalid(key, "an object of special tokens", other)),
        }
    }
}

const TOKEN_LIST: &str = "a list of strings or AddedToken objects";

/// A special token as a tokenizer class holds it: a plain string or an AddedToken.
#[derive(Clone, Debug)]
pub(crate) enum Special {
    Str(String),
    Token(PyToken),
}

impl Special {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Json(Json::String(s)) => Some(Special::Str(s.clone())),
            Value::Token(t) => Some(Special::Token(t.clone())),
            _ => None,
        }
    }

    pub(crate) fn content(&self) -> &str {
        match self {
            Special::Str(s) => s,
            Special::Token(t) => &t.content,
        }
    }
}

/// Everything read from the tokenizer's own JSON files.
#[derive(Clone, Debug)]
pub(crate) struct TokenizerFiles {
    pub kwargs: Kwargs,
    /// `added_tokens_decoder` (or what added_tokens.json stands for), in dict order.
    pub added_tokens_decoder: Vec<(u32, PyToken)>,
    /// tokenizer_config.json's `tokenizer_class`.
    pub tokenizer_class: Option<String>,
}

/// What the tokenizer class is built from: `_from_pretrained`'s `init_kwargs`.
pub(crate) fn read(dir: &Path) -> Result<TokenizerFiles, SlowTokenizerError> {
    let config_path = dir.join(TOKENIZER_CONFIG);
    let mut entries: Vec<(String, Value, &'static str)> = Vec::new();
    let mut tokenizer_class = None;
    let mut saved_decoder = None;
    for (key, value) in json::read_optional_object(&config_path)?.unwrap_or_default() {
        match key.as_str() {
            "tokenizer_class" => tokenizer_class = class_name(&config_path, &value)?,
            "tokenizer_file" | "init_inputs" => {}
            "added_tokens_decoder" => saved_decoder = Some(value),
            _ => entries.push((key, Value::Json(value), TOKENIZER_CONFIG)),
        }
    }

    let mut decoder: Vec<(u32, PyToken)> = Vec::new();
    let mut by_content: Vec<(String, PyToken)> = Vec::new();
    match saved_decoder {
        Some(saved) => read_saved_decoder(&config_path, saved, &mut decoder, &mut by_content)?,
        None => merge_legacy_files(dir, &mut entries, &mut decoder, &mut by_content)?,
    }

    let mut converted = Vec::with_capacity(entries.len());
    for (key, value, file) in entries {
        let mut value = value.converted(&dir.join(file))?;
        let is_named_special = SPECIAL_TOKEN_KEYS[..7].contains(&key.as_str());
        if is_named_special && !by_content.is_empty() && !value.is_null() {
            let found = value
                .python_str()
                .and_then(|s| by_content.iter().find(|(c, _)| *c == s).map(|(_, t)| t.clone()));
            if let Some(token) = found {
                value = Value::Token(token);
            }
        }
        converted.push(Entry { key, value, file });
    }
    Ok(TokenizerFiles {
        kwargs: Kwargs { dir: dir.to_owned(), entries: converted },
        added_tokens_decoder: decoder,
        tokenizer_class,
    })
}

fn class_name(path: &Path, value: &Json) -> Result<Option<String>, SlowTokenizerError> {
    match value {
        Json::Null => Ok(None),
        Json::String(s) => Ok(Some(s.clone())),
        other => Err(SlowTokenizerError::Config {
            path: path.to_owned(),
            reason: format!(
                "tokenizer_class is {}, not the name of a tokenizer class; fix the file",
                other.describe()
            ),
        }),
    }
}

/// `added_tokens_decoder` as transformers 4.x writes it: `{"id": {AddedToken fields}}`.
fn read_saved_decoder(
    path: &Path,
    saved: Json,
    decoder: &mut Vec<(u32, PyToken)>,
    by_content: &mut Vec<(String, PyToken)>,
) -> Result<(), SlowTokenizerError> {
    let bad = |reason: String| SlowTokenizerError::Config { path: path.to_owned(), reason };
    let Json::Object(saved) = saved else {
        return Err(bad("added_tokens_decoder is not an object of id: token; fix the file".into()));
    };
    for (id, token) in saved {
        let id: u32 = id.trim().parse().map_err(|_| {
            bad(format!("added_tokens_decoder has the key {id:?}, not a token id; fix the file"))
        })?;
        let Json::Object(fields) = token else {
            return Err(bad(format!(
                "added_tokens_decoder entry {id} is {}, not an AddedToken object; fix the file",
                token.describe()
            )));
        };
        let token = PyToken::from_object(&fields, false, path)?;
        json::insert(by_content, token.content.clone(), token.clone());
        insert_id(decoder, id, token);
    }
    Ok(())
}

/// Python `dict[int] = value`.
fn insert_id(decoder: &mut Vec<(u32, PyToken)>, id: u32, token: PyToken) {
    match decoder.iter_mut().find(|(i, _)| *i == id) {
        Some(entry) => entry.1 = token,
        None => decoder.push((id, token)),
    }
}

/// The legacy layout: special_tokens_map.json overrides tokenizer_config.json, added_tokens.json
/// lists added tokens by id.
fn merge_legacy_files(
    dir: &Path,
    entries: &mut Vec<(String, Value, &'static str)>,
    decoder: &mut Vec<(u32, PyToken)>,
    by_content: &mut Vec<(String, PyToken)>,
) -> Result<(), SlowTokenizerError> {
    // `_from_pretrained` reuses its `token` parameter (None) as the loop variable over the
    // additional special tokens; added_tokens.json entries are then filed under its last value.
    let mut loop_token = "None".to_owned();
    let map_path = dir.join(SPECIAL_TOKENS_MAP);
    for (key, value) in json::read_optional_object(&map_path)?.unwrap_or_default() {
        let value = match value {
            Json::Object(fields) => Value::Token(PyToken::from_object(&fields, true, &map_path)?),
            Json::Array(items) if key == "additional_special_tokens" => {
                let mut merged = take_list(entries, &key, &dir.join(TOKENIZER_CONFIG))?;
                for item in items {
                    let item = match item {
                        Json::Object(fields) => {
                            Value::Token(PyToken::from_object(&fields, true, &map_path)?)
                        }
                        other => Value::Json(other),
                    };
                    loop_token = item.python_str().unwrap_or_default();
                    if !merged.iter().any(|m| m.python_eq(&item)) {
                        merged.push(item);
                    }
                }
                Value::List(merged)
            }
            other => Value::Json(other),
        };
        match entries.iter_mut().find(|(k, _, _)| *k == key) {
            Some(entry) => *entry = (key, value, SPECIAL_TOKENS_MAP),
            None => entries.push((key, value, SPECIAL_TOKENS_MAP)),
        }
    }

    let added_path = dir.join(ADDED_TOKENS);
    let Some(added) = json::read_optional_object(&added_path)? else { return Ok(()) };
    let specials = special_strings(entries);
    for (content, id) in added {
        let id = match &id {
            Json::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => None,
        }
        .ok_or_else(|| SlowTokenizerError::Config {
            path: added_path.clone(),
            reason: format!(
                "{content:?} has the id {}, not a token id; fix the file",
                id.describe()
            ),
        })?;
        let special = specials.contains(&content);
        let token = PyToken { normalized: Some(!special), special, ..PyToken::new(content) };
        json::insert(by_content, loop_token.clone(), token.clone());
        insert_id(decoder, id, token);
    }
    Ok(())
}

/// `init_kwargs.pop("additional_special_tokens", []) or []`.
fn take_list(
    entries: &mut Vec<(String, Value, &'static str)>,
    key: &str,
    path: &Path,
) -> Result<Vec<Value>, SlowTokenizerError> {
    let Some(index) = entries.iter().position(|(k, _, _)| k == key) else { return Ok(Vec::new()) };
    let (_, value, _) = entries.remove(index);
    match value {
        Value::Json(Json::Null) => Ok(Vec::new()),
        Value::Json(Json::Array(items)) => Ok(items.into_iter().map(Value::Json).collect()),
        Value::List(items) => Ok(items),
        _ => Err(SlowTokenizerError::Config {
            path: path.to_owned(),
            reason: format!("{key} is not a list of tokens; fix the file"),
        }),
    }
}

/// The special tokens' texts as `_from_pretrained` lists them before reading added_tokens.json.
fn special_strings(entries: &[(String, Value, &'static str)]) -> Vec<String> {
    let mut out = Vec::new();
    for (key, value, _) in entries {
        if !SPECIAL_TOKEN_KEYS.contains(&key.as_str()) || value.is_null() {
            continue;
        }
        match value {
            Value::List(items) => out.extend(items.iter().filter_map(Value::python_str)),
            Value::Json(Json::Array(items)) => {
                out.extend(items.iter().filter_map(|i| Value::Json(i.clone()).python_str()))
            }
            other => out.extend(other.python_str()),
        }
    }
    out
}

/// config.json's say in choosing the tokenizer: its `tokenizer_class`, else its `model_type`.
#[derive(Clone, Debug, Default)]
pub(crate) struct ModelConfig {
    pub tokenizer_class: Option<String>,
    pub model_type: Option<String>,
}

pub(crate) fn read_model_config(dir: &Path) -> Result<ModelConfig, SlowTokenizerError> {
    let path = dir.join(MODEL_CONFIG);
    let Some(entries) = json::read_optional_object(&path)? else {
        return Ok(ModelConfig::default());
    };
    let text = |key: &str| -> Result<Option<String>, SlowTokenizerError> {
        match entries.iter().find(|(k, _)| k == key).map(|(_, v)| v) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(SlowTokenizerError::Config {
                path: path.clone(),
                reason: format!("{key} is {}, not a string; fix the file", other.describe()),
            }),
        }
    };
    Ok(ModelConfig { tokenizer_class: text("tokenizer_class")?, model_type: text("model_type")? })
}
