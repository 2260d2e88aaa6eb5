"""Peer comparison with squawk (the `squawk-cli` wheel, a test dependency) over a shared corpus: every statement
squawk flags for a rule both tools have is flagged by favmigrate too, except the documented differences below
(the README's lint section lists the same, with the reasons)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from favmigrate.lint import RULES, LintOptions, Source, lint, select_rules
from favmigrate.lint.rules import ONCE_PER_FILE
from favmigrate.lint.source import LineIndex, Origin, split_statements

ROOT = Path(__file__).resolve().parent.parent
CORPUS = [*sorted((Path(__file__).resolve().parent / "lint" / "corpus").glob("*.sql")),
          ROOT / "favmigrate" / "sample" / "seed_original.sql"]
SHARED = {rule.id for rule in RULES.values() if rule.squawk}

Key = tuple[str, str, int | None]  # file name, rule, first line of the statement (None: a per-file rule)

# squawk findings that favmigrate does not give, on purpose
DIFFERENCES: dict[Key, str] = {
    ("new_table.sql", "require-concurrent-index-creation", 11): "the table is created in the same file",
    ("new_table.sql", "constraint-missing-not-valid", 13): "the table is created in the same file",
    ("new_table.sql", "adding-foreign-key-constraint", 13): "the table is created in the same file",
    ("new_table.sql", "constraint-missing-not-valid", 15): "the table is created in the same file",
    ("new_table.sql", "disallowed-unique-constraint", 15): "the table is created in the same file",
    ("constraints.sql", "constraint-missing-not-valid", 16): "a UNIQUE constraint cannot be NOT VALID",
    ("constraints.sql", "constraint-missing-not-valid", 25): "a PRIMARY KEY cannot be NOT VALID",
    ("columns.sql", "prefer-robust-stmts", 13): "SET NOT NULL can be re-run",
    ("columns.sql", "prefer-robust-stmts", 15): "ALTER COLUMN TYPE can be re-run",
    ("timeouts.sql", "require-statement-timeout", None): "no statement there reads the table under a write lock",
    ("set_config.sql", "require-lock-timeout", None): "squawk does not read set_config()",
    ("ignores.sql", "renaming-table", 18): "favmigrate:ignore is favmigrate's own comment",
    ("set_config.sql", "require-statement-timeout", None): "squawk does not read set_config()",
}


def squawk_binary() -> str:
    found = shutil.which("squawk") or str(Path(sys.executable).parent / "squawk")
    assert Path(found).exists(), "squawk-cli is a test dependency: pip install -e '.[test]'"
    return found


def statement_line(text: str, line: int, column: int) -> int:
    """The first line of the top-level statement holding position (line, column), both 1-based."""
    lines = LineIndex(text)
    offset = lines.starts[line - 1] + column - 1
    statements, _ = split_statements(text)
    starts = [s.offset for s in statements if s.origin is Origin.FILE and s.offset <= offset]
    return lines.position(starts[-1] if starts else offset)[0]


def key(path: Path, text: str, rule: str, line: int, column: int) -> Key:
    return path.name, rule, None if rule in ONCE_PER_FILE else statement_line(text, line, column)


def squawk_keys(path: Path, wrapped: bool) -> set[Key]:
    mode = ["--assume-in-transaction"] if wrapped else []
    result = subprocess.run([squawk_binary(), *mode, "--reporter", "json", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode in (0, 1), result.stderr
    text = path.read_text()
    # squawk's json reporter counts lines and columns from 0
    return {key(path, text, d["rule_name"], d["line"] + 1, d["column"] + 1)
            for d in json.loads(result.stdout) if d["rule_name"] in SHARED}


def favmigrate_keys(path: Path, wrapped: bool) -> set[Key]:
    text = path.read_text()
    report = lint([Source(str(path), text)], LintOptions(select_rules(["all"], None), assume_in_transaction=wrapped))
    return {key(path, text, f.rule, f.line, f.column) for f in report.findings}


@pytest.fixture(scope="module")
def compared() -> dict[Path, tuple[set[Key], set[Key]]]:
    return {path: (squawk_keys(path, False), favmigrate_keys(path, False)) for path in CORPUS}


def test_squawk_runs_here() -> None:
    version = subprocess.run([squawk_binary(), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("squawk 2.")


def test_the_corpus_exercises_every_shared_rule(compared: dict[Path, tuple[set[Key], set[Key]]]) -> None:
    flagged_by_squawk = {rule for theirs, _ in compared.values() for _, rule, _ in theirs}
    assert flagged_by_squawk == SHARED


def test_every_statement_squawk_flags_is_flagged_by_favmigrate(
        compared: dict[Path, tuple[set[Key], set[Key]]]) -> None:
    missed = {k for theirs, ours in compared.values() for k in theirs - ours}
    assert missed == set(DIFFERENCES), "undocumented: " + repr(missed - set(DIFFERENCES)) + \
        "; no longer different: " + repr(set(DIFFERENCES) - missed)


def test_same_with_each_file_run_in_one_transaction() -> None:
    """Both tools' --assume-in-transaction: CREATE INDEX CONCURRENTLY and BEGIN / COMMIT are flagged, and nothing
    fails for being re-run; only the differences that do not depend on transactions remain."""
    missed = {k for path in CORPUS for k in squawk_keys(path, True) - favmigrate_keys(path, True)}
    assert missed == {k for k, why in DIFFERENCES.items()
                      if "same file" not in why and "can be re-run" not in why}


def test_favmigrate_sees_inside_do_blocks_where_squawk_does_not(
        compared: dict[Path, tuple[set[Key], set[Key]]]) -> None:
    theirs, ours = next(pair for path, pair in compared.items() if path.name == "do_block.sql")
    assert theirs == set()
    assert {rule for _, rule, _ in ours} == {"require-concurrent-index-creation", "ban-drop-column"}
