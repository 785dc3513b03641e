//! RoBERTa (Liu et al., 2019, <https://arxiv.org/abs/1907.11692>), as transformers'
//! `models/roberta/modeling_roberta.py`: BERT's encoder with position ids that start after
//! `padding_idx` (so padding never shifts a token's position), a masked-LM head that always uses
//! gelu, and a classification head of its own on the `<s>` token.

use super::{
    ModelError,
    bert::{Bert, BertBackbone, BertConfig, Positions, common_head, tied_decoder},
    heads::{Head, HeadKind},
    layers::{Activation, LayerNorm, Linear},
    weights::Weights,
};

/// Loads a Roberta checkpoint into the shared BERT-family model.
pub struct Roberta;

impl Roberta {
    pub fn load(
        w: &Weights,
        cfg: &BertConfig,
        kind: HeadKind,
        labels: i64,
    ) -> Result<Bert, ModelError> {
        cfg.check_supported()?;
        let padding_idx = cfg.pad_token_id.unwrap_or(1);
        let prefix = w.base_prefix(&["roberta."], "embeddings.word_embeddings.weight");
        let positions = Positions::AfterPadding { padding_idx };
        let backbone = BertBackbone::load(w, cfg, &prefix, positions, None)?;
        let hidden = cfg.hidden_size;
        let head = match kind {
            HeadKind::MaskedLm => Head::MaskedLm {
                dense: Linear::load(w, "lm_head.dense", hidden, hidden)?,
                activation: Activation::Gelu,
                norm: LayerNorm::load(w, "lm_head.layer_norm", hidden, cfg.layer_norm_eps)?,
                decoder: tied_decoder(
                    w,
                    "lm_head.decoder.weight",
                    "lm_head.bias",
                    backbone.word_embeddings(),
                    [cfg.vocab_size, hidden],
                )?,
            },
            HeadKind::SequenceClassification => Head::SequenceClassification {
                dense: Linear::load(w, "classifier.dense", hidden, hidden)?,
                activation: Activation::Tanh,
                classifier: Linear::load(w, "classifier.out_proj", hidden, labels)?,
            },
            other => common_head(w, other, hidden, labels)?,
        };
        Ok(Bert::from_parts(backbone, head))
    }
}
