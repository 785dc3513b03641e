//! Models loaded from a Hugging Face model directory and run natively on tch, one file per
//! architecture: the encoders (BERT, RoBERTa, DistilBERT, ALBERT, ELECTRA) here, the generative
//! ones (GPT-2, BART/mBART, T5) through [`generative`].
//!
//! `model_type` (and `architectures`) in config.json choose the implementation; an encoder's
//! head comes from the class name (`BertForQuestionAnswering` -> question answering). Everything that can be wrong with a directory is a [`ModelError`] naming the file,
//! the key or the tensor at fault.

pub mod albert;
pub mod bart;
pub mod bert;
pub mod causal;
pub mod distilbert;
pub mod electra;
pub mod generative;
pub mod gpt2;
pub mod heads;
pub mod int8;
pub mod int8_gemm;
pub mod kv_cache;
pub mod layers;
pub mod llama;
pub mod onednn;
pub mod pickle;
pub mod roberta;
pub mod seq2seq;
pub mod t5;
pub mod weights;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use tch::Tensor;

pub use heads::{Head, HeadKind};
use weights::{Weights, WeightsError};

use crate::device::Placement;

/// The model families lote implements.
pub const SUPPORTED_MODEL_TYPES: &[&str] =
    &["bert", "roberta", "xlm-roberta", "distilbert", "albert", "electra"];

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("config.json: {0}")]
    Config(String),
    #[error("model_type `{found}` is not supported; supported: {}", SUPPORTED_MODEL_TYPES.join(", "))]
    UnsupportedType { found: String },
    #[error(
        "architecture `{found}` is not supported: lote serves *ForMaskedLM, \
             *ForQuestionAnswering, *ForSequenceClassification, *ForTokenClassification and bare \
             *Model checkpoints"
    )]
    UnsupportedHead { found: String },
    #[error("model_type `{found}` cannot generate; supported: {}", generative::SUPPORTED_GENERATIVE_TYPES.join(", "))]
    UnsupportedGenerativeType { found: String },
    #[error("unsupported configuration: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Weights(#[from] WeightsError),
}

/// One batch of token ids, `[batch, seq]`, padded on the right.
pub struct EncoderInput {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub token_type_ids: Option<Tensor>,
}

/// An encoder with its head. Implemented once per architecture.
pub trait Encoder: Send {
    /// Last hidden states, `[batch, seq, hidden]`.
    fn hidden_states(&self, input: &EncoderInput) -> Tensor;
    fn head(&self) -> &Head;

    /// The head's output for the batch (see [`Head`] for shapes).
    fn forward(&self, input: &EncoderInput) -> Tensor {
        let _no_grad = tch::no_grad_guard();
        self.head().forward(&self.hidden_states(input))
    }

    /// Hidden states without the head (for embeddings from any checkpoint).
    fn encode(&self, input: &EncoderInput) -> Tensor {
        let _no_grad = tch::no_grad_guard();
        self.hidden_states(input)
    }
}

/// What lote reads of config.json besides the architecture's own fields.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelConfig {
    pub model_type: String,
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub id2label: BTreeMap<String, String>,
    #[serde(default)]
    pub num_labels: Option<usize>,
    #[serde(default)]
    pub problem_type: Option<String>,
    #[serde(default)]
    pub max_position_embeddings: Option<i64>,
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    /// Rows of the word embeddings: every token id must be below it.
    #[serde(default)]
    pub vocab_size: Option<usize>,
}

impl ModelConfig {
    /// Labels by id, from `id2label` (keys are decimal strings in config.json).
    pub fn labels(&self) -> Result<Vec<String>, ModelError> {
        let mut pairs = self
            .id2label
            .iter()
            .map(|(id, label)| {
                id.parse::<usize>()
                    .map(|id| (id, label.clone()))
                    .map_err(|_| ModelError::Config(format!("id2label key `{id}` is not a number")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        pairs.sort();
        if pairs.iter().enumerate().any(|(i, (id, _))| i != *id) {
            return Err(ModelError::Config("id2label ids are not 0..n".into()));
        }
        let mut labels: Vec<String> = pairs.into_iter().map(|(_, label)| label).collect();
        if labels.is_empty() {
            let count = self.num_labels.unwrap_or(2);
            labels = (0..count).map(|i| format!("LABEL_{i}")).collect();
        }
        Ok(labels)
    }

    pub fn head_kind(&self) -> Result<HeadKind, ModelError> {
        match self.architectures.first() {
            None => Ok(HeadKind::Base),
            Some(class) => HeadKind::from_class(class)
                .ok_or_else(|| ModelError::UnsupportedHead { found: class.clone() }),
        }
    }
}

/// Why a directory without config.json is not a model directory.
pub(crate) const NO_CONFIG: &str =
    "not found: a model directory holds config.json beside its weights and tokenizer";

/// A loaded encoder and what it was loaded from.
pub struct LoadedEncoder {
    pub config: ModelConfig,
    pub labels: Vec<String>,
    pub model: Box<dyn Encoder>,
    pub sha256: String,
}

/// Reads config.json and the weights of `dir` onto `placement`'s device and dtype.
pub fn load_encoder(dir: &Path, placement: &Placement) -> Result<LoadedEncoder, ModelError> {
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(ModelError::Unreadable { path: config_path, reason: NO_CONFIG.into() });
    }
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| ModelError::Unreadable { path: config_path.clone(), reason: e.to_string() })?;
    let raw: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ModelError::Unreadable { path: config_path.clone(), reason: e.to_string() })?;
    let config: ModelConfig =
        serde_json::from_value(raw.clone()).map_err(|e| ModelError::Config(e.to_string()))?;
    if !SUPPORTED_MODEL_TYPES.contains(&config.model_type.as_str()) {
        return Err(ModelError::UnsupportedType { found: config.model_type.clone() });
    }
    let head = config.head_kind()?;
    let labels = config.labels()?;
    let weights = load_weights(dir, placement)?;
    let count = labels.len() as i64;
    let model: Box<dyn Encoder> = match config.model_type.as_str() {
        "bert" => Box::new(bert::Bert::load(&weights, &arch_config(raw)?, head, count)?),
        // XLM-RoBERTa is RoBERTa's network (transformers' modeling_xlm_roberta.py copies it,
        // `roberta.` prefix included) with a larger vocabulary.
        "roberta" | "xlm-roberta" => {
            Box::new(roberta::Roberta::load(&weights, &arch_config(raw)?, head, count)?)
        }
        "electra" => Box::new(electra::Electra::load(&weights, &arch_config(raw)?, head, count)?),
        "distilbert" => {
            Box::new(distilbert::DistilBert::load(&weights, &arch_config(raw)?, head, count)?)
        }
        "albert" => Box::new(albert::Albert::load(&weights, &arch_config(raw)?, head, count)?),
        other => unreachable!("model_type {other} was checked above"),
    };
    Ok(LoadedEncoder { config, labels, model, sha256: weights.sha256().to_string() })
}

/// The weights of `dir` on `placement`'s device, in its dtype, linear layers marked for int8
/// when it is `int8` (a CPU mode: `_int_mm` on CUDA needs more than 16 rows, which one decode
/// row does not have).
pub fn load_weights(dir: &Path, placement: &Placement) -> Result<Weights, ModelError> {
    if placement.int8_linears() && placement.device.is_cuda() {
        return Err(ModelError::Unsupported(format!(
            "dtype int8 runs on CPU; on {} use bf16 or fp16",
            placement.device_name()
        )));
    }
    let weights = Weights::load(dir, placement.device, placement.kind())?;
    Ok(weights.with_int8_linears(placement.int8_linears()))
}

fn arch_config<T: serde::de::DeserializeOwned>(raw: serde_json::Value) -> Result<T, ModelError> {
    serde_json::from_value(raw).map_err(|e| ModelError::Config(e.to_string()))
}

impl EncoderInput {
    /// Right-pads token id rows into one batch on `device`. `type_ids` is None for models
    /// without token types (RoBERTa's tokenizer does not send them; DistilBERT has none).
    pub fn from_rows(
        ids: &[&[u32]],
        type_ids: Option<&[&[u32]]>,
        pad_id: u32,
        device: tch::Device,
    ) -> Self {
        let width = ids.iter().map(|row| row.len()).max().unwrap_or(0);
        let pad = |rows: &[&[u32]], fill: u32| {
            let flat: Vec<i64> = rows
                .iter()
                .flat_map(|row| {
                    row.iter()
                        .map(|&v| i64::from(v))
                        .chain(std::iter::repeat_n(i64::from(fill), width - row.len()))
                })
                .collect();
            Tensor::from_slice(&flat).view([rows.len() as i64, width as i64]).to_device(device)
        };
        let mask_rows: Vec<Vec<u32>> = ids.iter().map(|row| vec![1; row.len()]).collect();
        let mask_refs: Vec<&[u32]> = mask_rows.iter().map(Vec::as_slice).collect();
        Self {
            input_ids: pad(ids, pad_id),
            attention_mask: pad(&mask_refs, 0),
            token_type_ids: type_ids.map(|rows| pad(rows, 0)),
        }
    }
}
