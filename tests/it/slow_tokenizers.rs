//! Slow tokenizer files (vocab.txt, vocab.json + merges.txt, SentencePiece models) against
//! transformers: every tiny directory written by tests/fixtures/make_slow_tokenizers.py is built
//! with `from_slow_files` and must tokenize its reference corpus exactly as
//! `AutoTokenizer.from_pretrained(dir, use_fast=True)` did: ids, type ids, char offsets,
//! special-token masks and both decodes, for single texts and pairs, and its serialized form must
//! equal transformers' converted backend tokenizer part by part.
//!
//! Offsets are compared as `encode_char_offsets` gives them, which is what transformers' fast
//! tokenizers call and what lote calls.

use std::path::PathBuf;

use lote::tokenize::{TextTokenizer, slow::from_slow_files};
use serde::Deserialize;
use tokenizers::{EncodeInput, Tokenizer};

#[derive(Deserialize)]
struct Reference {
    fast_class: String,
    cases: Vec<Case>,
    /// `backend_tokenizer.to_str()`, charsmaps replaced by their digest.
    backend_tokenizer: serde_json::Value,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    pair: Option<String>,
    input_ids: Vec<u32>,
    token_type_ids: Vec<u32>,
    offset_mapping: Vec<(usize, usize)>,
    special_tokens_mask: Vec<u32>,
    tokens: Vec<String>,
    decoded: String,
    decoded_skip_special: String,
}

fn fixtures() -> PathBuf {
    crate::common::fixtures_dir().join("slow_tokenizers")
}

fn input(case: &Case) -> EncodeInput<'_> {
    match &case.pair {
        Some(pair) => (case.text.as_str(), pair.as_str()).into(),
        None => case.text.as_str().into(),
    }
}

/// FNV-1a 64 of UTF-8 text, as make_slow_tokenizers.py digests charsmaps.
fn fnv1a64(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

fn without_charsmaps(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            let precompiled = map.get("type").and_then(|t| t.as_str()) == Some("Precompiled");
            for (key, inner) in map.iter_mut() {
                match inner {
                    serde_json::Value::String(s)
                        if precompiled && key == "precompiled_charsmap" =>
                    {
                        *s = format!("fnv1a64:{}", fnv1a64(s));
                    }
                    _ => without_charsmaps(inner),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(without_charsmaps),
        _ => {}
    }
}

/// JSON equality, numbers within a few ulps: serde_json's default float parser (no
/// `float_roundtrip`) may land one ulp away from the exact value Python wrote.
fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value::{Array, Number, Object};
    match (a, b) {
        (Number(x), Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) if x.is_finite() && y.is_finite() => {
                x == y || (x - y).abs() <= 1e-14 * x.abs().max(1.0)
            }
            _ => x == y,
        },
        (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y)),
        (Object(x), Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// The first component of the serialized tokenizer that differs from transformers' one.
fn compare_json(tokenizer: &Tokenizer, reference: &serde_json::Value) -> Result<(), String> {
    let mut ours = serde_json::to_value(tokenizer).map_err(|e| e.to_string())?;
    without_charsmaps(&mut ours);
    let parts =
        ["added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder", "model"];
    for part in parts.into_iter().chain(["truncation", "padding"]) {
        if !same_json(&ours[part], &reference[part]) {
            let cut = |v: &serde_json::Value| v.to_string().chars().take(600).collect::<String>();
            return Err(format!(
                "{part}: ours {} transformers {}",
                cut(&ours[part]),
                cut(&reference[part])
            ));
        }
    }
    if !same_json(&ours, reference) {
        return Err("the serialized tokenizers differ".into());
    }
    Ok(())
}

/// The first difference between what the tokenizer does and what transformers did.
fn compare(tokenizer: &Tokenizer, case: &Case) -> Result<(), String> {
    let encoding = tokenizer.encode_char_offsets(input(case), true).map_err(|e| e.to_string())?;
    let check = |what: &str, ours: String, theirs: String| {
        if ours == theirs {
            Ok(())
        } else {
            Err(format!("{what}: ours {ours} transformers {theirs}"))
        }
    };
    check("tokens", format!("{:?}", encoding.get_tokens()), format!("{:?}", case.tokens))?;
    check("ids", format!("{:?}", encoding.get_ids()), format!("{:?}", case.input_ids))?;
    check(
        "type ids",
        format!("{:?}", encoding.get_type_ids()),
        format!("{:?}", case.token_type_ids),
    )?;
    check(
        "offsets",
        format!("{:?}", encoding.get_offsets()),
        format!("{:?}", case.offset_mapping),
    )?;
    check(
        "special mask",
        format!("{:?}", encoding.get_special_tokens_mask()),
        format!("{:?}", case.special_tokens_mask),
    )?;
    let decode = |skip| tokenizer.decode(encoding.get_ids(), skip).map_err(|e| e.to_string());
    check("decode", format!("{:?}", decode(false)?), format!("{:?}", case.decoded))?;
    check(
        "decode skipping specials",
        format!("{:?}", decode(true)?),
        format!("{:?}", case.decoded_skip_special),
    )
}

#[test]
fn slow_files_tokenize_as_transformers_does() {
    let root = fixtures();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}; run `make fixtures`", root.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.join("reference.json").is_file())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "{}: no reference directories", root.display());

    let mut failures = Vec::new();
    let (mut all_matched, mut all_cases) = (0, 0);
    for dir in &dirs {
        let name = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
        let reference: Reference = serde_json::from_str(&text).expect("reference.json parses");
        let tokenizer = match from_slow_files(dir) {
            Ok(Some(tokenizer)) => tokenizer,
            Ok(None) => panic!("{name}: no slow tokenizer files found"),
            Err(e) => panic!("{name}: {e}"),
        };
        if let Err(diff) = compare_json(&tokenizer, &reference.backend_tokenizer) {
            failures.push(format!("{name} tokenizer.json: {diff}"));
        }
        let mut matched = 0;
        for case in &reference.cases {
            match compare(&tokenizer, case) {
                Ok(()) => matched += 1,
                Err(diff) => {
                    failures.push(format!("{name} {:?} / {:?}: {diff}", case.text, case.pair))
                }
            }
        }
        println!(
            "{name} ({}): {matched}/{} cases match",
            reference.fast_class,
            reference.cases.len()
        );
        all_matched += matched;
        all_cases += reference.cases.len();
    }
    println!("all: {all_matched}/{all_cases} cases match in {} directories", dirs.len());
    assert!(
        failures.is_empty(),
        "{} of {all_cases} cases differ from transformers:\n{}",
        failures.len(),
        failures.iter().take(30).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// The same directories through lote's own loader: a model directory without tokenizer.json
/// loads its slow files, with the special tokens the tasks need.
#[test]
fn text_tokenizer_loads_directories_without_tokenizer_json() {
    let dir = fixtures().join("bert-uncased");
    assert!(!dir.join("tokenizer.json").exists());
    let tokenizer = TextTokenizer::load(&dir, Some(512)).expect("loads from vocab.txt");
    assert!(tokenizer.word_aware, "WordPiece marks continuations with ##");
    assert_eq!(tokenizer.mask.as_ref().map(|(text, _)| text.as_str()), Some("[MASK]"));
    let encoded = tokenizer.encode("Ação não é omissão", false).expect("encodes");
    assert_eq!(encoded.ids.first().copied(), tokenizer.cls_id);

    let t5 = TextTokenizer::load(&fixtures().join("t5"), None).expect("loads from spiece.model");
    assert!(!t5.word_aware);
    assert!(!t5.encode("Olá, mundo 🌍", false).expect("encodes").is_empty());
}

#[test]
fn a_directory_without_any_tokenizer_says_what_was_looked_for() {
    let dir = tempfile::tempdir().expect("temp dir");
    let error = TextTokenizer::load(dir.path(), None).err().expect("no tokenizer");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: no tokenizer: looked for tokenizer.json, or the slow tokenizer files vocab.txt \
             (WordPiece), vocab.json + merges.txt (byte-level BPE), spiece.model or \
             sentencepiece.bpe.model (SentencePiece)",
            dir.path().display()
        )
    );
}

#[test]
fn damaged_slow_files_are_named_in_the_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("vocab.txt"), "[PAD]\n[UNK]\ncasa\ncasa\n").expect("write");
    let error = TextTokenizer::load(dir.path(), None).err().expect("duplicate line");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "{}: token \"casa\" is on line 3 and again on line 4",
            dir.path().join("vocab.txt").display()
        )),
        "{message}"
    );
}
