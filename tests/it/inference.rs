//! The inference gRPC API end to end: the real server in-process on port 0 with the tiny
//! fixture models. Parity with transformers through gRPC, concurrent calls equal to sequential
//! ones, streams equal to unary calls, and every bad input of the issue with its exact code.

use crate::common;

use std::time::Duration;

use common::{TestServer, failure, fixture_model, read_reference, test_settings};
use lote::{
    Settings,
    grpc::pb::{self, inference_client::InferenceClient, models_client::ModelsClient},
    settings::{Dtype, ModelSettings, Task},
};
use serde_json::Value;
use tonic::{Code, transport::Channel};

fn model(name: &str, task: Task, fixture: &str) -> ModelSettings {
    ModelSettings { name: name.into(), task, path: fixture_model(fixture), dtype: None }
}

fn settings() -> Settings {
    let mut settings = test_settings();
    settings.models = vec![
        model("qa", Task::QuestionAnswering, "bert-qa"),
        model("embed", Task::FeatureExtraction, "bert-embed-mean"),
        model("cls", Task::TextClassification, "bert-cls"),
        model("ner", Task::TokenClassification, "bert-ner"),
        model("mlm", Task::FillMask, "bert-mlm"),
        model("gpt2", Task::TextGeneration, "generation/gpt2"),
        model("bart", Task::Summarization, "generation/bart"),
        // A model of its own dtype beside the worker's fp32 ones.
        ModelSettings {
            dtype: Some(Dtype::Int8),
            ..model("embed-int8", Task::FeatureExtraction, "bert-embed-mean")
        },
    ];
    settings.server.limits.max_inputs_per_call = 32;
    settings.server.limits.max_message_bytes = 64 * 1024;
    settings.server.limits.max_input_tokens = 400;
    settings
}

/// Starts a server and waits until every model is ready.
async fn start(settings: Settings) -> TestServer {
    let names: Vec<String> = settings.models.iter().map(|m| m.name.clone()).collect();
    let server = TestServer::start(settings).await;
    for name in names {
        let service = format!("lote.model.{name}");
        let mut ready = false;
        for _ in 0..600 {
            if common::health_status(server.channel().await, &service).await.ok().as_deref()
                == Some("Serving")
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ready, "{name} did not become ready");
    }
    server
}

async fn client(server: &TestServer) -> InferenceClient<Channel> {
    InferenceClient::new(server.channel().await)
}

fn embed_request(model: &str, inputs: &[&str]) -> pb::EmbedRequest {
    pb::EmbedRequest {
        model: model.into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn generate_request(inputs: &[&str], max_new_tokens: u32) -> pb::GenerateRequest {
    pb::GenerateRequest {
        model: "gpt2".into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        parameters: Some(pb::GenerationParameters {
            max_new_tokens: Some(max_new_tokens),
            return_full_text: Some(false),
            ..Default::default()
        }),
    }
}

fn sentence(i: usize) -> String {
    let words = ["ação", "coração", "São Paulo", "você", "avó", "maçã", "pão", "João"];
    (0..(1 + i % 23)).map(|j| words[(i + j) % words.len()]).collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn question_answering_and_generation_match_transformers_through_grpc() {
    let server = start(settings()).await;
    let mut client = client(&server).await;
    let reference = read_reference(&fixture_model("bert-qa"));
    for call in reference["pipelines"]["question-answering"].as_array().unwrap() {
        let kwargs = &call["kwargs"];
        if kwargs["top_k"] != 1 {
            continue;
        }
        let response = client
            .answer_question(pb::AnswerQuestionRequest {
                model: "qa".into(),
                inputs: vec![pb::QuestionContext {
                    question: kwargs["question"].as_str().unwrap().into(),
                    context: kwargs["context"].as_str().unwrap().into(),
                }],
                doc_stride: kwargs["doc_stride"].as_u64().map(|n| n as u32),
                max_seq_len: kwargs["max_seq_len"].as_u64().map(|n| n as u32),
                max_answer_len: kwargs["max_answer_len"].as_u64().map(|n| n as u32),
                handle_impossible_answer: kwargs["handle_impossible_answer"].as_bool(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let ours = &response.results[0].answers[0];
        let theirs = &call["output"];
        assert_eq!(ours.answer, theirs["answer"].as_str().unwrap());
        assert_eq!(ours.start as u64, theirs["start"].as_u64().unwrap());
        assert_eq!(ours.end as u64, theirs["end"].as_u64().unwrap());
        let score = theirs["score"].as_f64().unwrap();
        assert!((ours.score - score).abs() <= 1e-6 * score.abs().max(1e-6), "{ours:?} vs {score}");
        let metadata = response.metadata.unwrap();
        assert_eq!(metadata.model, "qa");
        assert_eq!(metadata.weights_sha256.len(), 64);
        assert!(metadata.input_tokens > 0);
    }

    let reference = read_reference(&fixture_model("generation/gpt2"));
    let mut checked = 0;
    for call in reference["pipelines"]["text-generation"]["calls"].as_array().unwrap() {
        let kwargs = &call["kwargs"];
        if kwargs["do_sample"] != false {
            continue;
        }
        let number = |key: &str| kwargs[key].as_u64().map(|n| n as u32);
        let request = pb::GenerateRequest {
            model: "gpt2".into(),
            inputs: vec![call["args"][0].as_str().unwrap().into()],
            parameters: Some(pb::GenerationParameters {
                max_new_tokens: number("max_new_tokens"),
                num_beams: number("num_beams"),
                num_return_sequences: number("num_return_sequences"),
                return_full_text: kwargs["return_full_text"].as_bool(),
                do_sample: Some(false),
                ..Default::default()
            }),
        };
        let response = client.generate(request).await.unwrap().into_inner();
        let ours: Vec<&str> =
            response.results[0].sequences.iter().map(|s| s.text.as_str()).collect();
        let theirs: Vec<&str> = call["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["generated_text"].as_str().unwrap())
            .collect();
        assert_eq!(ours, theirs, "{kwargs}");
        checked += 1;
    }
    assert!(checked > 0, "the reference holds greedy or beam calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_mixed_length_calls_equal_sequential_calls() {
    let server = start(settings()).await;
    let mut client = client(&server).await;
    let texts: Vec<String> = (0..200).map(sentence).collect();
    let mut alone = Vec::new();
    for text in &texts {
        let response = client.embed(embed_request("embed", &[text])).await.unwrap();
        alone.push(response.into_inner().embeddings[0].pooled.clone());
    }
    let calls: Vec<_> = texts
        .iter()
        .map(|text| {
            let mut client = client.clone();
            let request = embed_request("embed", &[text]);
            tokio::spawn(async move { client.embed(request).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let together = call.await.unwrap().unwrap().into_inner().embeddings[0].pooled.clone();
        assert_eq!(together.len(), alone[i].len());
        let worst =
            together.iter().zip(&alone[i]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-5, "input {i} differs by {worst} when batched");
    }

    // Generation: prompts joining and leaving a running batch give what they give alone.
    let prompts: Vec<String> = (0..24).map(|i| sentence(i * 3)).collect();
    let mut alone = Vec::new();
    for (i, prompt) in prompts.iter().enumerate() {
        let response =
            client.generate(generate_request(&[prompt], 4 + (i % 5) as u32 * 3)).await.unwrap();
        alone.push(response.into_inner().results[0].sequences[0].text.clone());
    }
    let calls: Vec<_> = prompts
        .iter()
        .enumerate()
        .map(|(i, prompt)| {
            let mut client = client.clone();
            let request = generate_request(&[prompt], 4 + (i % 5) as u32 * 3);
            tokio::spawn(async move { client.generate(request).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let response = call.await.unwrap().unwrap().into_inner();
        assert_eq!(response.results[0].sequences[0].text, alone[i], "prompt {i}");
    }

    // Summaries with beams, several inputs per call, also equal their one-at-a-time answers.
    let documents: Vec<String> = (0..6).map(|i| sentence(i * 7 + 5)).collect();
    let summarize = |inputs: Vec<String>| pb::SummarizeRequest {
        model: "bart".into(),
        inputs,
        parameters: Some(pb::GenerationParameters {
            num_beams: Some(3),
            max_new_tokens: Some(12),
            ..Default::default()
        }),
    };
    let mut alone = Vec::new();
    for document in &documents {
        let response = client.summarize(summarize(vec![document.clone()])).await.unwrap();
        alone.push(response.into_inner().results[0].sequences[0].text.clone());
    }
    let together = client.summarize(summarize(documents.clone())).await.unwrap().into_inner();
    let together: Vec<String> =
        together.results.iter().map(|r| r.sequences[0].text.clone()).collect();
    assert_eq!(together, alone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_gives_the_text_of_the_unary_call() {
    let server = start(settings()).await;
    let mut client = client(&server).await;
    for prompt in ["Olá, você", "A ação foi concluída com sucesso e", "São Paulo"] {
        let unary = client.generate(generate_request(&[prompt], 12)).await.unwrap().into_inner();
        let expected = &unary.results[0].sequences[0];
        let request = pb::GenerateStreamRequest {
            model: "gpt2".into(),
            input: prompt.into(),
            parameters: generate_request(&[prompt], 12).parameters,
        };
        let mut stream = client.generate_stream(request).await.unwrap().into_inner();
        let (mut text, mut tokens, mut last) = (String::new(), 0, None);
        while let Some(message) = stream.message().await.unwrap() {
            text.push_str(&message.text);
            if message.finish_reason.is_some() {
                last = Some(message);
            } else {
                tokens += 1;
            }
        }
        let last = last.expect("the stream ends with its finish reason");
        assert_eq!(text, expected.text);
        assert_eq!(tokens, expected.output_tokens);
        assert_eq!(last.finish_reason.unwrap(), expected.finish_reason);
        assert_eq!(last.metadata.unwrap().output_tokens, expected.output_tokens as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_input_gets_its_code_and_the_server_keeps_serving() {
    let server = start(settings()).await;
    let mut client = client(&server).await;
    let still_serving = |mut client: InferenceClient<Channel>| async move {
        let response = client.embed(embed_request("embed", &["ainda aqui"])).await;
        assert_eq!(response.unwrap().into_inner().embeddings.len(), 1, "the server keeps serving");
    };

    let (code, message) = failure(client.embed(embed_request("nope", &["a"])).await);
    assert_eq!((code, message.as_str()), (Code::NotFound, "no model named `nope` is served here"));

    let (code, message) = failure(client.embed(embed_request("qa", &["a"])).await);
    assert_eq!(code, Code::FailedPrecondition);
    assert_eq!(message, "model `qa` serves question-answering, not feature-extraction");

    let (code, message) = failure(client.embed(embed_request("embed", &[])).await);
    assert_eq!((code, message.as_str()), (Code::InvalidArgument, "`inputs` is empty"));

    let many: Vec<&str> = vec!["a"; 33];
    let (code, message) = failure(client.embed(embed_request("embed", &many)).await);
    assert_eq!(code, Code::InvalidArgument);
    assert_eq!(message, "33 inputs: more than server.limits.max_inputs_per_call (32)");

    let (code, message) = failure(client.embed(embed_request("embed", &["ok", "  "])).await);
    assert_eq!((code, message.as_str()), (Code::InvalidArgument, "inputs[1]: `text` is empty"));

    let long = "palavra ".repeat(500);
    let (code, message) = failure(client.embed(embed_request("embed", &[&long])).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("server.limits.max_input_tokens (400)"), "{message}");

    let huge = "x".repeat(100 * 1024);
    let (code, message) = failure(client.embed(embed_request("embed", &[&huge])).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("server.limits.max_message_bytes (65536 bytes)"), "{message}");

    let (code, message) = failure(raw_embed(server.channel().await, b"ol\xe1 \xff").await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.starts_with("malformed request:"), "{message}");
    assert!(message.contains("UTF-8"), "{message}");

    let mut request = tonic::Request::new(embed_request("embed", &["prazo curto"]));
    request.set_timeout(Duration::from_millis(1));
    let (code, _) = failure(client.embed(request).await);
    assert_eq!(code, Code::DeadlineExceeded);

    let mut beams = generate_request(&["olá"], 5);
    beams.parameters.as_mut().unwrap().num_beams = Some(2);
    let (code, message) = failure(
        client
            .generate_stream(pb::GenerateStreamRequest {
                model: "gpt2".into(),
                input: "olá".into(),
                parameters: beams.parameters,
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("num_beams"), "{message}");

    let mut unknown = generate_request(&["olá"], 5);
    unknown.parameters.as_mut().unwrap().temperature = Some(-1.0);
    let (code, _) = failure(client.generate(unknown).await);
    assert_eq!(code, Code::InvalidArgument);

    // A client that leaves mid-stream: the generation stops, the server goes on.
    let request = pb::GenerateStreamRequest {
        model: "gpt2".into(),
        input: "Olá".into(),
        parameters: generate_request(&["Olá"], 120).parameters,
    };
    let mut stream = client.generate_stream(request).await.unwrap().into_inner();
    let first = stream.message().await.unwrap();
    assert!(first.is_some());
    drop(stream);
    still_serving(client.clone()).await;
    let short = client.generate(generate_request(&["depois"], 3)).await.unwrap().into_inner();
    assert_eq!(short.results[0].sequences[0].output_tokens, 3);
}

/// An Embed call whose input is raw bytes (not UTF-8) under the `inputs` tag.
async fn raw_embed(
    channel: Channel,
    input: &[u8],
) -> Result<tonic::Response<pb::EmbedResponse>, tonic::Status> {
    #[derive(Clone, PartialEq, prost::Message)]
    struct RawEmbedRequest {
        #[prost(string, tag = "1")]
        model: String,
        #[prost(bytes = "vec", repeated, tag = "2")]
        inputs: Vec<Vec<u8>>,
    }
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let request = RawEmbedRequest { model: "embed".into(), inputs: vec![input.to_vec()] };
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/lote.v1.Inference/Embed");
    let codec = tonic_prost::ProstCodec::<RawEmbedRequest, pb::EmbedResponse>::default();
    grpc.unary(tonic::Request::new(request), path, codec).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_times_the_queue_bound_is_refused_at_once_and_the_rest_is_served() {
    let mut settings = test_settings();
    settings.models = vec![model("gpt2", Task::TextGeneration, "generation/gpt2")];
    settings.batching.max_queued = 4;
    settings.batching.max_batch_size = 2;
    let server = start(settings).await;
    let client = client(&server).await;
    let calls: Vec<_> = (0..16)
        .map(|i| {
            let mut client = client.clone();
            let request = generate_request(&[&sentence(i)], 40);
            tokio::spawn(async move { client.generate(request).await })
        })
        .collect();
    let (mut served, mut refused) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => served += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(status.message().starts_with("overloaded:"), "{status:?}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0 && served >= 4, "served {served}, refused {refused}");
    let mut client = client.clone();
    assert!(client.generate(generate_request(&["de novo"], 3)).await.is_ok(), "still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_report_their_state_and_every_task_answers() {
    let server = start(settings()).await;
    let mut models = ModelsClient::new(server.channel().await);
    let listed = models.list_models(pb::ListModelsRequest {}).await.unwrap().into_inner();
    assert_eq!(listed.models.len(), 8);
    let qa = models.get_model(pb::GetModelRequest { name: "qa".into() }).await.unwrap();
    let qa = qa.into_inner();
    assert_eq!(
        (qa.task.as_str(), qa.architecture.as_str(), qa.state.as_str(), qa.device.as_str()),
        ("question-answering", "BertForQuestionAnswering", "ready", "cpu")
    );
    assert!(qa.max_input_tokens > 0);
    assert_eq!(qa.dtype, "fp32");
    let int8 = models.get_model(pb::GetModelRequest { name: "embed-int8".into() }).await.unwrap();
    assert_eq!(int8.into_inner().dtype, "int8");
    let embedded = client(&server).await.embed(embed_request("embed-int8", &["em int8"])).await;
    assert_eq!(embedded.unwrap().into_inner().embeddings.len(), 1);
    let missing = models.get_model(pb::GetModelRequest { name: "nada".into() }).await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);

    // gzip both ways.
    let mut zipped = client(&server)
        .await
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let embedded = zipped.embed(embed_request("embed", &["comprimido com gzip"])).await.unwrap();
    assert_eq!(embedded.into_inner().embeddings.len(), 1);

    let mut client = client(&server).await;
    let labels = client
        .classify(pb::ClassifyRequest {
            model: "cls".into(),
            inputs: vec!["Ótimo serviço".into()],
            top_k: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(labels.results[0].labels.len() >= 2, "top_k 0 returns every label");
    let entities = client
        .classify_tokens(pb::ClassifyTokensRequest {
            model: "ner".into(),
            inputs: vec!["João mora em São Paulo".into()],
            ignore_none: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!entities.results[0].entities.is_empty());
    let long = "João mora em São Paulo. ".repeat(18);
    let request = |stride: u32| pb::ClassifyTokensRequest {
        model: "ner".into(),
        inputs: vec![long.clone()],
        aggregation_strategy: Some("first".into()),
        ignore_none: true,
        stride: Some(stride),
        ..Default::default()
    };
    let windows = client.classify_tokens(request(32)).await.unwrap().into_inner();
    let last = windows.results[0].entities.iter().map(|e| e.end).max().unwrap();
    assert_eq!(last as usize, long.trim_end().chars().count(), "the windows read the whole text");
    assert!(!windows.results[0].truncated);
    let (code, message) = failure(client.classify_tokens(request(128)).await);
    assert_eq!(code, Code::InvalidArgument);
    assert_eq!(
        message,
        "inputs[0]: `stride` 128 must be less than the model's length (128 tokens, special tokens \
         included)"
    );
    let masks = client
        .fill_mask(pb::FillMaskRequest {
            model: "mlm".into(),
            inputs: vec!["A capital é [MASK].".into()],
            top_k: Some(3),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(masks.results[0].masks[0].predictions.len(), 3);
    let tokens = client
        .tokenize(pb::TokenizeRequest {
            model: "embed".into(),
            inputs: vec!["São Paulo".into()],
            add_special_tokens: Some(true),
        })
        .await
        .unwrap()
        .into_inner();
    let tokens = &tokens.results[0].tokens;
    assert!(tokens.first().unwrap().special && tokens.last().unwrap().special);
    let spans: Vec<&str> = tokens
        .iter()
        .filter(|t| !t.special)
        .map(|t| {
            let text: Vec<char> = "São Paulo".chars().collect();
            let word: String = text[t.start as usize..t.end as usize].iter().collect();
            Box::leak(word.into_boxed_str()) as &str
        })
        .collect();
    assert_eq!(spans.concat().replace(' ', ""), "SãoPaulo", "character offsets: {spans:?}");

    // Per-stage metrics and requests by code.
    let metrics = reqwest_metrics(server.metrics_addr.unwrap()).await;
    for needle in [
        "lote_requests_total{method=\"Classify\",code=\"Ok\"}",
        "lote_batch_size",
        "lote_batch_padding_ratio",
        "lote_queue_depth{model=\"embed\"}",
        "lote_stage_seconds",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from /metrics:\n{metrics}");
    }
}

/// GET /metrics over a plain TCP connection.
async fn reqwest_metrics(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_cannot_load_stops_the_server_with_its_reason() {
    let mut settings = test_settings();
    let empty = tempfile::tempdir().unwrap();
    settings.models = vec![ModelSettings {
        name: "broken".into(),
        task: Task::FeatureExtraction,
        path: empty.path().to_path_buf(),
        dtype: None,
    }];
    let server = lote::Server::bind(settings).await.unwrap();
    let result =
        tokio::time::timeout(Duration::from_secs(30), server.serve(std::future::pending()))
            .await
            .expect("the server stops by itself");
    let message = result.unwrap_err().to_string();
    assert!(message.starts_with("model `broken` ("), "{message}");
    assert!(message.contains("could not load"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lote_infer_prints_the_answer_as_json() {
    let mut settings = test_settings();
    settings.models = vec![model("embed", Task::FeatureExtraction, "bert-embed-mean")];
    let server = start(settings).await;
    let url = server.url();
    let output = tokio::task::spawn_blocking(move || {
        common::lote_command()
            .args(["infer", "--addr", &url, "--model", "embed", "--task", "feature-extraction"])
            .args(["--text", "Olá, você", "--text", "São Paulo", "--param", "normalize=true"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    let embeddings = json["embeddings"].as_array().unwrap();
    assert_eq!(embeddings.len(), 2);
    let norm: f64 = embeddings[0]["pooled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap().powi(2))
        .sum();
    assert!((norm - 1.0).abs() < 1e-4, "normalized: {norm}");
    assert_eq!(json["metadata"]["model"], "embed");

    let url = server.url();
    let output = tokio::task::spawn_blocking(move || {
        common::lote_command()
            .args(["infer", "--addr", &url, "--model", "nope", "--task", "feature-extraction"])
            .args(["--text", "x"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no model named `nope`"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_still_loading_answers_unavailable() {
    let placement = lote::device::Placement { device: tch::Device::Cpu, dtype: Dtype::Fp32 };
    let models = vec![model("embed", Task::FeatureExtraction, "bert-embed-mean")];
    let registry = lote::engine::registry::Registry::new(&models, placement);
    let error = registry.get("embed").err().expect("not loaded yet");
    let status = tonic::Status::from(error);
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "model `embed` is still loading");
    assert!(!registry.info()[0].ready);
}
