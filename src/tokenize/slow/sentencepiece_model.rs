//! The few fields of SentencePiece's `ModelProto` that transformers' converters read.
//!
//! Hand-written `prost` messages rather than generated code: the converters need the pieces
//! (text, score, type), four trainer settings and the precompiled normalizer charsmap, nothing
//! more, and prost skips every field it is not told about. Field numbers and proto2 defaults are
//! those of sentencepiece_model.proto (as shipped in `sentencepiece_model_pb2.py`).

use prost::Message;

/// `ModelProto.SentencePiece.Type`.
pub(crate) const PIECE_UNKNOWN: i32 = 2;
pub(crate) const PIECE_CONTROL: i32 = 3;
pub(crate) const PIECE_USER_DEFINED: i32 = 4;

/// `TrainerSpec.ModelType`.
pub(crate) const MODEL_UNIGRAM: i32 = 1;
pub(crate) const MODEL_BPE: i32 = 2;

#[derive(Clone, PartialEq, Message)]
pub(crate) struct ModelProto {
    #[prost(message, repeated, tag = "1")]
    pub pieces: Vec<SentencePiece>,
    #[prost(message, optional, tag = "2")]
    pub trainer_spec: Option<TrainerSpec>,
    #[prost(message, optional, tag = "3")]
    pub normalizer_spec: Option<NormalizerSpec>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct SentencePiece {
    #[prost(string, optional, tag = "1")]
    pub piece: Option<String>,
    #[prost(float, optional, tag = "2")]
    pub score: Option<f32>,
    /// An enum on the wire, a varint like int32; NORMAL (1) when absent.
    #[prost(int32, optional, tag = "3", default = "1")]
    pub r#type: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct TrainerSpec {
    /// UNIGRAM (1) when absent.
    #[prost(int32, optional, tag = "3", default = "1")]
    pub model_type: Option<i32>,
    #[prost(bool, optional, tag = "35")]
    pub byte_fallback: Option<bool>,
    #[prost(int32, optional, tag = "40")]
    pub unk_id: Option<i32>,
    #[prost(string, optional, tag = "45", default = "<unk>")]
    pub unk_piece: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct NormalizerSpec {
    #[prost(bytes = "vec", optional, tag = "2")]
    pub precompiled_charsmap: Option<Vec<u8>>,
}

impl ModelProto {
    /// The trainer settings; `decode` refuses a model without them.
    pub(crate) fn trainer(&self) -> TrainerSpec {
        self.trainer_spec.clone().unwrap_or_default()
    }

    pub(crate) fn precompiled_charsmap(&self) -> &[u8] {
        self.normalizer_spec
            .as_ref()
            .and_then(|n| n.precompiled_charsmap.as_deref())
            .unwrap_or_default()
    }
}

/// Decodes a model file and checks what SentencePiece itself checks when it loads one, so a
/// truncated file that happens to end on a field boundary is refused too; the error is the
/// reason, for the caller to pair with the path.
pub(crate) fn decode(bytes: &[u8]) -> Result<ModelProto, String> {
    let proto = ModelProto::decode(bytes).map_err(|e| e.to_string())?;
    if proto.pieces.is_empty() {
        return Err("it has no pieces".into());
    }
    if proto.trainer_spec.is_none() {
        return Err("it has no trainer_spec".into());
    }
    if proto.normalizer_spec.is_none() {
        return Err("it has no normalizer_spec".into());
    }
    // As SentencePiece's InitializePieces: one id per piece, one unknown piece (a vocabulary
    // with a piece twice would give ids past its size).
    let mut seen = std::collections::HashSet::with_capacity(proto.pieces.len());
    for (id, piece) in proto.pieces.iter().enumerate() {
        let text = piece.piece.as_deref().unwrap_or_default();
        if text.is_empty() {
            return Err(format!("piece {id} is empty"));
        }
        if !seen.insert(text) {
            return Err(format!("piece {id}, `{text}`, is already defined"));
        }
    }
    match proto.pieces.iter().filter(|p| p.r#type() == PIECE_UNKNOWN).count() {
        0 => return Err("it has no unknown piece".into()),
        1 => {}
        _ => return Err("it has more than one unknown piece".into()),
    }
    Ok(proto)
}
