"""A second spec, unrelated to Phase 4, through the whole lifecycle on a real PostgreSQL.

tests/specs/orders/migration.toml promotes keys of orders.data into one column of every supported type,
with two foreign keys, a unique and a partial index and a NOT NULL column enforced after backfill.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
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


# ---------------------------------------------------------------- backfill and rollback, value by value
#
# plan -> apply -> verify -> backfill (every value and every reject as this test's own table says) ->
# finalize -> verify -> rollback (every column value back in `data`, canonical) -> apply -> backfill
# (identical values).

CUSTOMER = "5f0c6a1e-8d2b-4c7a-9e3f-1a2b3c4d5e6f"
OTHER_CUSTOMER = "a1b2c3d4-e5f6-4a1b-8c2d-3e4f5a6b7c8d"
UNKNOWN_CUSTOMER = "00000000-0000-4000-8000-000000000000"
COLUMNS = {  # legacy key -> column
    "customer": "customer_id", "qty": "quantity", "warehouse": "warehouse_id", "ref": "external_ref",
    "total": "total", "gift": "gift", "channel": "channel", "shipped_at": "shipped_at", "due": "due_on",
}

# Every row holds these values (ref made unique per row), with one key replaced by a case below.
BASE = {"customer": f'"{CUSTOMER}"', "qty": "2", "warehouse": "1", "total": '"12.50"', "gift": "true",
        "channel": '"web"', "shipped_at": '"2025-11-02T01:00:00Z"', "due": '"2025-11-30"'}
BASE_VALUES = {"customer_id": CUSTOMER, "quantity": 2, "warehouse_id": 1, "total": Decimal("12.50"),
               "gift": True, "channel": "web", "shipped_at": datetime(2025, 11, 2, 1, tzinfo=UTC),
               "due_on": date(2025, 11, 30)}

# (legacy key, JSON text, the column value the rules give, or the reject reason)
CASES: list[tuple[str, str, Any]] = [
    ("customer", f'"{OTHER_CUSTOMER.upper()}"', OTHER_CUSTOMER),
    ("customer", f'"{UNKNOWN_CUSTOMER}"', "unknown_reference"),
    ("customer", '"abc"', "invalid_uuid"),
    ("customer", "42", "invalid_uuid"),
    ("qty", "5", 5), ("qty", '"7"', 7), ("qty", "7.0", 7),
    ("qty", "0", "out_of_range"), ("qty", "1001", "out_of_range"), ("qty", "40000", "out_of_range"),
    ("qty", '"-5"', "invalid_integer"), ("qty", "12.5", "invalid_integer"), ("qty", '"ten"', "invalid_integer"),
    ("warehouse", "2", 2), ("warehouse", '"1"', 1),
    ("warehouse", "99", "unknown_reference"), ("warehouse", '"abc"', "invalid_integer"),
    ("ref", "9007199254740993", 9007199254740993), ("ref", '"9223372036854775807"', 9223372036854775807),
    ("ref", "0", "out_of_range"), ("ref", '"9223372036854775808"', "out_of_range"), ("ref", "true", "invalid_integer"),
    ("total", "12.5", Decimal("12.50")), ("total", '"0.10"', Decimal("0.10")), ("total", "1e2", Decimal("100.00")),
    ("total", '"9999999.99"', Decimal("9999999.99")),
    ("total", '"1e2"', "invalid_numeric"), ("total", "12.345", "invalid_numeric"),
    ("total", '"NaN"', "invalid_numeric"), ("total", '"12,50"', "invalid_numeric"),
    ("total", "-1", "out_of_range"), ("total", "10000000", "out_of_range"),
    ("total", '"99999999999.99"', "out_of_range"),
    ("gift", "false", False), ("gift", '"true"', True), ("gift", '"yes"', "invalid_boolean"),
    ("gift", "1", "invalid_boolean"),
    ("channel", '"store"', "store"), ("channel", '"Web"', "not_allowed"), ("channel", '"warehouse"', "too_long"),
    ("channel", "5", "invalid_text"),
    ("shipped_at", '"2025-11-02T06:30:00+05:30"', datetime(2025, 11, 2, 1, tzinfo=UTC)),
    ("shipped_at", '"2025-11-02T01:00:00.5"', datetime(2025, 11, 2, 1, 0, 0, 500000, tzinfo=UTC)),
    ("shipped_at", '"2025-02-30T10:00:00Z"', "invalid_timestamp"), ("shipped_at", '"now"', "invalid_timestamp"),
    ("due", '"2024-02-29"', date(2024, 2, 29)), ("due", '"2023-02-29"', "invalid_date"),
    ("due", '"2025-11-02T00:00:00Z"', "invalid_date"),
    ("total", "null", None),  # JSON null: nothing to copy
]
DEFAULTS = {"gift": False}  # NOT NULL columns with a default keep it when nothing is copied
def run(*args: str) -> dict[str, Any]:
    result = orders(*args)
    assert result.exit_code == 0, (args, result.stdout[-2000:], result.stderr[-2000:])
    return result.json()  # type: ignore[no-any-return]


def load_cases(conn: psycopg.Connection[Any]) -> dict[int, tuple[str, Any]]:
    """Create the tables and one row per case; returns row id -> (the case's key, what it gives)."""
    conn.execute(SCHEMA)
    conn.execute("INSERT INTO customers VALUES (%s, 'Ada'), (%s, 'Grace')", (CUSTOMER, OTHER_CUSTOMER))
    conn.execute("INSERT INTO warehouses VALUES (1, 'Lyon'), (2, 'Turin')")
    expected: dict[int, tuple[str, Any]] = {}
    for n, (key, text, outcome) in enumerate(CASES):
        values = {**BASE, "ref": str(1000 + n), key: text}
        data = "{" + ", ".join(f'"{k}": {v}' for k, v in values.items()) + "}"
        row_id = conn.execute("INSERT INTO orders (data) VALUES (%s::jsonb) RETURNING id", (data,)).fetchone()[0]
        expected[row_id] = (key, outcome)
    return expected


def columns(conn: psycopg.Connection[Any]) -> dict[int, dict[str, Any]]:
    names = ", ".join(COLUMNS.values())
    found = conn.execute(f"SELECT id, {names} FROM orders ORDER BY id").fetchall()
    return {row[0]: dict(zip(COLUMNS.values(), (str(v) if k == "customer_id" and v else v
                                                 for k, v in zip(COLUMNS.values(), row[1:], strict=True)),
                             strict=True)) for row in found}


def wanted(row_id: int, case: tuple[str, Any], n: int) -> dict[str, Any]:
    key, outcome = case
    values = {**BASE_VALUES, "external_ref": 1000 + n}
    column = COLUMNS[key]
    if outcome is None or (isinstance(outcome, str) and outcome in REASONS):
        values[column] = DEFAULTS.get(key)
    else:
        values[column] = outcome
    return values


REASONS = {"invalid_uuid", "unknown_reference", "invalid_integer", "out_of_range", "invalid_numeric",
           "invalid_boolean", "invalid_text", "too_long", "not_allowed", "invalid_timestamp", "invalid_date"}


def test_orders_backfill_finalize_rollback_apply_backfill_keep_every_value(empty_db_dsn, tmp_path):
    with psycopg.connect(empty_db_dsn, autocommit=True) as db:
        expected = load_cases(db)
        odd = db.execute("INSERT INTO orders (data) VALUES ('[1, 2]') RETURNING id").fetchone()[0]
        empty = db.execute("INSERT INTO orders (data) VALUES ('{}') RETURNING id").fetchone()[0]

        planned = orders("plan", "--dsn", empty_db_dsn, "--format", "json")
        assert planned.exit_code == 1 and planned.json()["steps"], planned.stderr
        run("apply", "--dsn", empty_db_dsn, "--format", "json")
        assert run("verify", "--dsn", empty_db_dsn, "--format", "json", "--no-data")["ok"]

        report = run("backfill", "--dsn", empty_db_dsn, "--format", "json", "--rejects", str(tmp_path / "r.jsonl"))
        want = {row_id: wanted(row_id, case, n) for n, (row_id, case) in enumerate(expected.items())}
        want[odd] = {**dict.fromkeys(COLUMNS.values()), **DEFAULTS_BY_COLUMN}
        want[empty] = dict(want[odd])
        first = columns(db)
        assert first == want
        reasons: dict[str, int] = {}
        for _, outcome in expected.values():
            if isinstance(outcome, str) and outcome in REASONS:
                reasons[outcome] = reasons.get(outcome, 0) + 1
        reasons["metadata_not_object"] = 1
        assert {k: v for k, v in report["rejected"].items() if v} == reasons
        lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
        assert sorted((int(line["id"]), line["key"], line["reason"]) for line in lines) == sorted(
            [(row_id, key, outcome) for row_id, (key, outcome) in expected.items()
             if isinstance(outcome, str) and outcome in REASONS] + [(odd, None, "metadata_not_object")])
        assert report["conflicts"] == 0

        # finalize needs every total: the operator settles the rejected ones first
        refused = orders("finalize", "--dsn", empty_db_dsn, "--format", "json")
        assert refused.exit_code == 1, refused.stderr
        db.execute("UPDATE orders SET total = 0 WHERE total IS NULL")
        run("finalize", "--dsn", empty_db_dsn, "--format", "json")
        verified = orders("verify", "--dsn", empty_db_dsn, "--format", "json")
        checks = {c["id"]: c for c in verified.json()["checks"]}
        assert checks["column:total:nullable"]["status"] == "pass"
        for name in ("customer_id", "warehouse_id"):
            assert checks[f"data:{name}:orphans"]["status"] == "pass"
        for name in ("quantity", "external_ref", "total", "channel"):
            assert checks[f"data:{name}:range"]["status"] == "pass"
        settled = columns(db)

        rolled = run("rollback", "--dsn", empty_db_dsn, "--yes", "--prefer-columns", "--format", "json")
        assert rolled["ok"]
        data = dict(db.execute("SELECT id, data::text FROM orders").fetchall())
        assert json.loads(data[odd]) == [1, 2], "metadata that is not an object is never written"
        for n, (row_id, (case_key, outcome)) in enumerate(expected.items()):
            original = {**BASE, "ref": str(1000 + n), case_key: CASES[n][1]}
            read_as_is = {key for key in original if key != case_key or outcome not in REASONS | {None}}
            held = json.loads(data[row_id])
            for key, column in COLUMNS.items():
                value = settled[row_id][column]
                if value is None or key in read_as_is:  # nothing to preserve, or it already means the value
                    assert held[key] == json.loads(original[key]), (row_id, key)
                else:  # rejected or absent before, now the column's value in canonical JSON
                    assert held[key] == canonical(value), (row_id, key, held[key])
        assert json.loads(data[empty]) == {"total": 0, "gift": False}
        assert '"total": 0.00' in data[empty], "a numeric is written at the column's scale"

        run("apply", "--dsn", empty_db_dsn, "--format", "json")
        again = run("backfill", "--dsn", empty_db_dsn, "--format", "json")
        assert again["conflicts"] == 0
        restored = columns(db)
        restored[odd] = settled[odd] = {**settled[odd], "total": None}
        assert restored == settled


DEFAULTS_BY_COLUMN = {COLUMNS[key]: value for key, value in DEFAULTS.items()}


def canonical(value: Any) -> Any:
    """The JSON value rollback writes for a column value (as json.loads reads it)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        text = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return text + (f".{value.microsecond:06d}" if value.microsecond else "") + "Z"
    if isinstance(value, date):
        return value.isoformat()
    return value


def test_data_checks_per_column_name_each_broken_value(orders_dsn):
    """verify's data checks on this spec: an integer reference, text limits, numeric and bigint ranges."""
    dsn = ("--dsn", orders_dsn)
    assert orders("apply", *dsn, "-q").exit_code == 0
    fill_columns(orders_dsn)
    clean = orders("verify", *dsn, "--format", "json")
    assert clean.exit_code == 0, clean.stdout
    with psycopg.connect(orders_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE orders DROP CONSTRAINT orders_warehouse_fk")  # orphans need the FK gone
        ids = [r[0] for r in conn.execute("SELECT id FROM orders ORDER BY id LIMIT 5")]
        conn.execute("UPDATE orders SET warehouse_id = 77 WHERE id = ANY (%s)", (ids[:2],))
        conn.execute("UPDATE orders SET channel = 'fax' WHERE id = %s", (ids[2],))
        conn.execute("UPDATE orders SET channel = 'telephone' WHERE id = %s", (ids[3],))
        conn.execute("UPDATE orders SET total = -1, external_ref = 0 WHERE id = %s", (ids[4],))
    broken = orders("verify", *dsn, "--format", "json")
    assert broken.exit_code == 1
    checks = {c["id"]: c for c in broken.json()["checks"]}
    found = {name: (c["status"], c["expected"], c["actual"]) for name, c in checks.items() if name.startswith("data:")
             and not name.endswith("backfill-pending")}
    assert found == {
        "data:customer_id:orphans": ("pass", "0", "0"),
        "data:warehouse_id:orphans": ("fail", "0", "2"),
        "data:quantity:range": ("pass", "1..1000", "0 rows outside"),
        "data:external_ref:range": ("fail", ">= 1", "1 row outside"),
        "data:total:range": ("fail", "0..9999999.99", "1 row outside"),
        "data:channel:range": ("fail", "at most 8 characters; one of web, store, phone", "2 rows outside"),
    }
    assert checks["data:warehouse_id:orphans"]["message"] == "2 rows reference a missing warehouses row"


def test_a_conflicting_numeric_is_shown_exactly_with_its_scale(orders_dsn):
    dsn = ("--dsn", orders_dsn)
    assert orders("apply", *dsn, "-q").exit_code == 0
    fill_columns(orders_dsn)
    with psycopg.connect(orders_dsn, autocommit=True) as conn:
        row = conn.execute("UPDATE orders SET total = 1234567.10, data = data || '{\"total\": \"3.00\"}' "
                           "WHERE id = (SELECT min(id) FROM orders) RETURNING id").fetchone()[0]
    result = orders("rollback", *dsn, "--dry-run", "--format", "json")
    assert result.exit_code == 0, result.stderr
    (conflict,) = result.json()["plan"]["survey"]["conflict_sample"]
    assert (conflict["row"], conflict["key"], conflict["metadata_json"]) == (str(row), "total", '"3.00"')
    assert conflict["column_value"] == "1234567.10", "never a float: 1234567.1"


def test_a_duplicate_of_a_unique_column_is_rejected_with_its_row_not_the_batch(orders_dsn, tmp_path):
    dsn = ("--dsn", orders_dsn)
    assert orders("apply", *dsn, "-q").exit_code == 0
    with psycopg.connect(orders_dsn, autocommit=True) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM orders ORDER BY id")]
        # two later rows repeat the first row's ref: the first by primary key keeps it
        conn.execute("UPDATE orders SET data = data || '{\"ref\": 1000}' WHERE id = ANY (%s)", (ids[5:7],))
        # a value another row already holds in the column
        conn.execute("UPDATE orders SET data = data - 'ref', external_ref = 777 WHERE id = %s", (ids[10],))
        conn.execute("UPDATE orders SET data = data || '{\"ref\": \"777\"}' WHERE id = %s", (ids[11],))
    dry = orders("backfill", *dsn, "--dry-run", "--format", "json")
    assert dry.exit_code == 0, dry.stderr
    rejects = tmp_path / "rejects.jsonl"
    real = orders("backfill", *dsn, "--format", "json", "--rejects", str(rejects))
    assert real.exit_code == 0, real.stderr
    report = real.json()
    assert {r: n for r, n in report["rejected"].items() if n} == {"duplicate_value": 3}
    assert report["updated"]["external_ref"] == ROWS - 4 and report["updated"]["total"] == ROWS
    assert (dry.json()["rejected"], dry.json()["updated"]) == (report["rejected"], report["updated"])
    lines = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert sorted((r["id"], r["key"], r["value"], r["reason"]) for r in lines) == sorted(
        [(str(ids[5]), "ref", 1000, "duplicate_value"), (str(ids[6]), "ref", 1000, "duplicate_value"),
         (str(ids[11]), "ref", "777", "duplicate_value")])
    with psycopg.connect(orders_dsn) as conn:
        refs = dict(conn.execute("SELECT id, external_ref FROM orders WHERE id = ANY (%s)",
                                 ([ids[0], ids[5], ids[6], ids[10], ids[11]],)).fetchall())
    assert refs == {ids[0]: 1000, ids[5]: None, ids[6]: None, ids[10]: 777, ids[11]: None}


@pytest.mark.parametrize("scan", ["ctid", "pk"])
def test_a_duplicate_between_two_batches_is_counted_by_the_dry_run_as_by_the_real_run(orders_dsn, tmp_path, scan):
    dsn = ("--dsn", orders_dsn)
    assert orders("apply", *dsn, "-q").exit_code == 0
    with psycopg.connect(orders_dsn, autocommit=True) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM orders ORDER BY id")]
        # rows far apart in the walk (batches of 10 rows) repeat the ref of a row walked before them
        conn.execute("UPDATE orders SET data = data || '{\"ref\": 5000}' WHERE id = ANY (%s)", ([ids[3], ids[57],
                                                                                               ids[101]],))
    walk = ("--batch-size", "10", "--scan", scan, "--format", "json")
    dry = orders("backfill", *dsn, *walk, "--dry-run", "--rejects", str(tmp_path / "dry.jsonl"))
    assert dry.exit_code == 0, dry.stderr
    assert "judges each batch against the table alone" not in dry.stderr
    real = orders("backfill", *dsn, *walk, "--rejects", str(tmp_path / "real.jsonl"))
    assert real.exit_code == 0, real.stderr
    assert real.json()["rejected"]["duplicate_value"] == 2
    assert (dry.json()["rejected"], dry.json()["updated"]) == (real.json()["rejected"], real.json()["updated"])
    rejected = [json.loads(line) for line in (tmp_path / "dry.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rejected if r["reason"] == "duplicate_value") == sorted(
        [str(ids[57]), str(ids[101])]), "the row walked first keeps the key, in the dry run as in the real run"
    with psycopg.connect(orders_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'favmigrate_claimed%'"
                            ).fetchone()[0] == 0, "the dry run's temporary tables went with its session"


def test_a_dry_run_that_may_not_create_temporary_tables_says_what_it_cannot_count(orders_dsn):
    dsn = ("--dsn", orders_dsn)
    assert orders("apply", *dsn, "-q").exit_code == 0
    role = f"reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(orders_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(conn.info.dbname)))
    try:
        dry = orders("backfill", "--dsn", f"{orders_dsn} user={role}", "--dry-run", "--format", "json")
    finally:
        with psycopg.connect(orders_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    assert dry.exit_code == 0, dry.stderr
    assert "judges each batch against the table alone" in dry.stderr
    assert dry.json()["updated"]["external_ref"] == ROWS


def test_without_a_unique_index_no_duplicate_check_is_composed():
    from favmigrate.backfill import batch_statement
    from favmigrate.spec import Target, as_text, load_spec, read_spec

    orders_target = Target.of(read_spec(Path(SPEC) / "migration.toml"))
    for target, checked in ((orders_target, True), (Target.of(load_spec()), False)):
        for dry_run in (False, True):
            statement = as_text(batch_statement(target, dry_run=dry_run))
            assert ("unique_checked" in statement) is checked, (target.spec.id, dry_run)
            assert ("duplicate_value" in statement) is checked, (target.spec.id, dry_run)


RACE = """
CREATE SEQUENCE race;
CREATE FUNCTION take_the_ref() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- another writer takes the key between the batch's check and its write (nextval is not rolled back)
    IF NEW.external_ref IS NOT NULL AND OLD.external_ref IS NULL AND nextval('race') <= %s THEN
        INSERT INTO orders (data, external_ref) VALUES ('{}', NEW.external_ref);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER take_the_ref BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION take_the_ref();
"""


@pytest.mark.parametrize("races", [1, 3, 1_000_000])
def test_a_unique_key_written_concurrently_retries_the_batch_up_to_retries(orders_dsn, races):
    dsn = ("--dsn", orders_dsn)
    assert orders("apply", *dsn, "-q").exit_code == 0
    with psycopg.connect(orders_dsn, autocommit=True) as conn:
        conn.execute(RACE.replace("%s", str(races)))
    result = orders("backfill", *dsn, "--format", "json", "--retries", "3")
    assert "a unique key was written concurrently; retrying the batch (1/3)" in result.stderr
    with psycopg.connect(orders_dsn) as conn:
        filled = conn.execute("SELECT count(external_ref), count(*) FROM orders").fetchone()
    if races <= 3:
        assert result.exit_code == 0, result.stderr
        assert f"retrying the batch ({races}/3)" in result.stderr and f"({races + 1}/3)" not in result.stderr
        assert result.json()["updated"]["external_ref"] == ROWS
        assert filled == (ROWS, ROWS), "the retry wrote the batch, and the racing inserts were rolled back"
    else:
        assert result.exit_code == 3, result.stderr
        assert "a backfill batch hit a unique key written concurrently on every retry" in result.stderr
        assert filled == (0, ROWS), "the failed batch wrote nothing"


def test_a_multi_column_unique_key_with_an_existing_column_keeps_the_first_row(orders_dsn, tmp_path):
    spec = (Path(SPEC) / "migration.toml").read_text() + (
        '\n[[indexes]]\nname = "orders_channel_status_key"\ncolumns = ["channel", "status"]\nunique = true\n')
    (tmp_path / "migration.toml").write_text(spec)
    (tmp_path / "queries").mkdir()
    (tmp_path / "queries" / "open_shipped.sql").write_text((Path(SPEC) / "queries" / "open_shipped.sql").read_text())
    dsn = ("--dsn", orders_dsn)
    assert cli("--spec", str(tmp_path), "apply", *dsn, "-q").exit_code == 0
    with psycopg.connect(orders_dsn, autocommit=True) as conn:
        conn.execute("UPDATE orders SET data = data - 'channel' WHERE id % 10 = 0")  # no key: never collides
        rows = conn.execute("SELECT id, data->>'channel', status FROM orders ORDER BY id").fetchall()
    first: dict[tuple[str, str], int] = {}
    for row_id, channel, status in rows:
        if channel is not None:
            first.setdefault((channel, status), row_id)
    dry = cli("--spec", str(tmp_path), "backfill", *dsn, "--dry-run", "--format", "json")
    real = cli("--spec", str(tmp_path), "backfill", *dsn, "--format", "json", "--rejects", str(tmp_path / "r.jsonl"))
    assert real.exit_code == 0, real.stderr
    duplicates = sum(1 for _, channel, _ in rows if channel is not None) - len(first)
    assert real.json()["rejected"]["duplicate_value"] == duplicates > 0
    assert real.json()["updated"]["channel"] == len(first)
    assert (dry.json()["rejected"], dry.json()["updated"]) == (real.json()["rejected"], real.json()["updated"])
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    kept = set(first.values())
    assert {int(r["id"]) for r in lines if r["reason"] == "duplicate_value"} == {
        row_id for row_id, channel, _ in rows if channel is not None and row_id not in kept}
    with psycopg.connect(orders_dsn) as conn:
        held = dict(conn.execute("SELECT id, channel FROM orders WHERE channel IS NOT NULL").fetchall())
    assert set(held) == kept
