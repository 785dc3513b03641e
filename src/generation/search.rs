//! The search loops of transformers' `generate` (4.57), on tch tensors with the same operations:
//! `_sample` (greedy when not sampling) and the vectorised `_beam_search` with its top-k
//! continuations, running/finished beam bookkeeping, length penalty and early-stop heuristic.
//! Using libtorch's own topk/argmax/multinomial keeps even tie-breaking identical.

use tch::{Device, Kind, Tensor};

use super::{DecoderStep, GenerateConfig, TokenLogprob, processors::Processors, rng::Draws};

/// The finished sequences: `num_return_sequences` per input, start sequence included, padded
/// with the pad token to one length; beam search also gives each one's score.
pub struct Generated {
    pub sequences: Tensor,
    pub scores: Option<Tensor>,
    /// Per row, each generated step's log-probabilities, when the config asked for them.
    pub logprobs: Option<Vec<Vec<TokenLogprob>>>,
}

/// Called with (row, token) for each token a greedy or sampled row produces, as it is produced.
pub type OnToken<'a> = &'a mut dyn FnMut(usize, i64);

/// Whether a sequence's generated tokens (start sequence excluded) end with a stop string.
pub type StopCheck<'a> = &'a dyn Fn(&[i64]) -> bool;

/// Rows of `ids` `[rows, len]` whose tokens after `prompt_len` hit `stop`, as a bool tensor.
fn stop_hits(ids: &Tensor, prompt_len: usize, stop: StopCheck<'_>) -> Tensor {
    let cpu = ids.to_device(Device::Cpu);
    let (rows, len) = cpu.size2().expect("[rows, len]");
    let flat = Vec::<i64>::try_from(cpu.reshape([-1])).unwrap_or_default();
    let hits: Vec<bool> = (0..rows as usize)
        .map(|r| stop(&flat[r * len as usize + prompt_len..(r + 1) * len as usize]))
        .collect();
    Tensor::from_slice(&hits).to_device(ids.device())
}

/// Runs generation from `start` `[batch, len]` (int64, on the model's device), alone: the
/// engine's scheduler drives the same [`Search`] states step by step with other requests'.
pub fn generate(
    step: &mut dyn DecoderStep,
    start: &Tensor,
    config: &GenerateConfig,
    max_length: usize,
    mut on_token: Option<OnToken<'_>>,
    stop: Option<StopCheck<'_>>,
) -> Generated {
    let _no_grad = tch::no_grad_guard();
    let (mut search, expand) = Search::new(start, config, max_length);
    let mut feed = match &expand {
        Some(rows) => {
            step.select_rows(rows);
            start.index_select(0, rows)
        }
        None => start.shallow_clone(),
    };
    loop {
        let advance = search.advance(step.step(&feed), stop, on_token.is_some());
        if let Some(callback) = on_token.as_deref_mut() {
            for (row, token) in advance.emitted.iter().copied() {
                callback(row, token);
            }
        }
        if let Some(rows) = &advance.reorder {
            step.select_rows(rows);
        }
        match advance.feed {
            Some(next) => feed = next,
            None => return search.finish(),
        }
    }
}

/// What a search did with one step's logits.
pub struct Advance {
    /// The tokens to feed next, `[rows, 1]`; None once the search is over.
    pub feed: Option<Tensor>,
    /// The rows (this search's own indices) the decoder keeps for the next step, in order; None
    /// keeps them as they are.
    pub reorder: Option<Tensor>,
    /// (row, token) of each still-running greedy or sampled row, for streaming.
    pub emitted: Vec<(usize, i64)>,
    /// Each emitted token's log-probabilities, beside `emitted`, when the config asks.
    pub emitted_logprobs: Vec<TokenLogprob>,
}

/// One generation's search, advanced one decoder step at a time.
pub enum Search {
    Sample(Box<SampleSearch>),
    Beam(Box<BeamSearch>),
}

impl Search {
    /// The search for `start` `[batch, len]`, and the rows the decoder must take before its first
    /// step (each input repeated for its beams or sampled copies; None when nothing repeats).
    pub fn new(
        start: &Tensor,
        config: &GenerateConfig,
        max_length: usize,
    ) -> (Self, Option<Tensor>) {
        let batch = start.size()[0];
        let device = start.device();
        let prompt_len = start.size()[1] as usize;
        let processors = Processors::new(config, prompt_len, max_length);
        if config.num_beams > 1 {
            let rows = repeat_rows(batch, config.num_beams as i64, device);
            let expanded = start.index_select(0, &rows);
            let search = BeamSearch::new(expanded, config, processors, max_length);
            (Search::Beam(Box::new(search)), Some(rows))
        } else {
            let copies = if config.do_sample { config.num_return_sequences as i64 } else { 1 };
            if copies > 1 {
                let rows = repeat_rows(batch, copies, device);
                let ids = start.index_select(0, &rows);
                let search = SampleSearch::new(ids, config, processors, max_length);
                (Search::Sample(Box::new(search)), Some(rows))
            } else {
                let ids = start.shallow_clone();
                let search = SampleSearch::new(ids, config, processors, max_length);
                (Search::Sample(Box::new(search)), None)
            }
        }
    }

    /// Decoder rows this search occupies.
    pub fn rows(&self) -> i64 {
        match self {
            Search::Sample(s) => s.ids.size()[0],
            Search::Beam(b) => b.rows,
        }
    }

    /// Takes this step's logits `[rows, vocab]` for this search's rows. `emit`: report the
    /// tokens chosen (someone streams them; reading them back costs a device sync).
    pub fn advance(&mut self, logits: Tensor, stop: Option<StopCheck<'_>>, emit: bool) -> Advance {
        match self {
            Search::Sample(s) => s.advance(logits, stop, emit),
            // Beams are not streamed.
            Search::Beam(b) => b.advance(logits, stop),
        }
    }

    /// The finished sequences.
    pub fn finish(self) -> Generated {
        match self {
            Search::Sample(s) => {
                let logprobs = s.logprobs.map(|steps| steps.into_rows());
                Generated { sequences: s.ids, scores: None, logprobs }
            }
            Search::Beam(b) => b.finish(),
        }
    }
}

/// `[0, 0, .., 1, 1, ..]`: each of `batch` rows `copies` times (transformers'
/// `_expand_inputs_for_generation`).
fn repeat_rows(batch: i64, copies: i64, device: Device) -> Tensor {
    Tensor::arange(batch, (Kind::Int64, device)).repeat_interleave_self_int(copies, 0, None)
}

/// The pad token transformers uses for finished rows: pad, else the first eos.
fn pad_token(config: &GenerateConfig) -> Option<i64> {
    config.pad_token_id.or_else(|| config.eos_token_ids.first().copied())
}

fn eos_tensor(config: &GenerateConfig, device: Device) -> Option<Tensor> {
    (!config.eos_token_ids.is_empty())
        .then(|| Tensor::from_slice(&config.eos_token_ids).to_device(device))
}

/// `_sample`: greedy (argmax) or multinomial sampling, one token per step for every row.
pub struct SampleSearch {
    ids: Tensor,
    prompt_len: usize,
    max_length: usize,
    do_sample: bool,
    draws: Draws,
    processors: Processors,
    eos: Option<Tensor>,
    pad: i64,
    unfinished: Tensor,
    logprobs: Option<LogprobSteps>,
}

type LogprobStep = (Tensor, Tensor, Tensor, Tensor);

/// The log-probabilities of every step of a greedy or sampled search, kept on the device
/// until the end.
struct LogprobSteps {
    top: usize,
    /// Per step: the chosen tokens and their log-probabilities `[rows]`, the top values and
    /// ids `[rows, top]`.
    steps: Vec<LogprobStep>,
}

impl LogprobSteps {
    /// One step's log-probabilities for the tokens `next` `[rows]` chosen from `logits`.
    fn record(&mut self, log_probs: &Tensor, next: &Tensor) -> &LogprobStep {
        let chosen = log_probs.gather(1, &next.unsqueeze(1), false).squeeze_dim(1);
        let k = (self.top as i64).min(log_probs.size()[1]);
        let (values, ids) = log_probs.topk(k, -1, true, true);
        self.steps.push((next.shallow_clone(), chosen, values, ids));
        self.steps.last().expect("just pushed")
    }

    /// Every row of one step, read back to the host at once.
    fn to_host(step: &LogprobStep) -> Vec<TokenLogprob> {
        let (tokens, chosen, values, ids) = step;
        let host = |t: &Tensor| t.to_device(Device::Cpu).reshape([-1]);
        let tokens = Vec::<i64>::try_from(host(tokens)).unwrap_or_default();
        let chosen = Vec::<f32>::try_from(host(chosen)).unwrap_or_default();
        let k = values.size()[1] as usize;
        let values = Vec::<f32>::try_from(host(values)).unwrap_or_default();
        let ids = Vec::<i64>::try_from(host(ids)).unwrap_or_default();
        tokens
            .iter()
            .zip(chosen)
            .enumerate()
            .map(|(row, (&token, logprob))| TokenLogprob {
                token: token as u32,
                logprob,
                top: (row * k..(row + 1) * k).map(|i| (ids[i] as u32, values[i])).collect(),
            })
            .collect()
    }

    /// Per row, every step's log-probabilities.
    fn into_rows(self) -> Vec<Vec<TokenLogprob>> {
        let mut rows: Vec<Vec<TokenLogprob>> = Vec::new();
        for step in &self.steps {
            let step = Self::to_host(step);
            rows.resize_with(step.len(), Vec::new);
            rows.iter_mut().zip(step).for_each(|(row, logprob)| row.push(logprob));
        }
        rows
    }
}

/// Each of `targets` `[n]`'s log-probability under the `logits` `[n, vocab]` that predicted it,
/// with the `top` most likely tokens of each position (the prompt's own log-probabilities).
pub fn scored_tokens(logits: &Tensor, targets: &Tensor, top: usize) -> Vec<TokenLogprob> {
    if targets.numel() == 0 {
        return Vec::new();
    }
    let mut steps = LogprobSteps { top, steps: Vec::new() };
    let step = steps.record(&logits.log_softmax(-1, Kind::Float), targets);
    LogprobSteps::to_host(step)
}

impl SampleSearch {
    fn new(
        ids: Tensor,
        config: &GenerateConfig,
        processors: Processors,
        max_length: usize,
    ) -> Self {
        let device = ids.device();
        let rows = ids.size()[0];
        Self {
            prompt_len: ids.size()[1] as usize,
            max_length,
            do_sample: config.do_sample,
            draws: Draws::new(config, device),
            processors,
            eos: eos_tensor(config, device),
            pad: pad_token(config).unwrap_or(0),
            unfinished: Tensor::ones([rows], (Kind::Int64, device)),
            logprobs: config.logprobs.map(|top| LogprobSteps { top, steps: Vec::new() }),
            ids,
        }
    }

    fn advance(&mut self, logits: Tensor, stop: Option<StopCheck<'_>>, emit: bool) -> Advance {
        let device = self.ids.device();
        let rows = self.ids.size()[0];
        // Before the processors, which may scale the logits in place.
        let log_probs = self.logprobs.is_some().then(|| logits.log_softmax(-1, Kind::Float));
        let scores = self.processors.apply(&self.ids, logits);
        let next = if self.do_sample {
            self.draws.multinomial(&scores.softmax(-1, Kind::Float), 1).squeeze_dim(1)
        } else {
            scores.argmax(-1, false)
        };
        let next = match &self.eos {
            Some(_) => &next * &self.unfinished + (1 - &self.unfinished) * self.pad,
            None => next,
        };
        let emitted = if emit { self.live_tokens(&next) } else { Vec::new() };
        let mut emitted_logprobs = Vec::new();
        if let (Some(steps), Some(log_probs)) = (&mut self.logprobs, &log_probs) {
            let step = steps.record(log_probs, &next);
            if emit {
                let all = LogprobSteps::to_host(step);
                emitted_logprobs = emitted.iter().map(|(row, _)| all[*row].clone()).collect();
            }
        }
        self.ids = Tensor::cat(&[&self.ids, &next.unsqueeze(1)], 1);
        let mut done = Tensor::zeros([rows], (Kind::Bool, device));
        if self.ids.size()[1] as usize >= self.max_length {
            done = done.logical_not();
        }
        if let Some(eos) = &self.eos {
            done = done.logical_or(&Tensor::isin(&next, eos, false, false));
        }
        if let Some(stop) = stop {
            done = done.logical_or(&stop_hits(&self.ids, self.prompt_len, stop));
        }
        self.unfinished *= done.logical_not().to_kind(Kind::Int64);
        let over = self.unfinished.max().int64_value(&[]) == 0;
        Advance {
            feed: (!over).then(|| next.unsqueeze(1)),
            reorder: None,
            emitted,
            emitted_logprobs,
        }
    }
}

impl SampleSearch {
    /// (row, token) of each row still running.
    fn live_tokens(&self, next: &Tensor) -> Vec<(usize, i64)> {
        let tokens = Vec::<i64>::try_from(next.to_device(Device::Cpu)).unwrap_or_default();
        let live = Vec::<i64>::try_from(self.unfinished.to_device(Device::Cpu)).unwrap_or_default();
        tokens
            .into_iter()
            .zip(live)
            .enumerate()
            .filter(|(_, (_, live))| *live == 1)
            .map(|(row, (token, _))| (row, token))
            .collect()
    }
}

/// `_gather_beams`: picks along dim 1, broadcasting the indices over trailing dims.
fn gather_beams(tensor: &Tensor, indices: &Tensor) -> Tensor {
    let mut indices = indices.shallow_clone();
    while indices.dim() < tensor.dim() {
        indices = indices.unsqueeze(-1);
    }
    tensor.take_along_dim(&indices, 1)
}

/// `_beam_search`, vectorised, as transformers 4.57 writes it: the state its loop carries.
pub struct BeamSearch {
    config: GenerateConfig,
    draws: Draws,
    processors: Processors,
    nb: i64,
    rows: i64,
    batch: i64,
    cur_len: i64,
    prompt_len: i64,
    max_len: i64,
    eos: Option<Tensor>,
    keep: i64,
    top_num_beam_mask: Tensor,
    running_sequences: Tensor,
    sequences: Tensor,
    running_beam_scores: Tensor,
    beam_scores: Tensor,
    is_sent_finished: Tensor,
    unsatisfied: Tensor,
    running_beam_indices: Tensor,
    beam_indices: Tensor,
    batch_offset: Tensor,
}

impl BeamSearch {
    fn new(
        input_ids: Tensor,
        config: &GenerateConfig,
        processors: Processors,
        max_length: usize,
    ) -> Self {
        let device = input_ids.device();
        let nb = config.num_beams as i64;
        let rows = input_ids.size()[0];
        let batch = rows / nb;
        let cur_len = input_ids.size()[1];
        let max_len = max_length as i64;
        let n_eos = config.eos_token_ids.len() as i64;
        let keep = (1 + n_eos).max(2) * nb;
        let top_num_beam_mask = Tensor::cat(
            &[
                Tensor::ones([nb], (Kind::Bool, device)),
                Tensor::zeros([keep - nb], (Kind::Bool, device)),
            ],
            0,
        );
        // `pad_token_id or eos_token_id[0] if eos_token_id is not None else -1`: a pad id of 0 is
        // falsy in Python, so T5's beams are filled with its eos.
        let fill = match (config.pad_token_id, config.eos_token_ids.first()) {
            (_, None) => -1,
            (Some(pad), Some(_)) if pad != 0 => pad,
            (_, Some(&eos)) => eos,
        };
        let running_sequences = Tensor::full([batch, nb, max_len], fill, (Kind::Int64, device));
        running_sequences.narrow(2, 0, cur_len).copy_(&input_ids.view([batch, nb, cur_len]));
        let sequences = running_sequences.copy();
        let running_beam_scores = Tensor::zeros([batch, nb], (Kind::Float, device));
        let _ = running_beam_scores.narrow(1, 1, nb - 1).fill_(-1e9);
        let running_beam_indices =
            Tensor::full([batch, nb, max_len - cur_len], -1, (Kind::Int64, device));
        Self {
            config: config.clone(),
            draws: Draws::new(config, device),
            processors,
            nb,
            rows,
            batch,
            cur_len,
            prompt_len: cur_len,
            max_len,
            eos: eos_tensor(config, device),
            keep,
            top_num_beam_mask,
            beam_indices: running_beam_indices.copy(),
            running_beam_indices,
            sequences,
            running_sequences,
            running_beam_scores,
            beam_scores: Tensor::full([batch, nb], -1e9, (Kind::Float, device)),
            is_sent_finished: Tensor::zeros([batch, nb], (Kind::Bool, device)),
            unsatisfied: Tensor::ones([batch, 1], (Kind::Bool, device)),
            batch_offset: Tensor::arange(batch, (Kind::Int64, device)).view([-1, 1]) * nb,
        }
    }

    /// One iteration of the loop: the step's logits in, the beams' reordering out.
    fn advance(&mut self, logits: Tensor, stop: Option<StopCheck<'_>>) -> Advance {
        let device = logits.device();
        let (nb, rows, batch, keep) = (self.nb, self.rows, self.batch, self.keep);
        let (cur_len, prompt_len, max_len) = (self.cur_len, self.prompt_len, self.max_len);
        let early_stopping = self.config.early_stopping;
        let length_penalty = self.config.length_penalty;
        let flat_running = self.running_sequences.narrow(2, 0, cur_len).reshape([rows, cur_len]);
        let vocab = logits.size()[1];
        let log_probs = logits.log_softmax(-1, Kind::Float);
        let log_probs = self.processors.apply(&flat_running, log_probs);
        let log_probs = (log_probs.view([batch, nb, vocab])
            + self.running_beam_scores.unsqueeze(2))
        .reshape([batch, nb * vocab]);

        let (topk_log_probs, topk_indices) = if self.config.do_sample {
            let indices = self.draws.multinomial(&log_probs.softmax(-1, Kind::Float), keep);
            (log_probs.gather(1, &indices, false), indices)
        } else {
            log_probs.topk(keep, -1, true, true)
        };
        let topk_beam = topk_indices.floor_divide_scalar(vocab);
        let topk_running_beam_indices = gather_beams(&self.running_beam_indices, &topk_beam);
        let topk_running_sequences = gather_beams(&self.running_sequences, &topk_beam);
        let topk_ids = topk_indices.remainder(vocab);
        topk_running_sequences.select(2, cur_len).copy_(&topk_ids);
        topk_running_beam_indices
            .select(2, cur_len - prompt_len)
            .copy_(&(&topk_beam + &self.batch_offset));

        let mut hits = Tensor::zeros([batch, keep], (Kind::Bool, device));
        if cur_len + 1 >= max_len {
            hits = hits.logical_not();
        }
        if let Some(eos) = &self.eos {
            hits = hits.logical_or(&Tensor::isin(&topk_ids, eos, false, false));
        }
        if let Some(stop) = stop {
            let candidates = topk_running_sequences
                .narrow(2, 0, cur_len + 1)
                .reshape([batch * keep, cur_len + 1]);
            hits = hits
                .logical_or(&stop_hits(&candidates, prompt_len as usize, stop).view([batch, keep]));
        }

        // Running beams for the next step: the best unfinished ones.
        let topk_running_log_probs = &topk_log_probs + hits.to_kind(Kind::Float) * -1.0e9;
        let (_, next_topk) = topk_running_log_probs.topk(nb, -1, true, true);
        self.running_sequences = gather_beams(&topk_running_sequences, &next_topk);
        self.running_beam_scores = gather_beams(&topk_running_log_probs, &next_topk);
        self.running_beam_indices = gather_beams(&topk_running_beam_indices, &next_topk);

        // Finished beams: merge the new finished ones in if they beat the kept ones.
        let just_finished = hits.logical_and(&self.top_num_beam_mask.unsqueeze(0));
        let penalised = (cur_len + 1 - prompt_len) as f64;
        let mut candidate = &topk_log_probs / penalised.powf(length_penalty);
        if early_stopping == Some(true) {
            let full = self.is_sent_finished.all_dim(-1, true);
            candidate += full.to_kind(Kind::Float) * -1.0e9;
        }
        candidate += self.unsatisfied.logical_not().to_kind(Kind::Float) * -1.0e9;
        candidate += just_finished.logical_not().to_kind(Kind::Float) * -1.0e9;
        let merged_sequences = Tensor::cat(&[&self.sequences, &topk_running_sequences], 1);
        let merged_scores = Tensor::cat(&[&self.beam_scores, &candidate], 1);
        let merged_indices = Tensor::cat(&[&self.beam_indices, &topk_running_beam_indices], 1);
        let merged_finished = Tensor::cat(&[&self.is_sent_finished, &just_finished], 1);
        let (_, best) = merged_scores.topk(nb, -1, true, true);
        self.sequences = gather_beams(&merged_sequences, &best);
        self.beam_scores = gather_beams(&merged_scores, &best);
        self.beam_indices = gather_beams(&merged_indices, &best);
        self.is_sent_finished = gather_beams(&merged_finished, &best);

        let reorder = self.running_beam_indices.select(2, cur_len - prompt_len).reshape([rows]);
        self.cur_len += 1;
        let cur_len = self.cur_len;

        // The early-stop heuristic, then the loop condition.
        let best_length = if early_stopping.is_none() && length_penalty > 0.0 {
            max_len - prompt_len
        } else {
            cur_len - prompt_len
        };
        let best_running =
            self.running_beam_scores.narrow(1, 0, 1) / (best_length as f64).powf(length_penalty);
        let worst_finished = self
            .beam_scores
            .min_dim(1, true)
            .0
            .where_self(&self.is_sent_finished, &Tensor::from(-1.0e9f32).to_device(device));
        self.unsatisfied = self
            .unsatisfied
            .logical_and(&best_running.gt_tensor(&worst_finished).any_dim(-1, true));
        let improvement_possible = self.unsatisfied.any().int64_value(&[]) == 1;
        let all_finished = self.is_sent_finished.all().int64_value(&[]) == 1;
        let exists_open_beam = !(all_finished && early_stopping == Some(true));
        let valid_continuations = hits.all().int64_value(&[]) == 0;
        let go_on = improvement_possible && exists_open_beam && valid_continuations;
        let feed = go_on.then(|| self.running_sequences.select(2, cur_len - 1).reshape([rows, 1]));
        Advance { feed, reorder: Some(reorder), emitted: Vec::new(), emitted_logprobs: Vec::new() }
    }

    fn finish(self) -> Generated {
        let (batch, max_len, prompt_len) = (self.batch, self.max_len, self.prompt_len);
        let keep_returned = self.config.num_return_sequences as i64;
        let sequences =
            self.sequences.narrow(1, 0, keep_returned).reshape([batch * keep_returned, max_len]);
        let scores = self.beam_scores.narrow(1, 0, keep_returned).reshape([batch * keep_returned]);
        let beam_indices =
            self.beam_indices.narrow(1, 0, keep_returned).reshape([batch * keep_returned, -1]);
        let generated =
            (beam_indices + 1).ne(0).sum_dim_intlist([1i64].as_slice(), false, Kind::Int64);
        let longest = generated.max().int64_value(&[]);
        let sequences = sequences.narrow(1, 0, prompt_len + longest);
        Generated { sequences, scores: Some(scores), logprobs: None }
    }
}
