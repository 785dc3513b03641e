//! Parity with transformers on the tiny random models of tests/fixtures/make_models.py: the same
//! token ids and offsets from the same tokenizer (tokenizer.json, or for bert-mlm-slow the one
//! built from vocab.txt), logits within 1e-4 for each input alone, and a padded batch of mixed
//! lengths giving what each input gives alone. The XLM-R and bert-mlm-slow weights are
//! pytorch_model.bin files (sharded for bert-mlm-slow), read by lote's unpickler.

use crate::common;

use lote::{
    device::Placement,
    models::{EncoderInput, load_encoder},
    tokenize::TextTokenizer,
};
use serde_json::Value;
use tch::Tensor;

pub(crate) const MODELS: &[&str] = &[
    "bert-mlm",
    "bert-mlm-relu",
    "bert-qa",
    "bert-cls",
    "bert-cls-multilabel",
    "bert-ner",
    "bert-embed-mean",
    "bert-embed-cls",
    "roberta-mlm",
    "roberta-qa",
    "roberta-cls",
    "roberta-ner",
    "distilbert-mlm",
    "distilbert-qa",
    "distilbert-cls",
    "distilbert-ner",
    "albert-mlm",
    "albert-qa",
    "albert-cls",
    "albert-ner",
    "electra-mlm",
    "electra-qa",
    "electra-cls",
    "electra-ner",
    "xlm-roberta-mlm",
    "xlm-roberta-qa",
    "xlm-roberta-cls",
    "xlm-roberta-ner",
    "bert-mlm-slow",
];

fn cpu() -> Placement {
    Placement { device: tch::Device::Cpu, dtype: lote::settings::Dtype::Fp32 }
}

pub(crate) fn rows(value: &Value) -> Vec<Vec<u32>> {
    value.as_array().unwrap().iter().map(ids).collect()
}

pub(crate) fn ids(value: &Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

pub(crate) fn tensor(value: &Value) -> Tensor {
    fn flatten(value: &Value, out: &mut Vec<f32>, shape: &mut Vec<i64>, depth: usize) {
        match value {
            Value::Array(items) => {
                if shape.len() == depth {
                    shape.push(items.len() as i64);
                }
                for item in items {
                    flatten(item, out, shape, depth + 1);
                }
            }
            number => out.push(number.as_f64().unwrap() as f32),
        }
    }
    let (mut data, mut shape) = (Vec::new(), Vec::new());
    flatten(value, &mut data, &mut shape, 0);
    Tensor::from_slice(&data).view(shape.as_slice())
}

/// The model's output in reference order: (start, end) stacked for QA, else the single tensor.
pub(crate) fn reference_output(outputs: &Value) -> Tensor {
    for key in ["logits", "last_hidden_state"] {
        if !outputs[key].is_null() {
            return tensor(&outputs[key]);
        }
    }
    Tensor::stack(&[tensor(&outputs["start_logits"]), tensor(&outputs["end_logits"])], -1)
}

pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a - b).abs().max().double_value(&[])
}

pub(crate) fn input(ids: &[Vec<u32>], types: Option<Vec<Vec<u32>>>, pad_id: u32) -> EncoderInput {
    let id_refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let type_refs: Option<Vec<&[u32]>> =
        types.as_ref().map(|t| t.iter().map(Vec::as_slice).collect());
    EncoderInput::from_rows(&id_refs, type_refs.as_deref(), pad_id, tch::Device::Cpu)
}

#[test]
fn logits_match_transformers_alone_and_in_a_padded_batch() {
    for name in MODELS {
        let dir = common::fixture_model(name);
        let reference = common::read_reference(&dir);
        let loaded = load_encoder(&dir, &cpu()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let tokenizer = TextTokenizer::load(&dir, None).unwrap();
        let mut alone_outputs = Vec::new();
        for case in reference["raw"]["alone"].as_array().unwrap() {
            let types = case.get("token_type_ids").map(|t| vec![ids(t)]);
            let batch = input(&[ids(&case["input_ids"])], types, tokenizer.pad_id);
            // Without the batch dimension: [seq, ...] per token, [labels] per sequence.
            let ours = loaded.model.forward(&batch).get(0);
            let theirs = reference_output(&case["outputs"]);
            let ours = ours.view(theirs.size().as_slice());
            let diff = max_diff(&ours, &theirs);
            assert!(diff < 1e-4, "{name} {:?}: max |diff| {diff}", case["input"]);
            alone_outputs.push(ours);
        }
        let batch_ref = &reference["raw"]["batch"];
        // Strip the reference's right padding; from_rows pads again and builds the mask.
        let lengths: Vec<usize> = rows(&batch_ref["attention_mask"])
            .iter()
            .map(|mask| mask.iter().filter(|&&m| m == 1).count())
            .collect();
        let unpad = |all: Vec<Vec<u32>>| -> Vec<Vec<u32>> {
            all.into_iter().zip(&lengths).map(|(row, &len)| row[..len].to_vec()).collect()
        };
        let batch_ids = unpad(rows(&batch_ref["input_ids"]));
        let types = batch_ref.get("token_type_ids").map(|t| unpad(rows(t)));
        let batch = input(&batch_ids, types, tokenizer.pad_id);
        let ours = loaded.model.forward(&batch);
        let theirs = reference_output(&batch_ref["outputs"]);
        let diff = max_diff(&ours.view(theirs.size().as_slice()), &theirs);
        assert!(diff < 1e-4, "{name} batch: max |diff| {diff}");
        // Each padded row, cut to its real length, equals the row computed alone.
        for (row, alone) in alone_outputs.iter().enumerate() {
            let ours_row = ours.get(row as i64);
            let per_token = ours_row.dim() >= 2;
            let ours_row =
                if per_token { ours_row.narrow(0, 0, alone.size()[0]) } else { ours_row };
            let diff = max_diff(&ours_row, alone);
            assert!(diff < 1e-5, "{name} row {row}: batch vs alone max |diff| {diff}");
        }
    }
}

#[test]
fn tokenizer_ids_and_character_offsets_match_transformers() {
    for name in MODELS {
        let dir = common::fixture_model(name);
        let reference = common::read_reference(&dir);
        let tokenizer = TextTokenizer::load(&dir, None).unwrap();
        for case in reference["encodings"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let ours = match case["text_pair"].as_str() {
                Some(pair) => {
                    tokenizer.encode_pair(text, pair, lote::tokenize::Truncation::None).unwrap()
                }
                None => tokenizer.encode(text, false).unwrap(),
            };
            assert_eq!(ours.ids, ids(&case["input_ids"]), "{name} {text:?}");
            let offsets: Vec<(usize, usize)> = case["offsets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|pair| {
                    (pair[0].as_u64().unwrap() as usize, pair[1].as_u64().unwrap() as usize)
                })
                .collect();
            assert_eq!(ours.offsets, offsets, "{name} {text:?}");
        }
    }
}
