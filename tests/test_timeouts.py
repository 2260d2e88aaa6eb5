"""Timeouts: the tool's own statement_timeout, never a role's or database's, and reported as a timeout."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from clihelp import cli
from favmigrate.db import ms

READ_COMMANDS = ["verify", "plan", "explain", "report"]


@pytest.fixture
def applied_dsn(db_dsn: str) -> str:
    assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0
    return db_dsn


@pytest.mark.parametrize("level", ["database", "role"])
def test_read_commands_override_a_database_or_role_statement_timeout(applied_dsn, level):
    with psycopg.connect(applied_dsn, autocommit=True) as conn:
        database = sql.Identifier(conn.info.dbname)
        if level == "database":
            conn.execute(sql.SQL("ALTER DATABASE {} SET statement_timeout = '1ms'").format(database))
        else:
            conn.execute(sql.SQL("ALTER ROLE current_user IN DATABASE {} SET statement_timeout = '1ms'")
                         .format(database))
    try:
        with psycopg.connect(applied_dsn) as conn:
            assert conn.execute("SHOW statement_timeout").fetchone() == ("1ms",), "the setting is in force"
        for command in READ_COMMANDS:
            result = cli(command, "--dsn", applied_dsn, "--format", "json")
            assert result.exit_code == 0, (command, result.stderr)
    finally:
        with psycopg.connect(applied_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE current_user IN DATABASE {} RESET ALL")
                         .format(sql.Identifier(conn.info.dbname)))


def test_a_read_command_stopped_by_its_statement_timeout_says_so_and_names_the_option(applied_dsn):
    with psycopg.connect(applied_dsn) as holder:
        holder.execute("LOCK TABLE session_requests IN ACCESS EXCLUSIVE MODE")
        result = cli("verify", "--dsn", applied_dsn, "--statement-timeout", "0.2")
    assert result.exit_code == 2, result.stderr
    assert "error: a statement ran longer than the statement timeout and was cancelled: raise --statement-timeout" \
        in result.stderr
    assert "connection" not in result.stderr and "QueryCanceled" not in result.stderr


def test_an_index_build_stopped_by_the_statement_timeout_is_a_timeout_not_a_lost_connection(applied_dsn):
    with psycopg.connect(applied_dsn, autocommit=True) as conn:
        conn.execute("DROP INDEX session_requests_priority_timeout_idx")
    with psycopg.connect(applied_dsn) as writer:  # an open writing transaction: CONCURRENTLY waits for it
        writer.execute("UPDATE session_requests SET status = status WHERE false")
        result = cli("apply", "--dsn", applied_dsn, "--statement-timeout", "0.3", "--format", "json")
    assert result.exit_code == 3, result.stderr
    (step,) = [s for s in result.json()["steps"] if s["outcome"] == "interrupted"]
    assert step["detail"].startswith("a statement ran longer than the statement timeout")
    assert "connection lost" not in result.stdout + result.stderr
    assert cli("apply", "--dsn", applied_dsn, "-q").exit_code == 0, "a re-run finishes"


@pytest.mark.parametrize(("seconds", "setting"), [(None, "0"), (0, "0"), (0.0001, "1ms"), (0.0015, "2ms"),
                                                  (2, "2000ms")])
def test_tiny_timeouts_round_up_never_to_no_limit(seconds, setting):
    assert ms(seconds) == setting


def test_a_tiny_statement_timeout_is_a_limit(applied_dsn):
    with psycopg.connect(applied_dsn) as holder:
        holder.execute("LOCK TABLE session_requests IN ACCESS EXCLUSIVE MODE")
        result = cli("plan", "--dsn", applied_dsn, "--statement-timeout", "0.0001")
    assert result.exit_code == 2 and "statement timeout" in result.stderr


def test_the_session_timeout_travels_in_the_startup_packet_beside_the_dsns_own_options(applied_dsn):
    """A role's statement_timeout must not even reach the statement that would lift it: the tool's own is
    set before the first query, and options the DSN already carries are kept."""
    from favmigrate.db import open_session

    dsn = f"{applied_dsn} options='-c work_mem=7MB'"
    with open_session(dsn, writes=False, statement_timeout_s=2.5) as conn:
        settings = conn.execute(
            "SELECT current_setting('statement_timeout'), current_setting('work_mem'), source "
            "FROM pg_settings WHERE name = 'statement_timeout'").fetchone()
    assert settings == ("2500ms", "7MB", "client")
