"""The stall measurement: a steady writer and a lock sampler around a block, on a real server."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest

from favmigrate.sample import sample_writes
from favmigrate.sandbox import Server
from favmigrate.stall import intended_percentile, percentile, writes_during

TEMPLATE_DB = "favmigrate_template"  # tests/conftest.py's sample template


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 99) == 99.0
    assert percentile(values, 50) == 50.0
    assert percentile([], 99) == 0.0


def test_intended_percentile_counts_the_requests_due_during_a_stall() -> None:
    # 198 fast writes and one of 1 s at 10 txn/s: the plain p99 does not see the stall; nine more requests
    # were due while it lasted, waiting 0.9 s .. 0.1 s, and push the p99 to 0.8 s
    latencies = sorted([0.001] * 198 + [1.0])
    assert percentile(latencies, 99) == 0.001
    assert intended_percentile(latencies, 10.0, 99) == pytest.approx(0.8)


def test_a_table_lock_held_during_the_block_is_the_writers_worst_stall(db_dsn: str, template_rows: int) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM session_requests").fetchone()[0]
    writes = sample_writes(template_rows)
    with (psycopg.connect(db_dsn, autocommit=True, application_name="lock-holder") as holder,
          writes_during(db_dsn, writes, rate=50, lead_s=0.3) as recording, holder.transaction()):
        holder.execute("LOCK TABLE session_requests IN ACCESS EXCLUSIVE MODE")
        time.sleep(0.4)
    assert recording.errors == 0
    assert {t.kind for t in recording.txns} == {"insert", "update"}
    assert recording.worst >= 0.3
    assert recording.ended - recording.started >= 0.4
    assert [b.application for b in recording.blockers] == ["lock-holder"]
    assert "RowExclusiveLock" in recording.blockers[0].waiting_for
    inserts = sum(t.kind == "insert" for t in recording.txns)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        after = conn.execute("SELECT count(*) FROM session_requests").fetchone()[0]
    assert after == before + inserts


def test_the_writer_stops_with_the_block_even_when_it_raises(db_dsn: str, template_rows: int) -> None:
    threads = threading.active_count()
    with pytest.raises(RuntimeError), writes_during(db_dsn, sample_writes(template_rows), rate=50, lead_s=0.1):
        raise RuntimeError("the migration failed")
    assert threading.active_count() == threads
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        writers = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                               "'favmigrate-demo-writer%'").fetchone()[0]
    assert writers == 0


def test_a_database_copied_from_a_template_and_dropped(pg_server: Server, template_rows: int) -> None:
    name = f"copy_{uuid.uuid4().hex}"
    dsn = pg_server.create_database(name, template=TEMPLATE_DB)
    session = psycopg.connect(dsn, autocommit=True)
    assert session.execute("SELECT count(*) FROM session_requests").fetchone()[0] == template_rows
    pg_server.drop_database(name)  # its sessions are ended first
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    session.close()
    with psycopg.connect(pg_server.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone()[0] == 0
