//! DistilBERT (Sanh et al., 2019, <https://arxiv.org/abs/1910.01108>), as transformers'
//! `models/distilbert/modeling_distilbert.py`: BERT's layer under other names, no token type
//! embeddings, LayerNorm eps fixed at 1e-12, and a ReLU `pre_classifier` on the first token.

use serde::Deserialize;
use tch::Tensor;

use super::{
    Encoder, EncoderInput, ModelError,
    bert::{common_head, tied_decoder},
    heads::{Head, HeadKind},
    layers::{
        Activation, Embedding, LayerNames, LayerNorm, LayerShape, Linear, TransformerLayer,
        attention_bias,
    },
    weights::Weights,
};

const EPS: f64 = 1e-12;

#[derive(Debug, Clone, Deserialize)]
pub struct DistilBertConfig {
    pub vocab_size: i64,
    pub dim: i64,
    pub n_layers: usize,
    pub n_heads: i64,
    pub hidden_dim: i64,
    pub activation: Activation,
    pub max_position_embeddings: i64,
    #[serde(default)]
    pub sinusoidal_pos_embds: bool,
}

pub struct DistilBert {
    word: Embedding,
    position: Embedding,
    norm: LayerNorm,
    layers: Vec<TransformerLayer>,
    head: Head,
}

impl DistilBert {
    pub fn load(
        w: &Weights,
        cfg: &DistilBertConfig,
        kind: HeadKind,
        labels: i64,
    ) -> Result<Self, ModelError> {
        if cfg.dim % cfg.n_heads != 0 {
            return Err(ModelError::Config(format!(
                "dim {} is not a multiple of n_heads {}",
                cfg.dim, cfg.n_heads
            )));
        }
        // Sinusoidal position embeddings are also stored as a weight, so they load like learned ones.
        let prefix = w.base_prefix(&["distilbert."], "embeddings.word_embeddings.weight");
        let shape = LayerShape {
            hidden: cfg.dim,
            heads: cfg.n_heads,
            intermediate: cfg.hidden_dim,
            eps: EPS,
            activation: cfg.activation,
        };
        let layers = (0..cfg.n_layers)
            .map(|i| {
                let at = format!("{prefix}transformer.layer.{i}");
                let names = LayerNames::distilbert(&at);
                TransformerLayer::load(w, &names, shape)
            })
            .collect::<Result<_, _>>()?;
        let word = Embedding::load(
            w,
            &format!("{prefix}embeddings.word_embeddings"),
            cfg.vocab_size,
            cfg.dim,
        )?;
        let dim = cfg.dim;
        let head = match kind {
            HeadKind::MaskedLm => Head::MaskedLm {
                dense: Linear::load(w, "vocab_transform", dim, dim)?,
                activation: cfg.activation,
                norm: LayerNorm::load(w, "vocab_layer_norm", dim, EPS)?,
                decoder: tied_decoder(
                    w,
                    "vocab_projector.weight",
                    "vocab_projector.bias",
                    &word.weight,
                    [cfg.vocab_size, dim],
                )?,
            },
            HeadKind::SequenceClassification => Head::SequenceClassification {
                dense: Linear::load(w, "pre_classifier", dim, dim)?,
                activation: Activation::Relu,
                classifier: Linear::load(w, "classifier", dim, labels)?,
            },
            other => common_head(w, other, dim, labels)?,
        };
        Ok(Self {
            word,
            position: Embedding::load(
                w,
                &format!("{prefix}embeddings.position_embeddings"),
                cfg.max_position_embeddings,
                dim,
            )?,
            norm: LayerNorm::load(w, &format!("{prefix}embeddings.LayerNorm"), dim, EPS)?,
            layers,
            head,
        })
    }
}

impl Encoder for DistilBert {
    fn hidden_states(&self, input: &EncoderInput) -> Tensor {
        let ids = &input.input_ids;
        let positions =
            Tensor::arange(ids.size()[1], (tch::Kind::Int64, ids.device())).unsqueeze(0);
        let mut x =
            self.norm.forward(&(self.word.forward(ids) + self.position.forward(&positions)));
        let bias = attention_bias(&input.attention_mask, x.kind());
        for layer in &self.layers {
            x = layer.forward(&x, &bias);
        }
        x
    }

    fn head(&self) -> &Head {
        &self.head
    }
}
