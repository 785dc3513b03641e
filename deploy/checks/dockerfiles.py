"""deploy/Dockerfile and deploy/Dockerfile.cuda, and the .dockerignore that feeds them.

hadolint catches the generic mistakes (untagged bases, apt-get without -y, ...) with the rules
deploy/.hadolint.yaml turns off; the rules here are ours, on the final stage that becomes the
image: built in another stage, a numeric non-root USER, a HEALTHCHECK running `lote health`, no
Python, the staged binary and libtorch, ENTRYPOINT lote. .dockerignore must keep the build context
free of target/, venvs, .git and the test models.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from .common import DEPLOY
from .tools import hadolint

DOCKERFILES = ["Dockerfile", "Dockerfile.cuda"]
DOCKERIGNORE_MUST = ["target", ".venv*", ".git", "tests/fixtures/models", "bench/results"]


def hadolint_errors(path: Path) -> list[str]:
    """hadolint's findings at any level, one line each."""
    run = subprocess.run(
        [str(hadolint()), "--no-color", "--config", str(DEPLOY / ".hadolint.yaml"), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    if run.returncode != 0 and not lines:
        lines = [f"hadolint exited {run.returncode}"]
    return lines


def dockerfile_errors(text: str, name: str) -> list[str]:
    """Invariants of the final stage hadolint does not know about."""
    logical = re.sub(r"\\\n", " ", text)
    lines = [
        line.strip()
        for line in logical.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    starts = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    if len(starts) < 2:
        return [f"{name}: not a multi-stage build (build stage, then a runtime stage)"]
    final = lines[starts[-1] :]
    errors = []
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    if not users or not re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]):
        errors.append(f"{name}: the final stage must end with a numeric non-root USER")
    if not any(re.search(r'^HEALTHCHECK\b.*\blote"?(?:,\s*"|\s+)health\b', line) for line in final):
        errors.append(f"{name}: no HEALTHCHECK running `lote health`")
    if any(
        re.search(r"\bpython3?\b|\bpip\b", line)
        for line in final
        if line.upper().startswith("RUN ")
    ):
        errors.append(f"{name}: the final stage installs or runs Python")
    if not any(line.startswith("COPY --from=build /stage/ /") for line in final):
        errors.append(f"{name}: the final stage does not copy the staged binary and libtorch")
    if not any(
        '"/usr/local/bin/lote"' in line for line in final if line.upper().startswith("ENTRYPOINT")
    ):
        errors.append(f"{name}: ENTRYPOINT is not /usr/local/bin/lote")
    return errors


def dockerignore_errors(text: str) -> list[str]:
    patterns = {
        line.strip().rstrip("/").lstrip("/")
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    }
    return [f".dockerignore does not exclude {p}" for p in DOCKERIGNORE_MUST if p not in patterns]
