"""What every check shares: where the files are, and the two ways a check stops.

A check reports a failure by raising CheckError: the report prints its details and goes on with
the next check. Unrunnable is different on purpose: the checker itself cannot work (a tool is
missing), so the run ends with exit status 2 instead of counting a pass or a failure it did not
earn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# deploy/checks/common.py -> the repository root, whatever the working directory.
ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMAS = DEPLOY / "schemas"


class CheckError(Exception):
    """A check failed; `details` says why, one line each."""

    def __init__(self, details: list[str] | str):
        self.details = [details] if isinstance(details, str) else list(details)
        super().__init__("; ".join(self.details))


class Unrunnable(Exception):
    """The checker itself cannot run (a tool missing): exit 2."""


def expect_none(errors: list[str]) -> None:
    """Turns a check's list of problems into a failure when there is one."""
    if errors:
        raise CheckError(errors)


def json_path(parts: Any) -> str:
    """A jsonschema error's path as `a.b.0.c`, the way the reports print it."""
    return ".".join(str(part) for part in parts) or "(top)"
