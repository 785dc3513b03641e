//! T5 (Raffel et al., 2019, <https://arxiv.org/abs/1910.10683>), v1.0 and v1.1/Flan, as
//! transformers' `models/t5/modeling_t5.py` computes it: RMS LayerNorm without bias (in fp32),
//! unscaled attention with a relative position bias from bucketed distances (computed by the
//! first layer of each stack, shared by the others), ReLU or gated-GELU feed-forward, and an LM
//! head that is either the shared embeddings with a `d_model ** -0.5` rescale or its own matrix.

use serde::Deserialize;
use tch::{Kind, Tensor};

use super::{
    ModelError,
    layers::{Activation, Linear, attention_bias},
    seq2seq::{DecoderCache, Seq2Seq, decoder_self_bias},
    weights::{Weights, WeightsError},
};

#[derive(Debug, Clone, Deserialize)]
pub struct T5Config {
    pub vocab_size: i64,
    pub d_model: i64,
    pub d_kv: i64,
    pub d_ff: i64,
    pub num_layers: usize,
    #[serde(default)]
    pub num_decoder_layers: Option<usize>,
    pub num_heads: i64,
    #[serde(default = "thirty_two")]
    pub relative_attention_num_buckets: i64,
    #[serde(default = "one_twenty_eight")]
    pub relative_attention_max_distance: i64,
    #[serde(default = "eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "relu")]
    pub feed_forward_proj: String,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
}

fn thirty_two() -> i64 {
    32
}
fn one_twenty_eight() -> i64 {
    128
}
fn eps() -> f64 {
    1e-6
}
fn relu() -> String {
    "relu".into()
}
fn yes() -> bool {
    true
}

/// T5's projections have no bias.
fn unbiased(w: &Weights, name: &str, input: i64, output: i64) -> Result<Linear, WeightsError> {
    Ok(Linear::new(w, w.get(&format!("{name}.weight"), &[output, input])?, None))
}

/// T5's LayerNorm: scale only, no mean subtraction, variance in fp32.
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn load(w: &Weights, name: &str, d: i64, eps: f64) -> Result<Self, WeightsError> {
        Ok(Self { weight: w.get(&format!("{name}.weight"), &[d])?, eps })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let variance = x.to_kind(Kind::Float).pow_tensor_scalar(2).mean_dim(
            [-1i64].as_slice(),
            true,
            Kind::Float,
        );
        let normed = x * (variance + self.eps).rsqrt();
        &self.weight * normed.to_kind(self.weight.kind())
    }
}

/// One attention block's projections, as bart.rs keeps them: self-attention's queries, keys
/// and values stacked into one layer (one matrix product a call), cross-attention's queries
/// alone and its keys and values (over the encoder output) stacked.
struct Attention {
    /// `[q; k; v]` (self-attention) or `q` alone (cross-attention).
    queries: Linear,
    /// `[k; v]` over the encoder output (cross-attention only).
    encoder_kv: Option<Linear>,
    o: Linear,
    heads: i64,
    d_kv: i64,
}

impl Attention {
    fn load(w: &Weights, at: &str, cfg: &T5Config, cross: bool) -> Result<Self, WeightsError> {
        let inner = cfg.num_heads * cfg.d_kv;
        let stacked = |projections: &[&str]| {
            let names: Vec<String> = projections.iter().map(|p| format!("{at}.{p}")).collect();
            Linear::load_stacked(w, &names, cfg.d_model, inner, false)
        };
        let (queries, encoder_kv) = if cross {
            (unbiased(w, &format!("{at}.q"), cfg.d_model, inner)?, Some(stacked(&["k", "v"])?))
        } else {
            (stacked(&["q", "k", "v"])?, None)
        };
        Ok(Self {
            queries,
            encoder_kv,
            o: unbiased(w, &format!("{at}.o"), inner, cfg.d_model)?,
            heads: cfg.num_heads,
            d_kv: cfg.d_kv,
        })
    }

    /// Part `index` (of `[q; k; v]` or `[k; v]`) of a stacked projection's output, as
    /// `[batch, heads, seq, d_kv]`.
    fn heads_of(&self, projected: &Tensor, index: i64) -> Tensor {
        let (b, n, _) = projected.size3().expect("[batch, seq, hidden]");
        let inner = self.heads * self.d_kv;
        projected
            .narrow(-1, index * inner, inner)
            .view([b, n, self.heads, self.d_kv])
            .transpose(1, 2)
    }

    /// Queries, keys and values of `x` (self-attention).
    fn project_all(&self, x: &Tensor) -> (Tensor, Tensor, Tensor) {
        let qkv = self.queries.forward(x);
        (self.heads_of(&qkv, 0), self.heads_of(&qkv, 1), self.heads_of(&qkv, 2))
    }

    /// Keys and values over the encoder output (cross-attention).
    fn encoder_keys_values(&self, encoder_out: &Tensor) -> (Tensor, Tensor) {
        let kv = self.encoder_kv.as_ref().expect("cross-attention").forward(encoder_out);
        (self.heads_of(&kv, 0), self.heads_of(&kv, 1))
    }

    /// Cross-attention of `x` over the encoder's `k` and `v`.
    fn cross_attend(&self, x: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor) -> Tensor {
        self.attend(&self.heads_of(&self.queries.forward(x), 0), k, v, bias)
    }

    /// Attention of queries `q` `[batch, heads, seq, d_kv]` (T5 does not scale them) over `k`
    /// and `v` with additive `bias`, through the output projection.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor) -> Tensor {
        let (b, _, n, _) = q.size4().expect("[batch, heads, seq, d_kv]");
        let scores = q.matmul(&k.transpose(3, 2)) + bias;
        let probs = scores.to_kind(Kind::Float).softmax(-1, Kind::Float).to_kind(scores.kind());
        let out = probs.matmul(v).transpose(1, 2).contiguous().view([b, n, self.heads * self.d_kv]);
        self.o.forward(&out)
    }
}

enum FeedForward {
    Dense {
        wi: Linear,
        wo: Linear,
        activation: Activation,
    },
    /// `wi` is `[wi_0; wi_1]` stacked: the gate and the linear part in one product.
    Gated {
        wi: Linear,
        wo: Linear,
        activation: Activation,
    },
}

impl FeedForward {
    fn load(w: &Weights, at: &str, cfg: &T5Config) -> Result<Self, ModelError> {
        let (d, ff) = (cfg.d_model, cfg.d_ff);
        let (gated, activation) = match cfg.feed_forward_proj.as_str() {
            "relu" => (false, Activation::Relu),
            "gelu" => (false, Activation::Gelu),
            "gated-gelu" => (true, Activation::GeluTanh),
            "gated-relu" => (true, Activation::Relu),
            "gated-silu" => (true, Activation::Silu),
            other => return Err(ModelError::Unsupported(format!("feed_forward_proj `{other}`"))),
        };
        let wo = unbiased(w, &format!("{at}.wo"), ff, d)?;
        Ok(if gated {
            FeedForward::Gated {
                wi: Linear::load_stacked(
                    w,
                    &[format!("{at}.wi_0"), format!("{at}.wi_1")],
                    d,
                    ff,
                    false,
                )?,
                wo,
                activation,
            }
        } else {
            FeedForward::Dense { wi: unbiased(w, &format!("{at}.wi"), d, ff)?, wo, activation }
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            FeedForward::Dense { wi, wo, activation } => {
                wo.forward(&activation.forward(&wi.forward(x)))
            }
            FeedForward::Gated { wi, wo, activation } => {
                let both = wi.forward(x);
                let width = both.size()[both.dim() - 1] / 2;
                let gate = activation.forward(&both.narrow(-1, 0, width));
                wo.forward(&(gate * both.narrow(-1, width, width)))
            }
        }
    }
}

struct Block {
    self_norm: RmsNorm,
    self_attention: Attention,
    cross: Option<(RmsNorm, Attention)>,
    ff_norm: RmsNorm,
    ff: FeedForward,
}

struct Stack {
    blocks: Vec<Block>,
    relative_bias: Tensor,
    final_norm: RmsNorm,
    bidirectional: bool,
}

impl Stack {
    fn load(w: &Weights, at: &str, cfg: &T5Config, decoder: bool) -> Result<Self, ModelError> {
        let count =
            if decoder { cfg.num_decoder_layers.unwrap_or(cfg.num_layers) } else { cfg.num_layers };
        let eps = cfg.layer_norm_epsilon;
        let blocks = (0..count)
            .map(|i| {
                let b = format!("{at}.block.{i}.layer");
                let cross = if decoder {
                    Some((
                        RmsNorm::load(w, &format!("{b}.1.layer_norm"), cfg.d_model, eps)?,
                        Attention::load(w, &format!("{b}.1.EncDecAttention"), cfg, true)?,
                    ))
                } else {
                    None
                };
                let ff_at = if decoder { 2 } else { 1 };
                Ok(Block {
                    self_norm: RmsNorm::load(w, &format!("{b}.0.layer_norm"), cfg.d_model, eps)?,
                    self_attention: Attention::load(
                        w,
                        &format!("{b}.0.SelfAttention"),
                        cfg,
                        false,
                    )?,
                    cross,
                    ff_norm: RmsNorm::load(
                        w,
                        &format!("{b}.{ff_at}.layer_norm"),
                        cfg.d_model,
                        eps,
                    )?,
                    ff: FeedForward::load(w, &format!("{b}.{ff_at}.DenseReluDense"), cfg)?,
                })
            })
            .collect::<Result<_, ModelError>>()?;
        Ok(Self {
            blocks,
            relative_bias: w.get(
                &format!("{at}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
                &[cfg.relative_attention_num_buckets, cfg.num_heads],
            )?,
            final_norm: RmsNorm::load(w, &format!("{at}.final_layer_norm"), cfg.d_model, eps)?,
            bidirectional: !decoder,
        })
    }

    /// `[1, heads, queries, keys]` position bias for queries at `past..past+new`.
    fn position_bias(&self, cfg: &T5Config, past: i64, new: i64, device: tch::Device) -> Tensor {
        let context = Tensor::arange_start(past, past + new, (Kind::Int64, device)).unsqueeze(1);
        let memory = Tensor::arange(past + new, (Kind::Int64, device)).unsqueeze(0);
        let buckets = relative_position_bucket(
            &(memory - context),
            self.bidirectional,
            cfg.relative_attention_num_buckets,
            cfg.relative_attention_max_distance,
        );
        Tensor::embedding(&self.relative_bias, &buckets, -1, false, false)
            .permute([2, 0, 1])
            .unsqueeze(0)
    }
}

/// transformers' `_relative_position_bucket`.
fn relative_position_bucket(
    relative: &Tensor,
    bidirectional: bool,
    buckets: i64,
    max_distance: i64,
) -> Tensor {
    let (buckets, mut result, relative) = if bidirectional {
        let half = buckets / 2;
        (half, relative.gt(0).to_kind(Kind::Int64) * half, relative.abs())
    } else {
        (buckets, relative.zeros_like(), -relative.clamp_max(0))
    };
    let max_exact = buckets / 2;
    let is_small = relative.lt(max_exact);
    let large = (relative.to_kind(Kind::Float) / max_exact as f64).log()
        / (max_distance as f64 / max_exact as f64).ln()
        * (buckets - max_exact) as f64;
    let large = (large.to_kind(Kind::Int64) + max_exact).clamp_max(buckets - 1);
    result += relative.where_self(&is_small, &large);
    result
}

pub struct T5 {
    shared: Tensor,
    encoder: Stack,
    decoder: Stack,
    lm_head: Linear,
    rescale: Option<f64>,
    config: T5Config,
}

impl T5 {
    pub fn load(w: &Weights, cfg: &T5Config) -> Result<Self, ModelError> {
        let shared = w.get("shared.weight", &[cfg.vocab_size, cfg.d_model])?;
        let lm_head = if cfg.tie_word_embeddings {
            Linear::tied(w, &shared, None)
        } else {
            unbiased(w, "lm_head", cfg.d_model, cfg.vocab_size)?
        };
        Ok(Self {
            encoder: Stack::load(w, "encoder", cfg, false)?,
            decoder: Stack::load(w, "decoder", cfg, true)?,
            rescale: cfg.tie_word_embeddings.then(|| (cfg.d_model as f64).powf(-0.5)),
            lm_head,
            shared,
            config: cfg.clone(),
        })
    }
}

impl Seq2Seq for T5 {
    fn encode(&self, ids: &Tensor, mask: &Tensor) -> Tensor {
        let mut x = Tensor::embedding(&self.shared, ids, -1, false, false);
        let n = ids.size()[1];
        let bias = self.encoder.position_bias(&self.config, 0, n, x.device())
            + attention_bias(mask, x.kind());
        for block in &self.encoder.blocks {
            let (q, k, v) = block.self_attention.project_all(&block.self_norm.forward(&x));
            x = &x + block.self_attention.attend(&q, &k, &v, &bias);
            x = &x + block.ff.forward(&block.ff_norm.forward(&x));
        }
        self.encoder.final_norm.forward(&x)
    }

    fn decode(
        &self,
        ids: &Tensor,
        decoder_mask: &Tensor,
        encoder_out: &Tensor,
        encoder_mask: &Tensor,
        cache: &mut DecoderCache,
    ) -> Tensor {
        let past = cache.self_attention.seq_len();
        let n = ids.size()[1];
        let mut x = Tensor::embedding(&self.shared, ids, -1, false, false);
        // Relative positions need no per-row shift: a row's left padding moves its keys and its
        // query alike. The padded keys are masked.
        let self_bias = self.decoder.position_bias(&self.config, past, n, x.device())
            + decoder_self_bias(decoder_mask, n, x.kind());
        let cross_bias = attention_bias(encoder_mask, x.kind());
        for (i, block) in self.decoder.blocks.iter().enumerate() {
            let attention = &block.self_attention;
            let (q, k, v) = attention.project_all(&block.self_norm.forward(&x));
            let (k, v) = cache.self_attention.append(i, k, v);
            x = &x + attention.attend(&q, &k, &v, &self_bias);
            if let Some((norm, cross)) = &block.cross {
                let h = norm.forward(&x);
                let (k, v) = cache
                    .cross_attention
                    .get_or_insert(i, || cross.encoder_keys_values(encoder_out));
                let rows = &cache.cross_rows;
                x = &x + rows.ungroup(&cross.cross_attend(&rows.group(&h), &k, &v, &cross_bias));
            }
            x = &x + block.ff.forward(&block.ff_norm.forward(&x));
        }
        let mut x = self.decoder.final_norm.forward(&x);
        if let Some(scale) = self.rescale {
            x *= scale;
        }
        self.lm_head.forward(&x)
    }

    fn decoder_layers(&self) -> usize {
        self.decoder.blocks.len()
    }
}
