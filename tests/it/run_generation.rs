//! `lote run` for summarization and text-generation on the tiny generation fixtures: output
//! fields and counters, and each bad input of the issue as that line's own error.

use crate::common;

use serde_json::Value;

fn run(model: &str, task: &str, lines: &[&str]) -> (i32, Vec<Value>, String) {
    run_with(model, task, lines, &[])
}

fn run_with(
    model: &str,
    task: &str,
    lines: &[&str],
    env: &[(&str, &str)],
) -> (i32, Vec<Value>, String) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let result = common::lote_command()
        .args(["run", "--model"])
        .arg(common::fixture_model(&format!("generation/{model}")))
        .args(["--task", task, "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .env("LOTE__DEVICE__KIND", "cpu")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let out = std::fs::read_to_string(&output)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (result.status.code().unwrap_or(-1), out, String::from_utf8_lossy(&result.stderr).into_owned())
}

#[test]
fn summaries_and_generations_carry_their_counters() {
    let (code, out, stderr) = run(
        "bart",
        "summarization",
        &[
            r#"{"id": 1, "text": "A reunião da diretoria começou às nove horas e terminou ao meio-dia."}"#,
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(out[0]["summary_text"].is_string(), "{}", out[0]);
    assert!(out[0]["output_tokens"].as_u64().unwrap() > 0);
    assert!(["eos", "length"].contains(&out[0]["finish_reason"].as_str().unwrap()));
    assert_eq!(out[0]["truncated"], false);
    assert_eq!(out[0]["model"]["name"], "bart");

    let (code, out, stderr) = run(
        "gpt2",
        "text-generation",
        &[
            r#"{"text": "A ação foi concluída", "params": {"max_new_tokens": 8, "num_beams": 3, "num_return_sequences": 2, "return_full_text": false}}"#,
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(out[0]["generated_text"].as_array().unwrap().len(), 2, "all return sequences");
    assert_eq!(out[0]["finish_reason"].as_array().unwrap().len(), 2);
}

/// Every generation architecture runs in bf16 with beams and padding masks: the masks once
/// used f32's minimum, which overflows a bf16 tensor (BART failed every line).
#[test]
fn every_architecture_generates_in_bf16() {
    let line = r#"{"text": "A ação foi concluída com sucesso", "params": {"max_new_tokens": 6, "min_new_tokens": 6, "num_beams": 2}}"#;
    for (model, task) in [
        ("gpt2", "text-generation"),
        ("llama", "text-generation"),
        ("mistral", "text-generation"),
        ("qwen2", "text-generation"),
        ("bart", "summarization"),
        ("mbart", "summarization"),
        ("t5", "summarization"),
        ("t5-v1_1", "summarization"),
    ] {
        let (code, out, stderr) =
            run_with(model, task, &[line, line], &[("LOTE__DEVICE__DTYPE", "bf16")]);
        assert_eq!(code, 0, "{model}: {stderr} {out:?}");
        for answer in &out {
            let tokens = &answer["output_tokens"];
            let tokens = tokens.as_array().map_or(tokens.as_u64(), |all| all[0].as_u64());
            assert_eq!(tokens, Some(6), "{model}: {answer}");
        }
    }
}

#[test]
fn each_bad_generation_input_is_its_own_error() {
    let long = format!(
        r#"{{"id": "long", "text": "{}", "params": {{"max_new_tokens": 10}}}}"#,
        "palavra ".repeat(200)
    );
    let lines = [
        r#"{"id": "ok", "text": "Olá, você", "params": {"max_new_tokens": 5}}"#,
        r#"{"id": "empty", "text": "  "}"#,
        long.as_str(),
        r#"{"id": "zero", "text": "Olá", "params": {"max_new_tokens": 0}}"#,
        r#"{"id": "huge", "text": "Olá", "params": {"max_new_tokens": 100000}}"#,
        r#"{"id": "beams", "text": "Olá", "params": {"num_beams": 2, "num_return_sequences": 3}}"#,
        r#"{"id": "top_p", "text": "Olá", "params": {"do_sample": true, "top_p": 1.5}}"#,
        r#"{"id": "temperature", "text": "Olá", "params": {"do_sample": true, "temperature": -0.5}}"#,
        r#"{"id": "stop", "text": "Olá", "params": {"stop": 42}}"#,
        r#"{"id": "unknown", "text": "Olá", "params": {"beam_width": 4}}"#,
        r#"{"id": "bad_word", "text": "Olá", "params": {"bad_words_ids": [[1000000000]]}}"#,
        r#"{"id": "top_k", "text": "Olá", "params": {"top_k": "três"}}"#,
        r#"{"id": "negative", "text": "Olá", "params": {"max_new_tokens": -3}}"#,
        r#"{"id": "eos", "text": "Olá", "params": {"eos_token_id": [399, 400]}}"#,
        r#"{"id": "ok_after", "text": "Ação", "params": {"max_new_tokens": 3}}"#,
    ];
    let (code, out, stderr) = run("gpt2", "text-generation", &lines);
    assert_eq!(code, 1, "{stderr}");
    let error = |i: usize| out[i]["error"].as_str().unwrap_or("").to_string();
    assert!(out[0]["error"].is_null(), "{}", out[0]);
    assert_eq!(error(1), "`text` is empty");
    assert!(
        error(2).starts_with("prompt has ")
            && error(2).contains("more than the model's context of 128"),
        "{}",
        error(2)
    );
    assert_eq!(error(3), "max_new_tokens must be at least 1");
    assert_eq!(error(4), "max_new_tokens (100000) is above the model's limit (128)");
    assert_eq!(error(5), "num_return_sequences (3) must be at most num_beams (2)");
    assert_eq!(error(6), "top_p must be in (0, 1], not 1.5");
    assert_eq!(error(7), "temperature must be positive, not -0.5");
    assert_eq!(error(8), "bad params: `stop` must be a string or a list of strings, not 42");
    assert_eq!(error(9), "bad params: unknown parameter `beam_width`");
    assert_eq!(
        error(10),
        "bad params: `bad_words_ids[0][0]`: 1000000000 is not a token id of this model (vocabulary 400)"
    );
    assert_eq!(error(11), "bad params: `top_k`: expected an integer, got \"três\"");
    assert_eq!(error(12), "bad params: `max_new_tokens`: expected a non-negative integer, got -3");
    assert_eq!(
        error(13),
        "bad params: `eos_token_id[1]`: 400 is not a token id of this model (vocabulary 400)"
    );
    assert!(out[14]["error"].is_null(), "the line after the bad ones answers: {}", out[14]);
}

#[test]
fn a_long_prompt_is_cut_from_the_left_when_truncation_is_asked() {
    let line = format!(
        r#"{{"text": "{}", "params": {{"max_new_tokens": 10, "truncation": true}}}}"#,
        "palavra ".repeat(200)
    );
    let (code, out, stderr) = run("gpt2", "text-generation", &[&line]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(out[0]["truncated"], true);
}

#[test]
fn long_documents_are_summarized_in_chunks_when_asked() {
    let text = "A reunião da diretoria começou às nove horas e terminou ao meio-dia. ".repeat(12);
    let line = format!(
        r#"{{"text": "{text}", "params": {{"long_document": "chunked", "chunk_tokens": 64, "chunk_overlap": 8}}}}"#
    );
    let (code, out, stderr) = run("bart", "summarization", &[&line]);
    assert_eq!(code, 0, "{stderr}");
    assert!(out[0]["summary_text"].is_string());
    let (code, out, _) =
        run("bart", "summarization", &[&line.replace("\"chunked\"", "\"sliced\"")]);
    assert_eq!(code, 1);
    assert_eq!(
        out[0]["error"],
        "bad params: long_document must be \"truncate\" or \"chunked\", not \"sliced\""
    );
}

#[test]
fn a_task_the_model_cannot_do_exits_2() {
    let (code, _, stderr) = run("gpt2", "summarization", &[r#"{"text": "x"}"#]);
    assert_eq!(code, 2);
    assert!(stderr.contains("task `summarization` needs an encoder-decoder model (BART, mBART, T5); this is a `gpt2` model"), "{stderr}");
}
