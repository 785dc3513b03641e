//! A task result as the JSON fields `lote run` writes on its output line and jobs store as a
//! document's result: one mapping, so a file answered offline and a job answered by a cluster
//! read the same.

use serde_json::{Map, Value, json};

use super::{TaskOutput, TaskResult, generate::Generation};
use crate::settings::Task;

/// Generation output fields: `summary_text` (a string, or a list when several sequences are
/// returned) or `generated_text` (always a list), with `output_tokens` and `finish_reason` of
/// the same shape, `input_tokens` and `truncated`.
pub fn generation_fields(
    task: Task,
    generation: &Generation,
    input_tokens: usize,
    truncated: bool,
) -> Map<String, Value> {
    let several = task == Task::TextGeneration || generation.texts.len() > 1;
    let shape = |values: Vec<Value>| {
        if several {
            Value::Array(values)
        } else {
            values.into_iter().next().unwrap_or(Value::Null)
        }
    };
    let key = match task {
        Task::Summarization => "summary_text",
        Task::Translation => "translation_text",
        _ => "generated_text",
    };
    let mut out = Map::new();
    out.insert(key.into(), shape(generation.texts.iter().map(|t| json!(t)).collect()));
    out.insert(
        "output_tokens".into(),
        shape(generation.output_tokens.iter().map(|n| json!(n)).collect()),
    );
    out.insert(
        "finish_reason".into(),
        shape(generation.finish_reasons.iter().map(|r| json!(r)).collect()),
    );
    out.insert("input_tokens".into(), json!(input_tokens));
    out.insert("truncated".into(), json!(truncated));
    out
}

/// The result's fields as the output line names them: `answers`, `predictions`, `labels`,
/// `entities` (keyed `entity` per token, `entity_group` when aggregated, as transformers does),
/// `embedding`, `results` (rerank), `sequence` + `labels` + `scores` (zero-shot, as the
/// pipeline names them), plus `input_tokens` and `truncated`.
pub fn result_fields(result: &TaskResult) -> Map<String, Value> {
    let mut out = Map::new();
    let (key, value) = match &result.output {
        TaskOutput::Answers(answers) => ("answers", json!(answers)),
        TaskOutput::Predictions(predictions) => ("predictions", json!(predictions)),
        TaskOutput::Labels(labels) => ("labels", json!(labels)),
        TaskOutput::Embedding(embedding) => ("embedding", json!(embedding)),
        TaskOutput::Ranking(ranked) => ("results", json!(ranked)),
        TaskOutput::ZeroShot(answer) => {
            // The pipeline's own fields: sequence, labels, scores.
            out.insert("sequence".into(), json!(answer.sequence));
            out.insert("labels".into(), json!(answer.labels));
            ("scores", json!(answer.scores))
        }
        TaskOutput::Entities(entities) => (
            "entities",
            Value::Array(
                entities
                    .iter()
                    .map(|e| match e.index {
                        Some(index) => json!({"entity": e.label, "score": e.score, "index": index,
                            "word": e.word, "start": e.start, "end": e.end}),
                        None => json!({"entity_group": e.label, "score": e.score,
                            "word": e.word, "start": e.start, "end": e.end}),
                    })
                    .collect(),
            ),
        ),
    };
    out.insert(key.into(), value);
    out.insert("input_tokens".into(), json!(result.input_tokens));
    out.insert("truncated".into(), json!(result.truncated));
    out
}
