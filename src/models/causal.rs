//! What decoder-only models (GPT-2, the Llama family) share: the causal attention mask over a
//! left-padded, growing KV cache, and the generation loop's step over any of them, so the
//! scheduler, beams and continuous batching are written once for all.

use tch::{Kind, Tensor};

use super::kv_cache::KvCache;
use crate::generation::{DecoderStep, PadSide, RowState, append_padded};

/// A decoder-only language model.
pub trait CausalLm {
    fn layers(&self) -> usize;

    /// The final (normed) hidden states `[batch, new, hidden]` for `ids` `[batch, new]` at
    /// `positions`, attending to the cached past and to itself. `key_mask` `[batch, past + new]`
    /// is 1 for real tokens, 0 for padding.
    fn forward(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        key_mask: &Tensor,
        cache: &mut KvCache,
    ) -> Tensor;

    /// Logits `[..., vocab]` of hidden states `[..., hidden]`. Apart from [`CausalLm::forward`]
    /// so that a prompt's step computes them at its last position only (as transformers'
    /// `generate` does with `logits_to_keep=1`): over a 50k-word vocabulary they are a third of
    /// a 100-token prefill's work.
    fn lm_head(&self, hidden: &Tensor) -> Tensor;
}

/// `[batch, 1, new, past + new]`: key `j` is visible to new query `i` when it is not padding and
/// not in the future. A fully masked row stays finite (uniform), never NaN.
pub fn allowed_keys(key_mask: &Tensor, new: i64) -> Tensor {
    let total = key_mask.size()[1];
    let past = total - new;
    let device = key_mask.device();
    let query_pos = Tensor::arange(new, (Kind::Int64, device)).unsqueeze(1) + past;
    let key_pos = Tensor::arange(total, (Kind::Int64, device)).unsqueeze(0);
    let causal = key_pos.le_tensor(&query_pos);
    let real = key_mask.ne(0).unsqueeze(1).unsqueeze(1);
    causal.unsqueeze(0).unsqueeze(0).logical_and(&real)
}

/// A decoder-only model driven by the generation loop: prompts left-padded, positions counted
/// over real tokens only (as transformers derives them from the attention mask), a growing KV
/// cache.
pub struct CausalStep<'a> {
    model: &'a dyn CausalLm,
    cache: KvCache,
    /// `[rows, past + new]`: 1 for real tokens, 0 for left padding.
    key_mask: Tensor,
    started: bool,
}

impl<'a> CausalStep<'a> {
    /// `attention_mask` `[batch, prompt]` marks the real (non-padding) prompt tokens.
    pub fn new(model: &'a dyn CausalLm, attention_mask: &Tensor) -> Self {
        Self {
            model,
            cache: KvCache::new(model.layers()),
            key_mask: attention_mask.to_kind(Kind::Int64),
            started: false,
        }
    }
}

impl CausalStep<'_> {
    /// Hidden states `[rows, new, hidden]` at every position fed, in the model's dtype.
    fn hidden(&mut self, tokens: &Tensor) -> Tensor {
        let (rows, new) = tokens.size2().expect("[rows, new]");
        if self.started {
            let ones = Tensor::ones([rows, new], (Kind::Int64, tokens.device()));
            self.key_mask = Tensor::cat(&[&self.key_mask, &ones], 1);
        }
        self.started = true;
        let total = self.key_mask.size()[1];
        let positions = (self.key_mask.cumsum(-1, Kind::Int64) - 1)
            .masked_fill(&self.key_mask.eq(0), 1)
            .narrow(1, total - new, new);
        self.model.forward(tokens, &positions, &self.key_mask, &mut self.cache)
    }
}

impl DecoderStep for CausalStep<'_> {
    fn step(&mut self, tokens: &Tensor) -> Tensor {
        let last = self.hidden(tokens).select(1, -1);
        self.model.lm_head(&last).to_kind(Kind::Float)
    }

    fn step_scoring(&mut self, tokens: &Tensor, scored: &Tensor) -> (Tensor, Option<Tensor>) {
        let hidden = self.hidden(tokens);
        let all = self.model.lm_head(&hidden.index_select(0, scored)).to_kind(Kind::Float);
        (self.model.lm_head(&hidden.select(1, -1)).to_kind(Kind::Float), Some(all))
    }

    fn select_rows(&mut self, rows: &Tensor) {
        self.cache.select_rows(rows);
        self.key_mask = self.key_mask.index_select(0, rows);
    }

    fn into_rows(self: Box<Self>) -> RowState {
        let mut state = RowState::default();
        state.parts.push((self.key_mask, 1, PadSide::Start));
        self.cache.into_rows(PadSide::Start, &mut state);
        state
    }

    fn append_rows(&mut self, other: RowState) {
        let mut parts = other.parts.into_iter();
        let (mask, dim, side) = parts.next().expect("a causal step's key mask");
        self.key_mask = append_padded(&self.key_mask, &mask, dim, side);
        self.cache.append_rows(&mut parts);
    }
}
