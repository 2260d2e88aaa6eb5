"""The sample database: documented shape, exact metadata cases, determinism and speed."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from favmigrate.errors import UsageError
from favmigrate.sample import (
    FEATURE_FLAG_KEY,
    LEGACY_KEYS,
    METADATA_CASES,
    SLOTS,
    Outcome,
    SampleAlreadyLoaded,
    SampleSummary,
    expected_case_counts,
    expected_outcome_counts,
    expected_summary,
    load_sample,
)

# Tells each case apart from what its rows hold, independently of the generator's SQL.
CLASSIFY = """
SELECT CASE
    WHEN jsonb_typeof(metadata) = 'array' THEN 'metadata_array'
    WHEN jsonb_typeof(metadata) = 'string' THEN 'metadata_string'
    WHEN jsonb_typeof(metadata) = 'number' THEN 'metadata_number'
    WHEN NOT metadata ?| array['priority_mechanic_id', 'priority_window_minutes', 'priority_notified_at']
        THEN 'plain'
    WHEN metadata -> 'priority_mechanic_id' = 'null' AND metadata -> 'priority_window_minutes' = 'null'
         AND metadata -> 'priority_notified_at' = 'null' THEN 'keys_json_null'
    WHEN NOT metadata ? 'priority_mechanic_id' THEN 'window_and_notified_only'
    WHEN NOT metadata ? 'priority_window_minutes' AND NOT metadata ? 'priority_notified_at'
        THEN 'only_mechanic'
    WHEN metadata ->> 'priority_mechanic_id' = 'abc' THEN 'mechanic_not_uuid'
    WHEN metadata ->> 'priority_mechanic_id' LIKE '{%}' THEN 'mechanic_braced'
    WHEN metadata ->> 'priority_mechanic_id' LIKE ' % ' THEN 'mechanic_padded'
    WHEN metadata ->> 'priority_mechanic_id' ~ '[A-F]' THEN 'mechanic_uppercase'
    WHEN NOT EXISTS (SELECT 1 FROM mechanics m WHERE m.id::text = metadata ->> 'priority_mechanic_id')
        THEN CASE WHEN metadata ->> 'priority_window_minutes' = '30 min' THEN 'departed_and_bad_window'
                  ELSE 'mechanic_departed' END
    WHEN metadata -> 'priority_window_minutes' = '"ten"' THEN 'window_word'
    WHEN metadata -> 'priority_window_minutes' = '12.5' THEN 'window_fraction'
    WHEN metadata -> 'priority_window_minutes' = '0' THEN 'window_zero'
    WHEN metadata -> 'priority_window_minutes' = '-5' THEN 'window_negative'
    WHEN metadata -> 'priority_window_minutes' = '1441' THEN 'window_too_large'
    WHEN metadata -> 'priority_window_minutes' = '"10.0"' THEN 'window_decimal_string'
    WHEN metadata -> 'priority_window_minutes' = '""' THEN 'window_empty_string'
    WHEN metadata -> 'priority_window_minutes' = 'true' THEN 'window_boolean'
    WHEN metadata -> 'priority_window_minutes' = '[10]' THEN 'window_array'
    WHEN jsonb_typeof(metadata -> 'priority_window_minutes') = 'string' THEN 'window_numeric_string'
    WHEN metadata ->> 'priority_window_minutes' = '10.0' THEN 'window_integral_float'
    WHEN metadata -> 'priority_notified_at' = '"now"' THEN 'notified_now'
    WHEN metadata -> 'priority_notified_at' = '"yesterday"' THEN 'notified_yesterday'
    WHEN metadata -> 'priority_notified_at' = '"infinity"' THEN 'notified_infinity'
    WHEN jsonb_typeof(metadata -> 'priority_notified_at') = 'number' THEN 'notified_epoch_number'
    WHEN metadata ->> 'priority_notified_at' ~ '^[0-9]+$' THEN 'notified_epoch_string'
    WHEN metadata ->> 'priority_notified_at' LIKE '% GMT+0000 (%)' THEN 'notified_js_date'
    WHEN metadata ->> 'priority_notified_at' = '2025-02-30T10:00:00Z' THEN 'notified_impossible_date'
    WHEN metadata ->> 'priority_notified_at' LIKE '%+05:30' THEN 'notified_offset'
    WHEN metadata ->> 'priority_notified_at' !~ 'Z$' THEN 'notified_no_offset'
    ELSE 'full_valid'
END AS case_name, count(*)
FROM session_requests
GROUP BY 1
"""


def _case_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return {str(name): int(count) for name, count in conn.execute(CLASSIFY)}


def _metadata_md5(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT md5(string_agg(id::text || '=' || metadata::text, ',' ORDER BY id)) "
                       "FROM session_requests").fetchone()
    assert row is not None
    return str(row[0])


def test_case_table_is_consistent() -> None:
    assert sum(case.slots for case in METADATA_CASES) == SLOTS
    assert len({case.name for case in METADATA_CASES}) == len(METADATA_CASES)
    for case in METADATA_CASES:
        outcomes = set(case.outcomes.values())
        assert Outcome.METADATA_NOT_OBJECT not in outcomes or outcomes == {Outcome.METADATA_NOT_OBJECT}
    names = {case.name for case in METADATA_CASES}
    assert names >= {"full_valid", "mechanic_uppercase", "window_numeric_string", "window_integral_float",
                     "notified_offset", "notified_no_offset", "keys_json_null", "only_mechanic"}


@pytest.mark.parametrize("rows", [1, 7, 999, 1000, 1001, 2000, 12_345, 1_000_000])
def test_expected_case_counts_add_up(rows: int) -> None:
    counts = expected_case_counts(rows)
    assert sum(counts.values()) == rows
    if rows % SLOTS == 0:
        assert counts == {case.name: case.slots * rows // SLOTS for case in METADATA_CASES}
    per_key = expected_outcome_counts(rows)
    assert set(per_key) == set(LEGACY_KEYS)
    assert all(sum(outcomes.values()) == rows for outcomes in per_key.values())


def test_legacy_rows_are_about_a_third() -> None:
    summary = expected_summary(10_000)
    assert 0.3 <= summary.legacy_rows / summary.session_requests <= 0.4


@pytest.mark.db
def test_template_has_the_documented_shape(conn: psycopg.Connection[Any],
                                           template_summary: SampleSummary) -> None:
    rows = template_summary.session_requests
    assert template_summary == expected_summary(rows)
    counts = conn.execute(
        "SELECT (SELECT count(*) FROM mechanics), (SELECT count(*) FROM session_requests), "
        "(SELECT count(*) FROM feature_flags WHERE flag_key = %s AND NOT is_enabled)",
        (FEATURE_FLAG_KEY,)).fetchone()
    assert counts == (template_summary.mechanics, rows, 1)
    columns = {name for (name,) in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'session_requests'")}
    assert not columns & {"preferred_mechanic_id", "priority_window_minutes", "priority_notified_at"}
    indexes = {name for (name,) in conn.execute(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'session_requests'")}
    assert {"session_requests_status_idx", "session_requests_created_at_idx"} <= indexes
    rls = conn.execute("SELECT relrowsecurity FROM pg_class WHERE oid = 'session_requests'::regclass")
    assert rls.fetchone() == (True,)
    assert conn.execute("SELECT count(*) FROM pg_policies WHERE tablename = 'session_requests'"
                        ).fetchone() == (1,)
    accepted = conn.execute(
        "SELECT count(*) FILTER (WHERE accepted_at IS NULL OR mechanic_id IS NULL), count(*) "
        "FROM session_requests WHERE status = 'accepted'").fetchone()
    assert accepted is not None and accepted[0] == 0 and accepted[1] > 0
    span = conn.execute("SELECT max(created_at) - min(created_at) FROM session_requests").fetchone()
    assert span is not None and span[0].days >= 80


@pytest.mark.db
def test_case_counts_in_the_database_are_exact(conn: psycopg.Connection[Any],
                                               template_summary: SampleSummary) -> None:
    expected = {name: count for name, count in
                expected_case_counts(template_summary.session_requests).items() if count}
    assert _case_counts(conn) == expected
    deleted = conn.execute("SELECT count(DISTINCT metadata ->> 'priority_mechanic_id') FROM session_requests "
                           "WHERE jsonb_typeof(metadata) = 'object' AND metadata ? 'priority_mechanic_id' "
                           "AND metadata ->> 'priority_mechanic_id' ~ '^[0-9a-f-]{36}$' AND NOT EXISTS "
                           "(SELECT 1 FROM mechanics m WHERE m.id::text = metadata ->> 'priority_mechanic_id')"
                           ).fetchone()
    assert deleted is not None and 0 < deleted[0] <= template_summary.deleted_mechanics


@pytest.mark.db
def test_unrelated_keys_are_on_every_row(conn: psycopg.Connection[Any]) -> None:
    missing = conn.execute("""
        SELECT count(*) FROM session_requests
        WHERE CASE jsonb_typeof(metadata)
                  WHEN 'object' THEN NOT metadata ?& array['source', 'client_version']
                  WHEN 'array' THEN NOT metadata -> 0 ?& array['source', 'client_version']
                  ELSE false
              END
    """).fetchone()
    assert missing == (0,)


@pytest.mark.db
def test_updated_at_trigger_and_rls_policy(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute("UPDATE session_requests SET plan_code = 'fleet' "
                       "WHERE id = (SELECT id FROM session_requests ORDER BY id LIMIT 1) "
                       "RETURNING updated_at = now()").fetchone()
    assert row == (True,)
    customer = conn.execute("SELECT customer_id FROM session_requests LIMIT 1").fetchone()
    assert customer is not None
    with conn.transaction(force_rollback=True):
        conn.execute("CREATE ROLE sample_reader")
        conn.execute("GRANT USAGE ON SCHEMA auth TO sample_reader")
        conn.execute("GRANT SELECT ON session_requests TO sample_reader")
        conn.execute("SET LOCAL ROLE sample_reader")
        conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", (str(customer[0]),))
        seen = conn.execute("SELECT count(*), count(DISTINCT customer_id) FROM session_requests").fetchone()
    assert seen is not None and seen[0] >= 1 and seen[1] == 1


@pytest.mark.db
def test_same_seed_same_data_other_seed_other_data(empty_db_dsn: str,
                                                  conn: psycopg.Connection[Any]) -> None:
    with psycopg.connect(empty_db_dsn, autocommit=True) as fresh:
        summary = load_sample(fresh, rows=2000, seed=42)
        assert summary == expected_summary(2000)
        again = _metadata_md5(fresh)
    assert again == _metadata_md5(conn)  # the template was loaded with the default seed, 42
    with psycopg.connect(empty_db_dsn, autocommit=True) as fresh:
        load_sample(fresh, rows=2000, seed=7, schema="tenant_b")
        fresh.execute("SET search_path TO tenant_b")
        assert _metadata_md5(fresh) != again
        assert _case_counts(fresh) == {k: v for k, v in expected_case_counts(2000).items() if v}


@pytest.mark.db
def test_loading_twice_into_one_schema_is_refused(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(SampleAlreadyLoaded):
        load_sample(conn, rows=10)
    with pytest.raises(UsageError):
        load_sample(conn, rows=0, schema="other")


@pytest.mark.db
def test_a_larger_load_matches_its_summary_and_reports_progress(empty_db_dsn: str) -> None:
    messages: list[str] = []
    with psycopg.connect(empty_db_dsn, autocommit=True) as fresh:
        summary = load_sample(fresh, rows=30_000, progress=messages.append)
        count = fresh.execute("SELECT count(*) FROM session_requests").fetchone()
    assert count == (30_000,)
    assert summary == expected_summary(30_000)
    assert messages, "progress was never reported"
