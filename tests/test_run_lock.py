"""The run lock between two favmigrate processes: every changing command takes it before it reads the state
it acts on, so nothing it decided can be undone by the run that held the lock meanwhile."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from favmigrate.apply import apply_migration
from favmigrate.db import advisory_key
from favmigrate.spec import Target, load_spec

pytestmark = pytest.mark.db

TARGET = Target(load_spec())
FAVMIGRATE = Path(sys.executable).with_name("favmigrate")
WAIT_S = 60


def favmigrate(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(FAVMIGRATE), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def lock_holder(conn: psycopg.Connection[Any]) -> int | None:
    """The backend holding the run lock of TARGET."""
    unsigned = advisory_key(TARGET.lock_name) & 0xFFFFFFFFFFFFFFFF
    found = conn.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
                         "AND classid::text::bigint = %s AND objid::text::bigint = %s",
                         (unsigned >> 32, unsigned & 0xFFFFFFFF)).fetchone()
    return found[0] if found else None


def waiting_for_the_lock(conn: psycopg.Connection[Any], holder: int) -> bool:
    """Another backend polls for the run lock (run_lock polls pg_try_advisory_lock)."""
    return bool(conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid <> %s "
                             "AND query LIKE 'SELECT pg_try_advisory_lock%%'", (holder,)).fetchone()[0])


@contextmanager
def rollback_in_progress(conn: psycopg.Connection[Any], dsn: str) -> Iterator[Callable[[], None]]:
    """A rollback process holding the run lock, stuck before its first change behind a writer's open
    transaction (creating its trigger waits for in-flight writes), until the test calls the yielded
    ``release``."""
    writer = psycopg.connect(dsn)  # not autocommit: the lock is held until it commits
    writer.execute("LOCK TABLE session_requests IN ROW EXCLUSIVE MODE")
    rollback = favmigrate("rollback", "--dsn", dsn, "--yes", "--format", "json", "--lock-timeout", "0.2",
                          "--retries", "100")
    try:
        wait_for(lambda: lock_holder(conn) is not None or rollback.poll() is not None, "rollback to take the lock")
        assert rollback.poll() is None, rollback.communicate()
        yield writer.commit
        _, err = rollback.communicate(timeout=WAIT_S)
        assert rollback.returncode == 0, err
    finally:
        writer.close()
        rollback.kill()


def wait_behind(conn: psycopg.Connection[Any], process: subprocess.Popen[str]) -> None:
    """Until ``process`` polls for the run lock the rollback holds (or, had it not waited, has ended)."""
    holder = lock_holder(conn)
    assert holder is not None
    wait_for(lambda: process.poll() is not None or waiting_for_the_lock(conn, holder), "the second command")


def columns_present(conn: psycopg.Connection[Any]) -> int:
    return int(conn.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = 'session_requests' "
                            "AND column_name = ANY (%s)", ([c.name for c in TARGET.spec.columns],)).fetchone()[0])


def test_apply_started_during_a_rollback_waits_then_applies_again(conn, db_dsn):
    assert apply_migration(conn, TARGET).ok
    with rollback_in_progress(conn, db_dsn) as release:
        apply = favmigrate("apply", "--dsn", db_dsn, "--format", "json", "--lock-wait", str(WAIT_S))
        wait_behind(conn, apply)
        release()
        out, err = apply.communicate(timeout=WAIT_S)
    assert apply.returncode == 0, err
    report = json.loads(out)
    assert "already applied: nothing to do" not in report["notes"]
    assert "add-columns" in [s["step"] for s in report["steps"]]
    assert columns_present(conn) == 3, "the migration is in place after both runs"


def test_backfill_started_during_a_rollback_waits_then_finds_no_columns(conn, db_dsn):
    assert apply_migration(conn, TARGET).ok
    with rollback_in_progress(conn, db_dsn) as release:
        backfill = favmigrate("backfill", "--dsn", db_dsn, "--lock-wait", str(WAIT_S))
        wait_behind(conn, backfill)
        release()
        _, err = backfill.communicate(timeout=WAIT_S)
    assert backfill.returncode == 2, err
    assert "favmigrate apply" in err
    assert columns_present(conn) == 0
    checkpoint = conn.execute("SELECT to_regclass('favmigrate.backfill_checkpoint') IS NOT NULL").fetchone()[0]
    if checkpoint:
        assert conn.execute("SELECT count(*) FROM favmigrate.backfill_checkpoint").fetchone()[0] == 0, (
            "no checkpoint for a later backfill to resume")
