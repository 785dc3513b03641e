//! ALBERT (Lan et al., 2019, <https://arxiv.org/abs/1909.11942>), as transformers'
//! `models/albert/modeling_albert.py`: factorised embeddings (width `embedding_size`, mapped to
//! the hidden size by `embedding_hidden_mapping_in`) and layers shared across depth: layer `i`
//! runs group `i / (num_hidden_layers / num_hidden_groups)`, each group `inner_group_num` layers.

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

#[derive(Debug, Clone, Deserialize)]
pub struct AlbertConfig {
    pub vocab_size: i64,
    pub embedding_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: usize,
    #[serde(default = "one")]
    pub num_hidden_groups: usize,
    #[serde(default = "one")]
    pub inner_group_num: usize,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    pub hidden_act: Activation,
    pub max_position_embeddings: i64,
    #[serde(default = "two")]
    pub type_vocab_size: i64,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "absolute")]
    pub position_embedding_type: String,
}

fn one() -> usize {
    1
}
fn two() -> i64 {
    2
}
fn eps() -> f64 {
    1e-12
}
fn absolute() -> String {
    "absolute".into()
}

pub struct Albert {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
    mapping_in: Linear,
    groups: Vec<Vec<TransformerLayer>>,
    layer_count: usize,
    head: Head,
}

impl Albert {
    pub fn load(
        w: &Weights,
        cfg: &AlbertConfig,
        kind: HeadKind,
        labels: i64,
    ) -> Result<Self, ModelError> {
        if cfg.position_embedding_type != "absolute" {
            return Err(ModelError::Unsupported(format!(
                "position_embedding_type `{}` (only `absolute` is supported)",
                cfg.position_embedding_type
            )));
        }
        if cfg.num_hidden_groups == 0
            || !cfg.num_hidden_layers.is_multiple_of(cfg.num_hidden_groups)
            || cfg.hidden_size % cfg.num_attention_heads != 0
        {
            return Err(ModelError::Config(
                "num_hidden_layers must be a multiple of num_hidden_groups, and hidden_size of \
                 num_attention_heads"
                    .into(),
            ));
        }
        let p = w.base_prefix(&["albert."], "embeddings.word_embeddings.weight");
        let (e, h) = (cfg.embedding_size, cfg.hidden_size);
        let shape = LayerShape {
            hidden: h,
            heads: cfg.num_attention_heads,
            intermediate: cfg.intermediate_size,
            eps: cfg.layer_norm_eps,
            activation: cfg.hidden_act,
        };
        let groups = (0..cfg.num_hidden_groups)
            .map(|g| {
                (0..cfg.inner_group_num)
                    .map(|i| {
                        let at = format!("{p}encoder.albert_layer_groups.{g}.albert_layers.{i}");
                        let names = LayerNames::albert(&at);
                        TransformerLayer::load(w, &names, shape)
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<_, _>>()?;
        let word =
            Embedding::load(w, &format!("{p}embeddings.word_embeddings"), cfg.vocab_size, e)?;
        let head = match kind {
            HeadKind::MaskedLm => Head::MaskedLm {
                dense: Linear::load(w, "predictions.dense", h, e)?,
                activation: cfg.hidden_act,
                norm: LayerNorm::load(w, "predictions.LayerNorm", e, cfg.layer_norm_eps)?,
                decoder: tied_decoder(
                    w,
                    "predictions.decoder.weight",
                    "predictions.bias",
                    &word.weight,
                    [cfg.vocab_size, e],
                )?,
            },
            HeadKind::SequenceClassification => Head::SequenceClassification {
                dense: Linear::load(w, &format!("{p}pooler"), h, h)?,
                activation: Activation::Tanh,
                classifier: Linear::load(w, "classifier", h, labels)?,
            },
            other => common_head(w, other, h, labels)?,
        };
        Ok(Self {
            word,
            position: Embedding::load(
                w,
                &format!("{p}embeddings.position_embeddings"),
                cfg.max_position_embeddings,
                e,
            )?,
            token_type: Embedding::load(
                w,
                &format!("{p}embeddings.token_type_embeddings"),
                cfg.type_vocab_size,
                e,
            )?,
            norm: LayerNorm::load(w, &format!("{p}embeddings.LayerNorm"), e, cfg.layer_norm_eps)?,
            mapping_in: Linear::load(w, &format!("{p}encoder.embedding_hidden_mapping_in"), e, h)?,
            groups,
            layer_count: cfg.num_hidden_layers,
            head,
        })
    }
}

impl Encoder for Albert {
    fn hidden_states(&self, input: &EncoderInput) -> Tensor {
        let ids = &input.input_ids;
        let positions =
            Tensor::arange(ids.size()[1], (tch::Kind::Int64, ids.device())).unsqueeze(0);
        let token_types = match &input.token_type_ids {
            Some(types) => types.shallow_clone(),
            None => ids.zeros_like(),
        };
        let embedded = self.word.forward(ids)
            + self.token_type.forward(&token_types)
            + self.position.forward(&positions);
        let mut x = self.mapping_in.forward(&self.norm.forward(&embedded));
        let bias = attention_bias(&input.attention_mask, x.kind());
        let per_group = self.layer_count / self.groups.len();
        for i in 0..self.layer_count {
            for layer in &self.groups[i / per_group] {
                x = layer.forward(&x, &bias);
            }
        }
        x
    }

    fn head(&self) -> &Head {
        &self.head
    }
}
