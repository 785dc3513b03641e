//! Reads PyTorch `pytorch_model.bin` checkpoints without running them.
//!
//! Since torch 1.6, `torch.save` writes a zip archive: `<name>/data.pkl`, a Python pickle that
//! describes the saved object, and one uncompressed entry `<name>/data/<key>` per tensor
//! storage. A pickle is a program, not a data format: its opcodes import any Python callable by
//! name and call it, so `torch.load` on an untrusted `.bin` can run `os.system`. This module
//! runs nothing. It interprets the pickle's opcodes on a value stack of its own and knows only
//! the globals that `torch.load(weights_only=True)` needs for a state dict
//! (`collections.OrderedDict`, the tensor and parameter rebuild functions and the storage
//! types); any other global is refused at the opcode that names it, even if it would never be
//! called. What comes out is data: each tensor's name, dtype, shape, strides and storage, and
//! each storage's byte range in the file, checked against one another, for the caller to map or
//! copy into tensors. Hostile files are bounded: sizes are checked against the input before
//! anything is allocated, and the stack, memo, MARK nesting, objects, tensors and dims have
//! limits.

use std::collections::hash_map::Entry as Slot;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive};

/// The largest `data.pkl` read; a state dict's pickle takes about 100 bytes a tensor.
pub const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// The most tensors one pickle may build.
pub const MAX_TENSORS: usize = 1 << 18;
/// The most dims a tensor may have.
pub const MAX_DIMS: usize = 16;
const MAX_STACK: usize = 1 << 20;
const MAX_MARKS: usize = 256;
const MAX_MEMO: usize = 1 << 21;
/// Objects plus the values held in tuples, lists and dicts.
const MAX_VALUES: usize = 1 << 23;

/// The element type of a storage, named by its `torch.<Name>Storage` global.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StorageDtype {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageDtype {
    const ALL: [StorageDtype; 10] = [
        Self::F32,
        Self::F16,
        Self::BF16,
        Self::F64,
        Self::I64,
        Self::I32,
        Self::I16,
        Self::I8,
        Self::U8,
        Self::Bool,
    ];

    /// Bytes per element.
    pub fn elem_size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    /// The name of the storage type in `torch`, e.g. `FloatStorage`.
    pub fn storage_type(self) -> &'static str {
        match self {
            Self::F32 => "FloatStorage",
            Self::F16 => "HalfStorage",
            Self::BF16 => "BFloat16Storage",
            Self::F64 => "DoubleStorage",
            Self::I64 => "LongStorage",
            Self::I32 => "IntStorage",
            Self::I16 => "ShortStorage",
            Self::I8 => "CharStorage",
            Self::U8 => "ByteStorage",
            Self::Bool => "BoolStorage",
        }
    }

    fn from_storage_type(name: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.storage_type().as_bytes() == name)
    }
}

/// One tensor of the state dict: a strided view of a storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PickledTensor {
    pub name: String,
    pub dtype: StorageDtype,
    pub shape: Vec<usize>,
    /// In elements, one per dim.
    pub strides: Vec<usize>,
    /// In elements, from the start of the storage.
    pub storage_offset: usize,
    /// The storage's key in [`Checkpoint::storages`] (torch names them "0", "1", ...).
    pub storage: String,
}

impl PickledTensor {
    /// The number of elements (saturating; exact for tensors this module returns).
    pub fn numel(&self) -> usize {
        if self.shape.contains(&0) {
            return 0;
        }
        self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).unwrap_or(usize::MAX)
    }

    /// Whether the elements lie row-major and dense from `storage_offset` on.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d != 1 && s != expected {
                return self.numel() == 0;
            }
            expected = expected.saturating_mul(d);
        }
        true
    }

    /// The bytes of its storage that the tensor reads, from its first element to one past its
    /// last (empty for a tensor without elements); `None` if that overflows 64 bits.
    pub fn storage_bytes(&self) -> Option<Range<u64>> {
        let elem = self.dtype.elem_size() as u64;
        let start = (self.storage_offset as u64).checked_mul(elem)?;
        if self.shape.contains(&0) {
            return Some(start..start);
        }
        let mut last = self.storage_offset as u64;
        for (&d, &s) in self.shape.iter().zip(&self.strides) {
            last = last.checked_add((d as u64).saturating_sub(1).checked_mul(s as u64)?)?;
        }
        Some(start..last.checked_add(1)?.checked_mul(elem)?)
    }
}

/// Where a storage's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageRange {
    /// Absolute byte offset in the `.bin` file ([`read_checkpoint`]); 0 from [`parse_pickle`].
    /// torch aligns it to 64 bytes; other zip writers may not.
    pub offset: u64,
    /// Bytes: the declared element count times the element size, equal to the entry's size.
    pub len: u64,
    pub dtype: StorageDtype,
}

/// The tensors of a checkpoint, in the pickle's order, and the storages they view (only
/// those: storages of skipped values are neither listed nor checked).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub tensors: Vec<PickledTensor>,
    pub storages: HashMap<String, StorageRange>,
}

impl Checkpoint {
    /// The absolute bytes of the file that `tensor` reads (see [`PickledTensor::storage_bytes`]).
    pub fn file_range(&self, tensor: &PickledTensor) -> Option<Range<u64>> {
        let base = self.storages.get(&tensor.storage)?.offset;
        let span = tensor.storage_bytes()?;
        Some(base.checked_add(span.start)?..base.checked_add(span.end)?)
    }
}

/// Why a checkpoint was refused; every message is one line.
#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    #[error("cannot open {}: {source}", file.display())]
    Open { file: PathBuf, source: io::Error },
    #[error("{}: {source}", file.display())]
    InFile { file: PathBuf, source: Box<PickleError> },
    #[error("cannot read the checkpoint: {0}")]
    Read(#[from] io::Error),
    #[error(
        "`{}` is a legacy (pre-zip) torch checkpoint; lote reads only the zip format torch.save \
         writes since 1.6: re-save it with a current torch or convert to safetensors",
        file.display()
    )]
    LegacyFile { file: PathBuf },
    #[error(
        "a legacy (pre-zip) torch checkpoint; lote reads only the zip format torch.save writes \
         since 1.6: re-save it with a current torch or convert to safetensors"
    )]
    Legacy,
    #[error("not a torch checkpoint: it starts with neither a zip signature nor a pickle")]
    NotZip,
    #[error("truncated archive: {0}")]
    Truncated(String),
    #[error("corrupt archive: {0}")]
    Archive(String),
    #[error("the archive holds no `<name>/data.pkl`")]
    NoPickle,
    #[error("the archive holds two pickles, `{0}` and `{1}`")]
    TwoPickles(String, String),
    #[error(
        "archive entry `{entry}` is compressed ({method}); torch.save stores entries \
         uncompressed and lote reads them in place"
    )]
    Compressed { entry: String, method: String },
    #[error("the checkpoint was saved {0}-endian; lote reads little-endian checkpoints only")]
    ByteOrder(String),
    #[error("storage `{key}` has no archive entry `{entry}`")]
    MissingStorage { key: String, entry: String },
    #[error("storage `{key}` declares {declared} bytes but its archive entry holds {actual}")]
    StorageSize { key: String, declared: u64, actual: u64 },
    #[error("refused pickle global {0}")]
    Global(String),
    #[error("refused pickle opcode {name} at byte {pos}")]
    Opcode { name: &'static str, pos: usize },
    #[error("unknown pickle opcode 0x{code:02x} at byte {pos}")]
    UnknownOpcode { code: u8, pos: usize },
    #[error("truncated pickle: the opcode at byte {pos} runs past the end")]
    TruncatedPickle { pos: usize },
    #[error(
        "declared size {declared} of the {what} at byte {pos} exceeds the input ({left} bytes left)"
    )]
    DeclaredSize { what: &'static str, declared: u64, left: usize, pos: usize },
    #[error("pickle exceeds the limit of {limit} {what}")]
    Limit { what: &'static str, limit: u64 },
    #[error("malformed pickle at byte {pos}: {msg}")]
    Malformed { pos: usize, msg: String },
    #[error("tensor `{name}` {msg}")]
    Tensor { name: String, msg: String },
    #[error("no tensors: {0}")]
    NoTensors(String),
}

impl PickleError {
    /// The error without the file name that [`read_checkpoint`] wraps it in.
    pub fn cause(&self) -> &PickleError {
        match self {
            Self::InFile { source, .. } => source.cause(),
            other => other,
        }
    }

    fn in_file(self, file: &Path) -> Self {
        match self {
            Self::Legacy => Self::LegacyFile { file: file.to_owned() },
            other => Self::InFile { file: file.to_owned(), source: Box::new(other) },
        }
    }
}

type Result<T> = std::result::Result<T, PickleError>;

/// Reads the state dict of the zip checkpoint at `path`: its tensors and where their storages
/// lie in the file. Errors name the file.
pub fn read_checkpoint(path: &Path) -> Result<Checkpoint> {
    let file =
        File::open(path).map_err(|source| PickleError::Open { file: path.to_owned(), source })?;
    read_checkpoint_from(BufReader::new(file)).map_err(|e| e.in_file(path))
}

/// [`read_checkpoint`] on any reader; storage offsets count from the reader's start.
pub fn read_checkpoint_from<R: Read + Seek>(mut reader: R) -> Result<Checkpoint> {
    let len = reader.seek(SeekFrom::End(0))?;
    reader.seek(SeekFrom::Start(0))?;
    let mut magic = Vec::with_capacity(2);
    reader.by_ref().take(2).read_to_end(&mut magic)?;
    match magic.as_slice() {
        b"PK" => {}
        [0x80, ..] => return Err(PickleError::Legacy),
        _ => return Err(PickleError::NotZip),
    }
    let mut archive = ZipArchive::new(reader).map_err(zip_error)?;
    let entries = list_entries(&mut archive, len)?;
    let (prefix, pickle) = find_pickle(&entries)?;
    let by_name: HashMap<&str, &ZipEntry> = entries.iter().map(|e| (e.name.as_str(), e)).collect();
    if let Some(order) = by_name.get(format!("{prefix}/byteorder").as_str()) {
        let order = read_entry(&mut archive, order, 16)?;
        if order != b"little" {
            return Err(PickleError::ByteOrder(String::from_utf8_lossy(&order).into_owned()));
        }
    }
    let mut checkpoint = parse_pickle(&read_entry(&mut archive, pickle, MAX_PICKLE_BYTES)?)?;
    for (key, range) in &mut checkpoint.storages {
        let name = format!("{prefix}/data/{key}");
        let Some(entry) = by_name.get(name.as_str()) else {
            return Err(PickleError::MissingStorage { key: key.clone(), entry: name });
        };
        entry.check_stored()?;
        if entry.size != range.len {
            let (declared, actual) = (range.len, entry.size);
            return Err(PickleError::StorageSize { key: key.clone(), declared, actual });
        }
        range.offset = entry.start;
    }
    Ok(checkpoint)
}

/// One archive entry, as its central and local headers describe it.
struct ZipEntry {
    index: usize,
    name: String,
    method: CompressionMethod,
    start: u64,
    size: u64,
    compressed: u64,
}

impl ZipEntry {
    fn check_stored(&self) -> Result<()> {
        if self.method != CompressionMethod::Stored {
            // The code, not zip's variant: which variants exist depends on zip's features.
            #[allow(deprecated)]
            let method = match self.method.to_u16() {
                8 => "deflate".to_owned(),
                12 => "bzip2".to_owned(),
                14 => "LZMA".to_owned(),
                93 => "zstd".to_owned(),
                99 => "AES-encrypted".to_owned(),
                code => format!("method {code}"),
            };
            return Err(PickleError::Compressed { entry: self.name.clone(), method });
        }
        if self.size != self.compressed {
            return Err(PickleError::Archive(format!(
                "stored entry `{}` has two sizes",
                self.name
            )));
        }
        Ok(())
    }
}

fn zip_error(e: ZipError) -> PickleError {
    match e {
        ZipError::InvalidArchive("Could not find central directory end") => {
            PickleError::Truncated("no zip central directory at the end of the file".into())
        }
        ZipError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            PickleError::Truncated("the file ends inside a zip record".into())
        }
        other => PickleError::Archive(other.to_string()),
    }
}

fn list_entries<R: Read + Seek>(archive: &mut ZipArchive<R>, len: u64) -> Result<Vec<ZipEntry>> {
    (0..archive.len())
        .map(|index| {
            let file = archive.by_index_raw(index).map_err(zip_error)?;
            let entry = ZipEntry {
                index,
                name: file.name().to_owned(),
                method: file.compression(),
                start: file.data_start(),
                size: file.size(),
                compressed: file.compressed_size(),
            };
            if entry.start.checked_add(entry.compressed).is_none_or(|end| end > len) {
                let msg = format!("entry `{}` runs past the end of the file", entry.name);
                return Err(PickleError::Truncated(msg));
            }
            Ok(entry)
        })
        .collect()
}

/// The one `<prefix>/data.pkl` entry, with its prefix (torch uses `archive` or the file stem).
fn find_pickle(entries: &[ZipEntry]) -> Result<(&str, &ZipEntry)> {
    let mut found = entries.iter().filter_map(|e| {
        let prefix = e.name.strip_suffix("/data.pkl")?;
        (!prefix.is_empty() && !prefix.contains('/')).then_some((prefix, e))
    });
    let first = found.next().ok_or(PickleError::NoPickle)?;
    match found.next() {
        Some(second) => Err(PickleError::TwoPickles(first.1.name.clone(), second.1.name.clone())),
        None => Ok(first),
    }
}

fn read_entry<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    entry: &ZipEntry,
    limit: u64,
) -> Result<Vec<u8>> {
    entry.check_stored()?;
    if entry.size > limit {
        let (name, size) = (&entry.name, entry.size);
        let msg = format!("entry `{name}` holds {size} bytes, more than the {limit} lote reads");
        return Err(PickleError::Archive(msg));
    }
    let mut file = archive.by_index_raw(entry.index).map_err(zip_error)?;
    let mut bytes = Vec::new();
    file.by_ref().take(entry.size).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != entry.size {
        return Err(PickleError::Truncated(format!("entry `{}` ends early", entry.name)));
    }
    Ok(bytes)
}

/// Interprets a `data.pkl` and returns its tensors, with each storage's declared length and
/// offset 0. Pure and total: any input gives a checkpoint or an error, never a panic.
pub fn parse_pickle(bytes: &[u8]) -> Result<Checkpoint> {
    let mut unpickler = Unpickler::new(bytes);
    let top = unpickler.run()?;
    unpickler.collect(top)
}

/// The globals a state dict needs; nothing else gets past `GLOBAL` or `STACK_GLOBAL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildParameter,
    RebuildParameterWithState,
    Storage(StorageDtype),
}

fn resolve_global(module: &[u8], name: &[u8]) -> Result<Global> {
    let global = match (module, name) {
        (b"collections", b"OrderedDict") => Some(Global::OrderedDict),
        (b"torch._utils", b"_rebuild_tensor_v2") => Some(Global::RebuildTensor),
        (b"torch._utils", b"_rebuild_parameter") => Some(Global::RebuildParameter),
        (b"torch._utils", b"_rebuild_parameter_with_state") => {
            Some(Global::RebuildParameterWithState)
        }
        (b"torch", name) => StorageDtype::from_storage_type(name).map(Global::Storage),
        _ => None,
    };
    global.ok_or_else(|| PickleError::Global(printable(&[module, b".", name].concat())))
}

/// Text from the file made fit for a one-line message: control characters escaped, cut at 200.
fn printable(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, c) in String::from_utf8_lossy(bytes).chars().enumerate() {
        if i == 200 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A stack value; everything bigger than a number lives in the unpickler's object arena, so
/// values copy freely and shared or cyclic references cost nothing.
#[derive(Clone, Copy, Debug)]
enum Value {
    None,
    /// Bools and floats are kept only as kinds: a state dict never needs their value.
    Bool,
    Int(i64),
    Float,
    Global(Global),
    Obj(usize),
}

#[derive(Debug)]
enum Obj {
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// A dict or an OrderedDict; later duplicate keys win when tensors are collected.
    Dict(Vec<(Value, Value)>),
    /// A persistent id: the key of a storage declared in `Unpickler::storages`.
    Storage(String),
    Tensor(Box<TensorMeta>),
}

#[derive(Debug)]
struct TensorMeta {
    storage: String,
    storage_offset: usize,
    shape: Vec<usize>,
    strides: Vec<usize>,
}

#[derive(Default)]
struct Unpickler<'a> {
    input: &'a [u8],
    pos: usize,
    /// Where the opcode being run starts, for messages.
    op_pos: usize,
    stack: Vec<Value>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    objs: Vec<Obj>,
    /// Key -> dtype and element count, as the persistent ids declare them.
    storages: HashMap<String, (StorageDtype, u64)>,
    tensors: usize,
    /// Counted against `MAX_VALUES`.
    values: usize,
}

/// Opcodes a pickle may have that a state dict does not need, named for the refusal.
fn refused_opcode(code: u8) -> Option<&'static str> {
    Some(match code {
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'L' => "LONG",
        b'P' => "PERSID",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'V' => "UNICODE",
        b'd' => "DICT",
        b'g' => "GET",
        b'i' => "INST",
        b'l' => "LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x8b => "LONG4",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return None,
    })
}

/// The width of an opcode's fixed little-endian argument: an int, a length, a memo index.
fn arg_width(code: u8) -> Option<usize> {
    match code {
        0x80 | b'K' | 0x8a | 0x8c | b'U' | b'C' | b'h' | b'q' => Some(1),
        b'M' => Some(2),
        b'J' | b'X' | b'B' | b'j' | b'r' => Some(4),
        0x8d | 0x8e | 0x95 => Some(8),
        _ => None,
    }
}

/// A little-endian two's-complement integer (LONG1), if it fits in 64 bits.
fn decode_long(bytes: &[u8]) -> Option<i64> {
    let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
    let fill = if negative { 0xff } else { 0 };
    let (low, high) = bytes.split_at(bytes.len().min(8));
    let mut buf = [fill; 8];
    buf.iter_mut().zip(low).for_each(|(d, s)| *d = *s);
    let value = i64::from_le_bytes(buf);
    (high.iter().all(|&b| b == fill) && (value < 0) == negative).then_some(value)
}

impl<'a> Unpickler<'a> {
    fn new(input: &'a [u8]) -> Self {
        Unpickler { input, ..Unpickler::default() }
    }

    fn malformed(&self, msg: impl Into<String>) -> PickleError {
        PickleError::Malformed { pos: self.op_pos, msg: msg.into() }
    }

    fn run(&mut self) -> Result<Value> {
        loop {
            self.op_pos = self.pos;
            let code = self.uint(1)? as u8;
            if let Some(top) = self.step(code)? {
                return Ok(top);
            }
        }
    }

    /// Runs one opcode; `Some` is the pickled object, at STOP.
    fn step(&mut self, code: u8) -> Result<Option<Value>> {
        let arg = match arg_width(code) {
            Some(width) => self.uint(width)?,
            None => 0,
        };
        match code {
            0x80 if arg > 5 => return Err(self.malformed(format!("pickle protocol {arg}"))),
            0x80 => {}
            // FRAME only groups opcodes for buffered reading.
            0x95 => _ = self.check_size(arg, "frame")?,
            b'.' => return self.pop().map(Some),
            b'(' if self.marks.len() >= MAX_MARKS => {
                return Err(PickleError::Limit { what: "nested MARKs", limit: MAX_MARKS as u64 });
            }
            b'(' => self.marks.push(self.stack.len()),
            b'N' => self.push(Value::None)?,
            0x88 | 0x89 => self.push(Value::Bool)?,
            b'K' | b'M' => self.push(Value::Int(arg as i64))?,
            b'J' => self.push(Value::Int((arg as u32 as i32).into()))?,
            0x8a => {
                let value = decode_long(self.take(arg as usize)?);
                let value = value.ok_or_else(|| self.malformed("integer too large"))?;
                self.push(Value::Int(value))?;
            }
            b'G' => {
                self.take(8)?;
                self.push(Value::Float)?;
            }
            b'X' | 0x8c | 0x8d => self.string(arg)?,
            b'U' | b'C' | b'B' | 0x8e => self.bytes(arg)?,
            b')' => self.push_obj(Obj::Tuple(Vec::new()))?,
            b't' => {
                let items = self.pop_mark()?;
                self.push_obj(Obj::Tuple(items))?;
            }
            0x85..=0x87 => {
                let items = self.pop_n(usize::from(code - 0x84))?;
                self.push_obj(Obj::Tuple(items))?;
            }
            b']' => self.push_obj(Obj::List(Vec::new()))?,
            b'}' => self.push_obj(Obj::Dict(Vec::new()))?,
            b'a' | b'e' => {
                let items = if code == b'a' { self.pop_n(1)? } else { self.pop_mark()? };
                self.extend_list(items)?;
            }
            b's' | b'u' => {
                let items = if code == b's' { self.pop_n(2)? } else { self.pop_mark()? };
                self.extend_dict(items)?;
            }
            b'c' => {
                let (module, name) = (self.line()?, self.line()?);
                self.push(Value::Global(resolve_global(module, name)?))?;
            }
            0x93 => self.stack_global()?,
            b'R' => self.reduce()?,
            0x81 => self.new_obj()?,
            b'b' => self.build()?,
            b'Q' => self.persistent_id()?,
            b'h' | b'j' => self.memo_get(arg)?,
            b'q' | b'r' => self.memo_put(arg)?,
            0x94 => self.memo_put(self.memo.len() as u64)?,
            _ => {
                let pos = self.op_pos;
                return Err(match refused_opcode(code) {
                    Some(name) => PickleError::Opcode { name, pos },
                    None => PickleError::UnknownOpcode { code, pos },
                });
            }
        }
        Ok(None)
    }

    // Reading the input.

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n);
        let bytes = end.and_then(|end| self.input.get(self.pos..end));
        let bytes = bytes.ok_or(PickleError::TruncatedPickle { pos: self.op_pos })?;
        self.pos += n;
        Ok(bytes)
    }

    /// A little-endian unsigned argument of `width` bytes (at most 8).
    fn uint(&mut self, width: usize) -> Result<u64> {
        let mut buf = [0u8; 8];
        let bytes = self.take(width.min(8))?;
        buf.iter_mut().zip(bytes).for_each(|(d, s)| *d = *s);
        Ok(u64::from_le_bytes(buf))
    }

    /// Checks a declared size against what is left of the input, before anything is allocated.
    fn check_size(&self, declared: u64, what: &'static str) -> Result<usize> {
        let left = self.input.len().saturating_sub(self.pos);
        match usize::try_from(declared) {
            Ok(n) if n <= left => Ok(n),
            _ => Err(PickleError::DeclaredSize { what, declared, left, pos: self.op_pos }),
        }
    }

    fn line(&mut self) -> Result<&'a [u8]> {
        let rest = self.input.get(self.pos..).unwrap_or_default();
        let n = rest.iter().position(|&b| b == b'\n');
        let line = self.take(n.ok_or(PickleError::TruncatedPickle { pos: self.op_pos })?)?;
        self.pos += 1;
        Ok(line)
    }

    fn string(&mut self, declared: u64) -> Result<()> {
        let n = self.check_size(declared, "string")?;
        let text = std::str::from_utf8(self.take(n)?);
        let text = text.map_err(|_| self.malformed("string is not UTF-8"))?;
        self.push_obj(Obj::Str(text.to_owned()))
    }

    fn bytes(&mut self, declared: u64) -> Result<()> {
        let n = self.check_size(declared, "bytes")?;
        let bytes = self.take(n)?.to_vec();
        self.push_obj(Obj::Bytes(bytes))
    }

    // The stack, the memo and the arena.

    fn push(&mut self, value: Value) -> Result<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(PickleError::Limit { what: "stack entries", limit: MAX_STACK as u64 });
        }
        self.stack.push(value);
        Ok(())
    }

    fn push_obj(&mut self, obj: Obj) -> Result<()> {
        let value = self.alloc(obj)?;
        self.push(value)
    }

    fn alloc(&mut self, obj: Obj) -> Result<Value> {
        let held = match &obj {
            Obj::Tuple(items) => items.len(),
            _ => 0,
        };
        self.charge(1 + held)?;
        self.objs.push(obj);
        Ok(Value::Obj(self.objs.len() - 1))
    }

    /// Counts `n` more values kept in the arena: objects and container items.
    fn charge(&mut self, n: usize) -> Result<()> {
        self.values = self.values.saturating_add(n);
        if self.values > MAX_VALUES {
            return Err(PickleError::Limit { what: "values", limit: MAX_VALUES as u64 });
        }
        Ok(())
    }

    /// The values above the innermost MARK: what an opcode may pop.
    fn frame_len(&self) -> usize {
        self.stack.len().saturating_sub(self.marks.last().copied().unwrap_or(0))
    }

    fn pop(&mut self) -> Result<Value> {
        let value = if self.frame_len() > 0 { self.stack.pop() } else { None };
        value.ok_or_else(|| self.malformed("stack underflow"))
    }

    fn peek(&self) -> Result<Value> {
        let value = if self.frame_len() > 0 { self.stack.last().copied() } else { None };
        value.ok_or_else(|| self.malformed("stack underflow"))
    }

    fn pop_n(&mut self, n: usize) -> Result<Vec<Value>> {
        if self.frame_len() < n {
            return Err(self.malformed("stack underflow"));
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        match self.marks.pop() {
            Some(base) if base <= self.stack.len() => Ok(self.stack.split_off(base)),
            _ => Err(self.malformed("no MARK to pop to")),
        }
    }

    fn memo_get(&mut self, index: u64) -> Result<()> {
        let value = self.memo.get(&index).copied();
        let value = value.ok_or_else(|| self.malformed(format!("memo {index} was never set")))?;
        self.push(value)
    }

    fn memo_put(&mut self, index: u64) -> Result<()> {
        let value = self.peek()?;
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&index) {
            return Err(PickleError::Limit { what: "memo entries", limit: MAX_MEMO as u64 });
        }
        self.memo.insert(index, value);
        Ok(())
    }

    fn obj(&self, value: Value) -> Option<&Obj> {
        match value {
            Value::Obj(i) => self.objs.get(i),
            _ => None,
        }
    }

    fn kind(&self, value: Value) -> &'static str {
        match value {
            Value::None => "None",
            Value::Bool => "bool",
            Value::Int(_) => "int",
            Value::Float => "float",
            Value::Global(_) => "global",
            Value::Obj(_) => match self.obj(value) {
                Some(Obj::Str(_)) => "str",
                Some(Obj::Bytes(_)) => "bytes",
                Some(Obj::Tuple(_)) => "tuple",
                Some(Obj::List(_)) => "list",
                Some(Obj::Dict(_)) => "dict",
                Some(Obj::Storage(_)) => "storage",
                Some(Obj::Tensor(_)) => "tensor",
                None => "dangling reference",
            },
        }
    }

    fn tuple(&self, value: Value) -> Option<&[Value]> {
        match self.obj(value) {
            Some(Obj::Tuple(items)) => Some(items),
            _ => None,
        }
    }

    /// A str, or ASCII bytes as protocol-2 pickles from Python 2 hold them.
    fn text(&self, value: Value) -> Option<&str> {
        match self.obj(value) {
            Some(Obj::Str(text)) => Some(text),
            Some(Obj::Bytes(bytes)) => std::str::from_utf8(bytes).ok(),
            _ => None,
        }
    }

    fn index(&self, value: Value, what: &str) -> Result<usize> {
        match value {
            Value::Int(i) => usize::try_from(i).map_err(|_| self.malformed(format!("{what} {i}"))),
            other => Err(self.malformed(format!("{what} is a {}, not an int", self.kind(other)))),
        }
    }

    // Containers.

    fn extend_list(&mut self, items: Vec<Value>) -> Result<()> {
        let target = self.peek()?;
        let kind = self.kind(target);
        self.charge(items.len())?;
        if let Value::Obj(i) = target
            && let Some(Obj::List(list)) = self.objs.get_mut(i)
        {
            list.extend(items);
            return Ok(());
        }
        Err(self.malformed(format!("APPEND to a {kind}, not a list")))
    }

    fn extend_dict(&mut self, items: Vec<Value>) -> Result<()> {
        let target = self.peek()?;
        let kind = self.kind(target);
        if !items.len().is_multiple_of(2) {
            return Err(self.malformed("SETITEMS with an odd number of values"));
        }
        self.charge(items.len())?;
        let pairs = items.chunks_exact(2).filter_map(|pair| match pair {
            [key, value] => Some((*key, *value)),
            _ => None,
        });
        if let Value::Obj(i) = target
            && let Some(Obj::Dict(dict)) = self.objs.get_mut(i)
        {
            dict.extend(pairs);
            return Ok(());
        }
        Err(self.malformed(format!("SETITEM on a {kind}, not a dict")))
    }

    // The opcodes that build objects.

    fn stack_global(&mut self) -> Result<()> {
        let name = self.pop()?;
        let module = self.pop()?;
        let global = match (self.obj(module), self.obj(name)) {
            (Some(Obj::Str(module)), Some(Obj::Str(name))) => {
                resolve_global(module.as_bytes(), name.as_bytes())?
            }
            _ => return Err(self.malformed("STACK_GLOBAL needs a module and a name")),
        };
        self.push(Value::Global(global))
    }

    fn reduce(&mut self) -> Result<()> {
        let args = self.pop()?;
        let func = self.pop()?;
        let Value::Global(global) = func else {
            return Err(self.malformed(format!("REDUCE calls a {}", self.kind(func))));
        };
        let args = self.tuple(args).map(<[Value]>::to_vec);
        let args = args.ok_or_else(|| self.malformed("REDUCE arguments are not a tuple"))?;
        let result = match (global, args.as_slice()) {
            (Global::OrderedDict, []) => self.alloc(Obj::Dict(Vec::new()))?,
            (Global::RebuildTensor, args) => self.rebuild_tensor(args)?,
            (Global::RebuildParameter, [data, _, _])
            | (Global::RebuildParameterWithState, [data, _, _, _])
                if matches!(self.obj(*data), Some(Obj::Tensor(_))) =>
            {
                *data
            }
            (global, args) => {
                let n = args.len();
                return Err(
                    self.malformed(format!("{global:?} called with {n} unusable arguments"))
                );
            }
        };
        self.push(result)
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
    /// backward_hooks[, metadata])`; `requires_grad` and the hooks are dropped.
    fn rebuild_tensor(&mut self, args: &[Value]) -> Result<Value> {
        let (storage, offset, size, stride, metadata) = match *args {
            [storage, offset, size, stride, _, _] => (storage, offset, size, stride, None),
            [storage, offset, size, stride, _, _, meta] => {
                (storage, offset, size, stride, Some(meta))
            }
            _ => {
                let n = args.len();
                return Err(self.malformed(format!("_rebuild_tensor_v2 with {n} arguments")));
            }
        };
        let no_metadata = match metadata.map(|m| (m, self.obj(m))) {
            None | Some((Value::None, _)) => true,
            Some((_, Some(Obj::Dict(items)))) => items.is_empty(),
            Some(_) => false,
        };
        if !no_metadata {
            return Err(self.malformed("tensor metadata (conj or neg bits) is not supported"));
        }
        let Some(Obj::Storage(key)) = self.obj(storage) else {
            let kind = self.kind(storage);
            return Err(self.malformed(format!("_rebuild_tensor_v2 on a {kind}, not a storage")));
        };
        let meta = TensorMeta {
            storage: key.clone(),
            storage_offset: self.index(offset, "storage offset")?,
            shape: self.dims(size, "size")?,
            strides: self.dims(stride, "stride")?,
        };
        if meta.shape.len() != meta.strides.len() {
            return Err(self.malformed("tensor size and stride differ in length"));
        }
        self.tensors += 1;
        if self.tensors > MAX_TENSORS {
            return Err(PickleError::Limit { what: "tensors", limit: MAX_TENSORS as u64 });
        }
        self.alloc(Obj::Tensor(Box::new(meta)))
    }

    fn dims(&self, value: Value, what: &str) -> Result<Vec<usize>> {
        let items = self.tuple(value);
        let items = items.ok_or_else(|| self.malformed(format!("tensor {what} is not a tuple")))?;
        if items.len() > MAX_DIMS {
            let n = items.len();
            return Err(self.malformed(format!("tensor with {n} dims; lote reads at most 16")));
        }
        items.iter().map(|&d| self.index(d, what)).collect()
    }

    fn new_obj(&mut self) -> Result<()> {
        let args = self.pop()?;
        let class = self.pop()?;
        match (class, self.tuple(args)) {
            (Value::Global(Global::OrderedDict), Some([])) => self.push_obj(Obj::Dict(Vec::new())),
            _ => Err(self.malformed(format!("NEWOBJ of a {}", self.kind(class)))),
        }
    }

    /// BUILD sets an object's state; only an OrderedDict's (its `_metadata`) is accepted,
    /// and ignored.
    fn build(&mut self) -> Result<()> {
        let _state = self.pop()?;
        let target = self.peek()?;
        match self.obj(target) {
            Some(Obj::Dict(_)) => Ok(()),
            _ => Err(self.malformed(format!("BUILD on a {}", self.kind(target)))),
        }
    }

    /// BINPERSID on `('storage', torch.<Type>Storage, key, location, numel)`; the location
    /// (`cpu`, `cuda:0`) is ignored.
    fn persistent_id(&mut self) -> Result<()> {
        let id = self.pop()?;
        let id = self.tuple(id).map(<[Value]>::to_vec).unwrap_or_default();
        let [kind, Value::Global(Global::Storage(dtype)), key, _, numel] = *id.as_slice() else {
            return Err(self.malformed("persistent id is not a storage"));
        };
        let key = match (self.text(kind), self.text(key)) {
            (Some("storage"), Some(key)) => key.to_owned(),
            _ => return Err(self.malformed("persistent id is not a storage")),
        };
        let numel = self.index(numel, "storage size")? as u64;
        if numel.checked_mul(dtype.elem_size() as u64).is_none_or(|n| n > i64::MAX as u64) {
            return Err(self.malformed(format!("storage `{key}` of {numel} elements")));
        }
        match self.storages.entry(key.clone()) {
            Slot::Occupied(slot) if *slot.get() != (dtype, numel) => {
                let (d, n) = *slot.get();
                let msg = format!("storage `{key}` is {n} × {d:?} and {numel} × {dtype:?}");
                return Err(self.malformed(msg));
            }
            Slot::Occupied(_) => {}
            Slot::Vacant(slot) => {
                slot.insert((dtype, numel));
            }
        }
        self.push_obj(Obj::Storage(key))
    }

    // The state dict.

    /// The string-keyed tensors of a dict, or of the one dict inside it that has any.
    fn collect(&self, top: Value) -> Result<Checkpoint> {
        let Some(Obj::Dict(entries)) = self.obj(top) else {
            let kind = self.kind(top);
            return Err(PickleError::NoTensors(format!("the pickle holds a {kind}, not a dict")));
        };
        let mut found = self.tensor_entries(entries);
        if found.is_empty() {
            found = self.nested_tensors(entries)?;
        }
        if found.is_empty() {
            return Err(PickleError::NoTensors("the pickle's dict holds none".into()));
        }
        if found.len() > MAX_TENSORS {
            return Err(PickleError::Limit { what: "tensors", limit: MAX_TENSORS as u64 });
        }
        let mut checkpoint = Checkpoint::default();
        let mut positions = HashMap::new();
        for (name, meta) in found {
            let tensor = self.check_tensor(name, meta)?;
            let (dtype, numel) =
                self.storages.get(&tensor.storage).copied().unwrap_or((tensor.dtype, 0));
            let len = numel.saturating_mul(dtype.elem_size() as u64);
            let range = StorageRange { offset: 0, len, dtype };
            checkpoint.storages.entry(tensor.storage.clone()).or_insert(range);
            match positions.entry(name) {
                Slot::Occupied(slot) => {
                    if let Some(old) = checkpoint.tensors.get_mut(*slot.get()) {
                        *old = tensor;
                    }
                }
                Slot::Vacant(slot) => {
                    slot.insert(checkpoint.tensors.len());
                    checkpoint.tensors.push(tensor);
                }
            }
        }
        Ok(checkpoint)
    }

    fn tensor_entries<'s>(
        &'s self,
        entries: &'s [(Value, Value)],
    ) -> Vec<(&'s str, &'s TensorMeta)> {
        let tensor = |value| match self.obj(value) {
            Some(Obj::Tensor(meta)) => Some(&**meta),
            _ => None,
        };
        entries.iter().filter_map(|&(k, v)| Some((self.text(k)?, tensor(v)?))).collect()
    }

    fn nested_tensors<'s>(
        &'s self,
        entries: &'s [(Value, Value)],
    ) -> Result<Vec<(&'s str, &'s TensorMeta)>> {
        let mut seen = HashSet::new();
        let mut holders = Vec::new();
        for &(key, value) in entries {
            let Value::Obj(i) = value else { continue };
            if !seen.insert(i) {
                continue;
            }
            if let Some(Obj::Dict(inner)) = self.obj(value) {
                let tensors = self.tensor_entries(inner);
                if !tensors.is_empty() {
                    holders.push((self.text(key).unwrap_or("?"), tensors));
                }
            }
        }
        match holders.as_slice() {
            [] | [_] => Ok(holders.pop().map(|(_, tensors)| tensors).unwrap_or_default()),
            [(a, _), (b, _), ..] => Err(PickleError::NoTensors(format!(
                "tensors sit in several nested dicts (`{}`, `{}`, ...); lote reads one state dict",
                printable(a.as_bytes()),
                printable(b.as_bytes())
            ))),
        }
    }

    fn check_tensor(&self, name: &str, meta: &TensorMeta) -> Result<PickledTensor> {
        let err = |msg: String| PickleError::Tensor { name: printable(name.as_bytes()), msg };
        let (dtype, numel) = self.storages.get(&meta.storage).copied().ok_or_else(|| {
            err(format!("views storage `{}`, which is never declared", meta.storage))
        })?;
        let tensor = PickledTensor {
            name: name.to_owned(),
            dtype,
            shape: meta.shape.clone(),
            strides: meta.strides.clone(),
            storage_offset: meta.storage_offset,
            storage: meta.storage.clone(),
        };
        let dense =
            tensor.shape.iter().try_fold(dtype.elem_size() as u64, |n, &d| n.checked_mul(d as u64));
        if dense.is_none_or(|n| n > i64::MAX as u64) {
            return Err(err(format!(
                "has shape {:?}: more bytes than fit in 63 bits",
                tensor.shape
            )));
        }
        let Some(span) = tensor.storage_bytes() else {
            let (shape, strides) = (&tensor.shape, &tensor.strides);
            return Err(err(format!("with shape {shape:?} and strides {strides:?} overflows")));
        };
        let len = numel.saturating_mul(dtype.elem_size() as u64);
        if span.end > len {
            let (a, b, key) = (span.start, span.end, &tensor.storage);
            return Err(err(format!("reads bytes {a}..{b} of storage `{key}`, which has {len}")));
        }
        Ok(tensor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    use safetensors::{Dtype, SafeTensors};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/models/pickle");

    fn fixture(name: &str) -> PathBuf {
        Path::new(FIXTURES).join(name)
    }

    fn safetensors_dtype(dtype: StorageDtype) -> Dtype {
        match dtype {
            StorageDtype::F32 => Dtype::F32,
            StorageDtype::F16 => Dtype::F16,
            StorageDtype::BF16 => Dtype::BF16,
            StorageDtype::F64 => Dtype::F64,
            StorageDtype::I64 => Dtype::I64,
            StorageDtype::I32 => Dtype::I32,
            StorageDtype::I16 => Dtype::I16,
            StorageDtype::I8 => Dtype::I8,
            StorageDtype::U8 => Dtype::U8,
            StorageDtype::Bool => Dtype::BOOL,
        }
    }

    /// The tensor's elements in row-major order, gathered from the file through its strides.
    fn gather(file: &[u8], checkpoint: &Checkpoint, t: &PickledTensor) -> Vec<u8> {
        let base = checkpoint.storages[&t.storage].offset as usize;
        let elem = t.dtype.elem_size();
        let mut out = Vec::new();
        let mut index = vec![0; t.shape.len()];
        for _ in 0..t.numel() {
            let strided: usize = index.iter().zip(&t.strides).map(|(i, s)| i * s).sum();
            let at = base + (t.storage_offset + strided) * elem;
            out.extend_from_slice(&file[at..at + elem]);
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < t.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        out
    }

    /// Reads `bin`, compares each tensor that `twin` has byte for byte, and returns the
    /// checkpoint with the names `twin` lacks.
    fn compare(bin: &Path, twin: &str) -> (Checkpoint, Vec<String>) {
        let checkpoint = read_checkpoint(bin).unwrap();
        let file = std::fs::read(bin).unwrap();
        let twin_bytes = std::fs::read(fixture(twin)).unwrap();
        let twin = SafeTensors::deserialize(&twin_bytes).unwrap();
        let mut missing = Vec::new();
        for t in &checkpoint.tensors {
            let Ok(view) = twin.tensor(&t.name) else {
                missing.push(t.name.clone());
                continue;
            };
            assert_eq!(view.shape(), t.shape, "{}", t.name);
            assert_eq!(view.dtype(), safetensors_dtype(t.dtype), "{}", t.name);
            assert_eq!(gather(&file, &checkpoint, t), view.data(), "{}", t.name);
            let range = checkpoint.file_range(t).unwrap();
            assert!(range.end <= file.len() as u64);
            if t.is_contiguous() {
                assert_eq!(&file[range.start as usize..range.end as usize], view.data());
            }
        }
        (checkpoint, missing)
    }

    fn names(checkpoint: &Checkpoint) -> Vec<&str> {
        checkpoint.tensors.iter().map(|t| t.name.as_str()).collect()
    }

    fn tensor<'c>(checkpoint: &'c Checkpoint, name: &str) -> &'c PickledTensor {
        checkpoint.tensors.iter().find(|t| t.name == name).unwrap()
    }

    #[test]
    fn bert_matches_its_safetensors_twin() {
        let (checkpoint, missing) =
            compare(&fixture("bert/pytorch_model.bin"), "bert_safetensors/model.safetensors");
        assert!(missing.is_empty(), "{missing:?}");
        assert_eq!(checkpoint.tensors.len(), 23);
        assert!(checkpoint.storages.values().all(|s| s.offset % 64 == 0));
    }

    #[test]
    fn ordered_dict_with_metadata_matches() {
        let (checkpoint, missing) =
            compare(&fixture("bert_state_dict.bin"), "bert_safetensors/model.safetensors");
        assert!(missing.is_empty(), "{missing:?}");
        assert_eq!(checkpoint.tensors.len(), 23);
        assert_eq!(checkpoint.tensors[0].name, "embeddings.word_embeddings.weight");
    }

    #[test]
    fn gpt2_tied_embeddings_share_one_storage() {
        let bin = fixture("gpt2/pytorch_model.bin");
        let (checkpoint, missing) = compare(&bin, "gpt2_safetensors/model.safetensors");
        assert_eq!(missing, ["lm_head.weight"]);
        let (wte, head) =
            (tensor(&checkpoint, "transformer.wte.weight"), tensor(&checkpoint, "lm_head.weight"));
        assert_eq!(wte.storage, head.storage);
        assert_eq!(checkpoint.file_range(wte), checkpoint.file_range(head));
        assert_eq!((wte.shape.as_slice(), wte.strides.as_slice()), (&[64, 16][..], &[16, 1][..]));
    }

    #[test]
    fn sharded_gpt2_matches() {
        let dir = fixture("gpt2_sharded");
        let mut shards: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "bin"))
            .collect();
        shards.sort();
        assert_eq!(shards.len(), 4);
        let mut all = Vec::new();
        for shard in &shards {
            let (checkpoint, missing) = compare(shard, "gpt2_safetensors/model.safetensors");
            all.extend(checkpoint.tensors.into_iter().map(|t| t.name));
            assert!(missing.iter().all(|m| m == "lm_head.weight"), "{missing:?}");
        }
        let (whole, _) =
            compare(&fixture("gpt2/pytorch_model.bin"), "gpt2_safetensors/model.safetensors");
        all.sort();
        let mut expected: Vec<_> = whole.tensors.into_iter().map(|t| t.name).collect();
        expected.sort();
        assert_eq!(all, expected);
    }

    #[test]
    fn every_dtype_and_strided_views() {
        for file in ["tensors.pt", "tensors_proto4.pt", "tensors_proto5.pt"] {
            let (checkpoint, missing) = compare(&fixture(file), "tensors.safetensors");
            assert!(missing.is_empty(), "{file}: {missing:?}");
            assert_eq!(checkpoint.tensors.len(), 18, "{file}");
            let view = |name| {
                let t = tensor(&checkpoint, name);
                (t.shape.clone(), t.strides.clone(), t.storage_offset, t.storage.clone())
            };
            let base = tensor(&checkpoint, "base").storage.clone();
            assert_eq!(view("transposed"), (vec![6, 4], vec![1, 6], 0, base.clone()));
            assert_eq!(view("column"), (vec![4], vec![6], 2, base.clone()));
            assert_eq!(view("strided_rows"), (vec![2, 4], vec![12, 1], 1, base));
            assert_eq!(view("scalar").0, Vec::<usize>::new());
            assert_eq!(view("empty").0, vec![0, 4]);
            assert_eq!(view("expanded").1, vec![1, 0]);
            let dtypes: HashSet<_> = checkpoint.tensors.iter().map(|t| t.dtype).collect();
            assert_eq!(dtypes.len(), StorageDtype::ALL.len());
        }
    }

    #[test]
    fn archive_prefix_nested_dict_and_parameters() {
        let (checkpoint, missing) = compare(&fixture("archive_prefix.pt"), "tensors.safetensors");
        assert!(missing.is_empty());
        assert_eq!(names(&checkpoint), ["f32", "column"]);
        let (checkpoint, missing) = compare(&fixture("nested.pt"), "tensors.safetensors");
        assert!(missing.is_empty());
        assert_eq!(names(&checkpoint), ["f32", "column"]);
        let checkpoint = read_checkpoint(&fixture("parameter.pt")).unwrap();
        assert_eq!(names(&checkpoint), ["p"]);
        assert_eq!(checkpoint.tensors[0].shape, [3, 5]);
    }

    // Hostile and broken input.

    const PWNED: &str = "/tmp/lote-pickle-fixture-pwned";

    #[test]
    fn python_reduce_to_os_system_is_refused() {
        let path = fixture("evil.bin");
        let err = read_checkpoint(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: refused pickle global posix.system", path.display())
        );
        assert!(matches!(err.cause(), PickleError::Global(_)));
        assert!(!Path::new(PWNED).exists());
    }

    /// Builds pickles opcode by opcode.
    #[derive(Default)]
    struct P(Vec<u8>);

    impl P {
        fn new() -> Self {
            P(vec![0x80, 2])
        }
        fn op(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }
        fn str(self, s: &str) -> Self {
            self.op(b"X").op(&(s.len() as u32).to_le_bytes()).op(s.as_bytes())
        }
        fn int(self, i: i64) -> Self {
            self.op(&[0x8a, 8]).op(&i.to_le_bytes())
        }
        fn global(self, module: &str, name: &str) -> Self {
            self.op(format!("c{module}\n{name}\n").as_bytes())
        }
        fn ints(self, values: &[i64]) -> Self {
            values.iter().fold(self.op(b"("), |p, &v| p.int(v)).op(b"t")
        }
        /// `_rebuild_tensor_v2` on f32 storage `key` of `numel` elements, with `hooks` (an
        /// object built by the closure) as the backward hooks.
        fn tensor_with(
            self,
            key: &str,
            numel: i64,
            view: (i64, &[i64], &[i64]),
            hooks: impl FnOnce(P) -> P,
        ) -> Self {
            let p = self.global("torch._utils", "_rebuild_tensor_v2").op(b"((").str("storage");
            let p = p.global("torch", "FloatStorage").str(key).str("cpu").int(numel).op(b"tQ");
            let p = p.int(view.0).ints(view.1).ints(view.2).op(&[0x89]);
            hooks(p).op(b"tR")
        }
        fn tensor(self, key: &str, numel: i64, view: (i64, &[i64], &[i64])) -> Self {
            self.tensor_with(key, numel, view, |p| p.global("collections", "OrderedDict").op(b")R"))
        }
        fn done(self) -> Vec<u8> {
            self.op(b".").0
        }
    }

    /// `{name: tensor}`, one f32 tensor.
    fn one_tensor(name: &str, key: &str, numel: i64, view: (i64, &[i64], &[i64])) -> Vec<u8> {
        P::new().op(b"}(").str(name).tensor(key, numel, view).op(b"u").done()
    }

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::FileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .unix_permissions(0o644);
        for (name, bytes) in entries {
            zip.start_file(*name, options).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    fn archive_with(pickle: &[u8], entries: &[(&str, &[u8])]) -> Vec<u8> {
        zip_of(&[&[("archive/data.pkl", pickle)], entries].concat())
    }

    fn archive(pickle: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
        let names: Vec<_> = storages.iter().map(|(k, _)| format!("archive/data/{k}")).collect();
        let entries: Vec<_> =
            names.iter().zip(storages).map(|(n, (_, bytes))| (n.as_str(), *bytes)).collect();
        archive_with(pickle, &entries)
    }

    fn error(bytes: Vec<u8>) -> String {
        read_checkpoint_from(Cursor::new(bytes)).unwrap_err().to_string()
    }

    fn parse_error(pickle: &[u8]) -> String {
        parse_pickle(pickle).unwrap_err().to_string()
    }

    #[test]
    fn hand_built_archive_reads() {
        let pickle = P::new()
            .op(b"}(")
            .str("a")
            .tensor("0", 8, (0, &[2, 2], &[2, 1]))
            .str("b")
            .tensor("0", 8, (4, &[4], &[1]))
            .str("skip")
            .int(7)
            .op(b"u")
            .done();
        let data: Vec<u8> = (0..32).collect();
        let bytes = archive(&pickle, &[("0", &data)]);
        let checkpoint = read_checkpoint_from(Cursor::new(bytes.clone())).unwrap();
        assert_eq!(names(&checkpoint), ["a", "b"]);
        let range = checkpoint.file_range(&checkpoint.tensors[1]).unwrap();
        assert_eq!(&bytes[range.start as usize..range.end as usize], &data[16..32]);
        let storage = &checkpoint.storages["0"];
        assert_eq!((storage.len, storage.dtype), (32, StorageDtype::F32));
    }

    #[test]
    fn os_system_is_refused_and_nothing_runs() {
        let dir = std::env::temp_dir().join(format!("lote-pickle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pwned = dir.join("pwned");
        let command = format!("touch {}", pwned.display());
        // What pickle.dumps writes for `__reduce__` returning (os.system, (command,)).
        let by_global = P::new().op(b"}(").str("x").global("posix", "system");
        let by_global = by_global.str(&command).op(&[0x85]).op(b"Ru").done();
        let by_stack = P(vec![0x80, 4]).op(b"}(").str("x").str("posix").str("system").op(&[0x93]);
        let by_stack = by_stack.str(&command).op(&[0x85]).op(b"Ru").done();
        for pickle in [&by_global, &by_stack] {
            assert_eq!(parse_error(pickle), "refused pickle global posix.system");
            assert_eq!(error(archive(pickle, &[])), "refused pickle global posix.system");
        }
        assert!(!pwned.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn forbidden_globals_are_refused_even_where_never_called() {
        let eval_hooks = P::new().op(b"}(").str("w").tensor_with("0", 4, (0, &[4], &[1]), |p| {
            p.global("builtins", "eval").str("1").op(&[0x85])
        });
        assert_eq!(parse_error(&eval_hooks.op(b"u").done()), "refused pickle global builtins.eval");
        let metadata_state = P::new().global("collections", "OrderedDict").op(b")R}(").str("x");
        let metadata_state = metadata_state.global("nt", "system").op(b"ub").done();
        assert_eq!(parse_error(&metadata_state), "refused pickle global nt.system");
        let not_allowed = P::new().global("torch", "load").done();
        assert_eq!(parse_error(&not_allowed), "refused pickle global torch.load");
        let hostile_name = P::new().op(b"cos\x1b[31m\nsystem\n").done();
        assert_eq!(parse_error(&hostile_name), "refused pickle global os\\u{1b}[31m.system");
    }

    #[test]
    fn truncated_archives_and_pickles() {
        let whole = std::fs::read(fixture("tensors.pt")).unwrap();
        let half = whole[..whole.len() / 2].to_vec();
        assert_eq!(
            error(half),
            "truncated archive: no zip central directory at the end of the file"
        );
        let path = std::env::temp_dir().join(format!("lote-pickle-cut-{}.bin", std::process::id()));
        std::fs::write(&path, &whole[..whole.len() - 30]).unwrap();
        let err = read_checkpoint(&path).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            err,
            format!(
                "{}: truncated archive: no zip central directory at the end of the file",
                path.display()
            )
        );
        let pickle = one_tensor("x", "0", 4, (0, &[4], &[1]));
        let cut = &pickle[..pickle.len() - 1];
        assert_eq!(
            parse_error(cut),
            format!("truncated pickle: the opcode at byte {} runs past the end", cut.len())
        );
        assert_eq!(
            parse_error(&pickle[..7]),
            "truncated pickle: the opcode at byte 4 runs past the end"
        );
    }

    #[test]
    fn tensors_past_their_storage_are_refused() {
        let storage = vec![0u8; 1024];
        let pickle = one_tensor("x", "3", 256, (0, &[1024], &[1]));
        assert_eq!(
            parse_error(&pickle),
            "tensor `x` reads bytes 0..4096 of storage `3`, which has 1024"
        );
        let pickle = one_tensor("x", "3", 256, (300, &[1], &[1]));
        let msg = "tensor `x` reads bytes 1200..1204 of storage `3`, which has 1024";
        assert_eq!(error(archive(&pickle, &[("3", &storage)])), msg);
        let pickle = one_tensor("x", "3", 256, (0, &[16, 16], &[17, 1]));
        let msg = "tensor `x` reads bytes 0..1084 of storage `3`, which has 1024";
        assert_eq!(parse_error(&pickle), msg);
        // An empty tensor reads nothing, but its offset still lies inside the storage.
        let empty = one_tensor("x", "3", 256, (256, &[0, 4], &[4, 1]));
        assert!(parse_pickle(&empty).is_ok());
        let past = one_tensor("x", "3", 256, (257, &[0, 4], &[4, 1]));
        let msg = "tensor `x` reads bytes 1028..1028 of storage `3`, which has 1024";
        assert_eq!(parse_error(&past), msg);
    }

    #[test]
    fn huge_declared_sizes_are_refused_before_allocating() {
        let string = P::new().op(b"X").op(&u32::MAX.to_le_bytes()).op(b"abc").done();
        let msg =
            "declared size 4294967295 of the string at byte 2 exceeds the input (4 bytes left)";
        assert_eq!(parse_error(&string), msg);
        let string8 = P(vec![0x80, 4]).op(&[0x8d]).op(&(1u64 << 40).to_le_bytes()).done();
        let msg =
            "declared size 1099511627776 of the string at byte 2 exceeds the input (1 bytes left)";
        assert_eq!(parse_error(&string8), msg);
        let bytes8 = P(vec![0x80, 4]).op(&[0x8e]).op(&u64::MAX.to_le_bytes()).done();
        assert!(
            parse_error(&bytes8).starts_with("declared size 18446744073709551615 of the bytes")
        );
        let frame = P(vec![0x80, 4]).op(&[0x95]).op(&(1u64 << 50).to_le_bytes()).done();
        assert!(parse_error(&frame).starts_with("declared size 1125899906842624 of the frame"));
        let t = 1i64 << 40;
        let shape = one_tensor("x", "0", 4, (0, &[t, t], &[t, 1]));
        let msg =
            "tensor `x` has shape [1099511627776, 1099511627776]: more bytes than fit in 63 bits";
        assert_eq!(parse_error(&shape), msg);
        let stride = one_tensor("x", "0", 4, (0, &[4, 4], &[1 << 62, 1]));
        let msg = "tensor `x` with shape [4, 4] and strides [4611686018427387904, 1] overflows";
        assert_eq!(parse_error(&stride), msg);
        let storage = one_tensor("x", "0", 1 << 62, (0, &[4], &[1]));
        let msg = "malformed pickle at byte 102: storage `0` of 4611686018427387904 elements";
        assert_eq!(parse_error(&storage), msg);
        let negative = one_tensor("x", "0", 4, (0, &[-1], &[1]));
        assert!(parse_error(&negative).ends_with("size -1"), "{}", parse_error(&negative));
    }

    #[test]
    fn unknown_and_unneeded_opcodes_are_refused() {
        assert_eq!(
            parse_error(&P::new().op(&[0xff]).done()),
            "unknown pickle opcode 0xff at byte 2"
        );
        let inst = P::new().op(b"(ios\nsystem\n").done();
        assert_eq!(parse_error(&inst), "refused pickle opcode INST at byte 3");
        let ext = P::new().op(&[0x82, 1]).done();
        assert_eq!(parse_error(&ext), "refused pickle opcode EXT1 at byte 2");
        assert_eq!(parse_error(&P::new().op(b"N0").done()), "refused pickle opcode POP at byte 3");
        assert_eq!(parse_error(b"\x80\x06}."), "malformed pickle at byte 0: pickle protocol 6");
        assert_eq!(
            parse_error(b"\x80\x02}"),
            "truncated pickle: the opcode at byte 3 runs past the end"
        );
    }

    /// Where entry `name`'s local and central headers start.
    fn headers(bytes: &[u8], name: &str) -> (usize, usize) {
        let mut zip = ZipArchive::new(Cursor::new(bytes)).unwrap();
        let index = (0..zip.len()).find(|&i| zip.by_index_raw(i).unwrap().name() == name).unwrap();
        let file = zip.by_index_raw(index).unwrap();
        (file.header_start() as usize, file.central_header_start() as usize)
    }

    /// Marks entry `name` as deflated in its local and central headers.
    fn mark_deflated(mut bytes: Vec<u8>, name: &str) -> Vec<u8> {
        let (local, central) = headers(&bytes, name);
        bytes[local + 8..local + 10].copy_from_slice(&8u16.to_le_bytes());
        bytes[central + 10..central + 12].copy_from_slice(&8u16.to_le_bytes());
        bytes
    }

    #[test]
    fn compressed_entries_are_refused() {
        let pickle = one_tensor("x", "0", 4, (0, &[4], &[1]));
        let bytes = archive(&pickle, &[("0", &[0; 16])]);
        assert!(read_checkpoint_from(Cursor::new(bytes.clone())).is_ok());
        let msg = "archive entry `archive/data/0` is compressed (deflate); torch.save stores \
                   entries uncompressed and lote reads them in place";
        assert_eq!(error(mark_deflated(bytes.clone(), "archive/data/0")), msg);
        let msg = msg.replace("data/0", "data.pkl");
        assert_eq!(error(mark_deflated(bytes, "archive/data.pkl")), msg);
    }

    #[test]
    fn legacy_and_foreign_files_are_refused() {
        let path = fixture("legacy.bin");
        let msg = format!(
            "`{}` is a legacy (pre-zip) torch checkpoint; lote reads only the zip format \
             torch.save writes since 1.6: re-save it with a current torch or convert to safetensors",
            path.display()
        );
        assert_eq!(read_checkpoint(&path).unwrap_err().to_string(), msg);
        let msg = "not a torch checkpoint: it starts with neither a zip signature nor a pickle";
        assert_eq!(error(b"{\"not\": \"a checkpoint\"}".to_vec()), msg);
        assert_eq!(error(Vec::new()), msg);
        let missing = fixture("no-such-file.bin");
        assert!(read_checkpoint(&missing).unwrap_err().to_string().starts_with("cannot open "));
        let no_pickle =
            zip_of(&[("archive/version", b"3"), ("data.pkl", b""), ("a/b/data.pkl", b"")]);
        assert_eq!(error(no_pickle), "the archive holds no `<name>/data.pkl`");
        let two = archive_with(b"", &[("other/data.pkl", b"")]);
        assert_eq!(
            error(two),
            "the archive holds two pickles, `archive/data.pkl` and `other/data.pkl`"
        );
    }

    #[test]
    fn storage_entries_must_exist_with_the_declared_size() {
        let pickle = one_tensor("x", "0", 4, (0, &[4], &[1]));
        assert_eq!(
            error(archive(&pickle, &[])),
            "storage `0` has no archive entry `archive/data/0`"
        );
        let msg = "storage `0` declares 16 bytes but its archive entry holds 12";
        assert_eq!(error(archive(&pickle, &[("0", &[0; 12])])), msg);
        let big_endian =
            archive_with(&pickle, &[("archive/byteorder", b"big"), ("archive/data/0", &[0; 16])]);
        let msg = "the checkpoint was saved big-endian; lote reads little-endian checkpoints only";
        assert_eq!(error(big_endian), msg);
        let little = archive_with(
            &pickle,
            &[("archive/byteorder", b"little"), ("archive/data/0", &[0; 16])],
        );
        assert!(read_checkpoint_from(Cursor::new(little)).is_ok());
        let long_order = archive_with(&pickle, &[("archive/byteorder", &[b'x'; 20])]);
        let msg = "corrupt archive: entry `archive/byteorder` holds 20 bytes, more than the 16 \
                   lote reads";
        assert_eq!(error(long_order), msg);
        // A central directory that promises more than the file holds.
        let mut past_end = archive(&pickle, &[("0", &[0; 16])]);
        let (_, central) = headers(&past_end, "archive/data/0");
        past_end[central + 20..central + 28].copy_from_slice(&[0xff, 0xff, 0, 0, 0xff, 0xff, 0, 0]);
        let msg = "truncated archive: entry `archive/data/0` runs past the end of the file";
        assert_eq!(error(past_end), msg);
    }

    #[test]
    fn structural_limits() {
        let deep = P::new().op(&[b'('; 300]).done();
        assert_eq!(parse_error(&deep), "pickle exceeds the limit of 256 nested MARKs");
        let dims = [1; 17];
        let many = one_tensor("x", "0", 4, (0, &dims, &dims));
        assert!(parse_error(&many).ends_with("tensor with 17 dims; lote reads at most 16"));
        let twice = P::new().op(b"}(").str("a").tensor("0", 4, (0, &[4], &[1])).str("b");
        let twice = twice.tensor("0", 8, (0, &[4], &[1])).op(b"u").done();
        assert!(parse_error(&twice).ends_with("storage `0` is 4 × F32 and 8 × F32"));
        let underflow = P::new().op(b"(t").op(&[0x86]).done();
        assert_eq!(parse_error(&underflow), "malformed pickle at byte 4: stack underflow");
        let below_mark = P::new().op(b"N(a").done();
        assert_eq!(parse_error(&below_mark), "malformed pickle at byte 4: stack underflow");
        let get = P::new().op(b"j\x05\0\0\0").done();
        assert_eq!(parse_error(&get), "malformed pickle at byte 2: memo 5 was never set");
    }

    #[test]
    fn many_references_hit_the_limits() {
        // One tensor under 2^18 + 1 keys, each entry four bytes of BINGETs.
        let p = P::new().op(b"}(").str("a").op(b"q\x01");
        let mut entries = p.tensor("0", 4, (0, &[4], &[1])).op(b"q\x02").0;
        for _ in 0..MAX_TENSORS {
            entries.extend_from_slice(b"h\x01h\x02");
        }
        let pickle = P(entries).op(b"u").done();
        assert_eq!(parse_error(&pickle), "pickle exceeds the limit of 262144 tensors");
        // Nine million Nones appended to one list, a million at a time.
        let mut list = P::new().op(b"]").0;
        for _ in 0..9 {
            list.push(b'(');
            list.extend(std::iter::repeat_n(b'N', (1 << 20) - 1));
            list.push(b'e');
        }
        assert_eq!(parse_error(&P(list).done()), "pickle exceeds the limit of 8388608 values");
    }

    #[test]
    fn what_is_not_a_state_dict() {
        assert_eq!(
            parse_error(&P::new().op(b"]").done()),
            "no tensors: the pickle holds a list, not a dict"
        );
        let numbers = P::new().op(b"}(").str("epoch").int(3).op(b"u").done();
        assert_eq!(parse_error(&numbers), "no tensors: the pickle's dict holds none");
        let inner = |p: P| p.op(b"}(").str("w").tensor("0", 4, (0, &[4], &[1])).op(b"u");
        let two = inner(inner(P::new().op(b"}(").str("model")).str("ema")).op(b"u").done();
        let msg = "no tensors: tensors sit in several nested dicts (`model`, `ema`, ...); lote reads one state dict";
        assert_eq!(parse_error(&two), msg);
        // The same dict under two keys is one state dict.
        let shared =
            inner(P::new().op(b"}(").str("model")).op(b"q\x07").str("ema").op(b"h\x07u").done();
        assert_eq!(names(&parse_pickle(&shared).unwrap()), ["w"]);
        let call_tensor =
            P::new().op(b"}(").str("w").tensor("0", 4, (0, &[4], &[1])).op(b")R").done();
        assert_eq!(
            parse_error(&call_tensor),
            "malformed pickle at byte 168: REDUCE calls a tensor"
        );
    }
}
