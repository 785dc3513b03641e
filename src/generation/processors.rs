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
    /// OpenAI's (presence, frequency) penalties when either is set.
    penalties: Option<(f64, f64)>,
    no_repeat_ngram_size: usize,
    /// Token sequences that must not be generated (sequences equal to `[eos]` dropped, as in
    /// transformers), grouped by the length of their prefix (all but the last token).
    bad_words: Vec<(usize, Vec<Vec<i64>>)>,
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
            penalties: (config.presence_penalty != 0.0 || config.frequency_penalty != 0.0)
                .then_some((config.presence_penalty, config.frequency_penalty)),
            no_repeat_ngram_size: config.no_repeat_ngram_size,
            bad_words: by_prefix_length(
                config
                    .bad_words_ids
                    .iter()
                    .filter(|words| !(words.len() == 1 && eos.contains(&words[0]))),
            ),
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
        if let Some((presence, frequency)) = self.penalties
            && len > self.prompt_len
        {
            let generated = ids.narrow(1, self.prompt_len as i64, (len - self.prompt_len) as i64);
            let counts = scores.zeros_like().scatter_add(
                1,
                &generated,
                &generated.ones_like().to_kind(scores.kind()),
            );
            scores =
                scores - &counts * frequency - counts.gt(0.0).to_kind(counts.kind()) * presence;
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

    /// transformers' `NoRepeatNGramLogitsProcessor` on tensors: every n-gram of a row whose
    /// first n - 1 tokens are the row's last n - 1 bans its last token.
    fn ban_repeated_ngrams(&self, ids: &Tensor, scores: Tensor) -> Tensor {
        let n = self.no_repeat_ngram_size as i64;
        let len = ids.size()[1];
        if len < n {
            return scores; // no n-gram yet (transformers: cur_len + 1 < n bans nothing either)
        }
        let ngrams = ids.unfold(1, n, 1); // [rows, len - n + 1, n]
        let prefix = ids.narrow(1, len - (n - 1), n - 1).unsqueeze(1);
        let matches = ngrams.narrow(2, 0, n - 1).eq_tensor(&prefix).all_dim(2, false);
        ban_where(scores, &ngrams.select(2, n - 1), &matches)
    }

    /// transformers' `NoBadWordsLogitsProcessor` on tensors: a word's last token is banned in
    /// rows that end with the rest of it (single tokens always).
    fn ban_bad_words(&self, ids: &Tensor, mut scores: Tensor) -> Tensor {
        let (rows, len) = ids.size2().expect("[rows, len]");
        let vocab = scores.size()[1];
        let device = scores.device();
        for (prefix_len, words) in &self.bad_words {
            let prefix_len = *prefix_len as i64;
            if prefix_len > len {
                continue;
            }
            // A word with a token outside the vocabulary can never be generated whole.
            let words: Vec<&Vec<i64>> =
                words.iter().filter(|word| word.iter().all(|&t| (0..vocab).contains(&t))).collect();
            if words.is_empty() {
                continue;
            }
            let last: Vec<i64> = words.iter().map(|word| word[word.len() - 1]).collect();
            let last = Tensor::from_slice(&last).to_device(device);
            if prefix_len == 0 {
                scores = scores.index_fill(1, &last, f64::NEG_INFINITY);
                continue;
            }
            let prefixes: Vec<i64> =
                words.iter().flat_map(|word| word[..word.len() - 1].to_vec()).collect();
            let prefixes = Tensor::from_slice(&prefixes).to_device(device).view([-1, prefix_len]);
            let tail = ids.narrow(1, len - prefix_len, prefix_len).unsqueeze(1);
            let matches = tail.eq_tensor(&prefixes.unsqueeze(0)).all_dim(2, false); // [rows, words]
            scores = ban_where(scores, &last.unsqueeze(0).expand([rows, -1], false), &matches);
        }
        scores
    }
}

/// `scores` with `tokens[r, i]` set to -inf in row r wherever `banned[r, i]`. A token may
/// appear several times in a row, banned or not: unbanned places are sent to a spare column,
/// so every write is a ban and their order cannot matter.
fn ban_where(scores: Tensor, tokens: &Tensor, banned: &Tensor) -> Tensor {
    let (rows, vocab) = scores.size2().expect("[rows, vocab]");
    if tokens.numel() == 0 {
        return scores;
    }
    let spare = tokens.full_like(vocab);
    let places = tokens.where_self(banned, &spare);
    let mask = Tensor::zeros([rows, vocab + 1], (Kind::Bool, scores.device()))
        .scatter_value(1, &places, 1)
        .narrow(1, 0, vocab);
    scores.masked_fill(&mask, f64::NEG_INFINITY)
}

fn by_prefix_length<'a>(words: impl Iterator<Item = &'a Vec<i64>>) -> Vec<(usize, Vec<Vec<i64>>)> {
    let mut groups: std::collections::BTreeMap<usize, Vec<Vec<i64>>> = Default::default();
    for word in words {
        if let Some(prefix_len) = word.len().checked_sub(1) {
            groups.entry(prefix_len).or_default().push(word.clone());
        }
    }
    groups.into_iter().collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn processors(update: impl FnOnce(&mut GenerateConfig)) -> Processors {
        let mut config = GenerateConfig { eos_token_ids: vec![0], ..Default::default() };
        update(&mut config);
        Processors::new(&config, 1, 100)
    }

    fn banned(processors: &Processors, ids: &[&[i64]]) -> Vec<Vec<i64>> {
        let rows: Vec<Tensor> = ids.iter().map(|row| Tensor::from_slice(row)).collect();
        let ids = Tensor::stack(&rows, 0);
        let scores = processors
            .apply(&ids, Tensor::zeros([ids.size()[0], 12], (Kind::Float, tch::Device::Cpu)));
        (0..ids.size()[0])
            .map(|row| {
                let row = Vec::<f32>::try_from(scores.get(row)).unwrap();
                (0..12).filter(|&t| row[t as usize] == f32::NEG_INFINITY).collect()
            })
            .collect()
    }

    #[test]
    fn a_repeated_ngram_is_banned_even_where_its_token_also_ends_an_unmatched_one() {
        let no_repeat = processors(|c| c.no_repeat_ngram_size = 2);
        // Row 0 ends with 5: bigrams (5, 7) and (5, 9) ban 7 and 9; (3, 7) does not unban 7.
        // Row 1 ends with 4, which starts no bigram.
        assert_eq!(
            banned(&no_repeat, &[&[5, 7, 3, 7, 5, 9, 5], &[1, 2, 3, 1, 2, 3, 4]]),
            [vec![7, 9], vec![]]
        );
        // Shorter than n: nothing to repeat yet.
        let trigrams = processors(|c| c.no_repeat_ngram_size = 3);
        assert_eq!(banned(&trigrams, &[&[5, 5]]), [Vec::<i64>::new()]);
    }

    #[test]
    fn bad_words_ban_their_last_token_after_their_prefix_and_single_tokens_always() {
        let bad = processors(|c| {
            c.bad_words_ids =
                vec![vec![3], vec![4, 6], vec![1, 2, 8], vec![0], vec![99], vec![5, 77]]
        });
        // [0] is the eos (kept), [99] and [5, 77] lie outside the 12 scores and never apply.
        assert_eq!(
            banned(&bad, &[&[9, 1, 2], &[2, 9, 4], &[5, 5, 5]]),
            [vec![3, 8], vec![3, 6], vec![3]]
        );
    }

    #[test]
    fn presence_and_frequency_penalties_count_generated_tokens_only() {
        let penalised = processors(|c| {
            c.presence_penalty = 0.5;
            c.frequency_penalty = 0.25;
        });
        // The prompt is the first token (prompt_len 1): its 3 is not counted.
        let ids = Tensor::from_slice(&[3i64, 4, 4, 7]).unsqueeze(0);
        let scores = penalised.apply(&ids, Tensor::zeros([1, 8], (Kind::Float, tch::Device::Cpu)));
        let row = Vec::<f32>::try_from(scores.get(0)).unwrap();
        assert_eq!(row, [0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, -0.75]);
        let config = GenerateConfig { presence_penalty: 2.5, ..Default::default() };
        assert_eq!(
            config.validate(100).unwrap_err().to_string(),
            "presence_penalty must be in [-2, 2], not 2.5"
        );
    }
}
