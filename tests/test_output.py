"""What a piped command prints is a contract: plain tab-separated lines, one per row, ids whole."""

from __future__ import annotations

import psycopg
import pytest

from clihelp import cli

pytestmark = pytest.mark.db

TIMEOUT_IDX = "session_requests_priority_timeout_idx"
ANALYTICS_IDX = "session_requests_priority_analytics_idx"


def test_verify_piped_is_plain_lines_that_grep_can_filter(db_dsn):
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(f"DROP INDEX {TIMEOUT_IDX}")
    result = cli("verify", "--dsn", db_dsn, "--no-data", env={"COLUMNS": "60"})
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[:2] == ["verify", "check\tstatus\texpected\tactual\tmessage"]
    assert f"index:{TIMEOUT_IDX}:exists\tfail\tpresent\tmissing\tindex {TIMEOUT_IDX} does not exist" in lines
    assert f"index:{ANALYTICS_IDX}:valid\tpass\tvalid, ready, live\tvalid, ready, live\t" in lines
    comment = next(line for line in lines if line.startswith("column:priority_window_minutes:comment\t"))
    assert comment.endswith("(Phase 4; was metadata.priority_window_minutes)\t")  # whole, never folded at 60
    assert all(line.count("\t") == 4 for line in lines[1:] if line.startswith(("index:", "column:", "constraint:")))
    assert [line.split("\t")[0] for line in lines if "\tfail\t" in line] == [f"index:{TIMEOUT_IDX}:exists"]
    assert not any(ch in result.stdout for ch in "┃│━─")
    assert "FAILED: " in result.stdout and " 1 fail," in result.stdout


def test_a_second_apply_says_already_applied_without_an_empty_table(db_dsn):
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    again = cli("apply", "--dsn", db_dsn)
    assert again.exit_code == 0, again.stderr
    assert again.stdout.startswith("- already applied: nothing to do\n")
    assert "step\toutcome" not in again.stdout


def test_explain_prose_has_no_python_reprs(db_dsn):
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    result = cli("explain", "--dsn", db_dsn)
    assert result.exit_code == 0, result.stderr
    assert "estimated rows" in result.stdout and "~2,000 estimated rows" in result.stdout
    assert "warning(s)" not in result.stdout and "None" not in result.stdout and "True" not in result.stdout


def test_connection_hints_fit_the_error(empty_db_dsn):
    refused = cli("verify", "--dsn", "postgresql://nobody@127.0.0.1:1/app")
    assert refused.exit_code == 2
    assert "check the host and port" in refused.stderr and "pass --dsn" not in refused.stderr
    missing_db = cli("verify", "--dsn", empty_db_dsn.replace("dbname=", "dbname=no_such_") if "dbname=" in empty_db_dsn
                     else empty_db_dsn.rsplit("/", 1)[0] + "/no_such_db")
    assert missing_db.exit_code == 2 and "check the user and database names" in missing_db.stderr
    nothing = cli("verify", env={"PGHOST": "/nonexistent-socket-dir", "PGPORT": "5432"})
    assert nothing.exit_code == 2 and "pass --dsn, or set FAVMIGRATE_DSN" in nothing.stderr


def test_rollback_prose_names_no_json_keys_and_counts_read_well(db_dsn):
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    assert cli("backfill", "--dsn", db_dsn, "--quiet").exit_code == 0
    with psycopg.connect(db_dsn, autocommit=True) as conn:  # two windows whose legacy key says otherwise
        conn.execute("UPDATE session_requests SET priority_window_minutes = 20, metadata = metadata || "
                     "'{\"priority_window_minutes\": 15}' WHERE id IN (SELECT id FROM session_requests "
                     "WHERE jsonb_typeof(metadata) = 'object' ORDER BY id LIMIT 2)")
    dry = cli("rollback", "--dsn", db_dsn, "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    prose = dry.stdout + dry.stderr
    assert "_sample" not in prose and "JSON report" not in prose and "(s)" not in prose
    assert "-- preserves: " in dry.stdout and " already there, " in dry.stdout
    assert "rows with values in the columns" in dry.stderr
    done = cli("rollback", "--dsn", db_dsn, "--yes")
    assert done.exit_code == 0, done.stderr
    assert "_sample" not in done.stdout and " 0 rows' " not in done.stdout
    assert "in the metadata of 0 rows" in done.stdout  # preserve-late-writes wrote nothing


def test_a_huge_conflicting_value_is_cut_with_its_size_in_text_and_json(db_dsn):
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    assert cli("backfill", "--dsn", db_dsn, "--quiet").exit_code == 0
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("UPDATE session_requests SET metadata = jsonb_set(metadata, '{priority_mechanic_id}', "
                     "to_jsonb(repeat('x', 10000000))) WHERE id = (SELECT id FROM session_requests WHERE "
                     "preferred_mechanic_id IS NOT NULL AND jsonb_typeof(metadata) = 'object' ORDER BY id LIMIT 1)")
    text = cli("rollback", "--dsn", db_dsn, "--dry-run")
    assert text.exit_code == 0, text.stderr
    assert len(text.stdout) < 200_000 and "(cut, 10.0 MB in all)" in text.stdout
    json_out = cli("rollback", "--dsn", db_dsn, "--dry-run", "--format", "json")
    assert json_out.exit_code == 0, json_out.stderr
    assert len(json_out.stdout) < 200_000 and json_out.json()["plan"]["survey"]["conflict_sample"]
