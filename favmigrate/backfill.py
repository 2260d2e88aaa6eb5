"""backfill: copy the legacy values of ``metadata`` into the migration's columns, online and resumably.

The table is walked in short batches, one transaction each, under ``lock_timeout`` and
``statement_timeout``. One statement per batch (sql/backfill_classify.sql + sql/backfill_batch.sql)
validates every legacy value set-based, looks the mechanics up in one semi-join, fills only the
columns that are still empty, records every reject and conflict, and returns the batch's counts;
the checkpoint is updated in the same transaction, so progress and data never disagree.

Batches are page ranges (``ctid``, PostgreSQL 14+: sequential I/O, no index walk) or primary-key
ranges (keyset, PostgreSQL 12/13). The main pass reads every row as it was when the pass began and
leaves rows written since (inserted or updated by the application, or moved ahead by one of our own
updates) to the catch-up pass, which then visits the rows still pending when it starts, bounded by
the table's size at that moment: the run ends with nothing left that it could have backfilled, and
it does end. Rejects and conflicts are recorded once per row and key in ``favmigrate.backfill_rejects``
(in the batch's transaction); the rejects file is written from there when the pass completes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from favmigrate.backfill_sql import (
    CONFLICT,
    REJECTS_TABLE,
    BackfillColumn,
    backfill_columns,
    batch_template,
    candidate,
    claimable,
    claimed_table,
    classify,
    reject_reasons,
    unique_indexes,
)
from favmigrate.catalog import read_snapshot, relation_pages, require_tables, rows_per_page
from favmigrate.db import (
    BlockerWatch,
    RetryPolicy,
    SessionLimits,
    describe_blockers,
    ms,
    rows,
    run_lock,
    scalar,
    set_local,
    set_session,
    weak_lock_policy,
    with_lock_retries,
)
from favmigrate.errors import ExitCode, Interrupted, LockHeld, PreflightFailed, StepFailed, UsageError
from favmigrate.resources import read_sql
from favmigrate.spec import Target
from favmigrate.state import HISTORY_SCHEMA, ToolTable, create_tool_tables, tool_table

DEFAULT_BATCH_SIZE = 10_000
MIN_SERVER_VERSION = 120000
TID_RANGE_SERVER_VERSION = 140000  # TID Range Scan: a page range is read without touching an index
EXACT_ESTIMATE_ROWS = 200_000  # above this the pre-run count samples the table instead of scanning it
_SAMPLE_ROWS = 50_000
_SHOWN_IDS = 20  # row ids listed in a report

class Scan(StrEnum):
    """How the table is cut into batches."""

    AUTO = "auto"  # ctid on PostgreSQL 14+, else pk
    CTID = "ctid"  # page ranges (TID Range Scan)
    PK = "pk"  # primary-key keyset


class Phase(StrEnum):
    MAIN = "main"
    CATCH_UP = "catch-up"
    # the passes are done but for rows other transactions held locked through every retry: the checkpoint's
    # position holds their keys (a JSON array), and the next run retries only those
    LOCKED = "locked"
    DONE = "done"


@dataclass(frozen=True)
class BackfillOptions:
    """How the backfill runs. ``batch_size`` counts rows scanned per transaction."""

    batch_size: int = DEFAULT_BATCH_SIZE
    sleep_s: float = 0.0
    max_rows_per_second: float | None = None
    dry_run: bool = False
    restart: bool = False
    overwrite: bool = False
    disable_triggers: bool = False
    rejects_path: Path | None = None
    max_replica_lag_s: float | None = None
    limits: SessionLimits = field(default_factory=lambda: SessionLimits(statement_timeout_s=60.0))
    scan: Scan = Scan.AUTO
    catch_up: bool = True


# ---------------------------------------------------------------- progress and results


class BackfillEventKind(StrEnum):
    PLAN = "plan"  # before the first batch: the triggers each update fires and the rows it will touch
    START = "start"
    BATCH = "batch"
    PHASE = "phase"
    RETRY = "retry"
    SKIP = "skip"  # a batch skipped rows another transaction held locked
    PAUSE = "pause"
    WARNING = "warning"
    DONE = "done"


@dataclass(frozen=True)
class BackfillEvent:
    """Progress reported to the caller after each batch and at every turn of the run."""

    kind: BackfillEventKind
    message: str = ""
    phase: Phase = Phase.MAIN
    scanned: int = 0
    total_estimate: int | None = None
    rows_updated: int = 0
    rejected: int = 0
    conflicts: int = 0
    batches: int = 0
    rows_per_s: float = 0.0


OnBackfillEvent = Callable[[BackfillEvent], None]


def _silent(_: BackfillEvent) -> None:
    return None


@dataclass(frozen=True)
class Counters:
    """Cumulative counts of one backfill pass (kept in the checkpoint, so a resumed run reports the whole pass)."""

    scanned: int = 0
    updated: Mapping[str, int] = field(default_factory=dict)
    rows_updated: int = 0
    rejected: Mapping[str, int] = field(default_factory=dict)
    conflicts: int = 0
    batches: int = 0
    catch_up_rows: int = 0
    catch_up_updated: int = 0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def plus(self, batch: BatchCounts, phase: Phase) -> Counters:
        updated = dict(self.updated)
        for column, n in batch.updated.items():
            updated[column] = updated.get(column, 0) + n
        rejected = dict(self.rejected)
        for reason, n in batch.rejected.items():
            if reason != CONFLICT:
                rejected[reason] = rejected.get(reason, 0) + n
        main = phase is Phase.MAIN
        return Counters(
            scanned=self.scanned + (batch.in_range if main else 0),
            updated=updated,
            rows_updated=self.rows_updated + batch.rows_updated,
            rejected=rejected,
            conflicts=self.conflicts + batch.rejected.get(CONFLICT, 0),
            batches=self.batches + 1,
            catch_up_rows=self.catch_up_rows + (0 if main else batch.candidates),
            catch_up_updated=self.catch_up_updated + (0 if main else batch.rows_updated),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "scanned": self.scanned, "updated": dict(self.updated), "rows_updated": self.rows_updated,
            "rejected": dict(self.rejected), "conflicts": self.conflicts, "batches": self.batches,
            "catch_up_rows": self.catch_up_rows, "catch_up_updated": self.catch_up_updated,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Counters:
        return cls(
            scanned=int(data.get("scanned", 0)), updated={k: int(v) for k, v in data.get("updated", {}).items()},
            rows_updated=int(data.get("rows_updated", 0)),
            rejected={k: int(v) for k, v in data.get("rejected", {}).items()},
            conflicts=int(data.get("conflicts", 0)), batches=int(data.get("batches", 0)),
            catch_up_rows=int(data.get("catch_up_rows", 0)), catch_up_updated=int(data.get("catch_up_updated", 0)),
        )


@dataclass(frozen=True)
class BatchCounts:
    """What one batch statement reported."""

    in_range: int
    last: str | None
    candidates: int
    updated: Mapping[str, int]
    rows_updated: int
    rejected: Mapping[str, int]  # includes "conflict"
    skipped: tuple[str, ...] = ()  # ids of candidates another transaction held locked

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> BatchCounts:
        return cls(
            in_range=int(summary["in_range"]), last=summary.get("last"), candidates=int(summary["candidates"]),
            updated={k: int(v) for k, v in summary["updated"].items()}, rows_updated=int(summary["rows_updated"]),
            rejected={k: int(v) for k, v in summary["rejected"].items()},
            skipped=tuple(summary.get("skipped", ())),
        )


@dataclass(frozen=True)
class TriggerInfo:
    """A user trigger that fires on UPDATE of the table (so it runs for every row the backfill updates)."""

    name: str
    timing: str
    function: str
    enabled: str  # origin, always, replica, disabled
    fires: bool  # fires during this backfill (given --disable-triggers or not)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "timing": self.timing, "function": self.function, "enabled": self.enabled,
                "fires": self.fires}


@dataclass(frozen=True)
class BackfillReport:
    """The outcome of one backfill run (for a resumed run, the counts cover the whole pass)."""

    counters: Counters
    columns: tuple[str, ...]
    reasons: tuple[str, ...]  # every reason the spec's columns can give, reported even when 0
    dry_run: bool
    resumed: bool
    scan: Scan
    batch_size: int
    elapsed_s: float
    scanned_this_run: int
    longest_batch_s: float
    lock_retries: int
    legacy_rows_estimate: int | None
    triggers: tuple[TriggerInfo, ...]
    triggers_disabled: bool
    overwrite: bool
    rejects_file: str | None
    rejects_error: str | None = None  # the backfill finished, its rejects file could not be written
    analyzed: bool = False  # the run ended with ANALYZE of the table
    locked_skipped: int = 0  # rows batches skipped because another transaction held them locked
    still_locked: tuple[str, ...] = ()  # of those, the ones still locked when the retries ran out
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.rejects_error is None and not self.still_locked

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.ok else ExitCode.INTERRUPTED

    @property
    def rejected(self) -> dict[str, int]:
        return {reason: self.counters.rejected.get(reason, 0) for reason in self.reasons}

    def to_dict(self) -> dict[str, Any]:
        counters = self.counters
        return {
            "ok": self.ok,
            "command": "backfill",
            "dry_run": self.dry_run,
            "scanned": counters.scanned,
            "updated": {column: counters.updated.get(column, 0) for column in self.columns},
            "rows_updated": counters.rows_updated,
            "rejected": self.rejected,
            "rejected_total": counters.rejected_total,
            "conflicts": counters.conflicts,
            "batches": counters.batches,
            "catch_up": {"rows": counters.catch_up_rows, "rows_updated": counters.catch_up_updated},
            "elapsed_s": round(self.elapsed_s, 3),
            "rows_per_s": round(self.scanned_this_run / self.elapsed_s, 1) if self.elapsed_s > 0 else None,
            "longest_batch_s": round(self.longest_batch_s, 3),
            "lock_retries": self.lock_retries,
            "resumed": self.resumed,
            "scan": self.scan.value,
            "batch_size": self.batch_size,
            "overwrite": self.overwrite,
            "legacy_rows_estimate": self.legacy_rows_estimate,
            "triggers": [trigger.to_dict() for trigger in self.triggers],
            "triggers_disabled": self.triggers_disabled,
            "rejects_file": self.rejects_file,
            "rejects_error": self.rejects_error,
            "analyzed": self.analyzed,
            "locked_rows": {"skipped": self.locked_skipped, "still_locked": len(self.still_locked),
                            "still_locked_ids": list(self.still_locked[:_SHOWN_IDS])},
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------- the statements

_STATE_CHECKPOINT = sql.Identifier(HISTORY_SCHEMA, "backfill_checkpoint")


def _compose_batch(target: Target, *, scan: Scan, phase: Phase, dry_run: bool, first: bool,
                   lock_references: bool = False, by_ids: bool = False, claimed: bool = False) -> sql.Composed:
    spec = target.spec
    columns = backfill_columns(target)
    pk = sql.Identifier(spec.primary_key)
    pending = phase is not Phase.MAIN
    last_key: sql.Composable = sql.SQL("NULL::text")
    if by_ids:  # the rows a batch skipped because another transaction held them locked
        in_batch: sql.Composable = sql.SQL("t.{pk} = ANY(%(ids)s)").format(pk=pk)
    elif scan is Scan.CTID:
        in_batch = sql.SQL("t.ctid >= %(lo)s::tid AND t.ctid < %(hi)s::tid")
    else:
        # the next batch_size keys, whatever the phase: a catch-up batch filters inside its range, so no
        # batch ever walks the whole index looking for the few rows still pending
        lower = sql.SQL("TRUE") if first else sql.SQL("k.{pk} > %(after)s").format(pk=pk)
        upper = sql.SQL(
            "(SELECT b.{pk} FROM (SELECT k.{pk} FROM {table} AS k WHERE {lower} "
            "ORDER BY k.{pk} LIMIT %(batch_size)s) AS b ORDER BY b.{pk} DESC LIMIT 1)"
        ).format(pk=pk, table=target.table, lower=lower)
        t_lower = sql.SQL("TRUE") if first else sql.SQL("t.{pk} > %(after)s").format(pk=pk)
        in_batch = sql.SQL("{t_lower} AND t.{pk} <= {upper}").format(t_lower=t_lower, pk=pk, upper=upper)
        last_key = sql.SQL("{upper}::text").format(upper=upper)
    if not pending:
        # The main pass reads rows as they were when it began. A row written since (by one of our own
        # batches, then moved ahead of the walk; or by the application) is the catch-up pass's business:
        # so nothing is visited twice, and scanned counts each row once.
        in_batch = sql.SQL("{in_batch} AND age(t.xmin) > age(%(pass_xid)s::xid)").format(in_batch=in_batch)
    elif not by_ids:
        # ... and the catch-up pass only those: every older row is where the main pass read it
        in_batch = sql.SQL("{in_batch} AND age(t.xmin) <= age(%(pass_xid)s::xid)").format(in_batch=in_batch)
    classified = classify(
        target, columns, in_batch=in_batch, candidate=candidate(target, columns, "t", pending=pending),
        row_lock=not dry_run,
        # with triggers on, the foreign key's own check locks each referenced row (one deleted after our
        # look-up makes it fail, and the batch is retried); with them off, only this lock guards it
        lock_references=lock_references, claimed=claimed,
    )
    # by ctid: a direct heap fetch instead of a walk down the primary key for every updated row
    row_match = sql.SQL("t.ctid = d.row_ctid") if scan is Scan.CTID else sql.SQL("t.{pk} = d.row_id").format(pk=pk)
    return batch_template(target, columns, classified=classified, in_batch=in_batch, last_key=last_key,
                          row_match=row_match, dry_run=dry_run, claimed=claimed)


def batch_statement(target: Target, *, scan: Scan = Scan.CTID, phase: Phase = Phase.MAIN, dry_run: bool = False,
                    first: bool = False, disable_triggers: bool = False, by_ids: bool = False,
                    claimed: bool = False) -> sql.Composed:
    """The SQL of one batch (for display and tests). Read-only: builds text, runs nothing.

    ``by_ids``: the batch of the rows given as %(ids)s that are still pending (the retry of locked rows).
    ``claimed`` (a dry run): the batch records the unique keys it would write, and sees those of the batches
    before it (backfill_sql.claims; the tables start_claims creates).
    """
    return _compose_batch(target, scan=scan, phase=phase, dry_run=dry_run, first=first,
                          lock_references=disable_triggers and not dry_run, by_ids=by_ids, claimed=claimed and dry_run)


def start_claims(conn: psycopg.Connection[Any], target: Target) -> bool:
    """For a dry run: the session's empty temporary tables of the unique keys its batches would write (see
    backfill_sql.claims), so that a duplicate between two batches is counted as the real run counts it. False
    when the spec has no (non-partial) unique index on its columns, or the session may not create temporary
    tables (a hot standby, no TEMP privilege): each batch is then judged against the table alone. Writes only
    temporary tables."""
    uniques = [(k, index) for k, index in enumerate(unique_indexes(target)) if claimable(index)]
    if not uniques:
        return False
    try:
        with conn.transaction():
            for k, index in uniques:
                names = sql.SQL(", ").join(sql.Identifier(name) for name in index.columns)
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(claimed_table(k)))
                conn.execute(sql.SQL("CREATE TEMPORARY TABLE {claims} AS SELECT {names} FROM {table} WITH NO DATA")
                             .format(claims=claimed_table(k), names=names, table=target.table))
                conn.execute(sql.SQL("CREATE INDEX ON {} ({})").format(claimed_table(k), names))
    except (pg_errors.ReadOnlySqlTransaction, pg_errors.InsufficientPrivilege):
        return False
    return True


def end_claims(conn: psycopg.Connection[Any], target: Target) -> None:
    """Drop start_claims' temporary tables (they would go with the session anyway)."""
    if conn.closed or conn.broken or conn.info.transaction_status is not TransactionStatus.IDLE:
        return
    for k, index in enumerate(unique_indexes(target)):
        if claimable(index):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(claimed_table(k)))


# ---------------------------------------------------------------- preflight


_TRIGGERS = sql.SQL(
    """
    SELECT t.tgname AS name,
           CASE WHEN t.tgtype::integer & 2 <> 0 THEN 'BEFORE'
                WHEN t.tgtype::integer & 64 <> 0 THEN 'INSTEAD OF' ELSE 'AFTER' END
           || CASE WHEN t.tgtype::integer & 1 <> 0 THEN ' UPDATE FOR EACH ROW' ELSE ' UPDATE FOR EACH STATEMENT' END
               AS timing,
           p.oid::regprocedure::text AS function,
           t.tgenabled::text AS enabled
    FROM pg_trigger t
    JOIN pg_proc p ON p.oid = t.tgfoid
    WHERE t.tgrelid = %s::regclass AND NOT t.tgisinternal AND t.tgtype::integer & 16 <> 0
    ORDER BY t.tgname
    """
)

_ENABLED = {"O": "origin", "A": "always", "R": "replica", "D": "disabled"}


def update_triggers(conn: psycopg.Connection[Any], target: Target, *, replica: bool) -> tuple[TriggerInfo, ...]:
    """The user triggers an UPDATE of the table fires (``replica``: with session_replication_role=replica).

    Read-only.
    """
    found = []
    for row in rows(conn, _TRIGGERS, (target.table_name,)):
        enabled = row["enabled"]
        fires = enabled == "A" or (enabled == "R" if replica else enabled == "O")
        found.append(TriggerInfo(row["name"], row["timing"], row["function"], _ENABLED.get(enabled, enabled), fires))
    return tuple(found)


def _can_disable_triggers(conn: psycopg.Connection[Any], version: int) -> bool:
    if scalar(conn, sql.SQL("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")):
        return True
    if version >= 150000:
        return bool(scalar(conn, sql.SQL("SELECT has_parameter_privilege('session_replication_role', 'SET')")))
    return False


def _preflight(conn: psycopg.Connection[Any], target: Target, options: BackfillOptions,
               emit: OnBackfillEvent) -> int:
    """Refuse to start (PreflightFailed, nothing changed) unless the columns exist and the role may do the work.

    A dry run only warns about missing privileges (it needs none to count), but row level security
    fails both: it would hide rows from the count as well. Returns the server version number.
    """
    spec = target.spec
    snapshot = read_snapshot(conn, target)
    if snapshot.server_version_num < MIN_SERVER_VERSION:
        raise PreflightFailed(f"PostgreSQL {snapshot.server_version_num} is too old; backfill needs 12 or later")
    require_tables(snapshot, target)
    missing = [c.name for c in spec.columns if c.name not in snapshot.columns]
    if missing:
        raise PreflightFailed(
            f"{target.table_name} has no column {', '.join(missing)} yet: there is nothing to backfill into",
            problems=[f"column {name} is missing" for name in missing],
            hint="run `favmigrate apply` first",
        )
    who = snapshot.current_user
    found = rows(conn, sql.SQL("SELECT has_table_privilege(%s, 'UPDATE') AS can_update, "
                               "row_security_active(%s) AS rls"), (target.table_name, target.table_name))[0]
    if found["rls"]:
        raise PreflightFailed(
            f"row level security applies to {who} on {target.table_name}: the backfill would silently skip "
            "the rows its policies hide", hint="connect as the table owner or a role with BYPASSRLS")
    problems: list[tuple[str, str]] = []
    if not found["can_update"]:
        problems.append((f"{who} may not UPDATE {target.table_name}",
                         "connect as the table owner (on Supabase: postgres)"))
    if options.disable_triggers and not _can_disable_triggers(conn, snapshot.server_version_num):
        problems.append((f"--disable-triggers needs SET on session_replication_role, which {who} lacks",
                         "connect as a superuser, GRANT SET ON PARAMETER session_replication_role TO the role "
                         "(PostgreSQL 15+), or run without --disable-triggers"))
    for message, hint in problems:
        if not options.dry_run:
            raise PreflightFailed(message, hint=hint)
        emit(BackfillEvent(BackfillEventKind.WARNING, f"the real run would fail: {message} ({hint})"))
    return snapshot.server_version_num


def _estimate(conn: psycopg.Connection[Any], target: Target) -> tuple[int, int, bool]:
    """(rows, rows carrying legacy data, exact?) — a full count on small tables, a page sample on large ones."""
    reltuples = int(scalar(conn, sql.SQL("SELECT greatest(reltuples, 0)::bigint FROM pg_class "
                                         "WHERE oid = %s::regclass"), (target.table_name,)) or 0)
    holds_legacy = candidate(target, backfill_columns(target), "t", pending=False)
    if reltuples <= EXACT_ESTIMATE_ROWS:
        query = sql.SQL("SELECT count(*), count(*) FILTER (WHERE {c}) FROM {table} AS t").format(
            c=holds_legacy, table=target.table)
        found = conn.execute(query).fetchone()
        assert found is not None
        return int(found[0]), int(found[1]), True
    percent = min(100.0, 100.0 * _SAMPLE_ROWS / reltuples)
    query = sql.SQL("SELECT count(*), count(*) FILTER (WHERE {c}) FROM {table} AS t TABLESAMPLE SYSTEM (%s)").format(
        c=holds_legacy, table=target.table)
    found = conn.execute(query, (percent,)).fetchone()
    assert found is not None
    sampled, legacy = int(found[0]), int(found[1])
    if sampled == 0:
        return reltuples, 0, False
    return reltuples, round(legacy * reltuples / sampled), False


# ---------------------------------------------------------------- state


def _ensure_state(conn: psycopg.Connection[Any]) -> None:
    """Create the checkpoint and rejects tables (and the favmigrate schema) if missing. Writes.

    Raises PreflightFailed when the role may not create them.
    """
    if all(tool_table(conn, name) is not ToolTable.MISSING for name in ("backfill_checkpoint", "backfill_rejects")):
        return
    ddl = sql.SQL(read_sql("backfill_state.sql")).format(checkpoint_table=_STATE_CHECKPOINT,
                                                         rejects_table=REJECTS_TABLE)
    try:
        create_tool_tables(conn, ddl)
    except pg_errors.InsufficientPrivilege as exc:
        raise PreflightFailed(f"cannot create the backfill's checkpoint tables: {_first_line(exc)}",
                              hint=f"create them once as the owner, or GRANT CREATE ON SCHEMA {HISTORY_SCHEMA} "
                              "(or ON DATABASE) to this role") from None


@dataclass(frozen=True)
class _Checkpoint:
    scan: Scan
    phase: Phase
    position: str | None
    end_position: str | None
    pass_xid: int
    counters: Counters
    options: Mapping[str, Any]


def _read_checkpoint(conn: psycopg.Connection[Any], target: Target) -> _Checkpoint | None:
    found = rows(conn, sql.SQL(
        "SELECT scan, phase, position, end_position, pass_xid, counters, options FROM {} "
        "WHERE migration_id = %s AND target_schema = %s").format(_STATE_CHECKPOINT),
        (target.spec.id, target.schema))
    if not found:
        return None
    row = found[0]
    return _Checkpoint(Scan(row["scan"]), Phase(row["phase"]), row["position"], row["end_position"],
                       int(row["pass_xid"]), Counters.from_json(row["counters"]), row["options"])


def read_checkpoint(conn: psycopg.Connection[Any], target: Target) -> dict[str, Any] | None:
    """The saved progress of the backfill in ``target`` (None if it never ran). Read-only."""
    if tool_table(conn, "backfill_checkpoint") is ToolTable.MISSING:
        return None
    found = rows(conn, sql.SQL(
        "SELECT scan, phase, position, end_position, counters, options, started_at, updated_at, finished_at "
        "FROM {} WHERE migration_id = %s AND target_schema = %s").format(_STATE_CHECKPOINT),
        (target.spec.id, target.schema))
    return found[0] if found else None


_SAVE = sql.SQL(
    "UPDATE {} SET phase = %(phase)s, position = %(position)s, end_position = %(end_position)s, "
    "counters = %(counters)s, updated_at = now(), "
    "finished_at = CASE WHEN %(phase)s = 'done' THEN now() END "
    "WHERE migration_id = %(migration_id)s AND target_schema = %(target_schema)s"
).format(_STATE_CHECKPOINT)


def _next_xid(conn: psycopg.Connection[Any]) -> int:
    """The first transaction id not yet assigned (64-bit): rows with an xmin from here on are newer."""
    return int(scalar(conn, sql.SQL("SELECT txid_snapshot_xmax(txid_current_snapshot())")))


def _start_pass(conn: psycopg.Connection[Any], target: Target, scan: Scan, end_position: str | None,
                options: BackfillOptions) -> int:
    """Forget the previous pass (its checkpoint and rejects) and record a fresh one. Writes. Returns pass_xid."""
    key = {"migration_id": target.spec.id, "target_schema": target.schema}
    saved = {"overwrite": options.overwrite, "disable_triggers": options.disable_triggers}
    with conn.transaction():
        pass_xid = _next_xid(conn)
        conn.execute(sql.SQL("DELETE FROM {} WHERE migration_id = %(migration_id)s "
                             "AND target_schema = %(target_schema)s").format(REJECTS_TABLE), key)
        conn.execute(sql.SQL(
            "INSERT INTO {} (migration_id, target_schema, scan, phase, position, end_position, pass_xid, counters, "
            "options) VALUES (%(migration_id)s, %(target_schema)s, %(scan)s, 'main', NULL, %(end)s, %(pass_xid)s, "
            "%(counters)s, %(options)s) "
            "ON CONFLICT (migration_id, target_schema) DO UPDATE SET scan = EXCLUDED.scan, phase = 'main', "
            "position = NULL, end_position = EXCLUDED.end_position, pass_xid = EXCLUDED.pass_xid, "
            "counters = EXCLUDED.counters, options = EXCLUDED.options, started_at = now(), updated_at = now(), "
            "finished_at = NULL"
        ).format(_STATE_CHECKPOINT), {**key, "scan": scan.value, "end": end_position, "pass_xid": pass_xid,
                                      "counters": Jsonb(Counters().to_json()), "options": Jsonb(saved)})
    return pass_xid


def _replica_lag_s(conn: psycopg.Connection[Any]) -> tuple[float, bool]:
    """(worst replay lag in seconds, whether the lag columns are visible to us)."""
    found = rows(conn, sql.SQL(
        "SELECT coalesce(max(extract(epoch FROM replay_lag)), 0)::float8 AS lag, "
        "count(*) FILTER (WHERE state IS NULL) AS hidden FROM pg_stat_replication"))[0]
    return float(found["lag"]), found["hidden"] == 0


# ---------------------------------------------------------------- the run


class _Run:
    """One invocation: walks the passes batch by batch, saves progress after each, throttles, reports."""

    def __init__(self, conn: psycopg.Connection[Any], target: Target, options: BackfillOptions, emit: OnBackfillEvent,
                 scan: Scan, total_estimate: int | None) -> None:
        self.conn = conn
        self.target = target
        self.options = options
        self.emit = emit
        self.scan = scan
        self.total_estimate = total_estimate
        self.rejects_out: _RejectsOut | None = None  # a dry run writes its rejects as it goes
        self.columns = backfill_columns(target)
        self.counters = Counters()
        self.phase = Phase.MAIN
        self.end_position: str | None = None
        self.pass_xid = 0
        self.started = time.monotonic()
        self.scanned_this_run = 0
        self.longest_batch_s = 0.0
        self.lock_retries = 0
        self.watch = None if options.dry_run else BlockerWatch.for_connection(conn)
        self._statements: dict[tuple[Phase, bool, bool], bytes] = {}
        self.claimed = False  # a dry run records the unique keys its batches would write (start_claims)
        self.skipped: dict[str, None] = {}  # rows a batch skipped because they were locked (insertion-ordered)
        self.still_locked: tuple[str, ...] = ()
        self._lag_warned = False
        self.analyzed = False

    @property
    def key(self) -> dict[str, Any]:
        return {"migration_id": self.target.spec.id, "target_schema": self.target.schema}

    def statement(self, first: bool, by_ids: bool) -> bytes:
        """The batch statement, rendered once (psycopg composes a Composed statement anew on every execute)."""
        key = (self.phase, first and self.scan is Scan.PK, by_ids)
        if key not in self._statements:
            self._statements[key] = batch_statement(
                self.target, scan=self.scan, phase=self.phase, dry_run=self.options.dry_run, first=key[1],
                disable_triggers=self.options.disable_triggers, by_ids=by_ids, claimed=self.claimed
            ).as_bytes(self.conn)
        return self._statements[key]

    def event(self, kind: BackfillEventKind, message: str = "") -> None:
        elapsed = time.monotonic() - self.started
        c = self.counters
        self.emit(BackfillEvent(
            kind, message, self.phase, scanned=c.scanned, total_estimate=self.total_estimate,
            rows_updated=c.rows_updated, rejected=c.rejected_total, conflicts=c.conflicts, batches=c.batches,
            rows_per_s=self.scanned_this_run / elapsed if elapsed > 0 else 0.0))

    def save(self, position: str | None, counters: Counters) -> None:
        """Write the checkpoint (inside the caller's transaction)."""
        self.conn.execute(_SAVE, {**self.key, "phase": self.phase.value, "position": position,
                                  "end_position": self.end_position, "counters": Jsonb(counters.to_json())})

    def enter(self, phase: Phase, end_position: str | None, position: str | None = None) -> None:
        """Start ``phase`` at ``position`` (None: its beginning); saved, unless this is a dry run."""
        self.phase, self.end_position = phase, end_position
        if not self.options.dry_run:
            with self.conn.transaction():
                self.save(position, self.counters)

    def analyze(self) -> None:
        """ANALYZE the table: apply analysed the columns while they were empty, so until this (or autovacuum)
        the planner takes them for all NULL and all default, and plans the new indexes' queries wrongly."""
        def action() -> None:
            with self.conn.transaction():
                set_local(self.conn, statement_timeout="0")  # --statement-timeout bounds a batch, not this
                self.conn.execute(sql.SQL("ANALYZE {}").format(self.target.table))

        policy = weak_lock_policy(self.conn, self.options.limits.retry_policy)
        _, retries = with_lock_retries(self.conn, action, policy=policy, watch=self.watch,
                                       on_retry=self._retry_reporter(policy), what=f"ANALYZE {self.target.table_name}")
        self.lock_retries += retries
        self.analyzed = True

    def _retry_reporter(self, policy: RetryPolicy) -> Callable[[int, float, list[dict[str, Any]]], None]:
        def report(attempt: int, delay: float, blockers: list[dict[str, Any]]) -> None:
            who = describe_blockers(blockers) or "unknown backends"
            self.event(BackfillEventKind.RETRY, f"lock not granted within {policy.lock_timeout_s:g}s (retry "
                       f"{attempt}/{policy.retries} in {delay:.1f}s); blocked by {who}")
        return report

    def _on_retry(self, attempt: int, delay: float, blockers: list[dict[str, Any]]) -> None:
        self._retry_reporter(self.options.limits.retry_policy)(attempt, delay, blockers)

    def run_batch(self, params: dict[str, Any], first: bool, next_position: str | None,
                  by_ids: bool = False) -> BatchCounts:
        """One batch in one transaction with its checkpoint (rolled back for a dry run); retries lock waits."""
        statement = self.statement(first, by_ids)
        rejects: list[tuple[Any, ...]] = []

        def action() -> BatchCounts:
            rejects.clear()
            # a dry run's READ ONLY transaction writes nothing but the claims, which later batches must see
            with self.conn.transaction(force_rollback=self.options.dry_run and not self.claimed):
                if self.options.dry_run:
                    self.conn.execute(sql.SQL("SET TRANSACTION READ ONLY"))
                elif self.options.disable_triggers:
                    set_local(self.conn, session_replication_role="replica")
                found = self.conn.execute(statement, params).fetchall()
                counts = BatchCounts.from_summary(next(row[6] for row in found if row[0] == "summary"))
                rejects.extend(row for row in found if row[0] == "reject")
                exhausted = self.scan is Scan.PK and counts.last is None and not by_ids
                if not self.options.dry_run and not exhausted:
                    position = next_position if self.scan is Scan.CTID or by_ids else counts.last
                    self.save(position, self.counters.plus(counts, self.phase))
            return counts

        races = 0
        duplicates = 0
        while True:
            began = time.monotonic()
            try:
                counts, retries = with_lock_retries(self.conn, action, policy=self.options.limits.retry_policy,
                                                    watch=self.watch, on_retry=self._on_retry, what="a backfill batch")
            except (pg_errors.DeadlockDetected, pg_errors.ForeignKeyViolation):
                # the application locked two of the batch's rows in the other order, or deleted a mechanic
                # between our look-up and the foreign key's check: the retry sees the new state
                races += 1
                if races > self.options.limits.retries:
                    raise
                time.sleep(self.options.limits.retry_policy.delay(races))
                continue
            except pg_errors.UniqueViolation:
                # the application wrote a unique key between our check and our write: once more, the
                # classification sees its row and rejects ours as duplicate_value
                duplicates += 1
                if duplicates > self.options.limits.retries:
                    raise
                self.event(BackfillEventKind.RETRY, "a unique key was written concurrently; retrying the batch "
                           f"({duplicates}/{self.options.limits.retries})")
                time.sleep(self.options.limits.retry_policy.delay(duplicates))
                continue
            self.longest_batch_s = max(self.longest_batch_s, time.monotonic() - began)
            self.lock_retries += retries
            break
        if self.rejects_out is not None:
            for row in rejects:
                self.rejects_out.write(_reject_line(row[1], row[2], row[3], row[4], row[5], self.columns))
        return counts

    def retry_skipped(self, pending: list[str]) -> None:
        """Retry the rows that batches skipped as locked (``pending``), with backoff, until every one is done or the
        retries run out (those are left in ``still_locked``). Runs in the DONE phase: its batches save no
        position."""
        attempt = 0
        while pending:
            counts = self.run_batch({"ids": pending, "overwrite": self.options.overwrite, **self.key}, False, None,
                                    by_ids=True)
            self.counters = self.counters.plus(counts, self.phase)
            self.event(BackfillEventKind.BATCH)
            pending = list(counts.skipped)
            attempt += 1
            if not pending or attempt > self.options.limits.retries:
                break
            delay = self.options.limits.retry_policy.delay(attempt)
            self.event(BackfillEventKind.RETRY, f"{_rows(len(pending))} still locked by other transactions (retry "
                       f"{attempt}/{self.options.limits.retries} in {delay:.1f}s)")
            time.sleep(delay)
        self.still_locked = tuple(pending)

    def throttle(self, rows_done: int, batch_s: float) -> None:
        pause = self.options.sleep_s
        if self.options.max_rows_per_second:
            pause = max(pause, rows_done / self.options.max_rows_per_second - batch_s)
        if pause > 0:
            time.sleep(pause)
        limit = self.options.max_replica_lag_s
        if limit is None:
            return
        announced = False
        while True:
            lag, visible = _replica_lag_s(self.conn)
            if not visible and not self._lag_warned:
                self._lag_warned = True
                self.event(BackfillEventKind.WARNING, "pg_stat_replication hides the replay lag from this role "
                           "(it needs pg_monitor): --max-replica-lag cannot see the replicas")
            if lag <= limit:
                return
            if not announced:
                announced = True
                self.event(BackfillEventKind.PAUSE, f"replica replay lag {lag:.1f}s is above {limit:g}s: pausing")
            time.sleep(1.0)

    def walk(self, position: str | None) -> None:
        """Run the current phase from ``position`` (None: its beginning) to its end."""
        common = {"overwrite": self.options.overwrite, "pass_xid": str(self.pass_xid % 2**32), **self.key}
        if self.scan is Scan.CTID:
            assert self.end_position is not None
            end_page, page = int(self.end_position), int(position or 0)
            density = rows_per_page(self.conn, self.target)
            pages_seen = rows_seen = 0
            while page < end_page:
                if pages_seen and rows_seen:
                    density = rows_seen / pages_seen
                # the catch-up pass reads many rows for each one it locks: 4x the pages cost no longer locks
                span = math.ceil(self.options.batch_size / density) * (4 if self.phase is Phase.CATCH_UP else 1)
                hi = page + max(1, min(end_page - page, span))
                counts = self.one({"lo": f"({page},0)", "hi": f"({hi},0)", **common}, False, str(hi))
                pages_seen, rows_seen, page = pages_seen + hi - page, rows_seen + counts.in_range, hi
            return
        after = position
        while True:
            counts = self.one({"after": after, "batch_size": self.options.batch_size, **common}, after is None, None)
            if counts.last is None:
                return
            after = counts.last

    def one(self, params: dict[str, Any], first: bool, next_position: str | None) -> BatchCounts:
        began = time.monotonic()
        counts = self.run_batch(params, first, next_position)
        if self.scan is Scan.PK and counts.last is None:
            return counts  # the keyset is exhausted: nothing was read
        self.counters = self.counters.plus(counts, self.phase)
        if self.phase is Phase.MAIN:
            self.scanned_this_run += counts.in_range
        self.event(BackfillEventKind.BATCH)
        if counts.skipped:
            self.skipped.update(dict.fromkeys(counts.skipped))
            self.event(BackfillEventKind.SKIP, f"{_rows(len(counts.skipped))} locked by another transaction "
                       "skipped; retried at the end of the run")
        self.throttle(counts.in_range if self.phase is Phase.MAIN else counts.candidates, time.monotonic() - began)
        return counts


def _reject_line(row_id: str, key: str | None, reason: str, value_text: str | None, current_text: str | None,
                 columns: tuple[BackfillColumn, ...]) -> str:
    """One JSON line of the rejects file. The values arrive as jsonb text and are carried as they are:
    decoding them in Python would fail on a deeply nested (yet valid) value."""
    fields = [f'"id": {json.dumps(row_id)}', f'"key": {json.dumps(key or None)}',
              f'"value": {value_text if value_text is not None else "null"}', f'"reason": {json.dumps(reason)}']
    if reason == CONFLICT:
        column = next((c.name for c in columns if c.key == key), None)
        fields.append(f'"column": {json.dumps(column)}')
        fields.append(f'"current": {current_text if current_text is not None else "null"}')
    return "{" + ", ".join(fields) + "}"


class RejectsNotWritten(Exception):
    """Writing the rejects file failed (the OSError's text is the message)."""


class _RejectsOut:
    """The --rejects file, complete or not written at all.

    A regular file (or a new one) is written to a temporary file beside it, synced and renamed over it
    only when every line is in, so an interrupted or failed run leaves the previous file as it was.
    Something else (a FIFO, /dev/stdout) is written in place: renaming over it would replace it.
    Opened before the first batch, so a path that cannot be written refuses the run before any change.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(os.path.realpath(path))
        self._temporary: Path | None = None
        try:
            if self.path.is_dir():
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
            if self.path.exists() and not stat.S_ISREG(self.path.stat().st_mode):
                self._handle: IO[str] = self.path.open("w", encoding="utf-8")
                return
            self._temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
            fd = os.open(self._temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            self._handle = os.fdopen(fd, "w", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write the rejects file {path}: {exc.strerror or exc}",
                             hint="pass a --rejects path in a writable directory; nothing was changed") from None

    def write(self, line: str) -> None:
        try:
            self._handle.write(line + "\n")
        except OSError as exc:
            raise RejectsNotWritten(exc.strerror or str(exc)) from None

    def commit(self) -> None:
        """Make the file visible, whole. Raises RejectsNotWritten (and removes the partial file)."""
        try:
            self._handle.flush()
            if self._temporary is not None:
                os.fsync(self._handle.fileno())
            self._handle.close()
            if self._temporary is not None:
                os.replace(self._temporary, self.path)
                self._temporary = None
                self._sync_directory()
        except OSError as exc:
            self.discard()
            raise RejectsNotWritten(exc.strerror or str(exc)) from None

    def _sync_directory(self) -> None:
        with contextlib.suppress(OSError):  # the rename is done; a directory that cannot be synced keeps it
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._handle.close()
        if self._temporary is not None:
            with contextlib.suppress(OSError):
                self._temporary.unlink()
            self._temporary = None


@contextmanager
def _rejects_file(path: Path | None) -> Iterator[_RejectsOut | None]:
    """The rejects file for one run: committed when the block ends normally, discarded otherwise."""
    if path is None:
        yield None
        return
    out = _RejectsOut(path)
    try:
        yield out
    except BaseException:
        out.discard()
        raise
    out.commit()


def _dump_rejects(conn: psycopg.Connection[Any], target: Target, out: _RejectsOut,
                  columns: tuple[BackfillColumn, ...]) -> None:
    query = sql.SQL(
        "SELECT row_id, key, reason, value::text, current_value::text FROM {} "
        "WHERE migration_id = %s AND target_schema = %s ORDER BY row_id, key").format(REJECTS_TABLE)
    with conn.cursor() as cur:
        for row in cur.stream(query, (target.spec.id, target.schema)):
            out.write(_reject_line(row[0], row[1], row[2], row[3], row[4], columns))


def _resolve_scan(requested: Scan, version: int) -> Scan:
    if requested is Scan.CTID and version < TID_RANGE_SERVER_VERSION:
        raise UsageError("--scan ctid needs PostgreSQL 14 or later (TID Range Scan)", hint="use --scan pk")
    if requested is Scan.AUTO:
        return Scan.CTID if version >= TID_RANGE_SERVER_VERSION else Scan.PK
    return requested


def _check_options(options: BackfillOptions) -> None:
    if options.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if options.sleep_s < 0:
        raise UsageError("--sleep cannot be negative")
    if options.max_rows_per_second is not None and options.max_rows_per_second <= 0:
        raise UsageError("--max-rows-per-second must be positive")
    if options.max_replica_lag_s is not None and options.max_replica_lag_s < 0:
        raise UsageError("--max-replica-lag cannot be negative")
    if options.dry_run and options.restart:
        raise UsageError("--restart and --dry-run do not go together: a dry run never saves progress")


def backfill(conn: psycopg.Connection[Any], target: Target, options: BackfillOptions | None = None,
             on_event: OnBackfillEvent | None = None) -> BackfillReport:
    """Copy the legacy metadata values into the migration's columns. Writes (unless ``dry_run``).

    Resumes an unfinished pass from its checkpoint (``restart`` starts over; a finished pass is never
    resumed: the next run is a fresh pass, which changes nothing that is already backfilled). Raises
    PreflightFailed before any change when the columns are missing or the role may not do the work,
    LockHeld when another run holds the run lock, Interrupted (progress saved, re-run to continue) on
    Ctrl-C or a lost connection, StepFailed when a batch fails.
    """
    options = options or BackfillOptions()
    emit = on_event or _silent
    _check_options(options)
    # session level, before the first query: a role's own statement_timeout must not apply to us.
    # No JIT: compiling costs ~100 ms, more than a whole batch, and the estimate for the catch-up
    # filter invites it.
    options.limits.set_on(conn, TimeZone="UTC", jit="off")
    saved = "" if options.dry_run else "; every finished batch is saved: run `favmigrate backfill` again to continue"
    # the run lock comes before the first read: a rollback holding it may drop the columns we would find
    locked = contextlib.nullcontext() if options.dry_run else run_lock(conn, target.lock_name,
                                                                       wait_s=options.limits.lock_wait_s)
    try:
        with locked:
            version = _preflight(conn, target, options, emit)
            scan = _resolve_scan(options.scan, version)
            if scan is Scan.PK:
                # a generic plan cannot see how few keys a batch spans (a page range it estimates well)
                set_session(conn, plan_cache_mode="force_custom_plan")
            if not options.dry_run:
                _ensure_state(conn)
            return _run(conn, target, options, emit, scan)
    except KeyboardInterrupt:
        raise Interrupted(f"backfill interrupted{saved}") from None
    except pg_errors.QueryCanceled as exc:
        if "statement timeout" in str(exc):
            limit = ms(options.limits.statement_timeout_s)
            raise StepFailed(f"a backfill batch ran into the statement_timeout ({limit})",
                             hint=f"lower --batch-size or raise --statement-timeout{saved}") from None
        raise Interrupted(f"backfill interrupted (the batch was cancelled){saved}") from None
    except psycopg.OperationalError as exc:
        if conn.closed or exc.sqlstate is None:
            raise Interrupted(f"lost the connection during the backfill ({_first_line(exc)}){saved}") from None
        # psycopg files some server errors (e.g. 54000 program_limit_exceeded) as operational too: the
        # connection is fine, and the same batch would fail again
        raise StepFailed(f"a backfill batch failed: {_first_line(exc)} (SQLSTATE {exc.sqlstate})",
                         hint=f"re-run with --debug for the traceback{saved}") from None
    except LockHeld as exc:
        if exc.message.startswith("another favmigrate run"):
            raise
        raise StepFailed(exc.message, hint=f"end or wait for the blocking transactions{saved}",
                         details=exc.details) from None
    except pg_errors.UniqueViolation as exc:
        raise StepFailed(f"a backfill batch hit a unique key written concurrently on every retry: {_first_line(exc)}",
                         hint=f"the batch was not written; re-run when the application's writes of that key "
                         f"settle (or raise --retries){saved}") from None
    except psycopg.Error as exc:
        raise StepFailed(f"a backfill batch failed: {_first_line(exc)}", hint=f"fix the cause{saved}") from None


def _rows(n: int) -> str:
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _run(conn: psycopg.Connection[Any], target: Target, options: BackfillOptions, emit: OnBackfillEvent,
         scan: Scan) -> BackfillReport:
    columns = backfill_columns(target)
    checkpoint = None if options.dry_run else _read_checkpoint(conn, target)
    resumed = checkpoint is not None and checkpoint.phase is not Phase.DONE and not options.restart
    if checkpoint is not None and resumed:
        if bool(checkpoint.options.get("overwrite", False)) != options.overwrite:
            raise UsageError(
                "the unfinished backfill ran " + ("with" if checkpoint.options.get("overwrite") else "without")
                + " --overwrite; continue it the same way", hint="or pass --restart to start a new pass")
        if options.scan is not Scan.AUTO and checkpoint.scan is not scan:
            raise UsageError(f"the unfinished backfill walks by {checkpoint.scan.value}, not {scan.value}",
                             hint="drop --scan to continue it, or pass --restart")
        scan = checkpoint.scan
    total, legacy, exact = _estimate(conn, target)
    triggers = update_triggers(conn, target, replica=options.disable_triggers)
    firing = [t for t in triggers if t.fires]
    approx = "" if exact else "~"
    plan = (f"up to {approx}{legacy:,} of {approx}{total:,} rows of {target.table_name} carry legacy metadata and "
            "may be updated; ")
    plan += ("each update fires " + ", ".join(f"{t.name} ({t.timing}, {t.function})" for t in firing)
             if firing else "no user trigger fires")
    if options.disable_triggers:
        plan += " (session_replication_role=replica: ordinary triggers and foreign-key checks are off)"
    notes = []
    rejects_error: str | None = None
    run = _Run(conn, target, options, emit, scan, total)
    try:
        with _rejects_file(options.rejects_path) as out:
            run.rejects_out = out if options.dry_run else None
            run.claimed = options.dry_run and start_claims(conn, target)
            uniques = unique_indexes(target)
            if options.dry_run and uniques and not (run.claimed and all(claimable(i) for i in uniques)):
                run.event(BackfillEventKind.WARNING, "this dry run judges each batch against the table alone (no "
                          "temporary tables here, or a partial unique index): a duplicate between two of its "
                          "batches is counted by the real run only")
            _walk_passes(run, checkpoint if resumed else None, plan, out)
    except RejectsNotWritten as exc:
        if options.dry_run:
            raise UsageError(f"cannot write the rejects file {options.rejects_path}: {exc}",
                             hint="pass a --rejects path with room to write; nothing was changed") from None
        rejects_error = f"the rejects file {options.rejects_path} could not be written: {exc}"
        notes.append(f"{rejects_error}. The backfill itself is done: run `favmigrate backfill --rejects FILE` "
                     "again with a writable FILE to write it (the new pass changes nothing already copied)")
        run.event(BackfillEventKind.WARNING, rejects_error)
    finally:
        if run.watch is not None:
            run.watch.close()
        if run.claimed:
            end_claims(conn, target)
    if options.dry_run:
        notes.append("dry run: nothing was changed")
    if run.analyzed:
        notes.append(f"planner statistics refreshed (ANALYZE {target.table_name})")
    if run.still_locked:
        shown = ", ".join(run.still_locked[:_SHOWN_IDS]) + (", ..." if len(run.still_locked) > _SHOWN_IDS else "")
        notes.append(f"{_rows(len(run.still_locked))} stayed locked by other transactions through every retry and "
                     f"{'was' if len(run.still_locked) == 1 else 'were'} not copied ({shown}): run `favmigrate "
                     "backfill` again once those transactions end (it retries only those rows)")
    elif run.skipped:
        notes.append(f"{_rows(len(run.skipped))} locked by other transactions when first reached "
                     f"{'was' if len(run.skipped) == 1 else 'were'} skipped and retried at the end")
    return BackfillReport(
        counters=run.counters, columns=tuple(c.name for c in columns), reasons=reject_reasons(columns),
        dry_run=options.dry_run, resumed=resumed,
        scan=run.scan, batch_size=options.batch_size, elapsed_s=time.monotonic() - run.started,
        scanned_this_run=run.scanned_this_run, longest_batch_s=run.longest_batch_s, lock_retries=run.lock_retries,
        legacy_rows_estimate=legacy, triggers=triggers, triggers_disabled=options.disable_triggers,
        overwrite=options.overwrite,
        rejects_file=str(options.rejects_path) if options.rejects_path and rejects_error is None else None,
        rejects_error=rejects_error, analyzed=run.analyzed, locked_skipped=len(run.skipped),
        still_locked=run.still_locked, notes=tuple(notes),
    )


def _walk_passes(run: _Run, checkpoint: _Checkpoint | None, plan: str, out: _RejectsOut | None) -> None:
    """The main pass (from ``checkpoint`` when resuming), the catch-up pass, then the rejects file."""
    conn, target, options, scan = run.conn, run.target, run.options, run.scan
    run.event(BackfillEventKind.PLAN, plan)
    position: str | None = None
    carried: list[str] = []  # rows an earlier run left locked
    if checkpoint is not None:
        run.counters = checkpoint.counters
        run.phase, run.end_position, position = checkpoint.phase, checkpoint.end_position, checkpoint.position
        run.pass_xid = checkpoint.pass_xid
        if run.phase is Phase.LOCKED:
            carried = list(json.loads(position or "[]"))
            run.event(BackfillEventKind.START, f"the passes are done but for the {_rows(len(carried))} an "
                      "earlier run found locked: retrying only those")
        else:
            run.event(BackfillEventKind.START, f"resuming the {run.phase.value} pass after "
                      f"{checkpoint.counters.batches} batches ({checkpoint.counters.scanned:,} rows scanned)")
    else:
        pages = str(relation_pages(conn, target)) if scan is Scan.CTID else None
        run.pass_xid = _next_xid(conn) if options.dry_run else _start_pass(conn, target, scan, pages, options)
        run.phase, run.end_position = Phase.MAIN, pages
        run.event(BackfillEventKind.START, f"walking {target.table_name} by {scan.value} in batches of "
                  f"{options.batch_size:,} rows" + (" (dry run)" if options.dry_run else ""))
    catch_up_note = "catch-up pass: revisiting the rows still pending (inserted or moved meanwhile by the application)"
    announced = False
    if run.phase is Phase.MAIN:
        run.walk(position)
        position = None
        if not options.dry_run:
            if options.catch_up:  # announced before the bound is taken: every earlier write is inside it
                run.event(BackfillEventKind.PHASE, catch_up_note)
                announced = True
            # bounded by the table's size now: rows written during the catch-up itself are not chased
            run.enter(Phase.CATCH_UP, str(relation_pages(conn, target)) if scan is Scan.CTID else None)
    if run.phase is Phase.CATCH_UP and not options.dry_run:
        if options.catch_up:
            if not announced:
                run.event(BackfillEventKind.PHASE, catch_up_note)
            run.walk(position)
        run.enter(Phase.DONE, None)
    elif run.phase is Phase.LOCKED:
        run.enter(Phase.DONE, None)  # while the retry runs: a run stopped during it walks the whole table again
    if run.phase is Phase.DONE and not options.dry_run:
        pending = list(dict.fromkeys([*carried, *run.skipped]))
        if pending:
            run.event(BackfillEventKind.PHASE, f"retrying the {_rows(len(pending))} that other transactions "
                      "held locked")
            run.retry_skipped(pending)
        if run.still_locked:  # all a next run has to retry
            run.enter(Phase.LOCKED, None, json.dumps(list(run.still_locked)))
        run.event(BackfillEventKind.PHASE, f"ANALYZE {target.table_name}: planner statistics of the filled columns")
        run.analyze()
        if out is not None:
            _dump_rejects(conn, target, out, run.columns)
    run.phase = Phase.DONE
    run.event(BackfillEventKind.DONE)
