//! Keys and values of past positions, one pair per attention layer, `[batch, heads, seq, dim]`.
//! Generation reorders it after each beam step and prunes finished rows, so a scheduler can add
//! and remove rows between steps; cross-attention entries are computed once per input.

use tch::Tensor;

#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(layers: usize) -> Self {
        Self { layers: (0..layers).map(|_| None).collect() }
    }

    /// Appends this step's keys and values to layer `layer` and returns the whole history.
    pub fn append(&mut self, layer: usize, key: Tensor, value: Tensor) -> (Tensor, Tensor) {
        let entry = match self.layers[layer].take() {
            Some((k, v)) => (Tensor::cat(&[k, key], 2), Tensor::cat(&[v, value], 2)),
            None => (key, value),
        };
        let out = (entry.0.shallow_clone(), entry.1.shallow_clone());
        self.layers[layer] = Some(entry);
        out
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
            (keys.contiguous(), values.contiguous())
        });
        (entry.0.shallow_clone(), entry.1.shallow_clone())
    }

    /// Past positions stored (0 before the first step).
    pub fn seq_len(&self) -> i64 {
        self.layers.iter().flatten().next().map_or(0, |(k, _)| k.size()[2])
    }

    /// Keeps rows `rows` (a 1-D int64 tensor on the cache's device), in that order: beam
    /// reordering and pruning of finished rows are both this.
    pub fn select_rows(&mut self, rows: &Tensor) {
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.index_select(0, rows);
            *v = v.index_select(0, rows);
        }
    }

    /// Each layer's keys and values, as per-row state padded at `side` along the sequence axis.
    pub fn into_rows(
        self,
        side: crate::generation::PadSide,
        out: &mut crate::generation::RowState,
    ) {
        for (k, v) in self.layers.into_iter().flatten() {
            out.parts.push((k, 2, side));
            out.parts.push((v, 2, side));
        }
    }

    /// Appends the rows of another cache of the same model, taken with [`KvCache::into_rows`]
    /// (both caches must have run a step).
    pub fn append_rows(
        &mut self,
        parts: &mut impl Iterator<Item = (Tensor, i64, crate::generation::PadSide)>,
    ) {
        use crate::generation::append_padded;
        for (k, v) in self.layers.iter_mut().flatten() {
            let (Some((k2, dim, side)), Some((v2, _, _))) = (parts.next(), parts.next()) else {
                panic!("appended rows come from a cache of the same model");
            };
            *k = append_padded(k, &k2, dim, side);
            *v = append_padded(v, &v2, dim, side);
        }
    }

    pub fn clear(&mut self) {
        for layer in &mut self.layers {
            *layer = None;
        }
    }
}
