"""flag: the feature flag the application reads (the spec's ``[flag]`` table), shown, and switched on only
once the migration verifies.

The seed's checklist ends with "enable ENABLE_FAVORITES_PRIORITY"; doing it by hand before the schema is
really there is how a deploy breaks. ``enable`` runs verify first and refuses on any failing check.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import sql

from favmigrate.catalog import TableColumn, table_columns
from favmigrate.datastats import readable_data_stats
from favmigrate.db import SessionLimits, read_only, rows, run_lock, scalar, with_lock_retries
from favmigrate.errors import ExitCode, PreflightFailed, UsageError
from favmigrate.results import CheckReport, CheckResult, CheckStatus, StepOutcome, StepResult
from favmigrate.spec import Aspect, FlagSpec, Target
from favmigrate.state import ensure_history, record_step
from favmigrate.verification import verify_target

ROLLOUT_PREFIXES = ("rollout", "enabled_for")


class FlagAction(StrEnum):
    STATUS = "status"
    ENABLE = "enable"
    DISABLE = "disable"


@dataclass(frozen=True)
class FlagTable:
    """The flag table as the catalogs describe it."""

    name: str  # schema.table, for messages
    identifier: sql.Identifier
    columns: dict[str, TableColumn]
    row_security: bool  # row level security applies to the current role

    def key_unique(self, flag: FlagSpec) -> bool:
        """A unique index on the key column alone: creating the row is INSERT ... ON CONFLICT."""
        return self.columns[flag.key_column].unique_alone

    def required_without_default(self, flag: FlagSpec) -> tuple[TableColumn, ...]:
        """The NOT NULL columns without a default that an INSERT of the flag row must fill."""
        own = (flag.key_column, flag.enabled_column)
        return tuple(c for c in self.columns.values() if c.required and c.name not in own)

    def rollout_columns(self, flag: FlagSpec) -> tuple[str, ...]:
        if flag.rollout_columns:
            return tuple(name for name in flag.rollout_columns if name in self.columns)
        return tuple(name for name in self.columns if name.startswith(ROLLOUT_PREFIXES))


@dataclass(frozen=True)
class FlagState:
    """The flag row as read: whether it exists, its value, when it last changed, its rollout columns."""

    exists: bool
    enabled: bool | None = None
    updated_at: datetime | None = None
    rollout: dict[str, Any] = field(default_factory=dict)
    rows: int = 0  # more than one when the key column is not unique

    def to_dict(self) -> dict[str, Any]:
        return {"exists": self.exists, "enabled": self.enabled,
                "updated_at": self.updated_at.isoformat() if self.updated_at else None,
                "rollout": {name: _plain(value) for name, value in self.rollout.items()}}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, int | float | str | bool | dict) or value is None:
        return value
    return str(value)


@dataclass(frozen=True)
class FlagReport:
    """What `flag status|enable|disable` found and did."""

    action: FlagAction
    table: str
    key: str
    state: FlagState
    before: FlagState | None = None
    created: bool = False
    filled: dict[str, str] = field(default_factory=dict)
    refused: bool = False
    forced: bool = False
    failing: tuple[CheckResult, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return self.before is not None and (self.created or self.before.enabled != self.state.enabled)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.FAILED if self.refused else ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action.value, "table": self.table, "key": self.key, "flag": self.state.to_dict(),
                "before": self.before.to_dict() if self.before else None, "changed": self.changed,
                "created": self.created, "filled": dict(self.filled), "refused": self.refused, "forced": self.forced,
                "failing_checks": [check.to_dict() for check in self.failing], "notes": list(self.notes)}


def flag_spec(target: Target) -> FlagSpec:
    """The spec's [flag] table. Raises UsageError when the spec declares none."""
    if target.spec.flag is None:
        raise UsageError(f"the migration spec {target.spec.id} declares no [flag] table",
                         hint="add [flag] with table, key_column, enabled_column and key to its migration.toml")
    return target.spec.flag


_ROW_SECURITY = sql.SQL(
    """
    SELECT row_security_active(c.oid)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %s AND c.relname = %s
    """
)

def read_flag_table(conn: psycopg.Connection[Any], target: Target, flag: FlagSpec) -> FlagTable:
    """The flag table's columns from the catalogs. Read-only.

    Raises PreflightFailed (exit 2) when the table, its key column or its enabled column is missing, or the
    enabled column is not boolean.
    """
    name = f"{target.schema}.{flag.table}"
    by_name = table_columns(conn, target.schema, flag.table)
    if not by_name:
        raise PreflightFailed(f"table {name} (the spec's [flag] table) does not exist; nothing was changed",
                              hint="check --schema and the database named in the DSN")
    for role, column in (("key_column", flag.key_column), ("enabled_column", flag.enabled_column)):
        if column not in by_name:
            raise PreflightFailed(f"table {name} has no column {column} (the spec's [flag] {role}); nothing was "
                                  "changed")
    if by_name[flag.enabled_column].type != "boolean":
        raise PreflightFailed(f"column {flag.enabled_column} of {name} is {by_name[flag.enabled_column].type}, "
                              "not boolean; nothing was changed")
    row_security = bool(scalar(conn, _ROW_SECURITY, (target.schema, flag.table)))
    return FlagTable(name, target.qualified(flag.table), by_name, row_security)


def _read_state(conn: psycopg.Connection[Any], table: FlagTable, flag: FlagSpec, key: str, *,
                for_update: bool = False) -> FlagState:
    shown = [flag.enabled_column]
    updated_at = flag.updated_at_column if flag.updated_at_column in table.columns else None
    if updated_at:
        shown.append(updated_at)
    rollout = table.rollout_columns(flag)
    shown.extend(rollout)
    query = sql.SQL("SELECT {columns} FROM {table} WHERE {key} = %s{lock}").format(
        columns=sql.SQL(", ").join(sql.Identifier(name) for name in shown), table=table.identifier,
        key=sql.Identifier(flag.key_column), lock=sql.SQL(" FOR UPDATE") if for_update else sql.SQL(""))
    found = rows(conn, query, (key,))
    if not found:
        return FlagState(exists=False)
    row = found[0]
    return FlagState(True, row[flag.enabled_column], row[updated_at] if updated_at else None,
                     {name: row[name] for name in rollout}, len(found))


def _notes(conn: psycopg.Connection[Any], table: FlagTable, state: FlagState, key: str) -> list[str]:
    notes = []
    if table.row_security:
        user = scalar(conn, sql.SQL("SELECT current_user"))
        notes.append(f"row level security on {table.name} applies to role {user}: what it shows may not be the "
                     "row the application reads")
    if state.rows > 1:
        notes.append(f"{state.rows} rows of {table.name} hold the key {key} (the key column is not unique); the "
                     "first is shown")
    return notes


def flag_status(conn: psycopg.Connection[Any], target: Target, *, key: str | None = None) -> FlagReport:
    """The flag row: enabled, last update, rollout columns. Read-only (a READ ONLY transaction).

    Raises UsageError (no [flag] in the spec) or PreflightFailed (table or columns missing).
    """
    flag = flag_spec(target)
    chosen = key or flag.key
    with read_only(conn):
        table = read_flag_table(conn, target, flag)
        state = _read_state(conn, table, flag, chosen)
        notes = _notes(conn, table, state, chosen)
    if not state.exists:
        notes.append(f"no row of {table.name} has {flag.key_column} = {chosen!r}: the application reads the flag "
                     "as off; `favmigrate flag disable` creates it")
    return FlagReport(FlagAction.STATUS, table.name, chosen, state, notes=tuple(notes))


def _blocking_checks(conn: psycopg.Connection[Any], target: Target, report: CheckReport, *,
                     require_backfill: bool) -> tuple[tuple[CheckResult, ...], tuple[str, ...]]:
    """The checks that stop `enable` (every failing one; with ``require_backfill`` the backfill-pending
    warning while rows still wait for backfill), and the warnings it only mentions."""
    blocking = [check for check in report.checks if check.failed]
    mentioned = []
    pending = f":{Aspect.BACKFILL_PENDING.value}"
    for check in report.checks:
        if check.status is not CheckStatus.WARN:
            continue
        if require_backfill and check.id.endswith(pending) and _rows_waiting_for_backfill(conn, target):
            blocking.append(check)
        else:
            mentioned.append(f"{check.id}: {check.message}")
    return tuple(blocking), tuple(mentioned)


def _rows_waiting_for_backfill(conn: psycopg.Connection[Any], target: Target) -> bool:
    """Rows whose legacy values a backfill run would still copy (not those it rejected). Read-only."""
    with read_only(conn):
        stats, _ = readable_data_stats(conn, target)
    return stats is None or stats.backfill_pending > stats.backfill_rejected


def change_flag(conn: psycopg.Connection[Any], target: Target, action: FlagAction, *, key: str | None = None,
                force: bool = False, require_backfill: bool = False, limits: SessionLimits | None = None) -> FlagReport:
    """Turn the flag on (after verify passes, unless ``force``) or off, creating its row (disabled) when
    missing. Writes: the flag row and one favmigrate.history row per change, in one transaction.

    Takes the run lock shared with apply, backfill and rollback. Raises UsageError (no [flag]), PreflightFailed
    (table or columns missing, a required column that cannot be filled, row level security applying to the
    role), LockHeld (run lock or row lock not granted).
    """
    assert action is not FlagAction.STATUS
    flag = flag_spec(target)
    chosen = key or flag.key
    limits = limits or SessionLimits()
    with run_lock(conn, target.lock_name, wait_s=limits.lock_wait_s):
        table = read_flag_table(conn, target, flag)
        if table.row_security:
            user = scalar(conn, sql.SQL("SELECT current_user"))
            raise PreflightFailed(
                f"row level security on {table.name} applies to role {user}: its policies could hide the flag row "
                "or refuse the change; nothing was changed",
                hint="run it as the table owner or a role with BYPASSRLS (Supabase: the postgres role)")
        failing: tuple[CheckResult, ...] = ()
        warnings: tuple[str, ...] = ()
        if action is FlagAction.ENABLE:
            failing, warnings = _blocking_checks(conn, target, verify_target(conn, target),
                                                 require_backfill=require_backfill)
            if failing and not force:
                with read_only(conn):
                    state = _read_state(conn, table, flag, chosen)
                return FlagReport(action, table.name, chosen, state, refused=True, failing=failing, notes=(
                    f"{chosen} left {'on' if state.enabled else 'off'}: fix the failing checks (or --force)",
                    *warnings))
        ensure_history(conn)
        started = time.monotonic()

        def change() -> FlagReport:
            with conn.transaction():
                report = _change(conn, target, table, flag, chosen, action, failing, started)
            return dataclasses.replace(report, notes=(*report.notes, *warnings))

        report, _ = with_lock_retries(conn, change, policy=limits.retry_policy, what=f"the {table.name} row")
    return report


def _change(conn: psycopg.Connection[Any], target: Target, table: FlagTable, flag: FlagSpec, key: str,
            action: FlagAction, failing: tuple[CheckResult, ...], started: float) -> FlagReport:
    enabled = action is FlagAction.ENABLE
    before = _read_state(conn, table, flag, key, for_update=True)
    filled: dict[str, str] = {}
    created = False
    if not before.exists:
        filled = _fill(table, flag, key)
        created = _insert_disabled(conn, table, flag, key, filled)
    assignments = [sql.SQL("{} = %(enabled)s").format(sql.Identifier(flag.enabled_column))]
    if flag.updated_at_column in table.columns:
        assignments.append(sql.SQL("{} = now()").format(sql.Identifier(flag.updated_at_column)))
    conn.execute(sql.SQL("UPDATE {table} SET {assignments} WHERE {key} = %(key)s "
                         "AND {enabled} IS DISTINCT FROM %(enabled)s").format(
        table=table.identifier, assignments=sql.SQL(", ").join(assignments), key=sql.Identifier(flag.key_column),
        enabled=sql.Identifier(flag.enabled_column)), {"key": key, "enabled": enabled})
    after = _read_state(conn, table, flag, key)
    notes = _notes(conn, table, after, key)
    if filled:
        notes.append("created the row with " + ", ".join(f"{name} = {value!r}" for name, value in filled.items())
                     + " (required, no default: filled from the key)")
    if failing:
        notes.append(f"forced past {len(failing)} failing check(s): " + ", ".join(check.id for check in failing))
    report = FlagReport(action, table.name, key, after, before, created, filled, forced=bool(failing),
                        failing=failing, notes=tuple(notes))
    if report.changed:
        was = "missing" if not before.exists else ("on" if before.enabled else "off")
        detail = f"{key}: {was} -> {'on' if after.enabled else 'off'}"
        if failing:
            detail += f" (--force past {len(failing)} failing checks: {', '.join(c.id for c in failing)})"
        record_step(conn, target, run_id=uuid.uuid4(), command="flag", checksum=None, result=StepResult(
            f"flag-{action.value}", StepOutcome.APPLIED, detail, duration_s=time.monotonic() - started))
    elif before.enabled == enabled:
        notes.append(f"{key} was already {'on' if enabled else 'off'}: nothing changed")
        report = FlagReport(action, table.name, key, after, before, notes=tuple(notes))
    return report


def _fill(table: FlagTable, flag: FlagSpec, key: str) -> dict[str, str]:
    """Values for the required columns without a default: the key, for text columns. Raises PreflightFailed
    naming a required column of another type."""
    filled = {}
    for column in table.required_without_default(flag):
        if column.category != "S":
            raise PreflightFailed(
                f"cannot create the flag row {key!r}: column {column.name} ({column.type}) of {table.name} is NOT "
                "NULL without a default; nothing was changed",
                hint="insert the row yourself, then run `favmigrate flag` again")
        filled[column.name] = key
    return filled


def _insert_disabled(conn: psycopg.Connection[Any], table: FlagTable, flag: FlagSpec, key: str,
                     filled: dict[str, str]) -> bool:
    """Insert the flag row, disabled; an upsert that leaves a row created meanwhile alone. True when inserted."""
    values: dict[str, Any] = {flag.key_column: key, flag.enabled_column: False, **filled}
    names = sql.SQL(", ").join(sql.Identifier(name) for name in values)
    placeholders = sql.SQL(", ").join(sql.Placeholder() for _ in values)
    params = list(values.values())
    if table.key_unique(flag):
        statement = sql.SQL("INSERT INTO {table} ({names}) VALUES ({values}) ON CONFLICT ({key}) DO NOTHING").format(
            table=table.identifier, names=names, values=placeholders, key=sql.Identifier(flag.key_column))
    else:
        # no unique index to conflict on: serialise flag creations by a transaction-level advisory lock
        conn.execute(sql.SQL("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"), (f"{table.name}:{key}",))
        statement = sql.SQL("INSERT INTO {table} ({names}) SELECT {values} "
                            "WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE {key} = %s)").format(
            table=table.identifier, names=names, values=placeholders, key=sql.Identifier(flag.key_column))
        params.append(key)
    return conn.execute(statement, params).rowcount == 1
