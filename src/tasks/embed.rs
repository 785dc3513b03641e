//! `feature-extraction`: sentence embeddings as sentence-transformers computes them (the
//! Transformer -> Pooling -> Normalize modules of modules.json), or, for a model without
//! modules.json, transformers' feature-extraction pipeline output (one vector per token).

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::TaskError;

/// How token vectors become one vector. Several modes concatenate in sentence-transformers'
/// order: cls, max, mean, mean_sqrt_len.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolingMode {
    Cls,
    Max,
    Mean,
    MeanSqrtLen,
    /// No pooling: every token's vector (transformers' pipeline output).
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedParams {
    /// Override the model's pooling: "cls", "max", "mean", "mean_sqrt_len" or "none".
    #[serde(default)]
    pub pooling: Option<PoolingMode>,
    /// Override whether vectors are L2-normalised.
    #[serde(default)]
    pub normalize: Option<bool>,
    /// Truncate to the model's max_seq_length (default) or refuse longer inputs.
    #[serde(default = "yes", alias = "truncation")]
    pub truncate: bool,
}

fn yes() -> bool {
    true
}

/// What a model directory says about pooling.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolingConfig {
    pub modes: Vec<PoolingMode>,
    pub normalize: bool,
    /// sentence_bert_config.json's max_seq_length, when present.
    pub max_seq_length: Option<usize>,
}

impl PoolingConfig {
    /// Reads modules.json and the Pooling module's config; a directory without modules.json
    /// pools nothing (per-token output) and does not normalise.
    pub fn read(dir: &Path) -> Result<Self, TaskError> {
        let read = |path: &Path| -> Result<serde_json::Value, TaskError> {
            let text = std::fs::read_to_string(path)
                .map_err(|e| TaskError::Unsupported(format!("{}: {e}", path.display())))?;
            serde_json::from_str(&text)
                .map_err(|e| TaskError::Unsupported(format!("{}: {e}", path.display())))
        };
        let modules_path = dir.join("modules.json");
        if !modules_path.is_file() {
            return Ok(Self {
                modes: vec![PoolingMode::None],
                normalize: false,
                max_seq_length: None,
            });
        }
        let modules = read(&modules_path)?;
        let modules = modules.as_array().cloned().unwrap_or_default();
        let module_of = |kind: &str| {
            modules.iter().find(|m| m["type"].as_str().is_some_and(|t| t.ends_with(kind)))
        };
        let mut modes = Vec::new();
        if let Some(pooling) = module_of(".Pooling") {
            let path =
                dir.join(pooling["path"].as_str().unwrap_or("1_Pooling")).join("config.json");
            let cfg = read(&path)?;
            for unsupported in ["pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"] {
                if cfg[unsupported].as_bool() == Some(true) {
                    return Err(TaskError::Unsupported(format!("{unsupported} pooling")));
                }
            }
            for (key, mode) in [
                ("pooling_mode_cls_token", PoolingMode::Cls),
                ("pooling_mode_max_tokens", PoolingMode::Max),
                ("pooling_mode_mean_tokens", PoolingMode::Mean),
                ("pooling_mode_mean_sqrt_len_tokens", PoolingMode::MeanSqrtLen),
            ] {
                if cfg[key].as_bool() == Some(true) {
                    modes.push(mode);
                }
            }
        }
        if modes.is_empty() {
            modes.push(PoolingMode::None);
        }
        let max_seq_length = std::fs::read_to_string(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["max_seq_length"].as_u64())
            .map(|n| n as usize);
        Ok(Self { modes, normalize: module_of(".Normalize").is_some(), max_seq_length })
    }

    /// The model's pooling with the call's overrides applied.
    pub fn with_params(&self, params: &EmbedParams) -> Self {
        let mut out = self.clone();
        if let Some(mode) = params.pooling {
            out.modes = vec![mode];
        }
        if let Some(normalize) = params.normalize {
            out.normalize = normalize;
        }
        out
    }

    pub fn pools(&self) -> bool {
        !self.modes.contains(&PoolingMode::None)
    }

    /// `hidden`: `[batch, seq, dim]`, `mask`: `[batch, seq]`. Returns `[batch, dim * modes]`, or
    /// `hidden` itself when not pooling.
    pub fn apply(&self, hidden: &Tensor, mask: &Tensor) -> Tensor {
        let pooled = if self.pools() {
            let mask = mask.unsqueeze(-1).expand_as(hidden).to_kind(hidden.kind());
            let parts: Vec<Tensor> =
                self.modes.iter().map(|mode| pool(*mode, hidden, &mask)).collect();
            Tensor::cat(&parts, 1)
        } else {
            hidden.shallow_clone()
        };
        if self.normalize {
            // torch.nn.functional.normalize(p=2, dim=-1, eps=1e-12)
            let norm = pooled.norm_scalaropt_dim(2, [-1i64].as_slice(), true).clamp_min(1e-12);
            pooled / norm
        } else {
            pooled
        }
    }
}

fn pool(mode: PoolingMode, hidden: &Tensor, mask: &Tensor) -> Tensor {
    match mode {
        PoolingMode::Cls => hidden.select(1, 0),
        PoolingMode::Max => {
            let masked = hidden.masked_fill(&mask.eq(0.0), -1e9);
            masked.amax([1i64].as_slice(), false)
        }
        PoolingMode::Mean | PoolingMode::MeanSqrtLen => {
            let sum = (hidden * mask).sum_dim_intlist([1i64].as_slice(), false, hidden.kind());
            let count =
                mask.sum_dim_intlist([1i64].as_slice(), false, hidden.kind()).clamp_min(1e-9);
            match mode {
                PoolingMode::Mean => sum / count,
                _ => sum / count.sqrt(),
            }
        }
        PoolingMode::None => hidden.shallow_clone(),
    }
}
