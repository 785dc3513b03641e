//! `translation`, as transformers' TranslationPipeline (4.57) prepares it for the two kinds of
//! translation models on the hub:
//! - T5: one input prefix (and generation settings) per direction in config.json's
//!   `task_specific_params` (`translation_en_to_de`: `"translate English to German: "`);
//!   `src_lang` and `tgt_lang` pick the direction, the first one listed when neither is given
//!   (as `pipeline("translation")` picks it).
//! - mBART-50 and mBART-cc25: language codes are special tokens; the source's is put around
//!   the input where the tokenizer class puts it (mBART-50 `[src] text </s>`, cc25
//!   `text </s> [src]`) and the target's is forced as the first generated token.

use std::{collections::BTreeMap, path::Path};

use serde_json::Value;

use super::TaskError;
use crate::{generation::GenerateOverrides, tokenize::TextTokenizer};

/// mBART-cc25's languages (transformers' `FAIRSEQ_LANGUAGE_CODES` of `MBartTokenizer`).
const MBART_CC25: &[&str] = &[
    "ar_AR", "cs_CZ", "de_DE", "en_XX", "es_XX", "et_EE", "fi_FI", "fr_XX", "gu_IN", "hi_IN",
    "it_IT", "ja_XX", "kk_KZ", "ko_KR", "lt_LT", "lv_LV", "my_MM", "ne_NP", "nl_XX", "ro_RO",
    "ru_RU", "si_LK", "tr_TR", "vi_VN", "zh_CN",
];

/// mBART-50's further languages (`MBart50Tokenizer` has cc25's and these).
const MBART_50_MORE: &[&str] = &[
    "af_ZA", "az_AZ", "bn_IN", "fa_IR", "he_IL", "hr_HR", "id_ID", "ka_GE", "km_KH", "mk_MK",
    "ml_IN", "mn_MN", "mr_IN", "pl_PL", "ps_AF", "pt_XX", "sv_SE", "sw_KE", "ta_IN", "te_IN",
    "th_TH", "tl_XX", "uk_UA", "ur_PK", "xh_ZA", "gl_ES", "sl_SI",
];

/// One direction a T5 model was trained for.
#[derive(Debug, Clone)]
pub struct Direction {
    pub src: String,
    pub tgt: String,
    pub prefix: String,
    pub overrides: GenerateOverrides,
}

/// How a model is told what to translate.
#[derive(Debug, Clone)]
pub enum Translator {
    Prefixes(Vec<Direction>),
    LanguageCodes {
        codes: BTreeMap<String, u32>,
        /// mBART-50 puts the source code first; cc25 after the final `</s>`.
        source_first: bool,
        eos: u32,
        default_src: Option<String>,
        default_tgt: Option<String>,
    },
}

/// What one call translates with.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub prefix: String,
    pub overrides: Option<GenerateOverrides>,
    /// The source language code and where it goes (mBART).
    pub source: Option<(u32, bool, u32)>,
    /// The token forced first (mBART's target language code).
    pub target: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum TranslationLoadError {
    #[error(
        "task `translation` needs translation prefixes in config.json `task_specific_params` \
         (T5's `translation_en_to_de`) or language codes in the tokenizer (mBART-50, mBART-cc25); \
         this model has neither"
    )]
    NotATranslator,
    #[error("config.json task_specific_params.{key}: {reason}")]
    BadDirection { key: String, reason: String },
    #[error("the tokenizer has language codes but no `</s>` token")]
    NoEos,
}

impl Translator {
    pub fn load(
        dir: &Path,
        config: &Value,
        tokenizer: &TextTokenizer,
    ) -> Result<Self, TranslationLoadError> {
        let mut directions = Vec::new();
        if let Some(params) = config["task_specific_params"].as_object() {
            for (key, settings) in params {
                let Some(pair) = key.strip_prefix("translation_") else { continue };
                let Some((src, tgt)) = pair.split_once("_to_") else { continue };
                let bad = |reason: String| TranslationLoadError::BadDirection {
                    key: key.clone(),
                    reason,
                };
                let overrides =
                    serde_json::from_value(settings.clone()).map_err(|e| bad(e.to_string()))?;
                directions.push(Direction {
                    src: src.into(),
                    tgt: tgt.into(),
                    prefix: settings["prefix"].as_str().unwrap_or_default().into(),
                    overrides,
                });
            }
        }
        if !directions.is_empty() {
            return Ok(Translator::Prefixes(directions));
        }
        let tokenizer_config = read_json(&dir.join("tokenizer_config.json"));
        let class = tokenizer_config["tokenizer_class"].as_str().unwrap_or_default();
        let source_first = class.starts_with("MBart50");
        if !class.starts_with("MBart") {
            return Err(TranslationLoadError::NotATranslator);
        }
        let listed = tokenizer_config["additional_special_tokens"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().or_else(|| t["content"].as_str()).map(String::from));
        let known = MBART_CC25.iter().chain(if source_first { MBART_50_MORE } else { &[] });
        let codes: BTreeMap<String, u32> = known
            .map(|c| c.to_string())
            .chain(listed.filter(|t| looks_like_code(t)))
            .filter_map(|code| tokenizer.token_to_id(&code).map(|id| (code, id)))
            .collect();
        if codes.is_empty() {
            return Err(TranslationLoadError::NotATranslator);
        }
        let eos = tokenizer.token_to_id("</s>").ok_or(TranslationLoadError::NoEos)?;
        let default = |key: &str| tokenizer_config[key].as_str().map(String::from);
        Ok(Translator::LanguageCodes {
            codes,
            source_first,
            eos,
            default_src: default("src_lang"),
            default_tgt: default("tgt_lang"),
        })
    }

    /// The direction of a call from its `src_lang` and `tgt_lang`.
    pub fn resolve(&self, src: Option<&str>, tgt: Option<&str>) -> Result<Resolved, TaskError> {
        match self {
            Translator::Prefixes(directions) => {
                let found = match (src, tgt) {
                    (None, None) => directions.first(),
                    _ => directions
                        .iter()
                        .find(|d| src.is_none_or(|s| s == d.src) && tgt.is_none_or(|t| t == d.tgt)),
                };
                let direction = found.ok_or_else(|| {
                    let known: Vec<String> =
                        directions.iter().map(|d| format!("{} to {}", d.src, d.tgt)).collect();
                    let (field, value) = match tgt {
                        Some(t) => ("tgt_lang", t),
                        None => ("src_lang", src.unwrap_or_default()),
                    };
                    TaskError::Invalid(format!(
                        "`{field}` `{value}`: this model translates {} (config.json \
                         task_specific_params)",
                        known.join(", ")
                    ))
                })?;
                Ok(Resolved {
                    prefix: direction.prefix.clone(),
                    overrides: Some(direction.overrides.clone()),
                    source: None,
                    target: None,
                })
            }
            Translator::LanguageCodes { codes, source_first, eos, default_src, default_tgt } => {
                let code = |field: &str, given: Option<&str>, default: &Option<String>| {
                    let name =
                        given.map(String::from).or_else(|| default.clone()).ok_or_else(|| {
                            TaskError::Invalid(format!(
                                "`{field}` is required for this model: one of {}",
                                names(codes)
                            ))
                        })?;
                    codes.get(&name).copied().ok_or_else(|| {
                        TaskError::Invalid(format!(
                            "`{field}` `{name}` is not a language of this model: one of {}",
                            names(codes)
                        ))
                    })
                };
                let source = code("src_lang", src, default_src)?;
                let target = code("tgt_lang", tgt, default_tgt)?;
                Ok(Resolved {
                    prefix: String::new(),
                    overrides: None,
                    source: Some((source, *source_first, *eos)),
                    target: Some(target),
                })
            }
        }
    }
}

/// A prompt's ids, its length before truncation, and whether it was cut.
pub type PromptIds = (Vec<u32>, usize, bool);

impl Resolved {
    /// The encoder's input from the text's own tokens (no special tokens), cut to `max_length`
    /// with the language code and `</s>` when `truncate`; None when the model wraps the input
    /// with its tokenizer's own special tokens (T5).
    pub fn wrap(
        &self,
        mut content: Vec<u32>,
        max_length: usize,
        truncate: bool,
    ) -> Option<Result<PromptIds, crate::tokenize::TokenizeError>> {
        let (code, first, eos) = self.source?;
        let total = content.len() + 2;
        let room = max_length.saturating_sub(2);
        let truncated = content.len() > room;
        if truncated && !truncate {
            return Some(Err(crate::tokenize::TokenizeError::TooLong {
                tokens: total,
                limit: max_length,
            }));
        }
        content.truncate(room);
        let ids = if first {
            std::iter::once(code).chain(content).chain([eos]).collect()
        } else {
            content.into_iter().chain([eos, code]).collect()
        };
        Some(Ok((ids, total, truncated)))
    }
}

fn looks_like_code(token: &str) -> bool {
    let bytes = token.as_bytes();
    bytes.len() == 5
        && bytes[2] == b'_'
        && bytes[..2].iter().all(u8::is_ascii_lowercase)
        && bytes[3..].iter().all(u8::is_ascii_uppercase)
}

fn names(codes: &BTreeMap<String, u32>) -> String {
    codes.keys().cloned().collect::<Vec<_>>().join(", ")
}

fn read_json(path: &Path) -> Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direction(src: &str, tgt: &str) -> Direction {
        Direction {
            src: src.into(),
            tgt: tgt.into(),
            prefix: format!("translate {src} to {tgt}: "),
            overrides: GenerateOverrides::default(),
        }
    }

    #[test]
    fn t5_directions_are_picked_by_language_and_the_first_is_the_default() {
        let t = Translator::Prefixes(vec![direction("en", "de"), direction("en", "fr")]);
        assert_eq!(t.resolve(None, None).unwrap().prefix, "translate en to de: ");
        assert_eq!(t.resolve(Some("en"), Some("fr")).unwrap().prefix, "translate en to fr: ");
        assert_eq!(t.resolve(None, Some("fr")).unwrap().prefix, "translate en to fr: ");
        assert_eq!(
            t.resolve(Some("en"), Some("pt")).unwrap_err().to_string(),
            "`tgt_lang` `pt`: this model translates en to de, en to fr (config.json \
             task_specific_params)"
        );
    }

    fn mbart(source_first: bool) -> Translator {
        let codes = [("en_XX", 10), ("pt_XX", 11)].map(|(c, i)| (c.to_string(), i));
        Translator::LanguageCodes {
            codes: codes.into_iter().collect(),
            source_first,
            eos: 2,
            default_src: Some("en_XX".into()),
            default_tgt: None,
        }
    }

    #[test]
    fn mbart_codes_wrap_the_input_where_the_tokenizer_puts_them() {
        let resolved = mbart(true).resolve(None, Some("pt_XX")).unwrap();
        assert_eq!(resolved.target, Some(11));
        assert_eq!(
            resolved.wrap(vec![5, 6, 7], 10, true).unwrap().unwrap(),
            (vec![10, 5, 6, 7, 2], 5, false)
        );
        let cc25 = mbart(false).resolve(Some("pt_XX"), Some("en_XX")).unwrap();
        assert_eq!(
            cc25.wrap(vec![5, 6, 7], 4, true).unwrap().unwrap(),
            (vec![5, 6, 2, 11], 5, true)
        );
        assert!(cc25.wrap(vec![5, 6, 7], 4, false).unwrap().is_err());
    }

    #[test]
    fn unknown_or_missing_languages_name_the_field_and_the_choices() {
        let t = mbart(true);
        assert_eq!(
            t.resolve(None, None).unwrap_err().to_string(),
            "`tgt_lang` is required for this model: one of en_XX, pt_XX"
        );
        assert_eq!(
            t.resolve(Some("xx_YY"), Some("pt_XX")).unwrap_err().to_string(),
            "`src_lang` `xx_YY` is not a language of this model: one of en_XX, pt_XX"
        );
        assert!(looks_like_code("pt_XX") && !looks_like_code("<mask>"));
    }
}
