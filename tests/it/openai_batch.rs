//! OpenAI's Batch API through the official `openai` client (tests/openai/batch_calls.py): a
//! file uploaded, a batch created, polled to its end and its output and error files
//! downloaded, on the single-node store (chat, completions with a line the route refuses,
//! embeddings; a file whose lines OpenAI would refuse; expiry; cancel) and on RabbitMQ +
//! PostgreSQL with two workers, one SIGKILLed mid-batch. In every case each line of the input
//! is answered exactly once, in the output file or the error file, and lines answer what the
//! same call answers over HTTP.

use crate::common;

use std::{collections::BTreeMap, path::Path, time::Duration};

use common::{
    ServeProcess, broker,
    jobs::{jobs_client, phrase, wait_ready, worker, worker_config},
    start_ready, test_settings, venv_python,
};
use lote::{
    Settings,
    grpc::pb,
    settings::{ModelSettings, Task},
};
use serde_json::{Value, json};

fn settings() -> Settings {
    let mut settings = test_settings();
    let model = |name: &str, task, fixture: &str| ModelSettings {
        name: name.into(),
        task,
        path: common::fixture_model(fixture),
        dtype: None,
    };
    settings.models = vec![
        model("gen", Task::TextGeneration, "generation/gpt2"),
        model("chat", Task::TextGeneration, "chat/llama-chat"),
        model("embed", Task::FeatureExtraction, "bert-embed-mean"),
    ];
    settings.server.limits.max_batch_file_bytes = 64 << 10;
    settings
}

/// Runs the batch script; its JSON answer.
async fn script(args: Vec<String>) -> Value {
    let python = venv_python(&["openai"]);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai/batch_calls.py");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python).arg(path).args(args).output().unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn write_lines(dir: &Path, name: &str, lines: &[Value]) -> String {
    let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn request(custom_id: &str, url: &str, body: Value) -> Value {
    json!({"custom_id": custom_id, "method": "POST", "url": url, "body": body})
}

/// The custom ids of a finished batch's output and error lines, each checked to be there
/// once; the lines by custom id.
fn answered_once(out: &Value, expected: usize) -> BTreeMap<String, Value> {
    let mut by_id = BTreeMap::new();
    for line in out["output"].as_array().unwrap().iter().chain(out["errors"].as_array().unwrap()) {
        let id = line["custom_id"].as_str().unwrap().to_string();
        assert!(by_id.insert(id.clone(), line.clone()).is_none(), "{id} answered twice");
    }
    assert_eq!(by_id.len(), expected, "every line answered: {:?}", by_id.keys());
    for file in ["output_file_id", "error_file_id"] {
        if let Some(meta) = out["files"].get(file) {
            assert_eq!(meta["bytes"], meta["downloaded"], "{file}: its size is what downloads");
            assert_eq!(meta["purpose"], "batch_output");
        }
    }
    by_id
}

/// The same call over HTTP, straight to the route (`base` is `http://HOST:PORT/v1`).
async fn direct(base: &str, url: &str, body: &Value) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.trim_start_matches("http://").trim_end_matches("/v1");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let body = body.to_string();
    let head = format!(
        "POST {url} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_on_the_local_store_answer_every_line_once_as_the_routes_do() {
    let server = start_ready(settings()).await;
    let base = format!("http://{}/v1", server.http_addr.expect("the HTTP API is on"));
    let dir = tempfile::tempdir().unwrap();
    let arg = |s: &str| s.to_string();

    // Chat, with one line the route refuses (temperature 3).
    let mut chat: Vec<Value> = (0..12)
        .map(|i| {
            let body = json!({"model": "chat", "max_tokens": 6, "temperature": 0,
                              "messages": [{"role": "user", "content": phrase(i)}]});
            request(&format!("pedido-{i}"), "/v1/chat/completions", body)
        })
        .collect();
    chat.push(request(
        "quente",
        "/v1/chat/completions",
        json!({"model": "chat", "temperature": 3, "messages": [{"role": "user", "content": "oi"}]}),
    ));
    let file = write_lines(dir.path(), "chat.jsonl", &chat);
    let out = script(vec![arg("run"), base.clone(), file, arg("/v1/chat/completions")]).await;
    assert_eq!(out["batch"]["status"], "completed", "{out}");
    assert_eq!(out["batch"]["request_counts"], json!({"total": 13, "completed": 12, "failed": 1}));
    assert_eq!(out["batch"]["metadata"], json!({"origem": "teste em português"}));
    assert_eq!(out["batch"]["endpoint"], "/v1/chat/completions");
    assert!(out["listed"].as_bool().unwrap());
    for at in ["created_at", "in_progress_at", "finalizing_at", "completed_at"] {
        assert!(out["batch"][at].as_i64().is_some(), "{at}");
    }
    let lines = answered_once(&out, 13);
    let refused = &lines["quente"];
    assert_eq!(refused["response"]["status_code"], 400);
    assert_eq!(
        refused["response"]["body"]["error"]["message"],
        "`temperature` must be a number between 0 and 2, not 3"
    );
    assert_eq!(out["errors"].as_array().unwrap().len(), 1);
    for i in [0, 5, 11] {
        let line = &lines[&format!("pedido-{i}")];
        assert_eq!(line["response"]["status_code"], 200);
        assert_eq!(line["error"], Value::Null);
        let body = &line["response"]["body"];
        let same = direct(&base, "/v1/chat/completions", &chat[i]["body"]).await;
        assert_eq!(body["choices"], same["choices"], "line {i} answers as the route does");
        assert_eq!(body["usage"], same["usage"]);
    }

    // Embeddings: each line's vectors are the route's.
    let embed: Vec<Value> = (0..5)
        .map(|i| {
            request(
                &format!("e{i}"),
                "/v1/embeddings",
                json!({"model": "embed", "input": phrase(i)}),
            )
        })
        .collect();
    let file = write_lines(dir.path(), "embed.jsonl", &embed);
    let out = script(vec![arg("run"), base.clone(), file, arg("/v1/embeddings")]).await;
    assert_eq!(out["batch"]["status"], "completed");
    let lines = answered_once(&out, 5);
    let same = direct(&base, "/v1/embeddings", &embed[3]["body"]).await;
    common::assert_json_close(&lines["e3"]["response"]["body"]["data"], &same["data"], 1e-5, "e3");

    // A file OpenAI would refuse: the batch fails with each line named, and nothing runs.
    let mut bad: Vec<Value> =
        vec![request("a", "/v1/completions", json!({"model": "gen", "prompt": "Olá"}))];
    bad.push(request("a", "/v1/completions", json!({"model": "gen", "prompt": "de novo"})));
    bad.push(request("b", "/v1/embeddings", json!({"model": "gen", "prompt": "x"})));
    bad.push(request("c", "/v1/completions", json!({"model": "chat", "prompt": "x"})));
    bad.push(request("d", "/v1/completions", json!({"model": "embed", "prompt": "x"})));
    let mut text: String = bad.iter().map(|line| format!("{line}\n")).collect();
    text.push_str("{isto não é JSON\n");
    std::fs::write(dir.path().join("bad.jsonl"), text).unwrap();
    let file = dir.path().join("bad.jsonl").display().to_string();
    let out = script(vec![arg("run"), base.clone(), file, arg("/v1/completions")]).await;
    assert_eq!(out["batch"]["status"], "failed");
    let errors: Vec<(String, i64)> = out["batch"]["errors"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["code"].as_str().unwrap().to_string(), e["line"].as_i64().unwrap()))
        .collect();
    let expected = [
        ("duplicate_custom_id", 2),
        ("invalid_url", 3),
        ("mismatched_model", 4),
        ("mismatched_model", 5),
        ("invalid_json_line", 6),
    ];
    let expected: Vec<(String, i64)> = expected.iter().map(|(c, l)| (c.to_string(), *l)).collect();
    assert_eq!(errors, expected, "{}", out["batch"]["errors"]);
    assert_eq!(out["batch"]["request_counts"]["total"], 0);
    assert_eq!(out["output"], json!([]));

    // Expiry: a window far too short for the work; what did not run is in the error file.
    let long: Vec<Value> = (0..400)
        .map(|i| {
            let body = json!({"model": "gen", "prompt": phrase(i), "max_tokens": 64});
            request(&format!("longo-{i}"), "/v1/completions", body)
        })
        .collect();
    let file = write_lines(dir.path(), "long.jsonl", &long);
    let out =
        script(vec![arg("run"), base.clone(), file.clone(), arg("/v1/completions"), arg("2s")])
            .await;
    assert_eq!(out["batch"]["status"], "expired", "{}", out["batch"]);
    let lines = answered_once(&out, 400);
    let expired = lines.values().filter(|l| l["error"]["code"] == "batch_expired").count();
    assert!(expired > 0, "some lines expired");
    assert!(out["batch"]["expired_at"].as_i64().is_some());

    // Cancel at once: the batch ends cancelled, every line once.
    let out = script(vec![arg("cancel"), base.clone(), file, arg("/v1/completions")]).await;
    assert_eq!(out["batch"]["status"], "cancelled", "{}", out["batch"]);
    assert!(["cancelling", "cancelled"].contains(&out["cancel_answer"].as_str().unwrap()));
    let lines = answered_once(&out, 400);
    assert!(lines.values().any(|l| l["error"]["code"] == "batch_cancelled"));

    // The refusals, each with its status and OpenAI's error body.
    let good = write_lines(dir.path(), "good.jsonl", &chat[..2]);
    let big = dir.path().join("big.jsonl");
    std::fs::write(&big, format!("{}\n", chat[0]).repeat(1000)).unwrap();
    let out =
        script(vec![arg("refusals"), base.clone(), good.clone(), big.display().to_string()]).await;
    assert_eq!(out["input_content"], std::fs::read_to_string(&good).unwrap());
    assert_eq!(out["uploaded"]["purpose"], "batch");
    assert_eq!(out["uploaded"]["bytes"], std::fs::metadata(&good).unwrap().len());
    assert!(out["listed_files"].as_bool().unwrap());
    let refusal = |name: &str| (out[name]["status"].as_i64().unwrap(), out[name]["error"].clone());
    let (status, error) = refusal("big_file");
    assert_eq!(status, 413);
    assert_eq!(
        error["message"], "the file is over server.limits.max_batch_file_bytes (65536 bytes)",
        "{}",
        out["big_file"]
    );
    let (status, error) = refusal("wrong_purpose");
    assert_eq!((status, error["param"].clone()), (400, json!("purpose")));
    let (status, error) = refusal("unknown_file");
    assert_eq!((status, error["code"].clone()), (404, json!("file_not_found")));
    let (status, error) = refusal("bad_endpoint");
    assert_eq!((status, error["param"].clone()), (400, json!("endpoint")));
    assert_eq!(
        error["message"],
        "`endpoint` is `/v1/moderations`: batches run /v1/chat/completions, /v1/completions, /v1/embeddings"
    );
    let (status, error) = refusal("bad_window");
    assert_eq!((status, error["param"].clone()), (400, json!("completion_window")));
    let (status, error) = refusal("bad_metadata");
    assert_eq!(
        (status, error["message"].clone()),
        (400, json!("`metadata.k` is over 512 characters"))
    );
    let (status, error) = refusal("unknown_batch");
    assert_eq!((status, error["code"].clone()), (404, json!("batch_not_found")));
    assert_eq!(refusal("unknown_file_content").0, 404);
    assert_eq!(refusal("bad_limit").1["message"], "`limit` is 0: give 1 to 100");
    let (status, error) = refusal("cancel_completed");
    assert_eq!((status, error["code"].clone()), (409, json!("batch_not_cancellable")));
    assert_eq!(out["deleted"], true);
    assert_eq!(refusal("deleted_again").0, 404);

    // After all of it the worker still answers.
    let same = direct(&base, "/v1/embeddings", &embed[0]["body"]).await;
    assert_eq!(same["data"][0]["object"], "embedding");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_on_rabbitmq_and_postgres_survives_a_sigkilled_worker() {
    let dir = tempfile::tempdir().unwrap();
    let (prefix, store) = (broker::unique_prefix(), broker::fresh_postgres().await);
    let config =
        worker_config(dir.path(), &prefix, &store, ("gen", "text-generation", "generation/gpt2"));
    let mut a = ServeProcess::start(worker(&config));
    let b = ServeProcess::start(worker(&config));
    wait_ready(a.grpc_addr).await;
    wait_ready(b.grpc_addr).await;
    const LINES: usize = 600;
    let lines: Vec<Value> = (0..LINES)
        .map(|i| {
            let body =
                json!({"model": "gen", "prompt": phrase(i), "max_tokens": 32, "temperature": 0});
            request(&format!("linha-{i}"), "/v1/completions", body)
        })
        .collect();
    let file = write_lines(dir.path(), "lines.jsonl", &lines);
    let base_a = format!("http://{}/v1", a.http_addr.unwrap());
    let base_b = format!("http://{}/v1", b.http_addr.unwrap());
    let created = script(vec!["create".into(), base_a, file, "/v1/completions".into()]).await;
    let batch_id = created["id"].as_str().unwrap().to_string();

    // Kill worker A once some lines are answered and many are not.
    let mut jobs = jobs_client(b.grpc_addr).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let listed = jobs.list_jobs(pb::ListJobsRequest::default()).await.unwrap().into_inner();
        let job = listed.jobs.iter().find(|j| j.idempotency_key == batch_id);
        if let Some(job) = job
            && job.succeeded >= 20
        {
            assert_eq!(job.total, LINES as u64);
            assert!(job.succeeded < LINES as u64 / 2, "the batch ran too fast to kill mid-way");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the batch never got going");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    common::send_signal(&a.child, libc::SIGKILL);
    let _ = a.child.wait();

    let out = script(vec!["finish".into(), base_b.clone(), batch_id.clone()]).await;
    assert_eq!(out["batch"]["status"], "completed", "{}", out["batch"]);
    let counts = &out["batch"]["request_counts"];
    assert_eq!(counts, &json!({"total": LINES, "completed": LINES, "failed": 0}));
    let answered = answered_once(&out, LINES);
    let same = direct(&base_b, "/v1/completions", &lines[7]["body"]).await;
    assert_eq!(answered["linha-7"]["response"]["body"]["choices"], same["choices"]);
    broker::delete_queues(&prefix, &["gen"]).await;
}
