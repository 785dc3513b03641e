//! Continuous batching on the real tiny models: while one long generation runs, others with
//! different parameters (greedy, beams, several sequences) join its batch and leave it, and
//! every one of them gives exactly what it gives alone. GPT-2 joins with left-padded caches,
//! BART and T5 with padded encoder outputs and decoder caches. The same holds in int8, whose
//! activations are quantized per row.

use crate::common;

use lote::{
    device::Placement,
    engine::{
        cpu_pool::CpuPool,
        generation::{GenerationService, StreamEvent},
        policy::{Lane, Policy},
    },
    settings::{Dtype, Task},
    tasks::{TaskInput, generate::GenerationPipeline},
};
use serde_json::json;

fn texts(service: &GenerationService, runs: Vec<(String, serde_json::Value)>) -> Vec<Vec<String>> {
    let items = runs
        .into_iter()
        .map(|(text, params)| {
            (TaskInput::Text { text }, service.pipeline().parse_params(&params).unwrap())
        })
        .collect();
    let runtime = tokio::runtime::Handle::current();
    let answered = tokio::task::block_in_place(|| {
        runtime.block_on(service.generate(items, Lane::Interactive, None))
    });
    answered.unwrap().results.into_iter().map(|r| r.unwrap().generation.texts).collect()
}

async fn joins_equal_alone(model: &str, task: Task, dtype: Dtype) {
    let placement = Placement { device: tch::Device::Cpu, dtype };
    let dir = common::fixture_model(&format!("generation/{model}"));
    let pipeline = GenerationPipeline::load(&dir, task, &placement).unwrap();
    let policy = Policy::from_settings(&Default::default());
    let service = GenerationService::start(model, pipeline, policy, CpuPool::new(2), None);

    let prompts = ["Olá, você", "A ação foi concluída com sucesso e", "São Paulo", "maçã e pão"];
    let variants = [
        json!({"max_new_tokens": 6, "do_sample": false}),
        json!({"max_new_tokens": 9, "num_beams": 3, "do_sample": false}),
        json!({"max_new_tokens": 5, "num_beams": 2, "num_return_sequences": 2, "do_sample": false}),
        json!({"max_new_tokens": 12, "no_repeat_ngram_size": 2, "do_sample": false}),
    ];
    let runs: Vec<(String, serde_json::Value)> = prompts
        .iter()
        .flat_map(|p| variants.iter().map(move |v| (p.to_string(), v.clone())))
        .collect();
    let mut alone = Vec::new();
    for run in &runs {
        alone.extend(texts(&service, vec![run.clone()]));
    }
    let long =
        json!({"max_new_tokens": 40, "min_new_tokens": 40, "do_sample": false, "num_beams": 1});
    let long_alone = texts(&service, vec![("Uma longa história".into(), long.clone())]);

    // The long one starts; the others arrive while it runs.
    let params = service.pipeline().parse_params(&long).unwrap();
    let input = TaskInput::Text { text: "Uma longa história".into() };
    let mut events = service.stream(input, params, Lane::Interactive, None).await.unwrap();
    assert!(matches!(events.recv().await, Some(StreamEvent::Token { .. })));
    let together = texts(&service, runs.clone());
    let mut streamed = String::new();
    let mut finished = false;
    while let Some(event) = events.recv().await {
        match event {
            StreamEvent::Token { text, .. } => streamed.push_str(&text),
            StreamEvent::Finished { rest, .. } => {
                streamed.push_str(&rest);
                finished = true;
            }
            StreamEvent::Failed(error) => panic!("{error}"),
            StreamEvent::Prompt { .. } => panic!("the prompt's log-probabilities were not asked"),
        }
    }
    assert!(finished, "the long generation was still running while the others joined");
    assert_eq!(together, alone, "{model} {dtype}: joined generations differ from alone");
    let expected = &long_alone[0][0];
    assert!(expected.ends_with(&streamed), "{model}: {streamed:?} vs {expected:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpt2_joins_give_what_each_gives_alone() {
    joins_equal_alone("gpt2", Task::TextGeneration, Dtype::Fp32).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpt2_joins_in_int8_give_what_each_gives_alone() {
    joins_equal_alone("gpt2", Task::TextGeneration, Dtype::Int8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_family_joins_give_what_each_gives_alone() {
    for model in ["llama", "mistral", "qwen2"] {
        joins_equal_alone(model, Task::TextGeneration, Dtype::Fp32).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_family_joins_in_int8_give_what_each_gives_alone() {
    for model in ["llama", "mistral", "qwen2"] {
        joins_equal_alone(model, Task::TextGeneration, Dtype::Int8).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bart_joins_give_what_each_gives_alone() {
    joins_equal_alone("bart", Task::Summarization, Dtype::Fp32).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bart_joins_in_int8_give_what_each_gives_alone() {
    joins_equal_alone("bart", Task::Summarization, Dtype::Int8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5_joins_give_what_each_gives_alone() {
    joins_equal_alone("t5", Task::Summarization, Dtype::Fp32).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5_joins_in_int8_give_what_each_gives_alone() {
    joins_equal_alone("t5", Task::Summarization, Dtype::Int8).await;
}
