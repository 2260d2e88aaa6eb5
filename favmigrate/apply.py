"""apply: bring the database to the spec's end state, online-safely, one needed step at a time.

Which steps run is derived from the catalogs (a step runs when one of the checks it `satisfies` fails),
so apply converges from any state: fresh, half-applied, interrupted, or hand-run seed SQL.
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

from favmigrate.catalog import Snapshot, columns_without_statistics, read_snapshot, require_tables
from favmigrate.checks import check_applied
from favmigrate.db import (
    BlockerWatch,
    SessionLimits,
    describe_blockers,
    mask_query,
    ms,
    rows,
    run_lock,
    scalar,
    set_session,
    statement_timeout_message,
    with_lock_retries,
)
from favmigrate.errors import ExitCode, FavmigrateError, Interrupted, LockHeld, PreflightFailed, StepFailed
from favmigrate.history import applied_checksums, ensure_history, new_run_id, record_step
from favmigrate.ops import Step, checksum_matches, create_index, drop_index, migration_steps, step_named
from favmigrate.planner import PlannedStep, plan_apply, plan_finalize
from favmigrate.results import CheckReport, RunReport, StepOutcome, StepResult, plural
from favmigrate.spec import Aspect, ColumnSpec, LockKind, Target, as_text
from favmigrate.verify import verify

MIN_SERVER_VERSION = 120000
DUPLICATES_SHOWN = 5  # duplicate keys named when a unique index cannot be built
# Not a step of the spec: the last one of every apply that changed something, and of the next apply when
# the new columns still have no planner statistics (an ANALYZE interrupted, or never run after hand-run SQL).
# Without statistics the planner guesses the new columns' selectivity and may not pick the new indexes.
ANALYZE = Step(name="analyze", lock=LockKind.ONLINE)


@dataclass(frozen=True)
class ApplyOptions:
    limits: SessionLimits = field(default_factory=SessionLimits)
    batch_size: int = 5_000
    long_transaction_s: float = 60.0
    replace: bool = False
    force: bool = False
    dry_run: bool = False
    wait_report_s: float = 5.0  # while a concurrent index build waits for other transactions, say so this often
    finalize: bool = False  # also enforce NOT NULL on `not_null = "after-backfill"` columns


class NotNullPending(FavmigrateError):
    """NOT NULL cannot be enforced yet: the column still holds NULLs (backfill them first); nothing was enforced."""

    exit_code = ExitCode.FAILED



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


def _silent(_: Event) -> None:
    return None


# ---------------------------------------------------------------- preflight


_LONG_TRANSACTIONS = sql.SQL(
    """
    SELECT pid, usename AS user, application_name, state,
           date_trunc('second', now() - xact_start)::text AS transaction_age, query
    FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
      AND now() - xact_start > make_interval(secs => %s)
    ORDER BY xact_start
    """
)


def preflight(conn: psycopg.Connection[Any], target: Target, snapshot: Snapshot, options: ApplyOptions) -> list[str]:
    """Refuse (PreflightFailed, nothing changed) what apply cannot safely fix; return warnings. Read-only."""
    spec = target.spec
    problems: list[str] = []
    if snapshot.server_version_num < MIN_SERVER_VERSION:
        problems.append(f"PostgreSQL {snapshot.server_version_num} is too old: 12 or newer is required")
        raise PreflightFailed("; ".join(problems), problems=problems)
    require_tables(snapshot, target)
    checks = check_applied(spec, snapshot, schema=target.schema)
    for column in spec.columns:
        fk = column.foreign_key
        if fk is None:
            continue
        key = snapshot.referenced_keys.get((fk.referenced_table, fk.referenced_column))
        if key is None or key.data_type != column.type.name or not key.unique:
            found_type = key.data_type if key is not None else None
            problems.append(
                f"{fk.referenced_table}.{fk.referenced_column} must be a {column.type} with a primary key or unique "
                f"constraint (found type {found_type or 'none'}, "
                f"{'unique' if key is not None and key.unique else 'not unique'})"
            )
    problems += [f"column {spec.table}.{name} (used by the indexes) does not exist"
                 for name in spec.existing_columns if name not in snapshot.columns]
    failed = {check.id: check for check in checks if check.failed}
    for column in spec.columns:
        check = failed.get(str(column.id.check(Aspect.TYPE)))
        if check:
            problems.append(f"{check.message} but {check.expected} is expected: rename or drop it first")
    for fk in spec.foreign_keys:
        check = failed.get(str(fk.id.check(Aspect.DEFINITION)))
        if check:
            problems.append(f"constraint {fk.name} exists as `{check.actual}` but `{check.expected}` "
                            "is expected: drop it (ALTER TABLE ... DROP CONSTRAINT) and re-run")
    for index in spec.indexes:
        check = failed.get(str(index.id.check(Aspect.DEFINITION)))
        if check and not options.replace and snapshot.indexes[index.name].valid:
            problems.append(f"index {index.name} exists as {check.actual} but {check.expected} is expected: "
                            "pass --replace to rebuild it concurrently")
    if not snapshot.can_alter_table:
        superuser = rows(conn, sql.SQL("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
        if not (superuser and superuser[0]["rolsuper"]):
            problems.append(f"user {snapshot.current_user} does not own {target.table_name} (owner: "
                            f"{snapshot.table_owner}); connect as the owner or a member of its role")
    if problems:
        raise PreflightFailed(
            "preflight refused the migration; nothing was changed:\n  - " + "\n  - ".join(problems),
            problems=problems,
        )
    warnings = []
    for xact in rows(conn, _LONG_TRANSACTIONS, (options.long_transaction_s,)):
        warnings.append(
            f"long-running transaction may block the DDL: pid {xact['pid']} ({xact['user']}, "
            f"{xact['application_name'] or '-'}) open for {xact['transaction_age']}, {xact['state']}: "
            f"{mask_query(xact['query'])}"
        )
    return warnings


def _check_recorded_checksums(conn: psycopg.Connection[Any], target: Target, force: bool) -> None:
    recorded = applied_checksums(conn, target)
    changed = [s.name for s in migration_steps(target)
               if s.name in recorded and not checksum_matches(target.spec, s, recorded[s.name])]
    if changed and not force:
        raise PreflightFailed(
            f"the shipped SQL of already-applied steps changed since they ran: {', '.join(changed)}",
            hint="review the difference; pass --force to accept the new SQL as the record",
        )


# ---------------------------------------------------------------- running


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

    def __init__(self, conn: psycopg.Connection[Any], target: Target, options: ApplyOptions, on_event: OnEvent,
                 command: str) -> None:
        self.conn = conn
        self.target = target
        self.options = options
        self.on_event = on_event
        self.command = command
        self.watch = BlockerWatch.for_connection(conn)
        self.run_id: uuid.UUID = new_run_id()

    def retry_reporter(self, step: str) -> Callable[[int, float, list[dict[str, Any]]], None]:
        """The ``on_retry`` callback for with_lock_retries: a RETRY event naming the blockers."""
        def report(attempt: int, delay: float, blockers: list[dict[str, Any]]) -> None:
            who = describe_blockers(blockers) or "unknown backends"
            limits = self.options.limits
            self.on_event(Event(EventKind.RETRY, step, f"lock not granted within {limits.lock_timeout_s:g}s "
                                f"(retry {attempt}/{limits.retries} in {delay:.1f}s); blocked by {who}"))
        return report

    def _in_transaction(self, statements: list[sql.Composed], step: str) -> int:
        def action() -> None:
            with self.conn.transaction():
                for statement in statements:
                    self.conn.execute(statement)

        _, retries = with_lock_retries(self.conn, action, policy=self.options.limits.retry_policy, watch=self.watch,
                                       on_retry=self.retry_reporter(step), what=f"step {step}")
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
        for statement in statements:
            def drop(composed: sql.Composed = statement) -> None:
                self.conn.execute(composed)

            _, used = with_lock_retries(self.conn, drop, policy=self.options.limits.retry_policy, watch=self.watch,
                                        on_retry=self.retry_reporter(step.name), what=f"step {step.name}")
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
            retries = self._in_transaction([analyze_statement(self.target)], step.name)
            detail = "planner statistics refreshed"
        else:
            retries = self._in_transaction(list(planned.up), step.name)
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


def _with_analyze(conn: psycopg.Connection[Any], target: Target, planned: list[PlannedStep]) -> list[PlannedStep]:
    """``planned`` followed by the ANALYZE step when it is needed. Read-only."""
    if planned:
        reason = "new columns and indexes have no planner statistics until analysed"
    else:
        unsampled = columns_without_statistics(conn, target)
        if not unsampled or not scalar(conn, sql.SQL("SELECT EXISTS (SELECT FROM {})").format(target.table)):
            return planned  # an empty table gets no statistics from ANALYZE either
        reason = (f"column {', '.join(unsampled)} has no planner statistics: the last ANALYZE did not finish "
                  "(or never ran)")
    return [*planned, PlannedStep(ANALYZE, reason, (as_text(analyze_statement(target)),))]


def _interrupted_note(results: list[StepResult]) -> str:
    stopped = next(r for r in results if r.outcome is StepOutcome.INTERRUPTED)
    done = [r.step for r in results if r.outcome is StepOutcome.APPLIED]
    return (f"stopped at step {stopped.step}: {stopped.detail}. Done in this run: {', '.join(done) or 'nothing'}. "
            "Re-run `favmigrate apply` to continue: it runs only the steps still needed and repairs what was left")


def _verification(conn: psycopg.Connection[Any], target: Target) -> CheckReport:
    """What `favmigrate verify` reports, data checks and their warnings included. Read-only."""
    set_session(conn, lock_timeout="0", statement_timeout="0")
    return verify(conn, target)


def null_counts(conn: psycopg.Connection[Any], target: Target, columns: list[ColumnSpec]) -> dict[str, int]:
    """How many rows hold NULL in each of ``columns`` (one scan of the table). Read-only."""
    counts = sql.SQL(", ").join(
        sql.SQL("count(*) FILTER (WHERE {column} IS NULL)").format(column=sql.Identifier(c.name)) for c in columns)
    (found,) = conn.execute(sql.SQL("SELECT {counts} FROM {table}").format(counts=counts, table=target.table))
    return {column.name: int(count) for column, count in zip(columns, found, strict=True)}


def _require_no_nulls(conn: psycopg.Connection[Any], target: Target, planned: list[PlannedStep]) -> None:
    """Refuse (NotNullPending) to enforce NOT NULL on a column that still holds NULLs. Read-only."""
    columns = list({p.step.column.name: p.step.column for p in planned if p.step.column is not None}.values())
    pending = {name: n for name, n in null_counts(conn, target, columns).items() if n}
    if pending:
        raise NotNullPending(
            "NOT NULL cannot be enforced yet: " + "; ".join(f"column {name} still holds {n} NULL rows"
                                                           for name, n in pending.items()),
            hint="run `favmigrate backfill` (rows it rejected need a value by hand), then `favmigrate finalize`")


def apply_migration(
    conn: psycopg.Connection[Any], target: Target, options: ApplyOptions | None = None,
    on_event: OnEvent | None = None,
) -> RunReport:
    """Run every needed step of the migration online-safely and verify the result. Writes.

    With ``options.finalize``, NOT NULL is then enforced on the `not_null = "after-backfill"` columns.
    Raises PreflightFailed (nothing changed), LockHeld (another run, or blockers outlasted the retries),
    StepFailed (a step errored; earlier steps stay done), NotNullPending (finalize: NULLs remain; apply's
    own steps are done). A Ctrl-C yields a report with exit code 3.
    """
    options = options or ApplyOptions()
    emit = on_event or _silent
    options.limits.set_on(conn)
    if options.dry_run:
        return _apply(conn, target, options, emit)
    # the run lock comes before the first read: a rollback holding it would undo what we read
    with run_lock(conn, target.lock_name, wait_s=options.limits.lock_wait_s):
        return _apply(conn, target, options, emit)


def _apply(conn: psycopg.Connection[Any], target: Target, options: ApplyOptions, emit: OnEvent) -> RunReport:
    """apply_migration's body, under the run lock unless it is a dry run."""
    snapshot = read_snapshot(conn, target)
    for warning in preflight(conn, target, snapshot, options):
        emit(Event(EventKind.WARNING, message=warning))
    planned = _with_analyze(conn, target, plan_apply(target, snapshot, replace=options.replace))
    # finalize's steps run after apply's, once their NULL count is taken (apply may have just added the column)
    later = plan_finalize(target, snapshot) if options.finalize else []
    if options.dry_run:
        shown = planned + later
        steps = tuple(StepResult(p.step.name, StepOutcome.WOULD_APPLY, p.reason, ";\n".join(p.statements))
                      for p in shown)
        dry_note = "dry run: nothing was changed" if shown else "already applied: nothing to do"
        return RunReport("apply", steps, dry_run=True, notes=(dry_note,),
                         extra={"plan": {"steps": [
                             {**p.to_dict(), "session": session_statements(p.step.lock, options.limits)}
                             for p in shown]}})
    if not planned and not later:
        _check_recorded_checksums(conn, target, options.force)
        return RunReport("apply", (), notes=("already applied: nothing to do",),
                         verification=_verification(conn, target))
    runner = StepRunner(conn, target, options, emit, "apply")
    try:
        ensure_history(conn)
        _check_recorded_checksums(conn, target, options.force)
        results = runner.run_all(planned)
        if options.finalize and not any(r.outcome is StepOutcome.INTERRUPTED for r in results):
            results += _finalize_under_lock(runner, target, done=bool(results))
    finally:
        runner.watch.close()
    verification: CheckReport | None = None
    notes: tuple[str, ...] = ()
    if any(r.outcome is StepOutcome.INTERRUPTED for r in results):
        notes = (_interrupted_note(results),)
    else:
        verification = _verification(conn, target)
    return RunReport("apply", tuple(results), notes=notes, verification=verification,
                     extra={"run_id": str(runner.run_id)})


def _finalize_under_lock(runner: StepRunner, target: Target, *, done: bool) -> list[StepResult]:
    planned = plan_finalize(target, read_snapshot(runner.conn, target))
    if not planned:
        return []
    try:
        _require_no_nulls(runner.conn, target, planned)
    except NotNullPending as exc:
        if not done:
            raise
        raise NotNullPending(f"apply's steps are done, but {exc.message}", hint=exc.hint) from None
    return runner.run_all(planned)


def finalize_migration(
    conn: psycopg.Connection[Any], target: Target, options: ApplyOptions | None = None,
    on_event: OnEvent | None = None,
) -> RunReport:
    """Enforce NOT NULL online on the `not_null = "after-backfill"` columns once backfill has filled them. Writes.

    CHECK (col IS NOT NULL) NOT VALID, VALIDATE (writes continue), SET NOT NULL (no scan: the CHECK proves
    it), drop the CHECK. Raises PreflightFailed (tables or columns missing: run apply first; nothing
    changed), NotNullPending (a column still holds NULLs: nothing enforced), LockHeld, StepFailed. A
    dry run only reads.
    """
    options = options or ApplyOptions()
    emit = on_event or _silent
    options.limits.set_on(conn)
    snapshot = read_snapshot(conn, target)
    require_tables(snapshot, target)
    missing = [c.name for c in target.spec.columns if c.not_null_after_backfill and c.name not in snapshot.columns]
    if missing:
        raise PreflightFailed(f"the migration is not applied: {target.table_name} has no column {', '.join(missing)}; "
                              "nothing was changed", hint="run `favmigrate apply` first, then backfill")
    planned = plan_finalize(target, snapshot)
    if not any(c.not_null_after_backfill for c in target.spec.columns):
        note = "no column of the spec has not_null = \"after-backfill\": nothing to finalize"
    else:
        note = "already finalized: nothing to do"
    if planned:
        _require_no_nulls(conn, target, planned)
    if options.dry_run or not planned:
        steps = tuple(StepResult(p.step.name, StepOutcome.WOULD_APPLY, p.reason, ";\n".join(p.statements))
                      for p in planned)
        notes = ("dry run: nothing was changed",) if planned else (note,)
        verification = None if planned else _verification(conn, target)
        return RunReport("finalize", steps, dry_run=options.dry_run, notes=notes, verification=verification)
    runner = StepRunner(conn, target, options, emit, "finalize")
    try:
        with run_lock(conn, target.lock_name, wait_s=options.limits.lock_wait_s):
            ensure_history(conn)
            # re-read under the lock: another run may have finished (or rolled back) meanwhile
            results = _finalize_under_lock(runner, target, done=False)
    finally:
        runner.watch.close()
    if any(r.outcome is StepOutcome.INTERRUPTED for r in results):
        return RunReport("finalize", tuple(results), notes=("interrupted: re-run `favmigrate finalize` to finish",),
                         extra={"run_id": str(runner.run_id)})
    verification = _verification(conn, target)
    return RunReport("finalize", tuple(results), verification=verification, extra={"run_id": str(runner.run_id)})
