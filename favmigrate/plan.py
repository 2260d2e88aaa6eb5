"""plan: what is present, missing or drifted, and the exact SQL apply would run. Read-only."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import psycopg

from favmigrate.apply import PlannedStep, plan_steps
from favmigrate.catalog import read_snapshot, require_tables
from favmigrate.checks import check_applied
from favmigrate.db import read_only
from favmigrate.errors import ExitCode
from favmigrate.results import CheckResult
from favmigrate.spec import Target
from favmigrate.verify import readable_data_stats


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


def _object_status(kind: str, name: str, checks: list[CheckResult]) -> ObjectStatus:
    exists = next(c for c in checks if c.id.endswith(":exists"))
    if exists.failed:
        return ObjectStatus(kind, name, ObjectState.MISSING, "present", "missing")
    drift = [c for c in checks if c.failed]
    if not drift:
        return ObjectStatus(kind, name, ObjectState.PRESENT, "", "")
    return ObjectStatus(kind, name, ObjectState.DRIFTED, "; ".join(f"{c.id.rsplit(':', 1)[1]}: {c.expected}"
                                                                  for c in drift),
                        "; ".join(f"{c.id.rsplit(':', 1)[1]}: {c.actual}" for c in drift))


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

    def of(prefix: str) -> list[CheckResult]:
        return [c for c in checks if c.id.startswith(prefix + ":")]

    objects = [_object_status("column", c.name, of(f"column:{c.name}")) for c in spec.columns]
    objects.append(_object_status("constraint", spec.foreign_key.name, of(f"constraint:{spec.foreign_key.name}")))
    objects += [_object_status("index", i.name, of(f"index:{i.name}")) for i in spec.indexes]
    return PlanReport(tuple(objects), tuple(plan_steps(target, snapshot, replace=replace)),
                      stats.backfill_pending if stats else None, warnings)
