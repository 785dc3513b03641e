//! Task heads over an encoder's hidden states. The five encoder families name their tensors
//! differently but compute the same few things, so each architecture file says where its tensors
//! are and this module does the arithmetic once.

use tch::Tensor;

use super::layers::{Activation, LayerNorm, Linear};

/// Which head a checkpoint carries, read from `architectures` in config.json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    MaskedLm,
    QuestionAnswering,
    SequenceClassification,
    TokenClassification,
    /// The bare encoder (`BertModel`, sentence-transformers checkpoints).
    Base,
}

impl HeadKind {
    /// From a class name such as `BertForQuestionAnswering`.
    pub fn from_class(class: &str) -> Option<Self> {
        [
            ("ForMaskedLM", HeadKind::MaskedLm),
            ("ForQuestionAnswering", HeadKind::QuestionAnswering),
            ("ForSequenceClassification", HeadKind::SequenceClassification),
            ("ForTokenClassification", HeadKind::TokenClassification),
            ("Model", HeadKind::Base),
        ]
        .into_iter()
        .find(|(suffix, _)| class.ends_with(suffix))
        .map(|(_, kind)| kind)
    }
}

/// A loaded head.
#[derive(Debug)]
pub enum Head {
    /// dense -> activation -> LayerNorm -> decoder (tied to the word embeddings where the
    /// checkpoint ties it). Output `[batch, seq, vocab]`.
    MaskedLm { dense: Linear, activation: Activation, norm: LayerNorm, decoder: Linear },
    /// Linear to (start, end). Output `[batch, seq, 2]`.
    QuestionAnswering { qa_outputs: Linear },
    /// First token -> dense -> activation -> classifier (BERT's pooler, RoBERTa's classification
    /// head and DistilBERT's pre_classifier are all this). Output `[batch, labels]`.
    SequenceClassification { dense: Linear, activation: Activation, classifier: Linear },
    /// Linear per token. Output `[batch, seq, labels]`.
    TokenClassification { classifier: Linear },
    /// The hidden states themselves, `[batch, seq, hidden]`.
    Base,
}

impl Head {
    pub fn kind(&self) -> HeadKind {
        match self {
            Head::MaskedLm { .. } => HeadKind::MaskedLm,
            Head::QuestionAnswering { .. } => HeadKind::QuestionAnswering,
            Head::SequenceClassification { .. } => HeadKind::SequenceClassification,
            Head::TokenClassification { .. } => HeadKind::TokenClassification,
            Head::Base => HeadKind::Base,
        }
    }

    pub fn forward(&self, hidden: &Tensor) -> Tensor {
        match self {
            Head::MaskedLm { dense, activation, norm, decoder } => {
                decoder.forward(&norm.forward(&activation.forward(&dense.forward(hidden))))
            }
            Head::QuestionAnswering { qa_outputs } => qa_outputs.forward(hidden),
            Head::SequenceClassification { dense, activation, classifier } => {
                let first = hidden.select(1, 0);
                classifier.forward(&activation.forward(&dense.forward(&first)))
            }
            Head::TokenClassification { classifier } => classifier.forward(hidden),
            Head::Base => hidden.shallow_clone(),
        }
    }
}
