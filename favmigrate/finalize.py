"""finalize: enforce NOT NULL online on the spec's `not_null = "after-backfill"` columns, once backfilled."""

from __future__ import annotations

from typing import Any

import psycopg

from favmigrate.catalog import read_snapshot, require_tables
from favmigrate.db import run_lock
from favmigrate.errors import PreflightFailed
from favmigrate.planner import plan_finalize
from favmigrate.results import RunReport, StepOutcome, StepResult
from favmigrate.runner import (
    OnEvent,
    RunnerOptions,
    StepRunner,
    enforce_not_null,
    require_no_nulls,
    silent,
    verify_after_run,
)
from favmigrate.spec import Target
from favmigrate.state import ensure_history


def finalize_migration(
    conn: psycopg.Connection[Any], target: Target, options: RunnerOptions | None = None, dry_run: bool = False,
    on_event: OnEvent | None = None,
) -> RunReport:
    """Enforce NOT NULL online on the `not_null = "after-backfill"` columns once backfill has filled them. Writes.

    CHECK (col IS NOT NULL) NOT VALID, VALIDATE (writes continue), SET NOT NULL (no scan: the CHECK proves
    it), drop the CHECK. Raises PreflightFailed (tables or columns missing: run apply first; nothing
    changed), NotNullPending (a column still holds NULLs: nothing enforced), LockHeld, StepFailed. A
    dry run only reads.
    """
    options = options or RunnerOptions()
    emit = on_event or silent
    options.limits.set_on(conn)
    if dry_run:
        return _finalize(conn, target, options, emit, dry_run=True)
    # the run lock comes before the first read, as for apply: a rollback holding it would undo what we read
    with run_lock(conn, target.lock_name, wait_s=options.limits.lock_wait_s):
        return _finalize(conn, target, options, emit, dry_run=False)


def _finalize(conn: psycopg.Connection[Any], target: Target, options: RunnerOptions, emit: OnEvent, *,
              dry_run: bool) -> RunReport:
    """finalize_migration's body, under the run lock unless it is a dry run."""
    snapshot = read_snapshot(conn, target)
    require_tables(snapshot, target)
    missing = [c.name for c in target.spec.columns if c.not_null_after_backfill and c.name not in snapshot.columns]
    if missing:
        raise PreflightFailed(f"the migration is not applied: {target.table_name} has no column {', '.join(missing)}; "
                              "nothing was changed", hint="run `favmigrate apply` first, then backfill")
    planned = plan_finalize(target, snapshot)
    if planned:
        require_no_nulls(conn, target, planned)
    if dry_run or not planned:
        steps = tuple(StepResult(p.step.name, StepOutcome.WOULD_APPLY, p.reason, ";\n".join(p.statements))
                      for p in planned)
        if planned:
            note = "dry run: nothing was changed"
        elif any(c.not_null_after_backfill for c in target.spec.columns):
            note = "already finalized: nothing to do"
        else:
            note = "no column of the spec has not_null = \"after-backfill\": nothing to finalize"
        return RunReport("finalize", steps, dry_run=dry_run, notes=(note,),
                         verification=None if planned else verify_after_run(conn, target))
    runner = StepRunner(conn, target, options, emit, "finalize")
    try:
        ensure_history(conn)
        results = enforce_not_null(runner, target, done=False)
    finally:
        runner.watch.close()
    if any(r.outcome is StepOutcome.INTERRUPTED for r in results):
        return RunReport("finalize", tuple(results), notes=("interrupted: re-run `favmigrate finalize` to finish",),
                         extra={"run_id": str(runner.run_id)})
    return RunReport("finalize", tuple(results), verification=verify_after_run(conn, target),
                     extra={"run_id": str(runner.run_id)})
