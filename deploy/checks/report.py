"""One line per check, and the count that decides the exit status.

Every check, in the real run and in the self-test, goes through Report.check, so a check that
crashes on a file shaped unlike what it expects is a FAIL with the reason, never a traceback that
hides the checks after it; only Unrunnable (a missing tool) stops the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .common import CheckError, Unrunnable


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, name: str, run: Callable[[], Any]) -> Any:
        """Runs one check and prints its line: `ok`, with the check's note when it returns a
        string, or `FAIL` with the details. Returns the check's result (True for None), or None
        when it failed."""
        started = time.monotonic()
        try:
            result = run()
        except CheckError as error:
            self._line("FAIL", name, started, error.details)
            return None
        except Unrunnable:
            raise
        except Exception as error:  # a file shaped unlike what the check expects
            self._line("FAIL", name, started, [f"checker error: {type(error).__name__}: {error}"])
            return None
        note = f" ({result})" if isinstance(result, str) and result else ""
        self._line("ok", name + note, started, [])
        return result if result is not None else True

    def _line(self, status: str, name: str, started: float, details: list[str]) -> None:
        elapsed = time.monotonic() - started
        print(f"{status:<4} {name} [{elapsed:.2f}s]", flush=True)
        for detail in details:
            print(f"       {detail}", flush=True)
        if status == "ok":
            self.passed += 1
        else:
            self.failed += 1
