//! Arbitrary bytes as the SentencePiece model (`spiece.model`, `sentencepiece.bpe.model`) of
//! each tokenizer class that reads one, the way a model directory without tokenizer.json is
//! loaded: never a panic, neither loading it (protobuf, charsmap check, conversion) nor
//! encoding hard Unicode with what loads. The first byte picks the class.
#![no_main]

use std::{path::PathBuf, sync::OnceLock};

use libfuzzer_sys::fuzz_target;
#[path = "../../src/tokenize/slow/mod.rs"]
#[allow(dead_code)]
mod slow;

/// (tokenizer class, its model file name).
const CLASSES: [(&str, &str); 5] = [
    ("AlbertTokenizer", "spiece.model"),
    ("T5Tokenizer", "spiece.model"),
    ("XLMRobertaTokenizer", "sentencepiece.bpe.model"),
    ("MBartTokenizer", "sentencepiece.bpe.model"),
    ("MBart50Tokenizer", "sentencepiece.bpe.model"),
];

/// Accents, NUL, lone and stacked combining marks, right-to-left scripts, CJK, emoji
/// sequences, compatibility forms and whitespace runs.
const TEXTS: [&str; 9] = [
    "O rato roeu a roupa do rei de Roma; a rainha, com raiva, resolveu remendar.",
    "ação, coração, São João e a avó",
    "\u{0}nul\u{0} no meio\u{0}",
    "\u{301}e\u{301}\u{301}\u{301}\u{20dd}",
    "שלום עולם مرحبا بالعالم",
    "東京は日本の首都です。北京欢迎你",
    "👩‍👩‍👧‍👦 🏳️‍🌈 🇧🇷 👍🏽",
    "ﬁ ① Ｈｅｌｌｏ ㍿ Å",
    " \t\n\u{a0}\u{3000}  \r\n ",
];

/// One directory per class, holding its tokenizer_config.json; the model file is rewritten
/// for each input.
fn dirs() -> &'static Vec<PathBuf> {
    static DIRS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    DIRS.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("lote-fuzz-sentencepiece-{}", std::process::id()));
        CLASSES
            .iter()
            .map(|(class, _)| {
                let dir = root.join(class);
                std::fs::create_dir_all(&dir).expect("a temporary directory");
                let config = format!("{{\"tokenizer_class\": \"{class}\"}}");
                std::fs::write(dir.join("tokenizer_config.json"), config).expect("written");
                dir
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, model)) = data.split_first() else { return };
    let which = selector as usize % CLASSES.len();
    let dir = &dirs()[which];
    std::fs::write(dir.join(CLASSES[which].1), model).expect("written");
    if let Ok(Some(tokenizer)) = slow::from_slow_files(dir) {
        for text in TEXTS {
            if let Ok(encoding) = tokenizer.encode(text, true) {
                let ids = encoding.get_ids();
                assert!(ids.iter().all(|&id| (id as usize) < tokenizer.get_vocab_size(true)));
                let _ = tokenizer.decode(ids, false);
            }
        }
    }
});
