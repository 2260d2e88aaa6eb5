"""verify's data counts on a real PostgreSQL, per column of the spec: rows waiting for backfill, orphaned
references, values outside the spec's limits."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from clihelp import cli
from favmigrate.apply import apply_migration
from favmigrate.datastats import read_data_stats
from favmigrate.spec import Target, load_spec

pytestmark = pytest.mark.db


def target() -> Target:
    return Target(load_spec())


def count(conn: psycopg.Connection[Any], where: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM session_requests WHERE {where}").fetchone()[0])


def test_counts_per_column(conn, db_dsn):
    assert apply_migration(conn, target()).ok
    waiting = count(conn, "jsonb_typeof(metadata) = 'object' AND (coalesce(metadata -> 'priority_mechanic_id', "
                          "'null') <> 'null' OR coalesce(metadata -> 'priority_notified_at', 'null') <> 'null')")
    assert waiting > 0
    clean = read_data_stats(conn, target())
    assert (clean.backfill_pending, clean.backfill_rejected) == (waiting, 0)
    assert clean.orphaned == {"preferred_mechanic_id": 0} and clean.out_of_range == {"priority_window_minutes": 0}

    # orphans need the foreign key gone; a window outside 1..1440 has no constraint to stop it
    conn.execute("ALTER TABLE session_requests DROP CONSTRAINT session_requests_preferred_mechanic_id_fkey")
    ids = [r[0] for r in conn.execute("SELECT id FROM session_requests ORDER BY id LIMIT 6")]
    conn.execute("UPDATE session_requests SET preferred_mechanic_id = %s WHERE id = ANY (%s)", (uuid.uuid4(), ids[:3]))
    conn.execute("UPDATE session_requests SET priority_window_minutes = 0 WHERE id = ANY (%s)", (ids[3:5],))
    conn.execute("UPDATE session_requests SET priority_window_minutes = 1441 WHERE id = %s", (ids[5],))
    found = read_data_stats(conn, target())
    assert found.orphaned == {"preferred_mechanic_id": 3}
    assert found.out_of_range == {"priority_window_minutes": 3}
    assert found.limits == {"priority_window_minutes": "1..1440"}

    result = cli("verify", "--dsn", db_dsn, "--format", "json")
    checks = {c["id"]: c for c in result.json()["checks"]}
    assert result.exit_code == 1
    assert (checks["data:preferred_mechanic_id:orphans"]["status"], checks["data:preferred_mechanic_id:orphans"]
            ["actual"]) == ("fail", "3")
    window = checks["data:priority_window_minutes:range"]
    assert (window["status"], window["expected"], window["actual"]) == ("fail", "1..1440", "3 rows outside")
