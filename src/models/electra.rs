//! ELECTRA (Clark et al., 2020, <https://arxiv.org/abs/2003.10555>), as transformers'
//! `models/electra/modeling_electra.py`: BERT's encoder over embeddings of width
//! `embedding_size`, projected to the hidden size by `embeddings_project` when the two differ.
//! The generator's masked-LM head and the classification head both use gelu whatever
//! `hidden_act` says.

use super::{
    ModelError,
    bert::{Bert, BertBackbone, BertConfig, Positions, common_head, tied_decoder},
    heads::{Head, HeadKind},
    layers::{Activation, LayerNorm, Linear},
    weights::Weights,
};

/// Loads a Electra checkpoint into the shared BERT-family model.
pub struct Electra;

impl Electra {
    pub fn load(
        w: &Weights,
        cfg: &BertConfig,
        kind: HeadKind,
        labels: i64,
    ) -> Result<Bert, ModelError> {
        cfg.check_supported()?;
        let prefix = w.base_prefix(&["electra."], "embeddings.word_embeddings.weight");
        let width = cfg.embedding_size.unwrap_or(cfg.hidden_size);
        let projection = (width != cfg.hidden_size).then_some("embeddings_project");
        let backbone = BertBackbone::load(w, cfg, &prefix, Positions::FromZero, projection)?;
        let hidden = cfg.hidden_size;
        let head = match kind {
            HeadKind::MaskedLm => Head::MaskedLm {
                dense: Linear::load(w, "generator_predictions.dense", hidden, width)?,
                activation: Activation::Gelu,
                norm: LayerNorm::load(
                    w,
                    "generator_predictions.LayerNorm",
                    width,
                    cfg.layer_norm_eps,
                )?,
                decoder: tied_decoder(
                    w,
                    "generator_lm_head.weight",
                    "generator_lm_head.bias",
                    backbone.word_embeddings(),
                    [cfg.vocab_size, width],
                )?,
            },
            HeadKind::SequenceClassification => Head::SequenceClassification {
                dense: Linear::load(w, "classifier.dense", hidden, hidden)?,
                activation: Activation::Gelu,
                classifier: Linear::load(w, "classifier.out_proj", hidden, labels)?,
            },
            other => common_head(w, other, hidden, labels)?,
        };
        Ok(Bert::from_parts(backbone, head))
    }
}
