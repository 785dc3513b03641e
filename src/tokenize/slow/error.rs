//! Why a model directory's slow tokenizer files could not be turned into a tokenizer.
//!
//! Every message is one line that names the file at fault and says what to do about it: these
//! reach people who downloaded a model, not people who know the converter's internals.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SlowTokenizerError {
    #[error("{}: cannot read it ({source}); check that it is a readable file", path.display())]
    Read { path: PathBuf, source: std::io::Error },

    #[error(
        "{}: invalid JSON at line {line}, column {column} ({message}); fix the file or download \
         it again",
        path.display()
    )]
    Json { path: PathBuf, line: usize, column: usize, message: String },

    /// A setting of the right JSON syntax but the wrong shape or value.
    #[error("{}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },

    #[error(
        "{}: token {token:?} is on line {first} and again on line {second}; each token must appear \
         once, so the file is damaged: download it again",
        path.display()
    )]
    DuplicateToken { path: PathBuf, token: String, first: usize, second: usize },

    #[error(
        "{}: line {line} is {text:?}, not two tokens separated by a space; the file is damaged: \
         download it again",
        path.display()
    )]
    BadMergeLine { path: PathBuf, line: usize, text: String },

    #[error(
        "{}: line {line} merges {left:?} and {right:?} but {missing:?} is not in vocab.json; \
         merges.txt and vocab.json must come from the same tokenizer",
        path.display()
    )]
    MergeNotInVocab { path: PathBuf, line: usize, left: String, right: String, missing: String },

    #[error(
        "{}: not a valid SentencePiece model ({reason}); the file is corrupt or truncated: \
         download it again",
        path.display()
    )]
    SentencePiece { path: PathBuf, reason: String },

    #[error(
        "{}: tokenizer_class {class:?} cannot be built from slow tokenizer files (supported: \
         {supported}); add the model's tokenizer.json (transformers' \
         AutoTokenizer.from_pretrained(...).save_pretrained(...) writes one)",
        path.display()
    )]
    UnsupportedClass { path: PathBuf, class: String, supported: String },

    #[error(
        "{}: model_type {model_type:?} has no tokenizer that can be built from slow tokenizer \
         files, and tokenizer_config.json names no tokenizer_class; add tokenizer_class \
         (supported: {supported}) or the model's tokenizer.json",
        path.display()
    )]
    UnsupportedModelType { path: PathBuf, model_type: String, supported: String },

    #[error(
        "{}: a SentencePiece model alone does not say which tokenizer it belongs to (ALBERT, T5, \
         XLM-RoBERTa, mBART...); add tokenizer_class to tokenizer_config.json or model_type to \
         config.json",
        path.display()
    )]
    Undetermined { path: PathBuf },

    #[error("{}: not found, and {class} needs it; download it with the model", path.display())]
    MissingFile { path: PathBuf, class: &'static str },

    #[error("{}: cannot build the {class} tokenizer: {reason}", dir.display())]
    Build { dir: PathBuf, class: &'static str, reason: String },
}
