//! BART (Lewis et al., 2019, <https://arxiv.org/abs/1910.13461>) and mBART, as transformers'
//! `models/bart` and `models/mbart` compute them: learned positions offset by 2, optional
//! sqrt(d_model) embedding scale, `layernorm_embedding`; BART's layers are post-LayerNorm,
//! mBART's pre-LayerNorm with a final `layer_norm` per stack. The LM head is tied to the shared
//! embeddings and adds `final_logits_bias`. DistilBART-CNN is a BART config.

use serde::Deserialize;
use tch::{Kind, Tensor};

use super::{
    ModelError,
    kv_cache::KvCache,
    layers::{Activation, LayerNorm, Linear, attention_bias},
    seq2seq::{DecoderCache, Seq2Seq, decoder_positions, decoder_self_bias},
    weights::{Weights, WeightsError},
};

const EPS: f64 = 1e-5;
const POSITION_OFFSET: i64 = 2;

#[derive(Debug, Clone, Deserialize)]
pub struct BartConfig {
    pub vocab_size: i64,
    pub d_model: i64,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub encoder_attention_heads: i64,
    pub decoder_attention_heads: i64,
    pub encoder_ffn_dim: i64,
    pub decoder_ffn_dim: i64,
    #[serde(default = "gelu")]
    pub activation_function: Activation,
    pub max_position_embeddings: i64,
    #[serde(default)]
    pub scale_embedding: bool,
}

fn gelu() -> Activation {
    Activation::Gelu
}

/// One attention block's projections. Self-attention projects queries, keys and values from
/// the same input, so they are one stacked layer (one matrix product a call); cross-attention
/// projects queries from the decoder and keys and values (stacked) from the encoder output.
struct Attention {
    /// `[q; k; v]` (self-attention) or `q` alone (cross-attention).
    queries: Linear,
    /// `[k; v]` over the encoder output (cross-attention only).
    encoder_kv: Option<Linear>,
    out: Linear,
    heads: i64,
    d: i64,
}

impl Attention {
    fn load(w: &Weights, at: &str, d: i64, heads: i64, cross: bool) -> Result<Self, WeightsError> {
        let names = |projections: &[&str]| -> Vec<String> {
            projections.iter().map(|p| format!("{at}.{p}_proj")).collect()
        };
        let (queries, encoder_kv) = if cross {
            (
                Linear::load(w, &format!("{at}.q_proj"), d, d)?,
                Some(Linear::load_stacked(w, &names(&["k", "v"]), d, d, true)?),
            )
        } else {
            (Linear::load_stacked(w, &names(&["q", "k", "v"]), d, d, true)?, None)
        };
        Ok(Self {
            queries,
            encoder_kv,
            out: Linear::load(w, &format!("{at}.out_proj"), d, d)?,
            heads,
            d,
        })
    }

    /// `[batch, seq, hidden]` as `[batch, heads, seq, head_dim]` (a view).
    fn split(&self, x: &Tensor) -> Tensor {
        let (b, n, d) = x.size3().expect("[batch, seq, hidden]");
        x.view([b, n, self.heads, d / self.heads]).transpose(1, 2)
    }

    /// Each head's keys and values over the encoder output (cross-attention).
    fn encoder_keys_values(&self, encoder_out: &Tensor) -> (Tensor, Tensor) {
        let kv = self.encoder_kv.as_ref().expect("cross-attention").forward(encoder_out);
        let (k, v) = (kv.narrow(-1, 0, self.d), kv.narrow(-1, self.d, self.d));
        (self.split(&k), self.split(&v))
    }

    /// Attention of queries `q` `[batch, heads, seq, head_dim]` over `keys`/`values` with
    /// additive `bias`, through the output projection.
    fn attend(&self, q: &Tensor, keys: &Tensor, values: &Tensor, bias: &Tensor) -> Tensor {
        let (b, _, n, _) = q.size4().expect("[batch, heads, seq, head_dim]");
        // softmax(q k^T / sqrt(head_dim) + bias) v in libtorch's fused kernel: one pass over the
        // keys per (row, head), where matmul ran a batched GEMM per product (MKL's small-matrix
        // path, most of a 32-row DistilBART step). Within 1e-4 of transformers' eager BART.
        let attended = Tensor::scaled_dot_product_attention(
            q,
            keys,
            values,
            Some(bias),
            0.0,
            false,
            None,
            false,
        );
        self.out.forward(&attended.transpose(1, 2).contiguous().view([b, n, self.d]))
    }

    /// Cross-attention of `x` over the encoder's `keys` and `values`.
    fn cross_attend(&self, x: &Tensor, keys: &Tensor, values: &Tensor, bias: &Tensor) -> Tensor {
        self.attend(&self.split(&self.queries.forward(x)), keys, values, bias)
    }

    fn self_attend(
        &self,
        x: &Tensor,
        bias: &Tensor,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor {
        let qkv = self.queries.forward(x);
        let part = |i: i64| self.split(&qkv.narrow(-1, i * self.d, self.d));
        let (q, k, v) = (part(0), part(1), part(2));
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, k, v),
            None => (k, v),
        };
        self.attend(&q, &k, &v, bias)
    }
}

struct Layer {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    cross: Option<(Attention, LayerNorm)>,
    fc1: Linear,
    fc2: Linear,
    final_layer_norm: LayerNorm,
}

impl Layer {
    fn load(
        w: &Weights,
        at: &str,
        d: i64,
        heads: i64,
        ffn: i64,
        decoder: bool,
    ) -> Result<Self, WeightsError> {
        let cross = if decoder {
            Some((
                Attention::load(w, &format!("{at}.encoder_attn"), d, heads, true)?,
                LayerNorm::load(w, &format!("{at}.encoder_attn_layer_norm"), d, EPS)?,
            ))
        } else {
            None
        };
        Ok(Self {
            self_attn: Attention::load(w, &format!("{at}.self_attn"), d, heads, false)?,
            self_attn_layer_norm: LayerNorm::load(
                w,
                &format!("{at}.self_attn_layer_norm"),
                d,
                EPS,
            )?,
            cross,
            fc1: Linear::load(w, &format!("{at}.fc1"), d, ffn)?,
            fc2: Linear::load(w, &format!("{at}.fc2"), ffn, d)?,
            final_layer_norm: LayerNorm::load(w, &format!("{at}.final_layer_norm"), d, EPS)?,
        })
    }
}

struct Stack {
    positions: Tensor,
    layernorm_embedding: LayerNorm,
    layers: Vec<Layer>,
    /// mBART's final LayerNorm.
    final_norm: Option<LayerNorm>,
}

impl Stack {
    fn load(
        w: &Weights,
        at: &str,
        cfg: &BartConfig,
        decoder: bool,
        pre_norm: bool,
    ) -> Result<Self, WeightsError> {
        let d = cfg.d_model;
        let (count, heads, ffn) = if decoder {
            (cfg.decoder_layers, cfg.decoder_attention_heads, cfg.decoder_ffn_dim)
        } else {
            (cfg.encoder_layers, cfg.encoder_attention_heads, cfg.encoder_ffn_dim)
        };
        Ok(Self {
            positions: w.get(
                &format!("{at}.embed_positions.weight"),
                &[cfg.max_position_embeddings + POSITION_OFFSET, d],
            )?,
            layernorm_embedding: LayerNorm::load(w, &format!("{at}.layernorm_embedding"), d, EPS)?,
            layers: (0..count)
                .map(|i| Layer::load(w, &format!("{at}.layers.{i}"), d, heads, ffn, decoder))
                .collect::<Result<_, _>>()?,
            final_norm: if pre_norm {
                Some(LayerNorm::load(w, &format!("{at}.layer_norm"), d, EPS)?)
            } else {
                None
            },
        })
    }

    /// Token and learned position embeddings; `positions` is `[new]` (shared by every row) or
    /// `[rows, new]`.
    fn embed(&self, bart: &Bart, ids: &Tensor, positions: &Tensor) -> Tensor {
        let positions = positions + POSITION_OFFSET;
        let tokens = Tensor::embedding(&bart.shared, ids, -1, false, false) * bart.embed_scale;
        let mut position = Tensor::embedding(&self.positions, &positions, -1, false, false);
        if position.dim() == 2 {
            position = position.unsqueeze(0);
        }
        self.layernorm_embedding.forward(&(tokens + position))
    }
}

pub struct Bart {
    shared: Tensor,
    embed_scale: f64,
    encoder: Stack,
    decoder: Stack,
    lm_head: Linear,
    final_logits_bias: Option<Tensor>,
    activation: Activation,
    pre_norm: bool,
}

impl Bart {
    /// `pre_norm`: mBART's layer order.
    pub fn load(w: &Weights, cfg: &BartConfig, pre_norm: bool) -> Result<Self, ModelError> {
        if cfg.d_model % cfg.encoder_attention_heads != 0
            || cfg.d_model % cfg.decoder_attention_heads != 0
        {
            return Err(ModelError::Config(
                "d_model is not a multiple of the attention heads".into(),
            ));
        }
        let shared = w.get("model.shared.weight", &[cfg.vocab_size, cfg.d_model])?;
        let lm_head = match w.get_optional("lm_head.weight", &[cfg.vocab_size, cfg.d_model])? {
            Some(lm_head) => Linear::new(w, lm_head, None),
            None => Linear::tied(w, &shared, None),
        };
        Ok(Self {
            embed_scale: if cfg.scale_embedding { (cfg.d_model as f64).sqrt() } else { 1.0 },
            encoder: Stack::load(w, "model.encoder", cfg, false, pre_norm)?,
            decoder: Stack::load(w, "model.decoder", cfg, true, pre_norm)?,
            final_logits_bias: w.get_optional("final_logits_bias", &[1, cfg.vocab_size])?,
            lm_head,
            shared,
            activation: cfg.activation_function,
            pre_norm,
        })
    }

    /// One layer: attention(s) and feed-forward, each residual, normalised before (mBART) or
    /// after (BART). Decoder layers have `cache` (with its layer index) and `cross` (the
    /// encoder output and its bias, once per input).
    fn layer(
        &self,
        layer: &Layer,
        x: Tensor,
        self_bias: &Tensor,
        cache: Option<(&mut DecoderCache, usize)>,
        cross: Option<(&Tensor, &Tensor)>,
    ) -> Tensor {
        let norm_in = |norm: &LayerNorm, x: &Tensor| {
            if self.pre_norm { norm.forward(x) } else { x.shallow_clone() }
        };
        let norm_out =
            |norm: &LayerNorm, x: Tensor| if self.pre_norm { x } else { norm.forward(&x) };
        let (self_cache, cross_cache) = match cache {
            Some((cache, i)) => (
                Some((&mut cache.self_attention, i)),
                Some((&mut cache.cross_attention, &cache.cross_rows, i)),
            ),
            None => (None, None),
        };
        let h = norm_in(&layer.self_attn_layer_norm, &x);
        let mut x = norm_out(
            &layer.self_attn_layer_norm,
            &x + layer.self_attn.self_attend(&h, self_bias, self_cache),
        );
        if let (
            Some((attention, norm)),
            Some((encoder_out, encoder_bias)),
            Some((cache, rows, i)),
        ) = (&layer.cross, cross, cross_cache)
        {
            let h = norm_in(norm, &x);
            let (k, v) = cache.get_or_insert(i, || attention.encoder_keys_values(encoder_out));
            let attended = attention.cross_attend(&rows.group(&h), &k, &v, encoder_bias);
            x = norm_out(norm, &x + rows.ungroup(&attended));
        }
        let h = norm_in(&layer.final_layer_norm, &x);
        let inner = self.activation.forward(&layer.fc1.forward(&h));
        norm_out(&layer.final_layer_norm, &x + layer.fc2.forward(&inner))
    }
}

impl Seq2Seq for Bart {
    fn encode(&self, ids: &Tensor, mask: &Tensor) -> Tensor {
        let positions = Tensor::arange(ids.size()[1], (Kind::Int64, ids.device()));
        let mut x = self.encoder.embed(self, ids, &positions);
        let bias = attention_bias(mask, x.kind());
        for layer in &self.encoder.layers {
            x = self.layer(layer, x, &bias, None, None);
        }
        match &self.encoder.final_norm {
            Some(norm) => norm.forward(&x),
            None => x,
        }
    }

    fn decode(
        &self,
        ids: &Tensor,
        decoder_mask: &Tensor,
        encoder_out: &Tensor,
        encoder_mask: &Tensor,
        cache: &mut DecoderCache,
    ) -> Tensor {
        let new = ids.size()[1];
        let mut x = self.decoder.embed(self, ids, &decoder_positions(decoder_mask, new));
        let self_bias = decoder_self_bias(decoder_mask, new, x.kind());
        let cross_bias = attention_bias(encoder_mask, x.kind());
        for (i, layer) in self.decoder.layers.iter().enumerate() {
            x = self.layer(
                layer,
                x,
                &self_bias,
                Some((cache, i)),
                Some((encoder_out, &cross_bias)),
            );
        }
        if let Some(norm) = &self.decoder.final_norm {
            x = norm.forward(&x);
        }
        let logits = self.lm_head.forward(&x);
        match &self.final_logits_bias {
            Some(bias) => logits + bias,
            None => logits,
        }
    }

    fn decoder_layers(&self) -> usize {
        self.decoder.layers.len()
    }
}
