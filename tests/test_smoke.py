"""verify --smoke: the seed's verification scenarios on real rows, in a transaction that is always rolled back."""

from __future__ import annotations

from xml.etree import ElementTree

import psycopg
from test_orders_spec import fill_columns, orders, orders_dsn  # noqa: F401  (orders_dsn is a fixture)

from clihelp import cli

PHASE4_SMOKE = {
    "smoke:insert:row": "pass",
    "smoke:insert:preferred_mechanic_id": "pass",
    "smoke:insert:priority_window_minutes:default": "pass",
    "smoke:set-read-back:priority_window_minutes": "pass",
    "smoke:set-read-back:priority_notified_at": "pass",
    "smoke:join:preferred_mechanic_id": "pass",
    "smoke:reject-missing-reference:preferred_mechanic_id": "pass",
    "smoke:on-delete:preferred_mechanic_id": "pass",
}


def _smoke(result) -> dict[str, dict]:
    return {c["id"]: c for c in result.json()["checks"] if c["id"].startswith("smoke:")}


def _fingerprint(conn: psycopg.Connection) -> tuple:
    """Every row of the tables the scenarios touch, and the tool's schema."""
    return tuple(conn.execute(query).fetchone()[0] for query in (
        "SELECT md5(string_agg(t::text, ',' ORDER BY t.id)) FROM public.session_requests t",
        "SELECT md5(string_agg(t::text, ',' ORDER BY t.id)) FROM public.mechanics t",
        "SELECT count(*) FROM public.session_requests",
        "SELECT to_regnamespace('favmigrate') IS NOT NULL AND EXISTS (SELECT 1 FROM favmigrate.history WHERE "
        "command NOT IN ('apply'))",
    ))


def test_the_scenarios_pass_after_apply_and_leave_nothing_behind(db_dsn, conn, tmp_path):
    assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0
    before = _fingerprint(conn)
    junit = tmp_path / "smoke.xml"
    result = cli("verify", "--smoke", "--dsn", db_dsn, "--format", "json", "--junit", str(junit))
    assert result.exit_code == 0, result.stdout + result.stderr
    smoke = _smoke(result)
    assert {check_id: check["status"] for check_id, check in smoke.items()} == PHASE4_SMOKE
    assert smoke["smoke:insert:priority_window_minutes:default"]["actual"] == "10"
    assert smoke["smoke:set-read-back:priority_notified_at"]["actual"] == "2025-11-02 01:00:00+00:00"
    assert smoke["smoke:reject-missing-reference:preferred_mechanic_id"]["actual"] == "SQLSTATE 23503"
    assert smoke["smoke:on-delete:preferred_mechanic_id"]["actual"] == "NULL"
    # the real tables have NOT NULL columns the spec does not know: copied from an existing row, and said so
    message = smoke["smoke:insert:row"]["message"]
    assert "customer_id (copied from an existing row)" in message
    assert message == ("rows built from their tables' required columns: session_requests: customer_id (copied "
                       "from an existing row); mechanics: first_name (copied from an existing row), last_name "
                       "(copied from an existing row)")
    assert _fingerprint(conn) == before
    names = {case.get("name") for case in ElementTree.parse(junit).getroot()}
    assert set(PHASE4_SMOKE) <= names


def test_a_required_column_the_tool_does_not_know_is_copied_or_made_up(db_dsn, conn):
    assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0
    conn.execute("ALTER TABLE public.session_requests ADD COLUMN region text NOT NULL DEFAULT 'eu-west'")
    conn.execute("ALTER TABLE public.session_requests ALTER COLUMN region DROP DEFAULT")
    conn.execute("ALTER TABLE public.session_requests ADD COLUMN ticket integer")
    conn.execute("UPDATE public.session_requests SET ticket = n FROM (SELECT id, row_number() OVER () AS n "
                 "FROM public.session_requests) AS numbered WHERE numbered.id = session_requests.id")
    conn.execute("ALTER TABLE public.session_requests ALTER COLUMN ticket SET NOT NULL")
    conn.execute("CREATE UNIQUE INDEX session_requests_ticket_key ON public.session_requests (ticket)")
    before = _fingerprint(conn)
    result = cli("verify", "--smoke", "--dsn", db_dsn, "--format", "json")
    assert result.exit_code == 0, result.stdout
    message = _smoke(result)["smoke:insert:row"]["message"]
    assert "region (copied from an existing row)" in message
    # a copied value would collide in the unique index: a fresh one
    assert "ticket (made up: (SELECT coalesce(max(\"ticket\"), 0) + 1 FROM \"public\".\"session_requests\"))" in message
    assert _fingerprint(conn) == before


def test_in_empty_tables_every_required_value_is_made_up(db_dsn, conn):
    assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0
    conn.execute("TRUNCATE public.session_requests, public.mechanics")
    result = cli("verify", "--smoke", "--dsn", db_dsn, "--format", "json")
    assert result.exit_code == 0, result.stdout
    message = _smoke(result)["smoke:insert:row"]["message"]
    assert "customer_id (made up: '" in message and "first_name (made up: 'favmigrate-smoke-" in message
    assert conn.execute("SELECT count(*) FROM public.session_requests").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM public.mechanics").fetchone()[0] == 0


def test_a_row_that_cannot_be_built_fails_naming_the_column(db_dsn, conn):
    assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0
    conn.execute("TRUNCATE public.session_requests")
    conn.execute("ALTER TABLE public.session_requests ADD COLUMN spot point NOT NULL")
    result = cli("verify", "--smoke", "--dsn", db_dsn, "--format", "json")
    assert result.exit_code == 1
    check = _smoke(result)["smoke:insert:row"]
    assert check["status"] == "fail"
    assert check["message"] == ("cannot make up a value for public.session_requests.spot (point), NOT NULL without "
                                "a default, in an empty table")


def test_a_missing_foreign_key_fails_the_reference_scenarios(db_dsn, conn):
    assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0
    conn.execute("ALTER TABLE public.session_requests DROP CONSTRAINT session_requests_preferred_mechanic_id_fkey")
    result = cli("verify", "--smoke", "--dsn", db_dsn, "--format", "json")
    assert result.exit_code == 1
    smoke = _smoke(result)
    assert smoke["smoke:reject-missing-reference:preferred_mechanic_id"]["actual"] == "accepted"
    assert smoke["smoke:on-delete:preferred_mechanic_id"]["status"] == "fail"
    assert smoke["smoke:join:preferred_mechanic_id"]["status"] == "pass"


def test_before_apply_the_scenarios_are_skipped(db_dsn):
    result = cli("verify", "--smoke", "--dsn", db_dsn, "--format", "json")
    assert result.exit_code == 1
    assert _smoke(result)["smoke:insert:row"]["status"] == "skip"


def test_refused_on_a_read_only_database_and_with_absent(db_dsn, conn):
    assert cli("verify", "--smoke", "--absent", "--dsn", db_dsn).exit_code == 2
    assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0
    dbname = conn.info.dbname
    conn.execute(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on')
    result = cli("verify", "--smoke", "--dsn", db_dsn)
    assert result.exit_code == 2 and "the database is read-only" in result.stderr
    assert cli("verify", "--dsn", db_dsn).exit_code == 0


def test_another_spec_restrict_and_set_null(orders_dsn, server_version_num):  # noqa: F811
    assert orders("apply", "--dsn", orders_dsn, "-q").exit_code == 0
    fill_columns(orders_dsn)
    result = orders("verify", "--smoke", "--dsn", orders_dsn, "--format", "json")
    assert result.exit_code == 0, result.stdout
    smoke = _smoke(result)
    assert all(check["status"] == "pass" for check in smoke.values())
    restrict_refusal = "23001" if server_version_num >= 180000 else "23503"
    assert smoke["smoke:on-delete:warehouse_id"]["actual"] == f"SQLSTATE {restrict_refusal}"  # ON DELETE RESTRICT
    assert smoke["smoke:on-delete:customer_id"]["actual"] == "NULL"
    assert smoke["smoke:insert:gift:default"]["actual"] == "False"
    assert smoke["smoke:set-read-back:channel"]["actual"] == "web"
    assert "warehouses: id (made up: (SELECT coalesce(max(\"id\"), 0) + 1 FROM" in (
        smoke["smoke:insert:row"]["message"])


def test_a_column_of_a_multi_column_unique_index_is_copied_so_its_own_foreign_key_holds(db_dsn, conn):
    assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0
    conn.execute("CREATE TABLE public.customers AS SELECT DISTINCT customer_id AS id FROM public.session_requests")
    conn.execute("ALTER TABLE public.customers ADD PRIMARY KEY (id)")
    conn.execute("ALTER TABLE public.session_requests ADD FOREIGN KEY (customer_id) REFERENCES public.customers")
    conn.execute("CREATE UNIQUE INDEX session_requests_customer_request_key ON public.session_requests "
                 "(customer_id, id)")
    result = cli("verify", "--smoke", "--dsn", db_dsn, "--format", "json")
    assert result.exit_code == 0, result.stdout
    assert "customer_id (copied from an existing row)" in _smoke(result)["smoke:insert:row"]["message"]
