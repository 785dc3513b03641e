//! The OpenAI-compatible HTTP API through the official `openai` Python client (and urllib for
//! `/v1/rerank`, which the client has no method for): embeddings equal lote's gRPC Embed for the
//! same texts in float and base64, `dimensions` shortens and renormalises, rerank equals the
//! rerank task's gRPC answer, and each bad input gets OpenAI's error shape and status.

use crate::common;

use common::{fixture_model, start_ready, test_settings, venv_python};
use lote::{
    Settings,
    grpc::pb::{self, inference_client::InferenceClient},
    settings::{ModelSettings, Task},
};
use serde_json::Value;

fn settings() -> Settings {
    let mut settings = test_settings();
    let model = |name: &str, task, fixture: &str| ModelSettings {
        name: name.into(),
        task,
        path: fixture_model(fixture),
        dtype: None,
    };
    settings.models = vec![
        model("embed", Task::FeatureExtraction, "bert-embed-mean"),
        model("rerank", Task::Rerank, "pairs/bert-cross-encoder"),
    ];
    settings
}

fn floats(value: &Value) -> Vec<f64> {
    value.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

fn assert_close(ours: &[f64], theirs: &[f32], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}");
    for (a, b) in ours.iter().zip(theirs) {
        assert!((a - *b as f64).abs() < 1e-6, "{what}: {a} vs {b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_client_embeds_and_reranks_as_grpc_does_and_gets_openai_errors() {
    let server = start_ready(settings()).await;
    let base_url = format!("http://{}/v1", server.http_addr.expect("the HTTP API is on"));
    let python = venv_python(&["openai"]);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai/client_calls.py");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .args([&base_url, "embed", "rerank"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let out: Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(out["models"], serde_json::json!(["embed", "rerank"]));
    assert_eq!(out["model"], "embed");

    let mut grpc = InferenceClient::new(server.channel().await);
    let texts = ["Olá, você está bem?", "A ação foi concluída com sucesso.", "São Paulo"];
    let embedded = grpc
        .embed(pb::EmbedRequest {
            model: "embed".into(),
            inputs: texts.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for (i, embedding) in embedded.embeddings.iter().enumerate() {
        assert_close(
            &floats(&out["embeddings"][i]),
            &embedding.pooled,
            "base64, decoded by the client",
        );
        assert_close(&floats(&out["embeddings_float"][i]), &embedding.pooled, "float");
    }
    assert_close(&floats(&out["embedding_one"]), &embedded.embeddings[0].pooled, "one string");
    assert_eq!(out["indices"], serde_json::json!([0, 1, 2]));
    assert_eq!(out["usage"].as_u64(), Some(embedded.metadata.unwrap().input_tokens));
    let short = floats(&out["embedding_short"]);
    assert_eq!(short.len(), 8);
    let norm: f64 = short.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "renormalised: {norm}");
    let first8 = &embedded.embeddings[0].pooled[..8];
    let scale = first8.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
    for (a, b) in short.iter().zip(first8) {
        assert!((a - *b as f64 / scale).abs() < 1e-5);
    }

    let error = |name: &str| &out["errors"][name];
    let shape = |e: &Value, status: u64, kind: &str, param: Option<&str>| {
        assert_eq!(e["status"], status, "{e}");
        assert_eq!(e["error"]["type"], kind, "{e}");
        assert_eq!(e["error"]["param"].as_str(), param, "{e}");
        e["error"]["message"].as_str().unwrap().to_string()
    };
    assert_eq!(
        shape(error("unknown_model"), 404, "not_found_error", Some("model")),
        "no model named `nope` is served here"
    );
    assert_eq!(
        shape(error("wrong_task"), 400, "invalid_request_error", Some("model")),
        "model `rerank` serves rerank, not feature-extraction"
    );
    assert_eq!(
        shape(error("empty_input"), 400, "invalid_request_error", Some("input")),
        "`input` is empty"
    );
    assert_eq!(
        shape(error("blank_text"), 400, "invalid_request_error", Some("input")),
        "input[1]: `text` is empty"
    );
    assert_eq!(
        shape(error("too_many_dimensions"), 400, "invalid_request_error", Some("dimensions")),
        "`dimensions` must be between 1 and the model's 32 dimensions, not 100000"
    );
    assert!(
        shape(error("token_ids"), 400, "invalid_request_error", Some("input"))
            .contains("token ids")
    );

    let ranked = grpc
        .rerank(pb::RerankRequest {
            model: "rerank".into(),
            query: "Quem propôs o Transformer?".into(),
            documents: vec![
                "O gato dormiu.".into(),
                "O Transformer foi proposto por pesquisadores do Google em 2017.".into(),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let rerank = &out["rerank"];
    assert_eq!(rerank["status"], 200, "{rerank}");
    let results = rerank["body"]["results"].as_array().unwrap();
    for (ours, theirs) in results.iter().zip(&ranked.results) {
        assert_eq!(ours["index"], theirs.index);
        assert!((ours["relevance_score"].as_f64().unwrap() - theirs.score as f64).abs() < 1e-7);
    }
    let best = results[0]["index"].as_u64().unwrap() as usize;
    assert_eq!(
        results[0]["document"]["text"],
        ["O gato dormiu.", "O Transformer foi proposto por pesquisadores do Google em 2017."][best]
    );
    assert_eq!(out["rerank_objects"]["body"]["results"].as_array().unwrap().len(), 2);
    assert!(out["rerank_objects"]["body"]["results"][0].get("document").is_none());
    assert_eq!(out["rerank_empty"]["status"], 400);
    assert_eq!(out["rerank_empty"]["body"]["error"]["message"], "`documents` is empty");
    assert_eq!(out["rerank_empty"]["body"]["error"]["param"], "documents");
    assert_eq!(out["not_json"]["status"], 400);
    assert_eq!(out["not_json"]["body"]["error"]["type"], "invalid_request_error");
    assert_eq!(out["no_route"]["status"], 404);
    assert_eq!(out["no_route"]["body"]["error"]["message"], "no route /v1/nowhere");
}
