"""plan: what is present, missing or drifted, and the exact SQL apply would run. Read-only."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import psycopg

from favmigrate.catalog import read_snapshot, require_tables
from favmigrate.checks import check_applied, created_objects
from favmigrate.datastats import readable_data_stats
from favmigrate.db import read_only
from favmigrate.errors import ExitCode
from favmigrate.planner import PlannedStep, plan_apply
from favmigrate.results import CheckResult
from favmigrate.spec import Aspect, ObjectId, Target


class ObjectState(StrEnum):
    PRESENT = "present"
    MISSING = "missing"
    DRIFTED = "drifted"


@dataclass(frozen=True)
class ObjectStatus:
    kind: str
    name: str
    state: ObjectState
    expected: str
    actual: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "state": self.state.value, "expected": self.expected,
                "actual": self.actual}


@dataclass(frozen=True)
class PlanReport:
    objects: tuple[ObjectStatus, ...]
    steps: tuple[PlannedStep, ...]
    backfill_pending: int | None  # information only: never changes the exit code
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(o.state is ObjectState.PRESENT for o in self.objects)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.ok else ExitCode.FAILED

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "objects": [o.to_dict() for o in self.objects],
                "steps": [s.to_dict() for s in self.steps], "backfill_pending": self.backfill_pending,
                "warnings": list(self.warnings)}


def _object_status(obj: ObjectId, checks: tuple[CheckResult, ...]) -> ObjectStatus:
    aspects = {str(obj.check(aspect)): aspect for aspect in Aspect}
    mine = [(aspects[c.id], c) for c in checks if c.id in aspects]
    if any(aspect is Aspect.EXISTS and c.failed for aspect, c in mine):
        return ObjectStatus(obj.kind.value, obj.name, ObjectState.MISSING, "present", "missing")
    drift = [(aspect, c) for aspect, c in mine if c.failed]
    if not drift:
        return ObjectStatus(obj.kind.value, obj.name, ObjectState.PRESENT, "", "")
    return ObjectStatus(obj.kind.value, obj.name, ObjectState.DRIFTED,
                        "; ".join(f"{aspect.value}: {c.expected}" for aspect, c in drift),
                        "; ".join(f"{aspect.value}: {c.actual}" for aspect, c in drift))


def plan(conn: psycopg.Connection[Any], target: Target, *, replace: bool = False) -> PlanReport:
    """Compare the database with the spec and list the SQL apply would run. This is a read-only operation.

    Raises PreflightFailed when the tables do not exist.
    """
    spec = target.spec
    with read_only(conn):
        snapshot = read_snapshot(conn, target)
        require_tables(snapshot, target)
        checks = check_applied(spec, snapshot, schema=target.schema)
        columns_present = all(c.name in snapshot.columns for c in spec.columns)
        stats, warnings = readable_data_stats(conn, target) if columns_present else (None, ())

    objects = tuple(_object_status(obj, checks) for obj in created_objects(spec))
    return PlanReport(objects, tuple(plan_apply(target, snapshot, replace=replace)),
                      stats.backfill_pending if stats else None, warnings)
