//! A model that fails on one input, in every way in: a copy of a tiny BERT whose tokenizer has
//! one added token past the model's embedding (a model whose vocabulary was grown and not
//! resized, as users' models sometimes are), so a text holding that token breaks the model in
//! libtorch. The caller hears `the model failed on this input (request <id>)` and nothing of
//! libtorch or the machine; the inputs batched with it run again alone and succeed; the worker
//! keeps serving. And fill-mask `targets` naming that token are refused before anything runs.

use crate::common;

use std::path::{Path, PathBuf};

use common::{
    fixture_model,
    jobs::{jobs_client, results, submission, text_documents, watch_to_end},
    start_ready, test_settings,
};
use lote::{
    grpc::pb::{self, inference_client::InferenceClient},
    settings::{ModelSettings, Task},
};
use serde_json::Value;

/// The token the model has no embedding for.
const NEW_TOKEN: &str = "[NOVO]";

/// A copy of fixture `name` whose tokenizer.json adds [`NEW_TOKEN`] as id 512, one past the
/// model's 512 embeddings.
fn with_unembedded_token(name: &str, dir: &Path) -> PathBuf {
    let target = dir.join(name);
    copy_dir(&fixture_model(name), &target);
    let path = target.join("tokenizer.json");
    let mut tokenizer: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(target.join("config.json")).unwrap())
            .unwrap();
    let vocabulary = config["vocab_size"].as_u64().unwrap();
    tokenizer["added_tokens"].as_array_mut().unwrap().push(serde_json::json!({
        "id": vocabulary, "content": NEW_TOKEN, "single_word": false, "lstrip": false,
        "rstrip": false, "normalized": false, "special": false,
    }));
    std::fs::write(&path, tokenizer.to_string()).unwrap();
    target
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// `lote run` of `lines` with `model` for `task`: its exit code and output lines.
fn run_lines(model: &Path, task: &str, lines: &[String]) -> (Option<i32>, Vec<Value>, String) {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let result = common::lote_command()
        .args(["run", "--task", task, "--model"])
        .arg(model)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .env("LOTE__DEVICE__KIND", "cpu")
        .output()
        .unwrap();
    let out = std::fs::read_to_string(&output)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    (result.status.code(), out, String::from_utf8_lossy(&result.stderr).into_owned())
}

fn assert_masked(message: &str) {
    assert!(message.contains("the model failed on this input (request "), "{message}");
    for leak in ["Torch", "libtorch", "/", "unwrap", "index"] {
        assert!(!message.contains(leak), "`{leak}` leaked: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_jobs_mask_a_model_failure_and_its_batch_mates_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings();
    settings.models = vec![ModelSettings {
        name: "embed".into(),
        task: Task::FeatureExtraction,
        path: with_unembedded_token("bert-embed-mean", dir.path()),
        dtype: None,
    }];
    settings.batching.max_batch_delay = std::time::Duration::from_millis(50);
    let server = start_ready(settings).await;
    let client = InferenceClient::new(server.channel().await);
    let embed = |text: &str| {
        let mut client = client.clone();
        let request = pb::EmbedRequest {
            model: "embed".into(),
            inputs: vec![text.into()],
            ..Default::default()
        };
        async move { client.embed(request).await }
    };
    // Three callers at once: one batch, one of them broken.
    let bad = format!("olá {NEW_TOKEN}");
    let (a, broken, c) = tokio::join!(embed("olá"), embed(&bad), embed("você"));
    assert!(a.is_ok() && c.is_ok(), "batch-mates succeed: {a:?} {c:?}");
    let status = broken.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Internal);
    assert!(
        status.message().starts_with("inputs[0]: the model failed on this input"),
        "{status:?}"
    );
    assert_masked(status.message());

    // A job of the same: the broken document fails, masked; the others succeed.
    let mut jobs = jobs_client(server.grpc_addr).await;
    let texts = ["ação", bad.as_str(), "São Paulo", "pão"];
    let documents = text_documents(texts.len(), |i| texts[i].to_string());
    let job = jobs.submit_job(submission("embed", "feature-extraction", "{}", documents)).await;
    let job = job.unwrap().into_inner();
    let (job, _) = watch_to_end(&mut jobs, &job.id).await;
    assert_eq!((job.state.as_str(), job.succeeded, job.failed), ("completed", 3, 1));
    let results = results(&mut jobs, &job.id, -1).await;
    let failed: Vec<&pb::DocumentResult> = results.iter().filter(|r| !r.error.is_empty()).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].custom_id, "doc-1");
    assert_masked(&failed[0].error);

    // Still serving.
    assert!(embed("maçã").await.is_ok());
}

#[test]
fn lote_run_masks_a_model_failure_and_answers_the_other_lines() {
    let dir = tempfile::tempdir().unwrap();
    let model = with_unembedded_token("bert-embed-mean", dir.path());
    let lines = [
        r#"{"id": "a", "text": "A ação foi concluída."}"#.to_string(),
        format!(r#"{{"id": "b", "text": "olá {NEW_TOKEN}"}}"#),
        r#"{"id": "c", "text": "Você está bem?"}"#.to_string(),
    ];
    let (code, out, stderr) = run_lines(&model, "feature-extraction", &lines);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(out.len(), 3);
    assert!(out[0]["error"].is_null() && out[2]["error"].is_null(), "{out:?}");
    assert!(out[0]["embedding"].is_array() && out[2]["embedding"].is_array(), "{}", out[0]);
    assert_masked(out[1]["error"].as_str().unwrap());
}

#[test]
fn fill_mask_targets_past_the_model_s_vocabulary_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let model = with_unembedded_token("bert-mlm", dir.path());
    let lines = [
        r#"{"id": "a", "text": "A [MASK] foi concluída."}"#.to_string(),
        format!(
            r#"{{"id": "b", "text": "A [MASK] foi concluída.", "params": {{"targets": ["casa", "{NEW_TOKEN}"]}}}}"#
        ),
    ];
    let (code, out, stderr) = run_lines(&model, "fill-mask", &lines);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(out[0]["error"].is_null(), "{}", out[0]);
    assert_eq!(
        out[1]["error"],
        "bad params: `targets[1]`: `[NOVO]` is token 512, not a token id of this model (vocabulary 512)"
    );
}
