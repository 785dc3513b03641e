"""deploy/check --self-test: proof that the checks can fail.

A checker that passes everything looks exactly like one that works. So the self-test renders the
real overlays, loads the real compose.yaml and Dockerfiles, shows that they pass unbroken (or
every "rejected" below proves nothing), then feeds broken copies (breakages.py, plus a few
Dockerfile and .dockerignore edits) to the same functions the checks run, and fails when any copy
is let through. Each passing line shows the first error the broken copy got.
"""

from __future__ import annotations

import copy
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .breakages import COMPOSE_CASES, K8S_CASES, invariants, schemas
from .common import DEPLOY, ROOT, CheckError, expect_none
from .compose import compose_errors, load_compose
from .dockerfiles import dockerfile_errors, dockerignore_errors, hadolint_errors
from .kubernetes import overlays, render
from .report import Report


def self_test(report: Report) -> None:
    """Broken copies of the real files, each of which some check must reject."""
    rendered = {}
    for overlay in overlays():
        docs = report.check(f"render {overlay.relative_to(ROOT)}", lambda o=overlay: render(o))
        if docs is None:
            return
        rendered[overlay.name] = docs
    if not {"cpu", "gpu"} <= set(rendered):
        report.check(
            "self-test needs the cpu and gpu overlays", lambda: expect_none(["missing overlay"])
        )
        return
    compose = load_compose(DEPLOY / "compose.yaml")

    # The unbroken files must pass, or every "rejected" below proves nothing.
    for flavour, docs in rendered.items():
        report.check(
            f"baseline overlays/{flavour} passes",
            lambda d=docs, f=flavour: expect_none(schemas(d, f) + invariants(d, f)),
        )
    report.check(
        "baseline compose passes",
        lambda: expect_none(compose_errors(copy.deepcopy(compose), DEPLOY)),
    )

    def broken(flavour: str, breaks: Callable[[list[dict[str, Any]]], Any]) -> list[dict]:
        docs = copy.deepcopy(rendered[flavour])
        breaks(docs)
        return docs

    for name, flavour, breaks, check in K8S_CASES:
        report.check(
            f"rejects {name}",
            lambda f=flavour, b=breaks, c=check: _rejected(c(broken(f, b), f)),
        )

    def compose_case(edit: Callable[[dict[str, Any]], Any]) -> list[str]:
        doc = copy.deepcopy(compose)
        edit(doc)
        return compose_errors(doc, DEPLOY)

    for name, edit in COMPOSE_CASES:
        report.check(f"rejects {name}", lambda e=edit: _rejected(compose_case(e)))

    _dockerfile_cases(report)


def _dockerfile_cases(report: Report) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        bad = Path(scratch) / "Dockerfile"
        bad.write_text("FROM debian\nRUN apt-get update && apt-get install curl\n")
        report.check(
            "rejects a Dockerfile with an untagged base and apt-get without -y (hadolint)",
            lambda: _rejected(hadolint_errors(bad)),
        )
    text = (DEPLOY / "Dockerfile").read_text()
    report.check(
        "rejects a Dockerfile whose final stage runs as root",
        lambda: _rejected(dockerfile_errors(re.sub(r"(?m)^USER .*\n", "", text), "Dockerfile")),
    )
    report.check(
        "rejects a Dockerfile with Python in the final stage",
        lambda: _rejected(
            dockerfile_errors(
                text.replace(
                    "USER 10001:10001", "RUN apt-get install -y python3\nUSER 10001:10001"
                ),
                "Dockerfile",
            )
        ),
    )
    report.check(
        "rejects a .dockerignore that ships target/",
        lambda: _rejected(
            dockerignore_errors((ROOT / ".dockerignore").read_text().replace("target", "#target"))
        ),
    )


def _rejected(errors: list[str]) -> str:
    """The first error, shortened, as the passing line's note; a failure when there is none."""
    if not errors:
        raise CheckError("accepted: the checker let this broken copy through")
    return errors[0] if len(errors[0]) < 150 else errors[0][:147] + "..."
