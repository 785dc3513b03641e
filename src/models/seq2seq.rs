//! What an encoder-decoder model (BART, T5) offers generation: run the encoder once, then the
//! decoder one step at a time over a self-attention cache and a cross-attention cache that is
//! filled on the first step and reordered only when rows change inputs (never by a beam step).
//! [`Seq2SeqStep`] adapts any of them to the generation loop.

use tch::{Kind, Tensor};

use super::{kv_cache::KvCache, layers::dtype_min};
use crate::generation::{DecoderStep, PadSide, RowState, append_padded};

/// Self- and cross-attention caches of one decoder.
pub struct DecoderCache {
    pub self_attention: KvCache,
    pub cross_attention: KvCache,
}

impl DecoderCache {
    pub fn new(layers: usize) -> Self {
        Self { self_attention: KvCache::new(layers), cross_attention: KvCache::new(layers) }
    }
}

pub trait Seq2Seq {
    /// Encoder output `[batch, seq, hidden]` for right-padded `ids` with `mask` (1 = real).
    fn encode(&self, ids: &Tensor, mask: &Tensor) -> Tensor;
    /// Logits `[rows, new, vocab]` for decoder tokens `ids` `[rows, new]` following the cached
    /// ones, attending to `encoder_out` where `encoder_mask` is 1. `decoder_mask`
    /// `[rows, past + new]` is 1 for real decoder tokens and 0 for the left padding of a row that
    /// joined a running batch with a shorter history; positions count real tokens only.
    fn decode(
        &self,
        ids: &Tensor,
        decoder_mask: &Tensor,
        encoder_out: &Tensor,
        encoder_mask: &Tensor,
        cache: &mut DecoderCache,
    ) -> Tensor;
    fn decoder_layers(&self) -> usize;
}

/// An encoder-decoder model driven by the generation loop.
pub struct Seq2SeqStep<'a> {
    model: &'a dyn Seq2Seq,
    encoder_out: Tensor,
    encoder_mask: Tensor,
    /// `[rows, past]`: 1 for real decoder tokens, 0 for padding.
    decoder_mask: Tensor,
    cache: DecoderCache,
    /// The input whose encoder output (and mask and cross-attention keys and values) each row
    /// holds. The beams of one input hold the same, so a beam reorder, which keeps every row on
    /// its input, moves none of it: only the decoder's own cache and mask follow the beams.
    row_sources: Vec<i64>,
}

impl<'a> Seq2SeqStep<'a> {
    /// Runs the encoder over the batch.
    pub fn new(model: &'a dyn Seq2Seq, ids: &Tensor, mask: &Tensor) -> Self {
        let _no_grad = tch::no_grad_guard();
        let encoder_out = model.encode(ids, mask);
        let rows = ids.size()[0];
        Self {
            model,
            encoder_out,
            encoder_mask: mask.to_kind(Kind::Int64),
            decoder_mask: Tensor::zeros([rows, 0], (Kind::Int64, ids.device())),
            cache: DecoderCache::new(model.decoder_layers()),
            row_sources: (0..rows).collect(),
        }
    }
}

impl DecoderStep for Seq2SeqStep<'_> {
    fn step(&mut self, tokens: &Tensor) -> Tensor {
        let _no_grad = tch::no_grad_guard();
        let new = Tensor::ones(tokens.size().as_slice(), (Kind::Int64, tokens.device()));
        self.decoder_mask = Tensor::cat(&[&self.decoder_mask, &new], 1);
        let logits = self.model.decode(
            tokens,
            &self.decoder_mask,
            &self.encoder_out,
            &self.encoder_mask,
            &mut self.cache,
        );
        logits.select(1, tokens.size()[1] - 1).to_kind(Kind::Float)
    }

    fn select_rows(&mut self, rows: &Tensor) {
        self.decoder_mask = self.decoder_mask.index_select(0, rows);
        self.cache.self_attention.select_rows(rows);
        // Row i is to hold what row rows[i] holds; where that is already its own input's, the
        // per-input state stays where it is (a few indices read back, not megabytes copied).
        let picked =
            Vec::<i64>::try_from(rows.to_device(tch::Device::Cpu)).expect("row indices are int64");
        let sources: Vec<i64> = picked.iter().map(|&row| self.row_sources[row as usize]).collect();
        if sources != self.row_sources {
            self.encoder_out = self.encoder_out.index_select(0, rows);
            self.encoder_mask = self.encoder_mask.index_select(0, rows);
            self.cache.cross_attention.select_rows(rows);
            self.row_sources = sources;
        }
    }

    fn into_rows(self: Box<Self>) -> RowState {
        let mut state = RowState::default();
        let sources = Tensor::from_slice(&self.row_sources).view([-1, 1]);
        state.parts.push((sources, 1, PadSide::End));
        state.parts.push((self.encoder_out, 1, PadSide::End));
        state.parts.push((self.encoder_mask, 1, PadSide::End));
        state.parts.push((self.decoder_mask, 1, PadSide::Start));
        self.cache.self_attention.into_rows(PadSide::Start, &mut state);
        self.cache.cross_attention.into_rows(PadSide::End, &mut state);
        state
    }

    fn append_rows(&mut self, other: RowState) {
        let mut parts = other.parts.into_iter();
        let mut next = || parts.next().expect("rows of a step of the same model");
        // The joining rows' inputs are new ones: numbered after this step's.
        let (sources, ..) = next();
        let first = self.row_sources.iter().max().map_or(0, |last| last + 1);
        let sources = Vec::<i64>::try_from(sources.view([-1])).expect("int64 sources");
        self.row_sources.extend(sources.iter().map(|source| first + source));
        let (out, dim, side) = next();
        self.encoder_out = append_padded(&self.encoder_out, &out, dim, side);
        let (mask, dim, side) = next();
        self.encoder_mask = append_padded(&self.encoder_mask, &mask, dim, side);
        let (mask, dim, side) = next();
        self.decoder_mask = append_padded(&self.decoder_mask, &mask, dim, side);
        self.cache.self_attention.append_rows(&mut parts);
        self.cache.cross_attention.append_rows(&mut parts);
    }
}

/// `[1, 1, new, past + new]` additive causal bias for `new` queries after `past` cached keys.
fn causal_bias(past: i64, new: i64, kind: Kind, device: tch::Device) -> Tensor {
    let query = Tensor::arange(new, (Kind::Int64, device)).unsqueeze(1) + past;
    let key = Tensor::arange(past + new, (Kind::Int64, device)).unsqueeze(0);
    let future = key.gt_tensor(&query).to_kind(kind);
    (future * dtype_min(kind)).unsqueeze(0).unsqueeze(0)
}

/// `[rows, 1, new, past + new]`: the causal bias with the decoder's padded keys masked too.
pub fn decoder_self_bias(decoder_mask: &Tensor, new: i64, kind: Kind) -> Tensor {
    let total = decoder_mask.size()[1];
    let causal = causal_bias(total - new, new, kind, decoder_mask.device());
    let padding = decoder_mask.eq(0).to_kind(kind).unsqueeze(1).unsqueeze(1) * dtype_min(kind);
    // Both at once would overflow to -inf; either alone already zeroes the key's weight.
    (causal + padding).clamp_min(dtype_min(kind))
}

/// `[rows, new]` decoder positions counted over real tokens (0 for the first real one).
pub fn decoder_positions(decoder_mask: &Tensor, new: i64) -> Tensor {
    let total = decoder_mask.size()[1];
    (decoder_mask.cumsum(-1, Kind::Int64) - 1).clamp_min(0).narrow(1, total - new, new)
}
