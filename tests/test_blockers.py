"""Other sessions' statements: shown with every literal masked and cut short, never stored."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from clihelp import cli
from favmigrate.apply import ApplyOptions, apply_migration
from favmigrate.db import mask_query
from favmigrate.runner import Event
from favmigrate.spec import Target, load_spec

SECRET = "Hunter2-secret"


@pytest.mark.parametrize(("query", "shown"), [
    (f"alter role x password '{SECRET}'", "alter role x password $1"),
    (f"ALTER ROLE x PASSWORD E'{SECRET}\\'s' VALID UNTIL 'infinity'", "ALTER ROLE x PASSWORD $1 VALID UNTIL $2"),
    (f"select $1, 42, 1.5e10, .5, 0x1F, B'101', X'{SECRET}', U&'{SECRET}' from t1",
     "select $1, $2, $3, $4, $5, $6, $7, $8 from t1"),
    (f"do $$ begin perform '{SECRET}'; end $$; select $tag$ {SECRET} $ $tag$",
     "do $1; select $2"),
    (f"select 'it''s {SECRET}', \"we\"\"ird\".id -- {SECRET}\n/* {SECRET} /* nested */ {SECRET} */ from t",
     "select $1, \"we\"\"ird\".id from t"),
    (f"alter role x password '{SECRET} cut by track_activity_query_size", "alter role x password $1"),
    (f"alter role x password $q${SECRET}", "alter role x password $1"),
    (None, ""),
])
def test_every_literal_is_masked(query, shown):
    assert mask_query(query) == shown


def test_masked_queries_are_cut_short():
    shown = mask_query("select " + ", ".join(f"column_{n}" for n in range(100)))
    assert len(shown) == 120 and shown.endswith("…")


@contextlib.contextmanager
def blocker(dsn: str, *statements: str) -> Iterator[tuple[int, psycopg.Connection[Any]]]:
    """A session holding locks in an open transaction whose last statement sets a role's password."""
    holder = psycopg.connect(dsn, application_name="app-admin")
    try:
        holder.execute("CREATE ROLE blocker_victim")
        for statement in statements:
            holder.execute(statement)
        holder.execute(f"ALTER ROLE blocker_victim PASSWORD '{SECRET}'")
        yield holder.info.backend_pid, holder
    finally:
        holder.close()


def assert_not_stored(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        details = [row[0] for row in conn.execute("SELECT detail FROM favmigrate.history")]
    assert details, "the failed step is recorded"
    assert not any(SECRET in d or "PASSWORD" in d.upper() or "$1" in d for d in details), details


def test_apply_shows_the_blockers_statement_masked_and_stores_none_of_it(db_dsn):
    with blocker(db_dsn, "LOCK TABLE session_requests IN ACCESS SHARE MODE") as (pid, _):
        result = cli("apply", "--dsn", db_dsn, "--lock-timeout", "0.2", "--retries", "1")
    assert result.exit_code == 2
    assert SECRET not in result.stdout + result.stderr
    assert f"pid {pid} last ran: ALTER ROLE blocker_victim PASSWORD $1" in result.stderr
    assert "blocked by pid" in result.stderr and "PASSWORD $1" in result.stderr, "the retry line shows it masked"
    assert_not_stored(db_dsn)


def test_backfill_shows_the_blockers_statement_masked(db_dsn):
    assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0
    with blocker(db_dsn, "LOCK TABLE session_requests IN SHARE MODE") as (pid, _):
        result = cli("backfill", "--dsn", db_dsn, "--lock-timeout", "0.2", "--retries", "1")
    assert result.exit_code in (2, 3), result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert f"pid {pid} last ran: ALTER ROLE blocker_victim PASSWORD $1" in result.stderr


def test_long_transactions_are_named_with_their_statement_masked(db_dsn):
    warnings: list[str] = []

    def collect(event: Event) -> None:
        if event.kind.value == "warning":
            warnings.append(event.message)

    with (blocker(db_dsn) as (pid, _), psycopg.connect(db_dsn, autocommit=True) as conn):
        apply_migration(conn, Target(load_spec()), ApplyOptions(long_transaction_s=0, dry_run=True),
                        on_event=collect)
    (warning,) = [w for w in warnings if f"pid {pid}" in w]
    assert warning.endswith("ALTER ROLE blocker_victim PASSWORD $1") and SECRET not in warning
