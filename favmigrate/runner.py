"""Runs planned steps: session limits per kind of lock, lock-timeout retries with the blockers named,
concurrent index builds (an INVALID leftover of a failed unique build dropped), batched fills, progress
events and history rows. apply, finalize and rollback all run their steps here.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import sql

from favmigrate.catalog import read_snapshot
from favmigrate.db import (
    BlockerWatch,
    RetryPolicy,
    SessionLimits,
    describe_blockers,
    ms,
    rows,
    set_session,
    statement_timeout_message,
    weak_lock_policy,
    with_lock_retries,
)
from favmigrate.errors import ExitCode, FavmigrateError, Interrupted, LockHeld, StepFailed
from favmigrate.ops import Step, create_index, drop_index, step_named
from favmigrate.planner import PlannedStep, plan_finalize
from favmigrate.results import CheckReport, StepOutcome, StepResult, plural
from favmigrate.spec import ColumnSpec, LockKind, Target, as_text
from favmigrate.state import new_run_id, record_step
from favmigrate.verification import verify_target

DUPLICATES_SHOWN = 5  # duplicate keys named when a unique index cannot be built
# Not a step of the spec: the last one of every apply that changed something, and of the next apply when
# the new columns still have no planner statistics (an ANALYZE interrupted, or never run after hand-run SQL).
# Without statistics the planner guesses the new columns' selectivity and may not pick the new indexes.
ANALYZE = Step(name="analyze", lock=LockKind.ONLINE)


class EventKind(StrEnum):
    NOTE = "note"
    WARNING = "warning"
    STEP_START = "step-start"
    STEP_DONE = "step-done"
    RETRY = "retry"
    PROGRESS = "progress"
    WAITING = "waiting"  # a concurrent index build waits for other sessions' transactions to end


@dataclass(frozen=True)
class Event:
    """Progress reported to the caller (the CLI shows it on stderr)."""

    kind: EventKind
    step: str = ""
    message: str = ""
    done: int | None = None  # PROGRESS: units done so far, out of ``total`` when it is known
    total: int | None = None


OnEvent = Callable[[Event], None]


def silent(_: Event) -> None:
    return None


@dataclass(frozen=True)
class RunnerOptions:
    """How steps run: session limits and retries, rows per batch, how often a waiting build is reported."""

    limits: SessionLimits = field(default_factory=SessionLimits)
    batch_size: int = 5_000
    wait_report_s: float = 5.0  # while a concurrent index build waits for other transactions, say so this often


def step_settings(kind: LockKind, limits: SessionLimits) -> dict[str, str]:
    """The session settings a step of this lock kind runs under."""
    # a concurrent build waits for every older transaction; a lock_timeout there would kill the build
    # half-way and leave an INVALID index, so only the statement_timeout applies
    lock_timeout = "0" if kind is LockKind.CONCURRENT else ms(limits.lock_timeout_s)
    return {"lock_timeout": lock_timeout, "statement_timeout": ms(limits.statement_timeout_s)}


def session_statements(kind: LockKind, limits: SessionLimits) -> list[str]:
    """``step_settings`` as the statements that set them, for a dry run's script."""
    return [as_text(sql.SQL("SELECT set_config({}, {}, false)").format(sql.Literal(name), sql.Literal(value)))
            for name, value in step_settings(kind, limits).items()]


class StepRunner:
    """Runs planned steps with the right timeouts, lock retries, progress events and history records."""

    def __init__(self, conn: psycopg.Connection[Any], target: Target, options: RunnerOptions, on_event: OnEvent,
                 command: str) -> None:
        self.conn = conn
        self.target = target
        self.options = options
        self.on_event = on_event
        self.command = command
        self.watch = BlockerWatch.for_connection(conn)
        self.run_id: uuid.UUID = new_run_id()

    def retry_reporter(self, step: str, policy: RetryPolicy | None = None
                       ) -> Callable[[int, float, list[dict[str, Any]]], None]:
        """The ``on_retry`` callback for with_lock_retries: a RETRY event naming the blockers."""
        policy = policy or self.options.limits.retry_policy

        def report(attempt: int, delay: float, blockers: list[dict[str, Any]]) -> None:
            who = describe_blockers(blockers) or "unknown backends"
            self.on_event(Event(EventKind.RETRY, step, f"lock not granted within {policy.lock_timeout_s:g}s "
                                f"(retry {attempt}/{policy.retries} in {delay:.1f}s); blocked by {who}"))
        return report

    def weak_lock_policy(self) -> RetryPolicy:
        return weak_lock_policy(self.conn, self.options.limits.retry_policy)

    def _in_transaction(self, statements: list[sql.Composed], step: str, policy: RetryPolicy | None = None) -> int:
        def action() -> None:
            with self.conn.transaction():
                for statement in statements:
                    self.conn.execute(statement)

        policy = policy or self.options.limits.retry_policy
        _, retries = with_lock_retries(self.conn, action, policy=policy, watch=self.watch,
                                       on_retry=self.retry_reporter(step, policy), what=f"step {step}")
        return retries

    def _set_timeouts(self, kind: LockKind) -> None:
        set_session(self.conn, **step_settings(kind, self.options.limits))

    def _fill_batches(self, planned: PlannedStep) -> tuple[int, str]:
        step = planned.step
        assert step.first_batch is not None and step.column is not None
        (following,) = planned.up
        statement, after, total, retries = step.first_batch, None, 0, 0
        while True:
            def batch(composed: sql.Composed = statement, after_id: Any = after) -> list[tuple[Any, ...]]:
                with self.conn.transaction():
                    return self.conn.execute(composed, {"after_id": after_id,
                                                        "batch_size": self.options.batch_size}).fetchall()

            filled, used = with_lock_retries(self.conn, batch, policy=self.options.limits.retry_policy,
                                             watch=self.watch, on_retry=self.retry_reporter(step.name),
                                             what=f"step {step.name}")
            retries += used
            if not filled:
                return retries, f"{total} NULL {step.column.label}s set to the default"
            total += len(filled)
            statement, after = following, max(row[0] for row in filled)
            self.on_event(Event(EventKind.PROGRESS, step.name, f"{plural(total, 'row')} filled"))

    def _build_index(self, planned: PlannedStep) -> str:
        index = planned.step.index
        assert index is not None
        statements = [create_index(self.target, index)]
        if planned.rebuild_index:
            statements.insert(0, drop_index(self.target, index))
        # A concurrent build (or drop) waits, with no lock_timeout, for every transaction older than its
        # snapshot, even one on another table: say so, naming those sessions, while it waits.
        with self.watch.watching(self.conn.info.backend_pid, interval_s=0.5, every_s=self.options.wait_report_s,
                                 on_blocked=self._wait_reporter(planned.step.name)):
            try:
                for statement in statements:
                    self.conn.execute(statement)
            except psycopg.errors.UniqueViolation:
                # the failed concurrent build leaves an INVALID index behind: drop it, and say which keys repeat
                self.conn.execute(drop_index(self.target, index))
                raise StepFailed(f"unique index {index.name} cannot be built: {self._duplicates(index.name)}; the "
                                 "INVALID index the build left was dropped",
                                 hint="resolve the duplicates, then re-run `favmigrate apply`") from None
        found = read_snapshot(self.conn, self.target).indexes.get(index.name)
        if found is None or not (found.valid and found.ready):
            raise StepFailed(f"index {index.name} was built but is not valid",
                             hint="re-run `favmigrate apply`: it drops the invalid index and rebuilds it")
        return ("rebuilt (an INVALID or different index was dropped concurrently first)"
                if planned.rebuild_index else "built concurrently")

    def _wait_reporter(self, step: str) -> Callable[[list[dict[str, Any]], float], None]:
        def report(blockers: list[dict[str, Any]], waited_s: float) -> None:
            count = f"{len(blockers)} other session" + ("s" if len(blockers) > 1 else "")
            self.on_event(Event(EventKind.WAITING, step, (
                f"waiting {waited_s:.0f}s for {count} to end {'its' if len(blockers) == 1 else 'their'} transaction "
                f"(a concurrent index build waits for every older transaction, on any table): "
                f"{describe_blockers(blockers)}")))
        return report

    def _duplicates(self, index_name: str) -> str:
        """The keys a unique index of the spec finds more than once (NULLs never collide), the most frequent first."""
        index = self.target.spec.index(index_name)
        keys = sql.SQL(", ").join(sql.Identifier(c) for c in index.columns)
        where = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in index.columns)
        if index.predicate:
            where = sql.SQL("{} AND ({})").format(where, sql.SQL(index.predicate))
        statement = sql.SQL(
            "SELECT {keys}, count(*) AS n, sum(count(*)) OVER () AS total_rows, count(*) OVER () AS total_keys "
            "FROM {table} WHERE {where} GROUP BY {keys} HAVING count(*) > 1 ORDER BY n DESC, {keys} LIMIT {limit}"
        ).format(keys=keys, table=self.target.table, where=where, limit=sql.Literal(DUPLICATES_SHOWN))
        found = rows(self.conn, statement)
        if not found:
            return "duplicate keys (gone by now?)"
        shown = ", ".join("(" + ", ".join(f"{c}={r[c]}" for c in index.columns) + f") x{r['n']}" for r in found)
        return (f"{found[0]['total_keys']} keys of ({', '.join(index.columns)}) occur more than once "
                f"({found[0]['total_rows']} rows), e.g. {shown}")

    def _run_down(self, step: Step) -> int:
        """The step's down SQL under lock_timeout with retries; a CONCURRENT drop runs each statement alone.

        Unlike a concurrent build, a DROP INDEX CONCURRENTLY stopped by lock_timeout leaves at worst an
        INVALID index that the retry drops, so its waits for older transactions can be bounded too.
        """
        statements = list(step.down)
        if step.transactional:
            return self._in_transaction(statements, step.name)
        retries = 0
        policy = self.weak_lock_policy()
        for statement in statements:
            def drop(composed: sql.Composed = statement) -> None:
                self.conn.execute(composed)

            _, used = with_lock_retries(self.conn, drop, policy=policy, watch=self.watch,
                                        on_retry=self.retry_reporter(step.name, policy), what=f"step {step.name}")
            retries += used
        return retries

    def run_step(self, planned: PlannedStep) -> StepResult:
        step = planned.step
        self.on_event(Event(EventKind.STEP_START, step.name, planned.reason))
        started = time.monotonic()
        self._set_timeouts(LockKind.BRIEF if planned.down else step.lock)
        retries = 0
        detail = "applied"
        if planned.down:
            retries = self._run_down(step)
            detail = "dropped concurrently" if step.lock is LockKind.CONCURRENT else "dropped"
        elif step.lock is LockKind.CONCURRENT:
            detail = self._build_index(planned)
        elif step.lock is LockKind.BATCHED:
            retries, detail = self._fill_batches(planned)
        elif step == ANALYZE:
            retries = self._in_transaction([analyze_statement(self.target)], step.name, self.weak_lock_policy())
            detail = "planner statistics refreshed"
        else:
            retries = self._in_transaction(list(planned.up), step.name,
                                           self.weak_lock_policy() if step.lock is LockKind.ONLINE else None)
        result = StepResult(step.name, StepOutcome.APPLIED, detail, ";\n".join(planned.statements),
                            time.monotonic() - started, retries)
        self.on_event(Event(EventKind.STEP_DONE, step.name, f"{detail} in {result.duration_s:.2f}s"))
        return result

    def record(self, result: StepResult) -> None:
        if self.conn.closed or self.conn.broken:
            return
        # the checksum identifies the up SQL that apply ran; other commands' steps carry none
        checksum = None
        if self.command in ("apply", "finalize"):
            with contextlib.suppress(KeyError):
                checksum = step_named(self.target, result.step).checksum()
        record_step(self.conn, self.target, run_id=self.run_id, command=self.command, result=result, checksum=checksum)

    def run_all(self, planned: list[PlannedStep],
                execute: Callable[[PlannedStep], StepResult] | None = None) -> list[StepResult]:
        """Run each step (with ``execute``, default run_step) and record it; stop at the first interruption.

        Ctrl-C, a lost connection, or a lock not granted after a step of this run changed the database
        end the list with an INTERRUPTED result (exit 3). Raises LockHeld when no step changed anything
        yet, StepFailed when a step errors.
        """
        execute = execute or self.run_step
        results: list[StepResult] = []
        for item in planned:
            started = time.monotonic()
            try:
                result = execute(item)
            except KeyboardInterrupt:
                interrupted = StepResult(item.step.name, StepOutcome.INTERRUPTED, "interrupted by Ctrl-C",
                                         duration_s=time.monotonic() - started)
                self._record_quietly(interrupted)
                results.append(interrupted)
                break
            except psycopg.OperationalError as exc:
                timed_out = statement_timeout_message(exc)
                results.append(StepResult(item.step.name, StepOutcome.INTERRUPTED,
                                          timed_out or f"connection lost: {exc}".strip(),
                                          duration_s=time.monotonic() - started))
                if timed_out:
                    self._record_quietly(results[-1])
                break
            except LockHeld as exc:
                self._record_quietly(StepResult(item.step.name, StepOutcome.FAILED, exc.message,
                                                duration_s=time.monotonic() - started))
                if not any(r.outcome is StepOutcome.APPLIED for r in results):
                    raise  # nothing changed yet (exit 2)
                # earlier steps of this run changed the database: a partial run (exit 3), re-run to continue
                results.append(StepResult(item.step.name, StepOutcome.INTERRUPTED, exc.message,
                                          duration_s=time.monotonic() - started))
                break
            except (StepFailed, Interrupted) as exc:
                self._record_quietly(StepResult(item.step.name, StepOutcome.FAILED, exc.message,
                                                duration_s=time.monotonic() - started))
                raise
            except psycopg.Error as exc:
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                self._record_quietly(StepResult(item.step.name, StepOutcome.FAILED, message,
                                                duration_s=time.monotonic() - started))
                done = ", ".join(r.step for r in results) or "none"
                raise StepFailed(f"step {item.step.name} failed: {message} (steps done before it: {done})",
                                 hint=f"fix the cause and re-run `favmigrate {self.command}`; it continues where "
                                 "it stopped") from None
            self.record(result)
            results.append(result)
        return results

    def _record_quietly(self, result: StepResult) -> None:
        with contextlib.suppress(psycopg.Error):  # the history is best effort once the step itself failed
            self.record(result)


def analyze_statement(target: Target) -> sql.Composed:
    return sql.SQL("ANALYZE {}").format(target.table)


class NotNullPending(FavmigrateError):
    """NOT NULL cannot be enforced yet: the column still holds NULLs (backfill them first); nothing was enforced."""

    exit_code = ExitCode.FAILED


def verify_after_run(conn: psycopg.Connection[Any], target: Target) -> CheckReport:
    """What `favmigrate verify` reports, data checks and their warnings included. Read-only."""
    set_session(conn, lock_timeout="0", statement_timeout="0")
    return verify_target(conn, target)


def null_counts(conn: psycopg.Connection[Any], target: Target, columns: list[ColumnSpec]) -> dict[str, int]:
    """How many rows hold NULL in each of ``columns`` (one scan of the table). Read-only."""
    counts = sql.SQL(", ").join(
        sql.SQL("count(*) FILTER (WHERE {column} IS NULL)").format(column=sql.Identifier(c.name)) for c in columns)
    (found,) = conn.execute(sql.SQL("SELECT {counts} FROM {table}").format(counts=counts, table=target.table))
    return {column.name: int(count) for column, count in zip(columns, found, strict=True)}


def require_no_nulls(conn: psycopg.Connection[Any], target: Target, planned: list[PlannedStep]) -> None:
    """Refuse (NotNullPending) to enforce NOT NULL on a column that still holds NULLs. Read-only."""
    columns = list({p.step.column.name: p.step.column for p in planned if p.step.column is not None}.values())
    pending = {name: n for name, n in null_counts(conn, target, columns).items() if n}
    if pending:
        raise NotNullPending(
            "NOT NULL cannot be enforced yet: " + "; ".join(f"column {name} still holds {n} NULL rows"
                                                           for name, n in pending.items()),
            hint="run `favmigrate backfill` (rows it rejected need a value by hand), then `favmigrate finalize`")


def enforce_not_null(runner: StepRunner, target: Target, *, done: bool) -> list[StepResult]:
    """Run the NOT NULL steps still needed by after-backfill columns, once no NULL is left. Writes.

    Raises NotNullPending (nothing enforced) while a column holds NULLs; ``done``: apply's own steps ran
    first, which the message says.
    """
    planned = plan_finalize(target, read_snapshot(runner.conn, target))
    if not planned:
        return []
    try:
        require_no_nulls(runner.conn, target, planned)
    except NotNullPending as exc:
        if not done:
            raise
        raise NotNullPending(f"apply's steps are done, but {exc.message}", hint=exc.hint) from None
    return runner.run_all(planned)
