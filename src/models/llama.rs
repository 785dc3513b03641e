//! The Llama family of decoders (Touvron et al., 2023, <https://arxiv.org/abs/2302.13971>), as
//! transformers' `models/llama/modeling_llama.py`, `models/mistral/modeling_mistral.py` and
//! `models/qwen2/modeling_qwen2.py` compute them (eager attention): pre-RMSNorm blocks, rotary
//! position embeddings (with the `rope_scaling` kinds their configs use: `linear`, `llama3`),
//! grouped-query attention (fewer key/value heads than query heads), a SwiGLU feed-forward,
//! tied or untied embeddings. Mistral adds a sliding attention window; Qwen2 adds biases to the
//! query, key and value projections. The three differ only in those switches, so one file.

use serde::Deserialize;
use tch::{Kind, Tensor};

use super::{
    ModelError,
    causal::{CausalLm, allowed_keys},
    kv_cache::KvCache,
    layers::{Linear, dtype_min},
    weights::{Weights, WeightsError},
};

#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: usize,
    pub num_attention_heads: i64,
    #[serde(default)]
    pub num_key_value_heads: Option<i64>,
    #[serde(default)]
    pub head_dim: Option<i64>,
    #[serde(default = "context")]
    pub max_position_embeddings: i64,
    #[serde(default = "eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama: biases on all four attention projections.
    #[serde(default)]
    pub attention_bias: bool,
    /// Llama: biases on the feed-forward projections.
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default = "silu")]
    pub hidden_act: String,
    /// Mistral: each query sees at most this many keys (itself included).
    #[serde(default)]
    pub sliding_window: Option<i64>,
    /// Qwen2: whether `sliding_window` applies (off in every released Qwen2 config).
    #[serde(default)]
    pub use_sliding_window: bool,
}

fn context() -> i64 {
    2048
}
fn eps() -> f64 {
    1e-6
}
fn theta() -> f64 {
    10000.0
}
fn silu() -> String {
    "silu".into()
}

/// The inverse frequencies of the rotary embedding, as transformers' `ROPE_INIT_FUNCTIONS`
/// compute them for the config's `rope_scaling` (none, `default`, `linear`, `llama3`).
fn inverse_frequencies(cfg: &LlamaConfig, head_dim: i64) -> Result<Vec<f64>, ModelError> {
    let base: Vec<f64> = (0..head_dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / head_dim as f32;
            1.0 / (cfg.rope_theta as f32).powf(exponent) as f64
        })
        .collect();
    let Some(scaling) = cfg.rope_scaling.as_ref().filter(|s| !s.is_null()) else {
        return Ok(base);
    };
    let kind = scaling["rope_type"].as_str().or_else(|| scaling["type"].as_str()).unwrap_or("");
    let number = |key: &str| {
        scaling[key].as_f64().ok_or_else(|| {
            ModelError::Config(format!("rope_scaling.{key}: a number is needed for `{kind}`"))
        })
    };
    match kind {
        "default" => Ok(base),
        "linear" => {
            let factor = number("factor")?;
            Ok(base.into_iter().map(|f| f / factor).collect())
        }
        "llama3" => {
            let factor = number("factor")?;
            let low = number("low_freq_factor")?;
            let high = number("high_freq_factor")?;
            let original = number("original_max_position_embeddings")?;
            let (low_wavelen, high_wavelen) = (original / low, original / high);
            Ok(base
                .into_iter()
                .map(|f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (original / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect())
        }
        other => Err(ModelError::Unsupported(format!(
            "rope_scaling.rope_type `{other}` (supported: default, linear, llama3)"
        ))),
    }
}

struct Block {
    input_norm: RmsNorm,
    /// q, k and v stacked along the output axis: one product per step.
    qkv: Linear,
    o_proj: Linear,
    post_attention_norm: RmsNorm,
    /// gate and up stacked: one product, then `silu(gate) * up`.
    gate_up: Linear,
    down: Linear,
}

/// `weight * x / sqrt(mean(x^2) + eps)`, computed in fp32 as transformers' LlamaRMSNorm does.
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn load(w: &Weights, name: &str, size: i64, eps: f64) -> Result<Self, WeightsError> {
        Ok(Self { weight: w.get(&format!("{name}.weight"), &[size])?, eps })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let x = x.to_kind(Kind::Float);
        let variance = x.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let normed = x * (variance + self.eps).rsqrt();
        &self.weight * normed.to_kind(kind)
    }
}

pub struct Llama {
    embed_tokens: Tensor,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    /// `[head_dim / 2]` inverse frequencies, fp32.
    inverse_frequencies: Tensor,
    sliding_window: Option<i64>,
    pub config: LlamaConfig,
}

impl Llama {
    pub fn load(w: &Weights, cfg: &LlamaConfig, model_type: &str) -> Result<Self, ModelError> {
        if cfg.hidden_act != "silu" {
            return Err(ModelError::Unsupported(format!(
                "hidden_act `{}` (the Llama family uses silu)",
                cfg.hidden_act
            )));
        }
        let heads = cfg.num_attention_heads;
        let kv_heads = cfg.num_key_value_heads.unwrap_or(heads);
        if kv_heads <= 0 || heads % kv_heads != 0 {
            return Err(ModelError::Config(format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
            )));
        }
        let d = cfg.hidden_size;
        let head_dim = cfg.head_dim.unwrap_or(d / heads);
        let qwen2 = model_type == "qwen2";
        if qwen2 && cfg.use_sliding_window {
            return Err(ModelError::Unsupported(
                "use_sliding_window = true for qwen2 (per-layer windows)".into(),
            ));
        }
        let sliding_window = match model_type {
            "mistral" => cfg.sliding_window,
            _ => None,
        };
        let (q_bias, o_bias) =
            if qwen2 { (true, false) } else { (cfg.attention_bias, cfg.attention_bias) };
        let p = w.base_prefix(&["model."], "embed_tokens.weight");
        let blocks = (0..cfg.num_hidden_layers)
            .map(|i| {
                let at = format!("{p}layers.{i}");
                let attn = |name: &str| format!("{at}.self_attn.{name}");
                let mlp = |name: &str| format!("{at}.mlp.{name}");
                let kv = kv_heads * head_dim;
                let qkv = [
                    (attn("q_proj"), heads * head_dim),
                    (attn("k_proj"), kv),
                    (attn("v_proj"), kv),
                ];
                let o_proj =
                    w.get(&format!("{}.weight", attn("o_proj")), &[d, heads * head_dim])?;
                let o_bias = if o_bias {
                    Some(w.get(&format!("{}.bias", attn("o_proj")), &[d])?)
                } else {
                    None
                };
                let ffn = cfg.intermediate_size;
                let down = w.get(&format!("{}.weight", mlp("down_proj")), &[d, ffn])?;
                let down_bias = if cfg.mlp_bias {
                    Some(w.get(&format!("{}.bias", mlp("down_proj")), &[d])?)
                } else {
                    None
                };
                Ok(Block {
                    input_norm: RmsNorm::load(
                        w,
                        &format!("{at}.input_layernorm"),
                        d,
                        cfg.rms_norm_eps,
                    )?,
                    qkv: Linear::load_concatenated(w, &qkv, d, q_bias)?,
                    o_proj: Linear::new(w, o_proj, o_bias),
                    post_attention_norm: RmsNorm::load(
                        w,
                        &format!("{at}.post_attention_layernorm"),
                        d,
                        cfg.rms_norm_eps,
                    )?,
                    gate_up: Linear::load_concatenated(
                        w,
                        &[(mlp("gate_proj"), ffn), (mlp("up_proj"), ffn)],
                        d,
                        cfg.mlp_bias,
                    )?,
                    down: Linear::new(w, down, down_bias),
                })
            })
            .collect::<Result<Vec<_>, WeightsError>>()?;
        let embed_tokens = w.get(&format!("{p}embed_tokens.weight"), &[cfg.vocab_size, d])?;
        let lm_head = if cfg.tie_word_embeddings {
            Linear::tied(w, &embed_tokens, None)
        } else {
            Linear::new(w, w.get("lm_head.weight", &[cfg.vocab_size, d])?, None)
        };
        let frequencies = inverse_frequencies(cfg, head_dim)?;
        let inverse_frequencies =
            Tensor::from_slice(&frequencies).to_kind(Kind::Float).to_device(embed_tokens.device());
        Ok(Self {
            lm_head,
            embed_tokens,
            blocks,
            norm: RmsNorm::load(w, &format!("{p}norm"), d, cfg.rms_norm_eps)?,
            heads,
            kv_heads,
            head_dim,
            inverse_frequencies,
            sliding_window,
            config: cfg.clone(),
        })
    }

    /// cos and sin `[batch, 1, new, head_dim]` of the rotary embedding at `positions`, fp32 as
    /// transformers computes them, then in `kind`.
    fn rotary(&self, positions: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let angles = positions.to_kind(Kind::Float).unsqueeze(-1) * &self.inverse_frequencies;
        let angles = Tensor::cat(&[&angles, &angles], -1).unsqueeze(1);
        (angles.cos().to_kind(kind), angles.sin().to_kind(kind))
    }

    fn attention(
        &self,
        block: &Block,
        layer: usize,
        x: &Tensor,
        rotary: &(Tensor, Tensor),
        allowed: &Tensor,
        cache: &mut KvCache,
    ) -> Tensor {
        let (batch, new, _) = x.size3().expect("[batch, seq, hidden]");
        let (q_width, kv_width) = (self.heads * self.head_dim, self.kv_heads * self.head_dim);
        let qkv = block.qkv.forward(x).split_with_sizes([q_width, kv_width, kv_width], -1);
        let split =
            |t: &Tensor, heads: i64| t.view([batch, new, heads, self.head_dim]).transpose(1, 2);
        let (cos, sin) = rotary;
        let rotate = |t: Tensor| &t * cos + rotate_half(&t) * sin;
        let q = rotate(split(&qkv[0], self.heads));
        let k = rotate(split(&qkv[1], self.kv_heads));
        let v = split(&qkv[2], self.kv_heads);
        let (k, v) = cache.append(layer, k, v);
        // Grouped-query attention without repeating keys and values per query head (which
        // would copy the whole cache every step): the query heads of a key/value head are
        // stacked along the query axis, `[batch, kv_heads, groups * new, dim]`, as transformers'
        // repeat_kv orders them (query head h reads key/value head h / groups).
        let groups = self.heads / self.kv_heads;
        let q = q.reshape([batch, self.kv_heads, groups * new, self.head_dim]);
        let kind = q.kind();
        let scores = q.matmul(&k.transpose(-1, -2)) * (self.head_dim as f64).powf(-0.5);
        let total = scores.size()[3];
        let scores = scores.view([batch, self.kv_heads, groups, new, total]);
        let min = Tensor::from(dtype_min(scores.kind()))
            .to_kind(scores.kind())
            .to_device(scores.device());
        let probs = scores
            .where_self(&allowed.unsqueeze(2), &min)
            .softmax(-1, Kind::Float)
            .to_kind(kind)
            .view([batch, self.kv_heads, groups * new, total]);
        let out = probs
            .matmul(&v)
            .view([batch, self.heads, new, self.head_dim])
            .transpose(1, 2)
            .contiguous()
            .view([batch, new, q_width]);
        block.o_proj.forward(&out)
    }
}

/// `[-x2, x1]` of the two halves of the last axis.
fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size().last().copied().expect("a head axis") / 2;
    Tensor::cat(&[-x.narrow(-1, half, half), x.narrow(-1, 0, half)], -1)
}

impl CausalLm for Llama {
    fn layers(&self) -> usize {
        self.blocks.len()
    }

    fn forward(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        key_mask: &Tensor,
        cache: &mut KvCache,
    ) -> Tensor {
        let _no_grad = tch::no_grad_guard();
        let mut x = Tensor::embedding(&self.embed_tokens, ids, -1, false, false);
        let new = ids.size()[1];
        let mut allowed = allowed_keys(key_mask, new);
        if let Some(window) = self.sliding_window {
            // Mistral: key j is visible to query i when i - j < window, over cache indices.
            let total = key_mask.size()[1];
            let device = key_mask.device();
            let query = Tensor::arange(new, (Kind::Int64, device)).unsqueeze(1) + (total - new);
            let key = Tensor::arange(total, (Kind::Int64, device)).unsqueeze(0);
            let near = (query - key).lt(window).unsqueeze(0).unsqueeze(0);
            allowed = allowed.logical_and(&near);
        }
        let rotary = self.rotary(positions, x.kind());
        for (i, block) in self.blocks.iter().enumerate() {
            let attended =
                self.attention(block, i, &block.input_norm.forward(&x), &rotary, &allowed, cache);
            x += attended;
            let gate_up = block.gate_up.forward(&block.post_attention_norm.forward(&x));
            let halves = gate_up.chunk(2, -1);
            x += block.down.forward(&(halves[0].silu() * &halves[1]));
        }
        self.norm.forward(&x)
    }

    fn lm_head(&self, hidden: &Tensor) -> Tensor {
        self.lm_head.forward(hidden)
    }
}
