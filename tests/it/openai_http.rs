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
    let mut grpc = InferenceClient::new(server.channel().await);
    let first_ids = token_ids(&mut grpc, "embed", "Olá, você está bem?", true).await;
    let python = venv_python(&["openai"]);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai/client_calls.py");
    let ids = serde_json::to_string(&first_ids).unwrap();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .args([&base_url, "embed", "rerank", &ids])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let out: Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(out["models"], serde_json::json!(["embed", "rerank"]));
    assert_eq!(out["model"], "embed");

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
    // The same text as the model's token ids (special tokens included) embeds the same.
    for way in ["embedding_ids", "embedding_ids_list"] {
        assert_close(&floats(&out[way]), &embedded.embeddings[0].pooled, way);
    }
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
    assert_eq!(
        shape(error("token_ids"), 400, "invalid_request_error", Some("input")),
        "input[0]: token_ids[2]: 999999 is not a token id of this model (vocabulary 512)"
    );
    assert_eq!(
        shape(error("negative_id"), 400, "invalid_request_error", Some("input")),
        "`input[0]` must be a token id (a non-negative integer), not -1"
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

/// The model's token ids for `text`, from lote's gRPC Tokenize.
async fn token_ids(
    grpc: &mut InferenceClient<tonic::transport::Channel>,
    model: &str,
    text: &str,
    special: bool,
) -> Vec<u32> {
    let tokenized = grpc
        .tokenize(pb::TokenizeRequest {
            model: model.into(),
            inputs: vec![text.into()],
            add_special_tokens: Some(special),
        })
        .await
        .unwrap()
        .into_inner();
    tokenized.results[0].tokens.iter().map(|t| t.id).collect()
}

fn texts_of(value: &Value) -> Vec<String> {
    value.as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect()
}

/// lote's own gRPC Generate (parity-tested against transformers) for one prompt.
async fn grpc_generate(
    grpc: &mut InferenceClient<tonic::transport::Channel>,
    prompt: &str,
    parameters: pb::GenerationParameters,
) -> String {
    let parameters = pb::GenerationParameters { return_full_text: Some(false), ..parameters };
    let answer = grpc
        .generate(pb::GenerateRequest {
            model: "gen".into(),
            inputs: vec![prompt.into()],
            parameters: Some(parameters),
        })
        .await
        .unwrap()
        .into_inner();
    answer.results[0].sequences[0].text.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_and_chat_through_the_openai_client_equal_grpc_and_transformers() {
    let mut settings = settings();
    let model = |name: &str, fixture: &str| ModelSettings {
        name: name.into(),
        task: Task::TextGeneration,
        path: fixture_model(fixture),
        dtype: None,
    };
    settings.models.push(model("gen", "generation/gpt2"));
    settings.models.push(model("chat", "chat/llama-chat"));
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_model("chat/llama-chat").join("reference.json")).unwrap(),
    )
    .unwrap();
    let chats = reference["chat"].as_array().unwrap();
    let conversations: Vec<&Value> = chats.iter().map(|c| &c["messages"]).collect();
    let server = start_ready(settings).await;
    let base_url = format!("http://{}/v1", server.http_addr.expect("the HTTP API is on"));
    let mut grpc = InferenceClient::new(server.channel().await);
    let prompt = "O rato roeu a roupa do rei de Roma";
    let prompt_ids =
        serde_json::to_string(&token_ids(&mut grpc, "gen", prompt, false).await).unwrap();
    let python = venv_python(&["openai"]);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai/generation_calls.py");
    let conversations = serde_json::to_string(&conversations).unwrap();
    let completion = &reference["completion"][0];
    let completion_prompt = completion["prompt"].as_str().unwrap().to_string();
    let argument = completion_prompt.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .args([&base_url, "gen", "chat", &conversations, &argument, &prompt_ids])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let out: Value = serde_json::from_slice(&output.stdout).unwrap();

    let greedy = pb::GenerationParameters {
        max_new_tokens: Some(12),
        do_sample: Some(false),
        ..Default::default()
    };
    let expected = grpc_generate(&mut grpc, prompt, greedy.clone()).await;
    assert_eq!(texts_of(&out["greedy"]["texts"]), [expected.as_str()]);
    assert_eq!(
        texts_of(&out["greedy_ids"]["texts"]),
        [expected.as_str()],
        "the prompt as token ids"
    );
    assert_eq!(out["greedy_ids"]["usage"], out["greedy"]["usage"]);
    assert_eq!(out["greedy"]["object"], "text_completion");
    assert!(out["greedy"]["id"].as_str().unwrap().starts_with("cmpl-"));
    let usage = &out["greedy"]["usage"];
    assert_eq!(
        usage["total_tokens"],
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );

    // Two prompts with n = 2: indices in order, each prompt's greedy text twice.
    let second = grpc_generate(&mut grpc, "Ação e coração", greedy.clone()).await;
    let list = &out["greedy_list"];
    assert_eq!(list["indices"], serde_json::json!([0, 1, 2, 3]));
    assert_eq!(
        texts_of(&list["texts"]),
        [expected.clone(), expected.clone(), second.clone(), second]
    );

    // Streamed: the pieces join to the same text; the usage chunk counts as the whole call.
    let stream = &out["greedy_stream"];
    assert_eq!(texts_of(&stream["texts"]), [expected.as_str()]);
    assert_eq!(stream["usage"], out["greedy"]["usage"]);
    assert_eq!(stream["ids"], 1, "one id for every chunk");
    assert_eq!(stream["finish"], out["greedy"]["finish"]);

    let wire = &out["wire"];
    assert_eq!(wire["content_type"], "text/event-stream");
    let lines = texts_of(&wire["lines"]);
    assert_eq!(lines.last().unwrap(), "data: [DONE]");
    assert!(lines.iter().all(|l| l.starts_with("data: ")), "{lines:?}");
    assert_eq!(lines.len(), 3 + 1 + 1, "a chunk per token, the finish, [DONE]: {lines:?}");

    // A stop string is cut out, whole or streamed, and the reason is "stop".
    let stop = out["stop"]["stop"].as_str().unwrap();
    let cut = &expected[..expected.find(stop).unwrap()];
    for way in ["whole", "stream"] {
        assert_eq!(texts_of(&out["stop"][way]["texts"]), [cut], "{way}, stop {stop:?}");
        assert_eq!(out["stop"][way]["finish"], serde_json::json!(["stop"]), "{way}");
    }

    let echo = texts_of(&out["echo"]["texts"]);
    let four = grpc_generate(
        &mut grpc,
        prompt,
        pb::GenerationParameters { max_new_tokens: Some(4), ..greedy.clone() },
    )
    .await;
    assert_eq!(echo, [format!("{prompt}{four}")]);

    // A seed repeats every choice, streamed or not; another seed gives other choices.
    let seeded = texts_of(&out["seeded"][0]["texts"]);
    assert_eq!(seeded.len(), 3);
    assert_eq!(texts_of(&out["seeded"][1]["texts"]), seeded);
    assert_eq!(texts_of(&out["seeded_stream"]["texts"]), seeded);
    assert_ne!(texts_of(&out["other_seed"]["texts"]), seeded);
    assert_eq!(texts_of(&out["unseeded_n"]["texts"]).len(), 4);

    // The penalties reach the engine as gRPC's do.
    let penalised = pb::GenerationParameters {
        presence_penalty: Some(2.0),
        frequency_penalty: Some(2.0),
        ..greedy.clone()
    };
    let expected_penalised = grpc_generate(&mut grpc, prompt, penalised).await;
    assert_eq!(texts_of(&out["penalised"]["texts"]), [expected_penalised.as_str()]);
    assert_ne!(expected_penalised, expected, "the penalties change this greedy answer");

    // Chat: the prompt and greedy answer of transformers on the same weights.
    for (i, chat) in chats.iter().enumerate() {
        let name = &chat["name"];
        for (way, answer) in [("whole", &out["chat"][i]), ("stream", &out["chat_stream"][i])] {
            assert_eq!(
                texts_of(&answer["texts"]),
                [chat["new_text"].as_str().unwrap()],
                "{name} {way}"
            );
            assert_eq!(answer["finish"], serde_json::json!([chat["finish"]]), "{name} {way}");
            let usage = &answer["usage"];
            assert_eq!(
                usage["prompt_tokens"],
                chat["prompt_ids"].as_array().unwrap().len(),
                "{name} {way}"
            );
            let new_ids = chat["new_ids"].as_array().unwrap().len();
            assert_eq!(usage["completion_tokens"], new_ids, "{name} {way}");
        }
        assert_eq!(out["chat"][i]["roles"], serde_json::json!(["assistant"]));
        assert_eq!(out["chat"][i]["object"], "chat.completion");
    }
    // Log-probabilities: transformers' log-softmax of the raw logits, chosen and top 2.
    let tokenizer =
        lote::tokenize::TextTokenizer::load(&fixture_model("chat/llama-chat"), None).unwrap();
    let text_of = |id: &Value| tokenizer.decode(&[id.as_u64().unwrap() as u32], false).unwrap();
    let close = |a: &Value, b: &Value, what: &str| {
        assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-4, "{what}: {a} vs {b}");
    };
    for (i, chat) in chats.iter().enumerate() {
        let expected = chat["new_logprobs"].as_array().unwrap();
        for way in ["chat_logprobs", "chat_logprobs_stream"] {
            let ours = out[way][i].as_array().unwrap();
            assert_eq!(ours.len(), expected.len(), "{way} {}", chat["name"]);
            for (step, (o, e)) in ours.iter().zip(expected).enumerate() {
                let what = format!("{way} {} step {step}", chat["name"]);
                assert_eq!(o["token"], text_of(&e["token"]), "{what}");
                assert_eq!(
                    o["bytes"],
                    serde_json::json!(text_of(&e["token"]).into_bytes()),
                    "{what}"
                );
                close(&o["logprob"], &e["logprob"], &what);
                for (ot, et) in
                    o["top"].as_array().unwrap().iter().zip(e["top"].as_array().unwrap())
                {
                    assert_eq!(ot[0], text_of(&et[0]), "{what}");
                    close(&ot[1], &et[1], &what);
                }
                assert_eq!(o["top"].as_array().unwrap().len(), 2, "{what}");
            }
        }
    }
    // Completions' legacy object: token `at + i` of `legacy` is step `i`, from character `offset`.
    let check_steps = |legacy: &Value, steps: &[Value], at: usize, mut offset: usize| {
        for (i, e) in steps.iter().enumerate() {
            let step = at + i;
            assert_eq!(legacy["tokens"][step], text_of(&e["token"]), "token {step}");
            close(&legacy["token_logprobs"][step], &e["logprob"], "token_logprobs");
            // Keyed by text, as OpenAI's: tokens that decode alike (U+FFFD) keep the first.
            let top = legacy["top_logprobs"][step].as_object().unwrap();
            let tops = e["top"].as_array().unwrap();
            for et in tops {
                let text = text_of(&et[0]);
                if tops.iter().filter(|t| text_of(&t[0]) == text).count() == 1
                    && text != text_of(&e["token"])
                {
                    close(&top[&text], &et[1], "top_logprobs");
                }
            }
            assert_eq!(legacy["text_offset"][step], offset, "text_offset {step}");
            offset += text_of(&e["token"]).chars().count();
        }
        offset
    };
    let legacy = &out["completion_logprobs"];
    let steps = completion["new_logprobs"].as_array().unwrap();
    assert_eq!(legacy["text"], completion["new_text"]);
    assert_eq!(legacy["tokens"].as_array().unwrap().len(), steps.len());
    check_steps(legacy, steps, 0, 0);
    // `echo` with `logprobs`: the prompt's tokens first (the first with nulls, as OpenAI's),
    // each scored as transformers scores it, then the completion's; whole and streamed.
    let prompt_steps = completion["prompt_logprobs"].as_array().unwrap();
    let first = &completion["prompt_ids"][0];
    let echoed = &out["echo_logprobs"];
    let new_text = completion["new_text"].as_str().unwrap();
    assert_eq!(echoed["text"], format!("{completion_prompt}{new_text}"));
    assert_eq!(echoed["tokens"].as_array().unwrap().len(), 1 + prompt_steps.len() + steps.len());
    for object in [echoed, &out["echo_scores"], &out["echo_logprobs_stream"]] {
        assert_eq!(object["tokens"][0], text_of(first), "{object}");
        assert_eq!(object["token_logprobs"][0], Value::Null, "{object}");
        assert_eq!(object["text_offset"][0], 0);
    }
    assert_eq!(echoed["top_logprobs"][0], Value::Null);
    let after_prompt = check_steps(echoed, prompt_steps, 1, text_of(first).chars().count());
    assert_eq!(after_prompt, completion_prompt.chars().count(), "the prompt's tokens spell it");
    check_steps(echoed, steps, 1 + prompt_steps.len(), after_prompt);
    // `max_tokens: 0`: the prompt scored, nothing generated.
    let scores = &out["echo_scores"];
    assert_eq!(scores["text"], completion_prompt);
    assert_eq!(scores["finish"], "length");
    assert_eq!(scores["usage"]["completion_tokens"], 0);
    assert_eq!(scores["usage"]["prompt_tokens"], prompt_steps.len() + 1);
    assert_eq!(scores["tokens"].as_array().unwrap().len(), 1 + prompt_steps.len());
    check_steps(scores, prompt_steps, 1, text_of(first).chars().count());
    let pair = &out["echo_pair"][1];
    let alone = scores["token_logprobs"].as_array().unwrap();
    assert_eq!(pair.as_array().unwrap().len(), alone.len());
    for (batched, alone) in pair.as_array().unwrap().iter().zip(alone).skip(1) {
        close(batched, alone, "a prompt scored beside a shorter one");
    }
    let streamed = &out["echo_logprobs_stream"];
    assert_eq!(streamed["text"], echoed["text"]);
    for key in ["tokens", "token_logprobs", "text_offset"] {
        let (a, b) = (streamed[key].as_array().unwrap(), echoed[key].as_array().unwrap());
        assert_eq!(a.len(), b.len(), "{key}");
        for (x, y) in a.iter().zip(b) {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => assert!((x - y).abs() < 1e-4, "{key}: {x} vs {y}"),
                _ => assert_eq!(x, y, "{key}"),
            }
        }
    }
    assert_eq!(out["echo_scores_stream"]["text"], completion_prompt);
    assert_eq!(out["echo_scores_stream"]["finish"], serde_json::json!(["length"]));

    assert_eq!(out["chat_stream"][0]["objects"], serde_json::json!(["chat.completion.chunk"]));
    assert_eq!(texts_of(&out["chat_n"]["texts"]).len(), 2);

    let error = |name: &str| &out["errors"][name];
    let shape = |e: &Value, status: u64, param: Option<&str>| {
        assert_eq!(e["status"], status, "{e}");
        assert_eq!(e["error"]["type"], "invalid_request_error", "{e}");
        assert_eq!(e["error"]["param"].as_str(), param, "{e}");
        e["error"]["message"].as_str().unwrap().to_string()
    };
    assert!(
        shape(error("no_template"), 400, Some("model"))
            .starts_with("model `gen`: the model has no chat template"),
        "{}",
        error("no_template")
    );
    assert_eq!(
        shape(error("wrong_task_chat"), 400, Some("model")),
        "model `embed` serves feature-extraction, not text-generation"
    );
    assert_eq!(shape(error("empty_messages"), 400, Some("messages")), "`messages` is empty");
    assert_eq!(
        shape(error("bad_temperature"), 400, Some("temperature")),
        "`temperature` must be a number between 0 and 2, not 5"
    );
    assert_eq!(
        shape(error("bad_n"), 400, Some("n")),
        "`n` must be an integer from 1 to 128, not 0"
    );
    assert_eq!(
        shape(error("token_prompt"), 400, Some("prompt")),
        "token_ids[1]: 400 is not a token id of this model (vocabulary 400)"
    );
    assert!(
        shape(error("too_long"), 400, None).contains("max_new_tokens (100000)"),
        "{}",
        error("too_long")
    );
    assert!(
        shape(error("stream_too_long"), 400, Some("prompt"))
            .contains("more than the model's context"),
        "{}",
        error("stream_too_long")
    );
    assert!(shape(error("logit_bias"), 400, Some("logit_bias")).contains("not supported"));
    assert_eq!(
        shape(error("scores_without_echo"), 400, Some("max_tokens")),
        "`max_tokens` 0 generates nothing: it needs `echo: true` (the prompt scored)"
    );
    assert!(shape(error("tools"), 400, Some("tools")).contains("not supported"));
    assert_eq!(
        shape(error("unknown_field"), 400, Some("temprature")),
        "unknown field `temprature`"
    );
    assert!(
        shape(error("image_part"), 400, Some("messages")).starts_with("`messages[0].content[0]`")
    );

    // The worker still answers after every refusal.
    assert_eq!(grpc_generate(&mut grpc, prompt, greedy).await, expected);
}
