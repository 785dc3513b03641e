//! Special and added tokens as a transformers tokenizer class settles them.
//!
//! Three things the converted tokenizer depends on happen outside convert_slow_tokenizer.py:
//! - the slow class turns some special tokens into AddedTokens with class-specific flags (the
//!   mask token of RoBERTa and XLM-R swallows the space before it); the fast class then takes
//!   the slow class's arguments over its own;
//! - the slow class gives the special tokens their ids, which the converters put in the
//!   post-processor (`cls_token_id`...);
//! - `PreTrainedTokenizerFast.__init__` adds `added_tokens_decoder` and the special tokens to the
//!   converted tokenizer, with an order and flags the tokenizer's matching of them follows.
//!
//! This module reproduces those steps so the same `add_tokens` calls reach the same `tokenizers`
//! code as in Python.

use std::collections::{HashMap, HashSet};

use tokenizers::{AddedToken, Tokenizer};

use super::{
    config::{Kwargs, PyToken, Special, TokenizerFiles},
    error::SlowTokenizerError,
};

/// How a slow class's `__init__` wraps a special token given as a plain string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wrap {
    /// Kept a string.
    Keep,
    /// `AddedToken(t, lstrip=False, rstrip=False)`.
    Plain,
    /// `AddedToken(t, special=True)`.
    Special,
    /// `AddedToken(t, lstrip=True, rstrip=False, normalized=False)`.
    MaskUnnormalized,
    /// `AddedToken(t, lstrip=True, rstrip=False)`.
    MaskLstrip,
    /// `AddedToken(t, lstrip=True, special=True)`.
    MaskLstripSpecial,
}

impl Wrap {
    fn apply(self, token: Special) -> Special {
        let Special::Str(content) = token else { return token };
        let token = PyToken::new(content);
        let token = match self {
            Wrap::Keep => return Special::Str(token.content),
            Wrap::Plain => token,
            Wrap::Special => PyToken { special: true, ..token },
            Wrap::MaskUnnormalized => PyToken { lstrip: true, normalized: Some(false), ..token },
            Wrap::MaskLstrip => PyToken { lstrip: true, ..token },
            Wrap::MaskLstripSpecial => PyToken { lstrip: true, special: true, ..token },
        };
        Special::Token(token)
    }
}

/// One special-token parameter of a slow class's `__init__`: key, default, wrapping.
pub(crate) type Slot = (&'static str, Option<&'static str>, Wrap);

/// The named special tokens, in `SPECIAL_TOKENS_ATTRIBUTES` order.
const NAMED: [&str; 7] =
    ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

/// A tokenizer's special tokens: `_special_tokens_map`.
#[derive(Clone, Debug)]
pub(crate) struct SpecialTokens {
    named: Vec<(&'static str, Option<Special>)>,
    additional: Vec<Special>,
    /// `extra_special_tokens`, appended to the attributes after the additional ones.
    extra: Vec<(String, Special)>,
}

impl SpecialTokens {
    /// The special tokens the slow class holds after its `__init__`: the class's parameters
    /// (`slots`, anything else passes through as given) and the additional tokens it settled.
    pub(crate) fn new(
        kwargs: &Kwargs,
        slots: &[Slot],
        additional: Vec<Special>,
    ) -> Result<Self, SlowTokenizerError> {
        let mut named = Vec::with_capacity(NAMED.len());
        for key in NAMED {
            let slot = slots.iter().find(|(k, _, _)| *k == key);
            let given = kwargs.special(key)?;
            let value = match (given, slot) {
                (Some(value), Some((_, _, wrap))) => value.map(|v| wrap.apply(v)),
                (Some(value), None) => value,
                (None, Some((_, default, wrap))) => {
                    default.map(|d| wrap.apply(Special::Str(d.into())))
                }
                (None, None) => None,
            };
            named.push((key, value));
        }
        let extra = kwargs.special_map("extra_special_tokens")?;
        Ok(Self { named, additional, extra })
    }

    /// What the fast class ends up with: a deep copy of the slow class's arguments.
    pub(crate) fn materialized(&self) -> Self {
        let copy = |s: &Special| match s {
            Special::Token(t) => Special::Token(t.materialized()),
            other => other.clone(),
        };
        Self {
            named: self.named.iter().map(|(k, v)| (*k, v.as_ref().map(copy))).collect(),
            additional: self.additional.iter().map(copy).collect(),
            extra: self.extra.iter().map(|(k, v)| (k.clone(), copy(v))).collect(),
        }
    }

    /// The text of a named special token (`str(tokenizer.cls_token)`).
    pub(crate) fn content(&self, key: &str) -> Option<&str> {
        self.named
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.as_ref())
            .map(|v| v.content())
    }

    /// `all_special_tokens_extended`: each attribute in order, deduplicated by text against the
    /// attributes before it (not within one list, as in Python), empty strings left out.
    pub(crate) fn extended(&self) -> Vec<&Special> {
        let truthy = |s: &&Special| !matches!(s, Special::Str(text) if text.is_empty());
        let mut groups: Vec<Vec<&Special>> = Vec::new();
        groups.extend(
            self.named.iter().filter_map(|(_, v)| v.as_ref()).filter(truthy).map(|v| vec![v]),
        );
        groups.push(self.additional.iter().collect());
        groups.extend(self.extra.iter().map(|(_, v)| v).filter(truthy).map(|v| vec![v]));
        let mut seen: Vec<&str> = Vec::new();
        let mut out = Vec::new();
        for group in groups {
            let fresh: Vec<&Special> =
                group.into_iter().filter(|s| !seen.contains(&s.content())).collect();
            seen.extend(fresh.iter().map(|s| s.content()));
            out.extend(fresh);
        }
        out
    }

    /// `all_special_tokens`: the texts of the above.
    pub(crate) fn all_contents(&self) -> Vec<String> {
        self.extended().into_iter().map(|s| s.content().to_owned()).collect()
    }
}

/// The slow tokenizer's `convert_tokens_to_ids`: its added tokens first, then its vocabulary,
/// the unknown token's id for anything else.
pub(crate) struct SlowIds<'v> {
    added: HashMap<String, u32>,
    vocab: &'v dyn Fn(&str) -> Option<u32>,
    unk: Option<String>,
}

impl<'v> SlowIds<'v> {
    /// The ids after `PreTrainedTokenizer.__init__`: `prefilled` (what the class put in
    /// `_added_tokens_decoder` itself), then the saved added tokens, then each special token not
    /// known yet, appended after the vocabulary (`vocab_len` distinct entries).
    pub(crate) fn new(
        specials: &SpecialTokens,
        files: &TokenizerFiles,
        prefilled: &[(u32, PyToken)],
        vocab: &'v dyn Fn(&str) -> Option<u32>,
        vocab_len: usize,
    ) -> Self {
        let mut decoder: Vec<(u32, &PyToken)> = prefilled.iter().map(|(i, t)| (*i, t)).collect();
        for (id, token) in &files.added_tokens_decoder {
            match decoder.iter_mut().find(|(i, _)| i == id) {
                Some(entry) => entry.1 = token,
                None => decoder.push((*id, token)),
            }
        }
        let mut added: HashMap<String, u32> = HashMap::new();
        for (id, token) in &decoder {
            added.insert(token.content.clone(), *id);
        }
        let unknown_added = added.keys().filter(|k| vocab(k).is_none()).count();
        let next = u32::try_from(vocab_len + unknown_added).unwrap_or(u32::MAX);
        let mut appended = 0;
        for special in specials.extended() {
            let content = special.content();
            if content.is_empty()
                || (matches!(special, Special::Str(_)) && added.contains_key(content))
            {
                continue;
            }
            let id = match added.get(content).copied().or_else(|| vocab(content)) {
                Some(id) => id,
                None => {
                    appended += 1;
                    next.saturating_add(appended - 1)
                }
            };
            added.insert(content.to_owned(), id);
        }
        Self { added, vocab, unk: specials.content("unk_token").map(str::to_owned) }
    }

    pub(crate) fn id(&self, token: &str) -> Option<u32> {
        let direct = |t: &str| self.added.get(t).copied().or_else(|| (self.vocab)(t));
        direct(token).or_else(|| self.unk.as_deref().and_then(direct))
    }
}

/// `PreTrainedTokenizerFast.__init__` after conversion: `split_special_tokens`, then the saved
/// added tokens the converter did not add already, then the special tokens still missing, each
/// marked special when it is one of the special tokens.
pub(crate) fn register(
    tokenizer: &mut Tokenizer,
    files: &TokenizerFiles,
    specials: &SpecialTokens,
) -> Result<(), SlowTokenizerError> {
    tokenizer.set_encode_special_tokens(files.kwargs.bool_or("split_special_tokens", false)?);

    // Python compares `repr`s, i.e. every field; AddedToken's Eq does too (its Hash is the text).
    let existing: HashSet<AddedToken> =
        tokenizer.get_added_tokens_decoder().into_values().collect();
    let mut saved: Vec<&(u32, PyToken)> = files.added_tokens_decoder.iter().collect();
    saved.sort_by_key(|(id, _)| *id);
    let mut pending: Vec<Special> = saved
        .into_iter()
        .filter(|(_, t)| !existing.contains(&t.resolved()))
        .map(|(_, t)| Special::Token(t.clone()))
        .collect();

    let mut known: HashSet<String> = existing.iter().map(|t| t.content.clone()).collect();
    known.extend(pending.iter().map(|s| s.content().to_owned()));
    for special in specials.extended() {
        let missing = match special {
            // A string is looked for among the texts (and the strings queued already)...
            Special::Str(s) => {
                !known.contains(s)
                    && !pending.iter().any(|p| matches!(p, Special::Str(q) if q == s))
            }
            // ...an AddedToken never equals a string, only an equal AddedToken.
            Special::Token(t) => {
                !pending.iter().any(|p| matches!(p, Special::Token(q) if q.same(t)))
            }
        };
        if missing {
            pending.push(special.clone());
        }
    }

    let all_special = specials.all_contents();
    let tokens: Vec<AddedToken> = pending
        .into_iter()
        .map(|p| match p {
            Special::Token(t) => {
                let special = t.special || all_special.contains(&t.content);
                PyToken { special, ..t }.resolved()
            }
            Special::Str(s) => {
                let special = all_special.contains(&s);
                PyToken { special, ..PyToken::new(s) }.resolved()
            }
        })
        .collect();
    if !tokens.is_empty() {
        tokenizer.add_tokens(&tokens);
    }
    Ok(())
}
