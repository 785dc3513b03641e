//! Model weights from safetensors files, else from `pytorch_model.bin` read as data.
//!
//! Safetensors are preferred when both kinds are there. A `.bin` is a pickle, which runs code
//! when Python loads it; here it is never run: [`super::pickle`] interprets only the opcodes and
//! globals of a state dict and refuses anything else, naming it. Each tensor (each storage, for
//! `.bin`) is read once, straight from the file into its libtorch storage, then moved to the
//! target device and dtype: the bytes are never held twice, so loading peaks at the size of the
//! weights. A missing or mis-shaped tensor is an error naming the tensor and both shapes.

use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use super::pickle::{self, PickleError, StorageDtype};

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error(
        "{dir}: the weights are in `{file}`, which lote does not read: it reads model.safetensors \
         (or its shards) and pytorch_model.bin (or its shards); convert with \
         `model.save_pretrained(dir, safe_serialization=True)`",
        dir = dir.display()
    )]
    UnknownFormat { dir: PathBuf, file: String },
    #[error(
        "{}: no weights: looked for model.safetensors, model.safetensors.index.json, \
         pytorch_model.bin and pytorch_model.bin.index.json",
        dir.display()
    )]
    NoWeights { dir: PathBuf },
    #[error(transparent)]
    Pickle(#[from] PickleError),
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
    /// Loads `model.safetensors`, or every shard named by `model.safetensors.index.json`, else
    /// `pytorch_model.bin` or the shards of `pytorch_model.bin.index.json`. Floating point
    /// tensors are converted to `kind`; integer ones keep theirs.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self, WeightsError> {
        let (format, files) = weight_files(dir)?;
        let mut tensors = HashMap::new();
        let mut hasher = Sha256::new();
        for path in &files {
            let into = Target { device, kind };
            match format {
                Format::Safetensors => read_file(path, into, &mut tensors, &mut hasher)?,
                Format::Pickle => read_pickle_file(path, into, &mut tensors, &mut hasher)?,
            }
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

/// Which kind of checkpoint a directory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Safetensors,
    /// torch.save's zip archive, read by [`pickle`] without running it.
    Pickle,
}

/// Where loaded tensors go.
#[derive(Clone, Copy)]
struct Target {
    device: Device,
    kind: Kind,
}

impl Target {
    /// `tensor` on the target device, floating point converted to the target kind.
    fn place(self, tensor: Tensor) -> Tensor {
        let stored = tensor.kind();
        let floating = matches!(stored, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16);
        tensor.to_device(self.device).to_kind(if floating { self.kind } else { stored })
    }
}

/// The checkpoint files of `dir`, safetensors first: the hub's own order of preference.
fn weight_files(dir: &Path) -> Result<(Format, Vec<PathBuf>), WeightsError> {
    let layouts = [
        (Format::Safetensors, "model.safetensors", "model.safetensors.index.json"),
        (Format::Pickle, "pytorch_model.bin", "pytorch_model.bin.index.json"),
    ];
    for (format, single, index) in layouts {
        if dir.join(single).is_file() {
            return Ok((format, vec![dir.join(single)]));
        }
        if dir.join(index).is_file() {
            return Ok((format, shard_files(dir, &dir.join(index), format)?));
        }
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|e| WeightsError::Unreadable { path: dir.to_path_buf(), reason: e.to_string() })?;
    let mut names: Vec<String> =
        entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into()).collect();
    names.sort();
    if let Some(other) = names.iter().find(|n| is_checkpoint(n)) {
        return Err(WeightsError::UnknownFormat { dir: dir.to_path_buf(), file: other.clone() });
    }
    Err(WeightsError::NoWeights { dir: dir.to_path_buf() })
}

/// Checkpoint files under names the hub's layouts do not use (`model.pt`, `weights.ckpt`...).
fn is_checkpoint(name: &str) -> bool {
    [".bin", ".pt", ".pth", ".ckpt", ".pkl", ".safetensors"].iter().any(|ext| name.ends_with(ext))
}

/// The shard files of a sharded checkpoint, each once, in the order of their names.
fn shard_files(dir: &Path, index: &Path, format: Format) -> Result<Vec<PathBuf>, WeightsError> {
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
    let extension = match format {
        Format::Safetensors => ".safetensors",
        Format::Pickle => ".bin",
    };
    for shard in &shards {
        if !shard.ends_with(extension) || shard.contains('/') {
            return Err(unreadable(format!("shard `{shard}` is not a {extension} file beside it")));
        }
    }
    Ok(shards.into_iter().map(|shard| dir.join(shard)).collect())
}

/// The tensors of one `pytorch_model.bin`: the pickle read as data, then each storage copied
/// from the file once and viewed by its tensors (tied weights share it, as in PyTorch).
fn read_pickle_file(
    path: &Path,
    into: Target,
    tensors: &mut HashMap<String, Tensor>,
    hasher: &mut Sha256,
) -> Result<(), WeightsError> {
    let unreadable = |reason: String| WeightsError::Unreadable { path: path.to_path_buf(), reason };
    let checkpoint = pickle::read_checkpoint(path)?;
    let file = File::open(path).map_err(|e| unreadable(e.to_string()))?;
    hash_file(&file, hasher).map_err(|e| unreadable(e.to_string()))?;
    let mut keys: Vec<&String> = checkpoint.storages.keys().collect();
    keys.sort();
    for key in keys {
        let range = &checkpoint.storages[key];
        let stored = kind_of(range.dtype);
        let count = range.len / range.dtype.elem_size() as u64;
        let storage = Tensor::f_empty([count as i64], (stored, Device::Cpu))?;
        // The pickle reader checked that the entry holds `count` elements of this dtype.
        fill_from_file(&file, &storage, range.offset)
            .map_err(|e| unreadable(format!("storage `{key}`: {e}")))?;
        for tensor in checkpoint.tensors.iter().filter(|t| &t.storage == key) {
            let dims = |values: &[usize]| values.iter().map(|&v| v as i64).collect::<Vec<_>>();
            // The reader checked that this view stays inside the storage.
            let view = storage.f_as_strided(
                dims(&tensor.shape),
                dims(&tensor.strides),
                tensor.storage_offset as i64,
            )?;
            // A view of part of a storage is copied, so the rest of it is not kept alive.
            let whole = tensor.is_contiguous() && tensor.numel() as u64 == count;
            let view = if whole { view } else { view.contiguous() };
            tensors.insert(tensor.name.clone(), into.place(view));
        }
    }
    Ok(())
}

fn kind_of(dtype: StorageDtype) -> Kind {
    match dtype {
        StorageDtype::F32 => Kind::Float,
        StorageDtype::F16 => Kind::Half,
        StorageDtype::BF16 => Kind::BFloat16,
        StorageDtype::F64 => Kind::Double,
        StorageDtype::I64 => Kind::Int64,
        StorageDtype::I32 => Kind::Int,
        StorageDtype::I16 => Kind::Int16,
        StorageDtype::I8 => Kind::Int8,
        StorageDtype::U8 => Kind::Uint8,
        StorageDtype::Bool => Kind::Bool,
    }
}

fn read_file(
    path: &Path,
    into: Target,
    tensors: &mut HashMap<String, Tensor>,
    hasher: &mut Sha256,
) -> Result<(), WeightsError> {
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
        fill_from_file(&file, &tensor, data_start + begin as u64)
            .map_err(|e| unreadable(format!("tensor `{name}`: {e}")))?;
        tensors.insert(name, into.place(tensor));
    }
    Ok(())
}

/// Reads `tensor`'s bytes straight from `file` at `offset` into its storage: the bytes are never
/// held twice, so peak memory is the weights themselves (a mapping read through would count in
/// RSS). `tensor` is a fresh contiguous CPU tensor, as [`Tensor::f_empty`] makes them.
fn fill_from_file(file: &File, tensor: &Tensor, offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;

    assert!(tensor.device() == Device::Cpu && tensor.is_contiguous(), "a fresh CPU tensor");
    let bytes = tensor.numel() * tensor.kind().elt_size_in_bytes();
    if bytes == 0 {
        return Ok(());
    }
    // SAFETY: a contiguous CPU tensor owns exactly `bytes` bytes at `data_ptr`, and nothing
    // else reads or writes them while this slice lives.
    let target = unsafe { std::slice::from_raw_parts_mut(tensor.data_ptr() as *mut u8, bytes) };
    file.read_exact_at(target, offset)
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

    fn pickle_fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/pickle").join(name)
    }

    /// Every tensor of `twin` equals its namesake in `pickled`, which holds nothing else but
    /// the tied `lm_head.weight` (transformers leaves it out of safetensors files, not of .bin).
    fn assert_same_tensors(pickled: &Weights, twin: &Weights) {
        for (name, tensor) in &twin.tensors {
            let ours = pickled.tensors.get(name).unwrap_or_else(|| panic!("{name} is missing"));
            assert_eq!(ours.size(), tensor.size(), "{name}");
            assert_eq!(ours.kind(), tensor.kind(), "{name}");
            assert!(ours.equal(tensor), "{name} differs");
        }
        for name in pickled.tensors.keys().filter(|name| !twin.tensors.contains_key(*name)) {
            assert_eq!(name, "lm_head.weight");
        }
    }

    #[test]
    fn pytorch_model_bin_loads_the_same_tensors_as_its_safetensors_twin() {
        let pairs = [
            ("bert", "bert_safetensors"),
            ("gpt2", "gpt2_safetensors"),
            ("gpt2_sharded", "gpt2_safetensors"),
        ];
        for (bin, safe) in pairs {
            let pickled = Weights::load(&pickle_fixture(bin), Device::Cpu, Kind::Float).unwrap();
            let twin = Weights::load(&pickle_fixture(safe), Device::Cpu, Kind::Float).unwrap();
            assert_same_tensors(&pickled, &twin);
        }
        let single = pickle_fixture("bert").join("pytorch_model.bin");
        let weights = Weights::load(&pickle_fixture("bert"), Device::Cpu, Kind::Float).unwrap();
        assert_eq!(weights.sha256(), hex(&Sha256::digest(std::fs::read(single).unwrap())));
    }

    #[test]
    fn safetensors_are_preferred_when_both_kinds_are_there() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "model.safetensors",
            &[("w", Tensor::ones([2], (Kind::Float, Device::Cpu)))],
        );
        std::fs::write(dir.path().join("pytorch_model.bin"), b"never opened").unwrap();
        let weights = Weights::load(dir.path(), Device::Cpu, Kind::Float).unwrap();
        assert!(weights.contains("w"));
    }

    #[test]
    fn a_hostile_pickle_is_refused_naming_its_global_and_nothing_runs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(pickle_fixture("evil.bin"), dir.path().join("pytorch_model.bin")).unwrap();
        let error = Weights::load(dir.path(), Device::Cpu, Kind::Float).err().unwrap();
        assert_eq!(
            error.to_string(),
            format!(
                "{}: refused pickle global posix.system",
                dir.path().join("pytorch_model.bin").display()
            )
        );
        assert!(!Path::new("/tmp/lote-pickle-fixture-pwned").exists());
    }

    #[test]
    fn a_legacy_pickle_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pytorch_model.bin");
        std::fs::copy(pickle_fixture("legacy.bin"), &path).unwrap();
        let error = Weights::load(dir.path(), Device::Cpu, Kind::Float).err().unwrap();
        assert_eq!(
            error.to_string(),
            format!(
                "`{}` is a legacy (pre-zip) torch checkpoint; lote reads only the zip format \
                 torch.save writes since 1.6: re-save it with a current torch or convert to \
                 safetensors",
                path.display()
            )
        );
    }

    #[test]
    fn checkpoints_under_other_names_are_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.pt"), b"not even opened").unwrap();
        let error = Weights::load(dir.path(), Device::Cpu, Kind::Float).err().unwrap();
        assert!(matches!(error, WeightsError::UnknownFormat { .. }));
        let message = error.to_string();
        assert!(
            message.contains("`model.pt`") && message.contains("safe_serialization"),
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
