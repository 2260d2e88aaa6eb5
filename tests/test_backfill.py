"""backfill on a real PostgreSQL: exact outcomes on the sample's cases and on hand-written edge values,
dry run, conflicts, idempotence, resume after a killed connection, a concurrent writer, triggers, CLI."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import TEMPLATE_DB
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from clihelp import cli
from favmigrate.apply import apply_migration
from favmigrate.backfill import BackfillEventKind, BackfillOptions, Phase, Scan, backfill, batch_statement
from favmigrate.db import SessionLimits
from favmigrate.errors import ExitCode, Interrupted, LockHeld, PreflightFailed
from favmigrate.sample import METADATA_CASES, SLOTS, Outcome, expected_case_counts, expected_rejects
from favmigrate.spec import Target, as_text, load_spec

pytestmark = pytest.mark.db

SEED = 42  # the seed conftest's template is loaded with (load_sample's default)
MECHANIC, WINDOW, NOTIFIED = "priority_mechanic_id", "priority_window_minutes", "priority_notified_at"
COLUMN = {MECHANIC: "preferred_mechanic_id", WINDOW: "priority_window_minutes", NOTIFIED: "priority_notified_at"}
# the reasons Phase 4's columns can give, in the order backfill reports them
REASONS = ["invalid_uuid", "unknown_mechanic", "out_of_range", "invalid_integer", "invalid_timestamp",
           "metadata_not_object"]


def target() -> Target:
    return Target(load_spec())


def migrate(conn: psycopg.Connection[Any]) -> None:
    report = apply_migration(conn, target())
    assert report.ok, report.to_dict()


def run(conn: psycopg.Connection[Any], **options: Any) -> dict[str, Any]:
    return backfill(conn, target(), BackfillOptions(**options)).to_dict()


# ---------------------------------------------------------------- an independent statement of the rules

_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}", re.ASCII)
_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,6}))?)?"
                   r"(Z|([+-])(\d\d)(?::?(\d\d))?)?", re.ASCII)


def expect(key: str, value: Any, live: set[str]) -> tuple[str, Any]:
    """(outcome, column value) the rules give for one legacy value, written without looking at the SQL."""
    if value is None:
        return "absent", None
    if key == MECHANIC:
        if not isinstance(value, str) or not _UUID.fullmatch(value):
            return "invalid_uuid", None
        return ("ok", value.lower()) if value.lower() in live else ("unknown_mechanic", None)
    if key == WINDOW:
        if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
            return "invalid_integer", None
        if isinstance(value, str):
            if not value or not value.isascii() or not value.isdigit():
                return "invalid_integer", None
            number = Decimal(value)
        else:
            number = Decimal(value)
            if number != number.to_integral_value():
                return "invalid_integer", None
        return ("ok", int(number)) if 1 <= number <= 1440 else ("out_of_range", None)
    match = _TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return "invalid_timestamp", None
    year, month, day, hour, minute, second, fraction, _zone, sign, zone_h, zone_m = match.groups()
    if int(hour) > 23 or int(minute) > 59 or int(second or 0) > 59 or (zone_h and int(zone_h) > 15) \
            or (zone_m and int(zone_m) > 59):
        return "invalid_timestamp", None
    offset = timedelta(hours=int(zone_h or 0), minutes=int(zone_m or 0)) * (-1 if sign == "-" else 1)
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0),
                          int((fraction or "0").ljust(6, "0")), tzinfo=timezone(offset))
    except ValueError:  # 2025-02-30, year 0
        return "invalid_timestamp", None
    return "ok", moment.astimezone(UTC)


def expected_row(metadata: Any, live: set[str]) -> dict[str, tuple[str, Any]]:
    """Per legacy key: (outcome, column value); a non-object metadata rejects the whole row."""
    if not isinstance(metadata, dict):
        return {key: ("metadata_not_object", None) for key in COLUMN}
    return {key: expect(key, metadata.get(key), live) for key in COLUMN}


def loads(text: str) -> Any:
    """JSON with exact numbers (1e400 stays an integer-valued number, not infinity)."""
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def exact(value: Any) -> Any:
    """A value read back from JSON, with its numbers made comparable to `loads`."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return Decimal(str(value))
    if isinstance(value, list):
        return [exact(v) for v in value]
    if isinstance(value, dict):
        return {k: exact(v) for k, v in value.items()}
    return value


def live_mechanics(conn: psycopg.Connection[Any]) -> set[str]:
    return {row[0] for row in conn.execute("SELECT id::text FROM mechanics").fetchall()}


def table_state(conn: psycopg.Connection[Any]) -> dict[str, tuple[Any, ...]]:
    found = conn.execute("SELECT id::text, metadata, preferred_mechanic_id::text, priority_window_minutes, "
                         "priority_notified_at FROM session_requests").fetchall()
    return {row[0]: row[1:] for row in found}


def assert_backfilled(conn: psycopg.Connection[Any], *, initial: dict[str, tuple[Any, ...]] | None = None) -> None:
    """Every row holds exactly what the rules say its metadata gives (columns that started empty)."""
    live = live_mechanics(conn)
    for row_id, (metadata, mechanic, window, notified) in table_state(conn).items():
        expected = expected_row(exact(metadata), live)
        want_mechanic = expected[MECHANIC][1]
        want_window = expected[WINDOW][1] if expected[WINDOW][1] is not None else 10
        want_notified = expected[NOTIFIED][1]
        if initial is not None and row_id in initial:
            _, start_mechanic, start_window, start_notified = initial[row_id]
            want_mechanic = start_mechanic if start_mechanic is not None else want_mechanic
            want_window = start_window if start_window not in (None, 10) else want_window
            want_notified = start_notified if start_notified is not None else want_notified
        assert (mechanic, window, notified) == (want_mechanic, want_window, want_notified), (row_id, metadata)


def set_updated_at_quietly(conn: psycopg.Connection[Any]) -> None:
    """Put every updated_at to 2001-01-01 without the trigger replacing it with now()."""
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("UPDATE session_requests SET updated_at = '2001-01-01T00:00:00Z'")


def metadata_md5(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT md5(string_agg(id::text || ':' || metadata::text, ',' ORDER BY id)) "
                       "FROM session_requests").fetchone()
    assert row is not None
    return str(row[0])


def columns_md5(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT md5(string_agg(concat_ws('|', id, preferred_mechanic_id, priority_window_minutes, "
                       "priority_notified_at, updated_at), ',' ORDER BY id)) FROM session_requests").fetchone()
    assert row is not None
    return str(row[0])


# ---------------------------------------------------------------- what the sample's case table promises


def sample_case_of(n: int) -> str:
    slot, start = (n - 1) % SLOTS, 0
    for case in METADATA_CASES:
        if slot < start + case.slots:
            return case.name
        start += case.slots
    raise AssertionError(n)


def sample_row_id(n: int) -> str:
    return str(uuid.UUID(hashlib.md5(f"{SEED}:request:{n}".encode()).hexdigest()))


def expected_sample_rejects(rows: int) -> dict[str, int]:
    """Rejected values per reason (every reason, 0 included), as the sample's cases define them."""
    return {**dict.fromkeys(REASONS, 0), **expected_rejects(rows)}


def expected_sample_lines(rows: int) -> set[tuple[str, str | None, str]]:
    lines: set[tuple[str, str | None, str]] = set()
    cases = {case.name: case for case in METADATA_CASES}
    for n in range(1, rows + 1):
        case = cases[sample_case_of(n)]
        if set(case.outcomes.values()) == {Outcome.METADATA_NOT_OBJECT}:
            lines.add((sample_row_id(n), None, "metadata_not_object"))
            continue
        for key, outcome in case.outcomes.items():
            if outcome not in (Outcome.OK, Outcome.ABSENT):
                lines.add((sample_row_id(n), key, outcome.value))
    return lines


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sample_cases_backfill_exactly(conn, template_rows, tmp_path):
    migrate(conn)
    before_metadata = metadata_md5(conn)
    set_updated_at_quietly(conn)
    per_case = expected_case_counts(template_rows)
    ok = {key: sum(per_case[c.name] for c in METADATA_CASES if c.outcomes[key] is Outcome.OK) for key in COLUMN}

    report = run(conn, rejects_path=tmp_path / "rejects.jsonl", batch_size=700)

    assert report["rejected"] == expected_sample_rejects(template_rows)
    assert list(report["rejected"]) == REASONS, "every reason of the spec's columns, in the documented order"
    assert report["conflicts"] == 0
    assert report["scanned"] == template_rows
    assert report["updated"]["preferred_mechanic_id"] == ok[MECHANIC]
    assert report["updated"]["priority_notified_at"] == ok[NOTIFIED]
    # a legacy window equal to the default (10) leaves the column as it is: not an update
    windows_not_default = conn.execute("SELECT count(*) FROM session_requests WHERE priority_window_minutes <> 10"
                                       ).fetchone()
    assert windows_not_default is not None and report["updated"]["priority_window_minutes"] == windows_not_default[0]
    assert report["batches"] >= 3 and not report["dry_run"] and not report["resumed"]
    assert_backfilled(conn)
    lines = read_lines(tmp_path / "rejects.jsonl")
    assert {(line["id"], line["key"], line["reason"]) for line in lines} == expected_sample_lines(template_rows)
    assert len(lines) == sum(report["rejected"].values())
    assert metadata_md5(conn) == before_metadata, "metadata must never change"
    touched = conn.execute("SELECT count(*) FILTER (WHERE updated_at > '2001-01-01T00:00:00Z'), "
                           "count(*) FILTER (WHERE preferred_mechanic_id IS NOT NULL OR priority_notified_at "
                           "IS NOT NULL OR priority_window_minutes <> 10) FROM session_requests").fetchone()
    assert touched is not None and touched[0] == touched[1] == report["rows_updated"], "the trigger fired"


# ---------------------------------------------------------------- hand-written edge values

LIVE = "live"  # placeholder for the id of a live mechanic
UNKNOWN = "00000000-0000-4000-8000-000000000000"

EDGE_VALUES: list[tuple[str, str, Any]] = [
    # (legacy key, JSON text of the value, expected: a reason, or the column value as the rules give it)
    (MECHANIC, '"{live}"', "ok"),
    (MECHANIC, '"{LIVE}"', "ok"),
    (MECHANIC, '"{{{live}}}"', "invalid_uuid"),
    (MECHANIC, '" {live} "', "invalid_uuid"),
    (MECHANIC, '"{live}\\n"', "invalid_uuid"),
    (MECHANIC, '"{nodash}"', "invalid_uuid"),
    (MECHANIC, '"abc"', "invalid_uuid"),
    (MECHANIC, '""', "invalid_uuid"),
    (MECHANIC, "42", "invalid_uuid"),
    (MECHANIC, '["{live}"]', "invalid_uuid"),
    (MECHANIC, f'"{UNKNOWN}"', "unknown_mechanic"),
    (MECHANIC, "null", "absent"),
    (WINDOW, "15", "ok"),
    (WINDOW, '"15"', "ok"),
    (WINDOW, '"0015"', "ok"),
    (WINDOW, "10.0", "ok"),
    (WINDOW, "1e2", "ok"),
    (WINDOW, "1", "ok"),
    (WINDOW, "1440", "ok"),
    (WINDOW, "10", "ok"),
    (WINDOW, "0", "out_of_range"),
    (WINDOW, "-5", "out_of_range"),
    (WINDOW, "1441", "out_of_range"),
    (WINDOW, "99999999999", "out_of_range"),
    (WINDOW, '"99999999999"', "out_of_range"),
    (WINDOW, '"' + "9" * 400 + '"', "out_of_range"),
    (WINDOW, "1e400", "out_of_range"),
    (WINDOW, '"0"', "out_of_range"),
    (WINDOW, "12.5", "invalid_integer"),
    (WINDOW, '"ten"', "invalid_integer"),
    (WINDOW, '""', "invalid_integer"),
    (WINDOW, '"-5"', "invalid_integer"),
    (WINDOW, '"10.0"', "invalid_integer"),
    (WINDOW, '" 10"', "invalid_integer"),
    (WINDOW, '"１０"', "invalid_integer"),
    (WINDOW, '"1e3"', "invalid_integer"),
    (WINDOW, "true", "invalid_integer"),
    (WINDOW, "[10]", "invalid_integer"),
    (WINDOW, '{"minutes": 10}', "invalid_integer"),
    (WINDOW, "null", "absent"),
    (NOTIFIED, '"2025-11-02T01:00:00Z"', "ok"),
    (NOTIFIED, '"2025-11-02T01:00:00+05:30"', "ok"),
    (NOTIFIED, '"2025-11-02T01:00:00+0530"', "ok"),
    (NOTIFIED, '"2025-11-02T01:00:00+05"', "ok"),
    (NOTIFIED, '"2025-11-02T01:00:00-03:00"', "ok"),
    (NOTIFIED, '"2025-11-02T01:00:00"', "ok"),
    (NOTIFIED, '"2025-11-02T01:00"', "ok"),
    (NOTIFIED, '"2025-11-02T01:00Z"', "ok"),
    (NOTIFIED, '"2025-11-02T01:00:00.123456Z"', "ok"),
    (NOTIFIED, '"2025-11-02T01:00:00.5"', "ok"),
    (NOTIFIED, '"2024-02-29T12:00:00Z"', "ok"),
    (NOTIFIED, '"2000-02-29T12:00:00Z"', "ok"),
    (NOTIFIED, '"2025-02-30T10:00:00Z"', "invalid_timestamp"),
    (NOTIFIED, '"2023-02-29T10:00:00Z"', "invalid_timestamp"),
    (NOTIFIED, '"1900-02-29T10:00:00Z"', "invalid_timestamp"),
    (NOTIFIED, '"2025-04-31T10:00:00Z"', "invalid_timestamp"),
    (NOTIFIED, '"0000-01-01T00:00:00Z"', "invalid_timestamp"),
    (NOTIFIED, '"2025-11-02T24:00:00Z"', "invalid_timestamp"),
    (NOTIFIED, '"2025-11-02T01:60:00Z"', "invalid_timestamp"),
    (NOTIFIED, '"2025-11-02T01:00:60Z"', "invalid_timestamp"),
    (NOTIFIED, '"2025-11-02T01:00:00.1234567Z"', "invalid_timestamp"),
    (NOTIFIED, '"2025-11-02T01:00:00+16:00"', "invalid_timestamp"),
    (NOTIFIED, '"2025-11-02T01:00:00+05:3"', "invalid_timestamp"),
    (NOTIFIED, '"2025-11-02 01:00:00Z"', "invalid_timestamp"),
    (NOTIFIED, '"2025-11-02t01:00:00z"', "invalid_timestamp"),
    (NOTIFIED, '"2025-11-02"', "invalid_timestamp"),
    (NOTIFIED, '" 2025-11-02T01:00:00Z"', "invalid_timestamp"),
    (NOTIFIED, '"now"', "invalid_timestamp"),
    (NOTIFIED, '"yesterday"', "invalid_timestamp"),
    (NOTIFIED, '"infinity"', "invalid_timestamp"),
    (NOTIFIED, '"epoch"', "invalid_timestamp"),
    (NOTIFIED, '"1730000000"', "invalid_timestamp"),
    (NOTIFIED, "1730000000", "invalid_timestamp"),
    (NOTIFIED, '"Sat Nov 02 2025 01:00:00 GMT+0000 (Coordinated Universal Time)"', "invalid_timestamp"),
    (NOTIFIED, "true", "invalid_timestamp"),
    (NOTIFIED, "null", "absent"),
]

NOT_OBJECT = ['["priority_mechanic_id"]', '"priority_window_minutes=15"', "15", "null"]


def test_edge_values_have_exact_outcomes(conn, tmp_path):
    migrate(conn)
    live = conn.execute("SELECT id::text FROM mechanics ORDER BY id LIMIT 1").fetchone()[0]
    ids: dict[str, tuple[str, str, Any]] = {}
    for key, text, expected in EDGE_VALUES:
        value = (text.replace("{{{live}}}", "{" + live + "}").replace("{live}", live)
                 .replace("{LIVE}", live.upper()).replace("{nodash}", live.replace("-", "")))
        row = conn.execute("INSERT INTO session_requests (customer_id, metadata) "
                           "VALUES (gen_random_uuid(), jsonb_build_object(%s::text, %s::jsonb)) RETURNING id::text",
                           (key, value)).fetchone()
        ids[row[0]] = (key, value, expected)
    not_object = [conn.execute("INSERT INTO session_requests (customer_id, metadata) "
                               "VALUES (gen_random_uuid(), %s::jsonb) RETURNING id::text", (text,)).fetchone()[0]
                  for text in NOT_OBJECT]

    run(conn, rejects_path=tmp_path / "rejects.jsonl")

    lines = {(line["id"], line["key"]): line for line in read_lines(tmp_path / "rejects.jsonl")}
    state = table_state(conn)
    for row_id, (key, value, expected) in ids.items():
        outcome, column_value = expect(key, loads(value), {live})
        assert outcome == expected, f"the test's own rules disagree on {key}={value}"
        line = lines.get((row_id, key))
        if expected in ("ok", "absent"):
            assert line is None, (key, value, line)
            got = state[row_id][1:][list(COLUMN).index(key)]
            default = 10 if key == WINDOW else None
            assert got == (column_value if column_value is not None else default), (key, value, got)
        else:
            assert line is not None and line["reason"] == expected, (key, value, line)
            assert exact(line["value"]) == loads(value)
            assert state[row_id][1:] == (None, 10, None), (key, value)
    for row_id, text in zip(not_object, NOT_OBJECT, strict=True):
        line = lines[(row_id, None)]
        assert line["reason"] == "metadata_not_object" and exact(line["value"]) == loads(text)
        assert [k for (i, k) in lines if i == row_id] == [None], "one line for the whole row"


# ---------------------------------------------------------------- modes


def test_dry_run_counts_equal_the_real_run_and_change_nothing(conn, tmp_path):
    migrate(conn)
    before = columns_md5(conn), metadata_md5(conn)
    dry = run(conn, dry_run=True, rejects_path=tmp_path / "dry.jsonl", batch_size=500)
    assert (columns_md5(conn), metadata_md5(conn)) == before, "a dry run changed the table"
    assert conn.execute("SELECT to_regclass('favmigrate.backfill_checkpoint')").fetchone()[0] is None
    real = run(conn, rejects_path=tmp_path / "real.jsonl", batch_size=500)
    for field in ("scanned", "updated", "rows_updated", "rejected", "conflicts"):
        assert dry[field] == real[field], field
    assert dry["dry_run"] and sum(dry["updated"].values()) > 0
    assert sorted(map(json.dumps, read_lines(tmp_path / "dry.jsonl"))) == \
        sorted(map(json.dumps, read_lines(tmp_path / "real.jsonl")))


def test_rerun_after_completion_changes_nothing(conn, tmp_path):
    migrate(conn)
    first = run(conn)
    state = columns_md5(conn)
    second = run(conn, rejects_path=tmp_path / "again.jsonl")
    assert columns_md5(conn) == state
    assert second["rows_updated"] == 0 and set(second["updated"].values()) == {0}
    assert second["rejected"] == first["rejected"] and second["conflicts"] == 0
    assert len(read_lines(tmp_path / "again.jsonl")) == sum(first["rejected"].values())


def test_conflicts_are_kept_unless_overwrite(conn, tmp_path):
    migrate(conn)
    # rows of the sample's full_valid case (slots 0..199): every legacy value is valid
    candidates = [sample_row_id(n) for n in range(1, 200)]
    other, chosen = None, []
    for row_id in candidates:
        metadata = conn.execute("SELECT metadata FROM session_requests WHERE id = %s", (row_id,)).fetchone()[0]
        if metadata[WINDOW] not in (10, 45) and len(chosen) < 5:
            chosen.append(row_id)
    other = conn.execute("SELECT id::text FROM mechanics WHERE id::text <> ALL(SELECT metadata ->> %s FROM "
                         "session_requests WHERE id = ANY(%s::uuid[])) LIMIT 1", (MECHANIC, chosen)).fetchone()[0]
    assert len(chosen) == 5
    conn.execute("UPDATE session_requests SET preferred_mechanic_id = %s, priority_window_minutes = 45, "
                 "priority_notified_at = '1999-12-31T00:00:00Z' WHERE id = ANY(%s::uuid[])", (other, chosen))
    initial = table_state(conn)

    kept = run(conn, rejects_path=tmp_path / "rejects.jsonl")
    assert kept["conflicts"] == 15
    assert_backfilled(conn, initial={k: v for k, v in initial.items() if k in chosen})
    conflicts = [line for line in read_lines(tmp_path / "rejects.jsonl") if line["reason"] == "conflict"]
    assert {(line["id"], line["key"]) for line in conflicts} == {(i, k) for i in chosen for k in COLUMN}
    sample = next(line for line in conflicts if line["key"] == WINDOW)
    assert sample["current"] == 45 and sample["column"] == "priority_window_minutes"

    replaced = run(conn, overwrite=True)
    assert replaced["conflicts"] == 0 and replaced["rows_updated"] == 5
    assert_backfilled(conn)


def test_scan_by_primary_key_gives_the_same_table(conn, tmp_path):
    migrate(conn)
    report = run(conn, scan=Scan.PK, batch_size=300, rejects_path=tmp_path / "pk.jsonl")
    assert report["scan"] == "pk" and report["batches"] >= 7
    assert report["scanned"] == conn.execute("SELECT count(*) FROM session_requests").fetchone()[0]
    assert_backfilled(conn)


def test_refuses_before_apply(db_dsn):
    result = cli("backfill", "--dsn", db_dsn)
    assert result.exit_code == ExitCode.PRECONDITION
    assert "favmigrate apply" in result.stderr
    with psycopg.connect(db_dsn, autocommit=True) as conn, pytest.raises(PreflightFailed):
        backfill(conn, target(), BackfillOptions(dry_run=True))


def test_cli_json_summary_and_rejects_file(db_dsn, template_rows, tmp_path):
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        migrate(conn)
    rejects = tmp_path / "rejects.jsonl"
    result = cli("backfill", "--dsn", db_dsn, "--format", "json", "--rejects", str(rejects), "--batch-size", "800")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert {"scanned", "updated", "rejected", "conflicts", "batches", "elapsed_s"} <= data.keys()
    assert data["scanned"] == template_rows and data["rejected"] == expected_sample_rejects(template_rows)
    assert set(data["updated"]) == set(COLUMN.values())
    assert data["triggers"][0]["name"] == "session_requests_set_updated_at" and data["triggers"][0]["fires"]
    assert "session_requests_set_updated_at" in result.stderr, "the triggers that fire are announced"
    assert len(read_lines(rejects)) == sum(data["rejected"].values()) + data["conflicts"]
    again = cli("backfill", "--dsn", db_dsn, "--format", "json")
    assert again.exit_code == 0 and again.json()["rows_updated"] == 0


# ---------------------------------------------------------------- resume, locks, concurrency


def test_resume_after_killed_connection_gives_the_uninterrupted_table(db_dsn, conn, pg_server, admin_conn):
    migrate(conn)
    reference = f"ref_{uuid.uuid4().hex}"
    reference_dsn = pg_server.create_database(reference, template=TEMPLATE_DB)
    try:
        with psycopg.connect(reference_dsn, autocommit=True) as ref:
            migrate(ref)
            uninterrupted = run(ref, batch_size=200)
            expected_state = columns_without_updated_at(ref)

        victim = psycopg.connect(db_dsn, autocommit=True)
        pid = victim.info.backend_pid
        seen = []

        def kill_after_three(event):
            if event.kind is BackfillEventKind.BATCH:
                seen.append(event)
                if len(seen) == 3:
                    admin_conn.execute("SELECT pg_terminate_backend(%s)", (pid,))

        with pytest.raises(Interrupted) as stopped:
            backfill(victim, target(), BackfillOptions(batch_size=200), on_event=kill_after_three)
        assert stopped.value.exit_code == ExitCode.INTERRUPTED
        victim.close()
        saved = conn.execute("SELECT phase, (counters ->> 'batches')::int FROM favmigrate.backfill_checkpoint"
                             ).fetchone()
        assert saved == ("main", 3), "the checkpoint is the last committed batch"

        resumed = run(conn, batch_size=200)
        assert resumed["resumed"]
        assert columns_without_updated_at(conn) == expected_state
        for field in ("scanned", "updated", "rows_updated", "rejected", "conflicts"):
            assert resumed[field] == uninterrupted[field], field
        assert_backfilled(conn)
    finally:
        pg_server.drop_database(reference)


def db_dsn_dbname(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    return str(conninfo_to_dict(dsn)["dbname"])


def columns_without_updated_at(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT md5(string_agg(concat_ws('|', id, preferred_mechanic_id, priority_window_minutes, "
                       "priority_notified_at), ',' ORDER BY id)) FROM session_requests").fetchone()
    return str(row[0])


def test_restart_starts_a_new_pass(conn):
    migrate(conn)
    conn_pid = conn.info.backend_pid
    events = []

    def stop_after_two(event):
        if event.kind is BackfillEventKind.BATCH:
            events.append(event)
            if len(events) == 2:
                raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        backfill(conn, target(), BackfillOptions(batch_size=300), on_event=stop_after_two)
    assert conn.info.backend_pid == conn_pid and not conn.broken
    restarted = run(conn, batch_size=300, restart=True)
    assert not restarted["resumed"] and restarted["batches"] > 2
    assert_backfilled(conn)


def test_another_run_holding_the_lock_is_reported(conn, db_dsn):
    migrate(conn)
    from favmigrate.db import run_lock

    with (psycopg.connect(db_dsn, autocommit=True) as other, run_lock(other, target().lock_name, wait_s=0),
          pytest.raises(LockHeld)):
        backfill(conn, target(), BackfillOptions(limits=SessionLimits(lock_wait_s=0.2)))


def test_concurrent_writer_ends_consistent(conn, db_dsn):
    """Older application code keeps inserting legacy rows and adding metadata while the backfill runs."""
    migrate(conn)
    live = sorted(live_mechanics(conn))
    stop = threading.Event()
    last_write: dict[str, float] = {}  # row id -> when our last write to it had committed
    inserted: list[str] = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with psycopg.connect(db_dsn, autocommit=True) as app:
                n = 0
                while not stop.is_set():
                    n += 1
                    metadata = {"source": "web", MECHANIC: live[n % len(live)].upper(),
                                WINDOW: "soon" if n % 7 == 0 else str(5 + n % 40)}
                    row = app.execute("INSERT INTO session_requests (customer_id, metadata) VALUES "
                                      "(gen_random_uuid(), %s) RETURNING id::text", (Jsonb(metadata),)).fetchone()
                    last_write[row[0]] = time.monotonic()
                    inserted.append(row[0])
                    # later, the same code notes (once per request) when the mechanic was notified
                    if n % 2 == 0:
                        notified = inserted[n // 2]
                        app.execute("UPDATE session_requests SET metadata = metadata || jsonb_build_object(%s::text, "
                                    "%s::text) WHERE id = %s", (NOTIFIED, f"2025-10-{1 + n % 28:02d}T08:00:00+02:00",
                                                                 notified))
                        last_write[notified] = time.monotonic()
                    # and other code touches any request
                    touched = app.execute("UPDATE session_requests SET status = 'cancelled' WHERE id = "
                                          "(SELECT id FROM session_requests ORDER BY random() LIMIT 1) "
                                          "RETURNING id::text").fetchone()
                    last_write[touched[0]] = time.monotonic()
                    time.sleep(0.002)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    catch_up_started: list[float] = []

    def note_phase(event):
        if event.kind is BackfillEventKind.PHASE:
            catch_up_started.append(time.monotonic())

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        while len(inserted) < 20:
            time.sleep(0.01)
        report = backfill(conn, target(), BackfillOptions(batch_size=150, sleep_s=0.01), on_event=note_phase)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not errors, errors
    assert len(inserted) > 40 and catch_up_started
    assert report.counters.catch_up_updated > 0, "rows written during the main pass were caught up"
    # every row last written before the catch-up pass began holds what the rules give
    live_now = live_mechanics(conn)
    for row_id, (metadata, mechanic, window, notified) in table_state(conn).items():
        if last_write.get(row_id, 0.0) >= catch_up_started[0]:
            continue
        expected = expected_row(exact(metadata), live_now)
        assert (mechanic, window, notified) == (expected[MECHANIC][1], expected[WINDOW][1] or 10,
                                                expected[NOTIFIED][1]), (row_id, metadata)
    # what the writer did afterwards is picked up by the next run
    run(conn)
    assert_backfilled(conn)


def test_disable_triggers_leaves_updated_at_alone(conn):
    migrate(conn)
    set_updated_at_quietly(conn)
    report = run(conn, disable_triggers=True)
    assert report["triggers_disabled"] and report["rows_updated"] > 0
    assert not report["triggers"][0]["fires"]
    changed = conn.execute("SELECT count(*) FROM session_requests WHERE updated_at <> '2001-01-01T00:00:00Z'"
                           ).fetchone()[0]
    assert changed == 0
    assert_backfilled(conn)
    assert conn.execute("SHOW session_replication_role").fetchone()[0] == "origin"


def test_disable_triggers_needs_the_privilege(conn, db_dsn, server_version_num):
    migrate(conn)
    role = f"backfiller_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw' BYPASSRLS").format(sql.Identifier(role)))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {r}; GRANT SELECT, UPDATE ON ALL TABLES IN SCHEMA public "
                         "TO {r}; GRANT USAGE, CREATE ON SCHEMA favmigrate TO {r}").format(r=sql.Identifier(role)))
    dsn = make_conninfo(db_dsn, user=role, password="pw")
    try:
        refused = cli("backfill", "--dsn", dsn, "--disable-triggers")
        assert refused.exit_code == ExitCode.PRECONDITION, refused.stderr
        assert "session_replication_role" in refused.stderr
        assert conn.execute("SELECT count(*) FROM session_requests WHERE preferred_mechanic_id IS NOT NULL"
                            ).fetchone()[0] == 0, "nothing may change when the preflight refuses"
        if server_version_num >= 150000:
            conn.execute(sql.SQL("GRANT SET ON PARAMETER session_replication_role TO {}").format(sql.Identifier(role)))
            granted = cli("backfill", "--dsn", dsn, "--disable-triggers", "--format", "json")
            assert granted.exit_code == 0, granted.stderr
            assert granted.json()["triggers_disabled"]
        plain = cli("backfill", "--dsn", dsn, "--format", "json")
        assert plain.exit_code == 0, plain.stderr
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {r}; DROP ROLE {r}").format(r=sql.Identifier(role)))


def test_phase_events_and_pauses(conn):
    migrate(conn)
    kinds: list[str] = []
    report = backfill(conn, target(), BackfillOptions(batch_size=500, max_rows_per_second=20_000,
                                                      max_replica_lag_s=5),
                      on_event=lambda event: kinds.append(event.kind.value))
    assert kinds[0] == "plan" and kinds[1] == "start" and kinds[-1] == "done" and "phase" in kinds
    assert report.elapsed_s >= 2000 / 20_000 * 0.9
    assert Phase.DONE.value == "done"


def test_verify_tells_rejected_values_from_rows_still_waiting(conn, db_dsn):
    from clihelp import cli

    migrate(conn)
    before = {c["id"]: c for c in cli("verify", "--dsn", db_dsn, "--format", "json").json()["checks"]}
    waiting = before["data:metadata:backfill-pending"]
    assert waiting["status"] == "warn" and waiting["hint"] == "run `favmigrate backfill`"
    run(conn)
    after = {c["id"]: c for c in cli("verify", "--dsn", db_dsn, "--format", "json").json()["checks"]}
    rejected = after["data:metadata:backfill-pending"]
    assert rejected["status"] == "warn" and "rejected" in rejected["message"]
    assert "--rejects" in rejected["hint"]
    pending = int(rejected["actual"].split()[0])
    assert 0 < pending < int(waiting["actual"].split()[0])
    assert rejected["actual"] == f"{pending} ({pending} rejected)"


# ---------------------------------------------------------------- values the tool only carries, the rejects file


def nested_array(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [1_200, 3_000])
def test_deeply_nested_values_reach_the_rejects_file_whole(db_dsn, conn, tmp_path, depth):
    migrate(conn)
    deep = nested_array(depth)
    window_row = conn.execute("INSERT INTO session_requests (customer_id, metadata) VALUES (gen_random_uuid(), "
                              "jsonb_build_object(%s::text, %s::jsonb)) RETURNING id::text",
                              (WINDOW, deep)).fetchone()[0]
    array_row = conn.execute("INSERT INTO session_requests (customer_id, metadata) VALUES (gen_random_uuid(), "
                             "%s::jsonb) RETURNING id::text", (deep,)).fetchone()[0]
    for args in (["--dry-run"], []):
        rejects = tmp_path / f"rejects{len(args)}.jsonl"
        result = cli("backfill", "--dsn", db_dsn, "--format", "json", "--rejects", str(rejects), *args)
        assert result.exit_code == 0, result.stderr
        data = result.json()
        lines = rejects.read_text().splitlines()
        assert len(lines) == data["rejected_total"] + data["conflicts"], "every reject is in the file"
        # compared as text: the test itself must not decode a value nested this deep either
        assert (f'{{"id": "{window_row}", "key": "{WINDOW}", "value": {deep}, "reason": "invalid_integer"}}'
                in lines)
        assert f'{{"id": "{array_row}", "key": null, "value": {deep}, "reason": "metadata_not_object"}}' in lines
        shallow = [json.loads(line) for line in lines if line.count("[") < 100]
        assert len(shallow) == len(lines) - 2


def test_an_interrupted_run_leaves_the_previous_rejects_file_as_it_was(conn, tmp_path):
    migrate(conn)
    rejects = tmp_path / "rejects.jsonl"
    rejects.write_text("previous\n")

    def stop_after_two(event):
        if event.kind is BackfillEventKind.BATCH and event.batches == 2:
            raise KeyboardInterrupt

    for dry_run in (True, False):
        with pytest.raises(Interrupted):
            backfill(conn, target(), BackfillOptions(batch_size=300, rejects_path=rejects, dry_run=dry_run),
                     on_event=stop_after_two)
        assert rejects.read_text() == "previous\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["rejects.jsonl"], "no temporary file is left"
    report = run(conn, batch_size=300, rejects_path=rejects)
    assert len(read_lines(rejects)) == report["rejected_total"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rejects.jsonl"]


def test_a_rejects_path_that_cannot_be_written_refuses_before_the_first_batch(db_dsn, conn, tmp_path):
    migrate(conn)
    before = columns_md5(conn)
    (tmp_path / "a-file").write_text("")
    for path in (tmp_path / "missing" / "rejects.jsonl", tmp_path / "a-file" / "rejects.jsonl"):
        result = cli("backfill", "--dsn", db_dsn, "--rejects", str(path))
        assert result.exit_code == ExitCode.PRECONDITION, result.stderr
        assert "cannot write the rejects file" in result.stderr and "nothing was changed" in result.stderr
        assert columns_md5(conn) == before


def test_a_rejects_file_that_fails_after_the_batches_exits_3_with_what_was_done(db_dsn, conn):
    migrate(conn)
    result = cli("backfill", "--dsn", db_dsn, "--format", "json", "--rejects", "/dev/full")
    assert result.exit_code == ExitCode.INTERRUPTED, result.stderr
    data = result.json()
    assert not data["ok"] and data["rows_updated"] > 0 and data["rejects_file"] is None
    assert "/dev/full could not be written" in data["rejects_error"]
    assert "could not be written" in result.stderr, "the failure is also told on stderr"
    assert any("run `favmigrate backfill --rejects FILE` again" in note for note in data["notes"])
    assert_backfilled(conn)
    again = cli("backfill", "--dsn", db_dsn, "--format", "json")
    assert again.exit_code == 0 and again.json()["rows_updated"] == 0


def test_backfill_ends_with_analyze_so_pg_stats_reflects_the_data(db_dsn, conn):
    migrate(conn)  # apply analyses the columns while they are still empty
    stats = "SELECT attname, null_frac FROM pg_stats WHERE tablename = 'session_requests' AND attname = ANY(%s)"
    nullable = [COLUMN[MECHANIC], COLUMN[NOTIFIED]]
    assert dict(conn.execute(stats, (nullable,)).fetchall()) == dict.fromkeys(nullable, 1.0)
    result = cli("backfill", "--dsn", db_dsn, "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["analyzed"] and any(note.startswith("planner statistics refreshed") for note in data["notes"])
    assert "ANALYZE" in result.stderr
    real = conn.execute("SELECT avg((preferred_mechanic_id IS NULL)::int)::float8, "
                        "avg((priority_notified_at IS NULL)::int)::float8 FROM session_requests").fetchone()
    after = dict(conn.execute(stats, (nullable,)).fetchall())
    assert real[0] < 0.9 and real[1] < 0.9
    assert after == pytest.approx({COLUMN[MECHANIC]: real[0], COLUMN[NOTIFIED]: real[1]}, abs=0.02)
    common = conn.execute("SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'session_requests' "
                          "AND attname = 'priority_window_minutes'").fetchone()[0]
    assert common != "{10}", "the window's statistics still describe the column as all default"


# ---------------------------------------------------------------- rows other transactions hold locked


def hold_row_lock(db_dsn: str, row_id: str) -> psycopg.Connection[Any]:
    holder = psycopg.connect(db_dsn, application_name="app-holding-a-row")
    holder.execute("SELECT 1 FROM session_requests WHERE id = %s FOR UPDATE", (row_id,))
    return holder


def test_a_row_locked_through_the_run_is_skipped_reported_and_copied_by_the_next_run(conn, db_dsn):
    migrate(conn)
    locked = sample_row_id(1)  # full_valid: every legacy value copies
    holder = hold_row_lock(db_dsn, locked)
    events: list[Any] = []
    try:
        report = backfill(conn, target(), BackfillOptions(batch_size=300, limits=SessionLimits(
            lock_timeout_s=0.2, retries=2, statement_timeout_s=60)), on_event=events.append)
    finally:
        holder.close()
    data = report.to_dict()
    assert report.exit_code == ExitCode.INTERRUPTED and not data["ok"]
    assert data["locked_rows"] == {"skipped": 1, "still_locked": 1, "still_locked_ids": [locked]}
    assert any(f"({locked})" in note and "run `favmigrate backfill` again" in note for note in data["notes"])
    kinds = [event.kind for event in events]
    assert BackfillEventKind.SKIP in kinds and kinds.count(BackfillEventKind.RETRY) == 2
    assert data["analyzed"], "the run went on to its end"
    assert table_state(conn)[locked][1:] == (None, 10, None)
    others = {k: v for k, v in table_state(conn).items() if k != locked}
    assert sum(1 for v in others.values() if v[1] is not None) == data["updated"]["preferred_mechanic_id"]

    assert conn.execute("SELECT phase, position FROM favmigrate.backfill_checkpoint").fetchone() == (
        "locked", json.dumps([locked]))

    rerun = backfill(conn, target(), BackfillOptions())
    again = rerun.to_dict()
    # a resumed run reports the whole pass: the first run's rows and the one copied now
    assert again["ok"] and again["rows_updated"] == data["rows_updated"] + 1 and again["locked_rows"]["skipped"] == 0
    # the next run retries that row alone instead of walking the table again
    assert again["resumed"] and rerun.scanned_this_run == 0, again
    assert conn.execute("SELECT phase FROM favmigrate.backfill_checkpoint").fetchone()[0] == "done"
    assert_backfilled(conn)


def test_a_row_released_before_the_end_is_copied_by_the_retry(conn, db_dsn):
    migrate(conn)
    locked = sample_row_id(1)
    holder = hold_row_lock(db_dsn, locked)

    def release_when_retrying(event):
        if event.kind is BackfillEventKind.PHASE and event.message.startswith("retrying"):
            holder.close()

    try:
        report = backfill(conn, target(), BackfillOptions(batch_size=300), on_event=release_when_retrying)
    finally:
        holder.close()
    data = report.to_dict()
    assert report.exit_code == ExitCode.OK, data
    assert data["locked_rows"] == {"skipped": 1, "still_locked": 0, "still_locked_ids": []}
    assert any("skipped and retried at the end" in note for note in data["notes"])
    assert_backfilled(conn)


@pytest.mark.parametrize("scan", [Scan.CTID, Scan.PK])
def test_the_catch_up_pass_reads_only_rows_written_since_the_pass_began(scan):
    # every older row is where the main pass read it: the catch-up pass has no reason to judge it again
    older, newer = "age(t.xmin) > age(%(pass_xid)s::xid)", "age(t.xmin) <= age(%(pass_xid)s::xid)"
    statement = partial(batch_statement, Target(load_spec()), scan=scan)
    main, catch_up = as_text(statement(phase=Phase.MAIN)), as_text(statement(phase=Phase.CATCH_UP))
    assert older in main and newer not in main
    assert newer in catch_up and older not in catch_up
    skipped = as_text(statement(phase=Phase.DONE, by_ids=True))  # rows a batch skipped as locked: any age
    assert older not in skipped and newer not in skipped


def test_a_server_error_in_a_batch_is_named_not_taken_for_a_lost_connection(conn, db_dsn):
    """psycopg files some server errors (54000 program_limit_exceeded) as OperationalError: the connection is
    fine, so the message names the error, not a lost connection."""
    assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0
    conn.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                 "$$BEGIN RAISE EXCEPTION 'too wide' USING ERRCODE = '54000'; END$$")
    conn.execute("CREATE TRIGGER refuse BEFORE UPDATE ON session_requests FOR EACH ROW EXECUTE FUNCTION refuse()")
    result = cli("backfill", "--dsn", db_dsn, "-q")
    assert result.exit_code == 3, result.stderr
    assert "a backfill batch failed: too wide (SQLSTATE 54000)" in result.stderr
    assert "lost the connection" not in result.stderr
