//! Pipeline outputs equal transformers' on the tiny models: the same answers, tokens, labels,
//! entities and spans; scores within 1e-4 (relative for the small products QA returns). Each
//! reference call is replayed as recorded by tests/fixtures/make_models.py, all of a model's calls
//! in one `run` so they share batches, as `lote run` does.

use crate::common;

use lote::{
    device::Placement,
    settings::{Dtype, Task},
    tasks::{Embedding, EncoderPipeline, TaskInput, TaskOutput, pipeline::BatchBudget},
};
use serde_json::{Map, Value, json};

const ARCHS: &[&str] = &["bert", "roberta", "distilbert", "albert", "electra", "xlm-roberta"];

fn pipeline(name: &str, task: Task) -> EncoderPipeline {
    let placement = Placement { device: tch::Device::Cpu, dtype: Dtype::Fp32 };
    let budget = BatchBudget { max_batch_size: 8, max_batch_tokens: 4096 };
    EncoderPipeline::load(&common::fixture_model(name), task, &placement, budget)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn close(ours: f64, theirs: f64) -> bool {
    (ours - theirs).abs() <= 1e-4 * theirs.abs().max(1e-2)
}

/// Replays every recorded call of `task` and returns (ours, theirs) pairs of JSON outputs.
fn replay(name: &str, task: Task, key: &str) -> Vec<(Value, Value, String)> {
    let pipeline = pipeline(name, task);
    let reference = common::read_reference(&common::fixture_model(name));
    let cases =
        reference["pipelines"][key].as_array().unwrap_or_else(|| panic!("{name}: no {key}"));
    let mut items = Vec::new();
    for case in cases {
        let mut kwargs: Map<String, Value> = case["kwargs"].as_object().unwrap().clone();
        let input = match task {
            Task::QuestionAnswering => TaskInput::QuestionContext {
                question: kwargs.remove("question").unwrap().as_str().unwrap().into(),
                context: kwargs.remove("context").unwrap().as_str().unwrap().into(),
            },
            _ => TaskInput::Text { text: case["args"][0].as_str().unwrap().into() },
        };
        let params = pipeline.parse_params(&Value::Object(kwargs)).unwrap();
        items.push((input, params));
    }
    let results = pipeline.run(&items);
    cases
        .iter()
        .zip(results)
        .map(|(case, result)| {
            let result = result.unwrap_or_else(|e| panic!("{name} {}: {e}", case["kwargs"]));
            let fields = lote::tasks::output_fields::result_fields(&result);
            let (_, ours) = fields
                .into_iter()
                .find(|(key, _)| key != "input_tokens" && key != "truncated")
                .expect("a result field");
            (ours, case["output"].clone(), format!("{name} {} {}", case["args"], case["kwargs"]))
        })
        .collect()
}

/// transformers returns a bare dict for top_k=1 and a bare list for one mask.
fn as_list(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.clone(),
        single => vec![single.clone()],
    }
}

fn assert_same_records(ours: &[Value], theirs: &[Value], exact: &[&str], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: {ours:?} vs {theirs:?}");
    for (o, t) in ours.iter().zip(theirs) {
        for field in exact {
            assert_eq!(o[field], t[field], "{what}: field {field}: {o} vs {t}");
        }
        let (so, st) = (o["score"].as_f64().unwrap(), t["score"].as_f64().unwrap());
        assert!(close(so, st), "{what}: score {so} vs {st}");
    }
}

#[test]
fn question_answering_matches_the_pipeline() {
    for arch in ARCHS {
        for (ours, theirs, what) in
            replay(&format!("{arch}-qa"), Task::QuestionAnswering, "question-answering")
        {
            let ours = ours.as_array().unwrap().clone();
            assert_same_records(&ours, &as_list(&theirs), &["answer", "start", "end"], &what);
        }
    }
}

#[test]
fn fill_mask_matches_the_pipeline() {
    // bert-mlm-slow: the pipeline transformers built from vocab.txt and sharded .bin weights.
    let names = ARCHS.iter().map(|a| format!("{a}-mlm")).chain(["bert-mlm-slow".to_string()]);
    for name in names {
        for (ours, theirs, what) in replay(&name, Task::FillMask, "fill-mask") {
            let ours = ours.as_array().unwrap().clone();
            // One mask: transformers returns the predictions list itself.
            let theirs: Vec<Value> =
                if theirs[0].is_array() { as_list(&theirs) } else { vec![theirs] };
            assert_eq!(ours.len(), theirs.len(), "{what}: masks");
            for (o, t) in ours.iter().zip(&theirs) {
                let (o, t) = (as_list(o), as_list(t));
                assert_same_records(&o, &t, &["token", "token_str", "sequence"], &what);
            }
        }
    }
}

#[test]
fn text_classification_matches_the_pipeline() {
    let mut names: Vec<String> = ARCHS.iter().map(|a| format!("{a}-cls")).collect();
    names.push("bert-cls-multilabel".into());
    for name in names {
        for (ours, theirs, what) in replay(&name, Task::TextClassification, "text-classification") {
            assert_same_records(ours.as_array().unwrap(), &as_list(&theirs), &["label"], &what);
        }
    }
}

#[test]
fn token_classification_matches_the_pipeline() {
    for arch in ARCHS {
        let name = format!("{arch}-ner");
        for (ours, theirs, what) in replay(&name, Task::TokenClassification, "token-classification")
        {
            let exact = ["entity", "entity_group", "index", "word", "start", "end"];
            assert_same_records(ours.as_array().unwrap(), &as_list(&theirs), &exact, &what);
        }
    }
}

#[test]
fn embeddings_match_sentence_transformers() {
    for name in ["bert-embed-mean", "bert-embed-cls"] {
        let pipeline = pipeline(name, Task::FeatureExtraction);
        let reference = common::read_reference(&common::fixture_model(name));
        let fe = &reference["pipelines"]["feature-extraction"];
        let items: Vec<_> = fe["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let input = TaskInput::Text { text: t.as_str().unwrap().into() };
                (input, pipeline.parse_params(&json!({})).unwrap())
            })
            .collect();
        let results = pipeline.run(&items);
        for (i, result) in results.into_iter().enumerate() {
            let TaskOutput::Embedding(Embedding::Pooled(ours)) = result.unwrap().output else {
                panic!("{name}: expected a pooled embedding")
            };
            let theirs: Vec<f32> = fe["sentence_transformers"]["embeddings"][i]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(ours.len(), theirs.len());
            let diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(diff < 1e-4, "{name} text {i}: max |diff| {diff}");
        }
    }
}
