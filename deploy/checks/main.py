"""The list of checks deploy/check runs, in the order it prints them, and its command line.

This is the one place that says what a plain run covers: each overlay rendered, validated and
held to lote's invariants, then compose.yaml, the Dockerfiles and .dockerignore. The modules it
calls hold the rules; here they only get a name on the report.
"""

from __future__ import annotations

import argparse
import sys
import time

from .common import DEPLOY, ROOT, Unrunnable, expect_none
from .compose import compose_errors, load_compose
from .dockerfiles import DOCKERFILES, dockerfile_errors, dockerignore_errors, hadolint_errors
from .k8s_invariants import k8s_errors
from .k8s_schemas import K8S_VERSION, render_schema_errors
from .kubernetes import overlays, render
from .report import Report
from .self_test import self_test
from .tools import KUSTOMIZE_VERSION, kustomize


def check_all(report: Report) -> None:
    report.check(f"kustomize {KUSTOMIZE_VERSION} (sha256 verified)", lambda: kustomize()[1])
    for overlay in overlays():
        rel = overlay.relative_to(ROOT)
        docs = report.check(f"render {rel}", lambda overlay=overlay: render(overlay))
        if docs is None:
            continue

        def schemas(docs=docs) -> str:
            expect_none(render_schema_errors(docs))
            kinds = ", ".join(sorted({d["kind"] for d in docs}))
            return f"{len(docs)} objects: {kinds}; Kubernetes {K8S_VERSION} strict + KEDA CRDs"

        report.check(f"schemas {rel}", schemas)
        report.check(
            f"invariants {rel}",
            lambda docs=docs, flavour=overlay.name: expect_none(k8s_errors(docs, flavour)),
        )

    compose = DEPLOY / "compose.yaml"
    report.check(
        "compose deploy/compose.yaml (Compose Specification + invariants)",
        lambda: expect_none(compose_errors(load_compose(compose), DEPLOY)),
    )
    for name in DOCKERFILES:
        path = DEPLOY / name
        report.check(
            f"hadolint deploy/{name}", lambda path=path: expect_none(hadolint_errors(path))
        )
        report.check(
            f"final stage deploy/{name}",
            lambda path=path, name=name: expect_none(
                dockerfile_errors(path.read_text(), f"deploy/{name}")
            ),
        )
    report.check(
        ".dockerignore",
        lambda: expect_none(dockerignore_errors((ROOT / ".dockerignore").read_text())),
    )


def main(description: str) -> int:
    """deploy/check's command line; `description` is the first paragraph of its --help."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="check that broken copies of the files are rejected",
    )
    args = parser.parse_args()
    report = Report()
    started = time.monotonic()
    try:
        (self_test if args.self_test else check_all)(report)
    except Unrunnable as error:
        print(f"deploy/check: cannot run: {error}", file=sys.stderr)
        return 2
    mode = "self-test" if args.self_test else "checks"
    print(f"{mode} took {time.monotonic() - started:.1f}s")
    print(f"deploy/check: {report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0
