"""rollback: put the application back on the Phase 3 code path, which reads the legacy metadata keys, losing nothing.

Before anything is dropped, every value the migration's columns hold is written back into ``metadata``
under its legacy key (only rows that need it, in keyset batches), merged into the existing object. A
legacy key that already holds a different value is a conflict: kept and reported, or overwritten with
``prefer_columns``. Then the indexes (CONCURRENTLY), the foreign key and the columns are dropped with
their paired down SQL, each under lock_timeout with retries, through apply's StepRunner and history.
Writes made while rollback runs are not lost: before the first pass, a trigger records the ids of rows whose
columns the application inserts or updates into a small change log (``favmigrate.rollback_changes_*``);
after the indexes and the foreign key are gone, a second pass preserves the logged rows, and the last
one runs in the same transaction as the column drop, under the table's ACCESS EXCLUSIVE lock (taken with
lock_timeout, the whole transaction retried with backoff), so no write falls between the two. The work
under that lock is bounded by the writes since the previous pass, never by the table's size. The trigger
and its log go with the columns, or are removed when the run stops early (a re-run removes what a crash
left). The backfill's state for this migration (checkpoint, rejects) is cleared, and the rolled-back
state is verified (verify --absent).

Each value is written back as its type's canonical JSON, and "same value" means what the backfill would read
from the legacy key (a UUID in any letter case, an integral JSON number or a string of digits, an ISO-8601
time compared as an instant ...): both come from favmigrate.coltypes, judged by the database in the batch query.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import partial
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from favmigrate.backfill_sql import jsonb_object
from favmigrate.catalog import Snapshot, read_snapshot, relation_pages, require_tables, rows_per_page
from favmigrate.changelog import (
    CHANGE_LOG_TRIGGER,
    OWN_WRITES_SETTING,
    change_log_table,
    mark_own_writes,
    track_statements,
    untrack_statements,
)
from favmigrate.checks import is_present
from favmigrate.db import (
    BlockerWatch,
    RetryPolicy,
    SessionLimits,
    connect_like,
    ms,
    rows,
    run_in_parallel,
    run_lock,
    scalar,
    set_session,
    with_lock_retries,
)
from favmigrate.errors import ConnectionFailed, FavmigrateError, Interrupted, PreflightFailed, StepFailed
from favmigrate.ops import Step, down_steps, extra_constraints
from favmigrate.planner import PlannedStep
from favmigrate.results import CheckReport, RunReport, StepOutcome, StepResult, plural
from favmigrate.runner import Event, EventKind, OnEvent, RunnerOptions, StepRunner, session_statements
from favmigrate.spec import ColumnSpec, LockKind, MigrationSpec, ObjectKind, Target, as_text
from favmigrate.state import HISTORY_SCHEMA, create_tool_tables, ensure_history
from favmigrate.verification import checks_for

SAMPLE_LIMIT = 20  # conflicts and non-object rows listed in a report (all are counted)
# The backfill's resumable state (favmigrate/backfill.py): one row per migration and target schema in each.
BACKFILL_STATE_TABLES = ("backfill_checkpoint", "backfill_rejects")
T = TypeVar("T")

# Rollback's own steps, around the spec's down steps. They are not SQL files: the executor runs them.
TRACK = Step(name="track-late-writes", lock=LockKind.BRIEF)
PRESERVE = Step(name="preserve-metadata", lock=LockKind.BATCHED)
PRESERVE_LATE = Step(name="preserve-late-writes", lock=LockKind.BATCHED)
CLEAR_STATE = Step(name="clear-backfill-state", lock=LockKind.BRIEF)


class NotConfirmed(FavmigrateError):
    """The rollback was not confirmed (declined, or no terminal to ask on); nothing was changed."""


@dataclass(frozen=True)
class RollbackOptions:
    limits: SessionLimits = field(default_factory=SessionLimits)
    batch_size: int = 1_000  # rows per page range (PostgreSQL 14+), else rows holding values per keyset batch
    sleep_s: float = 0.0
    prefer_columns: bool = False
    discard_data: bool = False
    dry_run: bool = False
    jobs: int = 1  # connections writing page ranges at once in the first pass (PostgreSQL 14+)

    def runner_options(self) -> RunnerOptions:
        """The StepRunner's options: the same timeouts, retries and run-lock wait."""
        return RunnerOptions(limits=self.limits, batch_size=self.batch_size)


# ---------------------------------------------------------------- what each key holds (pure)


@dataclass(frozen=True)
class ColumnValue:
    """One column value of a row as the batch query reads it, judged by the database with coltypes' rules."""

    json: str  # the canonical JSON text it is written back as
    legacy_read: str | None  # what backfill reads from the legacy key, as canonical JSON (None: nothing)
    at_default: bool = False  # a column with a default holds it

    @property
    def same(self) -> bool:
        """The legacy key holds a value that reads (as backfill reads it) as this one: canonical JSON is one
        text per value, so equal texts are equal values."""
        return self.legacy_read == self.json

    @property
    def readable(self) -> bool:
        """The legacy key holds a value backfill can read at all."""
        return self.legacy_read is not None

    @property
    def decoded(self) -> Any:
        """The canonical JSON as a Python value (for reports); a numeric as its text, with the column's scale
        (a float would show 1234567.10 as 1234567.1, and lose digits past 15)."""
        return json.loads(self.json, parse_float=str)


def values_to_preserve(spec: MigrationSpec, row: Mapping[str, ColumnValue | None]) -> dict[str, ColumnValue]:
    """The column values of one row that rollback writes back (``row``: column name -> value). Pure.

    A column with a default (the window) counts only when it differs from the default or when the row
    holds another value: a default window on a row without priority data means nothing.
    """
    others = any(row.get(c.name) is not None for c in spec.columns if c.default is None)
    kept: dict[str, ColumnValue] = {}
    for column in spec.columns:
        value = row.get(column.name)
        if value is None:
            continue
        if not others and value.at_default:
            continue
        kept[column.name] = value
    return kept


class KeyState(StrEnum):
    MISSING = "missing"  # key absent or JSON null: the value is written
    SAME = "same"  # already holds the same value: nothing to do
    CONFLICT = "conflict"  # holds a different value: kept, or overwritten with prefer_columns
    NOT_OBJECT = "not-object"  # metadata is not a JSON object: reported, never written
    # holds the column's earlier value (written back by an earlier pass) and the application has changed the
    # column since: the new value is written
    STALE = "stale"


def classify(spec: MigrationSpec, metadata_type: str | None, legacy: Mapping[str, Any],
             values: Mapping[str, ColumnValue]) -> dict[str, KeyState]:
    """For each column value to preserve, what its legacy key holds. Pure.

    ``metadata_type`` is jsonb_typeof(metadata) (None for SQL NULL, written as a new object);
    ``legacy`` maps legacy key -> its JSON value (None when absent or JSON null).
    """
    states: dict[str, KeyState] = {}
    for name, value in values.items():
        column = spec.column(name)
        raw = legacy.get(column.legacy_key)
        if metadata_type not in (None, "object"):
            states[name] = KeyState.NOT_OBJECT
        elif raw is None:
            states[name] = KeyState.MISSING
        elif value.same:
            states[name] = KeyState.SAME
        else:
            states[name] = KeyState.CONFLICT
    return states


def supersede(states: Mapping[str, KeyState], values: Mapping[str, ColumnValue],
              earlier: Mapping[str, Sequence[str | None]]) -> dict[str, KeyState]:
    """``states`` with each conflict whose legacy key reads as one of the column's ``earlier`` values (the
    values the application's logged writes replaced, as canonical JSON) marked STALE: metadata holds what the
    column held before the write, so the column's value is the newer one. Pure.
    """
    found = dict(states)
    for name, state in states.items():
        legacy = values[name].legacy_read
        if state is KeyState.CONFLICT and legacy is not None and legacy in earlier.get(name, ()):
            found[name] = KeyState.STALE
    return found


def patch_for(spec: MigrationSpec, values: Mapping[str, ColumnValue], states: Mapping[str, KeyState],
              prefer_columns: bool) -> str | None:
    """The JSON object text to merge into one row's metadata (None: the row is not touched). Pure.

    Built from the canonical JSON texts as they are: decoding them would lose a numeric's scale.
    """
    wanted = {KeyState.MISSING, KeyState.STALE} | ({KeyState.CONFLICT} if prefer_columns else set())
    members = [f"{json.dumps(spec.column(name).legacy_key)}: {value.json}"
               for name, value in values.items() if states[name] in wanted]
    return "{" + ", ".join(members) + "}" if members else None


# ---------------------------------------------------------------- what a pass found


@dataclass(frozen=True)
class KeyCount:
    """Per legacy key: how the column values compare with what metadata holds."""

    key: str
    column: str
    missing: int = 0
    same: int = 0
    conflict: int = 0
    conflict_unreadable: int = 0  # of the conflicts: the legacy value is one the backfill cannot read
    not_object: int = 0
    stale: int = 0
    # of the missing, conflicting and not-object values: those equal to the column's default (the window's 10)
    default_missing: int = 0
    default_conflict: int = 0
    default_not_object: int = 0

    def lost(self, *, discard: bool, prefer_columns: bool) -> int:
        """Values metadata will not hold after the drop. A value at its column's default is not data: a key
        left out reads as the default."""
        conflict = self.conflict - self.default_conflict
        if discard:
            return self.missing - self.default_missing + conflict + self.not_object - self.default_not_object
        return self.not_object - self.default_not_object + (0 if prefer_columns else conflict)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "column": self.column, "missing": self.missing, "same": self.same,
                "conflict": self.conflict, "conflict_unreadable": self.conflict_unreadable,
                "not_object": self.not_object, "stale": self.stale,
                "at_default": {"missing": self.default_missing, "conflict": self.default_conflict,
                               "not_object": self.default_not_object}}


@dataclass(frozen=True)
class CarriedJson:
    """A legacy JSON value rollback only carries, never decodes: an array, an object (nested to any depth) or a
    value longer than PREVIEW_CHARS. It never means a column value. ``text`` is its JSON text, cut at
    PREVIEW_CHARS characters; ``size`` its full size in bytes.
    """

    text: str
    size: int
    truncated: bool


PREVIEW_CHARS = 200  # of a legacy value in a report; every value the backfill can read is shorter
COLUMN_FIELDS = 5  # what batch_query selects per column


def legacy_from_text(text: str | None, size: int | None) -> Any:
    """A legacy value as fetched (its JSON text cut at PREVIEW_CHARS + 1 characters, and its size in bytes):
    a short JSON scalar decoded (None for JSON null or an absent key), anything else a CarriedJson. Pure.
    """
    if text is None:
        return None
    truncated = len(text) > PREVIEW_CHARS
    if truncated or text[0] in "[{":
        return CarriedJson(text[:PREVIEW_CHARS], size or len(text.encode()), truncated)
    return json.loads(text)  # a scalar of at most PREVIEW_CHARS characters: nothing in it can nest


@dataclass(frozen=True)
class Conflict:
    """A legacy key holding another value than its column (kept unless prefer_columns)."""

    row: str
    key: str
    metadata_value: Any  # as legacy_from_text returns it
    column_value: Any

    def to_dict(self) -> dict[str, Any]:
        """The metadata value as JSON text, cut at PREVIEW_CHARS characters, with its size in bytes."""
        if isinstance(self.metadata_value, CarriedJson):
            carried = self.metadata_value
        else:
            text = json.dumps(self.metadata_value, ensure_ascii=False)
            carried = CarriedJson(text, len(text.encode()), False)
        return {"row": self.row, "key": self.key, "metadata_json": carried.text, "metadata_bytes": carried.size,
                "metadata_truncated": carried.truncated, "column_value": self.column_value}


@dataclass(frozen=True)
class Preservation:
    """One pass over the rows holding column values: a survey (dry run, plan) or a real, writing pass."""

    keys: tuple[KeyCount, ...]
    prefer_columns: bool
    rows_examined: int = 0  # rows holding at least one value to preserve
    rows_to_write: int = 0  # of those, rows whose metadata lacks a value (or, prefer_columns, holds another)
    rows_written: int = 0  # rows updated by this pass (0 for a survey)
    not_object_rows: int = 0
    conflicts: tuple[Conflict, ...] = ()  # the first SAMPLE_LIMIT
    not_object_sample: tuple[str, ...] = ()  # the first SAMPLE_LIMIT row keys

    @property
    def values_to_write(self) -> int:
        return sum(k.missing + k.stale + (k.conflict if self.prefer_columns else 0) for k in self.keys)

    @property
    def values_present(self) -> int:
        return sum(k.same for k in self.keys)

    @property
    def conflict_count(self) -> int:
        return sum(k.conflict for k in self.keys)

    @property
    def unreadable_conflicts(self) -> int:
        return sum(k.conflict_unreadable for k in self.keys)

    def values_lost(self, discard: bool = False) -> int:
        """Column values that metadata will not hold after the drop (values at their default not counted)."""
        return sum(k.lost(discard=discard, prefer_columns=self.prefer_columns) for k in self.keys)

    def summary(self, *, written: bool) -> str:
        verb = "written" if written else "to write"
        rows = self.rows_written if written else self.rows_to_write
        text = (f"{plural(self.values_to_write, 'value')} {verb} in the metadata of {plural(rows, 'row')}, "
                f"{self.values_present:,} already there")
        stale = sum(k.stale for k in self.keys)
        if stale:
            text += (f" ({plural(stale, 'value')} the application changed after an earlier pass wrote the "
                     "previous one)")
        if self.conflict_count:
            fate = "overwritten (--prefer-columns)" if self.prefer_columns else "kept: metadata holds another value"
            text += f", {plural(self.conflict_count, 'conflict')} {fate}"
            if self.unreadable_conflicts:
                text += f" ({self.unreadable_conflicts:,} of them unreadable legacy values, e.g. a window \"ten\")"
        if self.not_object_rows:
            text += f", {plural(self.not_object_rows, 'row')} whose metadata is not a JSON object left as they are"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_examined": self.rows_examined, "rows_to_write": self.rows_to_write,
            "rows_written": self.rows_written,
            "values_to_write": self.values_to_write, "values_present": self.values_present,
            "conflicts": self.conflict_count, "unreadable_conflicts": self.unreadable_conflicts,
            "conflict_resolution": "column" if self.prefer_columns else "metadata",
            "values_lost": self.values_lost(), "not_object_rows": self.not_object_rows,
            "keys": [k.to_dict() for k in self.keys],
            "conflict_sample": [c.to_dict() for c in self.conflicts],
            "not_object_sample": list(self.not_object_sample),
        }


@dataclass
class _Tally:
    spec: MigrationSpec
    prefer_columns: bool
    counts: dict[str, dict[KeyState, int]] = field(default_factory=dict)
    defaults: dict[str, dict[KeyState, int]] = field(default_factory=dict)  # of those, values at the default
    unreadable: dict[str, int] = field(default_factory=dict)
    rows_examined: int = 0
    rows_to_write: int = 0
    rows_written: int = 0
    not_object_rows: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    not_object_sample: list[str] = field(default_factory=list)

    def add(self, row_key: Any, values: Mapping[str, ColumnValue], legacy: Mapping[str, Any],
            states: Mapping[str, KeyState], patched: bool) -> None:
        self.rows_examined += 1
        self.rows_to_write += patched
        if KeyState.NOT_OBJECT in states.values():
            self.not_object_rows += 1
            if len(self.not_object_sample) < SAMPLE_LIMIT:
                self.not_object_sample.append(str(row_key))
        for name, state in states.items():
            per_key = self.counts.setdefault(name, {})
            per_key[state] = per_key.get(state, 0) + 1
            column = self.spec.column(name)
            if values[name].at_default:
                at = self.defaults.setdefault(name, {})
                at[state] = at.get(state, 0) + 1
            if state is KeyState.CONFLICT and not values[name].readable:
                self.unreadable[name] = self.unreadable.get(name, 0) + 1
            if state is KeyState.CONFLICT and len(self.conflicts) < SAMPLE_LIMIT:
                self.conflicts.append(Conflict(str(row_key), column.legacy_key, legacy.get(column.legacy_key),
                                               values[name].decoded))

    def add_settled(self, columns: Sequence[ColumnSpec], counted: Sequence[int], *, written: bool) -> None:
        """Add what settled_batch_statement (``written``) or survey_batch_statement counted (its row, in its
        order)."""
        self.rows_examined += counted[0]
        self.rows_to_write += counted[1]
        self.rows_written += counted[1] if written else 0
        for n, column in enumerate(columns):
            missing, present, missing_at_default = counted[2 + 3 * n:5 + 3 * n]
            per_key = self.counts.setdefault(column.name, {})
            per_key[KeyState.MISSING] = per_key.get(KeyState.MISSING, 0) + missing
            per_key[KeyState.SAME] = per_key.get(KeyState.SAME, 0) + present
            at = self.defaults.setdefault(column.name, {})
            at[KeyState.MISSING] = at.get(KeyState.MISSING, 0) + missing_at_default

    def freeze(self) -> Preservation:
        keys = []
        for column in self.spec.columns:
            found = self.counts.get(column.name, {})
            at = self.defaults.get(column.name, {})
            keys.append(KeyCount(column.legacy_key, column.name, found.get(KeyState.MISSING, 0),
                                 found.get(KeyState.SAME, 0), found.get(KeyState.CONFLICT, 0),
                                 self.unreadable.get(column.name, 0), found.get(KeyState.NOT_OBJECT, 0),
                                 found.get(KeyState.STALE, 0), at.get(KeyState.MISSING, 0),
                                 at.get(KeyState.CONFLICT, 0), at.get(KeyState.NOT_OBJECT, 0)))
        return Preservation(tuple(keys), self.prefer_columns, self.rows_examined, self.rows_to_write,
                            self.rows_written, self.not_object_rows, tuple(self.conflicts),
                            tuple(self.not_object_sample))


@dataclass(frozen=True)
class _RowLoss:
    conflicts: tuple[Conflict, ...]
    unreadable: int  # of the conflicts: legacy values the backfill cannot read
    not_object: bool
    lost: int  # column values metadata will not hold after the drop


@dataclass
class Ledger:
    """Per row, what metadata will not hold after the drop, as the latest pass that saw the row found it.

    A writing rollback makes a full pass, then passes over the rows written since: a row seen again
    replaces what an earlier pass found for it, so a conflict is counted once. Only rows with a conflict
    or non-object metadata are kept.
    """

    prefer_columns: bool
    rows: dict[Any, _RowLoss] = field(default_factory=dict)

    def update(self, spec: MigrationSpec, row_key: Any, values: Mapping[str, ColumnValue],
               legacy: Mapping[str, Any], states: Mapping[str, KeyState]) -> None:
        conflicts, unreadable, lost = [], 0, 0
        for name, state in states.items():
            column = spec.column(name)
            if state is KeyState.CONFLICT:
                raw = legacy.get(column.legacy_key)
                conflicts.append(Conflict(str(row_key), column.legacy_key, raw, values[name].decoded))
                unreadable += not values[name].readable
            lossy = state is KeyState.NOT_OBJECT or (state is KeyState.CONFLICT and not self.prefer_columns)
            lost += lossy and not values[name].at_default
        not_object = KeyState.NOT_OBJECT in states.values()
        if (conflicts and not self.prefer_columns) or not_object:
            self.rows[row_key] = _RowLoss(tuple(conflicts), unreadable, not_object, lost)
        else:
            self.rows.pop(row_key, None)

    def to_dict(self) -> dict[str, Any]:
        """The kept conflicts (none with prefer_columns: they were overwritten), non-object rows and losses."""
        losses = self.rows.values()
        conflicts = [c for loss in losses for c in loss.conflicts]
        return {"conflicts": len(conflicts), "unreadable_conflicts": sum(loss.unreadable for loss in losses),
                "not_object_rows": sum(loss.not_object for loss in losses),
                "values_lost": sum(loss.lost for loss in losses),
                "conflict_sample": [c.to_dict() for c in conflicts[:SAMPLE_LIMIT]],
                "not_object_sample": [str(key) for key, loss in self.rows.items() if loss.not_object][:SAMPLE_LIMIT]}


# ---------------------------------------------------------------- the batches (set-based SQL per batch)


def holds_values_condition(columns: Sequence[ColumnSpec], row: str = "t") -> sql.Composable:
    """Rows holding a value to preserve: a NULL-able column not NULL, a defaulted one not at its default."""
    parts = []
    for column in columns:
        name = sql.Identifier(row, column.name)
        if column.default is None:
            parts.append(sql.SQL("{} IS NOT NULL").format(name))
        else:
            parts.append(sql.SQL("{} <> {}").format(name, column.rules.literal(str(column.default))))
    return sql.SQL("({})").format(sql.SQL(" OR ").join(parts))


def _legacy_raw(target: Target, column: ColumnSpec) -> sql.Composable:
    return sql.SQL("t.{} -> {}").format(sql.Identifier(target.spec.metadata_column), sql.Literal(column.legacy_key))


def _legacy_reading(target: Target, column: ColumnSpec, index: int) -> tuple[sql.Composable, sql.Identifier]:
    """A LATERAL join reading ``column``'s legacy key of row ``t`` as backfill reads it, and the value it read."""
    alias = sql.Identifier(f"c{index}")
    return (sql.SQL("CROSS JOIN LATERAL {} AS {}").format(column.rules.reading(_legacy_raw(target, column)), alias),
            sql.Identifier(f"c{index}", "value"))


def batch_query(target: Target, columns: Sequence[ColumnSpec], *, first: bool, lock: bool,
                logged: bool = False, pages: bool = False) -> sql.Composed:
    """The next keyset batch of rows holding values: key, jsonb_typeof(metadata), then per column (COLUMN_FIELDS)
    its canonical JSON text, the legacy value's JSON text (cut after PREVIEW_CHARS + 1 characters), its size in
    bytes, what backfill reads from it (as canonical JSON text; NULL: nothing), and whether the column holds
    its default.

    ``logged``: the rows whose keys are in %(ids)s (taken from the change log) instead of the next keyset batch.
    ``pages``: the rows of the page range %(lo)s..%(hi)s older than %(pass_xid)s that settled_batch_statement
    leaves (a key holding something else than the column's canonical JSON, or metadata not an object).
    """
    spec = target.spec
    meta = sql.Identifier(spec.metadata_column)
    pk = sql.Identifier(spec.primary_key)
    selected: list[sql.Composable] = []
    readings: list[sql.Composable] = []
    for column in columns:
        # as text, never decoded by the driver (a value nested 1,000 levels deep breaks a JSON decoder),
        # and cut: a 10 MB value is only ever shown truncated
        rules, value = column.rules, sql.SQL("t.{}").format(sql.Identifier(column.name))
        legacy = sql.SQL("({})::text").format(_legacy_raw(target, column))
        join, read = _legacy_reading(target, column, len(readings))
        readings.append(join)
        at_default = sql.SQL("FALSE") if column.default is None else rules.same(
            rules.literal(str(column.default)), value)
        selected += [sql.SQL("({})::text").format(rules.write_back(value)),
                     sql.SQL("left({}, {})").format(legacy, sql.Literal(PREVIEW_CHARS + 1)),
                     sql.SQL("octet_length({})").format(legacy),
                     sql.SQL("({})::text").format(rules.write_back(read)), at_default]
    after: sql.Composable
    if pages:
        return sql.SQL(
            "SELECT t.{pk}, jsonb_typeof(t.{meta}), {selected} FROM {table} AS t {readings} "
            "WHERE {in_pass} AND {holds} AND NOT {settled}{lock}"
        ).format(pk=pk, meta=meta, selected=sql.SQL(", ").join(selected), table=target.table,
                 readings=sql.SQL(" ").join(readings), in_pass=_in_pass_range(), holds=holds_values_condition(columns),
                 settled=_settled(target, columns), lock=sql.SQL(" FOR NO KEY UPDATE OF t") if lock else sql.SQL(""))
    if logged:
        after = sql.SQL("t.{} = ANY (%(ids)s) AND ").format(pk)
    else:
        after = sql.SQL("") if first else sql.SQL("t.{} > %(after)s AND ").format(pk)
    return sql.SQL(
        "SELECT t.{pk}, jsonb_typeof(t.{meta}), {selected} FROM {table} AS t {readings} "
        "WHERE {after}{holds} ORDER BY t.{pk} LIMIT %(batch_size)s{lock}"
    ).format(
        pk=pk, meta=meta, selected=sql.SQL(", ").join(selected), table=target.table,
        readings=sql.SQL(" ").join(readings), after=after,
        holds=holds_values_condition(columns),
        lock=sql.SQL(" FOR NO KEY UPDATE OF t") if lock else sql.SQL(""),
    )


# A page range of the pass, without the rows written since the pass began: those are our own batches' (moved
# ahead of the walk) or the application's, which the change log records.
def _in_pass_range(row: str = "t") -> sql.Composable:
    return sql.SQL("{ctid} >= %(lo)s::tid AND {ctid} < %(hi)s::tid AND age({xmin}) > age(%(pass_xid)s::xid)").format(
        ctid=sql.Identifier(row, "ctid"), xmin=sql.Identifier(row, "xmin"))


def _value(column: ColumnSpec, row: str = "t") -> sql.Composable:
    return sql.Identifier(row, column.name)


def _kept(columns: Sequence[ColumnSpec], column: ColumnSpec, row: str = "t") -> sql.Composable:
    """The column's value is one values_to_preserve keeps, in SQL."""
    value = _value(column, row)
    if column.default is None:
        return sql.SQL("{} IS NOT NULL").format(value)
    others = [sql.SQL("{} IS NOT NULL").format(_value(c, row)) for c in columns if c.default is None]
    differs = sql.SQL("{} <> {}").format(value, column.rules.literal(str(column.default)))
    return sql.SQL("({value} IS NOT NULL AND ({others}))").format(
        value=value, others=sql.SQL(" OR ").join([*others, differs]))


def _legacy(target: Target, column: ColumnSpec, row: str = "t") -> sql.Composable:
    return sql.SQL("({} -> {})").format(sql.Identifier(row, target.spec.metadata_column),
                                        sql.Literal(column.legacy_key))


def _missing(target: Target, columns: Sequence[ColumnSpec], column: ColumnSpec, row: str) -> sql.Composable:
    """The column holds a value to keep and metadata lacks its key (absent, or JSON null)."""
    legacy = _legacy(target, column, row)
    return sql.SQL("({kept} AND ({legacy} IS NULL OR {legacy} = 'null'::jsonb))").format(
        kept=_kept(columns, column, row), legacy=legacy)


def _settled(target: Target, columns: Sequence[ColumnSpec], row: str = "t") -> sql.Composable:
    """Rows whose every kept value is missing from metadata (absent key or JSON null) or already there as its
    canonical JSON (and reading as the value), in an object (or SQL NULL) metadata: SQL decides them, classify
    would say MISSING or SAME. The others (a key holding any other JSON, metadata not an object) go through
    classify."""
    meta = sql.Identifier(row, target.spec.metadata_column)
    parts: list[sql.Composable] = [sql.SQL("({meta} IS NULL OR jsonb_typeof({meta}) = 'object')").format(meta=meta)]
    for column in columns:
        legacy, value = _legacy(target, column, row), _value(column, row)
        # equal JSON first, a cheap test that lets the reading run only where it can succeed
        parts.append(sql.SQL(
            "(NOT {kept} OR {legacy} IS NULL OR {legacy} = 'null'::jsonb OR ({legacy} = {json} AND {same}))"
        ).format(kept=_kept(columns, column, row), legacy=legacy, json=column.rules.write_back(value),
                 same=column.rules.reads_same(legacy, value)))
    return sql.SQL("({})").format(sql.SQL(" AND ").join(parts))


_KEY_FLAGS = ("missing", "present", "at_default")


def _key_flag(flag: str, n: int) -> sql.Identifier:
    """The name of one of the _KEY_FLAGS of the n-th column."""
    return sql.Identifier(f"{flag}_{n}")


def _key_flag_names(columns: Sequence[ColumnSpec]) -> list[sql.Identifier]:
    return [_key_flag(flag, n) for n in range(len(columns)) for flag in _KEY_FLAGS]


def _key_flags(target: Target, columns: Sequence[ColumnSpec], row: str) -> sql.Composable:
    """Per column, for a settled row: missing_N (a kept value whose key metadata lacks), present_N (a kept value
    metadata already holds) and at_default_N (the column holds its default)."""
    flags: list[sql.Composable] = []
    for n, column in enumerate(columns):
        missing = _missing(target, columns, column, row)
        at_default = sql.SQL("FALSE") if column.default is None else column.rules.same(
            column.rules.literal(str(column.default)), _value(column, row))
        flags.append(sql.SQL("{missing} AS {m}, {kept} AND NOT {missing} AS {p}, {at_default} AS {d}").format(
            missing=missing, kept=_kept(columns, column, row), at_default=at_default,
            m=_key_flag("missing", n), p=_key_flag("present", n), d=_key_flag("at_default", n)))
    return sql.SQL(", ").join(flags)


def _key_counts(columns: Sequence[ColumnSpec], among: sql.Composable) -> sql.Composable:
    """The _key_flags counted over the rows meeting ``among``: per column the values missing, present, and
    missing at the column's default."""
    return sql.SQL(", ").join(
        sql.SQL("count(*) FILTER (WHERE {among} AND {m}), count(*) FILTER (WHERE {among} AND {p}), "
                "count(*) FILTER (WHERE {among} AND {m} AND {d})").format(
            among=among, m=_key_flag("missing", n), p=_key_flag("present", n), d=_key_flag("at_default", n))
        for n in range(len(columns)))


def _any_missing(target: Target, columns: Sequence[ColumnSpec], row: str) -> sql.Composable:
    """Some kept value of the row is missing from its metadata: the row has something to write."""
    return sql.SQL("({})").format(sql.SQL(" OR ").join(_missing(target, columns, c, row) for c in columns))


def settled_batch_statement(target: Target, columns: Sequence[ColumnSpec]) -> sql.Composed:
    """In one page range of the pass: merge each missing value into the metadata of the settled rows holding
    values, and count them: rows, rows written, then per column the values missing, present, and missing at
    the column's default, and last the rows holding values that are not settled (batch_query's ``pages`` rows:
    none, and the range needs no second statement). Writes.

    The UPDATE reads the range through a self-join on ctid, so that RETURNING sees each row as it was (o)
    beside its new version (t); the UPDATE takes the row locks itself (locking first would write every row
    twice). A row the application changes after the statement's snapshot has another ctid by then: the UPDATE
    leaves it, the count of the rows left alone does not see it either, and the change log has it for the next
    pass."""
    meta = sql.Identifier(target.spec.metadata_column)
    patch = [(sql.Literal(column.legacy_key), sql.SQL("CASE WHEN {} THEN {} END").format(
        _missing(target, columns, column, "o"), column.rules.write_back(_value(column, "o")))) for column in columns]
    names = _key_flag_names(columns)
    return sql.SQL(
        "WITH written AS (UPDATE {table} AS t SET {meta} = coalesce(o.{meta}, '{{}}'::jsonb) "
        "|| jsonb_strip_nulls({patch}) FROM {table} AS o "
        "WHERE t.ctid = o.ctid AND {in_pass} AND {holds} AND {settled} AND {any_missing} "
        "RETURNING {flags_o}), "
        "left_alone AS (SELECT {settled_t} AS is_settled, {flags_t} FROM {table} AS t "
        "WHERE {in_pass_t} AND {holds_t} AND NOT ({settled_t} AND {any_missing_t})) "
        "SELECT w.settled_rows + a.settled_rows, w.settled_rows, {sums}, a.unsettled FROM "
        "(SELECT count(*), {written_counts} FROM written) AS w(settled_rows, {names}), "
        "(SELECT count(*) FILTER (WHERE is_settled), {alone_counts}, count(*) FILTER (WHERE NOT is_settled) "
        "FROM left_alone) AS a(settled_rows, {names}, unsettled)"
    ).format(
        table=target.table, meta=meta, patch=jsonb_object(patch), in_pass=_in_pass_range("o"),
        holds=holds_values_condition(columns, "o"), settled=_settled(target, columns, "o"),
        any_missing=_any_missing(target, columns, "o"), flags_o=_key_flags(target, columns, "o"),
        settled_t=_settled(target, columns), flags_t=_key_flags(target, columns, "t"), in_pass_t=_in_pass_range(),
        holds_t=holds_values_condition(columns),
        any_missing_t=_any_missing(target, columns, "t"),
        sums=sql.SQL(", ").join(sql.SQL("w.{name} + a.{name}").format(name=name) for name in names),
        written_counts=_key_counts(columns, sql.SQL("TRUE")), alone_counts=_key_counts(columns, sql.SQL("is_settled")),
        names=sql.SQL(", ").join(names),
    )


def survey_batch_statement(target: Target, columns: Sequence[ColumnSpec]) -> sql.Composed:
    """What settled_batch_statement would write in one page range, counted in the same order (rows, rows to
    write, per column the values missing, present and missing at the default, then the rows not settled).
    Read-only."""
    return sql.SQL(
        "SELECT count(*) FILTER (WHERE is_settled), count(*) FILTER (WHERE is_settled AND {any_missing}), "
        "{counts}, count(*) FILTER (WHERE NOT is_settled) "
        "FROM (SELECT {settled} AS is_settled, {flags} FROM {table} AS t WHERE {in_pass} AND {holds}) AS s"
    ).format(any_missing=sql.SQL("({})").format(sql.SQL(" OR ").join(
                 _key_flag("missing", n) for n in range(len(columns)))),
             counts=_key_counts(columns, sql.SQL("is_settled")), settled=_settled(target, columns),
             flags=_key_flags(target, columns, "t"), table=target.table, in_pass=_in_pass_range(),
             holds=holds_values_condition(columns))


def merge_statement(target: Target) -> sql.Composed:
    """Merge one batch of patches into metadata objects (never into a non-object), one statement."""
    spec = target.spec
    return sql.SQL(
        "UPDATE {table} AS t SET {meta} = coalesce(t.{meta}, '{{}}'::jsonb) || p.patch "
        "FROM unnest(%(keys)s, %(patches)s) AS p(row_key, patch) "
        "WHERE t.{pk} = p.row_key AND (t.{meta} IS NULL OR jsonb_typeof(t.{meta}) = 'object')"
    ).format(table=target.table, meta=sql.Identifier(spec.metadata_column), pk=sql.Identifier(spec.primary_key))


def write_back_statement(target: Target, columns: Sequence[ColumnSpec], *, prefer_columns: bool,
                         logged: bool = False) -> sql.Composed:
    """The batches' write-back as one statement psql can run (the dry run's script): every row holding values
    gets, merged into its metadata object (never into a non-object), the keys a batch would write. Writes.

    A key is written where it is absent or JSON null, where it holds a value that does not read as the
    column's and ``prefer_columns``, or (``logged``) where it reads as a value the change log recorded the
    column held before the application's write (an earlier pass wrote it: STALE). A column at its default
    counts only beside another value. ``logged``: only the rows the change log recorded, consuming its
    entries in the same statement.
    """
    spec = target.spec
    pk = sql.SQL("t.{}").format(sql.Identifier(spec.primary_key))
    members: list[tuple[sql.Composable, sql.Composable]] = []
    readings: list[sql.Composable] = []
    for index, column in enumerate(columns):
        rules, value, legacy = column.rules, _value(column), _legacy(target, column)
        join, read = _legacy_reading(target, column, index)
        readings.append(join)
        replaced: sql.Composable = sql.SQL("{legacy} IS NULL OR {legacy} = 'null'::jsonb").format(legacy=legacy)
        conflict = sql.SQL("NOT {}").format(rules.same(read, value))
        if prefer_columns:
            replaced = sql.SQL("{} OR {}").format(replaced, conflict)
        elif logged:
            replaced = sql.SQL("{} OR {} AND EXISTS (SELECT 1 FROM taken AS e WHERE e.row_id = {} AND {})").format(
                replaced, conflict, pk, rules.same(read, sql.SQL("e.{}").format(sql.Identifier(column.name))))
        members.append((sql.Literal(column.legacy_key), sql.SQL("CASE WHEN {} AND ({}) THEN {} END").format(
            _kept(columns, column), replaced, rules.write_back(value))))
    rows_logged: sql.Composable = sql.SQL("")
    taken: sql.Composable = sql.SQL("")
    if logged:
        taken = sql.SQL("WITH taken AS (DELETE FROM {} RETURNING *) ").format(change_log_table(target))
        rows_logged = sql.SQL("{} IN (SELECT row_id FROM taken) AND ").format(pk)
    updated = sql.SQL("u.{}").format(sql.Identifier(spec.metadata_column))
    # the object keeps a key whose value is NULL; the written values are scalars, never JSON null
    return sql.SQL(
        "{taken}UPDATE {table} AS u SET {column} = coalesce({updated}, '{{}}'::jsonb) || p.patch "
        "FROM (SELECT {pk} AS row_key, jsonb_strip_nulls({members}) AS patch "
        "FROM {table} AS t {readings} WHERE {logged}{holds}) AS p "
        "WHERE u.{pk_name} = p.row_key AND p.patch <> '{{}}'::jsonb "
        "AND ({updated} IS NULL OR jsonb_typeof({updated}) = 'object')"
    ).format(taken=taken, table=target.table, column=sql.Identifier(spec.metadata_column), updated=updated, pk=pk,
             members=jsonb_object(members), readings=sql.SQL(" ").join(readings), logged=rows_logged,
             holds=holds_values_condition(columns), pk_name=sql.Identifier(spec.primary_key))


# ---------------------------------------------------------------- the change log (writes made while rollback runs)


def take_logged_statement(target: Target, columns: Sequence[ColumnSpec]) -> sql.Composed:
    """Remove up to %(batch_size)s entries from the change log; return their row keys and earlier values
    (as canonical JSON text, as the batches render column values)."""
    return sql.SQL("DELETE FROM {log} AS t WHERE t.ctid IN (SELECT ctid FROM {log} LIMIT %(batch_size)s) "
                   "RETURNING t.row_id, {earlier}").format(
        log=change_log_table(target), earlier=sql.SQL(", ").join(
            sql.SQL("({})::text").format(c.rules.write_back(sql.SQL("t.{}").format(sql.Identifier(c.name))))
            for c in columns))


def change_log_present(conn: psycopg.Connection[Any], target: Target) -> bool:
    """True when a change log or its trigger exists (a run in progress, or what a crash left). Read-only."""
    return bool(scalar(conn, sql.SQL(
        "SELECT to_regclass(%s) IS NOT NULL OR EXISTS (SELECT 1 FROM pg_trigger "
        "WHERE tgrelid = to_regclass(%s) AND tgname = %s)"),
        (as_text(change_log_table(target)), target.table_name, CHANGE_LOG_TRIGGER)))


def _logged_entries(conn: psycopg.Connection[Any], target: Target) -> int:
    return int(scalar(conn, sql.SQL("SELECT count(*) FROM {}").format(change_log_table(target))))


# ---------------------------------------------------------------- one batch, and the passes


@dataclass(frozen=True)
class _Decision:
    row_key: Any
    values: dict[str, ColumnValue]
    legacy: dict[str, Any]
    states: dict[str, KeyState]
    patch: str | None


Earlier = dict[Any, dict[str, list[str | None]]]  # row key -> column -> the values logged writes replaced


def _decide(spec: MigrationSpec, columns: Sequence[ColumnSpec], fetched: list[tuple[Any, ...]],
            prefer_columns: bool, earlier: Earlier | None = None) -> list[_Decision]:
    decisions = []
    for row in fetched:
        fields = [row[2 + COLUMN_FIELDS * i:2 + COLUMN_FIELDS * (i + 1)] for i in range(len(columns))]
        row_values = {c.name: None if f[0] is None else ColumnValue(f[0], f[3], f[4])
                      for c, f in zip(columns, fields, strict=True)}
        legacy = {c.legacy_key: legacy_from_text(f[1], f[2]) for c, f in zip(columns, fields, strict=True)}
        values = values_to_preserve(spec, row_values)
        states = classify(spec, row[1], legacy, values)
        if earlier and row[0] in earlier:
            states = supersede(states, values, earlier[row[0]])
        decisions.append(_Decision(row[0], values, legacy, states, patch_for(spec, values, states, prefer_columns)))
    return decisions


def _as_is(text: Any) -> str:
    """A patch is JSON text already (decoding and re-encoding it would lose a numeric's scale)."""
    return str(text)


def _write_back(conn: psycopg.Connection[Any], target: Target, columns: Sequence[ColumnSpec],
                options: RollbackOptions, query: bytes, params: dict[str, Any],
                write: bool, earlier: Earlier | None = None) -> tuple[list[_Decision], int]:
    """Read one batch and (``write``) merge its patches, inside the caller's transaction. Writes.

    Returns the decisions and the rows merged. Raises StepFailed when a locked object row cannot be updated.
    """
    decisions = _decide(target.spec, columns, conn.execute(query, params).fetchall(), options.prefer_columns,
                        earlier)
    patches = [d for d in decisions if d.patch]
    if not write or not patches:
        return decisions, 0
    texts = [Jsonb(d.patch, dumps=_as_is) for d in patches]
    merged = conn.execute(merge_statement(target), {"keys": [d.row_key for d in patches], "patches": texts}).rowcount
    if merged != len(patches):
        # the rows are locked and were objects: only row-level security can hide them
        raise StepFailed(f"{len(patches) - merged} of {len(patches)} rows of the batch could not be "
                         "updated (row-level security with FORCE?)",
                         hint="run rollback as the table owner or a role that bypasses RLS")
    return decisions, merged


Progress = Callable[[int], None]


@dataclass
class _PassState:
    """What one pass found so far, fed batch by batch (also what a stopped pass had written)."""

    tally: _Tally
    ledger: Ledger | None
    progress: Progress | None
    retries: int = 0

    def add(self, decisions: list[_Decision], merged: int) -> None:
        for decision in decisions:
            self.tally.add(decision.row_key, decision.values, decision.legacy, decision.states, bool(decision.patch))
            if self.ledger is not None:
                self.ledger.update(self.tally.spec, decision.row_key, decision.values, decision.legacy,
                                   decision.states)
        self.tally.rows_written += merged
        if self.progress:
            self.progress(self.tally.rows_examined)


def preserve_pass(
    conn: psycopg.Connection[Any], target: Target, columns: Sequence[ColumnSpec], options: RollbackOptions, *,
    write: bool, progress: Progress | None = None, runner: StepRunner | None = None, step: str = PRESERVE.name,
    ledger: Ledger | None = None, written: Callable[[int], None] | None = None,
    helpers: Sequence[psycopg.Connection[Any]] = (), stopped: Callable[[Preservation], None] | None = None,
) -> tuple[Preservation, int]:
    """One pass over the rows holding column values, in page ranges on PostgreSQL 14+ (see _preserve_pages;
    ``helpers`` share the ranges), else in keyset batches on ``conn`` alone; returns what it found and lock
    retries.

    With ``write``, each batch locks its rows (FOR NO KEY UPDATE), merges the missing keys into their
    metadata in one UPDATE and commits, under lock_timeout with retries, then sleeps ``sleep_s``;
    ``written`` hears the rows merged by each committed batch. Without, it only reads (a survey).
    Raises LockHeld, Interrupted, StepFailed; ``stopped`` first hears what the committed batches did.
    """
    found = _PassState(_Tally(target.spec, options.prefer_columns), ledger, progress)
    with _telling_when_stopped(found, stopped):
        if int(scalar(conn, sql.SQL("SELECT current_setting('server_version_num')::integer"))) >= 140000:
            _preserve_pages(conn, target, columns, options, found, runner, step, written, write=write,
                            helpers=helpers)
        else:
            _preserve_keyset(conn, target, columns, options, found, runner, step, written, write=write)
    return found.tally.freeze(), found.retries


@contextlib.contextmanager
def _telling_when_stopped(found: _PassState, stopped: Callable[[Preservation], None] | None) -> Iterator[None]:
    """Hand ``stopped`` what a pass that raises had done (its committed batches), then let the error through."""
    try:
        yield
    except BaseException:
        if stopped:
            stopped(found.tally.freeze())
        raise


def _preserve_keyset(conn: psycopg.Connection[Any], target: Target, columns: Sequence[ColumnSpec],
                     options: RollbackOptions, found: _PassState, runner: StepRunner | None, step: str,
                     written: Callable[[int], None] | None, *, write: bool) -> None:
    """The pass in primary-key keyset batches (before PostgreSQL 14), each one transaction."""
    after: Any = None
    first_query, next_query = (batch_query(target, columns, first=first, lock=write).as_bytes(conn)
                               for first in (True, False))
    while True:
        query = first_query if after is None else next_query
        params = {"batch_size": options.batch_size, "after": after}

        def batch(query: bytes = query, params: dict[str, Any] = params) -> tuple[list[_Decision], int]:
            with conn.transaction():
                return _write_back(conn, target, columns, options, query, params, write)

        (decisions, merged), used = with_lock_retries(
            conn, batch, policy=options.limits.retry_policy, watch=runner.watch if runner else None,
            on_retry=runner.retry_reporter(step) if runner else None, what=f"step {step}")
        found.retries += used
        if written and merged:
            written(merged)
        found.add(decisions, merged)
        if len(decisions) < options.batch_size:
            return
        after = decisions[-1].row_key
        if write and options.sleep_s:
            time.sleep(options.sleep_s)


@dataclass
class _Range:
    """What one page range of the pass did: settled_batch_statement's counts, the decisions on the other rows,
    the rows those merged, lock retries, and the error that stopped it after its settled rows committed."""

    counted: list[int]
    decisions: list[_Decision]
    merged: int
    retries: int
    error: BaseException | None = None


def _preserve_pages(conn: psycopg.Connection[Any], target: Target, columns: Sequence[ColumnSpec],
                    options: RollbackOptions, found: _PassState, runner: StepRunner | None, step: str,
                    written: Callable[[int], None] | None, *, write: bool,
                    helpers: Sequence[psycopg.Connection[Any]] = ()) -> None:
    """The pass in page ranges (a TID Range Scan, PostgreSQL 14+): the heap is read in order, where primary-key
    batches over random keys read it at random. Each range holds about ``batch_size`` rows (so at most that many
    with values): settled_batch_statement, its own transaction, merges the rows SQL can decide (without
    ``write``, survey_batch_statement counts them); then, in a second transaction, classify decides the others
    (when there are any). With ``helpers`` (more connections, set up as ``conn``), the ranges are shared out
    among all of them, one range per connection at a time.

    A row the application moves behind the walk was written after the pass began, so the change log holds it
    (its trigger records every write but rollback's own); rows written since the pass began are skipped.
    """
    end_page = relation_pages(conn, target)
    pass_xid = int(scalar(conn, sql.SQL("SELECT txid_snapshot_xmax(txid_current_snapshot())"))) % 2**32
    # rendered once: psycopg composes a Composed statement anew on every execute, and these are large
    settle = (settled_batch_statement if write else survey_batch_statement)(target, columns).as_bytes(conn)
    query = batch_query(target, columns, first=False, lock=write, pages=True).as_bytes(conn)
    # at most batch_size rows of the table per range, whichever of them hold values: a density learnt from the
    # ranges already seen would put a whole cluster of rows with values (a region the application rewrote) in one
    span = math.ceil(options.batch_size / rows_per_page(conn, target))
    stop = threading.Event()
    reporting = threading.Lock()
    policy = options.limits.retry_policy

    def ranges() -> Iterator[dict[str, Any]]:
        page = 0
        while page < end_page:
            hi = page + max(1, min(end_page - page, span))
            yield {"lo": f"({page},0)", "hi": f"({hi},0)", "pass_xid": str(pass_xid)}
            page = hi

    def on_retry(attempt: int, delay: float, blockers: list[dict[str, Any]]) -> None:
        if runner:
            with reporting:  # from any connection's thread
                runner.retry_reporter(step)(attempt, delay, blockers)

    def attempt(action: Callable[[], T], on: psycopg.Connection[Any]) -> tuple[T, int]:
        def unless_stopped() -> T:
            if stop.is_set():  # another connection failed: no new attempt
                raise Interrupted("stopped: another connection's batch failed")
            return action()

        return with_lock_retries(on, unless_stopped, policy=policy, watch=watches.get(id(on)), on_retry=on_retry,
                                 what=f"step {step}", lock_timeout_set=True)

    def run_range(on: psycopg.Connection[Any], params: dict[str, Any]) -> _Range:
        # one statement, its own transaction (no BEGIN and COMMIT round trips)
        summary, retries = attempt(lambda: on.execute(settle, params).fetchone(), on)
        assert summary is not None  # an aggregate: one row
        *counted, unsettled = summary
        if not unsettled:
            return _Range(counted, [], 0, retries)

        def judge() -> tuple[list[_Decision], int]:
            with on.transaction():
                return _write_back(on, target, columns, options, query, params, write)

        try:
            (decisions, merged), more = attempt(judge, on)
        except BaseException as exc:  # the settled rows are committed: counted, then the error is raised
            return _Range(counted, [], 0, retries, None if stop.is_set() else exc)
        return _Range(counted, decisions, merged, retries + more)

    def pause() -> None:
        if write and options.sleep_s:
            time.sleep(options.sleep_s)

    def run_range_then_pause(on: psycopg.Connection[Any], params: dict[str, Any]) -> _Range:
        result = run_range(on, params)
        pause()
        return result

    def account(result: _Range) -> None:
        found.retries += result.retries
        found.tally.add_settled(columns, result.counted, written=write)
        if write and written and result.merged + result.counted[1]:
            written(result.merged + result.counted[1])
        if result.counted[0] or result.decisions:
            found.add(result.decisions, result.merged)
        if result.error is not None:
            raise result.error

    connections = [conn, *helpers]
    # each connection's blockers are watched from a connection of its own (the watch keeps the last seen)
    watches = {id(helper): BlockerWatch.for_connection(helper) for helper in helpers} if runner else {}
    if runner:
        watches[id(conn)] = runner.watch
    # the statements differ only in their page range: planning them once saves more than a custom plan gains
    for each in connections:
        set_session(each, plan_cache_mode="force_generic_plan", lock_timeout=ms(policy.lock_timeout_s))
    try:
        if helpers:
            run_in_parallel(connections, ranges(), run_range_then_pause, account, stop)
        else:
            for params in ranges():
                account(run_range(conn, params))
                pause()
    finally:
        for each in connections:
            if each.info.transaction_status is TransactionStatus.IDLE:  # not after a broken connection
                each.execute("RESET plan_cache_mode")
        for helper in helpers:
            if id(helper) in watches:
                watches[id(helper)].close()


def preserve_logged(
    conn: psycopg.Connection[Any], target: Target, columns: Sequence[ColumnSpec], options: RollbackOptions, *,
    under_lock: bool, progress: Progress | None = None, runner: StepRunner | None = None,
    step: str = PRESERVE_LATE.name, ledger: Ledger | None = None, written: Callable[[int], None] | None = None,
    stopped: Callable[[Preservation], None] | None = None,
) -> tuple[Preservation, int]:
    """Preserve the rows the change log recorded; each batch consumes its log entries in its own transaction.

    Outside the table lock (``under_lock`` False) it takes only the entries present when it starts, each
    batch under lock_timeout with retries, so writers that never stop cannot keep it going; under the
    caller's ACCESS EXCLUSIVE lock nobody else writes, and it empties the log. Writes. Raises LockHeld,
    Interrupted, StepFailed; ``stopped`` first hears what the committed batches did.
    """
    found = _PassState(_Tally(target.spec, options.prefer_columns), ledger, progress)
    with _telling_when_stopped(found, stopped):
        _preserve_logged(conn, target, columns, options, found, under_lock=under_lock, runner=runner, step=step,
                         written=written)
    return found.tally.freeze(), found.retries


def _preserve_logged(conn: psycopg.Connection[Any], target: Target, columns: Sequence[ColumnSpec],
                     options: RollbackOptions, found: _PassState, *, under_lock: bool, runner: StepRunner | None,
                     step: str, written: Callable[[int], None] | None) -> None:
    query = batch_query(target, columns, first=True, lock=True, logged=True).as_bytes(conn)
    take = take_logged_statement(target, columns).as_bytes(conn)
    budget = None if under_lock else _logged_entries(conn, target)
    consumed = 0
    while budget is None or consumed < budget:
        def batch() -> tuple[list[_Decision], int, int]:
            with conn.transaction():
                taken = conn.execute(take, {"batch_size": options.batch_size}).fetchall()
                if not taken:
                    return [], 0, 0
                earlier: Earlier = {}  # a row written many times is logged as often
                for entry in taken:
                    olds = earlier.setdefault(entry[0], {c.name: [] for c in columns})
                    for column, old in zip(columns, entry[1:], strict=True):
                        olds[column.name].append(old)
                decisions, merged = _write_back(conn, target, columns, options, query,
                                                {"ids": list(earlier), "batch_size": len(earlier)}, write=True,
                                                earlier=earlier)
                return decisions, merged, len(taken)

        if under_lock:
            decisions, merged, taken = batch()
        else:
            (decisions, merged, taken), used = with_lock_retries(
                conn, batch, policy=options.limits.retry_policy, watch=runner.watch if runner else None,
                on_retry=runner.retry_reporter(step) if runner else None, what=f"step {step}")
            found.retries += used
        if not taken:
            break
        consumed += taken
        if written and merged:
            written(merged)
        found.add(decisions, merged)


# ---------------------------------------------------------------- planning


_FOREIGN_DEPENDENTS = sql.SQL(
    """
    SELECT DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid) AS object
    FROM pg_depend d
    JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
    WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = %(table)s::regclass
      AND a.attname = ANY (%(columns)s) AND d.deptype IN ('n', 'a')
      AND d.classid <> 'pg_attrdef'::regclass
      AND NOT (d.classid = 'pg_class'::regclass
               AND d.objid IN (SELECT c.oid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid
                               WHERE i.indrelid = %(table)s::regclass AND c.relname = ANY (%(indexes)s)))
      -- the change-log trigger of an earlier rollback run: rollback drops it first
      AND NOT (d.classid = 'pg_trigger'::regclass
               AND d.objid IN (SELECT oid FROM pg_trigger WHERE tgrelid = %(table)s::regclass
                               AND tgname = %(trigger)s))
      -- our own constraints, and a column's NOT NULL (a pg_constraint row from PostgreSQL 18)
      AND NOT (d.classid = 'pg_constraint'::regclass
               AND d.objid IN (SELECT oid FROM pg_constraint
                               WHERE conrelid = %(table)s::regclass
                                 AND (conname = ANY (%(constraints)s) OR contype = 'n')))
    ORDER BY 1
    """
)


def preflight(conn: psycopg.Connection[Any], target: Target, snapshot: Snapshot, *, preserve: bool = True) -> None:
    """Refuse (PreflightFailed, nothing changed) a rollback that would drop what is not the migration's, or
    could not write the values back (``preserve``). Read-only.
    """
    spec = target.spec
    require_tables(snapshot, target)
    problems = []
    present = [c for c in spec.columns if c.name in snapshot.columns]
    for column in present:
        found = snapshot.columns[column.name].data_type
        if found != column.type.name:
            problems.append(f"column {column.name} has type {found}, not the migration's {column.type}: it is not "
                            "ours to drop; rename or drop it by hand")
    for needed in (spec.primary_key, spec.metadata_column):
        if present and preserve and needed not in snapshot.columns:
            problems.append(f"column {spec.table}.{needed} (needed to preserve the values) does not exist")
    if present and preserve and scalar(conn, sql.SQL("SELECT row_security_active(%s::regclass)"),
                                       (target.table_name,)):
        problems.append(f"row level security applies to {snapshot.current_user} on {target.table_name}: the values "
                        "of the rows its policies hide could not be written back; connect as the table owner or a "
                        "role with BYPASSRLS")
    if present:
        dependents = rows(conn, _FOREIGN_DEPENDENTS, {
            "table": target.table_name, "columns": [c.name for c in present],
            "indexes": [i.name for i in spec.indexes], "trigger": CHANGE_LOG_TRIGGER,
            "constraints": [fk.name for fk in spec.foreign_keys] + list(extra_constraints(spec))})
        problems += [f"{d['object']} uses the migration's columns and would be dropped with them: drop or change "
                     "it first" for d in dependents]
    if not snapshot.can_alter_table:
        superuser = rows(conn, sql.SQL("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
        if not (superuser and superuser[0]["rolsuper"]):
            problems.append(f"user {snapshot.current_user} does not own {target.table_name} (owner: "
                            f"{snapshot.table_owner}); connect as the owner or a member of its role")
    if problems:
        raise PreflightFailed(
            "preflight refused the rollback; nothing was changed:\n  - " + "\n  - ".join(problems), problems=problems)


def _state_tables() -> list[sql.Identifier]:
    return [sql.Identifier(HISTORY_SCHEMA, name) for name in BACKFILL_STATE_TABLES]


def backfill_state_present(conn: psycopg.Connection[Any], target: Target) -> bool:
    """True when the backfill left a checkpoint or rejects for this migration and schema. Read-only."""
    for table in _state_tables():
        if not scalar(conn, sql.SQL("SELECT to_regclass(%s) IS NOT NULL"), (as_text(table),)):
            continue
        if scalar(conn, sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE migration_id = %s AND target_schema = %s)")
                  .format(table), (target.spec.id, target.schema)):
            return True
    return False


def _clear_state_statements(target: Target) -> list[sql.Composed]:
    # literals, not placeholders, so that the dry run shows the statements exactly as they run
    return [sql.SQL("DELETE FROM {} WHERE migration_id = {} AND target_schema = {}").format(
        table, sql.Literal(target.spec.id), sql.Literal(target.schema)) for table in _state_tables()]


def _present_objects(step: Step, snapshot: Snapshot) -> list[str]:
    """The objects a down step drops that exist now."""
    found = []
    for obj in step.creates:
        if not is_present(obj, snapshot):
            continue
        state = ""
        if obj.kind is ObjectKind.CONSTRAINT and not snapshot.constraints[obj.name].validated:
            state = " (NOT VALID)"
        elif obj.kind is ObjectKind.INDEX and not snapshot.indexes[obj.name].valid:
            state = " (INVALID)"
        found.append(f"{obj}{state}")
    return found


def _leftover_checks(spec: MigrationSpec, snapshot: Snapshot) -> list[str]:
    """NOT NULL CHECKs an interrupted apply or finalize left: they go with their column."""
    return [name for name in extra_constraints(spec) if name in snapshot.constraints]


def _preserve_sql(target: Target, columns: Sequence[ColumnSpec], *, logged: bool = False) -> tuple[str, ...]:
    take = (take_logged_statement(target, columns),) if logged else ()
    return tuple(as_text(s) for s in (*take, batch_query(target, columns, first=False, lock=True, logged=logged),
                                      merge_statement(target)))


def _lock_table_statement(target: Target) -> sql.Composed:
    return sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(target.table)


def plan_steps(target: Target, snapshot: Snapshot, *, discard_data: bool, backfill_state: bool,
               change_log: bool = False, prefer_columns: bool = False) -> list[PlannedStep]:
    """The steps rollback would run from this snapshot, in order, with their SQL. Pure.

    ``change_log``: an earlier run left the change log (it is dropped first, or recreated). The write-back
    steps carry, for the dry run's script, the same work as statements psql runs (write_back_statement):
    one pass over every row, one over the logged rows, and the last one under the table's lock in the
    transaction that drops the columns.
    """
    spec = target.spec
    columns = [c for c in spec.columns if c.name in snapshot.columns]
    preserve = bool(columns) and not discard_data
    untrack = tuple(as_text(s) for s in untrack_statements(target))
    # the script's own write-back, like rollback's, is not logged by the trigger (for its transaction only)
    own_writes = as_text(sql.SQL("SELECT set_config({}, 'on', true)").format(sql.Literal(OWN_WRITES_SETTING)))
    planned: list[PlannedStep] = []
    if preserve:
        planned.append(PlannedStep(TRACK, "record the rows the application writes from now on, so that no write is "
                                   "lost before the columns are dropped",
                                   untrack + tuple(as_text(s) for s in track_statements(target, columns))))
        planned.append(PlannedStep(PRESERVE, "write the column values back under the legacy metadata keys",
                                   _preserve_sql(target, columns),
                                   script=(own_writes, as_text(write_back_statement(
                                       target, columns, prefer_columns=prefer_columns)))))
    elif change_log:
        planned.append(PlannedStep(TRACK, "drop the change log an earlier run left", untrack, down=True))
    leftovers = _leftover_checks(spec, snapshot)
    for step in down_steps(target):
        objects = _present_objects(step, snapshot)
        if not objects:
            continue
        final = any(obj.kind is ObjectKind.COLUMN for obj in step.creates)
        logged_pass = as_text(write_back_statement(target, columns, prefer_columns=prefer_columns, logged=True))
        if final and preserve:
            planned.append(PlannedStep(PRESERVE_LATE, "values written since the first pass (the logged rows)",
                                       _preserve_sql(target, columns, logged=True), script=(own_writes, logged_pass)))
        reason = "drop " + ", ".join(objects)
        if final and leftovers:
            reason += "".join(f" (constraint {name} goes with its column)" for name in leftovers)
        statements = tuple(as_text(s) for s in step.down)
        script: tuple[str, ...] = ()
        if final and preserve:
            reason += ", in one transaction under the table's lock with the values logged since the last pass"
            lock = as_text(_lock_table_statement(target))
            script = (lock, own_writes, logged_pass, *untrack, *statements)
            statements = (lock, *_preserve_sql(target, columns, logged=True), *untrack, *statements)
        planned.append(PlannedStep(step, reason, statements, down=True, script=script))
    if backfill_state:
        planned.append(PlannedStep(CLEAR_STATE, "the backfill's checkpoint and rejects point into dropped columns",
                                   tuple(as_text(s) for s in _clear_state_statements(target))))
    return planned


@dataclass(frozen=True)
class RollbackPlan:
    """What rollback would do from the current state: the objects it drops and what becomes of the values."""

    steps: tuple[PlannedStep, ...]
    objects: tuple[str, ...]
    columns: tuple[ColumnSpec, ...]  # the migration's columns that exist
    discard_data: bool
    backfill_state: bool
    survey: Preservation | None = None  # None before the survey, or when no column of the migration exists

    @property
    def needed(self) -> bool:
        return bool(self.steps)

    @property
    def values_lost(self) -> int:
        return self.survey.values_lost(self.discard_data) if self.survey else 0

    def notes(self) -> tuple[str, ...]:
        """One line per fact the operator should see before confirming."""
        if not self.needed:
            return ("already rolled back: nothing to do",)
        notes = [f"drops {', '.join(self.objects)}"] if self.objects else []
        if self.survey is not None:
            if self.discard_data:
                notes.append(f"--discard-data: {plural(self.values_lost, 'column value')} not in metadata will "
                             f"be lost ({self.survey.values_present:,} already there)")
                defaults = sum(k.default_missing + k.default_conflict + k.default_not_object
                               for k in self.survey.keys)
                if defaults:
                    notes.append(f"not counted as lost: {plural(defaults, 'value')} at the column's default (the "
                                 "window's 10), which a key left out reads as")
            else:
                notes.append("preserves: " + self.survey.summary(written=False))
                if self.values_lost:
                    notes.append(f"{plural(self.values_lost, 'column value')} will not be in metadata after the drop "
                                 "(conflicts kept, non-object metadata); the first ones are in the conflicts "
                                 "table of --dry-run and in --format json")
        if self.backfill_state:
            notes.append("clears the backfill's checkpoint and rejects of this migration")
        return tuple(notes)

    def to_dict(self) -> dict[str, Any]:
        return {"needed": self.needed, "objects": list(self.objects), "steps": [s.to_dict() for s in self.steps],
                "discard_data": self.discard_data, "values_lost": self.values_lost,
                "survey": self.survey.to_dict() if self.survey else None,
                "backfill_state": self.backfill_state, "notes": list(self.notes())}


def _objects(target: Target, snapshot: Snapshot) -> tuple[str, ...]:
    objects = [o for step in down_steps(target) for o in _present_objects(step, snapshot)]
    objects += [f"constraint {name}" for name in _leftover_checks(target.spec, snapshot)]
    return tuple(objects)


def plan_from_catalogs(conn: psycopg.Connection[Any], target: Target, options: RollbackOptions) -> RollbackPlan:
    """The steps and objects, from the catalogs and the tool's state, without the survey. Read-only.

    Raises PreflightFailed.
    """
    snapshot = read_snapshot(conn, target)
    preflight(conn, target, snapshot, preserve=not options.discard_data)
    state = backfill_state_present(conn, target)
    steps = plan_steps(target, snapshot, discard_data=options.discard_data, backfill_state=state,
                       change_log=change_log_present(conn, target), prefer_columns=options.prefer_columns)
    columns = tuple(c for c in target.spec.columns if c.name in snapshot.columns)
    return RollbackPlan(tuple(steps), _objects(target, snapshot), columns, options.discard_data, state)


def survey(conn: psycopg.Connection[Any], target: Target, plan: RollbackPlan, options: RollbackOptions,
           progress: Progress | None = None) -> RollbackPlan:
    """``plan`` with its survey of the rows holding values (the same batches, read-only). Read-only."""
    if not plan.columns:
        return plan
    found = preserve_pass(conn, target, plan.columns, options, write=False, progress=progress)[0]
    return replace(plan, survey=found)


def plan_rollback(conn: psycopg.Connection[Any], target: Target, options: RollbackOptions | None = None,
                  progress: Progress | None = None) -> RollbackPlan:
    """Read the catalogs and survey the rows holding values; raises PreflightFailed. Read-only."""
    options = options or RollbackOptions()
    return survey(conn, target, plan_from_catalogs(conn, target, options), options, progress)


# ---------------------------------------------------------------- running


def _silent(_: Event) -> None:
    return None


Confirm = Callable[[RollbackPlan], bool]
# Removing the change log when a run stops early: a few short tries; a re-run removes what is left.
_CLEANUP_RETRIES = 3


class _Executor:
    """Runs rollback's own steps (change log, preservation passes, the final drop, the backfill's state) and
    hands the other down steps to the runner. Counts what it wrote, for the report of a run that stops early.
    """

    def __init__(self, runner: StepRunner, columns: Sequence[ColumnSpec], options: RollbackOptions,
                 total: int | None, helpers: Sequence[psycopg.Connection[Any]] = ()) -> None:
        self.runner = runner
        self.helpers = helpers  # more connections sharing the first pass's page ranges
        self.conn = runner.conn
        self.target = runner.target
        self.columns = columns
        self.options = options
        self.total = total
        self.passes: list[Preservation] = []
        self.ledger = Ledger(options.prefer_columns)
        self.rows_written = 0
        self.tracking = False  # the change log and its trigger exist and are ours to remove
        self.state_cleared = False

    def __call__(self, planned: PlannedStep) -> StepResult:
        step = planned.step
        if step == TRACK:
            return self._own(planned, lambda: self._track(planned))
        if step in (PRESERVE, PRESERVE_LATE):
            return self._own(planned, lambda: self._preserve(planned))
        if step == CLEAR_STATE:
            return self._own(planned, self._clear_state)
        if self.tracking and any(obj.kind is ObjectKind.COLUMN for obj in step.creates):
            return self._own(planned, lambda: self._drop_with_last_pass(planned))
        return self.runner.run_step(planned)

    def _retrying(self, action: Callable[[], T], step: str, policy: RetryPolicy | None = None) -> tuple[T, int]:
        runner = self.runner
        return with_lock_retries(self.conn, action, policy=policy or self.options.limits.retry_policy,
                                 watch=runner.watch, on_retry=runner.retry_reporter(step), what=f"step {step}")

    def _own(self, planned: PlannedStep, work: Callable[[], tuple[str, int]]) -> StepResult:
        """Run one of rollback's own steps with the runner's events; ``work`` returns (detail, lock retries)."""
        name = planned.step.name
        self.runner.on_event(Event(EventKind.STEP_START, name, planned.reason))
        started = time.monotonic()
        detail, retries = work()
        result = StepResult(name, StepOutcome.APPLIED, detail, ";\n".join(planned.statements),
                            time.monotonic() - started, retries)
        self.runner.on_event(Event(EventKind.STEP_DONE, name, f"{detail} in {result.duration_s:.2f}s"))
        return result

    def _execute_all(self, statements: Sequence[sql.Composed]) -> None:
        with self.conn.transaction():
            for statement in statements:
                self.conn.execute(statement)

    def _track(self, planned: PlannedStep) -> tuple[str, int]:
        mark_own_writes(self.conn)

        def track() -> None:
            with self.conn.transaction():
                self._execute_all(untrack_statements(self.target))
                if not planned.down:  # the log closed to other roles, as every table of the tool's schema
                    create_tool_tables(self.conn, sql.SQL("; ").join(track_statements(self.target, self.columns)))

        _, retries = self._retrying(track, planned.step.name)
        self.tracking = not planned.down
        return ("trigger " + CHANGE_LOG_TRIGGER + " logs the rows written from now on" if self.tracking
                else "removed"), retries

    def _count_written(self, rows: int) -> None:
        self.rows_written += rows

    def _progress(self, name: str) -> Progress:
        def progress(done: int) -> None:
            total = max(self.total, done) if self.total is not None and name == PRESERVE.name else None
            self.runner.on_event(Event(EventKind.PROGRESS, name, f"{plural(done, 'row')} with values examined",
                                       done=done, total=total))
        return progress

    def _preserve(self, planned: PlannedStep) -> tuple[str, int]:
        name = planned.step.name
        preserve = (partial(preserve_pass, write=True, helpers=self.helpers) if planned.step == PRESERVE
                    else partial(preserve_logged, under_lock=False))
        found, retries = preserve(self.conn, self.target, self.columns, self.options, progress=self._progress(name),
                                  runner=self.runner, step=name, ledger=self.ledger, written=self._count_written,
                                  stopped=self._keep_stopped)
        self.passes.append(found)
        return found.summary(written=True), retries

    def _keep_stopped(self, found: Preservation) -> None:
        """A pass that stopped part-way: what its committed batches wrote is in the report too."""
        if found.rows_examined:
            self.passes.append(found)

    def _drop_with_last_pass(self, planned: PlannedStep) -> tuple[str, int]:
        """The last pass over the logged rows and the column drop, one transaction under the table's lock."""
        def drop() -> Preservation:
            with self.conn.transaction():
                self.conn.execute(_lock_table_statement(self.target))
                found, _ = preserve_logged(self.conn, self.target, self.columns, self.options, under_lock=True,
                                           ledger=self.ledger)
                for statement in (*untrack_statements(self.target), *planned.step.down):
                    self.conn.execute(statement)
                return found

        found, retries = self._retrying(drop, planned.step.name)
        self.tracking = False
        self.passes.append(found)
        self.rows_written += found.rows_written
        return f"dropped; last pass under the lock: {found.summary(written=True)}", retries

    def _clear_state(self) -> tuple[str, int]:
        statements = [statement for table, statement in zip(_state_tables(), _clear_state_statements(self.target),
                                                               strict=True)
                      if scalar(self.conn, sql.SQL("SELECT to_regclass(%s) IS NOT NULL"), (as_text(table),))]

        def clear() -> int:
            with self.conn.transaction():
                return sum(self.conn.execute(s).rowcount for s in statements)

        deleted, retries = self._retrying(clear, CLEAR_STATE.name)
        self.state_cleared = deleted > 0
        return ("checkpoint and rejects cleared" if deleted else "already gone"), retries

    def close(self) -> str | None:
        """Remove the change log when the run stopped before the drop; a note when it could not. Writes."""
        if not self.tracking or self.conn.closed or self.conn.broken:
            return None if not self.tracking else _CHANGE_LOG_LEFT
        policy = replace(self.options.limits.retry_policy, retries=_CLEANUP_RETRIES)
        try:
            if self.conn.info.transaction_status != TransactionStatus.IDLE:
                self.conn.rollback()
            self._retrying(lambda: self._execute_all(untrack_statements(self.target)), TRACK.name, policy)
        except (FavmigrateError, psycopg.Error, KeyboardInterrupt):
            return _CHANGE_LOG_LEFT
        self.tracking = False
        return None


_CHANGE_LOG_LEFT = (f"the trigger {CHANGE_LOG_TRIGGER} and its change log are still in place (they only record row "
                    "ids); the next `favmigrate rollback` removes them")


def _preservation_dict(passes: list[Preservation], ledger: Ledger, discard: bool,
                       survey: Preservation | None) -> dict[str, Any]:
    """The preservation outcome over the passes: writes add up; kept conflicts, non-object rows and losses are
    each row's as the last pass that saw it found them (the ledger); overwritten conflicts add up (a later pass
    sees only new ones).
    """
    if discard or not passes:
        lost = survey.values_lost(discard) if survey else 0
        return {"discarded": discard, "values_written": 0, "rows_written": 0, "values_lost": lost, "passes": []}
    prefer = passes[0].prefer_columns
    outcome: dict[str, Any] = {
        "discarded": False,
        "values_written": sum(p.values_to_write for p in passes),
        "rows_written": sum(p.rows_written for p in passes),
        "conflict_resolution": "column" if prefer else "metadata",
        **ledger.to_dict(),
        "passes": [p.to_dict() for p in passes],
    }
    if prefer:
        outcome.update(conflicts=sum(p.conflict_count for p in passes),
                       unreadable_conflicts=sum(p.unreadable_conflicts for p in passes),
                       conflict_sample=[c.to_dict() for p in passes for c in p.conflicts][:SAMPLE_LIMIT])
    return outcome


def rollback_migration(
    conn: psycopg.Connection[Any], target: Target, options: RollbackOptions | None = None,
    on_event: OnEvent | None = None, confirm: Confirm | None = None, *, can_confirm: bool = True,
) -> RunReport:
    """Preserve the column values in metadata, drop the migration's objects, verify their absence. Writes.

    The run lock is taken before anything is read (a dry run only reads, without it). ``confirm`` sees the
    plan and its survey before anything changes; when it returns False, NotConfirmed is raised. Without
    ``confirm`` there is no survey (but with ``discard_data``, to count what is dropped): the trigger that
    logs the application's writes then exists before any value is read. With
    ``can_confirm`` False nobody can answer it: a rollback with work to do is refused (NotConfirmed) before
    the survey. Raises PreflightFailed (nothing changed), LockHeld (another favmigrate run, or blockers
    outlasted the retries), StepFailed (a step errored; re-running continues). A Ctrl-C yields a report
    with exit code 3.
    """
    options = options or RollbackOptions()
    emit = on_event or _silent
    options.limits.set_on(conn)
    if options.dry_run:
        plan = _surveyed(conn, target, plan_from_catalogs(conn, target, options), options, emit)
        steps = tuple(StepResult(p.step.name, StepOutcome.WOULD_APPLY, p.reason, ";\n".join(p.statements))
                      for p in plan.steps)
        dry_notes = plan.notes() + (("dry run: nothing was changed",) if plan.needed else ())
        shown = {**plan.to_dict(), "steps": [{**p.to_dict(), "session": session_statements(p.step.lock, options.limits)}
                                             for p in plan.steps]}
        return RunReport("rollback", steps, dry_run=True, notes=dry_notes, extra={"plan": shown})
    with run_lock(conn, target.lock_name, wait_s=options.limits.lock_wait_s):
        plan = plan_from_catalogs(conn, target, options)
        if not plan.needed:
            return RunReport("rollback", (), notes=plan.notes(), verification=_verify_absent(conn, target),
                             extra={"plan": plan.to_dict()})
        if confirm is not None and not can_confirm:
            raise NotConfirmed(f"refusing to roll back without --yes: there is no terminal to confirm on; nothing "
                               f"was changed (the rollback {plan.notes()[0]})",
                               hint="review `favmigrate rollback --dry-run`, then pass --yes")
        if confirm is not None or options.discard_data:
            # what the operator confirms, or what --discard-data drops. Without a question the first pass
            # counts as it writes: a survey would only leave writes made during it untracked by the trigger
            plan = _surveyed(conn, target, plan, options, emit)
        if confirm is not None and not confirm(plan):
            raise NotConfirmed("rollback not confirmed; nothing was changed")
        return _run(conn, target, plan, options, emit)


def _surveyed(conn: psycopg.Connection[Any], target: Target, plan: RollbackPlan, options: RollbackOptions,
              emit: OnEvent) -> RollbackPlan:
    def surveyed(done: int) -> None:
        emit(Event(EventKind.PROGRESS, "survey", f"{plural(done, 'row')} with values examined", done=done))

    plan = survey(conn, target, plan, options, progress=surveyed)
    if plan.survey is not None:
        emit(Event(EventKind.STEP_DONE, "survey",
                   f"{plural(plan.survey.rows_examined, 'row')} with values in the columns"))
    return plan


def _run(conn: psycopg.Connection[Any], target: Target, plan: RollbackPlan, options: RollbackOptions,
         emit: OnEvent) -> RunReport:
    """Run the planned steps under the caller's run lock, then verify. Writes."""
    helpers = _open_helpers(conn, plan, options)
    try:
        ensure_history(conn)
        return _run_steps(conn, target, plan, options, emit, helpers)
    finally:
        for helper in helpers:
            helper.close()


def _open_helpers(conn: psycopg.Connection[Any], plan: RollbackPlan,
                  options: RollbackOptions) -> list[psycopg.Connection[Any]]:
    """The connections besides ``conn`` that --jobs asks for, set up as ``conn``: opened before any step, so a
    refused connection changes nothing. None when the first pass does not run in page ranges. Raises
    ConnectionFailed."""
    wanted = options.jobs - 1 if any(p.step == PRESERVE for p in plan.steps) else 0
    if conn.info.server_version < 140000:
        wanted = 0  # keyset batches, each starting where the one before ended: one connection
    try:
        helpers = connect_like(conn, wanted)
    except ConnectionFailed as exc:
        raise ConnectionFailed(f"--jobs {options.jobs} needs {plural(wanted, 'more connection')}: {exc.message}",
                               hint="lower --jobs (each job is one connection), or free connections") from None
    try:
        for helper in helpers:
            options.limits.set_on(helper)
            mark_own_writes(helper)
    except BaseException:
        for helper in helpers:
            helper.close()
        raise
    return helpers


def _run_steps(conn: psycopg.Connection[Any], target: Target, plan: RollbackPlan, options: RollbackOptions,
               emit: OnEvent, helpers: Sequence[psycopg.Connection[Any]]) -> RunReport:
    runner = StepRunner(conn, target, options.runner_options(), emit, "rollback")
    executor = _Executor(runner, plan.columns, options, plan.survey.rows_examined if plan.survey else None, helpers)
    results: list[StepResult] = []
    left: str | None = None
    try:
        if options.discard_data and plan.columns:
            skipped = StepResult(PRESERVE.name, StepOutcome.SKIPPED,
                                 f"--discard-data: {plan.values_lost} column values dropped with the columns")
            runner.record(skipped)
            results.append(skipped)
        results += runner.run_all(list(plan.steps), executor)
    finally:
        left = executor.close()
        runner.watch.close()
        if left:
            emit(Event(EventKind.WARNING, message=left))
    interrupted = any(r.outcome is StepOutcome.INTERRUPTED for r in results)
    preservation = _preservation_dict(executor.passes, executor.ledger, options.discard_data, plan.survey)
    preservation["rows_written"] = executor.rows_written  # a pass that stopped half-way wrote rows too
    extra: dict[str, Any] = {"plan": plan.to_dict(), "run_id": str(runner.run_id), "preservation": preservation,
                             "backfill_state_cleared": executor.state_cleared}
    notes = [_preservation_note(preservation)] if plan.columns else []
    if left:
        notes.append(left)
    if interrupted:
        notes.append(_stopped_note(conn, target, plan, results, executor.rows_written))
        return RunReport("rollback", tuple(results), notes=tuple(notes), extra=extra)
    return RunReport("rollback", tuple(results), notes=tuple(notes), verification=_verify_absent(conn, target),
                     extra=extra)


def _stopped_note(conn: psycopg.Connection[Any], target: Target, plan: RollbackPlan, results: list[StepResult],
                  rows_written: int) -> str:
    """What a run that stopped part-way did, what it left, and that a re-run continues."""
    stopped = next(r for r in results if r.outcome is StepOutcome.INTERRUPTED)
    done = [r.step for r in results if r.outcome is StepOutcome.APPLIED]
    note = (f"stopped at step {stopped.step}: {stopped.detail}. Done in this run: {', '.join(done) or 'no step'}; "
            f"{rows_written} rows' metadata written back (they stay)")
    with contextlib.suppress(psycopg.Error):  # only improves the note: a lost connection leaves it out
        set_session(conn, lock_timeout="0", statement_timeout="0")
        left = [o for o in _objects(target, read_snapshot(conn, target)) if o not in plan.objects]
        if left:
            note += f"; left by the stopped step: {', '.join(left)}"
    return note + ". Re-run `favmigrate rollback` to continue: it starts from what is left"


def _preservation_note(preservation: dict[str, Any]) -> str:
    if preservation["discarded"]:
        return f"--discard-data: {preservation['values_lost']} column values were dropped without a copy in metadata"
    note = (f"{plural(preservation['values_written'], 'value')} written back into metadata "
            f"({plural(preservation['rows_written'], 'row')})")
    if preservation.get("conflicts"):
        fate = "overwritten with the column value" if preservation["conflict_resolution"] == "column" else "kept"
        note += f"; {plural(preservation['conflicts'], 'legacy key')} held another value and {fate}"
    if preservation.get("not_object_rows"):
        note += (f"; {plural(preservation['not_object_rows'], 'row')} whose metadata is not a JSON object left "
                 "as they are")
    if preservation["values_lost"]:
        note += (f"; {plural(preservation['values_lost'], 'column value')} not in metadata (the conflicts table "
                 "shows the first ones, --format json has them with the rows whose metadata is not an object)")
    return note


def _verify_absent(conn: psycopg.Connection[Any], target: Target) -> CheckReport:
    set_session(conn, lock_timeout="0", statement_timeout="0")
    return checks_for(conn, target, read_snapshot(conn, target), data=False, absent=True)
