"""Which generated steps are still needed, decided from a catalog snapshot. Pure: no database here.

A step is needed when one of the checks it satisfies does not pass; within a step, only the ops whose
checks do not pass run (a foreign key already in place is not added again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from favmigrate.catalog import Snapshot
from favmigrate.changelog import CHANGE_LOG, untrack_statements
from favmigrate.checks import check_applied, failing, index_matches
from favmigrate.ops import NotNullStage, Op, Step, converge_steps, drop_index, finalize_steps, migration_steps
from favmigrate.results import CheckResult
from favmigrate.spec import Aspect, LockKind, Target, as_text


@dataclass(frozen=True)
class PlannedStep:
    """A step that is needed, why, and the SQL that will run for it."""

    step: Step
    reason: str
    statements: tuple[str, ...]
    rebuild_index: bool = False  # an INVALID leftover (or --replace) is dropped concurrently first
    down: bool = False  # run the step's down SQL instead (rollback)
    ops: tuple[Op, ...] = ()  # the step's ops that run (all of them when empty)
    # what a dry run's SQL script runs for a step favmigrate runs in batches with values bound (empty: the
    # statements themselves): the same work as statements psql can run
    script: tuple[str, ...] = ()

    @property
    def up(self) -> tuple[Any, ...]:
        """The composed statements of the ops that run."""
        return tuple(s for op in (self.ops or self.step.ops) for s in op.up)

    def to_dict(self) -> dict[str, Any]:
        found = {"step": self.step.name, "reason": self.reason, "sql": list(self.statements),
                 "rebuild_index": self.rebuild_index, "lock": self.step.lock.value}
        return {**found, "script": list(self.script)} if self.script else found


def reason(broken: list[CheckResult]) -> str:
    """Why a step is needed: the failing checks' messages (skipped ones only repeat a missing object)."""
    shown = [c for c in broken if c.failed] or broken
    return "; ".join(c.message or c.id for c in shown)


def _planned(step: Step, broken: list[CheckResult], ops: tuple[Op, ...], *, prefix: tuple[str, ...] = (),
             rebuild: bool = False) -> PlannedStep:
    statements = list(prefix)
    if step.first_batch is not None:
        statements.append(as_text(step.first_batch))
    statements += [as_text(s) for op in ops for s in op.up]
    return PlannedStep(step, reason(broken), tuple(statements), rebuild, ops=ops)


def _migration_plan(target: Target, snapshot: Snapshot, checks: tuple[CheckResult, ...],
                    replace: bool) -> list[PlannedStep]:
    planned: list[PlannedStep] = []
    for step in migration_steps(target):
        if step.index is not None:
            index = step.index
            broken = failing(checks, step.satisfies)
            found = snapshot.indexes.get(index.name)
            rebuild = False
            if found is not None and found.valid and not index_matches(index, found):
                broken = failing(checks, (index.id.check(Aspect.DEFINITION),))
                rebuild = replace
            elif found is not None and not found.valid:
                rebuild = True
            if broken:
                prefix = (as_text(drop_index(target, index)),) if rebuild else ()
                planned.append(_planned(step, broken, step.ops, prefix=prefix, rebuild=rebuild))
            continue
        ops = tuple(op for op in step.ops if failing(checks, op.satisfies))
        if ops:
            planned.append(_planned(step, failing(checks, step.satisfies), ops))
    return planned


def _finished_earlier(step: Step, snapshot: Snapshot) -> bool:
    """An interrupted run already added (or validated) the NOT NULL check this step would add (or validate)."""
    assert step.column is not None and step.column.not_null_check is not None
    check = snapshot.constraints.get(step.column.not_null_check)
    if check is None:
        return False
    return step.stage is NotNullStage.ADD_CHECK or (step.stage is NotNullStage.VALIDATE_CHECK and check.validated)


def _not_null_plan(steps: tuple[Step, ...], snapshot: Snapshot, checks: tuple[CheckResult, ...]) -> list[PlannedStep]:
    """The NOT NULL sequence for the columns that exist and need it, skipping what an earlier run finished."""
    planned: list[PlannedStep] = []
    for step in steps:
        assert step.column is not None
        if step.column.name not in snapshot.columns:
            continue  # add-columns creates it as the spec says: nothing to converge
        broken = failing(checks, step.satisfies)
        if broken and not _finished_earlier(step, snapshot):
            planned.append(_planned(step, broken, step.ops))
    return planned


def remove_change_log_step(target: Target) -> Step:
    """apply's step removing the change log a stopped rollback left (its trigger, function and table)."""
    return Step(name="remove-rollback-change-log", lock=LockKind.BRIEF,
                ops=(Op(up=tuple(untrack_statements(target)), satisfies=(CHANGE_LOG.check(Aspect.ABSENT),)),))


def plan_apply(target: Target, snapshot: Snapshot, *, replace: bool = False) -> list[PlannedStep]:
    """The steps apply would run against this snapshot, in order, with their SQL. Pure."""
    checks = check_applied(target.spec, snapshot, schema=target.schema)
    planned = _migration_plan(target, snapshot, checks, replace)
    # the convergence runs right after the columns exist (they already do when it is needed)
    converge = _not_null_plan(converge_steps(target), snapshot, checks)
    position = 1 if planned and planned[0].step.name == "add-columns" else 0
    # first: until it goes, the trigger logs every write, and the migration's own steps would log theirs
    cleanup = remove_change_log_step(target)
    leftover = [_planned(cleanup, failing(checks, cleanup.satisfies), cleanup.ops)] if snapshot.change_log else []
    return leftover + planned[:position] + converge + planned[position:]


def plan_finalize(target: Target, snapshot: Snapshot) -> list[PlannedStep]:
    """The NOT NULL enforcement still needed by ``not_null = "after-backfill"`` columns. Pure.

    A column that does not exist yet is planned as if it were nullable (apply --finalize adds it first).
    """
    checks = check_applied(target.spec, snapshot, schema=target.schema)
    planned: list[PlannedStep] = []
    for step in finalize_steps(target):
        column = step.column
        assert column is not None
        found = snapshot.columns.get(column.name)
        if (found is not None and not found.nullable) or _finished_earlier(step, snapshot):
            continue
        broken = failing(checks, step.satisfies) or failing(checks, (column.id.check(Aspect.EXISTS),))
        planned.append(_planned(step, broken, step.ops))
    return planned

