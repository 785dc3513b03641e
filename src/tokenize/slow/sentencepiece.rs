//! SentencePiece models (spiece.model, sentencepiece.bpe.model): transformers' `SpmConverter`
//! and the subclasses for ALBERT, T5, XLM-RoBERTa, mBART and mBART-50.
//!
//! Each converter decides its own vocabulary layout (XLM-R and mBART shift SentencePiece's ids
//! to fairseq's: `<s> <pad> </s> <unk>` first, `<mask>` and the language codes last; T5 appends
//! its `<extra_id_N>` sentinels), its normalizer (the model's precompiled charsmap, ALBERT's
//! accent and case folding) and its Metaspace prepend scheme. Unigram models become
//! `Unigram`, BPE models `BPE` with merges recovered from the piece scores; none of these
//! converters enables byte fallback, so a model trained with it still sends unknown characters to
//! `<unk>`, as the converted tokenizer does in Python.

use std::{collections::HashMap, path::Path};

use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PreTokenizerWrapper, Tokenizer,
    models::{
        bpe::{BPE, Merges, Vocab},
        unigram::Unigram,
    },
    normalizers::{
        Lowercase, NFKD, Precompiled, Replace, Sequence, Strip, StripAccents,
        replace::ReplacePattern,
    },
    pre_tokenizers::metaspace::{Metaspace, PrependScheme},
    processors::template::TemplateProcessing,
};

use super::{
    Class, build_error, charsmap,
    config::{Flag, Kwargs, PyToken, Special, TokenizerFiles},
    error::SlowTokenizerError,
    sentencepiece_model::{
        self, MODEL_BPE, MODEL_UNIGRAM, ModelProto, PIECE_CONTROL, PIECE_USER_DEFINED,
    },
    special_tokens::{self, SlowIds, SpecialTokens, Wrap},
};

const ALBERT_SLOTS: &[special_tokens::Slot] = &[
    ("bos_token", Some("[CLS]"), Wrap::Keep),
    ("eos_token", Some("[SEP]"), Wrap::Keep),
    ("unk_token", Some("<unk>"), Wrap::Keep),
    ("sep_token", Some("[SEP]"), Wrap::Keep),
    ("pad_token", Some("<pad>"), Wrap::Keep),
    ("cls_token", Some("[CLS]"), Wrap::Keep),
    ("mask_token", Some("[MASK]"), Wrap::MaskUnnormalized),
];

const T5_SLOTS: &[special_tokens::Slot] = &[
    ("eos_token", Some("</s>"), Wrap::Special),
    ("unk_token", Some("<unk>"), Wrap::Special),
    ("pad_token", Some("<pad>"), Wrap::Special),
];

/// XLM-R's mask token is special and lstripped; mBART's unnormalized; mBART-50's only lstripped.
const fn fairseq_slots(mask: Wrap) -> [special_tokens::Slot; 7] {
    [
        ("bos_token", Some("<s>"), Wrap::Keep),
        ("eos_token", Some("</s>"), Wrap::Keep),
        ("unk_token", Some("<unk>"), Wrap::Keep),
        ("sep_token", Some("</s>"), Wrap::Keep),
        ("pad_token", Some("<pad>"), Wrap::Keep),
        ("cls_token", Some("<s>"), Wrap::Keep),
        ("mask_token", Some("<mask>"), mask),
    ]
}

const XLM_ROBERTA_SLOTS: [special_tokens::Slot; 7] = fairseq_slots(Wrap::MaskLstripSpecial);
const MBART_SLOTS: [special_tokens::Slot; 7] = fairseq_slots(Wrap::MaskUnnormalized);
/// mBART-50's `__init__` has no bos_token parameter.
const MBART50_SLOTS: [special_tokens::Slot; 6] = {
    let [_, eos, unk, sep, pad, cls, _] = fairseq_slots(Wrap::Keep);
    [eos, unk, sep, pad, cls, ("mask_token", Some("<mask>"), Wrap::MaskLstrip)]
};

/// mBART's `FAIRSEQ_LANGUAGE_CODES`; mBART-50 has these and 27 more.
const MBART_LANGUAGES: [&str; 25] = [
    "ar_AR", "cs_CZ", "de_DE", "en_XX", "es_XX", "et_EE", "fi_FI", "fr_XX", "gu_IN", "hi_IN",
    "it_IT", "ja_XX", "kk_KZ", "ko_KR", "lt_LT", "lv_LV", "my_MM", "ne_NP", "nl_XX", "ro_RO",
    "ru_RU", "si_LK", "tr_TR", "vi_VN", "zh_CN",
];
const MBART50_EXTRA_LANGUAGES: [&str; 27] = [
    "af_ZA", "az_AZ", "bn_IN", "fa_IR", "he_IL", "hr_HR", "id_ID", "ka_GE", "km_KH", "mk_MK",
    "ml_IN", "mn_MN", "mr_IN", "pl_PL", "ps_AF", "pt_XX", "sv_SE", "sw_KE", "ta_IN", "te_IN",
    "th_TH", "tl_XX", "uk_UA", "ur_PK", "xh_ZA", "gl_ES", "sl_SI",
];

fn languages(class: Class) -> Vec<&'static str> {
    match class {
        Class::MBart => MBART_LANGUAGES.to_vec(),
        Class::MBart50 => [MBART_LANGUAGES.as_slice(), &MBART50_EXTRA_LANGUAGES].concat(),
        _ => Vec::new(),
    }
}

pub(crate) fn build(
    dir: &Path,
    class: Class,
    files: &TokenizerFiles,
) -> Result<Tokenizer, SlowTokenizerError> {
    let fail = build_error(dir, class);
    let kwargs = &files.kwargs;
    let path = dir.join(class.model_file());
    let corrupt = |reason: String| SlowTokenizerError::SentencePiece { path: path.clone(), reason };
    let proto = read_model(&path)?;

    let extra_ids = match class {
        Class::T5 => t5_extra_ids(kwargs)?,
        _ => 0,
    };
    let vocab = converter_vocab(class, &proto, extra_ids);
    let ids: HashMap<String, u32> =
        vocab.iter().zip(0u32..).map(|((t, _), i)| (t.clone(), i)).collect();

    let (specials, prefilled) = class_specials(class, kwargs, &proto, extra_ids)?;
    let lookup = |token: &str| ids.get(token).copied();
    let slow = SlowIds::new(&specials, files, &prefilled, &lookup, ids.len());

    let normalizer =
        normalizer(class, Folding::of(class, kwargs)?, &proto).map_err(|e| match e {
            NormalizerError::Charsmap(reason) => {
                corrupt(format!("bad precompiled_charsmap: {reason}"))
            }
            NormalizerError::Other(reason) => fail(reason),
        })?;
    let src_lang = source_language(class, kwargs)?;

    let mut tokenizer = Tokenizer::new(model(class, &proto, vocab).map_err(&fail)?);
    tokenizer.add_tokens(&piece_tokens(&proto));
    tokenizer
        .with_normalizer(Some(normalizer))
        .with_pre_tokenizer(Some(PreTokenizerWrapper::Metaspace(metaspace(class, kwargs)?)))
        .with_decoder(Some(DecoderWrapper::Metaspace(metaspace(class, kwargs)?)));
    if let Some(template) = converter_post_processor(class, &slow).map_err(&fail)? {
        tokenizer.with_post_processor(Some(template));
    }

    let fast_specials = specials.materialized();
    special_tokens::register(&mut tokenizer, files, &fast_specials)?;
    if let Some(src_lang) = src_lang {
        let template = language_post_processor(class, &src_lang, &fast_specials, &tokenizer);
        tokenizer.with_post_processor(Some(template.map_err(&fail)?));
    }
    Ok(tokenizer)
}

fn read_model(path: &Path) -> Result<ModelProto, SlowTokenizerError> {
    let bytes = std::fs::read(path)
        .map_err(|source| SlowTokenizerError::Read { path: path.to_owned(), source })?;
    sentencepiece_model::decode(&bytes)
        .map_err(|reason| SlowTokenizerError::SentencePiece { path: path.to_owned(), reason })
}

/// mBART's `src_lang` (en_XX unless set), which must be one of its language codes.
fn source_language(class: Class, kwargs: &Kwargs) -> Result<Option<String>, SlowTokenizerError> {
    if !matches!(class, Class::MBart | Class::MBart50) {
        return Ok(None);
    }
    let src_lang = kwargs.string("src_lang")?.unwrap_or_else(|| "en_XX".to_owned());
    if !languages(class).contains(&src_lang.as_str()) {
        return Err(SlowTokenizerError::Config {
            path: kwargs.path_of("src_lang"),
            reason: format!(
                "src_lang {src_lang:?} is not one of {}'s language codes; fix the file",
                class.name()
            ),
        });
    }
    Ok(Some(src_lang))
}

/// T5's `extra_ids` (100 unless set; below zero means none), within what a vocabulary can hold.
fn t5_extra_ids(kwargs: &Kwargs) -> Result<usize, SlowTokenizerError> {
    const MOST: i64 = 1 << 20;
    match kwargs.integer("extra_ids")?.unwrap_or(100) {
        n if n > MOST => Err(SlowTokenizerError::Config {
            path: kwargs.path_of("extra_ids"),
            reason: format!(
                "extra_ids is {n}, more than the {MOST} a vocabulary can hold; fix the file"
            ),
        }),
        n => Ok(usize::try_from(n).unwrap_or(0)),
    }
}

/// The converter's `vocab(proto)`: pieces and scores in id order.
fn converter_vocab(class: Class, proto: &ModelProto, extra_ids: usize) -> Vec<(String, f64)> {
    let pieces = proto.pieces.iter().map(|p| (p.piece().to_owned(), f64::from(p.score())));
    match class {
        Class::Albert => pieces
            .map(|(piece, score)| {
                let score = if check_number_comma(&piece) { score } else { score - 100.0 };
                (piece, score)
            })
            .collect(),
        Class::T5 => {
            pieces.chain((0..extra_ids).rev().map(|i| (format!("<extra_id_{i}>"), 0.0))).collect()
        }
        _ => {
            let head = ["<s>", "<pad>", "</s>", "<unk>"].map(|t| (t.to_owned(), 0.0));
            let codes = languages(class).into_iter().map(|code| (code.to_owned(), 0.0));
            head.into_iter()
                .chain(pieces.skip(3))
                .chain(codes)
                .chain([("<mask>".to_owned(), 0.0)])
                .collect()
        }
    }
}

/// ALBERT's `check_number_comma`: pieces like "▁1," are pushed down so numbers keep their comma
/// apart.
fn check_number_comma(piece: &str) -> bool {
    let mut chars = piece.chars().rev();
    match (chars.next(), chars.next()) {
        (Some(','), Some(before)) => !python_isdigit(before),
        _ => true,
    }
}

/// The special tokens after the slow class's `__init__`, and the added tokens it registers
/// itself (T5's sentinels) before the saved ones.
fn class_specials(
    class: Class,
    kwargs: &Kwargs,
    proto: &ModelProto,
    extra_ids: usize,
) -> Result<(SpecialTokens, Vec<(u32, PyToken)>), SlowTokenizerError> {
    let given = kwargs.special_list("additional_special_tokens")?;
    let mut prefilled = Vec::new();
    let (slots, additional): (&[special_tokens::Slot], Vec<Special>) = match class {
        Class::Albert => (ALBERT_SLOTS, given.unwrap_or_default()),
        Class::XlmRoberta => (&XLM_ROBERTA_SLOTS, given.unwrap_or_default()),
        Class::T5 => {
            let (additional, sentinels) = t5_additional(kwargs, given, extra_ids)?;
            // `_added_tokens_decoder[len(sp_model) - 1 + extra_ids - i]`; an id below zero
            // (more sentinels listed than the model has room for) cannot be looked up anyway.
            let base = proto.pieces.len() + extra_ids;
            for i in 0..sentinels {
                let Some(id) = base.checked_sub(1 + i).and_then(|id| u32::try_from(id).ok()) else {
                    continue;
                };
                let token = PyToken {
                    lstrip: true,
                    rstrip: true,
                    special: true,
                    normalized: Some(false),
                    ..PyToken::new(format!("<extra_id_{i}>"))
                };
                prefilled.push((id, token));
            }
            (T5_SLOTS, additional)
        }
        Class::MBart => {
            let mut additional: Vec<Special> =
                MBART_LANGUAGES.iter().map(|c| Special::Str((*c).to_owned())).collect();
            for token in given.unwrap_or_default() {
                if !additional.iter().any(|a| python_str_eq(a, &token)) {
                    additional.push(token);
                }
            }
            (&MBART_SLOTS, additional)
        }
        _ => {
            let mut additional = given.unwrap_or_default();
            for code in languages(Class::MBart50) {
                let code = Special::Str(code.to_owned());
                if !additional.iter().any(|a| python_str_eq(a, &code)) {
                    additional.push(code);
                }
            }
            (&MBART50_SLOTS, additional)
        }
    };
    Ok((SpecialTokens::new(kwargs, slots, additional)?, prefilled))
}

/// `str in list`: a string equals a string, never an AddedToken.
fn python_str_eq(a: &Special, b: &Special) -> bool {
    matches!((a, b), (Special::Str(x), Special::Str(y)) if x == y)
}

/// T5's additional special tokens (the sentinels unless the config lists them) and how many
/// sentinels its `__init__` files in `_added_tokens_decoder`.
fn t5_additional(
    kwargs: &Kwargs,
    given: Option<Vec<Special>>,
    extra_ids: usize,
) -> Result<(Vec<Special>, usize), SlowTokenizerError> {
    let sentinels = || (0..extra_ids).map(|i| Special::Str(format!("<extra_id_{i}>")));
    let Some(mut given) = given else { return Ok((sentinels().collect(), extra_ids)) };
    let listed = given.iter().filter(|t| t.content().contains("<extra_id_")).count();
    if listed == 0 {
        given.extend(sentinels());
    } else if extra_ids > 0 && extra_ids != listed {
        return Err(SlowTokenizerError::Config {
            path: kwargs.path_of("additional_special_tokens"),
            reason: format!(
                "extra_ids is {extra_ids} but additional_special_tokens lists {listed} \
                 <extra_id_N> tokens; make them agree"
            ),
        });
    }
    Ok((given, listed))
}

fn model(
    class: Class,
    proto: &ModelProto,
    vocab: Vec<(String, f64)>,
) -> Result<ModelWrapper, String> {
    match proto.trainer().model_type() {
        MODEL_UNIGRAM => {
            let unk_id = match class {
                Class::Albert | Class::T5 => usize::try_from(proto.trainer().unk_id())
                    .map_err(|_| format!("its unk_id is {}", proto.trainer().unk_id()))?,
                _ => 3,
            };
            Ok(Unigram::from(vocab, Some(unk_id), false).map_err(|e| e.to_string())?.into())
        }
        MODEL_BPE => {
            let merges = generate_merges(proto, &vocab);
            let bpe_vocab: Vocab =
                vocab.into_iter().zip(0u32..).map(|((t, _), i)| (t, i)).collect();
            let bpe = BPE::builder()
                .vocab_and_merges(bpe_vocab, merges)
                .unk_token(proto.trainer().unk_piece().to_owned())
                .fuse_unk(true)
                .byte_fallback(false)
                .build()
                .map_err(|e| e.to_string())?;
            Ok(bpe.into())
        }
        other => Err(format!(
            "its SentencePiece model type is {other} (WORD or CHAR), which transformers cannot \
             convert either"
        )),
    }
}

/// `generate_merges(vocab, vocab_scores)`: every split of every piece whose halves are pieces,
/// highest score first, then longer left and right halves.
fn generate_merges(proto: &ModelProto, scores: &[(String, f64)]) -> Merges {
    let piece_ids: HashMap<&str, usize> =
        proto.pieces.iter().enumerate().map(|(i, p)| (p.piece(), i)).collect();
    // `dict(vocab_scores)`: the last score of a repeated piece, at its first place.
    let mut order: Vec<&str> = Vec::new();
    let mut score_of: HashMap<&str, f64> = HashMap::new();
    for (piece, score) in scores {
        if score_of.insert(piece, *score).is_none() {
            order.push(piece);
        }
    }
    let mut merges: Vec<(&str, &str, f64)> = Vec::new();
    for piece in order {
        let score = score_of.get(piece).copied().unwrap_or_default();
        let mut local: Vec<(&str, &str, f64)> = piece
            .char_indices()
            .skip(1)
            .map(|(at, _)| piece.split_at(at))
            .filter(|(l, r)| piece_ids.contains_key(l) && piece_ids.contains_key(r))
            .map(|(l, r)| (l, r, score))
            .collect();
        local.sort_by_key(|(l, r, _)| (piece_ids.get(l), piece_ids.get(r)));
        merges.extend(local);
    }
    // Python's `sorted(..., reverse=True)` is stable: equal keys keep their order.
    let key = |(l, r, s): &(&str, &str, f64)| (*s, l.chars().count(), r.chars().count());
    merges.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        kb.0.total_cmp(&ka.0).then(kb.1.cmp(&ka.1)).then(kb.2.cmp(&ka.2))
    });
    merges.into_iter().map(|(l, r, _)| (l.to_owned(), r.to_owned())).collect()
}

/// Control pieces become special added tokens, user-defined ones plain added tokens, neither
/// normalized.
fn piece_tokens(proto: &ModelProto) -> Vec<AddedToken> {
    proto
        .pieces
        .iter()
        .filter(|p| matches!(p.r#type(), PIECE_CONTROL | PIECE_USER_DEFINED))
        .map(|p| AddedToken::from(p.piece(), p.r#type() == PIECE_CONTROL).normalized(false))
        .collect()
}

/// ALBERT's case and accent settings (`keep_accents`, `do_lower_case`).
#[derive(Clone, Copy, Debug)]
struct Folding {
    keep_accents: bool,
    lowercase: bool,
}

impl Folding {
    /// Read for ALBERT only: the other converters ignore these settings.
    fn of(class: Class, kwargs: &Kwargs) -> Result<Self, SlowTokenizerError> {
        if class != Class::Albert {
            return Ok(Self { keep_accents: true, lowercase: false });
        }
        Ok(Self {
            keep_accents: kwargs.bool_or("keep_accents", false)?,
            lowercase: kwargs.bool_or("do_lower_case", true)?,
        })
    }
}

/// Why the normalizer could not be made: the model's charsmap, or anything else.
enum NormalizerError {
    Charsmap(String),
    Other(String),
}

/// `SpmConverter.normalizer`: the charsmap, trailing spaces stripped, runs of spaces as one "▁";
/// ALBERT's: quotes, accents and case folded, runs of spaces as one space.
fn normalizer(
    class: Class,
    folding: Folding,
    proto: &ModelProto,
) -> Result<NormalizerWrapper, NormalizerError> {
    let charsmap = proto.precompiled_charsmap();
    let mut steps: Vec<NormalizerWrapper> = Vec::new();
    let replace = |pattern: ReplacePattern, content: &str| {
        Replace::new(pattern, content)
            .map(NormalizerWrapper::from)
            .map_err(|e| NormalizerError::Other(e.to_string()))
    };
    if class == Class::Albert {
        steps.push(replace(ReplacePattern::String("``".into()), "\"")?);
        steps.push(replace(ReplacePattern::String("''".into()), "\"")?);
        if !folding.keep_accents {
            steps.push(NFKD.into());
            steps.push(StripAccents.into());
        }
        if folding.lowercase {
            steps.push(Lowercase.into());
        }
    }
    if !charsmap.is_empty() {
        charsmap::check(charsmap).map_err(NormalizerError::Charsmap)?;
        let precompiled =
            Precompiled::from(charsmap).map_err(|e| NormalizerError::Charsmap(e.to_string()))?;
        steps.push(precompiled.into());
    }
    if class == Class::Albert {
        steps.push(replace(ReplacePattern::Regex(" {2,}".into()), " ")?);
    } else {
        steps.push(Strip::new(false, true).into());
        steps.push(replace(ReplacePattern::Regex(" {2,}".into()), "\u{2581}")?);
    }
    Ok(Sequence::new(steps).into())
}

/// `_get_prepend_scheme`: "▁" before every word unless the class has add_prefix_space false;
/// only before the first one for T5 with `legacy=False`.
fn metaspace(class: Class, kwargs: &Kwargs) -> Result<Metaspace, SlowTokenizerError> {
    let (add_prefix_space, legacy) = match class {
        // T5Tokenizer reads `legacy=None` (missing or null) as the legacy behaviour.
        Class::T5 => (
            kwargs.bool_or("add_prefix_space", true)?,
            !matches!(kwargs.flag("legacy")?, Flag::Set(false)),
        ),
        _ => (true, true),
    };
    let scheme = match (add_prefix_space, legacy) {
        (false, _) => PrependScheme::Never,
        (true, true) => PrependScheme::Always,
        (true, false) => PrependScheme::First,
    };
    Ok(Metaspace::new('\u{2581}', scheme, true))
}

/// The converters' own post-processors; mBART's are replaced by its fast class (see
/// [`language_post_processor`]), so none is made for them here.
fn converter_post_processor(
    class: Class,
    slow: &SlowIds,
) -> Result<Option<TemplateProcessing>, String> {
    let id = |token: &str| {
        slow.id(token)
            .map(|id| (token.to_owned(), id))
            .ok_or_else(|| format!("{token:?} has no id"))
    };
    let (single, pair, tokens) = match class {
        Class::Albert => (
            "[CLS]:0 $A:0 [SEP]:0",
            "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
            vec![id("[CLS]")?, id("[SEP]")?],
        ),
        Class::T5 => ("$A </s>", "$A </s> $B </s>", vec![id("</s>")?]),
        Class::XlmRoberta => {
            ("<s> $A </s>", "<s> $A </s> </s> $B </s>", vec![id("<s>")?, id("</s>")?])
        }
        _ => return Ok(None),
    };
    let template = TemplateProcessing::builder()
        .try_single(single)?
        .try_pair(pair)?
        .special_tokens(tokens)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Some(template))
}

/// `set_src_lang_special_tokens` of the mBART fast classes: `A </s> lang` (mBART) or
/// `lang A </s>` (mBART-50), ids looked up in the finished tokenizer.
fn language_post_processor(
    class: Class,
    src_lang: &str,
    specials: &SpecialTokens,
    tokenizer: &Tokenizer,
) -> Result<TemplateProcessing, String> {
    let unk_id = specials.content("unk_token").and_then(|unk| tokenizer.token_to_id(unk));
    let token = |text: &str| -> Result<(String, u32), String> {
        let id =
            tokenizer.token_to_id(text).or(unk_id).ok_or_else(|| format!("{text:?} has no id"))?;
        let text = tokenizer.id_to_token(id).ok_or_else(|| format!("id {id} has no token"))?;
        Ok((text, id))
    };
    let eos = token(specials.content("eos_token").unwrap_or("None"))?;
    let lang = token(src_lang)?;
    let (prefix, suffix) = match class {
        Class::MBart => (vec![], vec![eos, lang]),
        _ => (vec![lang], vec![eos]),
    };
    let texts =
        |tokens: &[(String, u32)]| tokens.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>();
    let single = [texts(&prefix), vec!["$A".to_owned()], texts(&suffix)].concat();
    let pair = [texts(&prefix), vec!["$A".to_owned(), "$B".to_owned()], texts(&suffix)].concat();
    TemplateProcessing::builder()
        .try_single(single)?
        .try_pair(pair)?
        .special_tokens([prefix, suffix].concat())
        .build()
        .map_err(|e| e.to_string())
}

/// Python's `str.isdigit` (Unicode 14, as in Python 3.11): decimal digits and digit-valued
/// numbers such as superscripts and circled digits, not fractions or Roman numerals.
fn python_isdigit(c: char) -> bool {
    DIGIT_RANGES.iter().any(|(first, last)| (*first..=*last).contains(&c))
}

const DIGIT_RANGES: &[(char, char)] = &[
    ('\u{30}', '\u{39}'),
    ('\u{b2}', '\u{b3}'),
    ('\u{b9}', '\u{b9}'),
    ('\u{660}', '\u{669}'),
    ('\u{6f0}', '\u{6f9}'),
    ('\u{7c0}', '\u{7c9}'),
    ('\u{966}', '\u{96f}'),
    ('\u{9e6}', '\u{9ef}'),
    ('\u{a66}', '\u{a6f}'),
    ('\u{ae6}', '\u{aef}'),
    ('\u{b66}', '\u{b6f}'),
    ('\u{be6}', '\u{bef}'),
    ('\u{c66}', '\u{c6f}'),
    ('\u{ce6}', '\u{cef}'),
    ('\u{d66}', '\u{d6f}'),
    ('\u{de6}', '\u{def}'),
    ('\u{e50}', '\u{e59}'),
    ('\u{ed0}', '\u{ed9}'),
    ('\u{f20}', '\u{f29}'),
    ('\u{1040}', '\u{1049}'),
    ('\u{1090}', '\u{1099}'),
    ('\u{1369}', '\u{1371}'),
    ('\u{17e0}', '\u{17e9}'),
    ('\u{1810}', '\u{1819}'),
    ('\u{1946}', '\u{194f}'),
    ('\u{19d0}', '\u{19da}'),
    ('\u{1a80}', '\u{1a89}'),
    ('\u{1a90}', '\u{1a99}'),
    ('\u{1b50}', '\u{1b59}'),
    ('\u{1bb0}', '\u{1bb9}'),
    ('\u{1c40}', '\u{1c49}'),
    ('\u{1c50}', '\u{1c59}'),
    ('\u{2070}', '\u{2070}'),
    ('\u{2074}', '\u{2079}'),
    ('\u{2080}', '\u{2089}'),
    ('\u{2460}', '\u{2468}'),
    ('\u{2474}', '\u{247c}'),
    ('\u{2488}', '\u{2490}'),
    ('\u{24ea}', '\u{24ea}'),
    ('\u{24f5}', '\u{24fd}'),
    ('\u{24ff}', '\u{24ff}'),
    ('\u{2776}', '\u{277e}'),
    ('\u{2780}', '\u{2788}'),
    ('\u{278a}', '\u{2792}'),
    ('\u{a620}', '\u{a629}'),
    ('\u{a8d0}', '\u{a8d9}'),
    ('\u{a900}', '\u{a909}'),
    ('\u{a9d0}', '\u{a9d9}'),
    ('\u{a9f0}', '\u{a9f9}'),
    ('\u{aa50}', '\u{aa59}'),
    ('\u{abf0}', '\u{abf9}'),
    ('\u{ff10}', '\u{ff19}'),
    ('\u{104a0}', '\u{104a9}'),
    ('\u{10a40}', '\u{10a43}'),
    ('\u{10d30}', '\u{10d39}'),
    ('\u{10e60}', '\u{10e68}'),
    ('\u{11052}', '\u{1105a}'),
    ('\u{11066}', '\u{1106f}'),
    ('\u{110f0}', '\u{110f9}'),
    ('\u{11136}', '\u{1113f}'),
    ('\u{111d0}', '\u{111d9}'),
    ('\u{112f0}', '\u{112f9}'),
    ('\u{11450}', '\u{11459}'),
    ('\u{114d0}', '\u{114d9}'),
    ('\u{11650}', '\u{11659}'),
    ('\u{116c0}', '\u{116c9}'),
    ('\u{11730}', '\u{11739}'),
    ('\u{118e0}', '\u{118e9}'),
    ('\u{11950}', '\u{11959}'),
    ('\u{11c50}', '\u{11c59}'),
    ('\u{11d50}', '\u{11d59}'),
    ('\u{11da0}', '\u{11da9}'),
    ('\u{16a60}', '\u{16a69}'),
    ('\u{16ac0}', '\u{16ac9}'),
    ('\u{16b50}', '\u{16b59}'),
    ('\u{1d7ce}', '\u{1d7ff}'),
    ('\u{1e140}', '\u{1e149}'),
    ('\u{1e2f0}', '\u{1e2f9}'),
    ('\u{1e950}', '\u{1e959}'),
    ('\u{1f100}', '\u{1f10a}'),
    ('\u{1fbf0}', '\u{1fbf9}'),
];
