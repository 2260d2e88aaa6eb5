"""explain: the query files, plan reading, verdicts on a large and a tiny table, refusals and exit codes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import psycopg
import pytest
from prioritydata import add_mechanic, apply, bulk_priority_rows, target
from psycopg import sql

from clihelp import cli
from favmigrate.catalog import IndexInfo, Snapshot
from favmigrate.errors import PreflightFailed, UsageError
from favmigrate.explain import ExplainOptions, PlanMode, duplicate_index_warnings, explain, read_plan
from favmigrate.queries import load_queries, parse_query
from favmigrate.render import plan_tree
from favmigrate.resources import verify_dir
from favmigrate.sample import load_sample
from favmigrate.sandbox import Server

TIMEOUT_IDX = "session_requests_priority_timeout_idx"
ANALYTICS_IDX = "session_requests_priority_analytics_idx"
MECHANIC_IDX = "session_requests_preferred_mechanic_idx"
BULK_ROWS = 60_000


# ---------------------------------------------------------------- without a database


def test_shipped_queries_and_spec_indexes_agree():
    queries = load_queries()
    assert [q.id for q in queries] == ["preferred-mechanic-requests", "priority-analytics", "priority-timeouts"]
    spec_indexes = {index.name for index in target().spec.indexes}
    expected = {name for query in queries for name in query.expects}
    assert expected <= spec_indexes, "a query expects an index the migration does not create"
    assert {q.expected_index for q in queries} == spec_indexes, "an index of the migration has no query"
    for query in queries:
        query.statement(target())  # one statement each, every placeholder known


def test_parse_query_header():
    query = parse_query("one_mechanic.sql", (
        "-- title: One mechanic\n"
        "-- expects: a_idx | b_idx\n"
        "-- param: mechanic_id uuid = (SELECT 1)\n"
        "-- param: since timestamptz\n"
        "-- just prose: ignored\n"
        "SELECT 1 FROM {table} WHERE x = %(mechanic_id)s\n"
        "-- expects: not_in_the_header\n"
    ))
    assert (query.id, query.title, query.expects, query.expected_index) == (
        "one-mechanic", "One mechanic", ("a_idx", "b_idx"), "a_idx")
    assert [(p.name, p.type, p.default) for p in query.params] == [
        ("mechanic_id", "uuid", "(SELECT 1)"), ("since", "timestamptz", None)]


@pytest.mark.parametrize("text, message", [
    ("SELECT 1", "names no index"),
    ("-- expects: a_idx\n-- param: 1bad\nSELECT 1", "malformed param"),
])
def test_parse_query_refuses(text, message):
    with pytest.raises(UsageError, match=message):
        parse_query("q.sql", text)


def test_a_query_file_must_hold_one_statement():
    query = parse_query("two.sql", "-- expects: a_idx\nSELECT 1; SELECT 2;")
    with pytest.raises(UsageError, match="exactly one statement"):
        query.statement(target())


PLAN = [{
    "Plan": {
        "Node Type": "Limit", "Actual Rows": 5, "Actual Loops": 1, "Shared Hit Blocks": 7, "Shared Read Blocks": 2,
        "Plans": [{
            "Node Type": "Bitmap Heap Scan", "Relation Name": "session_requests", "Actual Rows": 5,
            "Recheck Cond": "(status = 'pending')",
            "Plans": [{"Node Type": "Bitmap Index Scan", "Index Name": TIMEOUT_IDX, "Actual Rows": 5}],
        }, {
            "Node Type": "Index Scan", "Index Name": "mechanics_pkey", "Relation Name": "mechanics",
        }, {
            "Node Type": "Seq Scan", "Relation Name": "session_requests", "Parent Relationship": "SubPlan",
            "Subplan Name": "SubPlan 1",
        }],
    },
    "Planning Time": 0.1, "Execution Time": 1.5,
}]


def test_read_plan_keeps_the_tables_indexes_and_seq_scans():
    run = read_plan(PLAN, PlanMode.NATURAL, table="session_requests",
                    table_indexes=frozenset({TIMEOUT_IDX, "session_requests_pkey"}))
    assert run.indexes == (TIMEOUT_IDX,) and run.seq_scan
    assert (run.rows, run.shared_hit, run.shared_read, run.execution_ms) == (5, 7, 2, 1.5)
    assert run.access() == f"{TIMEOUT_IDX}, Seq Scan"
    lines = plan_tree(PLAN[0])
    assert lines[0].startswith("Limit (actual rows=5")
    assert any(f"Bitmap Index Scan using {TIMEOUT_IDX}" in line for line in lines)
    assert any("SubPlan 1: Seq Scan on session_requests" in line for line in lines)
    assert "Recheck Cond: (status = 'pending')" in "\n".join(lines)


def _index(name: str, columns: tuple[str, ...], predicate: str | None, *, unique: bool = False) -> IndexInfo:
    return IndexInfo(name, columns, predicate, unique, "btree", True, True, True, "")


def test_duplicate_index_needs_a_shared_prefix_and_the_same_predicate():
    snapshot = Snapshot(150000, True, True, indexes={
        TIMEOUT_IDX: _index(TIMEOUT_IDX, ("priority_notified_at", "status"),
                            "(priority_notified_at IS NOT NULL) AND (status = 'pending'::session_request_status)"),
        "dup_prefix": _index("dup_prefix", ("priority_notified_at",),
                             "status = 'pending' AND priority_notified_at IS NOT NULL"),
        "other_predicate": _index("other_predicate", ("priority_notified_at",), None),
        "unique_one": _index("unique_one", ("preferred_mechanic_id",), "preferred_mechanic_id IS NOT NULL",
                             unique=True),
        "wider": _index("wider", ("preferred_mechanic_id", "created_at"), "preferred_mechanic_id IS NOT NULL"),
    })
    found = {(w.id, w.status.value) for w in duplicate_index_warnings(target(), snapshot)}
    # "wider" starts with the single-column index's column; the composite one differs in its 2nd column
    assert found == {("duplicate-index:dup_prefix", "warn"), ("duplicate-index:wider", "warn")}


# ---------------------------------------------------------------- on PostgreSQL

def _database_from_template(pg_server: Server) -> Iterator[str]:
    name = f"test_explain_{uuid.uuid4().hex}"
    try:
        yield pg_server.create_database(name, template="favmigrate_template")
    finally:
        pg_server.drop_database(name)


@pytest.fixture(scope="module")
def big_dsn(pg_server, template_summary) -> Iterator[str]:
    """The sample (2000 requests) with the migration applied, plus 60,000 requests of which the newest
    3,000 have a preferred mechanic. Shared by the tests that only read it."""
    for dsn in _database_from_template(pg_server):
        with psycopg.connect(dsn, autocommit=True) as conn:
            apply(conn)
            bulk_priority_rows(conn, BULK_ROWS)
        yield dsn


@pytest.fixture
def tiny(empty_db_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """The sample with 30 requests and the migration applied; all have one preferred mechanic, 10 are
    pending and were notified an hour ago. Vacuumed and analyzed."""
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        load_sample(conn, rows=30)
        apply(conn)
        mechanic = add_mechanic(conn, "Tia", "Tiny")
        conn.execute("UPDATE session_requests SET preferred_mechanic_id = %s, priority_notified_at = now() - "
                     "interval '1 hour', status = (CASE WHEN n <= 10 THEN 'pending' "
                     "ELSE 'accepted' END)::session_request_status FROM (SELECT id AS rid, row_number() OVER "
                     "(ORDER BY id) AS n FROM session_requests) AS r WHERE r.rid = id", (mechanic,))
        conn.execute("VACUUM ANALYZE session_requests")
        yield conn


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder


def _shipped(folder: Path, *names: str) -> Path:
    for name in names:
        _write(folder, name, verify_dir().joinpath(name).read_text(encoding="utf-8"))
    return folder


@pytest.mark.db
def test_large_table_every_query_uses_its_index(big_dsn):
    with psycopg.connect(big_dsn, autocommit=True) as conn:
        report = explain(conn, target())
    assert report.ok and report.estimated_rows >= BULK_ROWS
    verdicts = {q.query.id: (q.status.value, q.natural.indexes[:1]) for q in report.queries}
    assert verdicts == {
        "priority-timeouts": ("pass", (TIMEOUT_IDX,)),
        "preferred-mechanic-requests": ("pass", (ANALYTICS_IDX,)),
        "priority-analytics": ("pass", (MECHANIC_IDX,)),
    }
    for query in report.queries:
        assert not query.natural.seq_scan and query.forced.indexes
        assert query.natural.execution_ms is not None and query.natural.shared_hit is not None
    timeouts = next(q for q in report.queries if q.query.id == "priority-timeouts")
    # pending: every 50th of the 3,000 notified rows, but the newest was notified a minute ago (in its window)
    assert timeouts.natural.rows == 3_000 // 50 - 1
    mechanic = next(q for q in report.queries if q.query.id == "preferred-mechanic-requests")
    assert mechanic.natural.rows == 50 and mechanic.params["limit"] == 50
    # every index of the migration serves a query, and no other index duplicates one
    assert report.warnings == ()


@pytest.mark.db
def test_cli_json_shape_junit_and_given_param(big_dsn, tmp_path):
    with psycopg.connect(big_dsn) as conn:
        row = conn.execute("SELECT preferred_mechanic_id::text FROM session_requests "
                           "WHERE preferred_mechanic_id IS NOT NULL ORDER BY id LIMIT 1").fetchone()
    assert row is not None
    junit = tmp_path / "explain.xml"
    result = cli("explain", "--dsn", big_dsn, "--format", "json", "--param", f"mechanic_id={row[0]}",
                 "--junit", str(junit), "--show-plan")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert set(data) >= {"ok", "queries", "warnings"} and data["ok"] is True
    for query in data["queries"]:
        assert set(query) >= {"id", "status", "expected_index", "natural", "forced"}
        for mode in ("natural", "forced"):
            run = query[mode]
            assert set(run) >= {"index_used", "execution_ms", "rows", "buffers", "plan"}
            assert run["plan"]["Plan"]["Node Type"]  # the raw plan is included
    mechanic = next(q for q in data["queries"] if q["id"] == "preferred-mechanic-requests")
    assert mechanic["params"]["mechanic_id"] == row[0]
    assert "Index Scan" in result.stderr and "enable_seqscan=off" in result.stderr  # --show-plan, json mode
    suite = ElementTree.parse(junit).getroot()
    assert suite.get("tests") == "3" and suite.get("failures") == "0"
    assert {case.get("name") for case in suite} == {f"query:{q['id']}" for q in data["queries"]}


@pytest.mark.db
def test_cli_text_table(big_dsn):
    result = cli("explain", "--dsn", big_dsn)
    assert result.exit_code == 0, result.stderr
    for text in ("priority-timeouts", TIMEOUT_IDX, "natural ms", "OK: 3 pass, 0 warn, 0 fail"):
        assert text in result.stdout


@pytest.mark.db
def test_an_index_no_query_uses_is_reported_with_the_evidence(big_dsn, tmp_path):
    queries = _shipped(tmp_path / "q", "priority_timeouts.sql", "preferred_mechanic_requests.sql")
    with psycopg.connect(big_dsn, autocommit=True) as conn:
        report = explain(conn, target(), ExplainOptions(queries_dir=queries))
    assert report.ok
    (warning,) = report.warnings
    assert warning.id == f"unused-index:{MECHANIC_IDX}"
    assert f"{ANALYTICS_IDX} has the same leading column(s) (preferred_mechanic_id)" in warning.message
    assert "preferred-mechanic-requests (natural)" in warning.message and "never drops" in warning.hint


@pytest.mark.db
def test_tiny_table_warns_and_says_why(tiny):
    report = explain(tiny, target())
    assert report.ok and report.exit_code == 0
    assert {q.status.value for q in report.queries} == {"warn"}
    for query in report.queries:
        assert query.natural.seq_scan and not query.natural.indexes
        # the forced plan uses the expected index, or another one whose cost barely differs at this size
        assert query.forced.indexes and "~30 estimated rows" in query.message
        if set(query.forced.indexes) & set(query.query.expects):
            assert "small table" in query.message
        else:
            assert "barely differ" in query.message
    result = cli("explain", "--dsn", tiny.info.dsn, "--format", "json")
    assert result.exit_code == 0 and [q["status"] for q in result.json()["queries"]] == ["warn"] * 3


@pytest.mark.db
def test_dropped_index_fails_with_exit_1(tiny, tmp_path):
    tiny.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(TIMEOUT_IDX)))
    junit = tmp_path / "explain.xml"
    result = cli("explain", "--dsn", tiny.info.dsn, "--format", "json", "--junit", str(junit))
    assert result.exit_code == 1
    data = result.json()
    assert data["ok"] is False
    timeouts = next(q for q in data["queries"] if q["id"] == "priority-timeouts")
    assert timeouts["status"] == "fail" and f"index {TIMEOUT_IDX} does not exist" in timeouts["message"]
    assert timeouts["natural"]["index_used"] is None and timeouts["forced"]["index_used"] != TIMEOUT_IDX
    assert ElementTree.parse(junit).getroot().get("failures") == "1"


@pytest.mark.db
def test_index_that_cannot_serve_the_query_fails(tiny, tmp_path):
    queries = _write(tmp_path / "q", "by_customer.sql", (
        f"-- expects: {TIMEOUT_IDX}\n"
        "SELECT id FROM {table} WHERE customer_id = gen_random_uuid()\n"))
    report = explain(tiny, target(), ExplainOptions(queries_dir=queries))
    (query,) = report.queries
    assert query.status.value == "fail" and "neither the natural plan" in query.message
    assert not report.ok and report.exit_code == 1


@pytest.mark.db
def test_existing_duplicate_index_is_reported(tiny):
    tiny.execute("CREATE INDEX sr_notified_pending ON session_requests (priority_notified_at) "
                 "WHERE status = 'pending' AND priority_notified_at IS NOT NULL")
    report = explain(tiny, target())
    duplicates = [w for w in report.warnings if w.id.startswith("duplicate-index:")]
    assert [w.id for w in duplicates] == ["duplicate-index:sr_notified_pending"]
    assert TIMEOUT_IDX in duplicates[0].message


@pytest.mark.db
@pytest.mark.parametrize("statement", [
    "UPDATE {table} SET priority_window_minutes = 7 RETURNING id",
    "WITH gone AS (DELETE FROM {table} RETURNING id) SELECT count(*) FROM gone",
])
def test_a_query_file_that_writes_is_refused(tiny, tmp_path, statement):
    queries = _write(tmp_path / "q", "sneaky.sql", f"-- expects: {TIMEOUT_IDX}\n{statement}\n")
    with pytest.raises(UsageError, match="writes: the server refused it in the READ ONLY transaction"):
        explain(tiny, target(), ExplainOptions(queries_dir=queries))
    result = cli("explain", "--dsn", tiny.info.dsn, "--queries", str(queries), "--format", "json")
    assert result.exit_code == 2 and result.stdout == ""
    assert "sneaky.sql writes" in result.stderr
    counts = tiny.execute("SELECT count(*), count(*) FILTER (WHERE priority_window_minutes = 7) "
                          "FROM session_requests").fetchone()
    assert counts == (30, 0)


@pytest.mark.db
def test_statement_timeout_cancels_and_fails(tiny, tmp_path):
    queries = _write(tmp_path / "q", "slow.sql", (
        f"-- expects: {TIMEOUT_IDX}\n"
        "SELECT sr.id FROM {table} AS sr, pg_sleep(2) WHERE sr.status = 'pending'\n"))
    result = cli("explain", "--dsn", tiny.info.dsn, "--queries", str(queries), "--statement-timeout", "0.2",
                 "--format", "json")
    assert result.exit_code == 1, result.stderr
    (query,) = result.json()["queries"]
    assert query["status"] == "fail" and "statement_timeout" in query["message"]
    assert query["natural"]["plan"] is None and "cancelled" in query["natural"]["error"]


@pytest.mark.db
def test_params_are_checked(tiny, tmp_path):
    dsn = tiny.info.dsn
    unknown = cli("explain", "--dsn", dsn, "--param", "mechanic=1")
    assert unknown.exit_code == 2 and "no query takes the param mechanic" in unknown.stderr
    invalid = cli("explain", "--dsn", dsn, "--param", "mechanic_id=not-a-uuid")
    assert invalid.exit_code == 2 and "--param mechanic_id=not-a-uuid" in invalid.stderr
    malformed = cli("explain", "--dsn", dsn, "--param", "mechanic_id")
    assert malformed.exit_code == 2 and "NAME=VALUE" in malformed.stderr
    queries = _write(tmp_path / "q", "needs.sql", f"-- expects: {TIMEOUT_IDX}\n-- param: since timestamptz\n"
                     "SELECT id FROM {table} WHERE created_at > %(since)s\n")
    with pytest.raises(UsageError, match="needs a value for since"):
        explain(tiny, target(), ExplainOptions(queries_dir=queries))


@pytest.mark.db
def test_before_the_migration_is_applied(conn):
    with pytest.raises(PreflightFailed, match="the migration is not applied"):
        explain(conn, target())
    result = cli("explain", "--dsn", conn.info.dsn)
    assert result.exit_code == 2 and "the migration is not applied" in result.stderr
    assert "favmigrate apply" in result.stderr


@pytest.mark.db
def test_columns_without_statistics_are_reported_until_analyze(conn):
    apply(conn)  # apply analyzes at its end; columns added by hand afterwards would have no statistics
    assert not [w for w in explain(conn, target()).warnings if w.id.startswith("no-statistics:")]
    conn.execute("SELECT pg_stat_reset()")
    conn.execute("DELETE FROM pg_statistic WHERE starelid = 'session_requests'::regclass")
    report = explain(conn, target())
    (warning,) = [w for w in report.warnings if w.id == "no-statistics:session_requests"]
    assert "preferred_mechanic_id, priority_window_minutes, priority_notified_at" in warning.message
    assert warning.hint.startswith('run ANALYZE "public"."session_requests"')
    conn.execute("ANALYZE session_requests")
    assert not [w for w in explain(conn, target()).warnings if w.id.startswith("no-statistics:")]


@pytest.mark.db
def test_statistics_that_the_data_contradicts_are_reported_until_analyze(conn):
    apply(conn)  # analyses the new columns while they are empty
    conn.execute("ALTER TABLE session_requests SET (autovacuum_enabled = false)")  # no ANALYZE behind our back
    assert not [w for w in explain(conn, target()).warnings if w.id.startswith("stale-statistics:")]
    conn.execute("UPDATE session_requests SET preferred_mechanic_id = (SELECT min(id::text)::uuid FROM mechanics), "
                 "priority_window_minutes = 30 WHERE id::text < '8'")  # about half the rows
    report = explain(conn, target())
    (warning,) = [w for w in report.warnings if w.id == "stale-statistics:session_requests"]
    assert "preferred_mechanic_id 100% NULL in pg_stats" in warning.message
    assert "priority_window_minutes 100% 10 in pg_stats" in warning.message
    assert warning.hint.startswith('run ANALYZE "public"."session_requests"')
    assert not [w for w in report.warnings if w.id.startswith("no-statistics:")], "the columns do have statistics"
    conn.execute("ANALYZE session_requests")
    assert not [w for w in explain(conn, target()).warnings if w.id.startswith("stale-statistics:")]
