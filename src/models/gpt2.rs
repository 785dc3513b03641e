//! GPT-2 (Radford et al., 2019), as transformers' `models/gpt2/modeling_gpt2.py` computes it:
//! pre-LayerNorm blocks, Conv1D weights (stored `[in, out]`), learned positions, the LM head
//! tied to the token embeddings. `scale_attn_by_inverse_layer_idx` divides layer `i`'s scores by
//! `i + 1`; `reorder_and_upcast_attn` computes scores in fp32.

use serde::Deserialize;
use tch::{Kind, Tensor};

use super::{
    ModelError,
    causal::{CausalLm, allowed_keys},
    kv_cache::KvCache,
    layers::{Activation, LayerNorm, Linear, dtype_min},
    weights::{Weights, WeightsError},
};

#[derive(Debug, Clone, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: i64,
    pub n_positions: i64,
    pub n_embd: i64,
    pub n_layer: usize,
    pub n_head: i64,
    #[serde(default)]
    pub n_inner: Option<i64>,
    #[serde(default = "gelu_new")]
    pub activation_function: Activation,
    #[serde(default = "eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "yes")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    #[serde(default)]
    pub reorder_and_upcast_attn: bool,
}

fn gelu_new() -> Activation {
    Activation::GeluTanh
}
fn eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

/// A Conv1D layer, transposed at load so it runs as a linear layer.
fn conv1d(w: &Weights, name: &str, input: i64, output: i64) -> Result<Linear, WeightsError> {
    let weight = w.get(&format!("{name}.weight"), &[input, output])?.t_().contiguous();
    let bias = w.get(&format!("{name}.bias"), &[output])?;
    Ok(Linear::new(w, weight, Some(bias)))
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    c_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
    /// Divisors of the scores, in transformers' order (eager path): sqrt(head_dim), then
    /// layer index + 1. The upcast path multiplies by their combined inverse (its baddbmm alpha).
    divisors: Vec<f64>,
    upcast: bool,
}

pub struct Gpt2 {
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Linear,
    heads: i64,
    activation: Activation,
    pub config: Gpt2Config,
}

impl Gpt2 {
    pub fn load(w: &Weights, cfg: &Gpt2Config) -> Result<Self, ModelError> {
        if cfg.n_embd % cfg.n_head != 0 {
            return Err(ModelError::Config("n_embd is not a multiple of n_head".into()));
        }
        let p = w.base_prefix(&["transformer."], "wte.weight");
        let (d, inner) = (cfg.n_embd, cfg.n_inner.unwrap_or(4 * cfg.n_embd));
        let head_dim = (d / cfg.n_head) as f64;
        let blocks = (0..cfg.n_layer)
            .map(|i| {
                let at = format!("{p}h.{i}");
                let mut divisors = Vec::new();
                if cfg.scale_attn_weights {
                    divisors.push(head_dim.sqrt());
                }
                if cfg.scale_attn_by_inverse_layer_idx {
                    divisors.push((i + 1) as f64);
                }
                Ok(Block {
                    ln_1: LayerNorm::load(w, &format!("{at}.ln_1"), d, cfg.layer_norm_epsilon)?,
                    c_attn: conv1d(w, &format!("{at}.attn.c_attn"), d, 3 * d)?,
                    c_proj: conv1d(w, &format!("{at}.attn.c_proj"), d, d)?,
                    ln_2: LayerNorm::load(w, &format!("{at}.ln_2"), d, cfg.layer_norm_epsilon)?,
                    c_fc: conv1d(w, &format!("{at}.mlp.c_fc"), d, inner)?,
                    mlp_proj: conv1d(w, &format!("{at}.mlp.c_proj"), inner, d)?,
                    divisors,
                    upcast: cfg.reorder_and_upcast_attn,
                })
            })
            .collect::<Result<Vec<_>, WeightsError>>()?;
        let wte = w.get(&format!("{p}wte.weight"), &[cfg.vocab_size, d])?;
        let lm_head = match w.get_optional("lm_head.weight", &[cfg.vocab_size, d])? {
            Some(lm_head) => Linear::new(w, lm_head, None),
            None => Linear::tied(w, &wte, None),
        };
        Ok(Self {
            wpe: w.get(&format!("{p}wpe.weight"), &[cfg.n_positions, d])?,
            wte,
            blocks,
            ln_f: LayerNorm::load(w, &format!("{p}ln_f"), d, cfg.layer_norm_epsilon)?,
            lm_head,
            heads: cfg.n_head,
            activation: cfg.activation_function,
            config: cfg.clone(),
        })
    }

    fn attention(
        &self,
        block: &Block,
        layer: usize,
        x: &Tensor,
        allowed: &Tensor,
        cache: &mut KvCache,
    ) -> Tensor {
        let (batch, new, d) = x.size3().expect("[batch, seq, hidden]");
        let head_dim = d / self.heads;
        let qkv = block.c_attn.forward(x).split(d, -1);
        let split = |t: &Tensor| t.view([batch, new, self.heads, head_dim]).transpose(1, 2);
        let (q, k, v) = (split(&qkv[0]), split(&qkv[1]), split(&qkv[2]));
        let (k, v) = cache.append(layer, k, v);
        let kind = q.kind();
        let scores = if block.upcast {
            let alpha = block.divisors.iter().fold(1.0, |acc, d| acc / d);
            q.to_kind(Kind::Float).matmul(&k.to_kind(Kind::Float).transpose(-1, -2)) * alpha
        } else {
            block.divisors.iter().fold(q.matmul(&k.transpose(-1, -2)), |s, d| s / *d)
        };
        let min = Tensor::from(dtype_min(scores.kind()))
            .to_kind(scores.kind())
            .to_device(scores.device());
        let probs = scores.where_self(allowed, &min).softmax(-1, scores.kind()).to_kind(kind);
        let out = probs.matmul(&v).transpose(1, 2).contiguous().view([batch, new, d]);
        block.c_proj.forward(&out)
    }
}

impl CausalLm for Gpt2 {
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
        let mut x = Tensor::embedding(&self.wte, ids, -1, false, false)
            + Tensor::embedding(&self.wpe, positions, -1, false, false);
        let allowed = allowed_keys(key_mask, ids.size()[1]);
        for (i, block) in self.blocks.iter().enumerate() {
            let attended = self.attention(block, i, &block.ln_1.forward(&x), &allowed, cache);
            x += attended;
            let inner = self.activation.forward(&block.c_fc.forward(&block.ln_2.forward(&x)));
            x += block.mlp_proj.forward(&inner);
        }
        self.ln_f.forward(&x)
    }

    fn lm_head(&self, hidden: &Tensor) -> Tensor {
        self.lm_head.forward(hidden)
    }
}
