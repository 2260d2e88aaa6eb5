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


WRITING_COMMANDS = [("apply",), ("backfill",), ("rollback", "--yes")]


@pytest.mark.parametrize("command", WRITING_COMMANDS, ids=" ".join)
def test_a_read_only_database_refuses_every_writing_command_before_anything(db_dsn, command):
    import psycopg
    from psycopg import sql

    if command[0] != "apply":
        assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        history_before = conn.execute("SELECT to_regclass('favmigrate.history') IS NOT NULL").fetchone()
        conn.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on")
                     .format(sql.Identifier(conn.info.dbname)))
    result = cli(*command, "--dsn", db_dsn)
    assert result.exit_code == 2, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith("error: the database is read-only (default_transaction_read_only = on")
    assert "re-run" not in result.stderr and "ReadOnlySqlTransaction" not in result.stderr
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('favmigrate.history') IS NOT NULL").fetchone() == history_before
    read = cli("verify", "--dsn", db_dsn, "--no-data")
    assert read.exit_code in (0, 1), "read commands still run"
