//! Bad model directories: each must fail with one line that names the file and says what to do.
//! (Good directories are checked against transformers itself in tests/parity.rs.)

use std::path::Path;

use prost::Message;

use super::{
    from_slow_files, looked_for,
    sentencepiece_model::{ModelProto, NormalizerSpec, SentencePiece, TrainerSpec},
};

const BERT_VOCAB: &str = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nola\n##s\nmundo\n";

fn dir_with(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).expect("write fixture file");
    }
    dir
}

fn error_of(dir: &Path) -> String {
    match from_slow_files(dir) {
        Ok(Some(_)) => panic!("{} built a tokenizer", dir.display()),
        Ok(None) => panic!("{} has no tokenizer files", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn path(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).display().to_string()
}

/// A tiny Unigram SentencePiece model: `<unk>`, `<s>`, `</s>` and a few pieces.
fn sentencepiece_model() -> Vec<u8> {
    sentencepiece_model_with(Vec::new())
}

fn sentencepiece_model_with(charsmap: Vec<u8>) -> Vec<u8> {
    let piece = |text: &str, score: f32, kind: i32| SentencePiece {
        piece: Some(text.into()),
        score: Some(score),
        r#type: Some(kind),
    };
    ModelProto {
        pieces: vec![
            piece("<unk>", 0.0, 2),
            piece("<s>", 0.0, 3),
            piece("</s>", 0.0, 3),
            piece("▁", -1.0, 1),
            piece("▁ola", -2.0, 1),
            piece("o", -3.0, 1),
            piece("l", -3.0, 1),
            piece("a", -3.0, 1),
        ],
        trainer_spec: Some(TrainerSpec {
            model_type: Some(1),
            unk_id: Some(0),
            ..Default::default()
        }),
        normalizer_spec: Some(NormalizerSpec { precompiled_charsmap: Some(charsmap) }),
    }
    .encode_to_vec()
}

#[test]
fn a_directory_without_tokenizer_files_has_no_tokenizer() {
    let dir = dir_with(&[
        ("config.json", br#"{"model_type": "bert"}"#),
        ("tokenizer_config.json", b"not even json"),
    ]);
    assert!(matches!(from_slow_files(dir.path()), Ok(None)));
    assert_eq!(
        looked_for(),
        "tokenizer.json, or the slow tokenizer files vocab.txt (WordPiece), vocab.json + \
         merges.txt (byte-level BPE), spiece.model or sentencepiece.bpe.model (SentencePiece)"
    );
}

#[test]
fn a_token_twice_in_vocab_txt_names_both_lines() {
    let dir = dir_with(&[(
        "vocab.txt",
        b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nol\xc3\xa1\nmundo\nol\xc3\xa1\n",
    )]);
    assert_eq!(
        error_of(dir.path()),
        format!(
            "{}: token \"olá\" is on line 6 and again on line 8; each token must appear once, so \
             the file is damaged: download it again",
            path(&dir, "vocab.txt")
        )
    );
}

#[test]
fn a_merge_whose_result_is_not_in_the_vocabulary_names_the_line() {
    let dir = dir_with(&[
        ("vocab.json", br#"{"a": 0, "b": 1, "ab": 2, "c": 3}"#),
        ("merges.txt", b"#version: 0.2\na b\nab c\n"),
    ]);
    assert_eq!(
        error_of(dir.path()),
        format!(
            "{}: line 3 merges \"ab\" and \"c\" but \"abc\" is not in vocab.json; merges.txt and \
             vocab.json must come from the same tokenizer",
            path(&dir, "merges.txt")
        )
    );
}

#[test]
fn a_merge_whose_part_is_not_in_the_vocabulary_names_the_line() {
    let dir = dir_with(&[
        ("vocab.json", br#"{"a": 0, "b": 1, "ab": 2}"#),
        ("merges.txt", b"#version: 0.2\nx b\n"),
        ("tokenizer_config.json", br#"{"tokenizer_class": "RobertaTokenizer"}"#),
    ]);
    assert_eq!(
        error_of(dir.path()),
        format!(
            "{}: line 2 merges \"x\" and \"b\" but \"x\" is not in vocab.json; merges.txt and \
             vocab.json must come from the same tokenizer",
            path(&dir, "merges.txt")
        )
    );
}

#[test]
fn a_merges_line_that_is_not_a_pair_names_the_line() {
    let dir = dir_with(&[
        ("vocab.json", br#"{"a": 0, "b": 1, "ab": 2}"#),
        ("merges.txt", b"#version: 0.2\na b\n\na b\n"),
    ]);
    assert_eq!(
        error_of(dir.path()),
        format!(
            "{}: line 3 is \"\", not two tokens separated by a space; the file is damaged: \
             download it again",
            path(&dir, "merges.txt")
        )
    );
}

#[test]
fn a_truncated_sentencepiece_model_is_named() {
    let model = sentencepiece_model();
    let dir = dir_with(&[
        ("spiece.model", &model[..model.len() / 2]),
        ("tokenizer_config.json", br#"{"tokenizer_class": "T5Tokenizer"}"#),
    ]);
    assert_eq!(
        error_of(dir.path()),
        format!(
            "{}: not a valid SentencePiece model (failed to decode Protobuf message: \
             ModelProto.pieces: buffer underflow); the file is corrupt or truncated: download it \
             again",
            path(&dir, "spiece.model")
        )
    );
}

#[test]
fn a_sentencepiece_model_cut_between_fields_is_refused_too() {
    // Only the pieces: a valid message, but SentencePiece refuses a model without its specs.
    let model = ModelProto::decode(sentencepiece_model().as_slice()).expect("decodes");
    let pieces_only = ModelProto { pieces: model.pieces, ..Default::default() }.encode_to_vec();
    let dir = dir_with(&[
        ("sentencepiece.bpe.model", &pieces_only),
        ("config.json", br#"{"model_type": "xlm-roberta"}"#),
    ]);
    assert_eq!(
        error_of(dir.path()),
        format!(
            "{}: not a valid SentencePiece model (it has no trainer_spec); the file is corrupt \
             or truncated: download it again",
            path(&dir, "sentencepiece.bpe.model")
        )
    );
}

#[test]
fn a_piece_defined_twice_is_refused_as_sentencepiece_refuses_it() {
    // Found by the slow_sentencepiece fuzz target: with a piece twice the vocabulary counted
    // fewer ids than the model gave out. SentencePiece says "▁o is already defined".
    let mut model = ModelProto::decode(sentencepiece_model().as_slice()).expect("decodes");
    model.pieces.push(model.pieces[4].clone());
    let dir = dir_with(&[
        ("sentencepiece.bpe.model", &model.encode_to_vec()),
        ("tokenizer_config.json", br#"{"tokenizer_class": "MBartTokenizer"}"#),
    ]);
    assert_eq!(
        error_of(dir.path()),
        format!(
            "{}: not a valid SentencePiece model (piece 8, `▁ola`, is already defined); the file \
             is corrupt or truncated: download it again",
            path(&dir, "sentencepiece.bpe.model")
        )
    );
    let mut empty = ModelProto::decode(sentencepiece_model().as_slice()).expect("decodes");
    empty.pieces[5].piece = Some(String::new());
    let dir = dir_with(&[
        ("spiece.model", &empty.encode_to_vec()),
        ("tokenizer_config.json", br#"{"tokenizer_class": "T5Tokenizer"}"#),
    ]);
    assert!(error_of(dir.path()).contains("(piece 5 is empty)"), "{}", error_of(dir.path()));
}

#[test]
fn a_damaged_charsmap_is_refused_when_loaded_not_when_used() {
    // One trie unit whose children lie past the end: `Precompiled` accepts it, then panics on
    // the first character it looks up.
    let offset_far_away: u32 = 1 << 10;
    let charsmap = [4u32.to_le_bytes(), offset_far_away.to_le_bytes()].concat();
    let dir = dir_with(&[
        ("spiece.model", &sentencepiece_model_with(charsmap)),
        ("tokenizer_config.json", br#"{"tokenizer_class": "AlbertTokenizer"}"#),
    ]);
    assert_eq!(
        error_of(dir.path()),
        format!(
            "{}: not a valid SentencePiece model (bad precompiled_charsmap: its trie points past \
             its end (3)); the file is corrupt or truncated: download it again",
            path(&dir, "spiece.model")
        )
    );
}

#[test]
fn a_whole_sentencepiece_model_builds() {
    let dir = dir_with(&[
        ("sentencepiece.bpe.model", &sentencepiece_model()),
        ("config.json", br#"{"model_type": "xlm-roberta"}"#),
    ]);
    let tokenizer = from_slow_files(dir.path()).expect("builds").expect("a tokenizer");
    let encoding = tokenizer.encode("ola", true).expect("encodes");
    assert_eq!(encoding.get_tokens(), ["<s>", "▁ola", "</s>"]);
    assert_eq!(encoding.get_ids(), [0, 5, 2]);
}

#[test]
fn invalid_json_in_tokenizer_config_gives_line_and_column() {
    let dir = dir_with(&[
        ("vocab.txt", BERT_VOCAB.as_bytes()),
        ("tokenizer_config.json", b"{\"do_lower_case\": true,\n  \"tokenizer_class\": }\n"),
    ]);
    assert_eq!(
        error_of(dir.path()),
        format!(
            "{}: invalid JSON at line 2, column 22 (expected value); fix the file or download it \
             again",
            path(&dir, "tokenizer_config.json")
        )
    );
}

#[test]
fn an_unknown_tokenizer_class_is_refused_not_guessed() {
    let dir = dir_with(&[
        ("vocab.txt", BERT_VOCAB.as_bytes()),
        ("tokenizer_config.json", br#"{"tokenizer_class": "BertJapaneseTokenizer"}"#),
        ("config.json", br#"{"model_type": "bert"}"#),
    ]);
    assert_eq!(
        error_of(dir.path()),
        format!(
            "{}: tokenizer_class \"BertJapaneseTokenizer\" cannot be built from slow tokenizer \
             files (supported: BertTokenizer, DistilBertTokenizer, ElectraTokenizer, \
             GPT2Tokenizer, RobertaTokenizer, BartTokenizer, AlbertTokenizer, T5Tokenizer, \
             XLMRobertaTokenizer, MBartTokenizer, MBart50Tokenizer); add the model's \
             tokenizer.json (transformers' AutoTokenizer.from_pretrained(...).save_pretrained(...) \
             writes one)",
            path(&dir, "tokenizer_config.json")
        )
    );
}

#[test]
fn an_unknown_model_type_is_refused() {
    let dir = dir_with(&[
        ("spiece.model", &sentencepiece_model()),
        ("config.json", br#"{"model_type": "llama"}"#),
    ]);
    assert_eq!(
        error_of(dir.path()),
        format!(
            "{}: model_type \"llama\" has no tokenizer that can be built from slow tokenizer \
             files, and tokenizer_config.json names no tokenizer_class; add tokenizer_class \
             (supported: BertTokenizer, DistilBertTokenizer, ElectraTokenizer, GPT2Tokenizer, \
             RobertaTokenizer, BartTokenizer, AlbertTokenizer, T5Tokenizer, XLMRobertaTokenizer, \
             MBartTokenizer, MBart50Tokenizer) or the model's tokenizer.json",
            path(&dir, "config.json")
        )
    );
}

#[test]
fn a_bare_sentencepiece_model_does_not_say_its_class() {
    let dir = dir_with(&[("spiece.model", &sentencepiece_model())]);
    assert_eq!(
        error_of(dir.path()),
        format!(
            "{}: a SentencePiece model alone does not say which tokenizer it belongs to (ALBERT, \
             T5, XLM-RoBERTa, mBART...); add tokenizer_class to tokenizer_config.json or \
             model_type to config.json",
            path(&dir, "spiece.model")
        )
    );
}

#[test]
fn a_file_the_class_needs_is_named() {
    let dir = dir_with(&[
        ("vocab.json", br#"{"a": 0}"#),
        ("tokenizer_config.json", br#"{"tokenizer_class": "RobertaTokenizerFast"}"#),
    ]);
    assert_eq!(
        error_of(dir.path()),
        format!(
            "{}: not found, and RobertaTokenizer needs it; download it with the model",
            path(&dir, "merges.txt")
        )
    );
}

#[test]
fn a_special_token_of_the_wrong_type_is_named() {
    let dir = dir_with(&[
        ("vocab.txt", BERT_VOCAB.as_bytes()),
        ("tokenizer_config.json", br#"{"tokenizer_class": "BertTokenizer", "cls_token": 5}"#),
    ]);
    assert_eq!(
        error_of(dir.path()),
        format!(
            "{}: cls_token is 5, not a string or an AddedToken object; fix the file",
            path(&dir, "tokenizer_config.json")
        )
    );
}

#[test]
fn vocab_txt_alone_is_bert() {
    let dir = dir_with(&[("vocab.txt", BERT_VOCAB.as_bytes())]);
    let tokenizer = from_slow_files(dir.path()).expect("builds").expect("a tokenizer");
    let encoding = tokenizer.encode(("Olas", "mundo"), true).expect("encodes");
    assert_eq!(encoding.get_tokens(), ["[CLS]", "ola", "##s", "[SEP]", "mundo", "[SEP]"]);
    assert_eq!(encoding.get_type_ids(), [0, 0, 0, 0, 1, 1]);
}

#[test]
fn vocab_json_and_merges_alone_are_gpt2() {
    let dir = dir_with(&[
        ("vocab.json", br#"{"a": 0, "b": 1, "ab": 2, "<|endoftext|>": 3}"#),
        ("merges.txt", b"#version: 0.2\na b\n"),
    ]);
    let tokenizer = from_slow_files(dir.path()).expect("builds").expect("a tokenizer");
    let encoding = tokenizer.encode("ab<|endoftext|>", true).expect("encodes");
    assert_eq!(encoding.get_tokens(), ["ab", "<|endoftext|>"]);
    assert_eq!(encoding.get_ids(), [2, 3]);
}
