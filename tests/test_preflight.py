"""Preflights every command shares: refused before anything is read from or written to the tables (exit 2)."""

from __future__ import annotations

import pytest

from tests.clihelp import cli

COMMANDS = [
    ("plan",), ("apply",), ("apply", "--dry-run"), ("verify",), ("verify", "--absent"), ("verify", "--no-data"),
    ("backfill",), ("backfill", "--dry-run"), ("explain",), ("report",), ("rollback", "--yes"),
    ("rollback", "--dry-run"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_missing_tables_read_the_same_for_every_command(empty_db_dsn, command):
    result = cli(*command, "--dsn", empty_db_dsn, "--schema", "garage")
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "error: tables garage.session_requests and garage.mechanics do not exist; nothing was changed" \
        in result.stderr
    assert "hint: check --schema and the database named in the DSN" in result.stderr
    assert result.stdout == ""
