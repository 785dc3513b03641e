//! What an encoder-decoder model (BART, T5) offers generation: run the encoder once, then the
//! decoder one step at a time over a self-attention cache and a cross-attention cache that is
//! filled on the first step and only reordered after. [`Seq2SeqStep`] adapts any of them to the
//! generation loop.

use tch::{Kind, Tensor};

use super::kv_cache::KvCache;
use crate::generation::DecoderStep;

/// Self- and cross-attention caches of one decoder.
pub struct DecoderCache {
    pub self_attention: KvCache,
    pub cross_attention: KvCache,
}

impl DecoderCache {
    pub fn new(layers: usize) -> Self {
        Self { self_attention: KvCache::new(layers), cross_attention: KvCache::new(layers) }
    }

    pub fn select_rows(&mut self, rows: &Tensor) {
        self.self_attention.select_rows(rows);
        self.cross_attention.select_rows(rows);
    }
}

pub trait Seq2Seq {
    /// Encoder output `[batch, seq, hidden]` for right-padded `ids` with `mask` (1 = real).
    fn encode(&self, ids: &Tensor, mask: &Tensor) -> Tensor;
    /// Logits `[rows, new, vocab]` for decoder tokens `ids` `[rows, new]` following the cached
    /// ones, attending to `encoder_out` where `encoder_mask` is 1.
    fn decode(
        &self,
        ids: &Tensor,
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
    cache: DecoderCache,
}

impl<'a> Seq2SeqStep<'a> {
    /// Runs the encoder over the batch.
    pub fn new(model: &'a dyn Seq2Seq, ids: &Tensor, mask: &Tensor) -> Self {
        let _no_grad = tch::no_grad_guard();
        let encoder_out = model.encode(ids, mask);
        Self {
            model,
            encoder_out,
            encoder_mask: mask.to_kind(Kind::Int64),
            cache: DecoderCache::new(model.decoder_layers()),
        }
    }
}

impl DecoderStep for Seq2SeqStep<'_> {
    fn step(&mut self, tokens: &Tensor) -> Tensor {
        let _no_grad = tch::no_grad_guard();
        let logits =
            self.model.decode(tokens, &self.encoder_out, &self.encoder_mask, &mut self.cache);
        logits.select(1, tokens.size()[1] - 1).to_kind(Kind::Float)
    }

    fn select_rows(&mut self, rows: &Tensor) {
        self.encoder_out = self.encoder_out.index_select(0, rows);
        self.encoder_mask = self.encoder_mask.index_select(0, rows);
        self.cache.select_rows(rows);
    }
}

/// `[1, 1, new, past + new]` additive causal bias for `new` queries after `past` cached keys.
pub fn causal_bias(past: i64, new: i64, kind: Kind, device: tch::Device) -> Tensor {
    let query = Tensor::arange(new, (Kind::Int64, device)).unsqueeze(1) + past;
    let key = Tensor::arange(past + new, (Kind::Int64, device)).unsqueeze(0);
    let future = key.gt_tensor(&query).to_kind(kind);
    (future * f64::from(f32::MIN)).unsqueeze(0).unsqueeze(0)
}
