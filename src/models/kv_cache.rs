//! Keys and values of past positions, one pair per attention layer, `[batch, heads, seq, dim]`.
//! Generation reorders it after each beam step and prunes finished rows, so a scheduler can add
//! and remove rows between steps; cross-attention entries are computed once per input.
//!
//! Between reorders each layer's history lives in a buffer with room to spare along the
//! sequence axis: a step writes its keys and values in place after the history and attention
//! reads a view of the filled part, so a greedy step no longer copies the whole history (as
//! `cat` did: quadratic in the output length). The buffer doubles when full. A reorder (a beam
//! step, or pruning finished rows) gathers the history into exact, contiguous tensors, and the
//! step right after it appends with `cat`: under beam search, which reorders every step, the
//! cache stays the contiguous tensors it always was, since attention over the strided views of
//! a buffer measured 3-23% slower per beam step (DistilBART and T5, 4 beams) while writing in
//! place made greedy GPT-2 6-37% faster. Values are the same bits either way: only where they
//! are stored changes.

use tch::Tensor;

use crate::generation::{PadSide, RowState, append_padded};

/// Positions a new buffer holds at least, so short generations never grow theirs.
const MIN_CAPACITY: i64 = 64;

/// One layer's keys and values: positions `0..len` of `keys` and `values` hold the history.
#[derive(Debug)]
struct Entry {
    keys: Tensor,
    values: Tensor,
    len: i64,
    /// Rows were reordered since the last append: the history is exact and contiguous, and the
    /// next append concatenates rather than moving it into a larger buffer.
    reordered: bool,
}

impl Entry {
    /// An entry holding exactly `keys` and `values` (no room to spare).
    fn exact(keys: Tensor, values: Tensor) -> Self {
        let len = keys.size()[2];
        Self { keys, values, len, reordered: false }
    }

    fn view(&self) -> (Tensor, Tensor) {
        (self.keys.narrow(2, 0, self.len), self.values.narrow(2, 0, self.len))
    }

    fn capacity(&self) -> i64 {
        self.keys.size()[2]
    }

    /// Writes `key` and `value` `[rows, heads, new, dim]` after the history: in place when
    /// the buffers have room, by `cat` right after a reorder, else into buffers twice as large.
    fn append(&mut self, key: &Tensor, value: &Tensor) {
        let new = key.size()[2];
        if self.len + new > self.capacity() {
            let (keys, values) = self.view();
            if std::mem::take(&mut self.reordered) {
                *self =
                    Self::exact(Tensor::cat(&[&keys, key], 2), Tensor::cat(&[&values, value], 2));
                return;
            }
            let capacity = (self.len + new).max(2 * self.capacity()).max(MIN_CAPACITY);
            self.keys = buffer_like(&keys, capacity);
            self.values = buffer_like(&values, capacity);
            self.keys.narrow(2, 0, self.len).copy_(&keys);
            self.values.narrow(2, 0, self.len).copy_(&values);
        }
        self.keys.narrow(2, self.len, new).copy_(key);
        self.values.narrow(2, self.len, new).copy_(value);
        self.len += new;
    }

    /// Keeps rows `rows` of the history, gathered into exact, contiguous tensors.
    fn select_rows(&mut self, rows: &Tensor) {
        let (keys, values) = self.view();
        *self = Self::exact(keys.index_select(0, rows), values.index_select(0, rows));
        self.reordered = true;
    }
}

/// An uninitialised buffer shaped like `t` but holding `capacity` positions.
fn buffer_like(t: &Tensor, capacity: i64) -> Tensor {
    let mut shape = t.size();
    shape[2] = capacity;
    Tensor::empty(shape.as_slice(), (t.kind(), t.device()))
}

#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<Entry>>,
}

impl KvCache {
    pub fn new(layers: usize) -> Self {
        Self { layers: (0..layers).map(|_| None).collect() }
    }

    /// Appends this step's keys and values to layer `layer` and returns the whole history.
    pub fn append(&mut self, layer: usize, key: Tensor, value: Tensor) -> (Tensor, Tensor) {
        let entry = self.layers[layer].get_or_insert_with(|| {
            let capacity = key.size()[2].max(MIN_CAPACITY);
            let (keys, values) = (buffer_like(&key, capacity), buffer_like(&value, capacity));
            Entry { keys, values, len: 0, reordered: false }
        });
        entry.append(&key, &value);
        entry.view()
    }

    /// Keys and values stored once (cross-attention), computed by `make` the first time and
    /// kept contiguous: heads split off a projection are a transposed view, which `matmul`
    /// would copy whole at every later step (a third of a DistilBART beam step did that).
    pub fn get_or_insert(
        &mut self,
        layer: usize,
        make: impl FnOnce() -> (Tensor, Tensor),
    ) -> (Tensor, Tensor) {
        let entry = self.layers[layer].get_or_insert_with(|| {
            let (keys, values) = make();
            Entry::exact(keys.contiguous(), values.contiguous())
        });
        entry.view()
    }

    /// Past positions stored (0 before the first step).
    pub fn seq_len(&self) -> i64 {
        self.layers.iter().flatten().next().map_or(0, |entry| entry.len)
    }

    /// Keeps rows `rows` (a 1-D int64 tensor on the cache's device), in that order: beam
    /// reordering and pruning of finished rows are both this.
    pub fn select_rows(&mut self, rows: &Tensor) {
        for entry in self.layers.iter_mut().flatten() {
            entry.select_rows(rows);
        }
    }

    /// Each layer's keys and values, as per-row state padded at `side` along the sequence axis.
    pub fn into_rows(self, side: PadSide, out: &mut RowState) {
        for entry in self.layers.into_iter().flatten() {
            let (k, v) = entry.view();
            out.parts.push((k, 2, side));
            out.parts.push((v, 2, side));
        }
    }

    /// Appends the rows of another cache of the same model, taken with [`KvCache::into_rows`]
    /// (both caches must have run a step).
    pub fn append_rows(&mut self, parts: &mut impl Iterator<Item = (Tensor, i64, PadSide)>) {
        for entry in self.layers.iter_mut().flatten() {
            let (Some((k2, dim, side)), Some((v2, _, _))) = (parts.next(), parts.next()) else {
                panic!("appended rows come from a cache of the same model");
            };
            let (k, v) = entry.view();
            *entry =
                Entry::exact(append_padded(&k, &k2, dim, side), append_padded(&v, &v2, dim, side));
        }
    }

    pub fn clear(&mut self) {
        for layer in &mut self.layers {
            *layer = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, Tensor};

    use super::*;

    /// Keys and values `[rows, 2, new, 4]` whose every value differs, without the global RNG
    /// (other tests seed it).
    fn step(rows: i64, new: i64, seed: i64) -> (Tensor, Tensor) {
        let count = rows * 2 * new * 4;
        let values = |offset: i64| {
            let start = (2 * seed + offset) * count;
            Tensor::arange_start(start, start + count, (Kind::Float, Device::Cpu))
                .reshape([rows, 2, new, 4])
                * 0.37
        };
        (values(0), values(1))
    }

    /// The in-place cache against the plain one it replaced: `cat` every step, `index_select`
    /// every reorder. Prefill, growth past the first buffer, reorders (with repeats and fewer
    /// rows) and appends after them, all bit for bit.
    #[test]
    fn in_place_history_equals_concatenating_every_step() {
        let mut cache = KvCache::new(1);
        let (mut k_ref, mut v_ref) = step(3, 5, 0);
        let (k, v) = cache.append(0, k_ref.shallow_clone(), v_ref.shallow_clone());
        assert!(k.equal(&k_ref) && v.equal(&v_ref));
        let reorders: [&[i64]; 3] = [&[2, 0, 0], &[1, 1, 2], &[2, 0]];
        for i in 0..(2 * MIN_CAPACITY) {
            let rows = k_ref.size()[0];
            let (k_new, v_new) = step(rows, 1, i + 1);
            k_ref = Tensor::cat(&[&k_ref, &k_new], 2);
            v_ref = Tensor::cat(&[&v_ref, &v_new], 2);
            let (k, v) = cache.append(0, k_new, v_new);
            assert!(k.equal(&k_ref) && v.equal(&v_ref), "step {i}");
            assert_eq!(cache.seq_len(), k_ref.size()[2]);
            if i % 10 == 3 {
                let order = reorders[(i as usize / 10) % reorders.len()];
                let order: Vec<i64> = order.iter().map(|&r| r.min(rows - 1)).collect();
                let index = Tensor::from_slice(&order);
                cache.select_rows(&index);
                k_ref = k_ref.index_select(0, &index);
                v_ref = v_ref.index_select(0, &index);
            }
        }
        let mut state = RowState::default();
        cache.into_rows(PadSide::Start, &mut state);
        assert!(state.parts[0].0.equal(&k_ref) && state.parts[1].0.equal(&v_ref));
    }

    /// Beam search reorders every step: attention then always gets contiguous histories (the
    /// strided views of a buffer were slower there), and greedy steps between reorders write in
    /// place (a view of a larger buffer).
    #[test]
    fn reordered_histories_are_contiguous_and_greedy_ones_grow_in_place() {
        let mut cache = KvCache::new(1);
        let (k, v) = step(2, 3, 0);
        let _ = cache.append(0, k, v);
        for i in 0..5 {
            cache.select_rows(&Tensor::from_slice(&[1i64, 0]));
            let (k, v) = step(2, 1, i + 1);
            let (keys, values) = cache.append(0, k, v);
            assert!(keys.is_contiguous() && values.is_contiguous(), "beam step {i}");
        }
        let (k, v) = step(2, 1, 9);
        let (keys, _) = cache.append(0, k, v);
        assert!(!keys.is_contiguous(), "a greedy step after a reorder moves into a buffer");
        assert_eq!(cache.seq_len(), 3 + 5 + 1);
    }

    /// Rows appended from another cache (a request joining a running batch) continue in place.
    #[test]
    fn appended_rows_keep_growing_in_place() {
        let mut running = KvCache::new(1);
        let (k1, v1) = step(2, 7, 1);
        let _ = running.append(0, k1.shallow_clone(), v1.shallow_clone());
        let mut joining = KvCache::new(1);
        let (k2, v2) = step(1, 3, 2);
        let _ = joining.append(0, k2.shallow_clone(), v2.shallow_clone());
        let mut state = RowState::default();
        joining.into_rows(PadSide::Start, &mut state);
        running.append_rows(&mut state.parts.into_iter());
        let k_ref = append_padded(&k1, &k2, 2, PadSide::Start);
        let (k_new, v_new) = step(3, 1, 3);
        let (k, _) = running.append(0, k_new.shallow_clone(), v_new);
        assert!(k.equal(&Tensor::cat(&[&k_ref, &k_new], 2)));
        assert_eq!(running.seq_len(), 8);
    }
}
