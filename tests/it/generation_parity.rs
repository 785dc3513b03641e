//! Generation parity with transformers' `generate` on the tiny GPT-2, Llama, Mistral, Qwen2, BART,
//! mBART and T5 models of tests/fixtures/make_generation_models.py: greedy, beam search (length penalty, early
//! stopping, no-repeat n-grams, min length, eos lists, bad words, forced tokens) and seeded
//! sampling give identical token ids; the first decode steps' logits are within 1e-4; batches
//! of mixed lengths give what each input gives alone; the cached path equals recomputing.

use crate::common;

use lote::{
    device::Placement,
    engine::{
        cpu_pool::CpuPool,
        generation::GenerationService,
        policy::{Lane, Policy},
    },
    generation::{GenerateConfig, GenerateOverrides, search::generate, stream::TextStream},
    models::generative::{LoadedGenerator, load_generator},
    settings::{Dtype, Task},
    tasks::{
        TaskInput,
        generate::{GenerationPipeline, GenerationResult},
    },
    tokenize::TextTokenizer,
};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

const MODELS: &[&str] =
    &["gpt2", "gpt2-scaled", "llama", "mistral", "qwen2", "bart", "mbart", "t5", "t5-v1_1"];

fn placement() -> Placement {
    Placement { device: Device::Cpu, dtype: Dtype::Fp32 }
}

fn model_dir(name: &str) -> std::path::PathBuf {
    common::fixture_model(&format!("generation/{name}"))
}

fn matrix(value: &Value) -> Vec<Vec<i64>> {
    serde_json::from_value(value.clone()).unwrap()
}

fn tensor(rows: &[Vec<i64>]) -> Tensor {
    Tensor::from_slice(&rows.concat()).view([rows.len() as i64, rows[0].len() as i64])
}

/// The model's config with a record's kwargs (and seed) applied.
fn config_for(loaded: &LoadedGenerator, record: &Value) -> GenerateConfig {
    let mut config = loaded.generation.clone();
    let overrides: GenerateOverrides = serde_json::from_value(record["kwargs"].clone()).unwrap();
    config.apply(&overrides).unwrap();
    if let Some(seed) = record["seed"].as_u64() {
        config.seed = Some(seed);
    }
    config
}

/// Runs one reference record and returns our sequences.
fn run_record(loaded: &LoadedGenerator, record: &Value) -> Vec<Vec<i64>> {
    let ids = tensor(&matrix(&record["input_ids"]));
    let mask = tensor(&matrix(&record["attention_mask"]));
    let config = config_for(loaded, record);
    let start = start_of(loaded, &ids, &config);
    let max_length =
        config.max_new_tokens.map_or(config.max_length, |n| n + start.size()[1] as usize);
    let mut step = loaded.step(&ids, &mask);
    let generated = generate(step.as_mut(), &start, &config, max_length, None, None);
    Vec::<Vec<i64>>::try_from(generated.sequences).unwrap()
}

fn start_of(loaded: &LoadedGenerator, ids: &Tensor, config: &GenerateConfig) -> Tensor {
    if loaded.is_encoder_decoder() {
        let start = config.decoder_start_token_id.unwrap();
        Tensor::full([ids.size()[0], 1], start, (Kind::Int64, Device::Cpu))
    } else {
        ids.shallow_clone()
    }
}

#[test]
fn every_recorded_generate_call_gives_the_same_tokens() {
    let mut checked = 0;
    for name in MODELS {
        let dir = model_dir(name);
        let loaded = load_generator(&dir, &placement()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let reference = common::read_reference(&dir);
        for record in reference["generate"].as_array().unwrap() {
            let ours = run_record(&loaded, record);
            let theirs = matrix(&record["outputs"]["sequences"]);
            assert_eq!(ours, theirs, "{name} {}", record["name"]);
            checked += 1;
        }
    }
    assert!(checked > 150, "only {checked} records");
}

#[test]
fn first_decode_steps_logits_match_within_1e_4() {
    for name in MODELS {
        let dir = model_dir(name);
        let loaded = load_generator(&dir, &placement()).unwrap();
        let reference = common::read_reference(&dir);
        let record = reference["generate"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| !r["outputs"]["logits"].is_null())
            .unwrap_or_else(|| panic!("{name}: no logits recorded"));
        let ids = tensor(&matrix(&record["input_ids"]));
        let mask = tensor(&matrix(&record["attention_mask"]));
        let config = config_for(&loaded, record);
        let sequence = &matrix(&record["outputs"]["sequences"])[0];
        let mut step = loaded.step(&ids, &mask);
        let mut feed = start_of(&loaded, &ids, &config);
        let start_len = feed.size()[1] as usize;
        for (i, expected) in record["outputs"]["logits"].as_array().unwrap().iter().enumerate() {
            let theirs: Vec<f32> =
                expected.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            let ours = Vec::<f32>::try_from(step.step(&feed).get(0)).unwrap();
            let diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(diff < 1e-4, "{name} step {i}: max |diff| {diff}");
            feed = Tensor::from_slice(&[sequence[start_len + i]]).view([1, 1]);
        }
    }
}

#[test]
fn the_cached_path_equals_recomputing_without_the_cache() {
    for name in MODELS {
        let dir = model_dir(name);
        let loaded = load_generator(&dir, &placement()).unwrap();
        let reference = common::read_reference(&dir);
        let record = &reference["generate"][0];
        let ids = tensor(&matrix(&record["input_ids"]));
        let mask = tensor(&matrix(&record["attention_mask"]));
        let config = config_for(&loaded, record);
        let cached = &run_record(&loaded, record)[0];
        let start = start_of(&loaded, &ids, &config);
        let start_len = start.size()[1] as usize;
        // Without a cache: a fresh step over the whole sequence for every new token.
        let mut sequence: Vec<i64> = Vec::<Vec<i64>>::try_from(start).unwrap().remove(0);
        let eos = &config.eos_token_ids;
        while sequence.len() < cached.len() {
            let full = Tensor::from_slice(&sequence).view([1, -1]);
            let (fresh_ids, fresh_mask) = if loaded.is_encoder_decoder() {
                (ids.shallow_clone(), mask.shallow_clone())
            } else {
                (full.shallow_clone(), full.ones_like())
            };
            let mut step = loaded.step(&fresh_ids, &fresh_mask);
            let logits = step.step(&full);
            let processors =
                lote::generation::processors::Processors::new(&config, start_len, cached.len());
            let next = processors.apply(&full, logits).argmax(-1, false).int64_value(&[0]);
            sequence.push(next);
            if eos.contains(&next) {
                break;
            }
        }
        assert_eq!(&sequence[..], &cached[..sequence.len()], "{name}");
    }
}

#[test]
fn seeded_sampling_keeps_transformers_stream_while_other_threads_draw() {
    // As an unseeded request on another model would, in the same process.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noise = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _no_grad = tch::no_grad_guard();
            let probs = Tensor::ones([4, 1000], (Kind::Float, Device::Cpu));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = probs.multinomial(1, false);
            }
        })
    };
    let mut checked = 0;
    for name in ["gpt2", "t5", "bart"] {
        let dir = model_dir(name);
        let loaded = load_generator(&dir, &placement()).unwrap();
        let reference = common::read_reference(&dir);
        for record in reference["generate"].as_array().unwrap() {
            if record["seed"].is_null() || record["kwargs"]["do_sample"] != Value::Bool(true) {
                continue;
            }
            let theirs = matrix(&record["outputs"]["sequences"]);
            assert_eq!(run_record(&loaded, record), theirs, "{name} {}", record["name"]);
            checked += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    noise.join().unwrap();
    assert!(checked >= 6, "only {checked} seeded records");
}

#[test]
fn sampling_is_seeded_and_top_k_1_is_greedy() {
    for name in ["gpt2", "t5"] {
        let dir = model_dir(name);
        let loaded = load_generator(&dir, &placement()).unwrap();
        let reference = common::read_reference(&dir);
        let record = reference["generate"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"].as_str().unwrap().starts_with("sample/temperature0.7/"))
            .unwrap()
            .clone();
        let mut twice = record.clone();
        assert_eq!(run_record(&loaded, &record), run_record(&loaded, &twice), "{name}: same seed");
        twice["seed"] = Value::from(record["seed"].as_u64().unwrap() + 1000);
        assert_ne!(run_record(&loaded, &record), run_record(&loaded, &twice), "{name}: other seed");
        let mut top1 = record.clone();
        top1["kwargs"]["top_k"] = Value::from(1);
        let mut greedy = record.clone();
        greedy["kwargs"] =
            serde_json::json!({"max_new_tokens": record["kwargs"]["max_new_tokens"]});
        greedy["seed"] = Value::Null;
        assert_eq!(run_record(&loaded, &top1), run_record(&loaded, &greedy), "{name}: top_k=1");
    }
}

#[test]
fn streaming_yields_exactly_the_final_text() {
    let dir = model_dir("gpt2");
    let loaded = load_generator(&dir, &placement()).unwrap();
    let tokenizer = TextTokenizer::load(&dir, None).unwrap();
    let reference = common::read_reference(&dir);
    for record in
        reference["generate"].as_array().unwrap().iter().filter(|r| r["kind"] == "greedy").take(4)
    {
        let ids = tensor(&matrix(&record["input_ids"]));
        if ids.size()[0] != 1 {
            continue;
        }
        let mask = tensor(&matrix(&record["attention_mask"]));
        let config = config_for(&loaded, record);
        let max_length = config.max_new_tokens.unwrap() + ids.size()[1] as usize;
        let mut stream = TextStream::new(|t: &[u32]| tokenizer.decode(t, true).unwrap());
        let mut pieces: Vec<String> = Vec::new();
        let mut on_token = |_: usize, token: i64| pieces.extend(stream.push(token as u32));
        let mut step = loaded.step(&ids, &mask);
        let out = generate(step.as_mut(), &ids, &config, max_length, Some(&mut on_token), None);
        pieces.extend(stream.finish());
        let sequence = Vec::<Vec<i64>>::try_from(out.sequences).unwrap().remove(0);
        let new: Vec<u32> = sequence[ids.size()[1] as usize..].iter().map(|&t| t as u32).collect();
        assert_eq!(pieces.concat(), tokenizer.decode(&new, true).unwrap(), "{}", record["name"]);
        for piece in &pieces[..pieces.len().saturating_sub(1)] {
            assert!(
                !piece.ends_with('\u{FFFD}') || piece.chars().all(|c| c == '\u{FFFD}'),
                "{piece:?}"
            );
        }
    }
}

#[test]
fn summarization_pipeline_defaults_match_transformers() {
    for name in ["bart", "mbart", "t5", "t5-v1_1"] {
        let dir = model_dir(name);
        let reference = common::read_reference(&dir);
        let engine = Engine::start(&dir, Task::Summarization);
        for call in reference["pipelines"]["summarization"]["calls"].as_array().unwrap() {
            let text = call["args"][0].as_str().unwrap();
            let result = engine.generate(text, &call["kwargs"]);
            assert_eq!(
                result.generation.texts[0],
                call["output"][0]["summary_text"].as_str().unwrap(),
                "{name}"
            );
        }
    }
}

#[test]
fn text_generation_pipeline_outputs_match_for_deterministic_calls() {
    let dir = model_dir("gpt2");
    let reference = common::read_reference(&dir);
    let engine = Engine::start(&dir, Task::TextGeneration);
    let mut compared = 0;
    for call in reference["pipelines"]["text-generation"]["calls"].as_array().unwrap() {
        if call["kwargs"]["do_sample"] != false {
            continue;
        }
        let result = engine.generate(call["args"][0].as_str().unwrap(), &call["kwargs"]);
        let theirs: Vec<&str> = call["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["generated_text"].as_str().unwrap())
            .collect();
        assert_eq!(result.generation.texts, theirs, "{}", call["kwargs"]);
        compared += 1;
    }
    assert!(compared >= 2);
}

/// A generation pipeline served by the engine's scheduler, as `lote serve` and `lote run` run it.
struct Engine {
    service: GenerationService,
    runtime: tokio::runtime::Runtime,
}

impl Engine {
    fn start(dir: &std::path::Path, task: Task) -> Self {
        let pipeline = GenerationPipeline::load(dir, task, &placement()).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let policy = Policy::from_settings(&Default::default());
        let service = runtime.block_on(async {
            GenerationService::start("parity", pipeline, policy, CpuPool::new(2), None)
        });
        Self { service, runtime }
    }

    fn generate(&self, text: &str, kwargs: &serde_json::Value) -> GenerationResult {
        let params = self.service.pipeline().parse_params(kwargs).unwrap();
        let input = TaskInput::Text { text: text.into() };
        let answered =
            self.runtime.block_on(self.service.generate(vec![(input, params)], Lane::Bulk, None));
        answered.unwrap().results.remove(0).unwrap()
    }
}
