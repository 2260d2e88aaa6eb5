"""Identifiers round-trip through the catalogs exactly: a schema whose name needs quoting works end to end."""

from __future__ import annotations

import psycopg
import pytest

from clihelp import cli
from favmigrate.sample import load_sample

AWKWARD_SCHEMAS = ['we"ird', "Mixed Case", "dot.ted"]


@pytest.mark.parametrize("schema", AWKWARD_SCHEMAS)
def test_apply_verify_backfill_rollback_on_a_schema_needing_quotes(empty_db_dsn, schema):
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        load_sample(conn, rows=60, schema=schema)
    target = ("--dsn", empty_db_dsn, "--schema", schema)
    applied = cli("apply", *target, "--format", "json")
    assert applied.exit_code == 0, [c for c in applied.json()["verification"]["checks"] if c["status"] == "fail"]
    verified = cli("verify", *target, "--format", "json")
    assert verified.exit_code == 0, [c for c in verified.json()["checks"] if c["status"] == "fail"]
    again = cli("apply", *target, "--format", "json")
    assert again.exit_code == 0 and not again.json()["changed"], again.stderr
    assert cli("plan", *target).exit_code == 0
    assert cli("backfill", *target, "-q").exit_code == 0
    assert cli("verify", *target).exit_code == 0
    for command in ("explain", "report"):
        read = cli(command, *target, "--format", "json")
        assert read.exit_code in (0, 1), (command, read.stderr)
        assert "Traceback" not in read.stderr and read.json()
    rolled_back = cli("rollback", *target, "--yes", "-q")
    assert rolled_back.exit_code == 0, rolled_back.stderr
    assert cli("verify", *target, "--absent").exit_code == 0
    assert cli("apply", *target, "-q").exit_code == 0, "applies again after the rollback"


def test_a_foreign_key_to_the_same_named_table_in_another_schema_is_drift(empty_db_dsn):
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        load_sample(conn, rows=20, schema="public")
        load_sample(conn, rows=20, schema="garage")
        conn.execute("ALTER TABLE garage.session_requests ADD COLUMN preferred_mechanic_id uuid "
                     "CONSTRAINT session_requests_preferred_mechanic_id_fkey REFERENCES public.mechanics (id) "
                     "ON DELETE SET NULL")
    result = cli("verify", "--dsn", empty_db_dsn, "--schema", "garage", "--format", "json", "--no-data")
    (definition,) = [c for c in result.json()["checks"]
                     if c["id"] == "constraint:session_requests_preferred_mechanic_id_fkey:definition"]
    assert definition["status"] == "fail", definition
