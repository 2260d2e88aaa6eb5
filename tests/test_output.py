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
    assert again.stdout.startswith("- already applied: nothing to do\nverified: all ")
    assert "step\toutcome" not in again.stdout


def test_explain_prose_has_no_python_reprs(db_dsn):
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    result = cli("explain", "--dsn", db_dsn)
    assert result.exit_code == 0, result.stderr
    assert "estimated rows" in result.stdout and "~2,000 estimated rows" in result.stdout
    assert "warning(s)" not in result.stdout and "None" not in result.stdout and "True" not in result.stdout
