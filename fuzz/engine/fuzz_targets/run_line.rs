//! A `lote run` line between two good lines of the same window, for each task on its tiny
//! fixture model: the bad line gets an error of its own that names what is wrong and shows no
//! internals, and its neighbours are answered as if it were not there. The first byte picks the
//! task; the second what the rest of the input is: the whole line, the task's text (arbitrary
//! Unicode: huge strings, NUL, lone combining marks, RTL, CJK, emoji), or the line's `params`.
#![no_main]

use std::{path::PathBuf, sync::OnceLock};

use libfuzzer_sys::fuzz_target;
use lote::{
    device::Placement,
    engine::policy::Policy,
    run::{RunRequest, RunSummary, Runner},
    settings::{SettingsLoader, Task},
};
use serde_json::{Map, Value, json};

/// (task, fixture model, a good line, the input fields arbitrary text may replace).
const CASES: [(&str, &str, &str, &[&str]); 10] = [
    (
        "question-answering",
        "bert-qa",
        r#"{"question": "Onde fica a casa?", "context": "A casa da minha família fica perto do rio, em São João."}"#,
        &["question", "context"],
    ),
    ("fill-mask", "bert-mlm", r#"{"text": "A [MASK] da minha família fica perto do rio."}"#, &["text"]),
    (
        "text-classification",
        "distilbert-cls",
        r#"{"text": "Eu adoro café e pão de queijo!", "text_pair": "Não gosto de chá."}"#,
        &["text", "text_pair"],
    ),
    (
        "token-classification",
        "electra-ner",
        r#"{"text": "João mora em São Paulo e trabalha na Petrobras."}"#,
        &["text"],
    ),
    ("feature-extraction", "bert-embed-mean", r#"{"text": "ação, coração e a avó"}"#, &["text"]),
    (
        "rerank",
        "pairs/bert-cross-encoder",
        r#"{"query": "Onde fica Roma?", "documents": ["Roma fica na Itália.", "O rato roeu a roupa."]}"#,
        &["query", "documents"],
    ),
    (
        "zero-shot-classification",
        "pairs/bert-nli",
        r#"{"text": "O time venceu o jogo ontem.", "params": {"candidate_labels": ["esporte", "política"]}}"#,
        &["text"],
    ),
    (
        "summarization",
        "generation/bart",
        r#"{"text": "O rato roeu a roupa do rei de Roma, e a rainha resolveu remendar.", "params": {"max_new_tokens": 6}}"#,
        &["text"],
    ),
    (
        "translation",
        "translation/t5-translation",
        r#"{"text": "The house is near the river.", "params": {"max_new_tokens": 6}}"#,
        &["text"],
    ),
    ("text-generation", "generation/gpt2", r#"{"text": "O rato roeu", "params": {"max_new_tokens": 6}}"#, &["text"]),
];

/// What an error shown to a caller must not contain: a Rust panic, a libtorch error or
/// backtrace, a source or library path, or the engine's masked internal failure (which means
/// the input reached a bug).
const INTERNALS: [&str; 7] =
    ["panicked", "unwrap()", "Torch(", "backtrace", ".rs:", "/site-packages/", "the model failed"];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models")
}

/// One runner per task, loaded on first use (the whole set takes a few seconds).
fn runners() -> &'static Vec<Runner> {
    static RUNNERS: OnceLock<Vec<Runner>> = OnceLock::new();
    RUNNERS.get_or_init(|| {
        let settings = SettingsLoader::new()
            .file_if_present("/nonexistent/lote-fuzz.toml")
            .env([("LOTE__DEVICE__KIND", "cpu"), ("LOTE__DEVICE__THREADS", "1")])
            .load()
            .expect("default settings");
        let placement = Placement::resolve(&settings.device).expect("the CPU");
        CASES
            .iter()
            .map(|(task, model, _, _)| {
                let model = fixtures().join(model);
                let task: Task = task.parse().expect("a task name");
                let request = RunRequest {
                    model: &model,
                    task,
                    input: &model,
                    output: &model,
                    params: &[],
                    placement,
                    policy: Policy::from_settings(&settings.batching),
                    max_documents: settings.server.limits.max_inputs_per_call,
                };
                Runner::load(&request).unwrap_or_else(|e| panic!("{}: {e}", model.display()))
            })
            .collect()
    })
}

/// The line under test: `rest` as the whole line, as one of the input fields, or as `params`.
fn fuzzed_line(good: &str, fields: &[&str], mode: u8, rest: &[u8]) -> String {
    let text = String::from_utf8_lossy(rest).into_owned();
    let mut object: Map<String, Value> = serde_json::from_str(good).expect("a good line");
    match mode % 3 {
        0 => return text,
        1 => {
            let field = fields[(mode as usize / 3) % fields.len()];
            let value = if field == "documents" { json!([text, "Roma"]) } else { json!(text) };
            object.insert(field.into(), value);
        }
        _ => {
            let params = serde_json::from_str(&text).unwrap_or(Value::String(text));
            object.insert("params".into(), params);
        }
    }
    Value::Object(object).to_string()
}

fuzz_target!(|data: &[u8]| {
    let [which, mode, rest @ ..] = data else { return };
    let index = *which as usize % CASES.len();
    let (task, _, good, fields) = CASES[index];
    let line = fuzzed_line(good, fields, *mode, rest);
    let window = [(1, good.to_string()), (2, line), (3, good.to_string())];
    let mut summary = RunSummary::default();
    let out = runners()[index].answer_lines(&Map::new(), &window, &mut summary);
    assert_eq!(out.len(), 3, "{task}: one output line per input line");
    for (i, answered) in out.iter().enumerate() {
        assert_eq!(answered["line"], json!(i + 1), "{task}: in input order");
    }
    for neighbour in [&out[0], &out[2]] {
        assert!(neighbour.get("error").is_none(), "{task}: a good line failed: {neighbour}");
    }
    if let Some(error) = out[1].get("error") {
        let message = error.as_str().expect("an error is a string");
        assert!(!message.is_empty(), "{task}: an empty error");
        for internal in INTERNALS {
            assert!(!message.contains(internal), "{task}: internals in `{message}`");
        }
    }
});
