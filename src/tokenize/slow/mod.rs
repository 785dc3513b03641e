//! Fast tokenizers for model directories that ship only the "slow" tokenizer files.
//!
//! Many Hugging Face repositories have no tokenizer.json: just vocab.txt (WordPiece),
//! vocab.json + merges.txt (byte-level BPE) or a SentencePiece model, next to
//! tokenizer_config.json. transformers builds the fast tokenizer from them at load time
//! (`AutoTokenizer.from_pretrained(..., use_fast=True)` runs convert_slow_tokenizer.py); this
//! module does the same in Rust so such models tokenize exactly as they do in Python: same ids,
//! type ids, offsets, special-token masks and decoded text.
//!
//! The class is chosen as AutoTokenizer chooses it (tokenizer_config.json's `tokenizer_class`,
//! else config.json's `tokenizer_class` or `model_type`), and only then from the files present.
//! A class this module does not know is an error, never a guess: the wrong tokenizer would
//! silently feed the model the wrong ids.

mod byte_level_bpe;
mod charsmap;
mod config;
mod error;
mod json;
mod sentencepiece;
mod sentencepiece_model;
mod special_tokens;
#[cfg(test)]
mod tests;
mod wordpiece;

use std::path::Path;

use tokenizers::Tokenizer;

pub use error::SlowTokenizerError;

use config::{ModelConfig, TokenizerFiles};

/// The vocabulary files this module builds a tokenizer from.
pub const SLOW_TOKENIZER_FILES: [&str; 5] =
    ["vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model"];

/// What was looked for, for the error of a directory that has no tokenizer at all.
pub fn looked_for() -> &'static str {
    "tokenizer.json, or the slow tokenizer files vocab.txt (WordPiece), vocab.json + merges.txt \
     (byte-level BPE), spiece.model or sentencepiece.bpe.model (SentencePiece)"
}

/// The tokenizer of a model directory that has no tokenizer.json, built from its slow files;
/// `Ok(None)` when the directory has no slow tokenizer files either.
pub fn from_slow_files(dir: &Path) -> Result<Option<Tokenizer>, SlowTokenizerError> {
    if !SLOW_TOKENIZER_FILES.iter().any(|name| dir.join(name).is_file()) {
        return Ok(None);
    }
    let files = config::read(dir)?;
    let class = choose_class(dir, &files)?;
    for name in class.files() {
        if !dir.join(name).is_file() {
            return Err(SlowTokenizerError::MissingFile {
                path: dir.join(name),
                class: class.name(),
            });
        }
    }
    let tokenizer = match class.family() {
        Family::WordPiece => wordpiece::build(dir, class, &files)?,
        Family::ByteLevelBpe => byte_level_bpe::build(dir, class, &files)?,
        Family::SentencePiece => sentencepiece::build(dir, class, &files)?,
    };
    Ok(Some(tokenizer))
}

/// The transformers tokenizer classes this module reproduces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    Bert,
    DistilBert,
    Electra,
    Gpt2,
    Roberta,
    Bart,
    Albert,
    T5,
    XlmRoberta,
    MBart,
    MBart50,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    WordPiece,
    ByteLevelBpe,
    SentencePiece,
}

impl Class {
    const ALL: [Class; 11] = [
        Class::Bert,
        Class::DistilBert,
        Class::Electra,
        Class::Gpt2,
        Class::Roberta,
        Class::Bart,
        Class::Albert,
        Class::T5,
        Class::XlmRoberta,
        Class::MBart,
        Class::MBart50,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Class::Bert => "BertTokenizer",
            Class::DistilBert => "DistilBertTokenizer",
            Class::Electra => "ElectraTokenizer",
            Class::Gpt2 => "GPT2Tokenizer",
            Class::Roberta => "RobertaTokenizer",
            Class::Bart => "BartTokenizer",
            Class::Albert => "AlbertTokenizer",
            Class::T5 => "T5Tokenizer",
            Class::XlmRoberta => "XLMRobertaTokenizer",
            Class::MBart => "MBartTokenizer",
            Class::MBart50 => "MBart50Tokenizer",
        }
    }

    /// A class name as tokenizer_config.json writes it, with or without the `Fast` suffix.
    fn from_name(name: &str) -> Option<Class> {
        let name = name.strip_suffix("Fast").unwrap_or(name);
        Class::ALL.into_iter().find(|c| c.name() == name)
    }

    /// transformers' `TOKENIZER_MAPPING_NAMES` for the model types whose tokenizer is one of ours.
    fn from_model_type(model_type: &str) -> Option<Class> {
        Some(match model_type {
            "bert" | "megatron-bert" => Class::Bert,
            "distilbert" => Class::DistilBert,
            "electra" => Class::Electra,
            "gpt2" | "gpt_neo" | "gptj" | "gpt_bigcode" | "opt" => Class::Gpt2,
            "roberta" | "roberta-prelayernorm" | "data2vec-text" | "ibert" => Class::Roberta,
            "bart" => Class::Bart,
            "albert" => Class::Albert,
            "t5" | "longt5" | "umt5" => Class::T5,
            "xlm-roberta" | "xlm-roberta-xl" => Class::XlmRoberta,
            "mbart" => Class::MBart,
            "mbart50" => Class::MBart50,
            _ => return None,
        })
    }

    fn family(self) -> Family {
        match self {
            Class::Bert | Class::DistilBert | Class::Electra => Family::WordPiece,
            Class::Gpt2 | Class::Roberta | Class::Bart => Family::ByteLevelBpe,
            _ => Family::SentencePiece,
        }
    }

    /// The files the class's `vocab_files_names` require.
    fn files(self) -> &'static [&'static str] {
        match self {
            Class::Bert | Class::DistilBert | Class::Electra => &["vocab.txt"],
            Class::Gpt2 | Class::Roberta | Class::Bart => &["vocab.json", "merges.txt"],
            Class::Albert | Class::T5 => &["spiece.model"],
            Class::XlmRoberta | Class::MBart | Class::MBart50 => &["sentencepiece.bpe.model"],
        }
    }

    /// The SentencePiece model file of a SentencePiece class.
    fn model_file(self) -> &'static str {
        match self {
            Class::XlmRoberta | Class::MBart | Class::MBart50 => "sentencepiece.bpe.model",
            _ => "spiece.model",
        }
    }

    fn supported() -> String {
        Class::ALL.map(Class::name).join(", ")
    }
}

/// AutoTokenizer's choice: tokenizer_config.json's class, then config.json's class or model
/// type; with none of them, the only unambiguous vocabulary files.
fn choose_class(dir: &Path, files: &TokenizerFiles) -> Result<Class, SlowTokenizerError> {
    if let Some(name) = &files.tokenizer_class {
        return Class::from_name(name)
            .ok_or_else(|| unsupported_class(dir, config::TOKENIZER_CONFIG, name));
    }
    let ModelConfig { tokenizer_class, model_type } = config::read_model_config(dir)?;
    if let Some(name) = tokenizer_class {
        return Class::from_name(&name)
            .ok_or_else(|| unsupported_class(dir, config::MODEL_CONFIG, &name));
    }
    if let Some(model_type) = model_type {
        return Class::from_model_type(&model_type).ok_or_else(|| {
            SlowTokenizerError::UnsupportedModelType {
                path: dir.join(config::MODEL_CONFIG),
                model_type,
                supported: Class::supported(),
            }
        });
    }
    if dir.join("vocab.txt").is_file() {
        return Ok(Class::Bert);
    }
    if dir.join("vocab.json").is_file() || dir.join("merges.txt").is_file() {
        return Ok(Class::Gpt2);
    }
    let model =
        if dir.join("spiece.model").is_file() { "spiece.model" } else { "sentencepiece.bpe.model" };
    Err(SlowTokenizerError::Undetermined { path: dir.join(model) })
}

fn unsupported_class(dir: &Path, file: &str, class: &str) -> SlowTokenizerError {
    SlowTokenizerError::UnsupportedClass {
        path: dir.join(file),
        class: class.to_owned(),
        supported: Class::supported(),
    }
}

/// A `tokenizers` failure while assembling `class`'s tokenizer, as this module's error.
fn build_error(dir: &Path, class: Class) -> impl Fn(String) -> SlowTokenizerError + '_ {
    move |reason| SlowTokenizerError::Build { dir: dir.to_owned(), class: class.name(), reason }
}
