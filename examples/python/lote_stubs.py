"""Python stubs for lote's gRPC API, generated from the repository's proto/ at run time.

Nothing generated is committed: the first import runs grpc_tools.protoc over proto/lote/v1/*.proto
into a cache folder named after a hash of the .proto files and the grpcio-tools and protobuf
versions, so an edited proto or another toolchain gets fresh stubs and an unchanged one costs
nothing. The proto folder is found from this file's own place (examples/python/ -> ../../proto),
not from the current directory; LOTE_PROTO_DIR overrides it for a copy of the examples kept
elsewhere, LOTE_STUBS_CACHE the cache folder.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import sys
import tempfile
from importlib import metadata, resources
from pathlib import Path
from types import SimpleNamespace

# The services in proto/lote/v1, by file name.
PROTOS = ("inference", "jobs", "models", "worker")


def proto_dir() -> Path:
    """The proto/ folder that holds lote/v1/*.proto."""
    override = os.environ.get("LOTE_PROTO_DIR")
    root = Path(override) if override else Path(__file__).resolve().parent.parent.parent / "proto"
    if not (root / "lote" / "v1" / "inference.proto").is_file():
        raise RuntimeError(
            f"no lote/v1/*.proto under {root}; set LOTE_PROTO_DIR to lote's proto/ folder"
        )
    return root


def _cache_root() -> Path:
    override = os.environ.get("LOTE_STUBS_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lote-examples" / "stubs"


def _key(root: Path, files: list[Path]) -> str:
    """A hash of everything the generated code depends on."""
    digest = hashlib.sha256()
    for name in ("grpcio-tools", "protobuf", "grpcio"):
        digest.update(f"{name}={metadata.version(name)}\n".encode())
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\n")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _generate(root: Path, files: list[Path], target: Path) -> None:
    """Runs protoc into a scratch folder beside `target`, then renames it into place, so a
    concurrent run never sees half-written stubs."""
    from grpc_tools import protoc  # imported here: only needed on a cache miss

    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
    try:
        well_known = resources.files("grpc_tools") / "_proto"
        args = [
            "grpc_tools.protoc",
            f"-I{root}",
            f"-I{well_known}",
            f"--python_out={scratch}",
            f"--grpc_python_out={scratch}",
            *(str(path.relative_to(root)) for path in files),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"grpc_tools.protoc failed on {root} (its errors are above)")
        try:
            scratch.rename(target)
        except OSError:
            if not target.is_dir():  # anything but "another process got there first"
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def load() -> SimpleNamespace:
    """Generates the stubs if needed and imports them.

    Returns a namespace with `inference_pb2`, `inference_pb2_grpc`, `jobs_pb2`, ... for each
    file of proto/lote/v1.
    """
    root = proto_dir()
    files = [root / "lote" / "v1" / f"{name}.proto" for name in PROTOS]
    target = _cache_root() / _key(root, files)
    if not (target / "lote" / "v1" / "worker_pb2_grpc.py").is_file():
        try:
            _generate(root, files, target)
        except OSError:
            # A read-only or missing home (a container): a per-user temporary folder instead.
            target = Path(tempfile.gettempdir()) / f"lote-examples-{os.getuid()}" / target.name
            if not (target / "lote" / "v1" / "worker_pb2_grpc.py").is_file():
                _generate(root, files, target)
    # The generated modules import each other as `lote.v1.X_pb2`: the cache folder goes first
    # on sys.path, and lote/ and lote/v1/ are namespace packages (no __init__.py).
    if str(target) not in sys.path:
        sys.path.insert(0, str(target))
    modules = {}
    for name in PROTOS:
        for suffix in ("_pb2", "_pb2_grpc"):
            modules[name + suffix] = importlib.import_module(f"lote.v1.{name}{suffix}")
    return SimpleNamespace(**modules)


if __name__ == "__main__":
    stubs = load()
    print(Path(stubs.inference_pb2.__file__).parent)
