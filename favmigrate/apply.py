"""apply: bring the database to the spec's end state, online-safely, one needed step at a time.

Which steps run is derived from the catalogs (a step runs when one of the checks it `satisfies` fails),
so apply converges from any state: fresh, half-applied, interrupted, or hand-run seed SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from favmigrate.catalog import Snapshot, columns_without_statistics, read_snapshot, require_tables
from favmigrate.checks import check_applied
from favmigrate.db import (
    SessionLimits,
    mask_query,
    rows,
    run_lock,
    scalar,
)
from favmigrate.errors import PreflightFailed
from favmigrate.ops import checksum_matches, migration_steps
from favmigrate.planner import PlannedStep, plan_apply, plan_finalize
from favmigrate.results import CheckReport, RunReport, StepOutcome, StepResult
from favmigrate.runner import (
    ANALYZE,
    Event,
    EventKind,
    OnEvent,
    RunnerOptions,
    StepRunner,
    analyze_statement,
    enforce_not_null,
    session_statements,
    silent,
    verify_after_run,
)
from favmigrate.spec import Aspect, Target, as_text
from favmigrate.state import applied_checksums, ensure_history

MIN_SERVER_VERSION = 120000


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

    def runner_options(self) -> RunnerOptions:
        return RunnerOptions(self.limits, self.batch_size, self.wait_report_s)


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
    emit = on_event or silent
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
                         verification=verify_after_run(conn, target))
    runner = StepRunner(conn, target, options.runner_options(), emit, "apply")
    try:
        ensure_history(conn)
        _check_recorded_checksums(conn, target, options.force)
        results = runner.run_all(planned)
        if options.finalize and not any(r.outcome is StepOutcome.INTERRUPTED for r in results):
            results += enforce_not_null(runner, target, done=bool(results))
    finally:
        runner.watch.close()
    verification: CheckReport | None = None
    notes: tuple[str, ...] = ()
    if any(r.outcome is StepOutcome.INTERRUPTED for r in results):
        notes = (_interrupted_note(results),)
    else:
        verification = verify_after_run(conn, target)
    return RunReport("apply", tuple(results), notes=notes, verification=verification,
                     extra={"run_id": str(runner.run_id)})


