"""The change log of a rollback that stopped early: verify and plan name it, apply removes it (its own step).

A rollback whose drop and cleanup never got the table lock leaves its trigger behind, logging the id of every
row the application writes. An operator who then runs `apply` instead of `rollback` must not keep it forever.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from clihelp import cli
from favmigrate.catalog import read_snapshot
from favmigrate.changelog import change_log_table, track_statements
from favmigrate.checks import check_absent, check_applied
from favmigrate.rollback import change_log_present
from favmigrate.spec import Target, load_spec

pytestmark = pytest.mark.db

SPEC = load_spec()
CHECK = "trigger:favmigrate_rollback_changes:absent"
STEP = "remove-rollback-change-log"


def target() -> Target:
    return Target(SPEC)


def logged(conn: psycopg.Connection[Any]) -> int:
    return conn.execute(f"SELECT count(*) FROM {change_log_table(target()).as_string(conn)}").fetchone()[0]


def stopped_rollback(dsn: str) -> None:
    """A rollback stopped by a row lock it waits for in vain: the lock also keeps it from dropping its trigger."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT id FROM session_requests ORDER BY id DESC LIMIT 1").fetchone()[0]
    locker = psycopg.connect(dsn)  # not autocommit: the row stays locked until it closes
    locker.execute("SELECT 1 FROM session_requests WHERE id = %s FOR UPDATE", (row,))
    try:
        result = cli("rollback", "--dsn", dsn, "--yes", "--format", "json", "--lock-timeout", "0.1",
                     "--retries", "1")
    finally:
        locker.close()
    assert result.exit_code == 3, result.stderr
    assert any("still in place" in note for note in result.json()["notes"])


def test_apply_after_a_stopped_rollback_removes_its_change_log_as_a_recorded_step(db_dsn):
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    stopped_rollback(db_dsn)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        assert change_log_present(conn, target())
        before = logged(conn)
        conn.execute("UPDATE session_requests SET priority_window_minutes = 30 WHERE id IN "
                     "(SELECT id FROM session_requests ORDER BY id LIMIT 3)")
        assert logged(conn) == before + 3, "the leftover trigger logs the application's writes"

    verified = cli("verify", "--dsn", db_dsn, "--format", "json", "--no-data")
    assert verified.exit_code == 1, verified.stderr
    (check,) = [c for c in verified.json()["checks"] if c["id"] == CHECK]
    assert check["status"] == "fail" and "favmigrate apply" in check["hint"]
    planned = cli("plan", "--dsn", db_dsn, "--format", "json")
    assert planned.exit_code == 1 and planned.json()["steps"][0]["step"] == STEP, planned.stdout

    applied = cli("apply", "--dsn", db_dsn, "--format", "json", "--lock-timeout", "0.5")
    assert applied.exit_code == 0, applied.stderr
    steps = [s["step"] for s in applied.json()["steps"]]
    assert steps[0] == STEP, steps
    assert applied.json()["verification"]["ok"]
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        assert not change_log_present(conn, target())
        history = conn.execute("SELECT outcome FROM favmigrate.history WHERE command = 'apply' AND step = %s",
                               (STEP,)).fetchall()
        assert history == [("applied",)]
        functions = conn.execute("SELECT count(*) FROM pg_proc WHERE pronamespace = 'favmigrate'::regnamespace")
        assert functions.fetchone()[0] == 0
    assert cli("verify", "--dsn", db_dsn, "--no-data").exit_code == 0
    again = cli("apply", "--dsn", db_dsn, "--format", "json")
    assert again.exit_code == 0 and again.json()["steps"] == []


def test_a_held_table_lock_makes_the_removal_retry_then_stop_without_losing_it(db_dsn):
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS favmigrate")
        with conn.transaction():  # what rollback's first step creates
            for statement in track_statements(target(), SPEC.columns):
                conn.execute(statement)
    holder = psycopg.connect(db_dsn, application_name="long-report")
    holder.execute("LOCK TABLE session_requests IN ACCESS SHARE MODE")
    try:
        blocked = cli("apply", "--dsn", db_dsn, "--lock-timeout", "0.1", "--retries", "2")
    finally:
        holder.close()
    assert blocked.exit_code == 2, blocked.stderr  # nothing was changed: the first step never got its lock
    assert blocked.stderr.count("retry") >= 2 and "long-report" in blocked.stderr
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        assert change_log_present(conn, target())
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        assert not change_log_present(conn, target())


def test_the_checks_fail_only_while_the_change_log_exists(conn):
    t = target()
    absent = {c.id: c for c in check_applied(SPEC, read_snapshot(conn, t))}
    assert absent[CHECK].status.value == "pass"
    conn.execute("CREATE SCHEMA IF NOT EXISTS favmigrate")
    conn.execute("ALTER TABLE session_requests ADD COLUMN preferred_mechanic_id uuid, ADD COLUMN "
                 "priority_window_minutes integer DEFAULT 10, ADD COLUMN priority_notified_at timestamptz")
    with conn.transaction():
        for statement in track_statements(t, SPEC.columns):
            conn.execute(statement)
    snapshot = read_snapshot(conn, t)
    assert snapshot.change_log
    assert {c.id: c for c in check_applied(SPEC, snapshot)}[CHECK].status.value == "fail"
    rolled_back = {c.id: c for c in check_absent(SPEC, snapshot)}[CHECK]
    assert rolled_back.status.value == "fail" and "favmigrate rollback" in rolled_back.hint
