"""verify --smoke: the database-side scenarios of the seed's verification plan, run against the real tables
inside one transaction that is always rolled back.

Scenarios, generated from the spec for each of its columns and foreign keys (Phase 4 in brackets):

1. insert a row referencing a fresh referenced row: the foreign key columns hold the values, the columns
   with a default hold it [a request with a preferred mechanic; the window defaults to 10];
2. set each other column of the migration to a value it accepts: it reads back [priority_notified_at];
3. the join from the table to each referenced table returns the row [the analytics join];
4. a reference to a row that does not exist is rejected with SQLSTATE 23503;
5. deleting the referenced row does what ON DELETE says [preferred_mechanic_id becomes NULL].

Rows are built from each table's own columns: the ones given, then every NOT NULL column without a default
(the real tables have some the spec does not know): its value copied from an existing row, or, for a
column unique on its own or a table without rows, made up for its type. The messages say which.
Triggers fire inside the transaction; sequences it draws from (identity columns) stay advanced.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from favmigrate.catalog import TableColumn, table_columns
from favmigrate.coltypes import Kind
from favmigrate.db import scalar, set_local
from favmigrate.results import CheckResult, CheckStatus, plural
from favmigrate.spec import ColumnSpec, ForeignKeySpec, OnDelete, Target

FOREIGN_KEY_VIOLATION = "23503"
RESTRICT_VIOLATION = "23001"  # how PostgreSQL 18 reports an ON DELETE RESTRICT refusal (23503 before)
SMOKE_LOCK_TIMEOUT = "5s"  # a scenario waiting longer for a row lock fails instead of queueing writers
READ_BACK_TIMESTAMP = dt.datetime(2025, 11, 2, 1, 0, tzinfo=dt.UTC)  # the seed's example
PASS, FAIL, SKIP = CheckStatus.PASS, CheckStatus.FAIL, CheckStatus.SKIP


class RowNotBuilt(Exception):
    """A test row could not be inserted (a required column of an unknown type, a CHECK it violates ...)."""


@dataclass(frozen=True)
class BuiltRow:
    """A row the smoke test inserted: its key, and how each required column got its value."""

    table: str
    key: Any
    filled: tuple[str, ...]  # "customer_id (copied from an existing row)", ...

    def described(self) -> str:
        return f"{self.table}: " + (", ".join(self.filled) or "no required column without a default")


def _made_up(column: TableColumn, table: sql.Identifier) -> sql.Composable | None:
    """A value of ``column``'s type that no other row holds, or None for a type this does not know."""
    if column.first_label is not None:
        return sql.Literal(column.first_label)
    if column.type == "uuid":
        return sql.Literal(uuid.uuid4())
    if column.category == "S":
        return sql.Literal(f"favmigrate-smoke-{uuid.uuid4().hex[:12]}")
    if column.category == "N":
        return sql.SQL("(SELECT coalesce(max({col}), 0) + 1 FROM {table})").format(
            col=sql.Identifier(column.name), table=table)
    if column.category == "B":
        return sql.Literal(False)
    if column.category == "D":
        return sql.SQL("now()")
    if column.category == "A":
        return sql.Literal("{}")
    if column.type in ("json", "jsonb"):
        return sql.Literal("{}")
    return None


def insert_row(conn: psycopg.Connection[Any], schema: str, table: str, key: str,
               given: dict[str, Any]) -> BuiltRow:
    """Insert one row into ``schema.table`` with the ``given`` values and every required column filled;
    return its ``key`` column. Writes (the caller's transaction). Raises RowNotBuilt."""
    identifier = sql.Identifier(schema, table)
    columns = table_columns(conn, schema, table)
    required = [c for c in columns.values() if c.required and not c.generated and c.name not in given]
    source_exists = bool(scalar(conn, sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(identifier)))
    names = [sql.Identifier(name) for name in given]
    values: list[sql.Composable] = [sql.Literal(value) for value in given.values()]
    filled = []
    for column in required:
        names.append(sql.Identifier(column.name))
        # a column of a multi-column unique index is copied: the row differs in the members given or defaulted
        if source_exists and not column.unique_alone:
            values.append(sql.SQL("source.{}").format(sql.Identifier(column.name)))
            filled.append(f"{column.name} (copied from an existing row)")
            continue
        made_up = _made_up(column, identifier)
        if made_up is None:
            raise RowNotBuilt(f"cannot make up a value for {schema}.{table}.{column.name} ({column.type}), NOT NULL "
                              "without a default" + ("" if source_exists else ", in an empty table"))
        values.append(made_up)
        filled.append(f"{column.name} (made up: {made_up.as_string(conn)})")
    source = (sql.SQL(" FROM (SELECT * FROM {} LIMIT 1) AS source").format(identifier) if source_exists
              else sql.SQL(""))
    statement = sql.SQL("INSERT INTO {table} ({names}) SELECT {values}{source} RETURNING {key}").format(
        table=identifier, names=sql.SQL(", ").join(names), values=sql.SQL(", ").join(values), source=source,
        key=sql.Identifier(key))
    try:
        with conn.transaction():
            found = conn.execute(statement).fetchone()
    except psycopg.Error as exc:
        raise RowNotBuilt(f"inserting a test row into {schema}.{table} failed: "
                          f"{str(exc).splitlines()[0]} (SQLSTATE {exc.sqlstate})") from None
    assert found is not None
    return BuiltRow(table, found[0], tuple(filled))


def accepted_value(column: ColumnSpec) -> Any:
    """A value ``column`` accepts (within min..max, allowed, max_length), other than its default. Pure."""
    kind = column.type.kind
    if kind is Kind.TIMESTAMPTZ:
        return READ_BACK_TIMESTAMP
    if kind is Kind.DATE:
        return READ_BACK_TIMESTAMP.date()
    if kind is Kind.UUID:
        return uuid.uuid4()
    if kind is Kind.BOOLEAN:
        return column.default is not True
    if kind is Kind.TEXT:
        candidates = column.allowed or ("favmigrate smoke",)
        text = next((c for c in candidates if c != column.default), candidates[0])
        return text[: column.max_length] if column.max_length else text
    low = column.min if column.min is not None else 1
    high = column.max if column.max is not None else low + 1
    value = low if low != column.default else high
    return Decimal(value) if kind is Kind.NUMERIC else int(value)


def _missing_reference(conn: psycopg.Connection[Any], target: Target, fk: ForeignKeySpec,
                       referenced: TableColumn) -> Any:
    if referenced.type == "uuid":
        return uuid.uuid4()
    return scalar(conn, sql.SQL("SELECT coalesce(max({col}), 0) + 1 FROM {table}").format(
        col=sql.Identifier(fk.referenced_column), table=target.qualified(fk.referenced_table)))


def _sqlstate_of(conn: psycopg.Connection[Any], statement: sql.Composed, params: Any = None) -> str | None:
    """Run ``statement`` in a savepoint: None when it succeeds, else its SQLSTATE (the savepoint rolled back)."""
    try:
        with conn.transaction():
            conn.execute(statement, params)
    except psycopg.Error as exc:
        if isinstance(exc, pg_errors.LockNotAvailable):
            raise
        return exc.sqlstate or "?"
    return None


@dataclass
class _Scenario:
    conn: psycopg.Connection[Any]
    target: Target
    key: Any = None

    @property
    def table(self) -> sql.Identifier:
        return self.target.table

    @property
    def spec_key(self) -> sql.Identifier:
        return sql.Identifier(self.target.spec.primary_key)

    def read(self, column: str) -> Any:
        return scalar(self.conn, sql.SQL("SELECT {col} FROM {table} WHERE {key} = %s").format(
            col=sql.Identifier(column), table=self.table, key=self.spec_key), (self.key,))

    def exists(self) -> bool:
        return bool(scalar(self.conn, sql.SQL("SELECT EXISTS (SELECT 1 FROM {table} WHERE {key} = %s)").format(
            table=self.table, key=self.spec_key), (self.key,)))


def smoke_checks(conn: psycopg.Connection[Any], target: Target) -> tuple[CheckResult, ...]:
    """Run the scenarios in one transaction that is always rolled back; one check per scenario and object.

    Writes rows, fires the tables' triggers, then rolls everything back (sequences excepted). The caller
    refuses read-only servers. Raises LockNotAvailable when a row lock waits longer than SMOKE_LOCK_TIMEOUT.
    """
    with conn.transaction(force_rollback=True):
        set_local(conn, lock_timeout=SMOKE_LOCK_TIMEOUT)
        return tuple(_run(conn, target))


def _run(conn: psycopg.Connection[Any], target: Target) -> Iterator[CheckResult]:
    spec = target.spec
    foreign_keys = spec.foreign_keys
    referenced: dict[str, BuiltRow] = {}
    try:
        for fk in foreign_keys:
            referenced[fk.name] = insert_row(conn, target.schema, fk.referenced_table, fk.referenced_column, {})
        row = insert_row(conn, target.schema, spec.table, spec.primary_key,
                         {fk.column: referenced[fk.name].key for fk in foreign_keys})
    except RowNotBuilt as exc:
        yield CheckResult("smoke:insert:row", FAIL, "a test row inserted", "not inserted", str(exc),
                          hint="the tables have a required column favmigrate cannot fill; see the message")
        return
    scenario = _Scenario(conn, target, row.key)
    yield from _inserted(scenario, foreign_keys, referenced, row)
    for column in spec.columns:
        if column.foreign_key is None:
            yield _read_back(scenario, column)
    for fk in foreign_keys:
        yield _joined(scenario, fk, referenced[fk.name].key)
    ref_columns = {fk.name: table_columns(conn, target.schema, fk.referenced_table)[fk.referenced_column]
                   for fk in foreign_keys}
    for fk in foreign_keys:
        yield _missing_rejected(scenario, fk, ref_columns[fk.name])
    for fk in foreign_keys:
        yield _on_delete(scenario, fk, referenced[fk.name].key)


def _inserted(scenario: _Scenario, foreign_keys: tuple[ForeignKeySpec, ...], referenced: dict[str, BuiltRow],
              row: BuiltRow) -> Iterator[CheckResult]:
    spec = scenario.target.spec
    built = [row, *(referenced[fk.name] for fk in foreign_keys)]
    yield CheckResult("smoke:insert:row", PASS, "a test row inserted", f"{spec.primary_key} = {row.key}",
                      "rows built from their tables' required columns: " + "; ".join(b.described() for b in built))
    for fk in foreign_keys:
        value, expected = scenario.read(fk.column), referenced[fk.name].key
        yield CheckResult(f"smoke:insert:{fk.column}", PASS if value == expected else FAIL, str(expected), str(value),
                          "" if value == expected else f"{fk.column} does not hold the value inserted")
    for column in spec.columns:
        if column.default is None:
            continue
        value = scenario.read(column.name)
        ok = value == column.default
        yield CheckResult(f"smoke:insert:{column.name}:default", PASS if ok else FAIL, column.default_text or "",
                          str(value), "" if ok else f"{column.name} left out of the INSERT is not its default")


def _read_back(scenario: _Scenario, column: ColumnSpec) -> CheckResult:
    check_id = f"smoke:set-read-back:{column.name}"
    value = accepted_value(column)
    state = _sqlstate_of(scenario.conn, sql.SQL("UPDATE {table} SET {col} = %s WHERE {key} = %s").format(
        table=scenario.table, col=sql.Identifier(column.name), key=scenario.spec_key), (value, scenario.key))
    if state is not None:
        return CheckResult(check_id, FAIL, str(value), f"SQLSTATE {state}", f"setting {column.name} was refused")
    found = scenario.read(column.name)
    ok = found == value
    return CheckResult(check_id, PASS if ok else FAIL, str(value), str(found),
                       "" if ok else f"{column.name} reads back another value")


def _joined(scenario: _Scenario, fk: ForeignKeySpec, referenced_key: Any) -> CheckResult:
    target = scenario.target
    count = scalar(scenario.conn, sql.SQL(
        "SELECT count(*) FROM {table} AS t JOIN {ref} AS r ON r.{ref_col} = t.{col} WHERE t.{key} = %s").format(
        table=target.table, ref=target.qualified(fk.referenced_table), ref_col=sql.Identifier(fk.referenced_column),
        col=sql.Identifier(fk.column), key=scenario.spec_key), (scenario.key,))
    ok = count == 1
    return CheckResult(f"smoke:join:{fk.column}", PASS if ok else FAIL, "1 row", plural(count, "row"),
                       "" if ok else f"the join {target.spec.table}.{fk.column} = {fk.referenced_table}."
                       f"{fk.referenced_column} does not return the test row ({referenced_key})")


def _missing_rejected(scenario: _Scenario, fk: ForeignKeySpec, referenced: TableColumn) -> CheckResult:
    check_id = f"smoke:reject-missing-reference:{fk.column}"
    missing = _missing_reference(scenario.conn, scenario.target, fk, referenced)
    state = _sqlstate_of(scenario.conn, sql.SQL("UPDATE {table} SET {col} = %s WHERE {key} = %s").format(
        table=scenario.table, col=sql.Identifier(fk.column), key=scenario.spec_key), (missing, scenario.key))
    ok = state == FOREIGN_KEY_VIOLATION
    actual = "accepted" if state is None else f"SQLSTATE {state}"
    return CheckResult(check_id, PASS if ok else FAIL, f"SQLSTATE {FOREIGN_KEY_VIOLATION}", actual,
                       "" if ok else f"{fk.column} = {missing}, a {fk.referenced_table} that does not exist, was "
                       f"{'accepted' if state is None else 'refused for another reason'}",
                       hint="" if ok else f"check the foreign key {fk.name}")


def _on_delete(scenario: _Scenario, fk: ForeignKeySpec, referenced_key: Any) -> CheckResult:
    check_id = f"smoke:on-delete:{fk.column}"
    target = scenario.target
    state = _sqlstate_of(scenario.conn, sql.SQL("DELETE FROM {ref} WHERE {ref_col} = %s").format(
        ref=target.qualified(fk.referenced_table), ref_col=sql.Identifier(fk.referenced_column)), (referenced_key,))
    action = fk.on_delete
    if action in (OnDelete.NO_ACTION, OnDelete.RESTRICT):
        refusals: tuple[str, ...] = (FOREIGN_KEY_VIOLATION,)
        if action is OnDelete.RESTRICT:
            refusals += (RESTRICT_VIOLATION,)
        ok, expected = state in refusals, f"delete refused (SQLSTATE {' or '.join(refusals)})"
        actual = "deleted" if state is None else f"SQLSTATE {state}"
    elif state is not None:
        ok, expected, actual = False, f"ON DELETE {action.value}", f"delete refused: SQLSTATE {state}"
    elif action is OnDelete.CASCADE:
        gone = not scenario.exists()
        ok, expected, actual = gone, "the row deleted with it", "deleted" if gone else "still there"
    else:
        value = scenario.read(fk.column)
        if action is OnDelete.SET_NULL:
            ok, expected = value is None, "NULL"
        else:
            ok, expected = value != referenced_key, "its default"
        actual = "NULL" if value is None else str(value)
    return CheckResult(check_id, PASS if ok else FAIL, expected, actual,
                       "" if ok else f"deleting the referenced {fk.referenced_table} row did not do "
                       f"ON DELETE {action.value} to {fk.column}")


def skipped_smoke(reason: str) -> tuple[CheckResult, ...]:
    """The smoke check reported when the scenarios cannot run (the migration's columns are missing)."""
    return (CheckResult("smoke:insert:row", SKIP, message=reason),)


