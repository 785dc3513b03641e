//! Generative models loaded from a model directory: GPT-2 and the Llama family (Llama, Mistral,
//! Qwen2; decoder-only), BART/mBART and T5 (encoder-decoder), with the generation settings the
//! directory carries.

use std::path::Path;

use serde_json::Value;
use tch::Tensor;

use super::{
    ModelError,
    bart::{Bart, BartConfig},
    causal::CausalStep,
    gpt2::{Gpt2, Gpt2Config},
    llama::{Llama, LlamaConfig},
    seq2seq::{Seq2Seq, Seq2SeqStep},
    t5::{T5, T5Config},
};
use crate::{
    device::Placement,
    generation::{DecoderStep, GenerateConfig, GenerateOverrides},
};

pub const SUPPORTED_GENERATIVE_TYPES: &[&str] =
    &["gpt2", "llama", "mistral", "qwen2", "bart", "mbart", "t5"];

pub enum Generative {
    Gpt2(Gpt2),
    Llama(Llama),
    Bart(Bart),
    T5(T5),
}

pub struct LoadedGenerator {
    pub model: Generative,
    /// config.json as written.
    pub config: Value,
    /// transformers' generation defaults for this model: its GenerationConfig defaults, then
    /// config.json's or generation_config.json's settings, special tokens filled in.
    pub generation: GenerateConfig,
    /// Positions the model can attend to (its context length).
    pub max_positions: usize,
    pub sha256: String,
    pub device: tch::Device,
}

impl LoadedGenerator {
    pub fn is_encoder_decoder(&self) -> bool {
        !matches!(self.model, Generative::Gpt2(_) | Generative::Llama(_))
    }

    /// A decoder step over `ids` `[batch, len]` with `mask` (1 = real token): the prompt for
    /// GPT-2 (left-padded), the encoder input for the others.
    pub fn step<'a>(&'a self, ids: &Tensor, mask: &Tensor) -> Box<dyn DecoderStep + 'a> {
        match &self.model {
            Generative::Gpt2(model) => Box::new(CausalStep::new(model, mask)),
            Generative::Llama(model) => Box::new(CausalStep::new(model, mask)),
            Generative::Bart(model) => Box::new(Seq2SeqStep::new(model as &dyn Seq2Seq, ids, mask)),
            Generative::T5(model) => Box::new(Seq2SeqStep::new(model as &dyn Seq2Seq, ids, mask)),
        }
    }

    /// The task-specific settings of config.json (`task_specific_params.summarization`), and
    /// the prefix the task puts before each input (T5's "summarize: ").
    pub fn task_params(
        &self,
        task: &str,
    ) -> Result<(GenerateOverrides, Option<String>), ModelError> {
        let params = &self.config["task_specific_params"][task];
        if params.is_null() {
            return Ok((GenerateOverrides::default(), None));
        }
        let prefix = params["prefix"].as_str().map(String::from);
        let overrides = serde_json::from_value(params.clone())
            .map_err(|e| ModelError::Config(e.to_string()))?;
        Ok((overrides, prefix))
    }
}

fn arch_config<T: serde::de::DeserializeOwned>(config: &Value) -> Result<T, ModelError> {
    serde_json::from_value(config.clone()).map_err(|e| ModelError::Config(e.to_string()))
}

fn read_json(path: &Path) -> Result<Option<Value>, ModelError> {
    if !path.is_file() {
        return Ok(None);
    }
    let unreadable = |reason: String| ModelError::Unreadable { path: path.to_path_buf(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
    serde_json::from_str(&text).map(Some).map_err(|e| unreadable(e.to_string()))
}

pub fn load_generator(dir: &Path, placement: &Placement) -> Result<LoadedGenerator, ModelError> {
    let config = read_json(&dir.join("config.json"))?.ok_or_else(|| ModelError::Unreadable {
        path: dir.join("config.json"),
        reason: super::NO_CONFIG.into(),
    })?;
    let model_type = config["model_type"].as_str().unwrap_or_default().to_string();
    if !SUPPORTED_GENERATIVE_TYPES.contains(&model_type.as_str()) {
        return Err(ModelError::UnsupportedGenerativeType { found: model_type });
    }
    let weights = super::load_weights(dir, placement)?;
    let (model, max_positions) = match model_type.as_str() {
        "gpt2" => {
            let cfg: Gpt2Config = arch_config(&config)?;
            let positions = cfg.n_positions as usize;
            (Generative::Gpt2(Gpt2::load(&weights, &cfg)?), positions)
        }
        "llama" | "mistral" | "qwen2" => {
            let cfg: LlamaConfig = arch_config(&config)?;
            let positions = cfg.max_position_embeddings as usize;
            (Generative::Llama(Llama::load(&weights, &cfg, &model_type)?), positions)
        }
        "bart" | "mbart" => {
            let cfg: BartConfig = arch_config(&config)?;
            let positions = cfg.max_position_embeddings as usize;
            (Generative::Bart(Bart::load(&weights, &cfg, model_type == "mbart")?), positions)
        }
        "t5" => {
            let cfg: T5Config = arch_config(&config)?;
            // Relative positions: no hard limit; transformers' tokenizers cap T5 at 512.
            (Generative::T5(T5::load(&weights, &cfg)?), 512)
        }
        other => unreachable!("model_type {other} was checked above"),
    };
    let mut generation = GenerateConfig::default();
    let layer = match read_json(&dir.join("generation_config.json"))? {
        Some(file) => file,
        None => config.clone(),
    };
    let overrides: GenerateOverrides =
        serde_json::from_value(layer).map_err(|e| ModelError::Config(e.to_string()))?;
    generation.apply(&overrides).map_err(|e| ModelError::Config(e.to_string()))?;
    // Special tokens the generation config leaves out come from config.json, as in transformers.
    let id = |key: &str| config[key].as_i64();
    if generation.eos_token_ids.is_empty() {
        generation.eos_token_ids = match &config["eos_token_id"] {
            Value::Array(ids) => ids.iter().filter_map(Value::as_i64).collect(),
            value => value.as_i64().into_iter().collect(),
        };
    }
    if generation.pad_token_id.is_none() {
        generation.pad_token_id = id("pad_token_id");
    }
    if generation.decoder_start_token_id.is_none() {
        generation.decoder_start_token_id =
            id("decoder_start_token_id").or_else(|| id("bos_token_id"));
    }
    Ok(LoadedGenerator {
        model,
        config,
        generation,
        max_positions,
        sha256: weights.sha256().to_string(),
        device: placement.device,
    })
}
