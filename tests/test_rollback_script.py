"""The rollback dry run's SQL script, run by psql, loses nothing: it leaves metadata exactly as `rollback` does.

Each test runs the same state twice, in two databases cloned from it: the script through /usr/bin/psql in one,
a real `favmigrate rollback` in the other; then compares every row's metadata.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import fresh_database
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from test_orders_spec import load_cases, orders
from test_rollback import app_writes as phase4_app_writes

from clihelp import cli
from favmigrate.changelog import change_log_table
from favmigrate.rollback import RollbackOptions, change_log_present, rollback_migration
from favmigrate.runner import EventKind
from favmigrate.spec import Target, load_spec

pytestmark = pytest.mark.db

PSQL = "/usr/bin/psql"
SPEC = load_spec()
# the metadata of every row, in key order, as one digest; and per row, for a readable failure
METADATA_DIGEST = "SELECT md5(string_agg(id::text || ':' || metadata::text, ',' ORDER BY id)) FROM session_requests"
METADATA_ROWS = "SELECT id, metadata FROM session_requests ORDER BY id"
ORDERS_DIGEST = "SELECT md5(string_agg(id::text || ':' || data::text, ',' ORDER BY id)) FROM orders"
ORDERS_ROWS = "SELECT id, data FROM orders ORDER BY id"


def psql(dsn: str, script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` as a DBA would: `psql -v ON_ERROR_STOP=1 -X -f FILE`."""
    path = tmp_path / f"rollback-{uuid.uuid4().hex[:8]}.sql"
    path.write_text(script, encoding="utf-8")
    return subprocess.run([PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(path)],
                          capture_output=True, text=True, check=False)


def app_writes(conn: psycopg.Connection[Any]) -> None:
    """What the Phase 4 code writes after the backfill (test_rollback's writes: new rows, rows without legacy
    keys), plus values conflicting with the keys the backfill copied, and rows whose metadata is not an object.
    """
    phase4_app_writes(conn)
    mechanic = conn.execute("SELECT id FROM mechanics ORDER BY id DESC LIMIT 1").fetchone()[0]
    conn.execute("UPDATE session_requests SET preferred_mechanic_id = %s, priority_notified_at = now() "
                 "WHERE id IN (SELECT id FROM session_requests WHERE metadata ? 'priority_mechanic_id' "
                 "AND preferred_mechanic_id IS DISTINCT FROM %s ORDER BY id LIMIT 7)", (mechanic, mechanic))
    conn.execute("UPDATE session_requests SET priority_window_minutes = priority_window_minutes + 1 "
                 "WHERE id IN (SELECT id FROM session_requests WHERE metadata ? 'priority_window_minutes' "
                 "AND priority_window_minutes < 1440 ORDER BY id DESC LIMIT 6)")
    conn.execute("UPDATE session_requests SET priority_window_minutes = 20 WHERE jsonb_typeof(metadata) <> 'object'")


@pytest.fixture
def applied(db_dsn: str) -> str:
    """The sample, applied and backfilled, then written to by the application."""
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    assert cli("backfill", "--dsn", db_dsn, "-q").exit_code == 0
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        app_writes(conn)
    return db_dsn


@pytest.fixture
def clone(applied: str, pg_server: Any) -> Iterator[str]:
    """A second database cloned from ``applied`` as it is now."""
    with fresh_database(pg_server, conninfo_to_dict(applied)["dbname"]) as dsn:
        yield dsn


def metadata(dsn: str, digest: str = METADATA_DIGEST, rows: str = METADATA_ROWS) -> tuple[str, list[tuple[Any, ...]]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(digest).fetchone()[0], conn.execute(rows).fetchall()


def assert_same_metadata(script_dsn: str, rollback_dsn: str, *queries: str) -> None:
    digest, rows = metadata(script_dsn, *queries)
    expected_digest, expected_rows = metadata(rollback_dsn, *queries)
    differing = [(a, b) for a, b in zip(rows, expected_rows, strict=True) if a != b]
    assert differing == [] and digest == expected_digest


def changed_rows(before: list[tuple[Any, ...]], dsn: str) -> int:
    return sum(a != b for a, b in zip(before, metadata(dsn)[1], strict=True))


@pytest.mark.parametrize("mode", [[], ["--prefer-columns"]], ids=["keep-metadata", "prefer-columns"])
def test_the_script_writes_every_value_back_as_rollback_does(applied, clone, tmp_path, mode):
    before = metadata(applied)[1]
    result = cli("rollback", "--dsn", applied, "--dry-run", "--format", "sql", *mode)
    assert result.exit_code == 0, result.stderr
    script = result.stdout
    assert "-- repeated in batches" not in script and ":after" not in script and "%(" not in script
    first_drop = script.index("DROP INDEX CONCURRENTLY")
    assert script.index("UPDATE \"public\".\"session_requests\"") < first_drop, "written back before any drop"
    final = script[script.index("LOCK TABLE"):]
    assert final.index("UPDATE") < final.index("DROP COLUMN"), "the last pass runs under the lock, before the drop"
    assert "SELECT set_config('lock_timeout', '1000ms', false);" in script

    done = psql(applied, script, tmp_path)
    assert done.returncode == 0, done.stderr
    assert cli("verify", "--dsn", applied, "--absent").exit_code == 0
    real = cli("rollback", "--dsn", clone, "--yes", "--format", "json", *mode)
    assert real.exit_code == 0, real.stderr
    assert real.json()["preservation"]["rows_written"] > 20
    assert_same_metadata(applied, clone)
    assert changed_rows(before, applied) == real.json()["preservation"]["rows_written"]
    with psycopg.connect(applied, autocommit=True) as conn:
        assert not change_log_present(conn, Target(SPEC)), "the script removes its trigger and change log"


def test_the_scripts_own_write_back_is_not_logged(applied, tmp_path):
    script = cli("rollback", "--dsn", applied, "--dry-run", "--format", "sql").stdout
    first, _ = split_before(script, "index-priority-timeout")
    done = psql(applied, first, tmp_path)
    assert done.returncode == 0, done.stderr
    with psycopg.connect(applied) as conn:
        written = conn.execute("SELECT count(*) FROM session_requests WHERE metadata ? 'priority_window_minutes'")
        assert written.fetchone()[0] > 0
        log = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(change_log_table(Target(SPEC))))
        assert log.fetchone()[0] == 0, "only the application's writes are logged"


def split_before(script: str, step: str) -> tuple[str, str]:
    at = script.index(f"-- step {step}:")
    return script[:at], script[at:]


def test_writes_made_while_the_script_runs_are_written_back_as_rollback_writes_them(applied, clone, tmp_path):
    """Between the first pass and the drop the application still writes: the change log carries them."""
    with psycopg.connect(applied) as conn:
        # a row whose key the backfill read, and one whose key the first pass writes
        written = conn.execute("(SELECT id FROM session_requests WHERE metadata ->> 'priority_mechanic_id' = "
                               "preferred_mechanic_id::text ORDER BY id LIMIT 1) UNION ALL (SELECT id FROM "
                               "session_requests WHERE NOT metadata ? 'priority_mechanic_id' AND "
                               "preferred_mechanic_id IS NOT NULL ORDER BY id LIMIT 1)").fetchall()
        fresh = conn.execute("SELECT id FROM mechanics ORDER BY id DESC LIMIT 1").fetchone()[0]
    rows = [r[0] for r in written]

    def application(dsn: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as app:  # values the first pass already wrote back, changed
            app.execute("UPDATE session_requests SET preferred_mechanic_id = %s, priority_window_minutes = 33 "
                        "WHERE id = ANY (%s)", (fresh, rows))

    script = cli("rollback", "--dsn", applied, "--dry-run", "--format", "sql").stdout
    first, rest = split_before(script, "index-priority-timeout")
    for part in (first, rest):
        done = psql(applied, part, tmp_path)
        assert done.returncode == 0, done.stderr
        if part is first:
            application(applied)

    with psycopg.connect(clone, autocommit=True) as conn:
        hook: Callable[[Any], None] = lambda event: (  # noqa: E731
            application(clone) if event.kind is EventKind.STEP_START and event.step == "index-priority-timeout"
            else None)
        report = rollback_migration(conn, Target(SPEC), RollbackOptions(), on_event=hook)
        assert report.exit_code == 0, report.to_dict()
    assert_same_metadata(applied, clone)
    with psycopg.connect(applied) as conn:
        kept = conn.execute("SELECT metadata ->> 'priority_mechanic_id' FROM session_requests WHERE id = ANY (%s)",
                            (rows,)).fetchall()
    assert kept == [(str(fresh),)] * 2, "the newer value replaced the one the first pass wrote"


def test_the_discard_data_script_only_drops(applied, tmp_path):
    before = metadata(applied)
    result = cli("rollback", "--dsn", applied, "--dry-run", "--format", "sql", "--discard-data")
    assert result.exit_code == 0, result.stderr
    script = result.stdout
    assert "UPDATE" not in script and "TRIGGER" not in script and "DROP COLUMN" in script
    done = psql(applied, script, tmp_path)
    assert done.returncode == 0, done.stderr
    assert cli("verify", "--dsn", applied, "--absent").exit_code == 0
    assert metadata(applied) == before


def test_a_write_back_that_cannot_run_stops_the_script_before_any_drop(applied, tmp_path):
    script = cli("rollback", "--dsn", applied, "--dry-run", "--format", "sql").stdout
    with psycopg.connect(applied, autocommit=True) as conn:  # the write-back's UPDATE fails on this
        conn.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN RAISE EXCEPTION 'no writes'; END $$")
        conn.execute("CREATE TRIGGER refuse BEFORE UPDATE OF metadata ON session_requests "
                     "FOR EACH ROW EXECUTE FUNCTION refuse()")
    done = psql(applied, script, tmp_path)
    assert done.returncode != 0 and "no writes" in done.stderr
    with psycopg.connect(applied) as conn:
        columns = conn.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = "
                               "'session_requests' AND column_name = ANY (%s)", ([c.name for c in SPEC.columns],))
        indexes = conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname = ANY (%s)",
                               ([i.name for i in SPEC.indexes],))
        assert (columns.fetchone()[0], indexes.fetchone()[0]) == (len(SPEC.columns), len(SPEC.indexes)), (
            "nothing was dropped")


@pytest.mark.parametrize("mode", [[], ["--prefer-columns"]], ids=["keep-metadata", "prefer-columns"])
def test_the_script_of_another_spec_writes_back_every_type_as_rollback_does(empty_db_dsn, pg_server, tmp_path,
                                                                            mode):
    """The orders spec: a column of every supported type, its legacy values in every form backfill reads."""
    with psycopg.connect(empty_db_dsn, autocommit=True) as db:
        load_cases(db)
        db.execute("INSERT INTO orders (data) VALUES ('[1, 2]'), ('{}'), ('{\"gift\": null}')")
    assert orders("apply", "--dsn", empty_db_dsn).exit_code == 0
    assert orders("backfill", "--dsn", empty_db_dsn, "-q").exit_code == 0
    with psycopg.connect(empty_db_dsn, autocommit=True) as db:  # the application changes some values
        db.execute("UPDATE orders SET quantity = quantity + 1, total = total + 0.5, gift = NOT gift, "
                   "due_on = due_on + 1, shipped_at = shipped_at + interval '1.5 seconds' WHERE id % 3 = 0 "
                   "AND quantity < 100")
        db.execute("UPDATE orders SET gift = true, channel = 'web' WHERE jsonb_typeof(data) <> 'object' "
                   "OR data = '{}' OR data = '{\"gift\": null}'")
    with fresh_database(pg_server, conninfo_to_dict(empty_db_dsn)["dbname"]) as reference:
        result = orders("rollback", "--dsn", empty_db_dsn, "--dry-run", "--format", "sql", *mode)
        assert result.exit_code == 0, result.stderr
        done = psql(empty_db_dsn, result.stdout, tmp_path)
        assert done.returncode == 0, done.stderr
        assert orders("verify", "--dsn", empty_db_dsn, "--absent").exit_code == 0
        real = orders("rollback", "--dsn", reference, "--yes", "--format", "json", *mode)
        assert real.exit_code == 0, real.stderr
        assert real.json()["preservation"]["rows_written"] > 0
        assert_same_metadata(empty_db_dsn, reference, ORDERS_DIGEST, ORDERS_ROWS)
