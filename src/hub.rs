//! `lote models pull`: a model directory from the Hugging Face hub, for workers that start
//! without a mounted one (an init container, a first boot). hf-hub does the protocol (ranges,
//! etags, redirects, the commit a revision points at); this module decides what to take and how
//! it lands.
//!
//! - Only what lote loads: config.json, tokenizer.json, generation_config.json, the tokenizer's
//!   side files, and safetensors weights (with their shard index) from the repository's top
//!   level. Pickle weights (pytorch_model.bin and friends) are never downloaded: a repository
//!   that has no safetensors is refused with the pickle files named.
//! - `HF_ENDPOINT` (a mirror) and `HF_TOKEN` (gated models) are honoured; `HF_HUB_OFFLINE=1`
//!   refuses at once, and an unreachable hub is one clear line, not a retry loop.
//! - Files download into `DIR/.lote-pull/` and are moved into DIR only once every one of them
//!   has arrived, so an interrupted pull never leaves a directory that looks complete.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use hf_hub::{
    Cache, Repo, RepoType,
    api::tokio::{ApiBuilder, ApiError},
};

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
const STAGING: &str = ".lote-pull";
const REQUIRED: [&str; 2] = ["config.json", "tokenizer.json"];
const OPTIONAL: [&str; 4] = [
    "generation_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "model.safetensors.index.json",
];
const PICKLE_SUFFIXES: [&str; 5] = [".bin", ".pt", ".pth", ".ckpt", ".pkl"];

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// The model's repository on the hub, e.g. sentence-transformers/all-MiniLM-L6-v2.
    pub repo: String,
    /// Where the model directory goes (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// A branch, tag or commit.
    #[arg(long, default_value = "main")]
    pub revision: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(
        "HF_HUB_OFFLINE is set: nothing can be pulled; mount the model directory instead \
         (or unset HF_HUB_OFFLINE where the hub or a mirror is reachable)"
    )]
    Offline,
    #[error(
        "cannot reach the Hugging Face hub at {endpoint}: {reason} (set HF_ENDPOINT to a \
         reachable mirror, or mount the model directory)"
    )]
    Unreachable { endpoint: String, reason: String },
    #[error("{repo} (revision {revision}) was not found at {endpoint}")]
    NotFound { repo: String, revision: String, endpoint: String },
    #[error("{endpoint} refused access to {repo}: a gated or private model needs HF_TOKEN")]
    Denied { repo: String, endpoint: String },
    #[error(
        "{repo} has no safetensors weights{}: lote loads safetensors only, never pickle files",
        pickle_list(.pickles)
    )]
    NoSafetensors { repo: String, pickles: Vec<String> },
    #[error("{repo} has no {file}: lote needs config.json, tokenizer.json and safetensors weights")]
    Missing { repo: String, file: &'static str },
    #[error("the hub at {endpoint}: {reason}")]
    Hub { endpoint: String, reason: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

fn pickle_list(pickles: &[String]) -> String {
    if pickles.is_empty() { String::new() } else { format!(" (only {})", pickles.join(", ")) }
}

/// What a finished pull brought.
#[derive(Debug)]
pub struct Pulled {
    pub commit: String,
    pub files: Vec<String>,
    pub bytes: u64,
}

/// Downloads `args.repo` into `args.dir` and prints what arrived.
pub async fn pull_command(args: &PullArgs) -> Result<(), PullError> {
    let pulled = pull(args).await?;
    println!(
        "{} at {}: {} files, {:.1} MiB in {}",
        args.repo,
        pulled.commit,
        pulled.files.len(),
        pulled.bytes as f64 / (1024.0 * 1024.0),
        args.dir.display()
    );
    Ok(())
}

pub async fn pull(args: &PullArgs) -> Result<Pulled, PullError> {
    if offline() {
        return Err(PullError::Offline);
    }
    let endpoint = std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.into());
    let endpoint = endpoint.trim_end_matches('/').to_string();
    let staging = args.dir.join(STAGING);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PullError::Io { path, source }
    };
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    let token =
        std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()).or(Cache::from_env().token());
    let api = ApiBuilder::new()
        .with_endpoint(endpoint.clone())
        .with_cache_dir(staging.clone())
        .with_token(token)
        .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .build()
        .map_err(|e| hub_error(e, args, &endpoint))?;
    let repo =
        api.repo(Repo::with_revision(args.repo.clone(), RepoType::Model, args.revision.clone()));
    let info = repo.info().await.map_err(|e| hub_error(e, args, &endpoint))?;
    let names: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let files = choose_files(&args.repo, &names)?;

    let mut downloaded = Vec::with_capacity(files.len());
    for file in &files {
        let path = repo.download(file).await.map_err(|e| hub_error(e, args, &endpoint))?;
        downloaded.push((file.clone(), path));
    }
    let mut bytes = 0;
    // Where each blob went: two files with the same content share one blob.
    let mut placed: HashMap<PathBuf, PathBuf> = HashMap::new();
    for (file, cached) in &downloaded {
        // The snapshot entry is a symlink to its blob: move the blob itself into place.
        let blob = blob_of(cached).map_err(io(cached))?;
        let target = args.dir.join(file);
        match placed.get(&blob) {
            Some(first) => std::fs::copy(first, &target).map(|_| ()),
            None => std::fs::rename(&blob, &target),
        }
        .map_err(io(&target))?;
        placed.entry(blob).or_insert_with(|| target.clone());
        bytes += std::fs::metadata(&target).map_err(io(&target))?.len();
    }
    std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    Ok(Pulled { commit: info.sha, files, bytes })
}

/// The blob a snapshot entry links to (the entry itself where hf-hub could not make a link),
/// named the same way for every entry that shares it, even once it has been moved away.
fn blob_of(entry: &Path) -> std::io::Result<PathBuf> {
    let Ok(link) = std::fs::read_link(entry) else { return Ok(entry.to_path_buf()) };
    let blob = entry.parent().map_or(link.clone(), |dir| dir.join(&link));
    let (Some(dir), Some(name)) = (blob.parent(), blob.file_name()) else { return Ok(blob) };
    Ok(std::fs::canonicalize(dir)?.join(name))
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// The repository's files that lote loads, in a stable order, or why the repository is unusable.
pub fn choose_files(repo: &str, names: &[String]) -> Result<Vec<String>, PullError> {
    let top_level: Vec<&String> = names.iter().filter(|n| !n.contains('/')).collect();
    for file in REQUIRED {
        if !top_level.iter().any(|n| *n == file) {
            return Err(PullError::Missing { repo: repo.into(), file });
        }
    }
    let weights: Vec<&String> =
        top_level.iter().copied().filter(|n| n.ends_with(".safetensors")).collect();
    if weights.is_empty() {
        let pickles = top_level
            .iter()
            .filter(|n| PICKLE_SUFFIXES.iter().any(|s| n.ends_with(s)))
            .map(|n| n.to_string())
            .collect();
        return Err(PullError::NoSafetensors { repo: repo.into(), pickles });
    }
    let mut files: Vec<String> = top_level
        .iter()
        .filter(|n| REQUIRED.contains(&n.as_str()) || OPTIONAL.contains(&n.as_str()))
        .map(|n| n.to_string())
        .collect();
    files.extend(weights.into_iter().cloned());
    files.sort();
    Ok(files)
}

fn hub_error(error: ApiError, args: &PullArgs, endpoint: &str) -> PullError {
    let endpoint = endpoint.to_string();
    match &error {
        ApiError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            PullError::Unreachable { endpoint, reason: root_cause(e) }
        }
        ApiError::RequestError(e) => match e.status().map(|s| s.as_u16()) {
            Some(404) => PullError::NotFound {
                repo: args.repo.clone(),
                revision: args.revision.clone(),
                endpoint,
            },
            Some(401 | 403) => PullError::Denied { repo: args.repo.clone(), endpoint },
            _ => PullError::Hub { endpoint, reason: root_cause(e) },
        },
        _ => PullError::Hub { endpoint, reason: error.to_string() },
    }
}

/// reqwest's message plus the innermost cause (the one that says "connection refused").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    if std::ptr::eq(innermost, error) { error.to_string() } else { format!("{error}: {innermost}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn takes_what_lote_loads_and_leaves_the_rest() {
        let repo = names(&[
            ".gitattributes",
            "README.md",
            "config.json",
            "tokenizer.json",
            "vocab.txt",
            "model.safetensors",
            "pytorch_model.bin",
            "onnx/model.onnx",
            "1_Pooling/config.json",
            "generation_config.json",
        ]);
        assert_eq!(
            choose_files("m", &repo).unwrap(),
            ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json"]
        );
    }

    #[test]
    fn takes_every_shard_and_the_index() {
        let repo = names(&[
            "config.json",
            "tokenizer.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
        ]);
        assert_eq!(choose_files("m", &repo).unwrap().len(), 5);
    }

    #[test]
    fn a_repository_with_only_pickle_weights_is_refused_with_them_named() {
        let repo = names(&["config.json", "tokenizer.json", "pytorch_model.bin"]);
        let error = choose_files("org/m", &repo).unwrap_err();
        assert_eq!(
            error.to_string(),
            "org/m has no safetensors weights (only pytorch_model.bin): lote loads safetensors \
             only, never pickle files"
        );
    }

    #[test]
    fn a_repository_without_a_fast_tokenizer_is_refused() {
        let repo = names(&["config.json", "vocab.txt", "model.safetensors"]);
        assert!(matches!(
            choose_files("m", &repo),
            Err(PullError::Missing { file: "tokenizer.json", .. })
        ));
    }
}
