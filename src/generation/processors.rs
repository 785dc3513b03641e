//! Logits processors, in the order transformers' `_get_logits_processor` (4.57) applies them and
//! with the same tensor operations, so that greedy and beam choices are token for token the same:
//! repetition penalty, no-repeat n-grams, bad words, min length, min new tokens, forced BOS,
//! forced EOS; then, when sampling, temperature, top-k, top-p and typical-p.

use tch::{Kind, Tensor};

use super::GenerateConfig;

/// The processors one generation call uses, built from its resolved config.
#[derive(Debug, Clone)]
pub struct Processors {
    repetition_penalty: Option<f64>,
    no_repeat_ngram_size: usize,
    /// Token sequences that must not be generated (sequences equal to `[eos]` dropped, as in
    /// transformers).
    bad_words: Vec<Vec<i64>>,
    min_length: usize,
    min_new_tokens: usize,
    prompt_len: usize,
    forced_bos: Option<i64>,
    forced_eos: Option<(Vec<i64>, usize)>,
    eos: Vec<i64>,
    temperature: Option<f64>,
    top_k: Option<i64>,
    top_p: Option<f64>,
    typical_p: Option<f64>,
    min_tokens_to_keep: i64,
}

impl Processors {
    /// `prompt_len` is the length of the sequences when generation starts (the prompt for a
    /// decoder-only model, the decoder start for an encoder-decoder one).
    pub fn new(config: &GenerateConfig, prompt_len: usize, max_length: usize) -> Self {
        let eos = config.eos_token_ids.clone();
        let sampling = config.do_sample;
        let min_tokens_to_keep =
            if config.num_beams > 1 { (eos.len().max(1) + 1) as i64 } else { 1 };
        Self {
            repetition_penalty: (config.repetition_penalty != 1.0)
                .then_some(config.repetition_penalty),
            no_repeat_ngram_size: config.no_repeat_ngram_size,
            bad_words: config
                .bad_words_ids
                .iter()
                .filter(|words| !(words.len() == 1 && eos.contains(&words[0])))
                .cloned()
                .collect(),
            min_length: if eos.is_empty() { 0 } else { config.min_length },
            min_new_tokens: if eos.is_empty() { 0 } else { config.min_new_tokens.unwrap_or(0) },
            prompt_len,
            forced_bos: config.forced_bos_token_id,
            forced_eos: config.forced_eos_token_id.clone().map(|ids| (ids, max_length)),
            eos,
            temperature: (sampling && config.temperature != 1.0).then_some(config.temperature),
            top_k: (sampling && config.top_k != 0).then(|| config.top_k.max(min_tokens_to_keep)),
            top_p: (sampling && config.top_p < 1.0).then_some(config.top_p),
            typical_p: (sampling && config.typical_p < 1.0).then_some(config.typical_p),
            min_tokens_to_keep,
        }
    }

    /// Applies every processor to `scores` `[rows, vocab]` for sequences `ids` `[rows, len]`.
    pub fn apply(&self, ids: &Tensor, scores: Tensor) -> Tensor {
        let mut scores = scores;
        let len = ids.size()[1] as usize;
        if let Some(penalty) = self.repetition_penalty {
            let score = scores.gather(1, ids, false);
            let score = (&score * penalty).where_self(&score.lt(0.0), &(&score / penalty));
            scores = scores.scatter(1, ids, &score);
        }
        if self.no_repeat_ngram_size > 0 {
            scores = self.ban_repeated_ngrams(ids, scores);
        }
        if !self.bad_words.is_empty() {
            scores = self.ban_bad_words(ids, scores);
        }
        if len < self.min_length {
            scores = ban_tokens(scores, &self.eos);
        }
        if len.saturating_sub(self.prompt_len) < self.min_new_tokens {
            scores = ban_tokens(scores, &self.eos);
        }
        if let Some(bos) = self.forced_bos
            && len == 1
        {
            scores = force_tokens(&scores, &[bos]);
        }
        if let Some((eos, max_length)) = &self.forced_eos
            && len + 1 == *max_length
        {
            scores = force_tokens(&scores, eos);
        }
        if let Some(temperature) = self.temperature {
            scores /= temperature;
        }
        if let Some(k) = self.top_k {
            let k = k.min(scores.size()[1]);
            let (values, _) = scores.topk(k, -1, true, true);
            let threshold = values.narrow(1, k - 1, 1);
            scores = scores.masked_fill(&scores.lt_tensor(&threshold), f64::NEG_INFINITY);
        }
        if let Some(top_p) = self.top_p {
            let (sorted, indices) = scores.sort(-1, false);
            let cumulative = sorted.softmax(-1, sorted.kind()).cumsum(-1, sorted.kind());
            let remove = cumulative.le(1.0 - top_p);
            let keep_from = remove.size()[1] - self.min_tokens_to_keep;
            let _ = remove.narrow(1, keep_from, self.min_tokens_to_keep).fill_(0);
            let remove = remove.scatter(1, &indices, &remove);
            scores = scores.masked_fill(&remove, f64::NEG_INFINITY);
        }
        if let Some(mass) = self.typical_p {
            scores = typical(&scores, mass, self.min_tokens_to_keep);
        }
        scores
    }

    fn ban_repeated_ngrams(&self, ids: &Tensor, scores: Tensor) -> Tensor {
        let n = self.no_repeat_ngram_size;
        let rows = rows_of(ids);
        let cur_len = rows.first().map_or(0, Vec::len);
        if cur_len + 1 < n {
            return scores;
        }
        let mut banned: Vec<(i64, i64)> = Vec::new();
        for (row, tokens) in rows.iter().enumerate() {
            let prefix = &tokens[cur_len + 1 - n..cur_len];
            for window in tokens.windows(n) {
                if &window[..n - 1] == prefix {
                    banned.push((row as i64, window[n - 1]));
                }
            }
        }
        mask_pairs(scores, &banned)
    }

    fn ban_bad_words(&self, ids: &Tensor, scores: Tensor) -> Tensor {
        let rows = rows_of(ids);
        let mut banned: Vec<(i64, i64)> = Vec::new();
        for (row, tokens) in rows.iter().enumerate() {
            for words in &self.bad_words {
                let (last, prefix) = words.split_last().expect("bad words are not empty");
                if prefix.len() > tokens.len() {
                    continue;
                }
                if tokens.ends_with(prefix) {
                    banned.push((row as i64, *last));
                }
            }
        }
        mask_pairs(scores, &banned)
    }
}

fn rows_of(ids: &Tensor) -> Vec<Vec<i64>> {
    let ids = ids.to_device(tch::Device::Cpu);
    let (rows, cols) = ids.size2().expect("[rows, len]");
    let flat = Vec::<i64>::try_from(ids.reshape([-1])).expect("int64 ids");
    (0..rows as usize).map(|r| flat[r * cols as usize..(r + 1) * cols as usize].to_vec()).collect()
}

fn mask_pairs(scores: Tensor, pairs: &[(i64, i64)]) -> Tensor {
    if pairs.is_empty() {
        return scores;
    }
    let device = scores.device();
    let rows = Tensor::from_slice(&pairs.iter().map(|p| p.0).collect::<Vec<_>>()).to_device(device);
    let cols = Tensor::from_slice(&pairs.iter().map(|p| p.1).collect::<Vec<_>>()).to_device(device);
    let mut scores = scores.copy();
    let value = Tensor::from(f64::NEG_INFINITY).to_kind(scores.kind()).to_device(device);
    let _ = scores.index_put_(&[Some(rows), Some(cols)], &value, false);
    scores
}

/// Sets every token in `tokens` to -inf.
fn ban_tokens(scores: Tensor, tokens: &[i64]) -> Tensor {
    let vocab = scores.size()[1];
    let index =
        Tensor::from_slice(&tokens.iter().copied().filter(|&t| t < vocab).collect::<Vec<_>>())
            .to_device(scores.device());
    scores.index_fill(1, &index, f64::NEG_INFINITY)
}

/// Everything -inf except `tokens`, which get 0.
fn force_tokens(scores: &Tensor, tokens: &[i64]) -> Tensor {
    let forced = scores.full_like(f64::NEG_INFINITY);
    let index = Tensor::from_slice(tokens).to_device(scores.device());
    forced.index_fill(1, &index, 0.0)
}

fn typical(scores: &Tensor, mass: f64, min_tokens_to_keep: i64) -> Tensor {
    let normalized = scores.log_softmax(-1, scores.kind());
    let p = normalized.exp();
    let entropy = -(&normalized * &p).nansum(Some([-1i64].as_slice()), true, scores.kind());
    let shifted = (-&normalized - entropy).abs();
    let (sorted_scores, sorted_indices) = shifted.sort(-1, false);
    let sorted_logits = scores.gather(-1, &sorted_indices, false);
    let cumulative = sorted_logits.softmax(-1, scores.kind()).cumsum(-1, scores.kind());
    let last = cumulative.lt(mass).sum_dim_intlist([1i64].as_slice(), false, Kind::Int64);
    let last = last.clamp_max(sorted_scores.size()[1] - 1);
    let remove = sorted_scores.gt_tensor(&sorted_scores.gather(1, &last.view([-1, 1]), false));
    let _ = remove.narrow(1, 0, min_tokens_to_keep).fill_(0);
    let remove = remove.scatter(1, &sorted_indices, &remove);
    scores.masked_fill(&remove, f64::NEG_INFINITY)
}
