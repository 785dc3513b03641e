//! BERT-style WordPiece from vocab.txt: transformers' `BertConverter`, as BERT, DistilBERT and
//! ELECTRA (whose slow and fast classes are BERT's under other names) use it.
//!
//! The normalizer follows do_lower_case, strip_accents and tokenize_chinese_chars; a cased
//! Portuguese vocabulary (BERTimbau) keeps its accents because do_lower_case is false and
//! strip_accents unset.

use std::{collections::HashMap, path::Path};

use tokenizers::{
    Tokenizer, decoders::wordpiece::WordPiece as WordPieceDecoder, models::wordpiece::WordPiece,
    normalizers::BertNormalizer, pre_tokenizers::bert::BertPreTokenizer,
    processors::template::TemplateProcessing,
};

use super::{
    Class, build_error,
    config::{Flag, TokenizerFiles},
    error::SlowTokenizerError,
    json,
    special_tokens::{self, SlowIds, SpecialTokens, Wrap},
};

const VOCAB: &str = "vocab.txt";

/// `BertTokenizer.__init__`'s special-token parameters.
const SLOTS: &[special_tokens::Slot] = &[
    ("unk_token", Some("[UNK]"), Wrap::Keep),
    ("sep_token", Some("[SEP]"), Wrap::Keep),
    ("pad_token", Some("[PAD]"), Wrap::Keep),
    ("cls_token", Some("[CLS]"), Wrap::Keep),
    ("mask_token", Some("[MASK]"), Wrap::Keep),
];

/// The BasicTokenizer settings the normalizer is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Normalization {
    lowercase: bool,
    strip_accents: Option<bool>,
    chinese_chars: bool,
}

impl Normalization {
    fn normalizer(self) -> BertNormalizer {
        BertNormalizer::new(true, self.chinese_chars, self.strip_accents, self.lowercase)
    }
}

pub(crate) fn build(
    dir: &Path,
    class: Class,
    files: &TokenizerFiles,
) -> Result<Tokenizer, SlowTokenizerError> {
    let fail = build_error(dir, class);
    let kwargs = &files.kwargs;
    let vocab = read_vocab(&dir.join(VOCAB))?;
    let arguments = Normalization {
        lowercase: kwargs.bool_or("do_lower_case", true)?,
        strip_accents: match kwargs.flag("strip_accents")? {
            Flag::Set(b) => Some(b),
            Flag::Absent | Flag::Null => None,
        },
        chinese_chars: kwargs.bool_or("tokenize_chinese_chars", true)?,
    };
    // Without a BasicTokenizer the converter falls back to no lowercasing, no accent stripping.
    let converted = if kwargs.bool_or("do_basic_tokenize", true)? {
        arguments
    } else {
        Normalization { lowercase: false, strip_accents: Some(false), chinese_chars: false }
    };

    let additional = kwargs.special_list("additional_special_tokens")?.unwrap_or_default();
    let specials = SpecialTokens::new(kwargs, SLOTS, additional)?;
    let lookup = |token: &str| vocab.get(token).copied();
    let slow = SlowIds::new(&specials, files, &[], &lookup, vocab.len());

    let unk = specials.content("unk_token").unwrap_or("None").to_owned();
    let model = WordPiece::builder()
        .vocab(
            vocab.iter().map(|(k, v)| (k.clone(), *v)).collect::<tokenizers::models::bpe::Vocab>(),
        )
        .unk_token(unk)
        .build()
        .map_err(|e| fail(e.to_string()))?;

    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(converted.normalizer()))
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_post_processor(Some(post_processor(&specials, &slow).map_err(&fail)?))
        .with_decoder(Some(WordPieceDecoder::new("##".into(), true)));

    special_tokens::register(&mut tokenizer, files, &specials.materialized())?;
    // BertTokenizerFast rebuilds the normalizer from its own arguments when the converted one
    // disagrees with them, after the added tokens were matched against the converted one.
    if converted != arguments {
        tokenizer.with_normalizer(Some(arguments.normalizer()));
    }
    Ok(tokenizer)
}

/// `[CLS] A [SEP]` and `[CLS] A [SEP] B [SEP]`, B with type id 1.
fn post_processor(specials: &SpecialTokens, slow: &SlowIds) -> Result<TemplateProcessing, String> {
    let token = |key: &str| -> Result<(String, u32), String> {
        let text = specials.content(key).ok_or_else(|| format!("it has no {key}"))?;
        let id = slow.id(text).ok_or_else(|| format!("{key} {text:?} is not in the vocabulary"))?;
        Ok((text.to_owned(), id))
    };
    let (cls, cls_id) = token("cls_token")?;
    let (sep, sep_id) = token("sep_token")?;
    TemplateProcessing::builder()
        .try_single(format!("{cls}:0 $A:0 {sep}:0"))?
        .try_pair(format!("{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1"))?
        .special_tokens(vec![(cls, cls_id), (sep, sep_id)])
        .build()
        .map_err(|e| e.to_string())
}

/// vocab.txt as `load_vocab` reads it (one token a line, universal newlines, the id is the line
/// index); a token on two lines would leave a hole in the ids, so it is refused.
fn read_vocab(path: &Path) -> Result<HashMap<String, u32>, SlowTokenizerError> {
    let text = json::read_text(path)?;
    let mut vocab: HashMap<String, u32> = HashMap::new();
    for (index, token) in python_lines(&text).into_iter().enumerate() {
        let id = u32::try_from(index).map_err(|_| SlowTokenizerError::Config {
            path: path.to_owned(),
            reason: "has more lines than token ids can number".into(),
        })?;
        if let Some(first) = vocab.get(&token) {
            return Err(SlowTokenizerError::DuplicateToken {
                path: path.to_owned(),
                token,
                first: *first as usize + 1,
                second: index + 1,
            });
        }
        vocab.insert(token, id);
    }
    Ok(vocab)
}

/// The lines Python's text mode yields: `\r\n` and `\r` read as `\n`, no empty line after a
/// final newline.
pub(crate) fn python_lines(text: &str) -> Vec<String> {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    if text.is_empty() || text.ends_with('\n') {
        lines.pop();
    }
    lines
}
