//! `lote models pull` against a stand-in for the Hugging Face hub on loopback: the two HTTP
//! routes hf-hub speaks (repository info, and ranged file downloads with etag and commit
//! headers), serving a tiny fixture model beside a pickle file that must never be fetched.
//! Then the refusals: offline, unreachable, unknown repository, a repository without weights lote
//! reads.

use crate::common;

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    extract::{Path as UrlPath, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use common::{fixture_model, lote_command};
use sha2::{Digest, Sha256};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Repositories by id, each a map of file name to bytes; and every file path asked for.
#[derive(Clone, Default)]
struct Hub {
    repos: Arc<HashMap<String, HashMap<String, Vec<u8>>>>,
    fetched: Arc<Mutex<Vec<String>>>,
}

async fn info(
    State(hub): State<Hub>,
    UrlPath((org, name, _revision)): UrlPath<(String, String, String)>,
) -> Response {
    let Some(files) = hub.repos.get(&format!("{org}/{name}")) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let siblings: Vec<_> =
        files.keys().map(|name| serde_json::json!({ "rfilename": name })).collect();
    let body = serde_json::json!({ "sha": COMMIT, "siblings": siblings }).to_string();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A file, honouring `Range: bytes=START-END` (END inclusive, clamped to the file) like the hub.
async fn resolve(
    State(hub): State<Hub>,
    UrlPath((org, name, _revision, file)): UrlPath<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    hub.fetched.lock().unwrap().push(file.clone());
    let Some(bytes) = hub.repos.get(&format!("{org}/{name}")).and_then(|f| f.get(&file)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).unwrap_or("bytes=0-");
    let (start, end) = range.trim_start_matches("bytes=").split_once('-').unwrap();
    let start: usize = start.parse().unwrap();
    let end = end.parse::<usize>().unwrap_or(usize::MAX).min(bytes.len() - 1);
    let etag = format!("\"{:x}\"", Sha256::digest(bytes));
    (
        StatusCode::PARTIAL_CONTENT,
        [
            (header::ETAG.as_str(), etag),
            ("x-repo-commit", COMMIT.to_string()),
            (header::CONTENT_RANGE.as_str(), format!("bytes {start}-{end}/{}", bytes.len())),
        ],
        bytes[start..=end].to_vec(),
    )
        .into_response()
}

fn read_dir_files(dir: &Path) -> HashMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            (path.file_name().unwrap().to_string_lossy().into(), std::fs::read(path).unwrap())
        })
        .collect()
}

/// Serves the repositories on a free loopback port; returns the endpoint and the hub.
async fn start_hub(repos: HashMap<String, HashMap<String, Vec<u8>>>) -> (String, Hub) {
    let hub = Hub { repos: Arc::new(repos), ..Hub::default() };
    let app = Router::new()
        .route("/api/models/{org}/{name}/revision/{revision}", get(info))
        .route("/{org}/{name}/resolve/{revision}/{file}", get(resolve))
        .with_state(hub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), hub)
}

/// Runs `lote models pull` with the given hub settings, off the test's runtime threads.
async fn pull(
    endpoint: &str,
    repo: &str,
    dir: &Path,
    offline: bool,
) -> (Option<i32>, String, String) {
    let mut command = lote_command();
    command
        .args(["models", "pull", repo, "--dir"])
        .arg(dir)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", dir.join("hf-home"))
        .env_remove("HF_TOKEN");
    if offline {
        command.env("HF_HUB_OFFLINE", "1");
    } else {
        command.env_remove("HF_HUB_OFFLINE");
    }
    let output = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_config_tokenizer_and_safetensors_and_never_the_pickle() {
    let model = read_dir_files(&fixture_model("bert-mlm"));
    let mut repo = model.clone();
    // Two files with the same bytes share one blob in hf-hub's cache; both must arrive.
    repo.insert("generation_config.json".into(), model["special_tokens_map.json"].clone());
    repo.insert("pytorch_model.bin".into(), b"pickle: must never be fetched".to_vec());
    repo.insert("README.md".into(), b"# tiny".to_vec());
    let repo_copy = repo.clone();
    let (endpoint, hub) = start_hub(HashMap::from([("org/tiny-bert".to_string(), repo)])).await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("model");

    let (code, stdout, stderr) = pull(&endpoint, "org/tiny-bert", &target, false).await;

    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(stdout.starts_with(&format!("org/tiny-bert at {COMMIT}: 6 files")), "{stdout}");
    let pulled = read_dir_files(&target);
    let mut names: Vec<&String> = pulled.keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
    for (name, bytes) in &pulled {
        assert_eq!(bytes, &repo_copy[name], "{name} differs from the hub's copy");
    }
    assert!(!target.join(".lote-pull").exists(), "the staging folder is removed");
    let fetched = hub.fetched.lock().unwrap().clone();
    assert!(!fetched.iter().any(|f| f.ends_with(".bin")), "a pickle was fetched: {fetched:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_one_clear_line_with_exit_code_1() {
    let pickle_only = HashMap::from([
        ("config.json".to_string(), b"{}".to_vec()),
        ("tokenizer.json".to_string(), b"{}".to_vec()),
        ("tf_model.h5".to_string(), b"TensorFlow".to_vec()),
    ]);
    let (endpoint, hub) = start_hub(HashMap::from([("org/old".to_string(), pickle_only)])).await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("model");

    let (code, _, stderr) = pull(&endpoint, "org/old", &target, true).await;
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr.trim_end(),
        "lote: error: HF_HUB_OFFLINE is set: nothing can be pulled; mount the model directory \
         instead (or unset HF_HUB_OFFLINE where the hub or a mirror is reachable)"
    );

    let (code, _, stderr) = pull(&endpoint, "org/old", &target, false).await;
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr.trim_end(),
        "lote: error: org/old has no weights lote reads (only tf_model.h5): it reads \
         model.safetensors (or its shards) and pytorch_model.bin (or its shards)"
    );
    assert!(hub.fetched.lock().unwrap().is_empty(), "nothing is downloaded from a refused repo");

    let (code, _, stderr) = pull(&endpoint, "org/missing", &target, false).await;
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr.trim_end(),
        format!("lote: error: org/missing (revision main) was not found at {endpoint}")
    );

    // A port nothing listens on: bind one, note it, close it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let unreachable = format!("http://{closed}");
    let (code, _, stderr) = pull(&unreachable, "org/old", &target, false).await;
    assert_eq!(code, Some(1));
    let prefix = format!("lote: error: cannot reach the Hugging Face hub at {unreachable}: ");
    assert!(stderr.starts_with(&prefix), "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert!(stderr.trim_end().ends_with("or mount the model directory)"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}
