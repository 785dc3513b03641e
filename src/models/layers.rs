//! The building blocks the encoder architectures share: linear, layer norm, embedding, the
//! activations config.json names, and the post-norm transformer layer (self-attention and
//! feed-forward, each followed by residual + LayerNorm) that BERT, RoBERTa, DistilBERT, ALBERT
//! and ELECTRA all use under different tensor names.

use serde::Deserialize;
use tch::Tensor;

use super::{
    int8::Int8Weight,
    onednn::PackedWeight,
    weights::{Weights, WeightsError},
};

/// `y = x W^T + b`, weights as PyTorch's nn.Linear stores them (`[out, in]`), or their int8
/// form when the weights were loaded for `dtype = "int8"` (see [`super::int8`]).
#[derive(Debug)]
pub struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor>,
}

#[derive(Debug)]
enum LinearWeight {
    Dense(Tensor),
    /// fp32 on CPU: oneDNN's kernel over its packed weight (see [`super::onednn`]). `few_rows`
    /// is the dense weight where keeping it costs no memory (an LM head that is the embedding
    /// matrix), for the 1-2 rows at which [`few_rows_times`] beats oneDNN on such a head.
    OneDnn {
        packed: PackedWeight,
        few_rows: Option<Tensor>,
    },
    /// fp32 on CPU where oneDNN is not available (or `LOTE_CPU_LINEAR=mkl`): MKL, few rows
    /// (decoding) multiplied the other way round, see [`few_rows_times`].
    CpuFp32(Tensor),
    Int8(Int8Weight),
}

/// Up to this many rows a tied head multiplies through MKL (see [`LinearWeight::OneDnn`]).
const HEAD_FEW_ROWS: i64 = 2;

/// Whether CPU fp32 linear layers pack their weights for oneDNN: yes unless the environment
/// says `LOTE_CPU_LINEAR=mkl` (the earlier path, kept to compare the two on a host).
fn onednn_wanted() -> bool {
    static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WANTED.get_or_init(|| std::env::var("LOTE_CPU_LINEAR").map_or(true, |v| v != "mkl"))
}

impl Linear {
    pub fn load(w: &Weights, name: &str, input: i64, output: i64) -> Result<Self, WeightsError> {
        let weight = w.get(&format!("{name}.weight"), &[output, input])?;
        Ok(Self::new(w, weight, Some(w.get(&format!("{name}.bias"), &[output])?)))
    }

    /// Linear layers `names` that read the same input, as one: their weights stacked along the
    /// output axis, so a call runs one matrix product where there were several (and, in int8,
    /// quantizes its input once). The outputs come in `names`' order along the last axis, each
    /// `output` wide; `biased` says whether the layers have biases.
    pub fn load_stacked(
        w: &Weights,
        names: &[String],
        input: i64,
        output: i64,
        biased: bool,
    ) -> Result<Self, WeightsError> {
        let layers: Vec<(String, i64)> = names.iter().map(|name| (name.clone(), output)).collect();
        Self::load_concatenated(w, &layers, input, biased)
    }

    /// Like [`Linear::load_stacked`] for layers of different widths (`(name, output)` pairs,
    /// e.g. grouped-query attention's q, k and v): the outputs come in order along the last axis.
    pub fn load_concatenated(
        w: &Weights,
        layers: &[(String, i64)],
        input: i64,
        biased: bool,
    ) -> Result<Self, WeightsError> {
        let mut weights = Vec::with_capacity(layers.len());
        let mut biases = Vec::with_capacity(layers.len());
        for (name, output) in layers {
            weights.push(w.get(&format!("{name}.weight"), &[*output, input])?);
            if biased {
                biases.push(w.get(&format!("{name}.bias"), &[*output])?);
            }
        }
        let bias = biased.then(|| Tensor::cat(&biases, 0));
        Ok(Self::new(w, Tensor::cat(&weights, 0), bias))
    }

    /// A linear layer over `weight` `[out, in]`, quantized when `w` was loaded for int8.
    pub fn new(w: &Weights, weight: Tensor, bias: Option<Tensor>) -> Self {
        Self::with_weight(w, weight, bias, false)
    }

    /// An LM head over the embedding matrix itself (tied weights): like [`Linear::new`], and on
    /// CPU in fp32 it also keeps that matrix, which the embeddings hold anyway, for one or two
    /// rows.
    pub fn tied(w: &Weights, embeddings: &Tensor, bias: Option<Tensor>) -> Self {
        Self::with_weight(w, embeddings.shallow_clone(), bias, true)
    }

    fn with_weight(w: &Weights, weight: Tensor, bias: Option<Tensor>, tied: bool) -> Self {
        let cpu_fp32 = weight.device() == tch::Device::Cpu && weight.kind() == tch::Kind::Float;
        let weight = if w.int8_linears() {
            LinearWeight::Int8(Int8Weight::quantize(&weight))
        } else if cpu_fp32 && onednn_wanted() {
            match PackedWeight::pack(&weight) {
                Ok(packed) => LinearWeight::OneDnn { packed, few_rows: tied.then_some(weight) },
                Err(error) => {
                    tracing::debug!(%error, "linear layer stays on MKL");
                    LinearWeight::CpuFp32(weight)
                }
            }
        } else if cpu_fp32 {
            LinearWeight::CpuFp32(weight)
        } else {
            LinearWeight::Dense(weight)
        };
        Self { weight, bias }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        match &self.weight {
            LinearWeight::Dense(weight) => x.linear(weight, self.bias.as_ref()),
            LinearWeight::OneDnn { packed, few_rows } => {
                let rows: i64 = x.size().iter().rev().skip(1).product();
                match few_rows {
                    Some(dense) if rows <= HEAD_FEW_ROWS => self.mkl_forward(x, dense),
                    _ => packed
                        .linear(x, self.bias.as_ref())
                        .unwrap_or_else(|error| panic!("{error}")),
                }
            }
            LinearWeight::CpuFp32(weight) => self.mkl_forward(x, weight),
            LinearWeight::Int8(weight) => weight.matmul(x, self.bias.as_ref()),
        }
    }

    /// `x W^T + b` through MKL: [`few_rows_times`] up to [`FEW_ROWS`] rows.
    fn mkl_forward(&self, x: &Tensor, weight: &Tensor) -> Tensor {
        let mut shape = x.size();
        let rows = x.reshape([-1, weight.size()[1]]);
        if rows.size()[0] > FEW_ROWS {
            return x.linear(weight, self.bias.as_ref());
        }
        let mut out = few_rows_times(&rows, weight);
        if let Some(bias) = &self.bias {
            out += bias;
        }
        *shape.last_mut().expect("a linear layer's input has dimensions") = weight.size()[0];
        out.view(shape.as_slice())
    }
}

/// Up to this many rows, [`few_rows_times`] beats `x W^T` on CPU (measured on a 2-core AMD EPYC
/// with libtorch 2.11's MKL: 1.5-2.9x at 1 to 7 rows, 1.4x at 16 to 48, 1.1x at 256, 0.94x at
/// 1024, over BART-large's layer shapes).
const FEW_ROWS: i64 = 256;

/// `rows W^T` as `(W rows^T)^T`: MKL's fp32 GEMM then streams the large weight `[out, in]` once
/// and packs only the few rows, where `rows W^T` repacks the whole weight at every call (GPT-2's
/// and BART's decode steps spent a third of their time copying weights that way). One row is
/// padded to two: MKL's matrix-vector path reads the weight at two thirds of the GEMM's speed.
fn few_rows_times(rows: &Tensor, weight: &Tensor) -> Tensor {
    let count = rows.size()[0];
    let operand =
        if count == 1 { Tensor::cat(&[rows, &rows.zeros_like()], 0) } else { rows.shallow_clone() };
    weight.mm(&operand.tr()).tr().narrow(0, 0, count).contiguous()
}

#[derive(Debug)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn load(w: &Weights, name: &str, size: i64, eps: f64) -> Result<Self, WeightsError> {
        Ok(Self {
            weight: w.get(&format!("{name}.weight"), &[size])?,
            bias: w.get(&format!("{name}.bias"), &[size])?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let size = *x.size().last().expect("layer norm over a tensor with dimensions");
        x.layer_norm([size], Some(&self.weight), Some(&self.bias), self.eps, false)
    }
}

#[derive(Debug)]
pub struct Embedding {
    pub weight: Tensor,
}

impl Embedding {
    pub fn load(w: &Weights, name: &str, count: i64, size: i64) -> Result<Self, WeightsError> {
        Ok(Self { weight: w.get(&format!("{name}.weight"), &[count, size])? })
    }

    pub fn forward(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.weight, ids, -1, false, false)
    }
}

/// The activations transformers' ACT2FN maps `hidden_act` to, for the ones encoders use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Activation {
    #[serde(rename = "gelu")]
    Gelu,
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
    #[serde(rename = "relu")]
    Relu,
    #[serde(rename = "silu", alias = "swish")]
    Silu,
    #[serde(rename = "tanh")]
    Tanh,
}

impl Activation {
    pub fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Activation::Gelu => x.gelu("none"),
            Activation::GeluTanh => x.gelu("tanh"),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
            Activation::Tanh => x.tanh(),
        }
    }
}

/// Dimensions of one transformer layer.
#[derive(Debug, Clone, Copy)]
pub struct LayerShape {
    pub hidden: i64,
    pub heads: i64,
    pub intermediate: i64,
    pub eps: f64,
    pub activation: Activation,
}

/// Where one layer's tensors live in a checkpoint (each a prefix of `.weight`/`.bias`).
pub struct LayerNames {
    pub query: String,
    pub key: String,
    pub value: String,
    pub attention_out: String,
    pub attention_norm: String,
    pub ffn_in: String,
    pub ffn_out: String,
    pub output_norm: String,
}

impl LayerNames {
    /// Names under `prefix`, given each one's suffix in field order: query, key, value,
    /// attention output, attention norm, feed-forward in, feed-forward out, output norm.
    pub fn under(prefix: &str, suffixes: [&str; 8]) -> Self {
        let [query, key, value, attention_out, attention_norm, ffn_in, ffn_out, output_norm] =
            suffixes.map(|suffix| format!("{prefix}.{suffix}"));
        Self { query, key, value, attention_out, attention_norm, ffn_in, ffn_out, output_norm }
    }

    /// BERT's names, shared by RoBERTa and ELECTRA: `{prefix}.attention.self.query`, ...
    pub fn bert(prefix: &str) -> Self {
        Self::under(
            prefix,
            [
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
                "attention.output.dense",
                "attention.output.LayerNorm",
                "intermediate.dense",
                "output.dense",
                "output.LayerNorm",
            ],
        )
    }

    /// DistilBERT's: `{prefix}.attention.q_lin`, ...
    pub fn distilbert(prefix: &str) -> Self {
        Self::under(
            prefix,
            [
                "attention.q_lin",
                "attention.k_lin",
                "attention.v_lin",
                "attention.out_lin",
                "sa_layer_norm",
                "ffn.lin1",
                "ffn.lin2",
                "output_layer_norm",
            ],
        )
    }

    /// ALBERT's: `{prefix}.attention.query`, ..., `{prefix}.full_layer_layer_norm`.
    pub fn albert(prefix: &str) -> Self {
        Self::under(
            prefix,
            [
                "attention.query",
                "attention.key",
                "attention.value",
                "attention.dense",
                "attention.LayerNorm",
                "ffn",
                "ffn_output",
                "full_layer_layer_norm",
            ],
        )
    }
}

/// Self-attention then feed-forward, each with residual and post-LayerNorm.
#[derive(Debug)]
pub struct TransformerLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    output_norm: LayerNorm,
    heads: i64,
    activation: Activation,
}

impl TransformerLayer {
    pub fn load(w: &Weights, names: &LayerNames, shape: LayerShape) -> Result<Self, WeightsError> {
        let LayerShape { hidden, intermediate, eps, .. } = shape;
        Ok(Self {
            query: Linear::load(w, &names.query, hidden, hidden)?,
            key: Linear::load(w, &names.key, hidden, hidden)?,
            value: Linear::load(w, &names.value, hidden, hidden)?,
            attention_out: Linear::load(w, &names.attention_out, hidden, hidden)?,
            attention_norm: LayerNorm::load(w, &names.attention_norm, hidden, eps)?,
            ffn_in: Linear::load(w, &names.ffn_in, hidden, intermediate)?,
            ffn_out: Linear::load(w, &names.ffn_out, intermediate, hidden)?,
            output_norm: LayerNorm::load(w, &names.output_norm, hidden, eps)?,
            heads: shape.heads,
            activation: shape.activation,
        })
    }

    /// `x`: `[batch, seq, hidden]`; `mask_bias`: `[batch, 1, 1, seq]`, 0 where attended and the
    /// dtype's minimum where padded (see [`attention_bias`]).
    pub fn forward(&self, x: &Tensor, mask_bias: &Tensor) -> Tensor {
        let attended = self.attention(x, mask_bias);
        let x = self.attention_norm.forward(&(self.attention_out.forward(&attended) + x));
        let inner = self.activation.forward(&self.ffn_in.forward(&x));
        self.output_norm.forward(&(self.ffn_out.forward(&inner) + x))
    }

    fn attention(&self, x: &Tensor, mask_bias: &Tensor) -> Tensor {
        let (batch, seq, hidden) = x.size3().expect("[batch, seq, hidden]");
        let head_size = hidden / self.heads;
        let split = |t: Tensor| t.view([batch, seq, self.heads, head_size]).transpose(1, 2);
        let q = split(self.query.forward(x));
        let k = split(self.key.forward(x));
        let v = split(self.value.forward(x));
        // softmax(q k^T / sqrt(d) + mask) v in libtorch's fused kernel, as transformers' sdpa path.
        let attended = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            Some(mask_bias),
            0.0,
            false,
            None,
            false,
        );
        attended.transpose(1, 2).contiguous().view([batch, seq, hidden])
    }
}

/// The additive attention mask transformers builds: `(1 - mask) * finfo(dtype).min`, shaped
/// `[batch, 1, 1, seq]`.
pub fn attention_bias(attention_mask: &Tensor, kind: tch::Kind) -> Tensor {
    let inverted = attention_mask.to_kind(kind).neg() + 1.0;
    (inverted * dtype_min(kind)).unsqueeze(1).unsqueeze(1)
}

/// `torch.finfo(kind).min`: the most negative finite value, which transformers puts where
/// attention must not look. f32's would overflow a bf16 or fp16 tensor.
pub fn dtype_min(kind: tch::Kind) -> f64 {
    match kind {
        tch::Kind::Half => -65504.0,
        tch::Kind::BFloat16 => -3.3895313892515355e38,
        tch::Kind::Double => f64::MIN,
        _ => f64::from(f32::MIN),
    }
}
