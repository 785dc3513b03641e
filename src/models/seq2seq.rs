//! What an encoder-decoder model (BART, T5) offers generation: run the encoder once, then the
//! decoder one step at a time over a self-attention cache per row and a cross-attention cache
//! per input, filled on the first step and shared by that input's beams ([`CrossRows`]): a
//! beam step moves none of it, and a step reads each input's keys and values once, not once per
//! beam. [`Seq2SeqStep`] adapts any of them to the generation loop.

use tch::{Kind, Tensor};

use super::{kv_cache::KvCache, layers::dtype_min};
use crate::generation::{DecoderStep, PadSide, RowState, append_padded};

/// Self- and cross-attention caches of one decoder.
pub struct DecoderCache {
    /// `[rows, heads, past, head_dim]` per layer.
    pub self_attention: KvCache,
    /// `[inputs, heads, source, head_dim]` per layer, read by rows as `cross_rows` says.
    pub cross_attention: KvCache,
    pub cross_rows: CrossRows,
}

impl DecoderCache {
    /// A cache for `rows` rows, one per input.
    pub fn new(layers: usize, rows: i64, device: tch::Device) -> Self {
        let sources: Vec<i64> = (0..rows).collect();
        Self {
            self_attention: KvCache::new(layers),
            cross_attention: KvCache::new(layers),
            cross_rows: CrossRows::new(&sources, rows, device),
        }
    }
}

/// Where each decoder row's input sits for cross-attention: the encoder output and the
/// cross-attention keys and values are stored once per input, `[inputs, ...]`, and the rows
/// (an input's beams, or its one row) attend to their input's copy. Cross-attention has no
/// causal mask and no position bias, so a row's queries can be laid out along its input's
/// query axis: `[rows, new, hidden]` becomes `[inputs, per_input * new, hidden]`, attention
/// reads each input's keys once for all its beams, and the result is laid back out per row.
pub struct CrossRows {
    inputs: i64,
    per_input: i64,
    /// Each row's place in the `[inputs * per_input]` layout; `None` when rows already are
    /// in that order (every input has `per_input` rows, in input order): a view then.
    slots: Option<Tensor>,
}

impl CrossRows {
    /// `sources[row]` is the input (`0..inputs`) that row decodes; every input has a row.
    pub fn new(sources: &[i64], inputs: i64, device: tch::Device) -> Self {
        let mut counts = vec![0i64; inputs as usize];
        let mut slots = Vec::with_capacity(sources.len());
        for &source in sources {
            slots.push(counts[source as usize]);
            counts[source as usize] += 1;
        }
        let per_input = counts.iter().copied().max().unwrap_or(0);
        for (slot, &source) in slots.iter_mut().zip(sources) {
            *slot += source * per_input;
        }
        let in_order = slots.iter().enumerate().all(|(row, &slot)| slot == row as i64)
            && sources.len() as i64 == inputs * per_input;
        let slots = (!in_order).then(|| Tensor::from_slice(&slots).to_device(device));
        Self { inputs, per_input, slots }
    }

    /// `[rows, new, hidden]` rows laid out by input: `[inputs, per_input * new, hidden]`, the
    /// places of inputs with fewer rows filled with zeros (their outputs are dropped).
    pub fn group(&self, rows: &Tensor) -> Tensor {
        let (_, new, hidden) = rows.size3().expect("[rows, new, hidden]");
        let laid_out = match &self.slots {
            None => rows.shallow_clone(),
            Some(slots) => Tensor::zeros(
                [self.inputs * self.per_input, new, hidden],
                (rows.kind(), rows.device()),
            )
            .index_copy(0, slots, rows),
        };
        laid_out.reshape([self.inputs, self.per_input * new, hidden])
    }

    /// The inverse of [`CrossRows::group`]: `[inputs, per_input * new, hidden]` back to rows.
    pub fn ungroup(&self, grouped: &Tensor) -> Tensor {
        let (_, width, hidden) = grouped.size3().expect("[inputs, per_input * new, hidden]");
        let new = width / self.per_input;
        let rows = grouped.reshape([self.inputs * self.per_input, new, hidden]);
        match &self.slots {
            None => rows,
            Some(slots) => rows.index_select(0, slots),
        }
    }
}

pub trait Seq2Seq {
    /// Encoder output `[batch, seq, hidden]` for right-padded `ids` with `mask` (1 = real).
    fn encode(&self, ids: &Tensor, mask: &Tensor) -> Tensor;
    /// Logits `[rows, new, vocab]` for decoder tokens `ids` `[rows, new]` following the cached
    /// ones, attending to `encoder_out` `[inputs, source, hidden]` where `encoder_mask`
    /// `[inputs, source]` is 1, each row to its input's as `cache.cross_rows` says. `decoder_mask`
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
    /// `[inputs, source, hidden]` and `[inputs, source]`: once per input, as the cross cache.
    encoder_out: Tensor,
    encoder_mask: Tensor,
    /// `[rows, past]`: 1 for real decoder tokens, 0 for padding.
    decoder_mask: Tensor,
    cache: DecoderCache,
    /// The input (index into the per-input state) each row decodes. A beam reorder keeps every
    /// row on its input, so it moves none of the per-input state; only the decoder's own cache
    /// and mask follow the beams. Inputs left without rows are dropped.
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
            cache: DecoderCache::new(model.decoder_layers(), rows, ids.device()),
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
        let picked =
            Vec::<i64>::try_from(rows.to_device(tch::Device::Cpu)).expect("row indices are int64");
        if picked.iter().enumerate().all(|(i, &row)| row == i as i64)
            && picked.len() == self.row_sources.len()
        {
            return; // every row stays where it is (a beam step that kept each beam's own)
        }
        self.decoder_mask = self.decoder_mask.index_select(0, rows);
        self.cache.self_attention.select_rows(rows);
        let mut sources: Vec<i64> =
            picked.iter().map(|&row| self.row_sources[row as usize]).collect();
        let inputs = self.encoder_out.size()[0];
        let mut renumbered = vec![-1i64; inputs as usize];
        for &source in &sources {
            renumbered[source as usize] = 0;
        }
        let kept: Vec<i64> = (0..inputs).filter(|&i| renumbered[i as usize] == 0).collect();
        for (new, &old) in kept.iter().enumerate() {
            renumbered[old as usize] = new as i64;
        }
        if kept.len() as i64 != inputs {
            // Some inputs have no row left: drop their encoder output and cross caches.
            let kept = Tensor::from_slice(&kept).to_device(self.encoder_out.device());
            self.encoder_out = self.encoder_out.index_select(0, &kept);
            self.encoder_mask = self.encoder_mask.index_select(0, &kept);
            self.cache.cross_attention.select_rows(&kept);
            for source in &mut sources {
                *source = renumbered[*source as usize];
            }
        }
        if sources != self.row_sources {
            self.cache.cross_rows =
                CrossRows::new(&sources, kept.len() as i64, self.encoder_out.device());
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
        let first = self.encoder_out.size()[0];
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
        self.cache.cross_rows = CrossRows::new(
            &self.row_sources,
            self.encoder_out.size()[0],
            self.encoder_out.device(),
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: i64) -> Tensor {
        Tensor::arange(n * 2 * 3, (Kind::Float, tch::Device::Cpu)).view([n, 2, 3])
    }

    #[test]
    fn rows_in_input_order_are_grouped_as_a_view() {
        let layout = CrossRows::new(&[0, 0, 1, 1], 2, tch::Device::Cpu);
        assert!(layout.slots.is_none());
        let grouped = layout.group(&rows(4));
        assert_eq!(grouped.size(), [2, 4, 3]);
        // Input 1's queries are rows 2 and 3, one after the other along its query axis.
        assert_eq!(grouped.get(1), rows(4).narrow(0, 2, 2).reshape([4, 3]));
        assert_eq!(layout.ungroup(&grouped), rows(4));
    }

    #[test]
    fn rows_out_of_order_or_uneven_come_back_in_their_own_order() {
        // Input 1 has one row, input 0 three, interleaved.
        let layout = CrossRows::new(&[0, 1, 0, 0], 2, tch::Device::Cpu);
        let grouped = layout.group(&rows(4));
        assert_eq!(grouped.size(), [2, 6, 3]);
        let input1 = grouped.get(1).view([3, 2, 3]);
        assert_eq!(input1.get(0), rows(4).get(1));
        assert_eq!(input1.get(1), Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu)));
        assert_eq!(layout.ungroup(&grouped), rows(4));
    }
}
