//! Answer spans from question-answering logits, exactly as transformers' `QuestionAnsweringPipeline`
//! produces them.
//!
//! Callers compare us against the Python pipeline, so this file ports the postprocessing of
//! transformers 4.57 (`transformers/pipelines/question_answering.py`: `select_starts_ends`,
//! `decode_spans`, `QuestionAnsweringPipeline.postprocess` / `get_indices` / `get_answer`) for a fast
//! tokenizer with the question first (`padding_side == "right"`), step by step and in the same
//! float types:
//!
//! 1. per window, tokens that may not start or end an answer (`p_mask` set, or attention off) get
//!    the logit -10000; start and end logits go through numpy's float32 softmax (see
//!    [`super::numpy_f32`]); with `handle_impossible_answer` the smallest `start[0] * end[0]` over the
//!    windows becomes the score of the empty answer; then `start[0]` and `end[0]` are zeroed;
//! 2. every span `(s, e)` with `s <= e < s + max_answer_len` scores `start[s] * end[e]` (float32), all
//!    others score 0; the best `k` of the whole `n x n` matrix are kept, where `k` is `top_k`, or
//!    `2 * top_k + 10` when aligning to words; a kept span survives only if both ends are allowed
//!    tokens, where token 0 always counts as allowed (numpy's `isin` against the row AND column
//!    indices of `nonzero()` of a 2-D mask);
//! 3. each span becomes character offsets into the context: the first character of the start
//!    token's word to the last of the end token's word (`align_to_words`, words as this window's
//!    tokens cover them), or the token offsets; answers whose lower-cased text was already seen
//!    (in any window) add their score to that earlier answer instead, in f64, as Python floats do;
//! 4. the impossible answer `{score: min_null_score, start: 0, end: 0, answer: ""}` is appended,
//!    the answers are sorted by score, descending and stably, and cut to `top_k`.
//!
//! Deliberate limits, which the tests document:
//! * spans with EQUAL scores are ranked by their index in the flattened matrix (row-major). numpy
//!   ranks ties with `argpartition`/`argsort`, whose order depends on the CPU (x86-simd-sort on
//!   AVX2 / AVX-512, introselect elsewhere). Ties only happen in practice among the zero-score spans
//!   of the masked matrix, which reach the output when a window holds fewer real spans than `k`:
//!   then the tail of zero-score answers (and, rarely, the offsets of an answer merged into one of
//!   them) can differ from a given numpy build.
//! * like the pipeline, a window of `n` tokens fails when `k == n * n` (and `k != 1`): numpy's
//!   `argpartition` rejects `kth == len` and the pipeline raises `ValueError`.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

use super::{char_text::CharText, numpy_f32};

/// The logit transformers gives tokens that cannot be part of an answer.
const MASKED_LOGIT: f32 = -10000.0;
/// `min_null_score` before the first window: "large and positive" in the pipeline.
const NO_NULL_SCORE: f64 = 1_000_000.0;

/// The pipeline's postprocess parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QaParams {
    /// Number of answers to return (transformers rejects 0 in `__call__`; here 0 returns none).
    pub top_k: usize,
    /// Longest answer, in tokens.
    pub max_answer_len: usize,
    /// Whether the empty answer competes with the spans.
    pub handle_impossible_answer: bool,
    /// Whether answers are widened to whole words.
    pub align_to_words: bool,
}

impl Default for QaParams {
    /// transformers' defaults.
    fn default() -> Self {
        Self { top_k: 1, max_answer_len: 15, handle_impossible_answer: false, align_to_words: true }
    }
}

/// One window (one overflowing encoding) of `question + context`, with the model's logits.
///
/// All vectors are per token and must have the same length.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QaWindow {
    pub start_logits: Vec<f32>,
    pub end_logits: Vec<f32>,
    /// `true` where the token may not be part of an answer: as transformers' `p_mask`, every token
    /// outside the context except the CLS token(s).
    pub p_mask: Vec<bool>,
    /// The encoding's attention mask (all `true` for a model without one).
    pub attention_mask: Vec<bool>,
    /// Character offsets into the context (the encoding's offsets; only read for context tokens
    /// and for the CLS token, whose offsets are (0, 0)).
    pub offsets: Vec<(usize, usize)>,
    /// The word index of each context token (`encoding.word_ids()` where `sequence_ids() == 1`),
    /// `None` for question, special and padding tokens.
    pub word_ids: Vec<Option<usize>>,
}

/// One answer, as the pipeline returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// A probability product; answers found more than once hold the sum (Python floats, so f64).
    pub score: f64,
    /// Character offset of the answer in the context.
    pub start: usize,
    /// Character offset just past the answer.
    pub end: usize,
    /// `context[start..end]`, in characters.
    pub answer: String,
}

/// Inputs the pipeline would fail on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QaError {
    /// A window has no tokens (the pipeline indexes token 0 of every window).
    EmptyWindow { window: usize },
    /// A per-token vector of a window has a different length from `start_logits`.
    RaggedWindow { window: usize, field: &'static str, expected: usize, found: usize },
    /// `k` spans requested from a window of exactly `k` spans: numpy's
    /// `argpartition(-scores, k)` raises "kth(=k) out of bounds (k)", and so does the pipeline.
    KthOutOfBounds { window: usize, k: usize },
}

impl fmt::Display for QaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyWindow { window } => {
                write!(f, "question-answering window {window} has no tokens")
            }
            Self::RaggedWindow { window, field, expected, found } => write!(
                f,
                "question-answering window {window}: {field} has {found} entries, the logits {expected}"
            ),
            Self::KthOutOfBounds { k, .. } => write!(f, "kth(={k}) out of bounds ({k})"),
        }
    }
}

impl std::error::Error for QaError {}

/// The answers for one question over all windows of its context, best first.
pub fn decode(
    context: &str,
    windows: &[QaWindow],
    params: &QaParams,
) -> Result<Vec<Answer>, QaError> {
    for (index, window) in windows.iter().enumerate() {
        check_window(index, window)?;
    }
    let context = CharText::new(context);
    let pre_top_k = if params.align_to_words {
        params.top_k.saturating_mul(2).saturating_add(10)
    } else {
        params.top_k
    };
    let mut min_null_score = NO_NULL_SCORE;
    let mut answers = Answers::default();
    for (index, window) in windows.iter().enumerate() {
        let probs = WindowProbs::new(window);
        if params.handle_impossible_answer {
            let null = f64::from(probs.null_score);
            if null < min_null_score {
                min_null_score = null;
            }
        }
        let spans = decode_spans(&probs, pre_top_k, params.max_answer_len)
            .map_err(|KthOutOfBounds { k }| QaError::KthOutOfBounds { window: index, k })?;
        for span in spans {
            let (start, end) = char_span(window, span.start, span.end, params.align_to_words);
            answers.add(context.slice(start, end), start, end, f64::from(span.score));
        }
    }
    let mut answers = answers.into_vec();
    if params.handle_impossible_answer {
        answers.push(Answer { score: min_null_score, start: 0, end: 0, answer: String::new() });
    }
    // Python's sorted(..., reverse=True) is stable; NaN (only from NaN logits) ranks last here.
    let rank = |score: f64| if score.is_nan() { f64::NEG_INFINITY } else { score + 0.0 };
    answers.sort_by(|a, b| rank(b.score).total_cmp(&rank(a.score)));
    answers.truncate(params.top_k);
    Ok(answers)
}

fn check_window(index: usize, window: &QaWindow) -> Result<(), QaError> {
    let n = window.start_logits.len();
    if n == 0 {
        return Err(QaError::EmptyWindow { window: index });
    }
    let lengths = [
        ("end_logits", window.end_logits.len()),
        ("p_mask", window.p_mask.len()),
        ("attention_mask", window.attention_mask.len()),
        ("offsets", window.offsets.len()),
        ("word_ids", window.word_ids.len()),
    ];
    match lengths.into_iter().find(|&(_, len)| len != n) {
        Some((field, found)) => {
            Err(QaError::RaggedWindow { window: index, field, expected: n, found })
        }
        None => Ok(()),
    }
}

/// `select_starts_ends` up to `decode_spans`: which tokens may bound an answer, the start and end
/// probabilities (token 0 zeroed) and the impossible-answer score of the window.
struct WindowProbs {
    start: Vec<f32>,
    end: Vec<f32>,
    /// `isin(index, undesired_tokens.nonzero())`.
    allowed: Vec<bool>,
    /// `start[0] * end[0]` before they are zeroed.
    null_score: f32,
}

impl WindowProbs {
    fn new(window: &QaWindow) -> Self {
        let desired: Vec<bool> = window
            .p_mask
            .iter()
            .zip(&window.attention_mask)
            .map(|(&p, &attend)| !p && attend)
            .collect();
        let mut start = masked_softmax(&window.start_logits, &desired);
        let mut end = masked_softmax(&window.end_logits, &desired);
        let null_score = start[0] * end[0];
        start[0] = 0.0;
        end[0] = 0.0;
        // nonzero() of the (1, n) mask yields its row indices (all 0) next to its column indices.
        let any_desired = desired.iter().any(|&d| d);
        let allowed =
            desired.iter().enumerate().map(|(i, &d)| d || (i == 0 && any_desired)).collect();
        Self { start, end, allowed, null_score }
    }

    fn len(&self) -> usize {
        self.start.len()
    }
}

/// `np.exp(x - x.max()); e / e.sum()` over float32 logits, undesired tokens set to -10000 first.
fn masked_softmax(logits: &[f32], desired: &[bool]) -> Vec<f32> {
    let masked: Vec<f32> =
        logits.iter().zip(desired).map(|(&x, &d)| if d { x } else { MASKED_LOGIT }).collect();
    let max = np_max(&masked);
    let exps: Vec<f32> = masked.iter().map(|&x| numpy_f32::exp(x - max)).collect();
    let total = numpy_f32::sum(&exps);
    exps.iter().map(|&e| e / total).collect()
}

/// `np.max`: NaN wins.
fn np_max(values: &[f32]) -> f32 {
    values
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, |m, v| if v.is_nan() || m.is_nan() { f32::NAN } else { m.max(v) })
}

/// A token span `start..=end` of a window with its score.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Span {
    start: usize,
    end: usize,
    score: f32,
}

/// numpy's `argpartition` refused `kth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KthOutOfBounds {
    k: usize,
}

/// `decode_spans`: the best `k` cells of the masked `n x n` span matrix (ties by flat index), minus
/// those whose ends are not allowed, best first.
fn decode_spans(
    probs: &WindowProbs,
    k: usize,
    max_answer_len: usize,
) -> Result<Vec<Span>, KthOutOfBounds> {
    let n = probs.len();
    let cells = n.saturating_mul(n);
    if k != 1 && k == cells {
        return Err(KthOutOfBounds { k });
    }
    let mut ranked = best_cells(probs, k, max_answer_len);
    ranked.retain(|span| probs.allowed[span.start] && probs.allowed[span.end]);
    Ok(ranked)
}

/// The `k` best cells of the span matrix, best first; equal scores by row-major index.
fn best_cells(probs: &WindowProbs, k: usize, max_answer_len: usize) -> Vec<Span> {
    let n = probs.len();
    // Cells with a positive score all lie in the band s <= e < s + max_answer_len.
    let mut positive: Vec<Span> = Vec::new();
    for s in 0..n {
        for e in s..n.min(s.saturating_add(max_answer_len)) {
            let score = probs.start[s] * probs.end[e];
            if score > 0.0 {
                positive.push(Span { start: s, end: e, score });
            }
        }
    }
    let rank = |a: &Span, b: &Span| {
        b.score.total_cmp(&a.score).then((a.start, a.end).cmp(&(b.start, b.end)))
    };
    if positive.len() > k {
        positive.select_nth_unstable_by(k, rank);
        positive.truncate(k);
    }
    positive.sort_unstable_by(rank);
    if positive.len() < k {
        // The rest of the matrix scores 0 (or NaN with NaN logits): taken in row-major order.
        let missing = k - positive.len();
        let zeros = (0..n)
            .flat_map(|s| (0..n).map(move |e| (s, e)))
            .map(|(s, e)| Span { start: s, end: e, score: cell_score(probs, s, e, max_answer_len) })
            .filter(|span| span.score <= 0.0 || span.score.is_nan())
            .take(missing);
        positive.extend(zeros);
    }
    positive
}

/// `candidates[s, e]`: the product inside the band, 0 outside (`np.tril(np.triu(outer), len - 1)`).
fn cell_score(probs: &WindowProbs, s: usize, e: usize, max_answer_len: usize) -> f32 {
    if s <= e && e - s < max_answer_len { probs.start[s] * probs.end[e] } else { 0.0 }
}

/// `get_indices`: the character span of tokens `s..=e`, widened to whole words when asked and both
/// ends are context tokens, else from the token offsets.
fn char_span(window: &QaWindow, s: usize, e: usize, align_to_words: bool) -> (usize, usize) {
    if align_to_words {
        let word_span =
            |token: usize| window.word_ids[token].and_then(|word| word_to_chars(window, word));
        if let (Some(first), Some(last)) = (word_span(s), word_span(e)) {
            return (first.0, last.1);
        }
    }
    (window.offsets[s].0, window.offsets[e].1)
}

/// `Encoding.word_to_chars(word, sequence_index=1)`: from the first to the last of this window's
/// context tokens of `word` (a word cut by the window edge only covers its tokens in the window).
/// The scan stops at the first larger word index, as tokenizers' `word_to_tokens` does.
fn word_to_chars(window: &QaWindow, word: usize) -> Option<(usize, usize)> {
    let mut tokens = window
        .word_ids
        .iter()
        .enumerate()
        .filter_map(|(i, w)| w.map(|w| (i, w)))
        .take_while(|&(_, w)| w <= word)
        .filter(|&(_, w)| w == word)
        .map(|(i, _)| i);
    let first = tokens.next()?;
    let last = tokens.last().unwrap_or(first);
    Some((window.offsets[first].0, window.offsets[last].1))
}

/// The answers so far, in the order found, with `get_answer`'s lookup by lower-cased text.
#[derive(Default)]
struct Answers {
    list: Vec<Answer>,
    by_text: HashMap<String, usize>,
}

impl Answers {
    fn add(&mut self, text: &str, start: usize, end: usize, score: f64) {
        let key = text.to_lowercase();
        match self.by_text.get(&key) {
            Some(&i) => self.list[i].score += score,
            None => {
                self.by_text.insert(key, self.list.len());
                self.list.push(Answer { score, start, end, answer: text.to_string() });
            }
        }
    }

    fn into_vec(self) -> Vec<Answer> {
        self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Vectors {
        cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Case {
        name: String,
        context: String,
        windows: Vec<WindowJson>,
        runs: Vec<Run>,
    }

    #[derive(Deserialize)]
    struct WindowJson {
        start_logits: Vec<f32>,
        end_logits: Vec<f32>,
        p_mask: Vec<u8>,
        attention_mask: Vec<u8>,
        offsets: Vec<(usize, usize)>,
        word_ids: Vec<Option<usize>>,
        start_probs: Vec<f32>,
        end_probs: Vec<f32>,
    }

    impl WindowJson {
        fn window(&self) -> QaWindow {
            QaWindow {
                start_logits: self.start_logits.clone(),
                end_logits: self.end_logits.clone(),
                p_mask: self.p_mask.iter().map(|&p| p != 0).collect(),
                attention_mask: self.attention_mask.iter().map(|&a| a != 0).collect(),
                offsets: self.offsets.clone(),
                word_ids: self.word_ids.clone(),
            }
        }
    }

    #[derive(Deserialize)]
    struct Run {
        params: ParamsJson,
        #[serde(default)]
        expected: Option<Vec<AnswerJson>>,
        #[serde(default)]
        expected_stable_ties: Option<Vec<AnswerJson>>,
        #[serde(default)]
        expected_error: Option<String>,
    }

    #[derive(Deserialize, Debug)]
    struct ParamsJson {
        top_k: usize,
        max_answer_len: usize,
        handle_impossible_answer: bool,
        align_to_words: bool,
    }

    #[derive(Deserialize, Debug, Clone)]
    struct AnswerJson {
        score: f64,
        start: usize,
        end: usize,
        answer: String,
    }

    fn vectors() -> Vectors {
        serde_json::from_str(include_str!("../../tests/fixtures/postprocess/qa_vectors.json"))
            .unwrap()
    }

    fn params(p: &ParamsJson) -> QaParams {
        QaParams {
            top_k: p.top_k,
            max_answer_len: p.max_answer_len,
            handle_impossible_answer: p.handle_impossible_answer,
            align_to_words: p.align_to_words,
        }
    }

    /// Relative difference; also accepts exact equality (zeros).
    fn close(got: f64, want: f64, tolerance: f64) -> bool {
        got == want || (got - want).abs() <= tolerance * want.abs().max(got.abs())
    }

    fn assert_answer(got: &Answer, want: &AnswerJson, context: &str) {
        assert_eq!(got.answer, want.answer, "{context}");
        assert_eq!((got.start, got.end), (want.start, want.end), "{context}: {:?}", want.answer);
        assert!(
            close(got.score, want.score, 1e-6),
            "{context}: score {} vs {}",
            got.score,
            want.score
        );
        // Bit-exact in practice; the slack only covers serde_json's f64 parsing.
        assert!(
            close(got.score, want.score, 1e-12),
            "{context}: score {} vs {}",
            got.score,
            want.score
        );
    }

    #[test]
    fn probabilities_match_numpy_bits() {
        let mut checked = 0;
        for case in vectors().cases {
            for (i, w) in case.windows.iter().enumerate() {
                let probs = WindowProbs::new(&w.window());
                for (name, got, want) in
                    [("start", &probs.start, &w.start_probs), ("end", &probs.end, &w.end_probs)]
                {
                    for (t, (g, e)) in got.iter().zip(want).enumerate() {
                        assert_eq!(
                            g.to_bits(),
                            e.to_bits(),
                            "{} window {i} {name}[{t}]: {g:e} vs {e:e}",
                            case.name
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked}");
    }

    /// Every run against the pipeline's own output with the deterministic tie rule: all fields.
    #[test]
    fn pipeline_vectors_with_stable_ties() {
        let mut runs = 0;
        for case in vectors().cases {
            let windows: Vec<QaWindow> = case.windows.iter().map(WindowJson::window).collect();
            for run in &case.runs {
                let label = format!("{} {:?}", case.name, run.params);
                let got = decode(&case.context, &windows, &params(&run.params));
                if let Some(error) = &run.expected_error {
                    let err = got.expect_err(&label);
                    assert_eq!(&err.to_string(), error, "{label}");
                    assert!(matches!(err, QaError::KthOutOfBounds { .. }), "{label}");
                    runs += 1;
                    continue;
                }
                let got = got.unwrap_or_else(|e| panic!("{label}: {e}"));
                let want = run.expected_stable_ties.as_ref().or(run.expected.as_ref()).unwrap();
                assert_eq!(got.len(), want.len(), "{label}: {got:?}");
                for (g, w) in got.iter().zip(want) {
                    assert_answer(g, w, &label);
                }
                runs += 1;
            }
        }
        assert!(runs >= 400, "{runs}");
    }

    /// Against the output numpy itself produced on the machine that wrote the vectors: identical
    /// except for the answers that owe their place to how equal (zero) scores were ordered.
    #[test]
    fn pipeline_vectors_as_numpy_ordered_them() {
        let (mut identical, mut tie_dependent) = (0, 0);
        for case in vectors().cases {
            let windows: Vec<QaWindow> = case.windows.iter().map(WindowJson::window).collect();
            for run in &case.runs {
                let Some(want) = &run.expected else { continue };
                let label = format!("{} {:?}", case.name, run.params);
                let got = decode(&case.context, &windows, &params(&run.params)).unwrap();
                if run.expected_stable_ties.is_none() {
                    assert_eq!(got.len(), want.len(), "{label}");
                    for (g, w) in got.iter().zip(want) {
                        assert_answer(g, w, &label);
                    }
                    identical += 1;
                    continue;
                }
                // Positive-score answers: same texts and scores in the same order.
                let positive = |a: &[(f64, String)]| {
                    a.iter().filter(|(s, _)| *s > 0.0).cloned().collect::<Vec<_>>()
                };
                let got_pos =
                    positive(&got.iter().map(|a| (a.score, a.answer.clone())).collect::<Vec<_>>());
                let want_pos =
                    positive(&want.iter().map(|a| (a.score, a.answer.clone())).collect::<Vec<_>>());
                assert_eq!(got_pos.len(), want_pos.len(), "{label}");
                for ((gs, ga), (ws, wa)) in got_pos.iter().zip(&want_pos) {
                    assert_eq!(ga, wa, "{label}");
                    assert!(close(*gs, *ws, 1e-12), "{label}");
                }
                assert!(got.iter().skip(got_pos.len()).all(|a| a.score == 0.0), "{label}");
                assert!(got.len() <= run.params.top_k, "{label}");
                tie_dependent += 1;
            }
        }
        assert!(identical > 350 && tie_dependent > 0, "{identical} {tie_dependent}");
    }

    fn window(
        start: &[f32],
        end: &[f32],
        p_mask: &[bool],
        offsets: &[(usize, usize)],
        words: &[Option<usize>],
    ) -> QaWindow {
        QaWindow {
            start_logits: start.to_vec(),
            end_logits: end.to_vec(),
            p_mask: p_mask.to_vec(),
            attention_mask: vec![true; start.len()],
            offsets: offsets.to_vec(),
            word_ids: words.to_vec(),
        }
    }

    /// [CLS] q [SEP] "São" "Paulo" "😀" [SEP] over the context "São Paulo 😀".
    fn sao_paulo(start: [f32; 7], end: [f32; 7]) -> QaWindow {
        window(
            &start,
            &end,
            &[false, true, true, false, false, false, true],
            &[(0, 0), (0, 4), (0, 0), (0, 3), (4, 9), (10, 11), (0, 0)],
            &[None, None, None, Some(0), Some(1), Some(2), None],
        )
    }

    const SAO_PAULO: &str = "São Paulo 😀";

    #[test]
    fn no_windows() {
        let params = QaParams::default();
        assert_eq!(decode("x", &[], &params).unwrap(), vec![]);
        let with_null = QaParams { handle_impossible_answer: true, ..params };
        let answers = decode("x", &[], &with_null).unwrap();
        assert_eq!(
            answers,
            vec![Answer { score: 1_000_000.0, start: 0, end: 0, answer: String::new() }]
        );
    }

    #[test]
    fn bad_windows_are_errors() {
        let empty = QaWindow::default();
        assert_eq!(
            decode("x", &[empty], &QaParams::default()),
            Err(QaError::EmptyWindow { window: 0 })
        );
        let mut ragged = sao_paulo([0.0; 7], [0.0; 7]);
        ragged.word_ids.pop();
        let err = decode(SAO_PAULO, &[sao_paulo([0.0; 7], [0.0; 7]), ragged], &QaParams::default())
            .unwrap_err();
        assert_eq!(
            err,
            QaError::RaggedWindow { window: 1, field: "word_ids", expected: 7, found: 6 }
        );
    }

    #[test]
    fn character_offsets_with_accents_and_emoji() {
        let w = sao_paulo([0.0, 0.0, 0.0, 1.0, 5.0, 6.0, 0.0], [0.0, 0.0, 0.0, 1.0, 2.0, 8.0, 0.0]);
        let answers =
            decode(SAO_PAULO, &[w], &QaParams { top_k: 3, ..QaParams::default() }).unwrap();
        let texts: Vec<&str> = answers.iter().map(|a| a.answer.as_str()).collect();
        assert_eq!(texts, ["😀", "Paulo 😀", "São Paulo 😀"]);
        assert_eq!((answers[0].start, answers[0].end), (10, 11));
        assert_eq!((answers[2].start, answers[2].end), (0, 11));
    }

    #[test]
    fn top_k_zero_and_one() {
        let w = sao_paulo([0.0, 0.0, 0.0, 1.0, 5.0, 6.0, 0.0], [0.0, 0.0, 0.0, 1.0, 2.0, 8.0, 0.0]);
        let none = QaParams { top_k: 0, handle_impossible_answer: true, ..QaParams::default() };
        assert_eq!(decode(SAO_PAULO, std::slice::from_ref(&w), &none).unwrap(), vec![]);
        let one = QaParams { top_k: 1, align_to_words: false, ..QaParams::default() };
        let answers = decode(SAO_PAULO, &[w], &one).unwrap();
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].answer, "😀");
    }

    #[test]
    fn all_tokens_masked_gives_the_empty_answer_from_cls() {
        // Only CLS may bound an answer: its spans score 0, yet (0, 0) survives, as in Python.
        let w = window(
            &[1.0, 2.0, 3.0],
            &[1.0, 2.0, 3.0],
            &[false, true, true],
            &[(0, 0); 3],
            &[None; 3],
        );
        let answers = decode("abc", std::slice::from_ref(&w), &QaParams::default()).unwrap();
        assert_eq!(answers, vec![Answer { score: 0.0, start: 0, end: 0, answer: String::new() }]);
        let with_null =
            QaParams { handle_impossible_answer: true, top_k: 2, ..QaParams::default() };
        let answers = decode("abc", &[w], &with_null).unwrap();
        assert_eq!(answers.len(), 2);
        assert_eq!(answers[0].score, 1.0, "CLS takes all the probability mass");
        assert_eq!(answers[1].score, 0.0);
    }

    #[test]
    fn nothing_allowed_gives_no_answer() {
        // Not even CLS is allowed: nonzero() is empty and every span is filtered out.
        let w = window(&[1.0, 2.0], &[1.0, 2.0], &[true, true], &[(0, 0); 2], &[None; 2]);
        assert_eq!(
            decode("ab", &[w], &QaParams { top_k: 3, ..QaParams::default() }).unwrap(),
            vec![]
        );
    }

    #[test]
    fn token_zero_passes_the_filter_even_when_masked() {
        // No CLS to unmask: token 0 (a question token at "c") is masked, yet numpy's isin against
        // nonzero() of the 2-D mask lets spans at 0 through. Here all 9 cells are ranked (k = 10),
        // so the set of answers does not depend on how ties are ordered.
        let w = window(
            &[1.0, 2.0, 3.0],
            &[1.0, 2.0, 3.0],
            &[true, false, false],
            &[(4, 5), (0, 1), (2, 3)],
            &[None, Some(0), Some(1)],
        );
        let p =
            QaParams { top_k: 10, max_answer_len: 1, align_to_words: false, ..QaParams::default() };
        let answers = decode("a b c", &[w], &p).unwrap();
        let texts: Vec<&str> = answers.iter().map(|a| a.answer.as_str()).collect();
        assert_eq!(texts[..2], ["b", "a"]);
        let mut rest = texts[2..].to_vec();
        rest.sort_unstable();
        assert_eq!(rest, ["", "a b", "a b c", "b c", "c"], "\"c\" only comes from the span (0, 0)");
        assert!(answers[2..].iter().all(|a| a.score == 0.0));
    }

    #[test]
    fn word_to_chars_stops_at_a_larger_word() {
        // tokenizers' word_to_tokens scans with take_while(word <= target).
        let w = window(
            &[0.0; 4],
            &[0.0; 4],
            &[false; 4],
            &[(0, 0), (0, 1), (2, 3), (4, 5)],
            &[None, Some(0), Some(2), Some(1)],
        );
        assert_eq!(word_to_chars(&w, 0), Some((0, 1)));
        assert_eq!(word_to_chars(&w, 2), Some((2, 3)));
        assert_eq!(word_to_chars(&w, 1), None);
        assert_eq!(char_span(&w, 3, 3, true), (4, 5), "falls back to the token offsets");
    }

    #[test]
    fn k_equal_to_the_matrix_size_fails_like_numpy() {
        let w =
            window(&[1.0, 2.0], &[1.0, 2.0], &[false, false], &[(0, 0), (0, 1)], &[None, Some(0)]);
        let p = QaParams { top_k: 4, align_to_words: false, ..QaParams::default() };
        assert_eq!(
            decode("ab", std::slice::from_ref(&w), &p),
            Err(QaError::KthOutOfBounds { window: 0, k: 4 })
        );
        let p = QaParams { top_k: 5, align_to_words: false, ..QaParams::default() };
        // All four cells are ranked: "a" (1,1) and the zero-score cells, which give "" and "a" again.
        assert_eq!(decode("ab", &[w], &p).unwrap().len(), 2);
    }

    #[test]
    fn same_text_in_another_case_adds_up() {
        // "Paulo" and "paulo" are one answer (get_answer lower-cases), kept at its first position.
        let w = window(
            &[0.0, 3.0, 0.0, 3.0],
            &[0.0, 3.0, 0.0, 3.0],
            &[false, false, false, false],
            &[(0, 0), (0, 5), (6, 7), (8, 13)],
            &[None, Some(0), Some(1), Some(2)],
        );
        let p =
            QaParams { top_k: 3, max_answer_len: 1, align_to_words: false, ..QaParams::default() };
        let answers = decode("Paulo e paulo", std::slice::from_ref(&w), &p).unwrap();
        assert_eq!(answers.len(), 2, "{answers:?}");
        assert_eq!(answers[0].answer, "Paulo");
        assert_eq!((answers[0].start, answers[0].end), (0, 5));
        let probs = WindowProbs::new(&w);
        let single = f64::from(probs.start[1] * probs.end[1]);
        assert_eq!(answers[0].score, single + single);
        assert_eq!(answers[1].answer, "e");
    }

    #[test]
    fn nan_logits_do_not_panic() {
        let nan = f32::NAN;
        let w = sao_paulo([nan, 0.0, 0.0, 1.0, nan, 6.0, 0.0], [0.0, 0.0, 0.0, 1.0, 2.0, nan, 0.0]);
        let p = QaParams { top_k: 5, handle_impossible_answer: true, ..QaParams::default() };
        let answers = decode(SAO_PAULO, &[w], &p).unwrap();
        assert!(answers.len() <= 5);
    }

    #[test]
    fn python_slicing() {
        let t = CharText::new("ação 東京");
        assert_eq!(t.slice(0, 4), "ação");
        assert_eq!(t.slice(5, 99), "東京");
        assert_eq!(t.slice(3, 1), "");
        assert_eq!(t.slice(42, 43), "");
    }
}
