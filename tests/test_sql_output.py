"""Dry-run SQL is a contract: piped, or with --format sql / -o FILE, it is exactly the statements that run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest
import sqlparse

from clihelp import cli

pytestmark = pytest.mark.db

NARROW = {"COLUMNS": "80"}  # a narrow console must not fold a long COMMENT literal


def run_script(dsn: str, script: str) -> None:
    """Run a script as `psql -f` does (each statement on its own, BEGIN/COMMIT as written), stopping at an error."""
    psql = shutil.which("psql")
    if psql:
        done = subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", "-"], input=script,
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        return
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in sqlparse.split(script):
            if sqlparse.format(statement, strip_comments=True).strip():
                conn.execute(statement.encode())


def test_apply_dry_run_sql_piped_into_psql_then_verify_passes(db_dsn, tmp_path: Path):
    result = cli("apply", "--dsn", db_dsn, "--dry-run", "--format", "sql", env=NARROW)
    assert result.exit_code == 0, result.stderr
    script = result.stdout
    assert script.startswith("-- favmigrate apply --dry-run: the statements it would run")
    assert 'CREATE INDEX CONCURRENTLY "session_requests_priority_timeout_idx"' in script
    assert "BEGIN;\nALTER TABLE" in script and script.rstrip().endswith("-- dry run: nothing was changed")
    comment = next(line for line in script.splitlines() if line.startswith("COMMENT ON COLUMN"))
    assert comment.endswith("(Phase 4; was metadata.priority_mechanic_id)';") and len(comment) > 80
    # without --format, piped text is the same script; -o writes it to a file and nothing to stdout
    assert cli("apply", "--dsn", db_dsn, "--dry-run", env=NARROW).stdout == script
    target = tmp_path / "phase4.sql"
    written = cli("apply", "--dsn", db_dsn, "--dry-run", "-o", str(target))
    assert written.exit_code == 0 and written.stdout == "" and target.read_text() == script

    run_script(db_dsn, script)
    verified = cli("verify", "--dsn", db_dsn, "--format", "json")
    assert verified.exit_code == 0, [c for c in verified.json()["checks"] if c["status"] == "fail"]
    again = cli("apply", "--dsn", db_dsn, "--dry-run", "--format", "sql")
    assert again.exit_code == 0 and again.stdout == "-- already applied: nothing to do\n"


def test_batched_step_is_a_commented_template(db_dsn):
    with psycopg.connect(db_dsn, autocommit=True) as conn:  # a hand-run nullable window with NULLs in it
        conn.execute("ALTER TABLE session_requests ADD COLUMN preferred_mechanic_id uuid, ADD COLUMN "
                     "priority_window_minutes integer DEFAULT 10, ADD COLUMN priority_notified_at timestamptz")
        conn.execute("UPDATE session_requests SET priority_window_minutes = NULL WHERE created_at < now() - "
                     "interval '30 days'")
    script = cli("apply", "--dsn", db_dsn, "--dry-run", "--format", "sql").stdout
    lines = script.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("-- step window-fill-nulls:"))
    end = next(i for i, line in enumerate(lines) if line.startswith("-- step window-check-not-valid:"))
    assert lines[start + 1].startswith("-- repeated in batches by favmigrate")
    assert ":batch_size, :after_id bound for each batch" in lines[start + 1]
    assert all(line.startswith("--   ") for line in lines[start + 2:end]) and end > start + 3
    assert 'WHERE "id" > :after_id' in script and "%(" not in script


def test_rollback_dry_run_sql_has_no_placeholders_and_runs(db_dsn):
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    assert cli("backfill", "--dsn", db_dsn, "-q").exit_code == 0
    result = cli("rollback", "--dsn", db_dsn, "--dry-run", "--format", "sql", env=NARROW)
    assert result.exit_code == 0, result.stderr
    script = result.stdout
    assert "%(" not in script and "%s" not in script
    assert "-- repeated in batches" not in script and ":after" not in script, "the write-back runs, no template"
    assert "this script runs each as one statement over the whole table" in script
    assert "DELETE FROM \"favmigrate\".\"backfill_checkpoint\" WHERE migration_id = 'phase4_favorites_priority' " \
           "AND target_schema = 'public';" in script
    run_script(db_dsn, script)
    assert cli("verify", "--dsn", db_dsn, "--absent").exit_code == 0


def test_sql_output_needs_a_dry_run_and_no_json(db_dsn):
    real = cli("apply", "--dsn", db_dsn, "--format", "sql")
    assert real.exit_code == 2 and "add --dry-run" in real.stderr and real.stdout == ""
    both = cli("rollback", "--dsn", db_dsn, "--dry-run", "--format", "json", "-o", "x.sql")
    assert both.exit_code == 2 and "--output writes the SQL script" in both.stderr
    assert cli("verify", "--dsn", db_dsn, "--absent").exit_code == 0  # nothing was applied
