//! Byte-level BPE from vocab.json + merges.txt: transformers' `GPT2Converter` (GPT-2) and
//! `RobertaConverter` (RoBERTa, BART), with what their fast classes change afterwards.
//!
//! merges.txt is read the way `GPT2Tokenizer` reads it, first line skipped whatever it holds
//! and the text after the last newline dropped, so a file missing its final newline loses its
//! last merge here exactly as it does in transformers.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use tokenizers::{
    Tokenizer,
    decoders::byte_level::ByteLevel,
    models::bpe::{BPE, Merges, Vocab},
    processors::{PostProcessorWrapper, roberta::RobertaProcessing, template::TemplateProcessing},
};

use super::{
    Class, build_error,
    config::TokenizerFiles,
    error::SlowTokenizerError,
    json,
    special_tokens::{self, SlowIds, SpecialTokens, Wrap},
};

const VOCAB: &str = "vocab.json";
const MERGES: &str = "merges.txt";

const GPT2_SLOTS: &[special_tokens::Slot] = &[
    ("bos_token", Some("<|endoftext|>"), Wrap::Plain),
    ("eos_token", Some("<|endoftext|>"), Wrap::Plain),
    ("unk_token", Some("<|endoftext|>"), Wrap::Plain),
    ("pad_token", None, Wrap::Plain),
];

const ROBERTA_SLOTS: &[special_tokens::Slot] = &[
    ("bos_token", Some("<s>"), Wrap::Plain),
    ("eos_token", Some("</s>"), Wrap::Plain),
    ("unk_token", Some("<unk>"), Wrap::Plain),
    ("sep_token", Some("</s>"), Wrap::Plain),
    ("pad_token", Some("<pad>"), Wrap::Plain),
    ("cls_token", Some("<s>"), Wrap::Plain),
    ("mask_token", Some("<mask>"), Wrap::MaskUnnormalized),
];

/// BART's mask token keeps `normalized` unset where RoBERTa's turns it off.
const BART_SLOTS: &[special_tokens::Slot] = &[
    ("bos_token", Some("<s>"), Wrap::Plain),
    ("eos_token", Some("</s>"), Wrap::Plain),
    ("unk_token", Some("<unk>"), Wrap::Plain),
    ("sep_token", Some("</s>"), Wrap::Plain),
    ("pad_token", Some("<pad>"), Wrap::Plain),
    ("cls_token", Some("<s>"), Wrap::Plain),
    ("mask_token", Some("<mask>"), Wrap::MaskLstrip),
];

pub(crate) fn build(
    dir: &Path,
    class: Class,
    files: &TokenizerFiles,
) -> Result<Tokenizer, SlowTokenizerError> {
    let fail = build_error(dir, class);
    let kwargs = &files.kwargs;
    let vocab_path = dir.join(VOCAB);
    let vocab: HashMap<String, u32> = json::parse(&vocab_path, &json::read_text(&vocab_path)?)?;
    let merges = read_merges(&dir.join(MERGES), &vocab)?;
    let add_prefix_space = kwargs.bool_or("add_prefix_space", false)?;

    let slots = match class {
        Class::Gpt2 => GPT2_SLOTS,
        Class::Bart => BART_SLOTS,
        _ => ROBERTA_SLOTS,
    };
    let additional = kwargs.special_list("additional_special_tokens")?.unwrap_or_default();
    let specials = SpecialTokens::new(kwargs, slots, additional)?;
    let lookup = |token: &str| vocab.get(token).copied();
    let slow = SlowIds::new(&specials, files, &[], &lookup, vocab.len());

    let model = BPE::builder()
        .vocab_and_merges(vocab.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vocab>(), merges)
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix(String::new())
        .fuse_unk(false)
        .build()
        .map_err(|e| fail(e.to_string()))?;

    let post_processor = match class {
        Class::Gpt2 => {
            gpt2_post_processor(kwargs.bool_or("add_bos_token", false)?, &specials, &slow)
                .map_err(&fail)?
        }
        // RobertaTokenizerFast / BartTokenizerFast rebuild the converter's processor with their
        // own add_prefix_space and trim_offsets (True unless the config says otherwise).
        _ => {
            let id = |key: &str| special_id(&specials, &slow, key).map_err(&fail);
            RobertaProcessing::new(id("sep_token")?, id("cls_token")?)
                .trim_offsets(kwargs.bool_or("trim_offsets", true)?)
                .add_prefix_space(add_prefix_space)
                .into()
        }
    };

    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_pre_tokenizer(Some(ByteLevel::new(add_prefix_space, true, true)))
        .with_post_processor(Some(post_processor))
        .with_decoder(Some(ByteLevel::default()));
    special_tokens::register(&mut tokenizer, files, &specials.materialized())?;
    Ok(tokenizer)
}

fn special_id(
    specials: &SpecialTokens,
    slow: &SlowIds,
    key: &str,
) -> Result<(String, u32), String> {
    let text = specials.content(key).ok_or_else(|| format!("it has no {key}"))?;
    let id = slow.id(text).ok_or_else(|| format!("{key} {text:?} is not in the vocabulary"))?;
    Ok((text.to_owned(), id))
}

/// `<bos> A` when add_bos_token, else a ByteLevel processor that changes nothing.
fn gpt2_post_processor(
    add_bos_token: bool,
    specials: &SpecialTokens,
    slow: &SlowIds,
) -> Result<PostProcessorWrapper, String> {
    if !add_bos_token {
        return Ok(ByteLevel::default().trim_offsets(false).into());
    }
    let (bos, bos_id) = special_id(specials, slow, "bos_token")?;
    let template = TemplateProcessing::builder()
        .try_single(format!("{bos}:0 $A:0"))?
        .try_pair(format!("{bos}:0 $A:0 $B:1"))?
        .special_tokens(vec![(bos, bos_id)])
        .build()
        .map_err(|e| e.to_string())?;
    Ok(template.into())
}

/// `GPT2Tokenizer`'s `bpe_ranks` keys: lines 2 to the last newline, split on whitespace, each
/// merge once in first-seen order; checked against the vocabulary so a mismatched pair of files
/// is reported by line.
fn read_merges(path: &Path, vocab: &HashMap<String, u32>) -> Result<Merges, SlowTokenizerError> {
    let text = json::read_text(path)?.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = text.split('\n').collect();
    let kept = lines.len().saturating_sub(1);
    let mut merges: Merges = Vec::new();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for (index, line) in lines.iter().enumerate().take(kept).skip(1) {
        let number = index + 1;
        let parts: Vec<&str> = line.split(is_python_space).filter(|p| !p.is_empty()).collect();
        let [left, right] = parts[..] else {
            return Err(SlowTokenizerError::BadMergeLine {
                path: path.to_owned(),
                line: number,
                text: (*line).to_owned(),
            });
        };
        let merged = format!("{left}{right}");
        if let Some(missing) =
            [left, right, merged.as_str()].into_iter().find(|t| !vocab.contains_key(*t))
        {
            return Err(SlowTokenizerError::MergeNotInVocab {
                path: path.to_owned(),
                line: number,
                left: left.to_owned(),
                right: right.to_owned(),
                missing: missing.to_owned(),
            });
        }
        let pair = (left.to_owned(), right.to_owned());
        if seen.insert(pair.clone()) {
            merges.push(pair);
        }
    }
    Ok(merges)
}

/// Python's `str.isspace`: Unicode White_Space plus the information separators U+001C..U+001F.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}
