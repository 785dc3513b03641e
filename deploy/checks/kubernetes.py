"""Rendering deploy/k8s's overlays with the pinned kustomize, and finding objects in the output.

Every Kubernetes check works on what kustomize renders, never on the files themselves: patches,
name prefixes and generated objects are only right or wrong once applied, and that output is what
a cluster would receive.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import yaml

from .common import DEPLOY, ROOT, CheckError
from .tools import kustomize


def overlays() -> list[Path]:
    found = sorted(p.parent for p in (DEPLOY / "k8s" / "overlays").glob("*/kustomization.yaml"))
    if not found:
        raise CheckError("no overlay under deploy/k8s/overlays")
    return found


def render(overlay: Path) -> list[dict[str, Any]]:
    binary, _ = kustomize()
    run = subprocess.run(
        [str(binary), "build", str(overlay)], capture_output=True, text=True, timeout=120
    )
    if run.returncode != 0:
        raise CheckError(f"kustomize build {overlay.relative_to(ROOT)}: {run.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(run.stdout) if doc]


def name_of(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc.get("kind") == kind]


def named(docs: list[dict[str, Any]], kind: str, name: Any) -> list[dict[str, Any]]:
    """The objects of `kind` called `name` (at most one, in a valid render)."""
    return [doc for doc in of_kind(docs, kind) if doc["metadata"].get("name") == name]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a non-empty label selector selects an object with these labels."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def secret_value(docs: list[dict[str, Any]], name: str, key: str) -> str | None:
    """The value of key `key` of Secret `name` in the render, or None when it has none."""
    for secret in named(docs, "Secret", name):
        if key in (secret.get("stringData") or {}):
            return str(secret["stringData"][key])
        if key in (secret.get("data") or {}):
            return base64.b64decode(secret["data"][key]).decode(errors="replace")
    return None
