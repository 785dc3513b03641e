//! Entities from token-classification logits, exactly as transformers' `TokenClassificationPipeline`
//! produces them.
//!
//! Callers compare us against the Python pipeline, so this file ports the postprocessing of
//! transformers 4.57 (`transformers/pipelines/token_classification.py`: `postprocess`,
//! `gather_pre_entities`, `aggregate`, `aggregate_words` / `aggregate_word`, `group_entities` /
//! `group_sub_entities` / `get_tag`, `aggregate_overlapping_entities`) for a fast tokenizer, in the
//! same float types:
//!
//! * scores are numpy's float32 softmax per token (`np.exp(x - max) / sum`, see
//!   [`super::numpy_f32`]);
//! * special tokens are skipped; a token is a subword when its text is longer or shorter than the
//!   sentence slice its offsets cover (`word_aware`: the tokenizer model has a
//!   `continuing_subword_prefix`, as WordPiece's "##"), otherwise when it does not start the
//!   sentence and neither the character before it nor its first character is a space (the
//!   pipeline's fallback heuristic); unknown tokens take the sentence slice as their word and are
//!   never subwords;
//! * `none` returns one entity per token, `simple` groups tokens, `first` / `average` / `max` first
//!   merge subwords into words (the first token's label, the mean scores, or the token with the
//!   highest score) and then group; grouping joins an entity to the previous one when their tags
//!   (label without a leading "B-" / "I-") match and it is not a "B-", and names the group after
//!   the first label with everything up to its first "-" removed; the group score is the float32
//!   `np.nanmean` of the member scores;
//! * entities whose label is in `ignore_labels` are dropped; with several chunks (a stride) the
//!   overlapping entities are resolved as the pipeline does.
//!
//! `word` is what the tokenizer's `convert_tokens_to_string` makes of the member tokens (for
//! grouped words: of the member words), so callers pass that function in; with a byte-level
//! decoder it garbles non-ASCII words, as it does in Python. Offsets must be absolute character
//! offsets into `sentence` (the pipeline's `is_split_into_words` rescaling is the caller's job).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::{char_text::CharText, numpy_f32};

/// transformers' `AggregationStrategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aggregation {
    None,
    Simple,
    First,
    Average,
    Max,
}

impl FromStr for Aggregation {
    type Err = String;

    /// The strategy names the pipeline accepts ("none", "simple", "first", "average", "max"), in
    /// any case (it looks them up as `AggregationStrategy[name.upper()]`).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "simple" => Ok(Self::Simple),
            "first" => Ok(Self::First),
            "average" => Ok(Self::Average),
            "max" => Ok(Self::Max),
            _ => Err(format!("unknown aggregation strategy {name:?}")),
        }
    }
}

/// One token of the encoded sentence with its logits.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NerToken {
    pub id: u32,
    /// `convert_ids_to_tokens(id)`, e.g. "##ão" or "ĠPaulo".
    pub token: String,
    /// Character offsets into the sentence.
    pub offsets: (usize, usize),
    /// From the special-tokens mask (CLS, SEP, padding).
    pub special: bool,
    /// One logit per label.
    pub logits: Vec<f32>,
}

/// What the pipeline knows besides the tokens.
#[derive(Debug, Clone, Copy)]
pub struct NerSettings<'a> {
    /// `model.config.id2label`, by index.
    pub id2label: &'a [String],
    pub strategy: Aggregation,
    /// Labels (or group labels) to drop; the pipeline's default is `["O"]`.
    pub ignore_labels: &'a [String],
    /// The tokenizer model has a `continuing_subword_prefix` (WordPiece "##"); otherwise the
    /// fallback heuristic decides what is a subword.
    pub word_aware: bool,
    /// `tokenizer.unk_token_id`.
    pub unk_id: Option<u32>,
}

/// One entity, as the pipeline returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entity {
    /// The key is "entity" with aggregation "none" (then `index` is set) and "entity_group"
    /// otherwise.
    pub label: String,
    pub score: f32,
    /// Token index in the encoding (aggregation "none" only).
    pub index: Option<usize>,
    pub word: String,
    /// Character offsets into the sentence.
    pub start: usize,
    pub end: usize,
}

/// Inputs the pipeline would fail on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NerError {
    /// A token has no logits.
    NoLogits { token: usize },
    /// Tokens disagree on the number of logits (the model's output is a matrix).
    RaggedLogits { token: usize, expected: usize, found: usize },
    /// The best label index has no entry in `id2label` (`KeyError` in Python).
    UnknownLabel { index: usize },
    /// Several chunks with aggregation "none": transformers refuses a stride without aggregation.
    ChunksWithoutAggregation,
}

impl fmt::Display for NerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoLogits { token } => write!(f, "token {token} has no logits"),
            Self::RaggedLogits { token, expected, found } => {
                write!(f, "token {token} has {found} logits, the first token {expected}")
            }
            Self::UnknownLabel { index } => write!(f, "label index {index} is not in id2label"),
            Self::ChunksWithoutAggregation => {
                write!(
                    f,
                    "several chunks (a stride) need an aggregation strategy other than \"none\""
                )
            }
        }
    }
}

impl std::error::Error for NerError {}

/// `tokenizer.convert_tokens_to_string`.
pub type TokensToString<'a> = &'a dyn Fn(&[&str]) -> String;

/// The entities of one encoded sentence (one chunk).
pub fn aggregate(
    sentence: &str,
    tokens: &[NerToken],
    settings: &NerSettings<'_>,
    convert_tokens_to_string: TokensToString<'_>,
) -> Result<Vec<Entity>, NerError> {
    aggregate_chunks(sentence, &[tokens], settings, convert_tokens_to_string)
}

/// The entities of a sentence encoded in several overlapping chunks (the pipeline's `stride`);
/// with one chunk the same as [`aggregate`].
pub fn aggregate_chunks(
    sentence: &str,
    chunks: &[&[NerToken]],
    settings: &NerSettings<'_>,
    convert_tokens_to_string: TokensToString<'_>,
) -> Result<Vec<Entity>, NerError> {
    if chunks.len() > 1 && settings.strategy == Aggregation::None {
        return Err(NerError::ChunksWithoutAggregation);
    }
    let sentence = CharText::new(sentence);
    let grouper = Grouper { settings, convert_tokens_to_string };
    let mut entities = Vec::new();
    for tokens in chunks {
        let scores = softmax_rows(tokens)?;
        let pre_entities = gather_pre_entities(&sentence, tokens, scores, settings);
        let grouped = grouper.aggregate(pre_entities)?;
        entities.extend(grouped.into_iter().filter(|e| !settings.ignore_labels.contains(&e.label)));
    }
    if chunks.len() > 1 {
        entities = aggregate_overlapping_entities(entities);
    }
    Ok(entities)
}

/// The float32 softmax of every token's logits, as the pipeline's numpy lines compute it.
fn softmax_rows(tokens: &[NerToken]) -> Result<Vec<Vec<f32>>, NerError> {
    let labels = tokens.first().map_or(0, |t| t.logits.len());
    tokens
        .iter()
        .enumerate()
        .map(|(i, token)| {
            if token.logits.is_empty() {
                return Err(NerError::NoLogits { token: i });
            }
            if token.logits.len() != labels {
                return Err(NerError::RaggedLogits {
                    token: i,
                    expected: labels,
                    found: token.logits.len(),
                });
            }
            Ok(softmax(&token.logits))
        })
        .collect()
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = np_max(logits);
    let exps: Vec<f32> = logits.iter().map(|&x| numpy_f32::exp(x - max)).collect();
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

/// `np.argmax`: the first maximum, or the first NaN.
fn np_argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v.is_nan() {
            return i;
        }
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// A non-special token ready for aggregation.
#[derive(Debug, Clone, PartialEq)]
struct PreEntity {
    word: String,
    scores: Vec<f32>,
    start: usize,
    end: usize,
    index: usize,
    is_subword: bool,
}

/// `gather_pre_entities`.
fn gather_pre_entities(
    sentence: &CharText<'_>,
    tokens: &[NerToken],
    scores: Vec<Vec<f32>>,
    settings: &NerSettings<'_>,
) -> Vec<PreEntity> {
    tokens
        .iter()
        .zip(scores)
        .enumerate()
        .filter(|(_, (token, _))| !token.special)
        .map(|(index, (token, scores))| {
            let (start, end) = token.offsets;
            let word_ref = sentence.slice(start, end);
            let (word, is_subword) = if Some(token.id) == settings.unk_id {
                (word_ref.to_string(), false)
            } else if settings.word_aware {
                (token.token.clone(), token.token.chars().count() != word_ref.chars().count())
            } else {
                let around = sentence.slice(start.saturating_sub(1), start.saturating_add(1));
                (token.token.clone(), start > 0 && !around.contains(' '))
            };
            PreEntity { word, scores, start, end, index, is_subword }
        })
        .collect()
}

/// A token or word entity before grouping ("entity" in the pipeline's dicts).
#[derive(Debug, Clone, PartialEq)]
struct TokenEntity {
    label: String,
    score: f32,
    index: Option<usize>,
    word: String,
    start: usize,
    end: usize,
}

/// `aggregate` and the grouping steps, which need the labels and the tokenizer's decoder.
struct Grouper<'s, 'f> {
    settings: &'s NerSettings<'s>,
    convert_tokens_to_string: TokensToString<'f>,
}

impl Grouper<'_, '_> {
    fn label(&self, index: usize) -> Result<String, NerError> {
        self.settings.id2label.get(index).cloned().ok_or(NerError::UnknownLabel { index })
    }

    fn to_string(&self, words: &[&str]) -> String {
        (self.convert_tokens_to_string)(words)
    }

    fn aggregate(&self, pre_entities: Vec<PreEntity>) -> Result<Vec<Entity>, NerError> {
        let entities = match self.settings.strategy {
            Aggregation::None | Aggregation::Simple => pre_entities
                .into_iter()
                .map(|pre| {
                    let best = np_argmax(&pre.scores);
                    Ok(TokenEntity {
                        label: self.label(best)?,
                        score: pre.scores[best],
                        index: Some(pre.index),
                        word: pre.word,
                        start: pre.start,
                        end: pre.end,
                    })
                })
                .collect::<Result<Vec<_>, NerError>>()?,
            Aggregation::First | Aggregation::Average | Aggregation::Max => {
                self.aggregate_words(&pre_entities)?
            }
        };
        if self.settings.strategy == Aggregation::None {
            return Ok(entities
                .into_iter()
                .map(|e| Entity {
                    label: e.label,
                    score: e.score,
                    index: e.index,
                    word: e.word,
                    start: e.start,
                    end: e.end,
                })
                .collect());
        }
        Ok(self.group_entities(entities))
    }

    /// `aggregate_words`: a word is a token followed by its subwords (a leading subword starts a
    /// word of its own).
    fn aggregate_words(&self, pre_entities: &[PreEntity]) -> Result<Vec<TokenEntity>, NerError> {
        let mut words = Vec::new();
        let mut group_start = 0;
        for (i, pre) in pre_entities.iter().enumerate().skip(1) {
            if !pre.is_subword {
                words.push(self.aggregate_word(&pre_entities[group_start..i])?);
                group_start = i;
            }
        }
        if !pre_entities.is_empty() {
            words.push(self.aggregate_word(&pre_entities[group_start..])?);
        }
        Ok(words)
    }

    /// `aggregate_word` for a non-empty group of tokens.
    fn aggregate_word(&self, group: &[PreEntity]) -> Result<TokenEntity, NerError> {
        let tokens: Vec<&str> = group.iter().map(|p| p.word.as_str()).collect();
        let word = self.to_string(&tokens);
        let (best, score) = match self.settings.strategy {
            Aggregation::Average => {
                let rows: Vec<&[f32]> = group.iter().map(|p| p.scores.as_slice()).collect();
                let average = nanmean_columns(&rows);
                let best = np_argmax(&average);
                (best, average[best])
            }
            Aggregation::Max => {
                // Python's max(key=...) keeps the first of equal keys.
                let mut chosen = &group[0];
                for pre in &group[1..] {
                    if np_max(&pre.scores) > np_max(&chosen.scores) {
                        chosen = pre;
                    }
                }
                let best = np_argmax(&chosen.scores);
                (best, chosen.scores[best])
            }
            // First (None and Simple never get here).
            _ => {
                let best = np_argmax(&group[0].scores);
                (best, group[0].scores[best])
            }
        };
        Ok(TokenEntity {
            label: self.label(best)?,
            score,
            index: None,
            word,
            start: group[0].start,
            end: group[group.len() - 1].end,
        })
    }

    /// `group_entities`.
    fn group_entities(&self, entities: Vec<TokenEntity>) -> Vec<Entity> {
        let mut groups = Vec::new();
        let mut current: Vec<TokenEntity> = Vec::new();
        for entity in entities {
            if let Some(last) = current.last() {
                let (bi, tag) = get_tag(&entity.label);
                let (_, last_tag) = get_tag(&last.label);
                if !(tag == last_tag && bi != Bi::B) {
                    groups.push(self.group_sub_entities(&current));
                    current.clear();
                }
            }
            current.push(entity);
        }
        if !current.is_empty() {
            groups.push(self.group_sub_entities(&current));
        }
        groups
    }

    /// `group_sub_entities` for a non-empty run of entities.
    fn group_sub_entities(&self, entities: &[TokenEntity]) -> Entity {
        let first = &entities[0];
        // entities[0]["entity"].split("-", 1)[-1]
        let label =
            first.label.split_once('-').map_or(first.label.as_str(), |(_, rest)| rest).to_string();
        let scores: Vec<f32> = entities.iter().map(|e| e.score).collect();
        let words: Vec<&str> = entities.iter().map(|e| e.word.as_str()).collect();
        Entity {
            label,
            score: nanmean(&scores),
            index: None,
            word: self.to_string(&words),
            start: first.start,
            end: entities[entities.len() - 1].end,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bi {
    B,
    I,
}

/// `get_tag`: "B-X" and "I-X" give X; any other label is its own tag, as a continuation.
fn get_tag(label: &str) -> (Bi, &str) {
    if let Some(tag) = label.strip_prefix("B-") {
        (Bi::B, tag)
    } else if let Some(tag) = label.strip_prefix("I-") {
        (Bi::I, tag)
    } else {
        (Bi::I, label)
    }
}

/// `np.nanmean` of a float32 vector: the pairwise float32 sum of the non-NaN values, divided by
/// their count in float64 and rounded back to float32 (NaN when there are none).
fn nanmean(values: &[f32]) -> f32 {
    let kept: Vec<f32> = values.iter().map(|&v| if v.is_nan() { 0.0 } else { v }).collect();
    let count = values.iter().filter(|v| !v.is_nan()).count();
    (f64::from(numpy_f32::sum(&kept)) / count as f64) as f32
}

/// `np.nanmean(np.stack(rows), axis=0)` for equally long rows. numpy sums down the columns one row
/// at a time in float32 (with a single column it reduces contiguously, pairwise), then divides by
/// the count of non-NaN values in float64 and rounds back to float32.
fn nanmean_columns(rows: &[&[f32]]) -> Vec<f32> {
    let width = rows.first().map_or(0, |r| r.len());
    (0..width)
        .map(|j| {
            let column: Vec<f32> =
                rows.iter().map(|r| r[j]).map(|v| if v.is_nan() { 0.0 } else { v }).collect();
            let count = rows.iter().filter(|r| !r[j].is_nan()).count();
            let total = if width == 1 {
                numpy_f32::sum(&column)
            } else {
                column.iter().fold(0.0f32, |acc, v| acc + v)
            };
            (f64::from(total) / count as f64) as f32
        })
        .collect()
}

/// `aggregate_overlapping_entities`: sorted by start (stably), an entity starting inside the kept
/// one replaces it when it is longer, or as long with a higher score.
fn aggregate_overlapping_entities(mut entities: Vec<Entity>) -> Vec<Entity> {
    if entities.is_empty() {
        return entities;
    }
    entities.sort_by_key(|e| e.start);
    let length = |e: &Entity| e.end as i64 - e.start as i64;
    let mut kept = Vec::new();
    // The loop starts again at entities[0], so an empty first entity is kept twice, as in Python.
    let mut previous = entities[0].clone();
    for entity in entities {
        if previous.start <= entity.start && entity.start < previous.end {
            let (current_length, previous_length) = (length(&entity), length(&previous));
            if current_length > previous_length
                || (current_length == previous_length && entity.score > previous.score)
            {
                previous = entity;
            }
        } else {
            kept.push(std::mem::replace(&mut previous, entity));
        }
    }
    kept.push(previous);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::HashMap;

    #[derive(Deserialize)]
    struct Vectors {
        cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Case {
        name: String,
        word_aware: bool,
        unk_id: Option<u32>,
        id2label: Vec<String>,
        sentence: String,
        chunks: Vec<ChunkJson>,
        runs: Vec<Run>,
        convert_tokens_to_string: Vec<(Vec<String>, String)>,
    }

    #[derive(Deserialize)]
    struct ChunkJson {
        tokens: Vec<TokenJson>,
        scores: Vec<Vec<f32>>,
    }

    #[derive(Deserialize)]
    struct TokenJson {
        id: u32,
        token: String,
        offsets: (usize, usize),
        special: bool,
        logits: Vec<f32>,
    }

    #[derive(Deserialize)]
    struct Run {
        aggregation_strategy: String,
        ignore_labels: Vec<String>,
        expected: Vec<EntityJson>,
    }

    #[derive(Deserialize, Debug)]
    struct EntityJson {
        label: String,
        grouped: bool,
        score: f32,
        word: String,
        start: usize,
        end: usize,
        #[serde(default)]
        index: Option<usize>,
    }

    fn vectors() -> Vectors {
        serde_json::from_str(include_str!("../../tests/fixtures/postprocess/ner_vectors.json"))
            .unwrap()
    }

    fn tokens(chunk: &ChunkJson) -> Vec<NerToken> {
        chunk
            .tokens
            .iter()
            .map(|t| NerToken {
                id: t.id,
                token: t.token.clone(),
                offsets: t.offsets,
                special: t.special,
                logits: t.logits.clone(),
            })
            .collect()
    }

    #[test]
    fn scores_match_numpy_bits() {
        let mut checked = 0;
        for case in vectors().cases {
            for chunk in &case.chunks {
                let got = softmax_rows(&tokens(chunk)).unwrap();
                assert_eq!(got.len(), chunk.scores.len());
                for (t, (g, w)) in got.iter().zip(&chunk.scores).enumerate() {
                    for (l, (a, b)) in g.iter().zip(w).enumerate() {
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{} token {t} label {l}: {a:e} vs {b:e}",
                            case.name
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked}");
    }

    #[test]
    fn pipeline_vectors() {
        let mut runs = 0;
        for case in vectors().cases {
            let table: HashMap<Vec<String>, String> =
                case.convert_tokens_to_string.iter().cloned().collect();
            let name = case.name.clone();
            let decode = move |tokens: &[&str]| -> String {
                let key: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
                match table.get(&key) {
                    Some(s) => s.clone(),
                    None => panic!(
                        "{name}: convert_tokens_to_string({key:?}) was never called by Python"
                    ),
                }
            };
            let chunks: Vec<Vec<NerToken>> = case.chunks.iter().map(tokens).collect();
            let chunk_refs: Vec<&[NerToken]> = chunks.iter().map(Vec::as_slice).collect();
            for run in &case.runs {
                let strategy: Aggregation = run.aggregation_strategy.parse().unwrap();
                let settings = NerSettings {
                    id2label: &case.id2label,
                    strategy,
                    ignore_labels: &run.ignore_labels,
                    word_aware: case.word_aware,
                    unk_id: case.unk_id,
                };
                let label = format!("{} {:?} ignore {:?}", case.name, strategy, run.ignore_labels);
                let got =
                    aggregate_chunks(&case.sentence, &chunk_refs, &settings, &decode).unwrap();
                assert_eq!(
                    got.len(),
                    run.expected.len(),
                    "{label}: {got:#?}\nvs {:#?}",
                    run.expected
                );
                for (g, w) in got.iter().zip(&run.expected) {
                    assert_eq!(g.label, w.label, "{label}");
                    assert_eq!(g.index.is_none(), w.grouped, "{label}");
                    assert_eq!(g.index, w.index, "{label}");
                    assert_eq!(g.word, w.word, "{label}");
                    assert_eq!((g.start, g.end), (w.start, w.end), "{label}: {}", w.word);
                    let relative = (g.score - w.score).abs() / w.score.abs().max(f32::MIN_POSITIVE);
                    assert!(relative <= 1e-6, "{label}: {} vs {}", g.score, w.score);
                    assert_eq!(
                        g.score.to_bits(),
                        w.score.to_bits(),
                        "{label}: {} vs {}",
                        g.score,
                        w.score
                    );
                }
                runs += 1;
            }
        }
        assert!(runs >= 150, "{runs}");
    }

    fn token(id: u32, text: &str, offsets: (usize, usize), logits: &[f32]) -> NerToken {
        NerToken { id, token: text.to_string(), offsets, special: false, logits: logits.to_vec() }
    }

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn join(tokens: &[&str]) -> String {
        tokens.join(" ").replace(" ##", "")
    }

    #[test]
    fn strategies_on_a_split_word() {
        // "São Paulo" as [S] [##ão] [Paulo]: the subword disagrees with its word's first token.
        let id2label = labels(&["O", "B-LOC", "I-LOC", "B-PER"]);
        let tokens = [
            NerToken {
                id: 0,
                token: "[CLS]".into(),
                special: true,
                logits: vec![0.0; 4],
                ..Default::default()
            },
            token(10, "S", (0, 1), &[0.0, 3.0, 0.0, 0.0]),
            token(11, "##ão", (1, 3), &[0.0, 0.0, 0.0, 5.0]),
            token(12, "Paulo", (4, 9), &[0.0, 0.0, 4.0, 0.0]),
        ];
        let ignore = labels(&["O"]);
        let run = |strategy| {
            let settings = NerSettings {
                id2label: &id2label,
                strategy,
                ignore_labels: &ignore,
                word_aware: true,
                unk_id: Some(1),
            };
            aggregate("São Paulo", &tokens, &settings, &join).unwrap()
        };
        let none = run(Aggregation::None);
        assert_eq!(none.iter().map(|e| e.index).collect::<Vec<_>>(), [Some(1), Some(2), Some(3)]);
        assert_eq!(none[1].word, "##ão");
        let simple = run(Aggregation::Simple);
        let groups: Vec<(&str, &str)> =
            simple.iter().map(|e| (e.label.as_str(), e.word.as_str())).collect();
        // WordPiece's decoder keeps the "##" of a leading subword.
        assert_eq!(groups, [("LOC", "S"), ("PER", "##ão"), ("LOC", "Paulo")]);
        let first = run(Aggregation::First);
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].label.as_str(), first[0].word.as_str()), ("LOC", "São Paulo"));
        assert_eq!((first[0].start, first[0].end), (0, 9));
        let max = run(Aggregation::Max);
        let groups: Vec<(&str, &str)> =
            max.iter().map(|e| (e.label.as_str(), e.word.as_str())).collect();
        assert_eq!(
            groups,
            [("PER", "São"), ("LOC", "Paulo")],
            "I-LOC after B-PER starts a new group"
        );
    }

    #[test]
    fn unknown_tokens_take_the_sentence_text() {
        let id2label = labels(&["O", "B-MISC"]);
        let tokens = [token(1, "[UNK]", (2, 3), &[0.0, 2.0]), token(7, "##x", (3, 4), &[0.0, 2.0])];
        let settings = NerSettings {
            id2label: &id2label,
            strategy: Aggregation::None,
            ignore_labels: &[],
            word_aware: true,
            unk_id: Some(1),
        };
        let got = aggregate("a 😀x", &tokens, &settings, &join).unwrap();
        assert_eq!(got[0].word, "😀");
        assert_eq!((got[0].start, got[0].end), (2, 3));
    }

    #[test]
    fn fallback_heuristic() {
        let sentence = CharText::new("ab cd,ef");
        let settings = NerSettings {
            id2label: &[],
            strategy: Aggregation::First,
            ignore_labels: &[],
            word_aware: false,
            unk_id: None,
        };
        let tokens = [
            token(1, "ab", (0, 2), &[1.0]),
            token(2, "cd", (3, 5), &[1.0]),
            token(3, ",", (5, 6), &[1.0]),
            token(4, "ef", (6, 8), &[1.0]),
        ];
        let scores = softmax_rows(&tokens).unwrap();
        let subword: Vec<bool> = gather_pre_entities(&sentence, &tokens, scores, &settings)
            .iter()
            .map(|p| p.is_subword)
            .collect();
        assert_eq!(subword, [false, false, true, true]);
    }

    #[test]
    fn empty_input_and_errors() {
        let id2label = labels(&["O", "B-PER"]);
        let settings = NerSettings {
            id2label: &id2label,
            strategy: Aggregation::Average,
            ignore_labels: &[],
            word_aware: true,
            unk_id: None,
        };
        assert_eq!(aggregate("", &[], &settings, &join).unwrap(), vec![]);
        let ragged = [token(1, "a", (0, 1), &[0.0, 1.0]), token(2, "b", (1, 2), &[0.0])];
        assert_eq!(
            aggregate("ab", &ragged, &settings, &join),
            Err(NerError::RaggedLogits { token: 1, expected: 2, found: 1 })
        );
        let unknown = [token(1, "a", (0, 1), &[0.0, 1.0, 5.0])];
        assert_eq!(
            aggregate("a", &unknown, &settings, &join),
            Err(NerError::UnknownLabel { index: 2 })
        );
        let none = NerSettings { strategy: Aggregation::None, ..settings };
        let one = [token(1, "a", (0, 1), &[0.0, 1.0])];
        assert_eq!(
            aggregate_chunks("a", &[&one, &one], &none, &join),
            Err(NerError::ChunksWithoutAggregation)
        );
        // Out-of-range offsets slice like Python: no panic.
        let far = [token(1, "abc", (5, 9), &[0.0, 1.0])];
        assert_eq!(aggregate("a", &far, &settings, &join).unwrap()[0].word, "abc");
    }

    #[test]
    fn group_labels_and_tags() {
        assert_eq!(get_tag("B-PER"), (Bi::B, "PER"));
        assert_eq!(get_tag("I-PER"), (Bi::I, "PER"));
        assert_eq!(get_tag("E-LOC"), (Bi::I, "E-LOC"));
        assert_eq!(get_tag("O"), (Bi::I, "O"));
        let id2label = labels(&["X-Y-Z", "E-LOC", "B-"]);
        let settings = NerSettings {
            id2label: &id2label,
            strategy: Aggregation::Simple,
            ignore_labels: &[],
            word_aware: true,
            unk_id: None,
        };
        let tokens = [
            token(1, "a", (0, 1), &[5.0, 0.0, 0.0]),
            token(2, "b", (2, 3), &[0.0, 5.0, 0.0]),
            token(3, "c", (4, 5), &[0.0, 0.0, 5.0]),
        ];
        let got: Vec<String> = aggregate("a b c", &tokens, &settings, &join)
            .unwrap()
            .into_iter()
            .map(|e| e.label)
            .collect();
        assert_eq!(got, ["Y-Z", "LOC", ""]);
    }

    #[test]
    fn overlapping_chunks() {
        let e = |start, end, score: f32, label: &str| Entity {
            label: label.into(),
            score,
            index: None,
            word: String::new(),
            start,
            end,
        };
        let merged = aggregate_overlapping_entities(vec![
            e(4, 9, 0.5, "b"),
            e(0, 3, 0.9, "a"),
            e(4, 9, 0.7, "c"),
            e(5, 12, 0.1, "d"),
        ]);
        let labels: Vec<&str> = merged.iter().map(|e| e.label.as_str()).collect();
        assert_eq!(labels, ["a", "d"]);
        // Python's loop revisits entities[0]: an empty first entity comes out twice.
        let twice = aggregate_overlapping_entities(vec![e(2, 2, 0.5, "x")]);
        assert_eq!(twice.len(), 2);
    }

    #[test]
    fn nanmean_like_numpy() {
        assert_eq!(nanmean(&[1.0, f32::NAN, 2.0]), 1.5);
        assert!(nanmean(&[f32::NAN]).is_nan());
        let rows: [&[f32]; 2] = [&[1.0, f32::NAN], &[2.0, 4.0]];
        assert_eq!(nanmean_columns(&rows), [1.5, 4.0]);
    }

    #[test]
    fn nan_logits_do_not_panic() {
        let id2label = labels(&["O", "B-PER", "I-PER"]);
        let tokens = [
            token(1, "a", (0, 1), &[f32::NAN, 1.0, 0.0]),
            token(2, "##b", (1, 2), &[0.0, 1.0, 0.0]),
            token(3, "c", (3, 4), &[0.0, 0.0, 1.0]),
        ];
        for strategy in [
            Aggregation::None,
            Aggregation::Simple,
            Aggregation::First,
            Aggregation::Average,
            Aggregation::Max,
        ] {
            let settings = NerSettings {
                id2label: &id2label,
                strategy,
                ignore_labels: &[],
                word_aware: true,
                unk_id: None,
            };
            let got = aggregate("ab c", &tokens, &settings, &join).unwrap();
            assert!(!got.is_empty());
            let chunks: [&[NerToken]; 2] = [&tokens, &tokens];
            if strategy != Aggregation::None {
                assert!(!aggregate_chunks("ab c", &chunks, &settings, &join).unwrap().is_empty());
            }
        }
    }

    #[test]
    fn strategy_names() {
        assert_eq!("AVERAGE".parse::<Aggregation>(), Ok(Aggregation::Average));
        assert_eq!("simple".parse::<Aggregation>(), Ok(Aggregation::Simple));
        assert!("mean".parse::<Aggregation>().is_err());
    }
}
