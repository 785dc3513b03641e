//! `lote models pull`: a model directory from the Hugging Face hub, for workers that start
//! without a mounted one (an init container, a first boot). hf-hub does the protocol (ranges,
//! etags, redirects, the commit a revision points at); this module decides what to take and how
//! it lands.
//!
//! - Only what lote loads, from the repository's top level: config.json,
//!   generation_config.json, the tokenizer (tokenizer.json, else the slow files lote builds it
//!   from: vocab.txt, vocab.json + merges.txt, a SentencePiece model) with its side files, and
//!   one kind of weights: safetensors (with their shard index) when the repository has them,
//!   else pytorch_model.bin (or its shards), which lote reads as data without running it. Never
//!   both kinds, and never other checkpoint files (TensorFlow, Flax, ONNX, model.pt).
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
const OPTIONAL: [&str; 4] = [
    "generation_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
];
/// The tokenizer files lote builds a tokenizer from when there is no tokenizer.json.
const SLOW_TOKENIZER: [&str; 5] =
    ["vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model"];
/// Checkpoints lote does not read, named when a repository has nothing else.
const OTHER_WEIGHTS: [&str; 8] =
    [".bin", ".pt", ".pth", ".ckpt", ".pkl", ".h5", ".msgpack", ".onnx"];

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
        "{repo} has no weights lote reads{}: it reads model.safetensors (or its shards) and \
         pytorch_model.bin (or its shards)",
        other_list(.others)
    )]
    NoWeights { repo: String, others: Vec<String> },
    #[error(
        "{repo} has no tokenizer: no tokenizer.json, and none of the slow tokenizer files \
         vocab.txt, vocab.json + merges.txt, spiece.model, sentencepiece.bpe.model"
    )]
    NoTokenizer { repo: String },
    #[error("{repo} has no config.json: it is not a transformers model repository")]
    NoConfig { repo: String },
    #[error("the hub at {endpoint}: {reason}")]
    Hub { endpoint: String, reason: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

fn other_list(others: &[String]) -> String {
    if others.is_empty() { String::new() } else { format!(" (only {})", others.join(", ")) }
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
    let top_level: Vec<&str> =
        names.iter().map(String::as_str).filter(|n| !n.contains('/')).collect();
    let has = |name: &str| top_level.contains(&name);
    if !has("config.json") {
        return Err(PullError::NoConfig { repo: repo.into() });
    }
    let mut files: Vec<String> = vec!["config.json".into()];
    files.extend(OPTIONAL.iter().filter(|n| has(n)).map(|n| n.to_string()));
    if has("tokenizer.json") {
        files.push("tokenizer.json".into());
    } else {
        let slow: Vec<String> =
            SLOW_TOKENIZER.iter().filter(|n| has(n)).map(|n| n.to_string()).collect();
        if slow.is_empty() {
            return Err(PullError::NoTokenizer { repo: repo.into() });
        }
        files.extend(slow);
    }
    files.extend(weight_files(repo, &top_level)?);
    files.sort();
    Ok(files)
}

/// One kind of weights: safetensors when there are any, else pytorch_model.bin or its shards.
fn weight_files(repo: &str, top_level: &[&str]) -> Result<Vec<String>, PullError> {
    let layouts = [
        (".safetensors", "model.safetensors", "model.safetensors.index.json", "model-"),
        (".bin", "pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-"),
    ];
    for (extension, single, index, shard_prefix) in layouts {
        if top_level.contains(&single) {
            return Ok(vec![single.to_string()]);
        }
        if top_level.contains(&index) {
            let shards = top_level
                .iter()
                .filter(|n| n.starts_with(shard_prefix) && n.ends_with(extension))
                .map(|n| n.to_string());
            return Ok(std::iter::once(index.to_string()).chain(shards).collect());
        }
    }
    let others = top_level
        .iter()
        .filter(|n| OTHER_WEIGHTS.iter().any(|s| n.ends_with(s)) || n.ends_with(".safetensors"))
        .map(|n| n.to_string())
        .collect();
    Err(PullError::NoWeights { repo: repo.into(), others })
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
    fn takes_pytorch_model_bin_only_where_there_are_no_safetensors() {
        let repo = names(&["config.json", "tokenizer.json", "pytorch_model.bin", "tf_model.h5"]);
        assert_eq!(
            choose_files("org/m", &repo).unwrap(),
            ["config.json", "pytorch_model.bin", "tokenizer.json"]
        );
        let sharded = names(&[
            "config.json",
            "tokenizer.json",
            "pytorch_model-00001-of-00002.bin",
            "pytorch_model-00002-of-00002.bin",
            "pytorch_model.bin.index.json",
            "training_args.bin",
        ]);
        assert_eq!(
            choose_files("org/m", &sharded).unwrap(),
            [
                "config.json",
                "pytorch_model-00001-of-00002.bin",
                "pytorch_model-00002-of-00002.bin",
                "pytorch_model.bin.index.json",
                "tokenizer.json"
            ]
        );
    }

    #[test]
    fn a_repository_without_weights_lote_reads_is_refused_with_what_it_has_named() {
        let repo = names(&["config.json", "tokenizer.json", "tf_model.h5", "model.ckpt"]);
        assert_eq!(
            choose_files("org/m", &repo).unwrap_err().to_string(),
            "org/m has no weights lote reads (only tf_model.h5, model.ckpt): it reads \
             model.safetensors (or its shards) and pytorch_model.bin (or its shards)"
        );
    }

    #[test]
    fn takes_the_slow_tokenizer_files_where_there_is_no_tokenizer_json() {
        let repo = names(&[
            "config.json",
            "vocab.json",
            "merges.txt",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "pytorch_model.bin",
        ]);
        assert_eq!(
            choose_files("m", &repo).unwrap(),
            [
                "config.json",
                "merges.txt",
                "pytorch_model.bin",
                "special_tokens_map.json",
                "tokenizer_config.json",
                "vocab.json"
            ]
        );
        let with_fast = names(&["config.json", "tokenizer.json", "vocab.txt", "model.safetensors"]);
        assert!(!choose_files("m", &with_fast).unwrap().contains(&"vocab.txt".to_string()));
    }

    #[test]
    fn a_repository_without_any_tokenizer_is_refused() {
        let repo = names(&["config.json", "model.safetensors", "tokenizer_config.json"]);
        assert_eq!(
            choose_files("org/m", &repo).unwrap_err().to_string(),
            "org/m has no tokenizer: no tokenizer.json, and none of the slow tokenizer files \
             vocab.txt, vocab.json + merges.txt, spiece.model, sentencepiece.bpe.model"
        );
    }
}
