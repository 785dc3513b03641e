//! `lote run` end to end on the tiny fixtures: output lines in input order with the task's
//! fields, each bad line its own exact error while the others are answered, and exit codes
//! 0 / 1 / 2.

use crate::common;

use std::path::Path;

use serde_json::Value;

fn run(model: &str, task: &str, lines: &[&str], params: &[&str]) -> (i32, Vec<Value>, String) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let mut command = common::lote_command();
    command
        .args(["run", "--model"])
        .arg(common::fixture_model(model))
        .args(["--task", task, "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .env("LOTE__DEVICE__KIND", "cpu");
    for param in params {
        command.args(["--param", param]);
    }
    let result = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr).into_owned();
    let out = read_lines(&output);
    (result.status.code().unwrap_or(-1), out, stderr)
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn every_line_is_answered_in_order_with_identity_and_counters() {
    let lines = [
        r#"{"id": "a", "text": "A [MASK] foi concluída com sucesso e você não precisa fazer mais nada."}"#,
        r#"{"id": "b", "text": "Eu adoro café ☕ e [MASK] de queijo 😀!"}"#,
        r#"{"id": 3, "text": "A [MASK] da minha família fica perto do [MASK].", "params": {"top_k": 2}}"#,
    ];
    let (code, out, stderr) = run("bert-mlm", "fill-mask", &lines, &["top_k=3"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(out.len(), 3);
    assert_eq!(out[0]["id"], "a");
    assert_eq!(out[1]["id"], "b");
    assert_eq!(out[2]["id"], 3);
    assert_eq!(out[0]["predictions"][0].as_array().unwrap().len(), 3, "--param applies");
    assert_eq!(out[2]["predictions"].as_array().unwrap().len(), 2, "one list per mask");
    assert_eq!(out[2]["predictions"][1].as_array().unwrap().len(), 2, "line params win");
    assert_eq!(out[0]["model"]["name"], "bert-mlm");
    assert_eq!(out[0]["model"]["sha256"].as_str().unwrap().len(), 64);
    assert!(out[0]["input_tokens"].as_u64().unwrap() > 10);
    assert_eq!(out[0]["truncated"], false);
}

#[test]
fn each_bad_line_gets_its_own_error_and_the_rest_are_answered() {
    let long = format!(
        r#"{{"id": "long", "text": "{}", "params": {{"truncation": false}}}}"#,
        "palavra ".repeat(400)
    );
    let lines = [
        r#"{"id": "ok", "text": "A ação foi concluída com sucesso e você não precisa fazer mais nada."}"#,
        r#"{"id": "empty", "text": ""}"#,
        r#"{"id": "blank", "text": "   \t "}"#,
        r#"{"id": "broken", "text": "#,
        r#"{"id": "no-text", "question": "Quem?"}"#,
        long.as_str(),
        r#"{"id": "param", "text": "Olá!", "params": {"temperature": 0.5}}"#,
        r#"{"id": "extra", "text": "Olá!", "txet": "typo"}"#,
        r#"{"id": "ok2", "text": "Olá!"}"#,
    ];
    let (code, out, stderr) = run("bert-cls", "text-classification", &lines, &[]);
    assert_eq!(code, 1, "some lines failed: {stderr}");
    assert!(stderr.contains("lote: error: 7 of 9 lines failed"), "{stderr}");
    let by_line: Vec<(&Value, &Value)> = out.iter().map(|l| (&l["id"], &l["error"])).collect();
    assert_eq!(out.len(), 9);
    assert_eq!(by_line[0].0, "ok");
    assert!(by_line[0].1.is_null());
    // As transformers labels this text (tests/fixtures reference for bert-cls).
    assert_eq!(out[0]["labels"][0]["label"], "positivo");
    assert_eq!(by_line[1].1, "`text` is empty");
    assert_eq!(by_line[2].1, "`text` is empty");
    assert!(by_line[3].1.as_str().unwrap().starts_with("invalid JSON: "), "{:?}", by_line[3]);
    assert_eq!(by_line[4].1, "missing field `text`");
    let too_long = by_line[5].1.as_str().unwrap();
    assert!(
        too_long.starts_with("input has ")
            && too_long.ends_with("more than the model's limit of 128 (truncation is off)"),
        "{too_long}"
    );
    assert!(
        by_line[6]
            .1
            .as_str()
            .unwrap()
            .starts_with("bad params: unknown field `temperature`, expected one of"),
        "{:?}",
        by_line[6]
    );
    assert_eq!(by_line[7].1, "unknown field `txet`");
    assert_eq!(by_line[8].0, "ok2");
    assert!(by_line[8].1.is_null());
}

#[test]
fn long_input_is_truncated_by_default_and_says_so() {
    let line = format!(r#"{{"text": "{}"}}"#, "palavra ".repeat(400));
    let (code, out, stderr) = run("bert-cls", "text-classification", &[&line], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(out[0]["truncated"], true);
    assert!(out[0]["input_tokens"].as_u64().unwrap() > 128);
}

#[test]
fn fill_mask_without_a_mask_token_is_a_clear_error() {
    let (code, out, _) = run("roberta-mlm", "fill-mask", &[r#"{"text": "sem máscara"}"#], &[]);
    assert_eq!(code, 1);
    assert_eq!(out[0]["error"], "no mask token `<mask>` in the input");
}

#[test]
fn question_answering_reports_character_offsets_in_accented_text() {
    let line = r#"{"question": "Onde a Maria mora?", "context": "A Maria mora em São Paulo e trabalha na empresa Ação Digital."}"#;
    let (code, out, stderr) = run("bert-qa", "question-answering", &[line], &["top_k=3"]);
    assert_eq!(code, 0, "{stderr}");
    let context: Vec<char> =
        "A Maria mora em São Paulo e trabalha na empresa Ação Digital.".chars().collect();
    for answer in out[0]["answers"].as_array().unwrap() {
        let (start, end) =
            (answer["start"].as_u64().unwrap() as usize, answer["end"].as_u64().unwrap() as usize);
        let slice: String = context[start..end].iter().collect();
        assert_eq!(answer["answer"].as_str().unwrap(), slice);
    }
}

#[test]
fn a_task_the_model_cannot_do_is_refused_with_exit_code_2() {
    let (code, out, stderr) = run("bert-mlm", "question-answering", &[r#"{"text": "x"}"#], &[]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(
        stderr.trim_end().ends_with(
            "task `question-answering` needs a *ForQuestionAnswering checkpoint; this one is \
             MaskedLm (BertForMaskedLM)"
        ),
        "{stderr}"
    );
}

#[test]
fn bad_arguments_exit_2() {
    let (code, _, stderr) = run("bert-mlm", "speech-recognition", &[], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("`speech-recognition` is not one of"), "{stderr}");
    let (code, _, stderr) = run("bert-mlm", "fill-mask", &[], &["top_k"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("bad --param `top_k`: expected key=value"), "{stderr}");
}

#[test]
fn unsupported_and_unsafe_model_directories_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"text\": \"x\"}\n").unwrap();
    let model = dir.path().join("m");
    std::fs::create_dir(&model).unwrap();
    let try_load = || {
        let out = common::lote_command()
            .args(["run", "--task", "fill-mask", "--model"])
            .arg(&model)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(dir.path().join("out.jsonl"))
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, stderr) = try_load();
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains(&format!(
            "{}: not found: a model directory holds config.json beside its weights and tokenizer",
            model.join("config.json").display()
        )),
        "{stderr}"
    );
    std::fs::write(model.join("config.json"), r#"{"model_type": "gpt_neox"}"#).unwrap();
    let (code, stderr) = try_load();
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("model_type `gpt_neox` is not supported; supported: bert, roberta, xlm-roberta, distilbert, albert, electra"),
        "{stderr}"
    );
    let bert = common::fixture_model("bert-mlm");
    std::fs::copy(bert.join("config.json"), model.join("config.json")).unwrap();
    // A pickle that would run a command if Python loaded it: refused by name, nothing runs.
    let evil = common::fixtures_dir().join("pickle/evil.bin");
    std::fs::copy(evil, model.join("pytorch_model.bin")).unwrap();
    let (code, stderr) = try_load();
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains(&format!(
            "{}: refused pickle global posix.system",
            model.join("pytorch_model.bin").display()
        )),
        "{stderr}"
    );
    assert!(!std::path::Path::new("/tmp/lote-pickle-fixture-pwned").exists());
    // A checkpoint whose config promises a wider model than its tensors hold.
    std::fs::remove_file(model.join("pytorch_model.bin")).unwrap();
    std::fs::copy(bert.join("model.safetensors"), model.join("model.safetensors")).unwrap();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(bert.join("config.json")).unwrap()).unwrap();
    config["intermediate_size"] = 64.into();
    std::fs::write(model.join("config.json"), config.to_string()).unwrap();
    let (code, stderr) = try_load();
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("tensor `bert.encoder.layer.0.intermediate.dense.weight` has shape [37, 32], expected [64, 32]"),
        "{stderr}"
    );
}

#[test]
fn token_classification_reads_a_long_text_in_windows_and_bad_strides_are_refused() {
    let long =
        "A Maria mora em São Paulo e trabalha na empresa Ação Digital desde 2019. ".repeat(12);
    let line =
        |params: &str| format!(r#"{{"text": {}, "params": {params}}}"#, Value::from(long.as_str()));
    let lines = [
        line(r#"{"aggregation_strategy": "simple", "stride": 16}"#),
        line(r#"{"aggregation_strategy": "none", "stride": 16}"#),
        line(r#"{"aggregation_strategy": "simple", "stride": 128}"#),
        line(r#"{"aggregation_strategy": "simple", "stride": 126}"#),
        line(r#"{"aggregation_strategy": "simple"}"#),
    ];
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let (code, out, stderr) =
        run("bert-ner", "token-classification", &lines, &["ignore_labels=[]"]);
    assert_eq!(code, 1, "{stderr}");
    // Windows cover the whole text: entities reach its end; truncation stops at 128 tokens.
    let last_end = |entities: &Value| {
        entities
            .as_array()
            .unwrap_or_else(|| panic!("{entities}"))
            .iter()
            .map(|e| e["end"].as_u64().unwrap())
            .max()
            .unwrap()
    };
    assert_eq!(last_end(&out[0]["entities"]) as usize, long.trim_end().chars().count());
    assert_eq!(out[0]["truncated"], false);
    assert!(last_end(&out[4]["entities"]) < last_end(&out[0]["entities"]) / 2);
    assert_eq!(out[4]["truncated"], true);
    assert_eq!(
        out[1]["error"],
        "`stride` needs an `aggregation_strategy` other than \"none\" (simple, first, average or \
         max), to merge the windows' entities"
    );
    assert_eq!(
        out[2]["error"],
        "`stride` 128 must be less than the model's length (128 tokens, special tokens included)"
    );
    assert_eq!(
        out[3]["error"],
        "`stride` 126 leaves no room in a window: the model reads 128 tokens, 126 of them text; \
         give a stride below 126"
    );
}
