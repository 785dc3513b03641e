//! Tokenization with a model's own tokenizer.json, as transformers' fast tokenizers do it, or,
//! for repositories that ship only the slow files (vocab.txt, vocab.json + merges.txt, a
//! SentencePiece model), with the same fast tokenizer built from them by [`slow`].
//!
//! Offsets are *character* offsets (what Python's `str` indexes), so answers and entity spans
//! slice Portuguese accents, emoji and CJK correctly. Truncation and padding are decided here per
//! call, never by whatever tokenizer.json carries.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use tokenizers::{
    EncodeInput, Encoding, ModelWrapper, PostProcessor, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

pub mod slow;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TokenizeError {
    #[error("{}: {reason}", path.display())]
    Load { path: PathBuf, reason: String },
    #[error("{}: no tokenizer: looked for {}", dir.display(), slow::looked_for())]
    NoTokenizer { dir: PathBuf },
    /// The slow tokenizer files are there but cannot be converted (the message names the file).
    #[error("{0}")]
    SlowFiles(String),
    #[error("input is empty")]
    Empty,
    #[error(
        "input has {tokens} tokens, more than the model's limit of {limit} (truncation is off)"
    )]
    TooLong { tokens: usize, limit: usize },
    #[error("tokenizer: {0}")]
    Failed(String),
    #[error("token_ids[{index}]: {id} is not a token id of this model (vocabulary {vocabulary})")]
    UnknownId { index: usize, id: u32, vocabulary: usize },
}

/// One tokenized input, unpadded.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// Character offsets into the text each token came from; (0, 0) for special tokens.
    pub offsets: Vec<(usize, usize)>,
    pub special: Vec<bool>,
    pub word_ids: Vec<Option<u32>>,
    /// Which input each token belongs to: 0 (text or question), 1 (context), None (special).
    pub sequence_ids: Vec<Option<usize>>,
    /// Tokens of the whole input before truncation dropped any.
    pub input_tokens: usize,
    pub truncated: bool,
}

impl Encoded {
    fn from_encoding(encoding: &Encoding, input_tokens: usize) -> Self {
        Self {
            ids: encoding.get_ids().to_vec(),
            type_ids: encoding.get_type_ids().to_vec(),
            offsets: encoding.get_offsets().to_vec(),
            special: encoding.get_special_tokens_mask().iter().map(|&m| m == 1).collect(),
            word_ids: encoding.get_word_ids().to_vec(),
            sequence_ids: encoding.get_sequence_ids(),
            input_tokens,
            truncated: input_tokens > encoding.len(),
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Truncation settings a call asked for: (max_length, stride, strategy).
type TruncationKey = (usize, usize, Truncation);

/// How a pair of texts is cut to the model's length, as transformers names the strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    /// Not at all: a longer input is an error.
    #[serde(rename = "do_not_truncate")]
    None,
    /// A token at a time from whichever text is longer.
    LongestFirst,
    OnlyFirst,
    OnlySecond,
}

/// A model's tokenizer and the facts about it the tasks need.
#[derive(Clone)]
pub struct TextTokenizer {
    /// Shared: a clone of this struct (one per call, per stream) must not copy the vocabulary.
    inner: Arc<Tokenizer>,
    /// Copies of `inner` with truncation set, made once per setting: cloning a tokenizer
    /// copies its whole vocabulary, too slow to do per input.
    truncating: Arc<Mutex<HashMap<TruncationKey, Arc<Tokenizer>>>>,
    /// Longest input the model takes, special tokens included.
    pub max_length: usize,
    pub pad_id: u32,
    pub mask: Option<(String, u32)>,
    pub unk_id: Option<u32>,
    pub cls_id: Option<u32>,
    /// True when the tokenizer model marks word continuations (WordPiece's `##`), which is how
    /// transformers decides whether token classification can fuse sub-words exactly.
    pub word_aware: bool,
}

impl TextTokenizer {
    /// Loads `dir/tokenizer.json` (else the tokenizer built from the slow files), with special
    /// tokens from tokenizer_config.json and special_tokens_map.json. `model_positions` caps
    /// `max_length` at what the model can embed.
    pub fn load(dir: &Path, model_positions: Option<usize>) -> Result<Self, TokenizeError> {
        let path = dir.join("tokenizer.json");
        let load_error = |reason: String| TokenizeError::Load { path: path.clone(), reason };
        let mut inner = if path.is_file() {
            Tokenizer::from_file(&path).map_err(|e| load_error(e.to_string()))?
        } else {
            slow::from_slow_files(dir)
                .map_err(|e| TokenizeError::SlowFiles(e.to_string()))?
                .ok_or_else(|| TokenizeError::NoTokenizer { dir: dir.to_path_buf() })?
        };
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| load_error(e.to_string()))?;
        let word_aware = marks_continuations(inner.get_model());

        let config = read_json(&dir.join("tokenizer_config.json"));
        let special_map = read_json(&dir.join("special_tokens_map.json"));
        let special =
            |name: &str| token_text(&config[name]).or_else(|| token_text(&special_map[name]));
        let id_of =
            |token: Option<String>| token.and_then(|t| inner.token_to_id(&t).map(|id| (t, id)));
        let mask = id_of(special("mask_token"));
        let pad_id = id_of(special("pad_token")).map_or(0, |(_, id)| id);
        let unk_id = id_of(special("unk_token")).map(|(_, id)| id);
        let cls_id = id_of(special("cls_token")).map(|(_, id)| id);

        // transformers uses 1e30 for "no limit"; the model's positions are the real one.
        let configured =
            config["model_max_length"].as_f64().filter(|&n| n < 1e12).map(|n| n as usize);
        let max_length = match (configured, model_positions) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => 512,
        };
        Ok(Self {
            inner: Arc::new(inner),
            truncating: Arc::default(),
            max_length,
            pad_id,
            mask,
            unk_id,
            cls_id,
            word_aware,
        })
    }

    /// Encodes `text` with special tokens. Longer than `max_length`: truncated when `truncate`,
    /// else [`TokenizeError::TooLong`].
    pub fn encode(&self, text: &str, truncate: bool) -> Result<Encoded, TokenizeError> {
        if text.trim().is_empty() {
            return Err(TokenizeError::Empty);
        }
        self.encode_input(EncodeInput::Single(text.into()), truncate)
    }

    /// An input given as the model's token ids, taken as they are (special tokens are the
    /// caller's to include, as vLLM and TEI take them); each id checked to be below
    /// `vocabulary` (the model's embedding rows). Longer than `max_length`: its first
    /// `max_length` ids when `truncate`, else [`TokenizeError::TooLong`].
    pub fn encode_ids(
        &self,
        ids: &[u32],
        truncate: bool,
        vocabulary: usize,
    ) -> Result<Encoded, TokenizeError> {
        if ids.is_empty() {
            return Err(TokenizeError::Empty);
        }
        check_ids(ids, vocabulary)?;
        let tokens = ids.len();
        if tokens > self.max_length && !truncate {
            return Err(TokenizeError::TooLong { tokens, limit: self.max_length });
        }
        let ids = &ids[..tokens.min(self.max_length)];
        let special = self.inner.get_added_vocabulary().get_added_tokens_decoder();
        Ok(Encoded {
            ids: ids.to_vec(),
            type_ids: vec![0; ids.len()],
            offsets: vec![(0, 0); ids.len()],
            special: ids.iter().map(|id| special.get(id).is_some_and(|t| t.special)).collect(),
            word_ids: vec![None; ids.len()],
            sequence_ids: vec![Some(0); ids.len()],
            input_tokens: tokens,
            truncated: tokens > ids.len(),
        })
    }

    /// Tokens in the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encodes a pair of texts as the model's tokenizer pairs them (BERT `[CLS] a [SEP] b [SEP]`
    /// with token types, RoBERTa `<s> a </s></s> b </s>`). Longer than `max_length`: cut as
    /// `truncation` says, else [`TokenizeError::TooLong`].
    pub fn encode_pair(
        &self,
        a: &str,
        b: &str,
        truncation: Truncation,
    ) -> Result<Encoded, TokenizeError> {
        let full = self
            .inner
            .encode_char_offsets((a, b), true)
            .map_err(|e| TokenizeError::Failed(e.to_string()))?;
        let tokens = full.len();
        if tokens <= self.max_length {
            return Ok(Encoded::from_encoding(&full, tokens));
        }
        if truncation == Truncation::None {
            return Err(TokenizeError::TooLong { tokens, limit: self.max_length });
        }
        let cut = self.with_truncation((self.max_length, 0, truncation), |tokenizer| {
            tokenizer.encode_char_offsets((a, b), true)
        })?;
        Ok(Encoded::from_encoding(&cut, tokens))
    }

    fn encode_input(
        &self,
        input: EncodeInput<'_>,
        truncate: bool,
    ) -> Result<Encoded, TokenizeError> {
        let full = self
            .inner
            .encode_char_offsets(input.clone(), true)
            .map_err(|e| TokenizeError::Failed(e.to_string()))?;
        let tokens = full.len();
        if tokens <= self.max_length {
            return Ok(Encoded::from_encoding(&full, tokens));
        }
        if !truncate {
            return Err(TokenizeError::TooLong { tokens, limit: self.max_length });
        }
        let cut = self
            .with_truncation((self.max_length, 0, Truncation::LongestFirst), |tokenizer| {
                tokenizer.encode_char_offsets(input, true)
            })?;
        Ok(Encoded::from_encoding(&cut, tokens))
    }

    /// Encodes (question, context) into overlapping windows of at most `max_length` tokens,
    /// truncating only the context and overlapping by `stride` tokens, as transformers'
    /// question-answering preprocessing does.
    pub fn encode_pair_windows(
        &self,
        question: &str,
        context: &str,
        max_length: usize,
        stride: usize,
    ) -> Result<Vec<Encoded>, TokenizeError> {
        if question.trim().is_empty() || context.trim().is_empty() {
            return Err(TokenizeError::Empty);
        }
        let total = self
            .inner
            .encode_char_offsets((question, context), true)
            .map_err(|e| TokenizeError::Failed(e.to_string()))?
            .len();
        let mut main = self
            .with_truncation((max_length, stride, Truncation::OnlySecond), |tokenizer| {
                tokenizer.encode_char_offsets((question, context), true)
            })?;
        let overflowing = main.take_overflowing();
        let windows = 1 + overflowing.len();
        let mut out = Vec::with_capacity(windows);
        out.push(main);
        out.extend(overflowing);
        Ok(out
            .iter()
            .map(|e| {
                let mut encoded = Encoded::from_encoding(e, e.len());
                encoded.truncated = windows > 1;
                encoded.input_tokens = total;
                encoded
            })
            .collect())
    }

    /// Encodes `text` into windows of at most `max_length` tokens that overlap by `stride`
    /// tokens, as transformers' `return_overflowing_tokens=True, stride=...` gives them (token
    /// classification over a text longer than the model).
    pub fn encode_windows(&self, text: &str, stride: usize) -> Result<Vec<Encoded>, TokenizeError> {
        if text.trim().is_empty() {
            return Err(TokenizeError::Empty);
        }
        let total = self
            .inner
            .encode_char_offsets(text, true)
            .map_err(|e| TokenizeError::Failed(e.to_string()))?
            .len();
        let mut main = self
            .with_truncation((self.max_length, stride, Truncation::LongestFirst), |tokenizer| {
                tokenizer.encode_char_offsets(text, true)
            })?;
        let overflowing = main.take_overflowing();
        let windows = std::iter::once(main).chain(overflowing);
        // Together the windows hold the whole text: nothing is cut.
        Ok(windows
            .map(|window| Encoded::from_encoding(&window, window.len()))
            .map(|mut e| {
                e.input_tokens = total;
                e
            })
            .collect())
    }

    /// Runs `encode` on a copy of the tokenizer that truncates as `key` says.
    fn with_truncation(
        &self,
        key: TruncationKey,
        encode: impl FnOnce(&Tokenizer) -> tokenizers::Result<Encoding>,
    ) -> Result<Encoding, TokenizeError> {
        let failed = |e: &dyn std::fmt::Display| TokenizeError::Failed(e.to_string());
        let tokenizer = {
            let mut copies =
                self.truncating.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match copies.entry(key) {
                std::collections::hash_map::Entry::Occupied(copy) => copy.get().clone(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    let (max_length, stride, truncation) = key;
                    let strategy = match truncation {
                        Truncation::OnlyFirst => TruncationStrategy::OnlyFirst,
                        Truncation::OnlySecond => TruncationStrategy::OnlySecond,
                        Truncation::LongestFirst | Truncation::None => {
                            TruncationStrategy::LongestFirst
                        }
                    };
                    let mut tokenizer = Tokenizer::clone(&self.inner);
                    tokenizer
                        .with_truncation(Some(TruncationParams {
                            direction: TruncationDirection::Right,
                            max_length,
                            strategy,
                            stride,
                        }))
                        .map_err(|e| failed(&e))?;
                    slot.insert(Arc::new(tokenizer)).clone()
                }
            }
        };
        // The lock is released: encodings on other threads do not wait for this one.
        encode(&tokenizer).map_err(|e| failed(&e))
    }

    /// Special tokens the tokenizer adds around one text (`[CLS]` and `[SEP]`: 2).
    pub fn special_tokens_added(&self) -> usize {
        self.inner.get_post_processor().map_or(0, |p| p.added_tokens(false))
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizeError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| TokenizeError::Failed(e.to_string()))
    }

    /// transformers' `convert_tokens_to_string` for a fast tokenizer: the tokenizer.json decoder
    /// applied to token strings (WordPiece joins `##` pieces, byte-level BPE decodes bytes).
    pub fn tokens_to_string(&self, tokens: &[&str]) -> String {
        let owned: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
        match self.inner.get_decoder() {
            Some(decoder) => tokenizers::Decoder::decode(decoder, owned.clone())
                .unwrap_or_else(|_| owned.join(" ")),
            None => owned.join(" "),
        }
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Every token of `text`, untruncated, with or without the model's special tokens (the
    /// Tokenize call: what the model would see before any limit applies).
    pub fn tokenize(&self, text: &str, add_special_tokens: bool) -> Result<Encoded, TokenizeError> {
        let encoding = self
            .inner
            .encode_char_offsets(text, add_special_tokens)
            .map_err(|e| TokenizeError::Failed(e.to_string()))?;
        Ok(Encoded::from_encoding(&encoding, encoding.len()))
    }

    /// Encodes `text` without special tokens (fill-mask targets).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, TokenizeError> {
        let encoding =
            self.inner.encode(text, false).map_err(|e| TokenizeError::Failed(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }
}

/// Whether the tokenizer model marks word continuations (WordPiece's `##`, a BPE's
/// `continuing_subword_prefix`).
fn marks_continuations(model: &ModelWrapper) -> bool {
    match model {
        ModelWrapper::WordPiece(model) => !model.continuing_subword_prefix.is_empty(),
        ModelWrapper::BPE(model) => {
            model.continuing_subword_prefix.as_ref().is_some_and(|prefix| !prefix.is_empty())
        }
        _ => false,
    }
}

fn read_json(path: &Path) -> serde_json::Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// Checks token ids (an input given as ids) to be below `vocabulary`.
pub fn check_ids(ids: &[u32], vocabulary: usize) -> Result<(), TokenizeError> {
    match ids.iter().enumerate().find(|(_, id)| **id as usize >= vocabulary) {
        Some((index, &id)) => Err(TokenizeError::UnknownId { index, id, vocabulary }),
        None => Ok(()),
    }
}

/// transformers' `special_tokens_map` of the tokenizer in `dir`: each special token that is set
/// (bos, eos, unk, sep, pad, cls, mask; tokenizer_config.json first, then
/// special_tokens_map.json) by its text, and `additional_special_tokens` when there are any.
pub fn special_tokens_map(dir: &Path) -> serde_json::Map<String, serde_json::Value> {
    let config = read_json(&dir.join("tokenizer_config.json"));
    let special_map = read_json(&dir.join("special_tokens_map.json"));
    let mut map = serde_json::Map::new();
    for name in
        ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]
    {
        if let Some(text) = token_text(&config[name]).or_else(|| token_text(&special_map[name]))
            && !text.is_empty()
        {
            map.insert(name.into(), text.into());
        }
    }
    let key = "additional_special_tokens";
    let listed = config[key].as_array().or_else(|| special_map[key].as_array());
    let additional: Vec<serde_json::Value> =
        listed.into_iter().flatten().filter_map(token_text).map(Into::into).collect();
    if !additional.is_empty() {
        map.insert(key.into(), additional.into());
    }
    map
}

/// A special token is written either as a string or as `{"content": "..."}`.
fn token_text(value: &serde_json::Value) -> Option<String> {
    value.as_str().map(String::from).or_else(|| value["content"].as_str().map(String::from))
}
