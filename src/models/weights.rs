//! Model weights from safetensors files, and nothing else.
//!
//! Pickle checkpoints (`.bin`, `.pt`, `.ckpt`) run arbitrary code when loaded, so they are refused
//! with a message saying how to convert. Each tensor is read once, straight from the file into
//! its libtorch storage, then moved to the target device and dtype: the bytes are never held
//! twice, so loading peaks at the size of the weights. A missing or mis-shaped tensor is an
//! error naming the tensor and both shapes.

use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error(
        "{dir}: only pickle weights found ({file}); pickle runs code when loaded, so lote refuses \
         it: convert to safetensors (e.g. `model.save_pretrained(dir, safe_serialization=True)`)",
        dir = dir.display()
    )]
    PickleRefused { dir: PathBuf, file: String },
    #[error("{}: no model.safetensors or model.safetensors.index.json", dir.display())]
    NoWeights { dir: PathBuf },
    #[error("{}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("tensor `{name}` is missing from the weights (expected shape {expected:?})")]
    Missing { name: String, expected: Vec<i64> },
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape { name: String, found: Vec<i64>, expected: Vec<i64> },
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Every tensor of a checkpoint, on its device, plus the checkpoint's hash.
pub struct Weights {
    tensors: HashMap<String, Tensor>,
    sha256: String,
    int8_linears: bool,
}

impl Weights {
    /// Loads `model.safetensors`, or every shard named by `model.safetensors.index.json`.
    /// Floating point tensors are converted to `kind`; integer ones keep theirs.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self, WeightsError> {
        let files = weight_files(dir)?;
        let mut tensors = HashMap::new();
        let mut hasher = Sha256::new();
        for path in &files {
            read_file(path, device, kind, &mut tensors, &mut hasher)?;
        }
        Ok(Self { tensors, sha256: hex(&hasher.finalize()), int8_linears: false })
    }

    /// Whether the models built from these weights quantize their linear layers to int8
    /// (`dtype = "int8"`); embeddings and norms stay in the loaded dtype.
    pub fn with_int8_linears(self, int8_linears: bool) -> Self {
        Self { int8_linears, ..self }
    }

    pub fn int8_linears(&self) -> bool {
        self.int8_linears
    }

    /// sha256 over the weight files' bytes, in shard order.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor `name`, checked against `shape`.
    pub fn get(&self, name: &str, shape: &[i64]) -> Result<Tensor, WeightsError> {
        let tensor = self.tensors.get(name).ok_or_else(|| WeightsError::Missing {
            name: name.to_string(),
            expected: shape.to_vec(),
        })?;
        if tensor.size() != shape {
            return Err(WeightsError::Shape {
                name: name.to_string(),
                found: tensor.size(),
                expected: shape.to_vec(),
            });
        }
        Ok(tensor.shallow_clone())
    }

    /// Like [`Weights::get`], but `None` when the tensor is absent (tied or optional weights).
    pub fn get_optional(&self, name: &str, shape: &[i64]) -> Result<Option<Tensor>, WeightsError> {
        match self.tensors.contains_key(name) {
            true => self.get(name, shape).map(Some),
            false => Ok(None),
        }
    }

    /// The prefix under which a head checkpoint keeps its base model (`bert.`), or "" when the
    /// checkpoint is the bare base model (as sentence-transformers saves it).
    pub fn base_prefix(&self, candidates: &[&str], probe: &str) -> String {
        candidates
            .iter()
            .find(|prefix| self.tensors.contains_key(&format!("{prefix}{probe}")))
            .map_or_else(String::new, |prefix| prefix.to_string())
    }
}

fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, WeightsError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        return shard_files(dir, &index);
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|e| WeightsError::Unreadable { path: dir.to_path_buf(), reason: e.to_string() })?;
    let mut names: Vec<String> =
        entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into()).collect();
    names.sort();
    if let Some(pickle) = names.iter().find(|n| is_pickle(n)) {
        return Err(WeightsError::PickleRefused { dir: dir.to_path_buf(), file: pickle.clone() });
    }
    Err(WeightsError::NoWeights { dir: dir.to_path_buf() })
}

fn is_pickle(name: &str) -> bool {
    [".bin", ".pt", ".pth", ".ckpt", ".pkl"].iter().any(|ext| name.ends_with(ext))
}

/// The shard files of a sharded checkpoint, each once, in the order of their names.
fn shard_files(dir: &Path, index: &Path) -> Result<Vec<PathBuf>, WeightsError> {
    let unreadable =
        |reason: String| WeightsError::Unreadable { path: index.to_path_buf(), reason };
    let text = std::fs::read_to_string(index).map_err(|e| unreadable(e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
    let map = json["weight_map"]
        .as_object()
        .ok_or_else(|| unreadable("no `weight_map` object".into()))?;
    let mut shards: Vec<String> =
        map.values().filter_map(|v| v.as_str().map(String::from)).collect();
    shards.sort();
    shards.dedup();
    for shard in &shards {
        if is_pickle(shard) || !shard.ends_with(".safetensors") || shard.contains('/') {
            return Err(unreadable(format!("shard `{shard}` is not a safetensors file beside it")));
        }
    }
    Ok(shards.into_iter().map(|shard| dir.join(shard)).collect())
}

fn read_file(
    path: &Path,
    device: Device,
    kind: Kind,
    tensors: &mut HashMap<String, Tensor>,
    hasher: &mut Sha256,
) -> Result<(), WeightsError> {
    use std::os::unix::fs::FileExt;

    let unreadable = |reason: String| WeightsError::Unreadable { path: path.to_path_buf(), reason };
    let file = File::open(path).map_err(|e| unreadable(e.to_string()))?;
    hash_file(&file, hasher).map_err(|e| unreadable(e.to_string()))?;
    // SAFETY: the mapping is read-only and dropped before this function returns; only the
    // header is read through it. A file truncated by another process meanwhile would fault, as
    // with any mmap reader; model directories are not written while a worker loads them.
    let mapped = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| unreadable(e.to_string()))?;
    let (header_len, metadata) = safetensors::SafeTensors::read_metadata(&mapped)
        .map_err(|e| unreadable(format!("not a safetensors file: {e:?}")))?;
    let data_start = 8 + header_len as u64;
    for (name, info) in metadata.tensors() {
        let shape: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
        let stored = Kind::try_from(info.dtype)?;
        let tensor = Tensor::f_empty(&shape, (stored, Device::Cpu))?;
        let bytes = tensor.numel() * stored.elt_size_in_bytes();
        let (begin, end) = info.data_offsets;
        if end - begin != bytes {
            return Err(unreadable(format!(
                "tensor `{name}` holds {} bytes, not {bytes}",
                end - begin
            )));
        }
        if bytes > 0 {
            // Straight from the file into the tensor: the bytes are never held twice, so peak
            // memory is the weights themselves (a mapping read through would count in RSS).
            // SAFETY: `tensor` is a fresh contiguous CPU tensor of exactly `bytes` bytes.
            let target =
                unsafe { std::slice::from_raw_parts_mut(tensor.data_ptr() as *mut u8, bytes) };
            file.read_exact_at(target, data_start + begin as u64)
                .map_err(|e| unreadable(format!("tensor `{name}`: {e}")))?;
        }
        let floating = matches!(stored, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16);
        let target = if floating { kind } else { stored };
        tensors.insert(name, tensor.to_device(device).to_kind(target));
    }
    Ok(())
}

/// Feeds the whole file to `hasher` in chunks (the checkpoint's identity in answers).
fn hash_file(mut file: &File, hasher: &mut Sha256) -> std::io::Result<()> {
    use std::io::Read;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut chunk)? {
            0 => return Ok(()),
            read => hasher.update(&chunk[..read]),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, tensors: &[(&str, Tensor)]) {
        Tensor::write_safetensors(tensors, dir.join(name)).unwrap();
    }

    #[test]
    fn loads_tensors_converts_floats_and_checks_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let ids = Tensor::from_slice(&[1i64, 2, 3]);
        write(
            dir.path(),
            "model.safetensors",
            &[("w", Tensor::arange(6, (Kind::Double, Device::Cpu)).view([2, 3])), ("ids", ids)],
        );
        let weights = Weights::load(dir.path(), Device::Cpu, Kind::Float).unwrap();
        let w = weights.get("w", &[2, 3]).unwrap();
        assert_eq!(w.kind(), Kind::Float);
        assert_eq!(Vec::<f32>::try_from(w.flatten(0, -1)).unwrap(), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let ids = weights.get("ids", &[3]).unwrap();
        assert_eq!(ids.kind(), Kind::Int64);
        assert_eq!(Vec::<i64>::try_from(ids).unwrap(), [1, 2, 3]);
        let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
        assert_eq!(weights.sha256(), hex(&Sha256::digest(&bytes)));
        let error = weights.get("w", &[3, 2]).err().unwrap();
        assert_eq!(error.to_string(), "tensor `w` has shape [2, 3], expected [3, 2]");
        let error = weights.get("nope", &[4]).err().unwrap();
        assert_eq!(
            error.to_string(),
            "tensor `nope` is missing from the weights (expected shape [4])"
        );
        assert!(weights.get_optional("nope", &[4]).unwrap().is_none());
    }

    #[test]
    fn sharded_checkpoints_load_every_shard() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "model-00001-of-00002.safetensors",
            &[("a", Tensor::zeros([2], (Kind::Float, Device::Cpu)))],
        );
        write(
            dir.path(),
            "model-00002-of-00002.safetensors",
            &[("b", Tensor::zeros([3], (Kind::Float, Device::Cpu)))],
        );
        let index = r#"{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#;
        std::fs::write(dir.path().join("model.safetensors.index.json"), index).unwrap();
        let weights = Weights::load(dir.path(), Device::Cpu, Kind::Float).unwrap();
        assert!(weights.contains("a") && weights.contains("b"));
    }

    #[test]
    fn pickle_weights_are_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pytorch_model.bin"), b"not even opened").unwrap();
        let error = Weights::load(dir.path(), Device::Cpu, Kind::Float).err().unwrap();
        assert!(matches!(error, WeightsError::PickleRefused { .. }));
        let message = error.to_string();
        assert!(
            message.contains("pytorch_model.bin") && message.contains("convert to safetensors"),
            "{message}"
        );
    }

    #[test]
    fn a_directory_without_weights_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let error = Weights::load(dir.path(), Device::Cpu, Kind::Float).err().unwrap();
        assert!(matches!(error, WeightsError::NoWeights { .. }));
    }
}
