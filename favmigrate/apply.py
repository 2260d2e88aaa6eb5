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
from favmigrate.checks import check_applied, failing, index_matches
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
from favmigrate.errors import Interrupted, LockHeld, PreflightFailed, StepFailed
from favmigrate.history import applied_checksums, ensure_history, new_run_id, record_step
from favmigrate.results import CheckReport, CheckResult, RunReport, StepOutcome, StepResult, plural
from favmigrate.spec import LockKind, StepSpec, Target, as_text
from favmigrate.verify import verify

MIN_SERVER_VERSION = 120000
WINDOW_CHECK_CONSTRAINT = "session_requests_priority_window_not_null"
# Not a step of the spec: the last one of every apply that changed something, and of the next apply when
# the new columns still have no planner statistics (an ANALYZE interrupted, or never run after hand-run SQL).
# Without statistics the planner guesses the new columns' selectivity and may not pick the new indexes.
ANALYZE = StepSpec(name="analyze", up="", lock=LockKind.ONLINE, satisfies=())


@dataclass(frozen=True)
class ApplyOptions:
    limits: SessionLimits = field(default_factory=SessionLimits)
    batch_size: int = 5_000
    long_transaction_s: float = 60.0
    replace: bool = False
    force: bool = False
    dry_run: bool = False
    wait_report_s: float = 5.0  # while a concurrent index build waits for other transactions, say so this often



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


@dataclass(frozen=True)
class PlannedStep:
    """A step that is needed, why, and the SQL that will run for it."""

    step: StepSpec
    reason: str
    statements: tuple[str, ...]
    rebuild_index: bool = False  # an INVALID leftover (or --replace) is dropped concurrently first
    down: bool = False  # run the step's paired down SQL instead (rollback)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step.name, "reason": self.reason, "sql": list(self.statements),
                "rebuild_index": self.rebuild_index, "lock": self.step.lock.value}


# ---------------------------------------------------------------- planning (pure over a snapshot)


def _reason(broken: list[CheckResult]) -> str:
    """Why a step is needed: the failing checks' messages (skipped ones only repeat a missing object)."""
    shown = [c for c in broken if c.failed] or broken
    return "; ".join(c.message or c.id for c in shown)


def _window_steps(target: Target, snapshot: Snapshot, checks: tuple[CheckResult, ...]) -> list[PlannedStep]:
    """Convergence of a nullable / default-less window column left by the hand-run seed SQL."""
    planned: list[PlannedStep] = []
    converged_columns = {check_id.split(":")[1] for step in target.spec.converge for check_id in step.satisfies}
    if not converged_columns <= snapshot.columns.keys():
        return planned  # add-columns creates the column NOT NULL with its default: nothing to converge
    check = snapshot.constraints.get(WINDOW_CHECK_CONSTRAINT)
    for step in target.spec.converge:
        broken = failing(checks, step.satisfies)
        if not broken:
            continue
        if step.name == "window-check-not-valid" and check is not None:
            continue
        if step.name == "window-check-validate" and check is not None and check.validated:
            continue
        planned.append(PlannedStep(step, _reason(broken),
                                   tuple(as_text(s) for s in target.up_statements(step))))
    return planned


def plan_steps(target: Target, snapshot: Snapshot, *, replace: bool = False) -> list[PlannedStep]:
    """The steps apply would run against this snapshot, in order, with their SQL. Pure."""
    checks = check_applied(target.spec, snapshot, schema=target.schema)
    planned: list[PlannedStep] = []
    for step in target.spec.steps:
        broken = failing(checks, step.satisfies)
        rebuild = False
        if step.index:
            found = snapshot.indexes.get(step.index)
            if found is not None and found.valid and not index_matches(target.spec.index(step.index), found):
                broken = [c for c in checks if c.id == f"index:{step.index}:definition"]
                rebuild = replace
            elif found is not None and not found.valid:
                rebuild = True
        if not broken:
            continue
        statements = [as_text(s) for s in target.up_statements(step)]
        if rebuild:
            statements = [as_text(s) for s in target.down_statements(step)] + statements
        planned.append(PlannedStep(step, _reason(broken), tuple(statements), rebuild))
    # the window convergence runs right after the columns exist (they already do when it is needed)
    converge = _window_steps(target, snapshot, checks)
    position = 1 if planned and planned[0].step.name == "add-columns" else 0
    return planned[:position] + converge + planned[position:]


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
    if snapshot.referenced_column_type != "uuid" or not snapshot.referenced_column_unique:
        problems.append(
            f"{spec.referenced_table}.{spec.referenced_column} must be a uuid with a primary key or unique "
            f"constraint (found type {snapshot.referenced_column_type or 'none'}, "
            f"{'unique' if snapshot.referenced_column_unique else 'not unique'})"
        )
    if spec.status_column not in snapshot.columns:
        problems.append(f"column {spec.table}.{spec.status_column} (used by the indexes) does not exist")
    for check in checks:
        if not check.failed:
            continue
        if check.id.endswith(":type"):
            problems.append(f"{check.message} but {check.expected} is expected: rename or drop it first")
        if check.id == f"constraint:{spec.foreign_key.name}:definition":
            problems.append(f"constraint {spec.foreign_key.name} exists as `{check.actual}` but `{check.expected}` "
                            "is expected: drop it (ALTER TABLE ... DROP CONSTRAINT) and re-run")
        if check.id.startswith("index:") and check.id.endswith(":definition") and not options.replace:
            name = check.id.split(":")[1]
            if snapshot.indexes[name].valid:
                problems.append(f"index {name} exists as {check.actual} but {check.expected} is expected: "
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
    changed = [s.name for s in target.spec.steps if s.name in recorded and recorded[s.name] != s.checksum()]
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

    def _fill_batches(self, step: StepSpec) -> tuple[int, str]:
        (statement,) = self.target.up_statements(step)
        after, total, retries = uuid.UUID(int=0), 0, 0
        while True:
            def batch(after_id: uuid.UUID = after) -> list[tuple[Any, ...]]:
                with self.conn.transaction():
                    return self.conn.execute(statement, {"after_id": after_id,
                                                         "batch_size": self.options.batch_size}).fetchall()

            filled, used = with_lock_retries(self.conn, batch, policy=self.options.limits.retry_policy,
                                             watch=self.watch, on_retry=self.retry_reporter(step.name),
                                             what=f"step {step.name}")
            retries += used
            if not filled:
                return retries, f"{total} NULL windows set to the default"
            total += len(filled)
            after = max(row[0] for row in filled)
            self.on_event(Event(EventKind.PROGRESS, step.name, f"{plural(total, 'row')} filled"))

    def _build_index(self, planned: PlannedStep) -> str:
        step = planned.step
        assert step.index is not None
        statements = self.target.up_statements(step)
        if planned.rebuild_index:
            statements = self.target.down_statements(step) + statements
        # A concurrent build (or drop) waits, with no lock_timeout, for every transaction older than its
        # snapshot, even one on another table: say so, naming those sessions, while it waits.
        with self.watch.watching(self.conn.info.backend_pid, interval_s=0.5, every_s=self.options.wait_report_s,
                                 on_blocked=self._wait_reporter(step.name)):
            for statement in statements:
                self.conn.execute(statement)
        found = read_snapshot(self.conn, self.target).indexes.get(step.index)
        if found is None or not (found.valid and found.ready):
            raise StepFailed(f"index {step.index} was built but is not valid",
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

    def _run_down(self, step: StepSpec) -> int:
        """The step's down SQL under lock_timeout with retries; a CONCURRENT drop runs each statement alone.

        Unlike a concurrent build, a DROP INDEX CONCURRENTLY stopped by lock_timeout leaves at worst an
        INVALID index that the retry drops, so its waits for older transactions can be bounded too.
        """
        statements = self.target.down_statements(step)
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
            retries, detail = self._fill_batches(step)
        elif step == ANALYZE:
            retries = self._in_transaction([analyze_statement(self.target)], step.name)
            detail = "planner statistics refreshed"
        else:
            retries = self._in_transaction(self.target.up_statements(step), step.name)
        result = StepResult(step.name, StepOutcome.APPLIED, detail, ";\n".join(planned.statements),
                            time.monotonic() - started, retries)
        self.on_event(Event(EventKind.STEP_DONE, step.name, f"{detail} in {result.duration_s:.2f}s"))
        return result

    def record(self, result: StepResult) -> None:
        if self.conn.closed or self.conn.broken:
            return
        # the checksum identifies the up SQL that apply ran; other commands' steps carry none
        known = self.command == "apply" and result.step in _step_names(self.target)
        checksum = self.target.spec.step(result.step).checksum() if known else None
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


def _step_names(target: Target) -> set[str]:
    return {s.name for s in (*target.spec.steps, *target.spec.converge)}


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


def apply_migration(
    conn: psycopg.Connection[Any], target: Target, options: ApplyOptions | None = None,
    on_event: OnEvent | None = None,
) -> RunReport:
    """Run every needed step of the migration online-safely and verify the result. Writes.

    Raises PreflightFailed (nothing changed), LockHeld (another run, or blockers outlasted the retries),
    StepFailed (a step errored; earlier steps stay done). A Ctrl-C yields a report with exit code 3.
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
    planned = _with_analyze(conn, target, plan_steps(target, snapshot, replace=options.replace))
    if options.dry_run:
        steps = tuple(StepResult(p.step.name, StepOutcome.WOULD_APPLY, p.reason, ";\n".join(p.statements))
                      for p in planned)
        dry_note = "dry run: nothing was changed" if planned else "already applied: nothing to do"
        return RunReport("apply", steps, dry_run=True, notes=(dry_note,),
                         extra={"plan": {"steps": [
                             {**p.to_dict(), "session": session_statements(p.step.lock, options.limits)}
                             for p in planned]}})
    if not planned:
        _check_recorded_checksums(conn, target, options.force)
        return RunReport("apply", (), notes=("already applied: nothing to do",),
                         verification=_verification(conn, target))
    runner = StepRunner(conn, target, options, emit, "apply")
    try:
        ensure_history(conn)
        _check_recorded_checksums(conn, target, options.force)
        results = runner.run_all(planned)
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
