"""Options: one name and meaning per concept, ranges and choices checked by the parser, help that says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from clihelp import cli
from favmigrate.cli import WORKFLOW_ORDER, SandboxBackend, ScanChoice, app

DATABASE_COMMANDS = ["plan", "apply", "verify", "backfill", "explain", "report", "rollback", "history", "lint"]


@pytest.mark.parametrize(("command", "option", "value", "allowed"), [
    ("apply", "--lock-timeout", "inf", "0.01..3,600"),
    ("apply", "--lock-timeout", "nan", "0.01..3,600"),
    ("apply", "--lock-timeout", "-1", "0.01..3,600"),
    ("rollback", "--retries", "-1", "0..1,000"),
    ("backfill", "--batch-size", "1e20", "1..1,000,000"),
    ("backfill", "--batch-size", "0", "1..1,000,000"),
    ("apply", "--batch-size", "100000000000", "1..1,000,000"),
    ("backfill", "--max-rows-per-second", "inf", "1..1,000,000,000"),
    ("backfill", "--sleep", "-0.5", "0..3,600"),
    ("rollback", "--lock-wait", "1e9", "0..86,400"),
    ("verify", "--statement-timeout", "-1", "0..2,147,483"),
    ("explain", "--statement-timeout", "inf", "0..2,147,483"),
    ("sandbox", "--rows", "-5", "0..100,000,000"),
    ("history", "--limit", "0", "1..10,000"),
    ("report", "--limit", "1e20", "1..1,000,000"),
])
def test_absurd_values_are_refused_by_the_parser_with_the_allowed_range(command, option, value, allowed):
    where = () if command == "sandbox" else ("--dsn", "postgresql://u@127.0.0.1:1/x")
    result = cli(command, option, value, *where)
    assert result.exit_code == 2
    assert f"{value!r} is not" in result.stderr and f"allowed range {allowed}" in result.stderr
    assert "cannot reach" not in result.stderr, "refused before connecting"


@pytest.mark.parametrize("command", DATABASE_COMMANDS)
def test_statement_timeout_has_one_name_and_meaning_everywhere(command):
    text = " ".join(cli(command, "--help").stdout.split())
    assert "--statement-timeout" in text and "(0: no limit; fractions round up to whole milliseconds)" in text
    assert "Allowed: 0..2,147,483." in text and "[default: " in text
    assert "--timeout " not in text


def test_choices_are_listed_and_checked():
    assert "--scan <auto|ctid|pk>" in cli("backfill", "--help").stdout
    assert "--backend <docker|local|embedded>" in cli("sandbox", "--help").stdout
    refused = cli("backfill", "--scan", "seq")
    assert refused.exit_code == 2 and "'seq' is not one of 'auto', 'ctid', 'pk'" in refused.stderr
    assert cli("sandbox", "--backend", "podman").exit_code == 2


def test_cli_choices_are_the_librarys():
    from favmigrate.backfill import Scan
    from favmigrate.sandbox import BACKENDS

    assert {c.value for c in ScanChoice} == {s.value for s in Scan}
    assert [b.value for b in SandboxBackend] == list(BACKENDS)


def test_dash_h_is_help_everywhere_and_commands_come_in_workflow_order():
    top = cli("-h")
    assert top.exit_code == 0 and "Usage" in top.stdout
    listed = [line.split()[0] for line in top.stdout.split("Commands:")[1].splitlines() if line.strip()]
    import typer.main

    assert listed == [name for name in WORKFLOW_ORDER if name in typer.main.get_command(app).commands]
    assert listed[:9] == ["demo", "plan", "apply", "verify", "backfill", "finalize", "explain", "report", "rollback"]
    for command in listed:
        assert cli(command, "-h").exit_code == 0


def test_shell_completion_completes_commands_and_choices():
    script = Path(sys.executable).with_name("favmigrate")
    env = {**os.environ, "_FAVMIGRATE_COMPLETE": "complete_bash"}

    def complete(words: str, index: int) -> list[str]:
        done = subprocess.run([str(script)], env={**env, "COMP_WORDS": words, "COMP_CWORD": str(index)},
                              capture_output=True, text=True, timeout=60)
        return done.stdout.split()

    assert complete("favmigrate ver", 1) == ["verify"]
    assert complete("favmigrate backfill --scan ", 3) == ["auto", "ctid", "pk"]
    assert "--install-completion" in cli("--help").stdout


@pytest.mark.db
def test_verify_strict_fails_on_warnings(db_dsn):
    assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0
    lenient = cli("verify", "--dsn", db_dsn, "--format", "json")
    assert lenient.exit_code == 0 and lenient.json()["summary"]["warn"] >= 1, "rows wait for backfill"
    strict = cli("verify", "--dsn", db_dsn, "--strict", "--format", "json")
    assert strict.exit_code == 1 and strict.json()["ok"] is False and strict.json()["strict"] is True
    assert cli("verify", "--dsn", db_dsn, "--strict", "--no-data").exit_code == 0, "no warning, no failure"


@pytest.mark.db
def test_history_lists_the_recorded_runs_newest_first(db_dsn):
    empty = cli("history", "--dsn", db_dsn, "--format", "json")
    assert empty.exit_code == 0 and empty.json()["runs"] == []
    assert "is recorded yet" in cli("history", "--dsn", db_dsn).stdout
    assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0
    assert cli("rollback", "--dsn", db_dsn, "--yes", "-q").exit_code == 0
    result = cli("history", "--dsn", db_dsn, "--format", "json")
    assert result.exit_code == 0, result.stderr
    rolled_back, applied = result.json()["runs"]
    assert (rolled_back["command"], applied["command"]) == ("rollback", "apply")
    with psycopg.connect(db_dsn) as conn:
        recorded = conn.execute("SELECT run_id::text, step FROM favmigrate.history WHERE command = 'apply' "
                                "ORDER BY id").fetchall()
    assert [(applied["run_id"], s["step"]) for s in applied["steps"]] == recorded
    assert all(s["outcome"] == "applied" for s in applied["steps"]) and applied["db_user"]
    assert [r["command"] for r in cli("history", "--dsn", db_dsn, "--limit", "1", "--format", "json").json()["runs"]] \
        == ["rollback"]
    piped = cli("history", "--dsn", db_dsn).stdout.splitlines()
    assert piped[1].split("\t")[:4] == ["run", "command", "step", "outcome"]
    assert any(line.startswith(applied["run_id"] + "\tapply\tadd-columns\tapplied\t") for line in piped)
