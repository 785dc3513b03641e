//! BERT (Devlin et al., 2018, <https://arxiv.org/abs/1810.04805>), as transformers'
//! `models/bert/modeling_bert.py` computes it. Its embeddings and encoder are also RoBERTa's and
//! ELECTRA's (see roberta.rs and electra.rs), which differ only in position ids, an embedding
//! projection and their heads.

use serde::Deserialize;
use tch::Tensor;

use super::{
    Encoder, EncoderInput, ModelError,
    heads::{Head, HeadKind},
    layers::{
        Activation, Embedding, LayerNames, LayerNorm, LayerShape, Linear, TransformerLayer,
        attention_bias,
    },
    weights::{Weights, WeightsError},
};

/// The config.json fields BERT reads.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: usize,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    pub hidden_act: Activation,
    pub max_position_embeddings: i64,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: i64,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
    /// ELECTRA's and ALBERT's factorised embedding width; BERT's is the hidden size.
    #[serde(default)]
    pub embedding_size: Option<i64>,
}

fn default_type_vocab_size() -> i64 {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_position_embedding_type() -> String {
    "absolute".into()
}

impl BertConfig {
    pub fn shape(&self) -> LayerShape {
        LayerShape {
            hidden: self.hidden_size,
            heads: self.num_attention_heads,
            intermediate: self.intermediate_size,
            eps: self.layer_norm_eps,
            activation: self.hidden_act,
        }
    }

    pub fn check_supported(&self) -> Result<(), ModelError> {
        if self.position_embedding_type != "absolute" {
            return Err(ModelError::Unsupported(format!(
                "position_embedding_type `{}` (only `absolute` is supported)",
                self.position_embedding_type
            )));
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(ModelError::Config(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        Ok(())
    }
}

/// How position ids are made from the input.
#[derive(Debug, Clone, Copy)]
pub enum Positions {
    /// 0, 1, 2, ... (BERT, ELECTRA).
    FromZero,
    /// RoBERTa's: non-padding tokens count up from `padding_idx + 1`; padding gets `padding_idx`.
    AfterPadding { padding_idx: i64 },
}

/// Word + position + token type embeddings, LayerNorm, and for ELECTRA a projection to the
/// hidden size, then the stack of transformer layers.
#[derive(Debug)]
pub struct BertBackbone {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
    projection: Option<Linear>,
    layers: Vec<TransformerLayer>,
    positions: Positions,
}

impl BertBackbone {
    /// `prefix` is where the base model lives in the checkpoint: "bert." for a head checkpoint,
    /// "" for a bare one. `projection` names ELECTRA's `embeddings_project`, when present.
    pub fn load(
        w: &Weights,
        cfg: &BertConfig,
        prefix: &str,
        positions: Positions,
        projection: Option<&str>,
    ) -> Result<Self, WeightsError> {
        let width = cfg.embedding_size.unwrap_or(cfg.hidden_size);
        let emb = format!("{prefix}embeddings");
        let projection = match projection {
            Some(name) => {
                Some(Linear::load(w, &format!("{prefix}{name}"), width, cfg.hidden_size)?)
            }
            None => None,
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let names = LayerNames::bert(&format!("{prefix}encoder.layer.{i}"));
                TransformerLayer::load(w, &names, cfg.shape())
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            word: Embedding::load(w, &format!("{emb}.word_embeddings"), cfg.vocab_size, width)?,
            position: Embedding::load(
                w,
                &format!("{emb}.position_embeddings"),
                cfg.max_position_embeddings,
                width,
            )?,
            token_type: Embedding::load(
                w,
                &format!("{emb}.token_type_embeddings"),
                cfg.type_vocab_size,
                width,
            )?,
            norm: LayerNorm::load(w, &format!("{emb}.LayerNorm"), width, cfg.layer_norm_eps)?,
            projection,
            layers,
            positions,
        })
    }

    /// The word embedding matrix, which masked-LM decoders tie to.
    pub fn word_embeddings(&self) -> &Tensor {
        &self.word.weight
    }

    pub fn forward(&self, input: &EncoderInput) -> Tensor {
        let ids = &input.input_ids;
        let position_ids = match self.positions {
            Positions::FromZero => {
                let seq = ids.size()[1];
                Tensor::arange(seq, (tch::Kind::Int64, ids.device())).unsqueeze(0)
            }
            Positions::AfterPadding { padding_idx } => {
                let mask = ids.ne(padding_idx).to_kind(tch::Kind::Int64);
                mask.cumsum(1, tch::Kind::Int64) * &mask + padding_idx
            }
        };
        let token_types = match &input.token_type_ids {
            Some(types) => types.shallow_clone(),
            None => ids.zeros_like(),
        };
        let embedded = self.word.forward(ids)
            + self.token_type.forward(&token_types)
            + self.position.forward(&position_ids);
        let mut x = self.norm.forward(&embedded);
        if let Some(projection) = &self.projection {
            x = projection.forward(&x);
        }
        let bias = attention_bias(&input.attention_mask, x.kind());
        for layer in &self.layers {
            x = layer.forward(&x, &bias);
        }
        x
    }
}

/// A BERT-family checkpoint (BERT, RoBERTa, ELECTRA): backbone plus head.
pub struct Bert {
    backbone: BertBackbone,
    head: Head,
}

impl Bert {
    /// Pairs a loaded backbone with its head (RoBERTa's and ELECTRA's loaders build both).
    pub fn from_parts(backbone: BertBackbone, head: Head) -> Self {
        Self { backbone, head }
    }

    pub fn load(
        w: &Weights,
        cfg: &BertConfig,
        kind: HeadKind,
        labels: i64,
    ) -> Result<Self, ModelError> {
        cfg.check_supported()?;
        let prefix = w.base_prefix(&["bert."], "embeddings.word_embeddings.weight");
        let backbone = BertBackbone::load(w, cfg, &prefix, Positions::FromZero, None)?;
        let hidden = cfg.hidden_size;
        let head = match kind {
            HeadKind::MaskedLm => Head::MaskedLm {
                dense: Linear::load(w, "cls.predictions.transform.dense", hidden, hidden)?,
                activation: cfg.hidden_act,
                norm: LayerNorm::load(
                    w,
                    "cls.predictions.transform.LayerNorm",
                    hidden,
                    cfg.layer_norm_eps,
                )?,
                decoder: tied_decoder(
                    w,
                    "cls.predictions.decoder.weight",
                    "cls.predictions.bias",
                    backbone.word_embeddings(),
                    [cfg.vocab_size, hidden],
                )?,
            },
            HeadKind::SequenceClassification => Head::SequenceClassification {
                dense: Linear::load(w, &format!("{prefix}pooler.dense"), hidden, hidden)?,
                activation: Activation::Tanh,
                classifier: Linear::load(w, "classifier", hidden, labels)?,
            },
            other => common_head(w, other, hidden, labels)?,
        };
        Ok(Self { backbone, head })
    }
}

impl Encoder for Bert {
    fn hidden_states(&self, input: &EncoderInput) -> Tensor {
        self.backbone.forward(input)
    }

    fn head(&self) -> &Head {
        &self.head
    }
}

/// The heads every family stores under the same names: `qa_outputs` and `classifier`.
pub fn common_head(
    w: &Weights,
    kind: HeadKind,
    hidden: i64,
    labels: i64,
) -> Result<Head, WeightsError> {
    Ok(match kind {
        HeadKind::QuestionAnswering => {
            Head::QuestionAnswering { qa_outputs: Linear::load(w, "qa_outputs", hidden, 2)? }
        }
        HeadKind::TokenClassification => {
            Head::TokenClassification { classifier: Linear::load(w, "classifier", hidden, labels)? }
        }
        HeadKind::Base => Head::Base,
        HeadKind::MaskedLm | HeadKind::SequenceClassification => {
            unreachable!("each architecture loads its own masked-LM and classification heads")
        }
    })
}

/// A masked-LM decoder: its own weight when the checkpoint has one, else the word embeddings
/// (tied, as save_pretrained then stores them once); the bias is always stored.
pub fn tied_decoder(
    w: &Weights,
    weight_name: &str,
    bias_name: &str,
    word_embeddings: &Tensor,
    shape: [i64; 2],
) -> Result<Linear, WeightsError> {
    let bias = w.get(bias_name, &[shape[0]])?;
    Ok(match w.get_optional(weight_name, &shape)? {
        Some(weight) => Linear::new(w, weight, Some(bias)),
        None => Linear::tied(w, word_embeddings, Some(bias)),
    })
}
