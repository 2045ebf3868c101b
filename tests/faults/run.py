"""Run the fault suite in a subprocess, as `make test` does, and read its summary."""

import subprocess
import sys

from tests.conftest import REPO_ROOT


def run_suite(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess, list]:
    """`python -m tests.faults ARGS`: the finished process and its output lines.

    The last 20 lines are printed (pytest shows them with the failure or -s).
    """
    result = subprocess.run(
        [sys.executable, "-m", "tests.faults", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = result.stdout.splitlines()
    print("\n".join(lines[-20:]))
    return result, lines


def summary_line(lines: list[str]) -> str:
    """The suite's last `fault suite ...` line: PASSED or FAILED with its figures."""
    return next((line for line in reversed(lines) if "fault suite " in line), "")
