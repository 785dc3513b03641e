//! Translation against transformers' TranslationPipeline (4.57) on the tiny models of
//! tests/fixtures/make_translation_models.py: T5 with its per-direction prefixes, mBART-50 and
//! mBART-cc25 with their language codes. The encoder input equals the pipeline's, and `lote run`
//! (every call of a model in one file, so they share continuous batches) gives its texts and
//! token counts; then gRPC and a job, and each bad input by name.

use crate::common;

use common::{fixture_model, read_reference, start_ready, test_settings};
use lote::{
    Settings,
    device::Placement,
    grpc::pb::{self, inference_client::InferenceClient},
    settings::{Dtype, ModelSettings, Task},
    tasks::{
        TaskInput,
        generate::{GenerationPipeline, Plan},
    },
};
use serde_json::{Map, Value, json};
use tonic::Code;

const MODELS: &[&str] = &["t5-translation", "mbart-50", "mbart-cc25"];

fn dir(model: &str) -> std::path::PathBuf {
    fixture_model(&format!("translation/{model}"))
}

fn load(model: &str) -> Result<GenerationPipeline, String> {
    let placement = Placement { device: tch::Device::Cpu, dtype: Dtype::Fp32 };
    GenerationPipeline::load(&dir(model), Task::Translation, &placement).map_err(|e| e.to_string())
}

/// lote's parameters for a recorded call: T5's `translation_en_to_fr` task is
/// `src_lang=en, tgt_lang=fr`; the generate settings are passed as they are.
fn params_of(case: &Value) -> Map<String, Value> {
    let mut params = case["kwargs"].as_object().unwrap().clone();
    if let Some((src, tgt)) = case["task"]
        .as_str()
        .unwrap()
        .strip_prefix("translation_")
        .and_then(|d| d.split_once("_to_"))
    {
        params.insert("src_lang".into(), json!(src));
        params.insert("tgt_lang".into(), json!(tgt));
    }
    params
}

/// Generated tokens up to and including the first eos, as `output_tokens` counts them (the
/// decoder's start token is not one of them).
fn new_tokens(generated: &Value, eos: u64) -> usize {
    let ids: Vec<u64> =
        generated[0].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    let new = &ids[1..];
    new.iter().position(|&t| t == eos).map_or(new.len(), |at| at + 1)
}

fn eos(model: &str) -> u64 {
    if model.starts_with("t5") { 1 } else { 2 }
}

fn cases(model: &str) -> Vec<Value> {
    read_reference(&dir(model))["translation"].as_array().unwrap().clone()
}

/// Over the model's length without truncation: transformers runs T5 on all of it (relative
/// positions), lote cuts it to the tokenizer's `model_max_length` (truncation defaults to true;
/// with `truncation: false` it is refused).
fn runs_untruncated_past_the_limit(case: &Value) -> bool {
    case["input_ids"].as_array().unwrap().len() > 128 && case["kwargs"].get("truncation").is_none()
}

#[test]
fn the_encoder_input_is_the_pipelines() {
    for model in MODELS {
        let pipeline = load(model).unwrap_or_else(|e| panic!("{model}: {e}"));
        for case in cases(model) {
            if runs_untruncated_past_the_limit(&case) {
                continue;
            }
            let params = pipeline.parse_params(&Value::Object(params_of(&case))).unwrap();
            let text = case["args"][0].as_str().unwrap().to_string();
            let Plan::Single(prompt) = pipeline.plan(&TaskInput::Text { text }, &params).unwrap()
            else {
                panic!("one prompt")
            };
            let ids: Vec<u64> = prompt.ids.iter().map(|&id| id as u64).collect();
            let theirs: Vec<u64> =
                case["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
            assert_eq!(ids, theirs, "{model} {} {}", case["task"], case["kwargs"]);
            if let Some(forced) = case["forced_bos_token_id"].as_i64() {
                assert_eq!(params.generate.forced_bos_token_id, Some(forced), "{model}");
            }
        }
    }
}

fn lote_run(model: &str, lines: &[Value]) -> Vec<Value> {
    let work = tempfile::tempdir().unwrap();
    let (input, output) = (work.path().join("in.jsonl"), work.path().join("out.jsonl"));
    let text: String = lines.iter().map(|l| l.to_string() + "\n").collect();
    std::fs::write(&input, text).unwrap();
    let result = common::lote_command()
        .args(["run", "--model"])
        .arg(dir(model))
        .args(["--task", "translation", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .env("LOTE__DEVICE__KIND", "cpu")
        .output()
        .unwrap();
    assert!(
        result.status.code().is_some_and(|c| c <= 1),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn lote_run_translates_as_the_pipeline_does_token_for_token() {
    for model in MODELS {
        let cases = cases(model);
        let lines: Vec<Value> = cases
            .iter()
            .map(|case| json!({"text": case["args"][0], "params": params_of(case)}))
            .collect();
        let out = lote_run(model, &lines);
        assert_eq!(out.len(), cases.len());
        let mut compared = 0;
        for (case, line) in cases.iter().zip(&out) {
            let what = format!("{model} {} {}", case["task"], case["kwargs"]);
            if runs_untruncated_past_the_limit(case) {
                // lote cuts it (truncation defaults to true, as for summaries).
                assert_eq!(line["truncated"], true, "{what}: {line}");
                continue;
            }
            assert_eq!(
                line["translation_text"], case["output"][0]["translation_text"],
                "{what}: {line}"
            );
            assert_eq!(
                line["output_tokens"].as_u64().unwrap() as usize,
                new_tokens(&case["generated_ids"], eos(model)),
                "{what}"
            );
            compared += 1;
        }
        assert!(compared >= cases.len() - 1, "{model}: {compared} of {}", cases.len());
    }
}

#[test]
fn bad_translation_inputs_name_the_field() {
    let error = |model: &str, params: Value| {
        load(model).unwrap().parse_params(&params).err().map(|e| e.to_string()).unwrap()
    };
    assert_eq!(
        error("t5-translation", json!({"src_lang": "en", "tgt_lang": "pt"})),
        "`tgt_lang` `pt`: this model translates en to de, en to fr, en to ro (config.json \
         task_specific_params)"
    );
    let codes = error("mbart-cc25", json!({"tgt_lang": "pt_XX"}));
    assert!(
        codes
            .starts_with("`tgt_lang` `pt_XX` is not a language of this model: one of ar_AR, cs_CZ"),
        "{codes}"
    );
    assert!(
        error("mbart-50", json!({"src_lang": "xx"}))
            .starts_with("`src_lang` `xx` is not a language")
    );
    assert_eq!(
        error("mbart-50", json!({"tgt_lang": 3})),
        "bad params: `tgt_lang` must be a string, not 3"
    );
    // A model that is not a translator, and a language given to another task.
    let placement = Placement { device: tch::Device::Cpu, dtype: Dtype::Fp32 };
    let bart = fixture_model("generation/bart");
    let refused = GenerationPipeline::load(&bart, Task::Translation, &placement).err().unwrap();
    assert_eq!(
        refused.to_string(),
        "task `translation` needs translation prefixes in config.json `task_specific_params` \
         (T5's `translation_en_to_de`) or language codes in the tokenizer (mBART-50, \
         mBART-cc25); this model has neither"
    );
    let summarizer = GenerationPipeline::load(&bart, Task::Summarization, &placement).unwrap();
    assert_eq!(
        summarizer.parse_params(&json!({"tgt_lang": "pt_XX"})).unwrap_err().to_string(),
        "bad params: `tgt_lang` is for task translation; this model serves summarization"
    );
    // Through lote run: the bad line fails alone.
    let out = lote_run(
        "mbart-50",
        &[
            json!({"text": "A casa é linda.", "params": {"tgt_lang": "xx_YY", "max_new_tokens": 4}}),
            json!({"text": "A casa é linda.", "params": {"src_lang": "pt_XX", "tgt_lang": "en_XX", "max_new_tokens": 4}}),
        ],
    );
    assert!(out[0]["error"].as_str().unwrap().starts_with("`tgt_lang` `xx_YY` is not a language"));
    assert!(out[1]["translation_text"].is_string(), "{}", out[1]);
}

fn server_settings() -> Settings {
    let mut settings = test_settings();
    settings.models = vec![ModelSettings {
        name: "mbart".into(),
        task: Task::Translation,
        path: dir("mbart-50"),
        dtype: None,
    }];
    settings
}

/// The reference's first greedy mBART-50 call, through gRPC and through a job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_jobs_translate_as_the_pipeline_does() {
    let case = cases("mbart-50").into_iter().find(|c| c["kwargs"]["num_beams"] == 1).unwrap();
    let server = start_ready(server_settings()).await;
    let mut client = InferenceClient::new(server.channel().await);
    let text = case["args"][0].as_str().unwrap().to_string();
    let parameters = pb::GenerationParameters {
        src_lang: case["kwargs"]["src_lang"].as_str().map(String::from),
        tgt_lang: case["kwargs"]["tgt_lang"].as_str().map(String::from),
        num_beams: Some(1),
        max_new_tokens: Some(12),
        ..Default::default()
    };
    let request = pb::TranslateRequest {
        model: "mbart".into(),
        inputs: vec![text.clone()],
        parameters: Some(parameters.clone()),
    };
    let response = client.translate(request.clone()).await.unwrap().into_inner();
    let expected = case["output"][0]["translation_text"].as_str().unwrap();
    assert_eq!(response.results[0].sequences[0].text, expected);

    let bad = pb::TranslateRequest {
        parameters: Some(pb::GenerationParameters { tgt_lang: Some("xx_YY".into()), ..parameters }),
        ..request
    };
    let status = client.translate(bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("`tgt_lang` `xx_YY` is not a language of this model"),
        "{}",
        status.message()
    );

    use common::jobs::{jobs_client, results, submission, watch_to_end};
    let mut jobs = jobs_client(server.grpc_addr).await;
    let documents = vec![pb::JobDocument { custom_id: "a".into(), text, ..Default::default() }];
    let params =
        json!({"src_lang": case["kwargs"]["src_lang"], "tgt_lang": case["kwargs"]["tgt_lang"],
                        "num_beams": 1, "max_new_tokens": 12})
        .to_string();
    let job = jobs
        .submit_job(submission("mbart", "translation", &params, documents))
        .await
        .unwrap()
        .into_inner();
    let (job, _) = watch_to_end(&mut jobs, &job.id).await;
    assert_eq!(job.succeeded, 1, "{job:?}");
    let stored: Value =
        serde_json::from_str(&results(&mut jobs, &job.id, -1).await[0].result_json).unwrap();
    assert_eq!(stored["translation_text"], expected);
}
