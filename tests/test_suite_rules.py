"""Rules of the test suite itself: `-m "not db"` needs no server, and Ctrl-C always reaches a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().relative_to(ROOT).as_posix()


def _pytest(*args: str, env: dict[str, str] | None = None,
            ignore_sigint: bool = False) -> subprocess.CompletedProcess[str]:
    def ignore() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600,
                          preexec_fn=ignore if ignore_sigint else None)


def test_tests_run_with_sigint_at_its_default() -> None:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_run_started_with_sigint_ignored_still_takes_ctrl_c() -> None:
    # A shell script starts background jobs so; the commands a test sends SIGINT to inherit it.
    run = _pytest(f"{HERE}::test_tests_run_with_sigint_at_its_default", ignore_sigint=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout


def test_not_db_runs_no_test_that_needs_a_server() -> None:
    # With no backend able to start, any test that needs a server fails.
    env = {**os.environ, "FAVMIGRATE_PG": "none-outside-db-tests", "FAVMIGRATE_PG_BINDIR": "/nonexistent"}
    run = _pytest("-m", "not db", "--deselect", f"{HERE}::test_not_db_runs_no_test_that_needs_a_server",
                  "--deselect", f"{HERE}::test_a_run_started_with_sigint_ignored_still_takes_ctrl_c", env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "deselected" in run.stdout
