"""The package's shape: jobs import shared machinery, never each other (STYLE: one job each)."""

from __future__ import annotations

import ast
from pathlib import Path

import favmigrate

PACKAGE = Path(favmigrate.__file__).parent
JOBS = {"plan", "apply", "verify", "backfill", "finalize", "rollback", "explain", "report", "history", "flag",
        "lint"}
# above the jobs: the command line and the demo run them in order, render draws their results
ORCHESTRATORS = {"cli", "demo", "render"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("favmigrate."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("favmigrate."))
    return found


def test_no_job_imports_another_job():
    offending = {}
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem in ORCHESTRATORS:
            continue
        jobs = (imported_modules(path) & JOBS) - {path.stem}
        if jobs:
            offending[path.stem] = sorted(jobs)
    assert offending == {}, "move what they share into a module of its own"
