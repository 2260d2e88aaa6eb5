"""report: exact analytics on rows with hand-computed answers, the date range, formats, exit codes."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

import psycopg
import pytest
from prioritydata import add_mechanic, add_request, apply, target
from psycopg import sql

from clihelp import cli
from favmigrate.apply import apply_migration
from favmigrate.errors import PreflightFailed, UsageError
from favmigrate.explain import explain
from favmigrate.queries import parse_query
from favmigrate.report import CSV_COLUMNS, ReportOptions, priority_report
from favmigrate.sample import load_sample
from favmigrate.spec import Target, load_spec

HOUR = 3600.0


@pytest.fixture
def known(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """Two mechanics with priority requests and one without; the expected numbers are in the tests.

    Ada (8 requests, 7 notified): accepted by her after 60 s, 120 s, and 600 s with a 5-minute window
    (late: timed out); accepted by Bob after 15 min (timed out); pending, notified an hour ago
    (timed out); pending, notified 2 min ago (still in its window); cancelled an hour after
    notification (never timed out); pending, never notified.
    Bob (3 requests): accepted by him after 30 s; pending 30 min with a 60-min window (in time);
    pending 30 min with a 20-min window (timed out).
    """
    apply(conn)
    ada = add_mechanic(conn, "Ada", "Lovelace")
    bob = add_mechanic(conn, "Bob", "Builder")
    add_mechanic(conn, "Cy", "Idle")
    rows = {
        "ada_60": add_request(conn, preferred=ada, status="accepted", mechanic=ada, notified_ago_s=HOUR,
                              accepted_after_s=60),
        "ada_120": add_request(conn, preferred=ada, status="accepted", mechanic=ada, notified_ago_s=HOUR,
                               accepted_after_s=120),
        "ada_600_late": add_request(conn, preferred=ada, status="accepted", mechanic=ada, notified_ago_s=HOUR,
                                    accepted_after_s=600, window=5),
        "ada_by_bob": add_request(conn, preferred=ada, status="accepted", mechanic=bob, notified_ago_s=HOUR,
                                  accepted_after_s=900),
        "ada_pending_late": add_request(conn, preferred=ada, notified_ago_s=HOUR),
        "ada_pending_in_window": add_request(conn, preferred=ada, notified_ago_s=120),
        "ada_cancelled": add_request(conn, preferred=ada, status="cancelled", notified_ago_s=HOUR),
        "ada_not_notified": add_request(conn, preferred=ada),
        "bob_30": add_request(conn, preferred=bob, status="accepted", mechanic=bob, notified_ago_s=HOUR,
                              accepted_after_s=30),
        "bob_pending_60": add_request(conn, preferred=bob, notified_ago_s=1800, window=60),
        "bob_pending_20": add_request(conn, preferred=bob, notified_ago_s=1800, window=20),
    }
    # requests without a preferred mechanic are not priority requests, whatever their state
    add_request(conn, preferred=None, status="accepted", mechanic=bob, notified_ago_s=HOUR, accepted_after_s=5)
    return {"ada": ada, "bob": bob, **rows}


def stats(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["requests"], row["notified"], row["accepted_by_preferred"], row["success_rate_pct"],
            row["timed_out"], row["timeout_rate_pct"], row["avg_response_s"], row["median_response_s"])


@pytest.mark.db
def test_exact_numbers_per_mechanic_and_totals(conn, known):
    report = priority_report(conn, target())
    data = report.to_dict()
    assert [(m["mechanic_name"], m["mechanic_id"]) for m in data["mechanics"]] == [
        ("Ada Lovelace", known["ada"]), ("Bob Builder", known["bob"])]
    ada, bob = data["mechanics"]
    assert stats(ada) == (8, 7, 3, 37.5, 3, 42.86, pytest.approx(260.0), pytest.approx(120.0))
    assert stats(bob) == (3, 3, 1, 33.33, 1, 33.33, pytest.approx(30.0), pytest.approx(30.0))
    # the totals' median is over all four acceptances (30, 60, 120, 600), not a mean of medians
    assert stats({"mechanic_id": None, **data["totals"]}) == (
        11, 10, 4, 36.36, 4, 40.0, pytest.approx(202.5), pytest.approx(90.0))
    assert data["ok"] and data["since"] is None and data["until"] is None and data["notes"] == []


@pytest.mark.db
def test_since_inclusive_until_exclusive(conn, known):
    moved = {
        "ada_60": "2025-02-01T00:00:00Z",  # == until: out
        "ada_120": "2024-12-31T23:59:59.999Z",  # before since: out
        "ada_600_late": "2025-01-31T23:59:59.999Z",  # in
        "bob_30": "2025-01-01T00:00:00Z",  # == since: in
    }
    for key, created in moved.items():
        conn.execute("UPDATE session_requests SET created_at = %s WHERE id = %s", (created, known[key]))
    result = cli("report", "--dsn", conn.info.dsn, "--since", "2025-01-01", "--until", "2025-02-01",
                 "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["since"] == "2025-01-01T00:00:00+00:00" and data["until"] == "2025-02-01T00:00:00+00:00"
    bob, ada = data["mechanics"]  # best success rate first
    assert (bob["mechanic_name"], ada["mechanic_name"]) == ("Bob Builder", "Ada Lovelace")
    assert stats(ada) == (6, 5, 1, 16.67, 3, 60.0, pytest.approx(600.0), pytest.approx(600.0))
    assert stats(bob) == (3, 3, 1, 33.33, 1, 33.33, pytest.approx(30.0), pytest.approx(30.0))
    assert stats({**data["totals"]}) == (9, 8, 2, 22.22, 4, 50.0, pytest.approx(315.0), pytest.approx(315.0))


@pytest.mark.db
def test_offset_in_since_is_honoured(conn, known):
    conn.execute("UPDATE session_requests SET created_at = '2025-03-01T00:30:00Z' WHERE id = %s", (known["bob_30"],))
    # 01:00 at +01:00 is 00:00Z, so the request at 00:30Z is in; at UTC 01:00 it would be out
    inside = cli("report", "--dsn", conn.info.dsn, "--since", "2025-03-01T01:00:00+01:00", "--format", "json")
    outside = cli("report", "--dsn", conn.info.dsn, "--since", "2025-03-01T01:00:00", "--format", "json")
    assert inside.json()["totals"]["requests"] == 1
    assert outside.json()["totals"]["requests"] == 0


@pytest.mark.db
def test_empty_range_gives_zero_totals_and_no_division_by_zero(conn, known):
    report = priority_report(conn, target(), ReportOptions(since=None, until=None))
    assert report.totals.requests == 11
    result = cli("report", "--dsn", conn.info.dsn, "--since", "2030-01-01", "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["mechanics"] == []
    assert stats(data["totals"]) == (0, 0, 0, None, 0, None, None, None)


@pytest.mark.db
def test_rates_are_empty_not_an_error_when_nothing_was_notified(conn, known):
    conn.execute("UPDATE session_requests SET priority_notified_at = NULL WHERE preferred_mechanic_id = %s",
                 (known["bob"],))
    bob = next(m for m in priority_report(conn, target()).mechanics if m.mechanic_id == known["bob"])
    assert (bob.requests, bob.notified, bob.timed_out, bob.timeout_rate_pct) == (3, 0, 0, None)
    assert (bob.accepted_by_preferred, bob.success_rate_pct, bob.avg_response_s) == (1, 33.33, None)


@pytest.mark.db
def test_a_request_whose_mechanic_row_is_missing_is_kept(conn, known):
    # possible while the foreign key is NOT VALID (or after it was dropped): the LEFT JOIN keeps the row
    conn.execute("ALTER TABLE session_requests DROP CONSTRAINT session_requests_preferred_mechanic_id_fkey")
    ghost = "00000000-0000-4000-8000-000000000001"
    add_request(conn, preferred=ghost, status="accepted", mechanic=None, notified_ago_s=HOUR, accepted_after_s=10)
    data = priority_report(conn, target()).to_dict()
    (row,) = [m for m in data["mechanics"] if m["mechanic_id"] == ghost]
    assert row["mechanic_name"] is None and row["requests"] == 1 and row["accepted_by_preferred"] == 0
    assert row["mechanic_missing"] is True
    assert not any(m["mechanic_missing"] for m in data["mechanics"] if m["mechanic_id"] != ghost)
    assert data["totals"]["requests"] == 12
    text = cli("report", "--dsn", conn.info.dsn)
    assert text.exit_code == 0 and f"{ghost}\t(no mechanics row)\t1\t" in text.stdout


@pytest.mark.db
def test_csv_has_a_header_and_one_row_per_mechanic(conn, known):
    result = cli("report", "--dsn", conn.info.dsn, "--format", "csv")
    assert result.exit_code == 0, result.stderr
    table = list(csv.reader(io.StringIO(result.stdout)))
    assert tuple(table[0]) == CSV_COLUMNS
    assert table[1:] == [
        [known["ada"], "Ada Lovelace", "8", "7", "3", "37.50", "3", "42.86", "260.00", "120.00"],
        [known["bob"], "Bob Builder", "3", "3", "1", "33.33", "1", "33.33", "30.00", "30.00"],
    ]


@pytest.mark.db
def test_text_output(conn, known):
    result = cli("report", "--dsn", conn.info.dsn)
    assert result.exit_code == 0, result.stderr
    assert "Ada Lovelace" in result.stdout and "37.50%" in result.stdout and "4m 20s" in result.stdout
    assert "totals" in result.stdout and "36.36%" in result.stdout


@pytest.mark.db
def test_missing_index_is_noted(conn, known):
    conn.execute("DROP INDEX session_requests_preferred_mechanic_idx")
    report = priority_report(conn, target())
    assert report.totals.requests == 11
    assert report.notes == ("index session_requests_preferred_mechanic_idx missing: the report read the table "
                            "without it",)


@pytest.mark.db
def test_runs_in_a_read_only_transaction(conn, known, monkeypatch):
    writing = parse_query("priority_analytics.sql", "-- expects: x\nUPDATE {table} SET priority_window_minutes = 3 "
                          "WHERE %(since)s::timestamptz IS NULL AND %(until)s::timestamptz IS NULL RETURNING id")
    monkeypatch.setattr("favmigrate.report.report_query", lambda *_: writing)
    with pytest.raises(UsageError, match="writes: the server refused it in the READ ONLY transaction"):
        priority_report(conn, target())
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert conn.execute("SELECT count(*) FROM session_requests WHERE priority_window_minutes = 3").fetchone() == (0,)


@pytest.mark.db
def test_statement_timeout(conn, known, monkeypatch):
    slow = parse_query("priority_analytics.sql", "-- expects: x\nSELECT * FROM pg_sleep(1) "
                       "WHERE %(since)s::timestamptz IS NULL AND %(until)s::timestamptz IS NULL")
    monkeypatch.setattr("favmigrate.report.report_query", lambda *_: slow)
    with pytest.raises(UsageError, match=r"cancelled by statement_timeout after 0\.1s"):
        priority_report(conn, target(), ReportOptions(timeout_s=0.1))


@pytest.mark.db
def test_before_the_migration_is_applied(conn):
    with pytest.raises(PreflightFailed, match="not applied"):
        priority_report(conn, target())
    result = cli("report", "--dsn", conn.info.dsn, "--format", "json")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "the migration is not applied" in result.stderr and "favmigrate apply" in result.stderr


@pytest.mark.db
def test_bad_options_exit_2(conn, known):
    dsn = conn.info.dsn
    backwards = cli("report", "--dsn", dsn, "--since", "2025-02-01", "--until", "2025-01-01")
    assert backwards.exit_code == 2 and "--since must be before --until" in backwards.stderr
    garbage = cli("report", "--dsn", dsn, "--until", "last tuesday")
    assert garbage.exit_code == 2 and "not an ISO 8601" in garbage.stderr
    with pytest.raises(UsageError):
        priority_report(conn, target(), ReportOptions(since=_utc("2025-02-01"), until=_utc("2025-02-01")))


def _utc(day: str) -> Any:
    from datetime import UTC, datetime

    return datetime.fromisoformat(day).replace(tzinfo=UTC)


@pytest.mark.db
def test_text_output_of_an_empty_range(conn, known):
    result = cli("report", "--dsn", conn.info.dsn, "--until", "2000-01-01")
    assert result.exit_code == 0, result.stderr
    assert "no priority request (a request with a preferred mechanic) has created_at in [-inf," in result.stdout


@pytest.mark.parametrize("seconds, text", [
    (None, "-"), (42.46, "42.5s"), (260, "4m 20s"), (7300, "2h 01m"), (273_600, "3d 04h"), (-700, "-11m 40s"),
])
def test_durations_for_people(seconds, text):
    from favmigrate.render import duration

    assert duration(seconds) == text


@pytest.mark.db
def test_row_level_security_is_noted(conn, known):
    role = f"analyst_{uuid.uuid4().hex[:12]}"
    conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    try:
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA auth TO {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        report = priority_report(conn, target())
        # the sample's policy shows a customer only their own requests: this role sees none
        assert report.totals.requests == 0
        assert report.notes[0].startswith("row level security is active for this role")
        warnings = {w.id for w in explain(conn, target()).warnings}
        assert "row-security:session_requests" in warnings
    finally:
        conn.execute("RESET ROLE")
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.mark.db
def test_another_schema(empty_db_dsn):
    garage = Target(load_spec(), "garage")
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        load_sample(conn, rows=30, schema="garage")
        assert apply_migration(conn, garage).ok
        conn.execute("SET search_path TO garage, public")
        ada = add_mechanic(conn, "Ada", "Lovelace")
        add_request(conn, preferred=ada, status="accepted", mechanic=ada, notified_ago_s=HOUR, accepted_after_s=90)
        add_request(conn, preferred=ada, notified_ago_s=HOUR)
        assert priority_report(conn, garage).totals.requests == 2
    result = cli("report", "--dsn", empty_db_dsn, "--schema", "garage", "--format", "json")
    assert result.exit_code == 0, result.stderr
    (row,) = result.json()["mechanics"]
    assert stats(row) == (2, 2, 1, 50.0, 1, 50.0, pytest.approx(90.0), pytest.approx(90.0))
    assert cli("report", "--dsn", empty_db_dsn, "--format", "json").exit_code == 2  # nothing in public
    explained = cli("explain", "--dsn", empty_db_dsn, "--schema", "garage", "--format", "json")
    assert explained.exit_code == 0, explained.stderr
    assert explained.json()["table"] == '"garage"."session_requests"'


@pytest.mark.db
def test_mechanics_with_only_a_name_column(conn, known):
    # the real application's table: one `name` column, no first_name / last_name
    conn.execute("ALTER TABLE mechanics ADD COLUMN name text")
    conn.execute("UPDATE mechanics SET name = first_name || ' ' || upper(last_name)")
    conn.execute("ALTER TABLE mechanics DROP COLUMN first_name, DROP COLUMN last_name")
    result = cli("report", "--dsn", conn.info.dsn, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert [(m["mechanic_id"], m["mechanic_name"]) for m in result.json()["mechanics"]] == [
        (known["ada"], "Ada LOVELACE"), (known["bob"], "Bob BUILDER")]
    explained = cli("explain", "--dsn", conn.info.dsn, "--format", "json")
    assert explained.exit_code == 0, explained.stderr
    assert [q["id"] for q in explained.json()["queries"]] == [
        "preferred-mechanic-requests", "priority-analytics", "priority-timeouts"]


@pytest.mark.db
def test_mechanics_with_only_an_id(conn, known):
    conn.execute("ALTER TABLE mechanics DROP COLUMN first_name, DROP COLUMN last_name, DROP COLUMN user_id, "
                 "DROP COLUMN status, DROP COLUMN is_online, DROP COLUMN created_at")
    result = cli("report", "--dsn", conn.info.dsn, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert [(m["mechanic_id"], m["mechanic_name"], m["mechanic_missing"], m["requests"])
            for m in result.json()["mechanics"]] == [(known["ada"], None, False, 8), (known["bob"], None, False, 3)]
    text = cli("report", "--dsn", conn.info.dsn)
    assert text.exit_code == 0, text.stderr
    assert f"{known['ada']}\t\t8\t7\t3\t37.50%" in text.stdout  # the id labels the row
    csv_rows = list(csv.DictReader(io.StringIO(cli("report", "--dsn", conn.info.dsn, "--format", "csv").stdout)))
    assert [(r["mechanic_id"], r["mechanic_name"]) for r in csv_rows] == [(known["ada"], ""), (known["bob"], "")]
    assert cli("explain", "--dsn", conn.info.dsn, "--format", "json").exit_code == 0


@pytest.mark.db
def test_mechanic_label_prefers_name_then_first_and_last_name_then_email(conn, known):
    from favmigrate.queries import mechanic_label

    conn.execute("ALTER TABLE mechanics ADD COLUMN email text, ADD COLUMN name text")
    conn.execute("UPDATE mechanics SET email = lower(first_name) || '@example.com'")
    conn.execute("UPDATE mechanics SET name = 'Ada L.' WHERE id = %s", (known["ada"],))
    conn.execute("UPDATE mechanics SET first_name = '', last_name = '' WHERE id = %s", (known["bob"],))
    labels = conn.execute(sql.SQL("SELECT m.id::text, {} FROM mechanics AS m WHERE m.id IN (%s, %s) ORDER BY 2")
                          .format(mechanic_label(conn, target())), (known["ada"], known["bob"])).fetchall()
    assert labels == [(known["ada"], "Ada L."), (known["bob"], "bob@example.com")]


@pytest.mark.db
def test_limit_keeps_the_best_mechanics_and_the_totals_of_all(conn, known):
    result = cli("report", "--dsn", conn.info.dsn, "--limit", "1", "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert [m["mechanic_id"] for m in data["mechanics"]] == [known["ada"]]
    assert data["mechanics_total"] == 2 and data["totals"]["requests"] == 11
    assert data["notes"] == ["the 1 best of 2 mechanics are shown (--limit); the totals cover them all"]
    rows = list(csv.reader(io.StringIO(cli("report", "--dsn", conn.info.dsn, "--limit", "1", "--format", "csv")
                                       .stdout)))
    assert len(rows) == 2 and rows[1][0] == known["ada"]
    assert cli("report", "--dsn", conn.info.dsn, "--limit", "0").exit_code == 2


@pytest.mark.db
def test_durations_are_rounded(conn, known):
    conn.execute("UPDATE session_requests SET accepted_at = accepted_at + interval '0.123456 seconds' "
                 "WHERE id = %s", (known["bob_30"],))
    bob = next(m for m in priority_report(conn, target()).mechanics if m.mechanic_id == known["bob"])
    assert (bob.avg_response_s, bob.median_response_s) == (30.12, 30.12)


@pytest.mark.db
def test_the_readme_example_returns_rows_on_the_sandbox_data(db_dsn):
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    example = next(line.split("#")[0].split() for line in readme.splitlines()
                   if line.strip().startswith("favmigrate report --since"))
    assert cli("apply", "--dsn", db_dsn).exit_code == 0
    assert cli("backfill", "--dsn", db_dsn, "--quiet").exit_code == 0
    result = cli(*example[1:], "--dsn", db_dsn, "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["totals"]["requests"] > 0 and len(data["mechanics"]) > 1
