//! Text pairs, reranking and zero-shot classification against transformers 4.57 and
//! sentence-transformers on the tiny pair models of tests/fixtures/make_pair_models.py (saved as
//! hub repositories are: safetensors + tokenizer.json, or pytorch_model.bin alone): the pair
//! tokenization, the text-classification pipeline on `{text, text_pair}`, `CrossEncoder.predict`
//! scores and `rank`, the zero-shot pipeline; then the same models through `lote run`, gRPC and
//! a job, and each bad input with its message while its neighbours are answered.

use crate::common;

use common::{failure, fixture_model, read_reference, start_ready, test_settings};
use lote::{
    Settings,
    device::Placement,
    grpc::pb::{self, inference_client::InferenceClient},
    settings::{Dtype, ModelSettings, Task},
    tasks::{EncoderPipeline, TaskInput, TaskOutput, TaskResult, pipeline::BatchBudget},
};
use serde_json::{Value, json};
use tonic::Code;

const CROSS_ENCODERS: &[&str] = &["pairs/bert-cross-encoder", "pairs/xlm-roberta-cross-encoder"];
const NLI: &[&str] = &["pairs/bert-nli", "pairs/roberta-nli"];

fn load(name: &str, task: Task) -> Result<EncoderPipeline, String> {
    let placement = Placement { device: tch::Device::Cpu, dtype: Dtype::Fp32 };
    let budget = BatchBudget { max_batch_size: 8, max_batch_tokens: 4096 };
    EncoderPipeline::load(&fixture_model(name), task, &placement, budget).map_err(|e| e.to_string())
}

fn pipeline(name: &str, task: Task) -> EncoderPipeline {
    load(name, task).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn reference(name: &str) -> Value {
    read_reference(&fixture_model(name))
}

fn params(pipeline: &EncoderPipeline, kwargs: Value) -> lote::tasks::pipeline::TaskParams {
    pipeline.parse_params(&kwargs).unwrap_or_else(|e| panic!("{kwargs}: {e}"))
}

fn close(ours: f64, theirs: f64, tolerance: f64) -> bool {
    (ours - theirs).abs() <= tolerance
}

fn text_pair(record: &Value) -> TaskInput {
    TaskInput::TextPair {
        text: record["text"].as_str().unwrap().into(),
        text_pair: record["text_pair"].as_str().unwrap().into(),
    }
}

fn ranking(result: &TaskResult) -> &[lote::tasks::rerank::Ranked] {
    match &result.output {
        TaskOutput::Ranking(ranked) => ranked,
        other => panic!("not a ranking: {other:?}"),
    }
}

#[test]
fn pairs_are_tokenized_as_the_models_tokenizer_pairs_them() {
    for name in CROSS_ENCODERS.iter().chain(NLI) {
        let pipeline = pipeline(name, Task::TextClassification);
        for record in reference(name)["pair_encodings"].as_array().unwrap() {
            let (text, pair) =
                (record["text"].as_str().unwrap(), record["text_pair"].as_str().unwrap());
            let truncation = match record["truncation"].as_str() {
                None => lote::tokenize::Truncation::None,
                Some("only_second") => lote::tokenize::Truncation::OnlySecond,
                Some("longest_first") => lote::tokenize::Truncation::LongestFirst,
                Some(other) => panic!("{other}"),
            };
            let ids: Vec<u64> = record["input_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            let encoded = match pipeline.tokenizer.encode_pair(text, pair, truncation) {
                Ok(encoded) => encoded,
                Err(error) => {
                    // Untruncated and longer than the model: refused, counting the same tokens.
                    assert_eq!(
                        error,
                        lote::tokenize::TokenizeError::TooLong { tokens: ids.len(), limit: 128 },
                        "{name}"
                    );
                    continue;
                }
            };
            let ours: Vec<u64> = encoded.ids.iter().map(|&id| id as u64).collect();
            assert_eq!(ours, ids, "{name}: {text} / {pair} ({truncation:?})");
            if let Some(types) = record["token_type_ids"].as_array() {
                let types: Vec<u64> = types.iter().map(|v| v.as_u64().unwrap()).collect();
                let ours: Vec<u64> = encoded.type_ids.iter().map(|&t| t as u64).collect();
                assert_eq!(ours, types, "{name}: token types of {text} / {pair}");
            }
        }
    }
}

#[test]
fn text_pairs_classify_as_the_pipeline_does() {
    for name in CROSS_ENCODERS.iter().chain(NLI) {
        let pipeline = pipeline(name, Task::TextClassification);
        let cases = reference(name)["text-classification"].as_array().unwrap().clone();
        // The pipeline's own top-1 default is a bare dict; lote always answers a list.
        let items: Vec<_> = cases
            .iter()
            .map(|case| (text_pair(&case["args"][0]), params(&pipeline, case["kwargs"].clone())))
            .collect();
        for (case, result) in cases.iter().zip(pipeline.run(&items)) {
            let result = result.unwrap_or_else(|e| panic!("{name} {}: {e}", case["kwargs"]));
            let TaskOutput::Labels(labels) = &result.output else { panic!("labels") };
            let theirs = match &case["output"] {
                Value::Array(items) => items.clone(),
                single => vec![single.clone()],
            };
            assert_eq!(labels.len(), theirs.len(), "{name} {}", case["kwargs"]);
            for (ours, theirs) in labels.iter().zip(&theirs) {
                assert_eq!(ours.label, theirs["label"].as_str().unwrap(), "{name} {case}");
                let score = theirs["score"].as_f64().unwrap();
                assert!(
                    close(ours.score as f64, score, 1e-4 * score.abs().max(1e-2)),
                    "{name} {case}: {} vs {score}",
                    ours.score
                );
            }
            let truncates = case["kwargs"].get("truncation").is_some();
            assert_eq!(result.truncated, truncates, "{name} {}", case["kwargs"]);
        }
    }
}

#[test]
fn rerank_scores_equal_cross_encoder_predict_and_rank() {
    for name in CROSS_ENCODERS {
        let pipeline = pipeline(name, Task::Rerank);
        let reference = reference(name);
        for case in reference["rerank"].as_array().unwrap() {
            let documents: Vec<String> = serde_json::from_value(case["documents"].clone()).unwrap();
            let query = case["query"].as_str().unwrap().to_string();
            let input = TaskInput::Query { query, documents: documents.clone() };
            let all = params(&pipeline, json!({}));
            let raw = params(&pipeline, json!({"raw_scores": true}));
            let top = params(&pipeline, json!({"top_n": 3, "return_documents": true}));
            let results = pipeline.run(&[(input.clone(), all), (input.clone(), raw), (input, top)]);
            let results: Vec<TaskResult> = results.into_iter().map(Result::unwrap).collect();
            for (key, result) in [("scores", &results[0]), ("raw_scores", &results[1])] {
                let ranked = ranking(result);
                assert_eq!(ranked.len(), documents.len());
                assert!(ranked.windows(2).all(|w| w[0].score >= w[1].score), "best first");
                for r in ranked {
                    let theirs = case[key][r.index].as_f64().unwrap();
                    assert!(
                        close(r.score as f64, theirs, 1e-5),
                        "{name} {key}[{}]: {} vs {theirs}",
                        r.index,
                        r.score
                    );
                }
            }
            let ranked = ranking(&results[2]);
            let rank = case["rank"].as_array().unwrap();
            assert_eq!(ranked.len(), 3);
            for (ours, theirs) in ranked.iter().zip(rank) {
                assert_eq!(ours.index as u64, theirs["corpus_id"].as_u64().unwrap(), "{name}");
                assert_eq!(ours.document.as_deref(), theirs["text"].as_str());
            }
        }
    }
}

#[test]
fn a_rerank_of_200_documents_in_one_call_equals_200_single_pairs() {
    for name in CROSS_ENCODERS {
        let pipeline = pipeline(name, Task::Rerank);
        let case = &reference(name)["rerank_200"];
        let documents: Vec<String> = serde_json::from_value(case["documents"].clone()).unwrap();
        let query = case["query"].as_str().unwrap().to_string();
        let p = params(&pipeline, json!({}));
        let together = pipeline
            .run(&[(
                TaskInput::Query { query: query.clone(), documents: documents.clone() },
                p.clone(),
            )])
            .remove(0)
            .unwrap();
        let singles: Vec<_> = documents
            .iter()
            .map(|d| {
                (TaskInput::Query { query: query.clone(), documents: vec![d.clone()] }, p.clone())
            })
            .collect();
        let alone: Vec<f32> =
            pipeline.run(&singles).into_iter().map(|r| ranking(&r.unwrap())[0].score).collect();
        assert!(together.truncated, "{name}: some of the 200 pairs are cut");
        for r in ranking(&together) {
            assert!(
                close(r.score as f64, alone[r.index] as f64, 1e-6),
                "{name} #{}: {} vs {}",
                r.index,
                r.score,
                alone[r.index]
            );
            let theirs = case["scores"][r.index].as_f64().unwrap();
            assert!(
                close(r.score as f64, theirs, 1e-5),
                "{name} #{}: {} vs {theirs}",
                r.index,
                r.score
            );
        }
    }
}

#[test]
fn zero_shot_classification_equals_the_pipeline() {
    for name in NLI {
        let pipeline = pipeline(name, Task::ZeroShotClassification);
        let cases = reference(name)["zero-shot-classification"].as_array().unwrap().clone();
        let items: Vec<_> = cases
            .iter()
            .map(|case| {
                let text = case["args"][0].as_str().unwrap().to_string();
                (TaskInput::Text { text }, params(&pipeline, case["kwargs"].clone()))
            })
            .collect();
        for (case, result) in cases.iter().zip(pipeline.run(&items)) {
            let result = result.unwrap_or_else(|e| panic!("{name} {}: {e}", case["kwargs"]));
            let TaskOutput::ZeroShot(answer) = &result.output else { panic!("zero-shot") };
            let theirs = &case["output"];
            assert_eq!(answer.sequence, theirs["sequence"].as_str().unwrap());
            let labels: Vec<String> = serde_json::from_value(theirs["labels"].clone()).unwrap();
            assert_eq!(answer.labels, labels, "{name} {}", case["kwargs"]);
            for (ours, theirs) in answer.scores.iter().zip(theirs["scores"].as_array().unwrap()) {
                let theirs = theirs.as_f64().unwrap();
                assert!(
                    close(*ours as f64, theirs, 1e-4 * theirs.max(1e-2)),
                    "{name} {case}: {ours} vs {theirs}"
                );
            }
        }
    }
}

#[test]
fn models_that_cannot_do_a_pair_task_are_refused_at_load() {
    let error = load("pairs/bert-nli", Task::Rerank).err().unwrap();
    assert!(
        error.ends_with(
            "task `rerank` needs a cross-encoder with one output (config.json `num_labels` 1); \
             this one has 3 labels"
        ),
        "{error}"
    );
    let error = load("pairs/bert-nli-no-entailment", Task::ZeroShotClassification).err().unwrap();
    assert!(
        error.ends_with(
            "task `zero-shot-classification` needs an NLI model with an entailment label (a \
             config.json `id2label` name starting with \"entail\"); this one has [\"negativo\", \
             \"neutro\", \"positivo\"]"
        ),
        "{error}"
    );
    let error = load("bert-mlm", Task::Rerank).err().unwrap();
    assert!(
        error.contains("task `rerank` needs a *ForSequenceClassification checkpoint"),
        "{error}"
    );
}

#[test]
fn each_bad_pair_input_names_its_field_and_its_neighbours_are_answered() {
    let zero_shot = pipeline("pairs/bert-nli", Task::ZeroShotClassification);
    let text = || TaskInput::Text { text: "O time venceu o campeonato.".into() };
    let good = json!({"candidate_labels": ["esporte", "política"]});
    let bad = |kwargs: Value| zero_shot.parse_params(&kwargs).map_err(|e| e.to_string());
    let items = vec![
        (text(), params(&zero_shot, good.clone())),
        (text(), params(&zero_shot, json!({"candidate_labels": []}))),
        (
            text(),
            params(
                &zero_shot,
                json!({"candidate_labels": "esporte", "hypothesis_template": "Sem lugar."}),
            ),
        ),
        (TaskInput::Text { text: " ".into() }, params(&zero_shot, good.clone())),
        (text(), params(&zero_shot, good)),
    ];
    let results: Vec<Result<TaskResult, String>> =
        zero_shot.run(&items).into_iter().map(|r| r.map_err(|e| e.to_string())).collect();
    let answer = |result: &Result<TaskResult, String>| match result.as_ref().map(|r| &r.output) {
        Ok(TaskOutput::ZeroShot(answer)) => answer.clone(),
        other => panic!("{other:?}"),
    };
    let (first, last) = (answer(&results[0]), answer(&results[4]));
    assert_eq!(first.labels, last.labels, "the bad neighbours change nothing");
    for (a, b) in first.scores.iter().zip(&last.scores) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    assert_eq!(results[1].as_ref().unwrap_err(), "`candidate_labels` is empty");
    assert_eq!(
        results[2].as_ref().unwrap_err(),
        "`hypothesis_template` \"Sem lugar.\" has no place for the label: write {} where the label goes"
    );
    assert_eq!(results[3].as_ref().unwrap_err(), "`text` is empty");
    assert!(bad(json!({})).unwrap_err().contains("missing field `candidate_labels`"));

    let rerank = pipeline("pairs/bert-cross-encoder", Task::Rerank);
    let p = params(&rerank, json!({}));
    let query = |documents: Vec<&str>| TaskInput::Query {
        query: "Quem propôs o Transformer?".into(),
        documents: documents.into_iter().map(String::from).collect(),
    };
    let results: Vec<Result<TaskResult, String>> = rerank
        .run(&[
            (query(vec!["O Google.", "  "]), p.clone()),
            (query(vec![]), p.clone()),
            (query(vec!["O Google."]), params(&rerank, json!({"top_n": 0}))),
            (query(vec!["O Google."]), p.clone()),
        ])
        .into_iter()
        .map(|r| r.map_err(|e| e.to_string()))
        .collect();
    assert_eq!(results[0].as_ref().unwrap_err(), "`documents[1]` is empty");
    assert_eq!(results[1].as_ref().unwrap_err(), "`documents` is empty");
    assert_eq!(results[2].as_ref().unwrap_err(), "`top_n` must be at least 1 (or absent for all)");
    assert!(results[3].is_ok());

    let classify = pipeline("pairs/bert-cross-encoder", Task::TextClassification);
    let p = params(&classify, json!({"truncation": false}));
    let long = "palavra ".repeat(200);
    let results = classify.run(&[
        (TaskInput::TextPair { text: "a".into(), text_pair: long }, p.clone()),
        (TaskInput::TextPair { text: "a".into(), text_pair: "".into() }, p.clone()),
        (TaskInput::TextPair { text: "a".into(), text_pair: "b".into() }, p),
    ]);
    assert!(
        results[0]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("more than the model's limit of 128 (truncation is off)")
    );
    assert_eq!(results[1].as_ref().unwrap_err().to_string(), "`text_pair` is empty");
    assert!(results[2].is_ok());
    let error = classify.parse_params(&json!({"truncation": "middle"})).unwrap_err().to_string();
    assert!(error.contains("`middle` is not one of true, false, \"do_not_truncate\""), "{error}");

    // A pair sent to a task that does not read pairs.
    let mlm = pipeline("bert-mlm", Task::FillMask);
    let p = mlm.parse_params(&Value::Null).unwrap();
    let pair = TaskInput::TextPair { text: "a [MASK]".into(), text_pair: "b".into() };
    assert_eq!(
        mlm.run(&[(pair, p)])[0].as_ref().unwrap_err().to_string(),
        "`text_pair`: fill-mask takes `text`; only text-classification (a pair classifier such as \
         a cross-encoder or an NLI model) takes text pairs"
    );
}

// ---------------------------------------------------------------------------------------------
// The same models through `lote run`, gRPC and a job.
// ---------------------------------------------------------------------------------------------

fn lote_run(model: &str, task: &str, lines: &[String]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let result = common::lote_command()
        .args(["run", "--model"])
        .arg(fixture_model(model))
        .args(["--task", task, "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .env("LOTE__DEVICE__KIND", "cpu")
        .env("LOTE__SERVER__LIMITS__MAX_INPUTS_PER_CALL", "3")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.code().is_some_and(|c| c <= 1), "{stderr}");
    std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn lote_run_answers_pairs_reranks_and_zero_shot_with_each_bad_line_its_error() {
    let pair = |a: &str, b: &str| json!({"text": a, "text_pair": b}).to_string();
    let out = lote_run(
        "pairs/bert-cross-encoder",
        "text-classification",
        &[
            pair("Quem propôs o Transformer?", "O Google, em 2017."),
            json!({"text": "a", "text_pai": "b"}).to_string(),
            json!({"text": "a", "text_pair": 3}).to_string(),
            pair("Quem propôs o Transformer?", "O Google, em 2017."),
        ],
    );
    assert_eq!(out[0]["labels"][0]["label"], "LABEL_0");
    assert_eq!(out[1]["error"], "unknown field `text_pai`");
    assert_eq!(out[2]["error"], "`text_pair` must be a string");
    common::assert_json_close(&out[0]["labels"], &out[3]["labels"], 1e-5, "labels");

    let rerank = |documents: Value, params: Value| {
        json!({"query": "Quem propôs o Transformer?", "documents": documents, "params": params})
            .to_string()
    };
    let out = lote_run(
        "pairs/xlm-roberta-cross-encoder",
        "rerank",
        &[
            rerank(
                json!(["O gato dormiu.", "O Google propôs o Transformer."]),
                json!({"return_documents": true}),
            ),
            rerank(json!([]), json!({})),
            rerank(json!(["a", "b", "c", "d"]), json!({})),
            rerank(json!(["a", 2]), json!({})),
            json!({"query": "q"}).to_string(),
            rerank(json!(["O gato dormiu."]), json!({"top_n": 1})),
        ],
    );
    let results = out[0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert!(results[0]["score"].as_f64() >= results[1]["score"].as_f64());
    let first = results[0]["index"].as_u64().unwrap() as usize;
    assert_eq!(results[0]["document"], ["O gato dormiu.", "O Google propôs o Transformer."][first]);
    assert_eq!(out[1]["error"], "`documents` is empty");
    assert_eq!(
        out[2]["error"],
        "`documents` has 4 documents, more than server.limits.max_inputs_per_call (3)"
    );
    assert_eq!(out[3]["error"], "`documents[1]` must be a string");
    assert_eq!(out[4]["error"], "missing field `documents`");
    assert_eq!(out[5]["results"][0]["index"], 0);
    assert!(out[5]["results"][0].get("document").is_none());

    let out = lote_run(
        "pairs/roberta-nli",
        "zero-shot-classification",
        &[
            json!({"text": "O time venceu o campeonato.", "params": {"candidate_labels": "esporte, política"}}).to_string(),
            json!({"text": "O time venceu.", "params": {"candidate_labels": []}}).to_string(),
        ],
    );
    assert_eq!(out[0]["sequence"], "O time venceu o campeonato.");
    assert_eq!(out[0]["labels"].as_array().unwrap().len(), 2);
    let total: f64 = out[0]["scores"].as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-5, "single-label scores sum to 1: {total}");
    assert_eq!(out[1]["error"], "`candidate_labels` is empty");
}

fn model(name: &str, task: Task, fixture: &str) -> ModelSettings {
    ModelSettings { name: name.into(), task, path: fixture_model(fixture), dtype: None }
}

fn server_settings() -> Settings {
    let mut settings = test_settings();
    settings.models = vec![
        model("cross", Task::TextClassification, "pairs/bert-cross-encoder"),
        model("rerank", Task::Rerank, "pairs/xlm-roberta-cross-encoder"),
        model("nli", Task::ZeroShotClassification, "pairs/bert-nli"),
    ];
    settings.server.limits.max_inputs_per_call = 8;
    settings
}

/// The same answers as the pipelines above give, through gRPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_serves_pairs_reranks_and_zero_shot_as_the_references_say() {
    let server = start_ready(server_settings()).await;
    let mut client = InferenceClient::new(server.channel().await);

    let case = &reference("pairs/bert-cross-encoder")["text-classification"][1];
    let args = &case["args"][0];
    let response = client
        .classify(pb::ClassifyRequest {
            model: "cross".into(),
            inputs: vec![args["text"].as_str().unwrap().into()],
            text_pairs: vec![args["text_pair"].as_str().unwrap().into()],
            top_k: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let score = case["output"][0]["score"].as_f64().unwrap();
    assert!(close(response.results[0].labels[0].score as f64, score, 1e-5));

    let case = &reference("pairs/xlm-roberta-cross-encoder")["rerank"][0];
    let documents: Vec<String> = serde_json::from_value(case["documents"].clone()).unwrap();
    let request = pb::RerankRequest {
        model: "rerank".into(),
        query: case["query"].as_str().unwrap().into(),
        documents: documents.clone(),
        return_documents: true,
        ..Default::default()
    };
    let response = client.rerank(request.clone()).await.unwrap().into_inner();
    assert_eq!(response.results.len(), documents.len());
    for r in &response.results {
        let theirs = case["scores"][r.index as usize].as_f64().unwrap();
        assert!(close(r.score as f64, theirs, 1e-5), "#{}: {} vs {theirs}", r.index, r.score);
        assert_eq!(r.document.as_deref(), Some(documents[r.index as usize].as_str()));
    }
    assert!(response.metadata.unwrap().input_tokens > 20, "every pair counted");

    let case = &reference("pairs/bert-nli")["zero-shot-classification"][0];
    let labels: Vec<String> =
        serde_json::from_value(case["kwargs"]["candidate_labels"].clone()).unwrap();
    let response = client
        .classify_zero_shot(pb::ClassifyZeroShotRequest {
            model: "nli".into(),
            inputs: vec![case["args"][0].as_str().unwrap().into()],
            candidate_labels: labels,
            multi_label: case["kwargs"]["multi_label"].as_bool().unwrap_or(false),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let theirs: Vec<String> = serde_json::from_value(case["output"]["labels"].clone()).unwrap();
    assert_eq!(response.results[0].labels, theirs);

    // Bad input, each with its code and message, and the server goes on.
    let rerank = |documents: Vec<String>| pb::RerankRequest { documents, ..request.clone() };
    assert_eq!(
        failure(client.rerank(rerank(vec![])).await),
        (Code::InvalidArgument, "`documents` is empty".into())
    );
    assert_eq!(
        failure(client.rerank(rerank(vec!["a".into(); 9])).await),
        (
            Code::InvalidArgument,
            "`documents` has 9 documents, more than server.limits.max_inputs_per_call (8)".into()
        )
    );
    assert_eq!(
        failure(client.rerank(rerank(vec!["a".into(), "".into()])).await),
        (Code::InvalidArgument, "`documents[1]` is empty".into())
    );
    let (code, message) =
        failure(client.rerank(pb::RerankRequest { model: "nli".into(), ..request.clone() }).await);
    assert_eq!(
        (code, message.as_str()),
        (Code::FailedPrecondition, "model `nli` serves zero-shot-classification, not rerank")
    );
    let (code, message) = failure(
        client
            .classify(pb::ClassifyRequest {
                model: "cross".into(),
                inputs: vec!["a".into(), "b".into()],
                text_pairs: vec!["c".into()],
                ..Default::default()
            })
            .await,
    );
    assert_eq!(
        (code, message.as_str()),
        (
            Code::InvalidArgument,
            "`text_pairs` has 1 texts for 2 inputs: give one per input, or none"
        )
    );
    let (code, message) = failure(
        client
            .classify_zero_shot(pb::ClassifyZeroShotRequest {
                model: "nli".into(),
                inputs: vec!["O time venceu.".into()],
                ..Default::default()
            })
            .await,
    );
    assert_eq!(
        (code, message.as_str()),
        (Code::InvalidArgument, "inputs[0]: `candidate_labels` is empty")
    );
    let response = client.rerank(rerank(vec!["ainda aqui".into()])).await.unwrap().into_inner();
    assert_eq!(response.results.len(), 1, "the server keeps serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reranks_and_classifies_pairs_like_lote_run() {
    use common::jobs::{jobs_client, results, submission, watch_to_end};
    let server = start_ready(server_settings()).await;
    let mut client = jobs_client(server.grpc_addr).await;
    let documents = vec![
        pb::JobDocument {
            custom_id: "a".into(),
            query: "Quem propôs o Transformer?".into(),
            documents: vec!["O gato dormiu.".into(), "O Google propôs o Transformer.".into()],
            ..Default::default()
        },
        pb::JobDocument {
            custom_id: "b".into(),
            query: "Quem propôs o Transformer?".into(),
            documents: vec!["O gato dormiu.".into(), "".into()],
            ..Default::default()
        },
    ];
    let job = client
        .submit_job(submission("rerank", "rerank", r#"{"top_n": 1}"#, documents))
        .await
        .unwrap()
        .into_inner();
    let (job, _) = watch_to_end(&mut client, &job.id).await;
    assert_eq!((job.succeeded, job.failed), (1, 1), "{job:?}");
    let all = results(&mut client, &job.id, -1).await;
    let a = all.iter().find(|r| r.custom_id == "a").unwrap();
    let result: Value = serde_json::from_str(&a.result_json).unwrap();
    assert_eq!(result["results"].as_array().unwrap().len(), 1);
    let b = all.iter().find(|r| r.custom_id == "b").unwrap();
    assert!(b.error.contains("`documents[1]` is empty"), "{b:?}");

    let too_many = vec![pb::JobDocument {
        custom_id: "c".into(),
        query: "q".into(),
        documents: vec!["a".into(); 9],
        ..Default::default()
    }];
    let (code, message) =
        failure(client.submit_job(submission("rerank", "rerank", "", too_many)).await);
    assert_eq!(code, Code::InvalidArgument);
    assert_eq!(
        message,
        "documents[0]: `documents` has 9 documents, more than server.limits.max_inputs_per_call (8)"
    );

    let pairs = vec![pb::JobDocument {
        custom_id: "p".into(),
        text: "Quem propôs o Transformer?".into(),
        text_pair: "O Google, em 2017.".into(),
        ..Default::default()
    }];
    let job = client
        .submit_job(submission("cross", "text-classification", "", pairs))
        .await
        .unwrap()
        .into_inner();
    let (job, _) = watch_to_end(&mut client, &job.id).await;
    assert_eq!(job.succeeded, 1, "{job:?}");
    let all = results(&mut client, &job.id, -1).await;
    let result: Value = serde_json::from_str(&all[0].result_json).unwrap();
    let line = lote_run(
        "pairs/bert-cross-encoder",
        "text-classification",
        &[json!({"text": "Quem propôs o Transformer?", "text_pair": "O Google, em 2017."})
            .to_string()],
    );
    assert_eq!(result["labels"], line[0]["labels"], "a job answers as lote run does");

    let case = &reference("pairs/bert-nli")["zero-shot-classification"][0];
    let text = case["args"][0].as_str().unwrap().to_string();
    let documents = vec![
        pb::JobDocument { custom_id: "z".into(), text, ..Default::default() },
        pb::JobDocument {
            custom_id: "empty-labels".into(),
            text: "O time venceu.".into(),
            params_json: r#"{"candidate_labels": []}"#.into(),
            ..Default::default()
        },
    ];
    let params = json!({"candidate_labels": case["kwargs"]["candidate_labels"]}).to_string();
    let job = client
        .submit_job(submission("nli", "zero-shot-classification", &params, documents))
        .await
        .unwrap()
        .into_inner();
    let (job, _) = watch_to_end(&mut client, &job.id).await;
    assert_eq!((job.succeeded, job.failed), (1, 1), "{job:?}");
    let all = results(&mut client, &job.id, -1).await;
    let z = all.iter().find(|r| r.custom_id == "z").unwrap();
    let result: Value = serde_json::from_str(&z.result_json).unwrap();
    assert_eq!(result["labels"], case["output"]["labels"], "as the pipeline ranks them");
    let bad = all.iter().find(|r| r.custom_id == "empty-labels").unwrap();
    assert!(bad.error.contains("`candidate_labels` is empty"), "{bad:?}");
}
