"""Rules of the test suite itself: `-m "not db"` selects no database test, and Ctrl-C always reaches a run."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATABASE_FIXTURES

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().relative_to(ROOT).as_posix()


def _pytest(*args: str, ignore_sigint: bool = False) -> subprocess.CompletedProcess[str]:
    def ignore() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          preexec_fn=ignore if ignore_sigint else None)


def test_tests_run_with_sigint_at_its_default() -> None:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_run_started_with_sigint_ignored_still_takes_ctrl_c() -> None:
    # A shell script starts background jobs so; the commands a test sends SIGINT to inherit it.
    run = _pytest(f"{HERE}::test_tests_run_with_sigint_at_its_default", ignore_sigint=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout


def test_every_test_using_a_database_fixture_is_marked_db(request: pytest.FixtureRequest) -> None:
    # So `-m "not db"` selects none of them (a full run without a server takes that selection).
    unmarked = [item.nodeid for item in request.session.items
                if DATABASE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
                and item.get_closest_marker("db") is None]
    assert unmarked == []
