"""A second spec, unrelated to Phase 4, through the whole lifecycle on a real PostgreSQL.

tests/specs/orders/migration.toml promotes keys of orders.data into one column of every supported type,
with two foreign keys, a unique and a partial index and a NOT NULL column enforced after backfill.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from clihelp import cli

pytestmark = pytest.mark.db

SPEC = str(Path(__file__).resolve().parent / "specs" / "orders")
ROWS = 120
CUSTOMERS = ["5b0c3f7e-0d6a-4c55-9a0e-1c1f0b7d2a01", "5b0c3f7e-0d6a-4c55-9a0e-1c1f0b7d2a02"]

SCHEMA = """
CREATE TABLE customers (id uuid PRIMARY KEY, name text NOT NULL);
CREATE TABLE warehouses (id integer PRIMARY KEY, city text NOT NULL);
CREATE TABLE orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status text NOT NULL DEFAULT 'open',
    data jsonb NOT NULL DEFAULT '{}'
);
"""


def _legacy(n: int) -> dict[str, Any]:
    return {"customer": CUSTOMERS[n % 2], "qty": n % 7 + 1, "warehouse": n % 2 + 1, "ref": 1000 + n,
            "total": f"{n}.{n % 100:02d}", "gift": n % 3 == 0, "channel": ["web", "store", "phone"][n % 3],
            "shipped_at": "2025-11-02T10:00:00Z", "due": "2025-12-01"}


@pytest.fixture
def orders_dsn(empty_db_dsn: str) -> Iterator[str]:
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute("INSERT INTO customers VALUES (%s, 'Ada'), (%s, 'Grace')", CUSTOMERS)
        conn.execute("INSERT INTO warehouses VALUES (1, 'Lyon'), (2, 'Turin')")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO orders (status, data) VALUES (%s, %s)",
                            [("shipped" if n % 4 else "open", Jsonb(_legacy(n))) for n in range(ROWS)])
    yield empty_db_dsn


def orders(*args: str) -> Any:
    return cli("--spec", SPEC, *args)


def statuses(result: Any) -> dict[str, str]:
    return {c["id"]: c["status"] for c in result.json()["checks"]}


def fill_columns(dsn: str) -> None:
    """What backfill will do for this spec; done by hand here (the values are valid by construction)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("""
            UPDATE orders SET customer_id = (data->>'customer')::uuid, quantity = (data->>'qty')::smallint,
                   warehouse_id = (data->>'warehouse')::integer, external_ref = (data->>'ref')::bigint,
                   total = (data->>'total')::numeric, gift = (data->>'gift')::boolean, channel = data->>'channel',
                   shipped_at = (data->>'shipped_at')::timestamptz, due_on = (data->>'due')::date
        """)


def catalog(dsn: str) -> dict[str, tuple[str, bool]]:
    with psycopg.connect(dsn) as conn:
        found = conn.execute("SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
                             "WHERE attrelid = 'orders'::regclass AND attnum > 0 AND NOT attisdropped").fetchall()
    return {name: (type_, not_null) for name, type_, not_null in found}


def test_orders_spec_plan_apply_verify_finalize_rollback_apply(orders_dsn):
    dsn = ("--dsn", orders_dsn)
    plan = orders("plan", *dsn, "--format", "json")
    assert plan.exit_code == 1, plan.stderr
    assert {o["state"] for o in plan.json()["objects"]} == {"missing"}
    assert len(plan.json()["objects"]) == 9 + 2 + 3
    assert [s["step"] for s in plan.json()["steps"]] == [
        "add-columns", "add-fk-not-valid", "validate-fk", "index-external-ref-key", "index-open-shipped",
        "index-customer", "column-comments"]

    applied = orders("apply", *dsn, "--format", "json")
    assert applied.exit_code == 0, applied.stderr
    assert applied.json()["verification"]["ok"]
    columns = catalog(orders_dsn)
    assert {name: columns[name] for name in ("customer_id", "quantity", "warehouse_id", "external_ref", "total",
                                             "gift", "channel", "shipped_at", "due_on")} == {
        "customer_id": ("uuid", False), "quantity": ("smallint", False), "warehouse_id": ("integer", False),
        "external_ref": ("bigint", False), "total": ("numeric(12,2)", False), "gift": ("boolean", True),
        "channel": ("text", False), "shipped_at": ("timestamp with time zone", False), "due_on": ("date", False)}

    verified = orders("verify", *dsn, "--format", "json", "--no-data")
    assert verified.exit_code == 0, verified.stdout
    checks = statuses(verified)
    assert checks["constraint:orders_customer_id_fkey:validated"] == "pass"
    assert checks["constraint:orders_warehouse_fk:definition"] == "pass"
    assert checks["index:orders_external_ref_key:definition"] == "pass"
    assert checks["index:orders_open_shipped_idx:valid"] == "pass"
    assert checks["column:total:nullable"] == "warn", "NOT NULL waits for finalize"
    assert checks["column:total:type"] == "pass" and checks["column:gift:default"] == "pass"

    refused = orders("finalize", *dsn)
    assert refused.exit_code == 1
    assert f"column total still holds {ROWS} NULL rows" in refused.stderr
    assert catalog(orders_dsn)["total"] == ("numeric(12,2)", False), "a refused finalize changes nothing"

    fill_columns(orders_dsn)
    finalized = orders("finalize", *dsn, "--format", "json")
    assert finalized.exit_code == 0, finalized.stderr
    assert [s["step"] for s in finalized.json()["steps"]] == [
        "total-check-not-valid", "total-check-validate", "total-set-not-null"]
    assert catalog(orders_dsn)["total"] == ("numeric(12,2)", True)
    with psycopg.connect(orders_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE conname = 'orders_total_not_null_check'"
                            ).fetchone() == (0,)
    again = orders("finalize", *dsn)
    assert again.exit_code == 0 and "already finalized" in again.stdout

    verified = orders("verify", *dsn, "--format", "json")
    assert verified.exit_code == 0, verified.stdout
    assert statuses(verified)["column:total:nullable"] == "pass"
    explained = orders("explain", *dsn, "--format", "json")
    assert explained.exit_code == 0, explained.stderr
    assert [q["expected_index"] for q in explained.json()["queries"]] == ["orders_open_shipped_idx"]
    assert orders("plan", *dsn).exit_code == 0

    rolled_back = orders("rollback", *dsn, "--yes", "--discard-data", "--format", "json")
    assert rolled_back.exit_code == 0, rolled_back.stderr
    absent = orders("verify", *dsn, "--absent", "--format", "json")
    assert absent.exit_code == 0, absent.stdout
    assert set(statuses(absent).values()) == {"pass"}
    assert "column:due_on:absent" in statuses(absent) and "constraint:orders_warehouse_fk:absent" in statuses(absent)

    reapplied = orders("apply", *dsn, "--finalize", "--format", "json")
    assert reapplied.exit_code == 1, "the re-added total column is empty again"
    fill_columns(orders_dsn)
    assert orders("apply", *dsn, "--finalize").exit_code == 0
    assert orders("verify", *dsn).exit_code == 0
    assert catalog(orders_dsn)["total"] == ("numeric(12,2)", True)


def test_unique_index_on_duplicates_is_dropped_and_the_duplicates_named(orders_dsn):
    dsn = ("--dsn", orders_dsn)
    assert orders("apply", *dsn, "-q").exit_code == 0
    with psycopg.connect(orders_dsn, autocommit=True) as conn:
        conn.execute("DROP INDEX orders_external_ref_key")
        conn.execute("UPDATE orders SET external_ref = CASE WHEN id <= 3 THEN 7 WHEN id <= 5 THEN 9 ELSE id + 1000 END")
    failed = orders("apply", *dsn)
    assert failed.exit_code == 3, failed.stderr
    assert "unique index orders_external_ref_key cannot be built" in failed.stderr
    assert "2 keys of (external_ref) occur more than once (5 rows)" in failed.stderr
    assert "(external_ref=7) x3" in failed.stderr
    with psycopg.connect(orders_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('orders_external_ref_key')").fetchone() == (None,), \
            "the INVALID index the failed build left is dropped"
        conn.execute("UPDATE orders SET external_ref = id")
    assert orders("apply", *dsn, "-q").exit_code == 0
    assert orders("verify", *dsn, "--no-data").exit_code == 0


def test_spec_from_the_environment_and_a_wrong_spec(orders_dsn, tmp_path):
    from_env = cli("plan", "--dsn", orders_dsn, "--format", "json", env={"FAVMIGRATE_SPEC": SPEC})
    assert from_env.exit_code == 1 and from_env.json()["objects"][0]["name"] == "customer_id"
    wrong = tmp_path / "migration.toml"
    wrong.write_text((Path(SPEC) / "migration.toml").read_text().replace('type = "smallint"', 'type = "tinyint"'))
    result = cli("--spec", str(tmp_path), "plan", "--dsn", orders_dsn)
    assert result.exit_code == 2
    assert "columns[1] (quantity).type: unsupported column type 'tinyint'" in result.stderr
    assert "Traceback" not in result.stderr
    no_report = orders("report", "--dsn", orders_dsn)
    assert no_report.exit_code == 2 and "migration orders_promotion declares no priority-analytics report" in \
        no_report.stderr
    missing_table = orders("apply", "--dsn", orders_dsn, "--schema", "nowhere")
    assert missing_table.exit_code == 2
    assert "tables nowhere.orders, nowhere.customers and nowhere.warehouses do not exist" in missing_table.stderr
