//! The search loops of transformers' `generate` (4.57), on tch tensors with the same operations:
//! `_sample` (greedy when not sampling) and the vectorised `_beam_search` with its top-k
//! continuations, running/finished beam bookkeeping, length penalty and early-stop heuristic.
//! Using libtorch's own topk/argmax/multinomial keeps even tie-breaking identical.

use tch::{Device, Kind, Tensor};

use super::{DecoderStep, GenerateConfig, processors::Processors};

/// The finished sequences: `num_return_sequences` per input, start sequence included, padded
/// with the pad token to one length; beam search also gives each one's score.
pub struct Generated {
    pub sequences: Tensor,
    pub scores: Option<Tensor>,
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

/// Runs generation from `start` `[batch, len]` (int64, on the model's device).
pub fn generate(
    step: &mut dyn DecoderStep,
    start: &Tensor,
    config: &GenerateConfig,
    max_length: usize,
    on_token: Option<OnToken<'_>>,
    stop: Option<StopCheck<'_>>,
) -> Generated {
    let _no_grad = tch::no_grad_guard();
    if let Some(seed) = config.seed {
        tch::manual_seed(seed as i64);
    }
    let batch = start.size()[0];
    let prompt_len = start.size()[1] as usize;
    let processors = Processors::new(config, prompt_len, max_length);
    let device = start.device();
    if config.num_beams > 1 {
        let rows = repeat_rows(batch, config.num_beams as i64, device);
        step.select_rows(&rows);
        let expanded = start.index_select(0, &rows);
        beam_search(step, expanded, config, &processors, max_length, stop)
    } else {
        let copies = if config.do_sample { config.num_return_sequences as i64 } else { 1 };
        let mut ids = start.shallow_clone();
        if copies > 1 {
            let rows = repeat_rows(batch, copies, device);
            step.select_rows(&rows);
            ids = start.index_select(0, &rows);
        }
        let sequences = sample(step, ids, config, &processors, max_length, on_token, stop);
        Generated { sequences, scores: None }
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
fn sample(
    step: &mut dyn DecoderStep,
    mut ids: Tensor,
    config: &GenerateConfig,
    processors: &Processors,
    max_length: usize,
    mut on_token: Option<OnToken<'_>>,
    stop: Option<StopCheck<'_>>,
) -> Tensor {
    let prompt_len = ids.size()[1] as usize;
    let device = ids.device();
    let rows = ids.size()[0];
    let eos = eos_tensor(config, device);
    let pad = pad_token(config).unwrap_or(0);
    let mut unfinished = Tensor::ones([rows], (Kind::Int64, device));
    let mut feed = ids.shallow_clone();
    loop {
        let logits = step.step(&feed);
        let scores = processors.apply(&ids, logits);
        let next = if config.do_sample {
            scores.softmax(-1, Kind::Float).multinomial(1, false).squeeze_dim(1)
        } else {
            scores.argmax(-1, false)
        };
        let next = match &eos {
            Some(_) => &next * &unfinished + (1 - &unfinished) * pad,
            None => next,
        };
        if let Some(callback) = on_token.as_deref_mut() {
            let tokens = Vec::<i64>::try_from(next.to_device(Device::Cpu)).unwrap_or_default();
            let live = Vec::<i64>::try_from(unfinished.to_device(Device::Cpu)).unwrap_or_default();
            for (row, (token, live)) in tokens.into_iter().zip(live).enumerate() {
                if live == 1 {
                    callback(row, token);
                }
            }
        }
        ids = Tensor::cat(&[&ids, &next.unsqueeze(1)], 1);
        let mut done = Tensor::zeros([rows], (Kind::Bool, device));
        if ids.size()[1] as usize >= max_length {
            done = done.logical_not();
        }
        if let Some(eos) = &eos {
            done = done.logical_or(&Tensor::isin(&next, eos, false, false));
        }
        if let Some(stop) = stop {
            done = done.logical_or(&stop_hits(&ids, prompt_len, stop));
        }
        unfinished *= done.logical_not().to_kind(Kind::Int64);
        if unfinished.max().int64_value(&[]) == 0 {
            return ids;
        }
        feed = next.unsqueeze(1);
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

/// `_beam_search`, vectorised, as transformers 4.57 writes it.
fn beam_search(
    step: &mut dyn DecoderStep,
    input_ids: Tensor,
    config: &GenerateConfig,
    processors: &Processors,
    max_length: usize,
    stop: Option<StopCheck<'_>>,
) -> Generated {
    let device = input_ids.device();
    let nb = config.num_beams as i64;
    let rows = input_ids.size()[0];
    let batch = rows / nb;
    let mut cur_len = input_ids.size()[1];
    let prompt_len = cur_len;
    let max_len = max_length as i64;
    let eos = eos_tensor(config, device);
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
    let early_stopping = config.early_stopping;
    let length_penalty = config.length_penalty;

    let mut running_sequences = Tensor::full([batch, nb, max_len], fill, (Kind::Int64, device));
    running_sequences.narrow(2, 0, cur_len).copy_(&input_ids.view([batch, nb, cur_len]));
    let mut sequences = running_sequences.copy();
    let mut running_beam_scores = Tensor::zeros([batch, nb], (Kind::Float, device));
    let _ = running_beam_scores.narrow(1, 1, nb - 1).fill_(-1e9);
    let mut beam_scores = Tensor::full([batch, nb], -1e9, (Kind::Float, device));
    let mut is_sent_finished = Tensor::zeros([batch, nb], (Kind::Bool, device));
    let mut unsatisfied = Tensor::ones([batch, 1], (Kind::Bool, device));
    let mut running_beam_indices =
        Tensor::full([batch, nb, max_len - cur_len], -1, (Kind::Int64, device));
    let mut beam_indices = running_beam_indices.copy();
    let batch_offset = Tensor::arange(batch, (Kind::Int64, device)).view([-1, 1]) * nb;

    let mut feed = input_ids.shallow_clone();
    loop {
        let flat_running = running_sequences.narrow(2, 0, cur_len).reshape([rows, cur_len]);
        let logits = step.step(&feed);
        let vocab = logits.size()[1];
        let log_probs = logits.log_softmax(-1, Kind::Float);
        let log_probs = processors.apply(&flat_running, log_probs);
        let log_probs = (log_probs.view([batch, nb, vocab]) + running_beam_scores.unsqueeze(2))
            .reshape([batch, nb * vocab]);

        let (topk_log_probs, topk_indices) = if config.do_sample {
            let indices = log_probs.softmax(-1, Kind::Float).multinomial(keep, false);
            (log_probs.gather(1, &indices, false), indices)
        } else {
            log_probs.topk(keep, -1, true, true)
        };
        let topk_beam = topk_indices.floor_divide_scalar(vocab);
        let topk_running_beam_indices = gather_beams(&running_beam_indices, &topk_beam);
        let topk_running_sequences = gather_beams(&running_sequences, &topk_beam);
        let topk_ids = topk_indices.remainder(vocab);
        topk_running_sequences.select(2, cur_len).copy_(&topk_ids);
        topk_running_beam_indices
            .select(2, cur_len - prompt_len)
            .copy_(&(&topk_beam + &batch_offset));

        let mut hits = Tensor::zeros([batch, keep], (Kind::Bool, device));
        if cur_len + 1 >= max_len {
            hits = hits.logical_not();
        }
        if let Some(eos) = &eos {
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
        running_sequences = gather_beams(&topk_running_sequences, &next_topk);
        running_beam_scores = gather_beams(&topk_running_log_probs, &next_topk);
        running_beam_indices = gather_beams(&topk_running_beam_indices, &next_topk);

        // Finished beams: merge the new finished ones in if they beat the kept ones.
        let just_finished = hits.logical_and(&top_num_beam_mask.unsqueeze(0));
        let penalised = (cur_len + 1 - prompt_len) as f64;
        let mut candidate = &topk_log_probs / penalised.powf(length_penalty);
        if early_stopping == Some(true) {
            let full = is_sent_finished.all_dim(-1, true);
            candidate += full.to_kind(Kind::Float) * -1.0e9;
        }
        candidate += unsatisfied.logical_not().to_kind(Kind::Float) * -1.0e9;
        candidate += just_finished.logical_not().to_kind(Kind::Float) * -1.0e9;
        let merged_sequences = Tensor::cat(&[&sequences, &topk_running_sequences], 1);
        let merged_scores = Tensor::cat(&[&beam_scores, &candidate], 1);
        let merged_indices = Tensor::cat(&[&beam_indices, &topk_running_beam_indices], 1);
        let merged_finished = Tensor::cat(&[&is_sent_finished, &just_finished], 1);
        let (_, best) = merged_scores.topk(nb, -1, true, true);
        sequences = gather_beams(&merged_sequences, &best);
        beam_scores = gather_beams(&merged_scores, &best);
        beam_indices = gather_beams(&merged_indices, &best);
        is_sent_finished = gather_beams(&merged_finished, &best);

        let reorder = running_beam_indices.select(2, cur_len - prompt_len).reshape([rows]);
        step.select_rows(&reorder);
        cur_len += 1;

        // The early-stop heuristic, then the loop condition.
        let best_length = if early_stopping.is_none() && length_penalty > 0.0 {
            max_len - prompt_len
        } else {
            cur_len - prompt_len
        };
        let best_running =
            running_beam_scores.narrow(1, 0, 1) / (best_length as f64).powf(length_penalty);
        let worst_finished = beam_scores
            .min_dim(1, true)
            .0
            .where_self(&is_sent_finished, &Tensor::from(-1.0e9f32).to_device(device));
        unsatisfied =
            unsatisfied.logical_and(&best_running.gt_tensor(&worst_finished).any_dim(-1, true));
        let improvement_possible = unsatisfied.any().int64_value(&[]) == 1;
        let all_finished = is_sent_finished.all().int64_value(&[]) == 1;
        let exists_open_beam = !(all_finished && early_stopping == Some(true));
        let valid_continuations = hits.all().int64_value(&[]) == 0;
        if !(improvement_possible && exists_open_beam && valid_continuations) {
            break;
        }
        feed = running_sequences.select(2, cur_len - 1).reshape([rows, 1]);
    }

    let keep_returned = config.num_return_sequences as i64;
    let sequences = sequences.narrow(1, 0, keep_returned).reshape([batch * keep_returned, max_len]);
    let scores = beam_scores.narrow(1, 0, keep_returned).reshape([batch * keep_returned]);
    let beam_indices =
        beam_indices.narrow(1, 0, keep_returned).reshape([batch * keep_returned, -1]);
    let generated = (beam_indices + 1).ne(0).sum_dim_intlist([1i64].as_slice(), false, Kind::Int64);
    let longest = generated.max().int64_value(&[]);
    Generated { sequences: sequences.narrow(1, 0, prompt_len + longest), scores: Some(scores) }
}
