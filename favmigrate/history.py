"""history: the runs and steps recorded in favmigrate.history, newest first. Read-only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from favmigrate.db import read_only, rows, scalar
from favmigrate.errors import ExitCode, PreflightFailed
from favmigrate.spec import Target
from favmigrate.state import HISTORY_SCHEMA, ToolTable, tool_table


@dataclass(frozen=True)
class RecordedStep:
    """One step of a recorded run, as favmigrate.history holds it."""

    step: str
    outcome: str
    detail: str
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    checksum: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "outcome": self.outcome, "detail": self.detail,
                "started_at": self.started_at.isoformat(), "finished_at": self.finished_at.isoformat(),
                "duration_ms": self.duration_ms, "checksum": self.checksum}


@dataclass(frozen=True)
class RecordedRun:
    """One run of apply or rollback: who ran it, with which version, and its steps in order."""

    run_id: str
    command: str
    db_user: str
    tool_version: str
    steps: tuple[RecordedStep, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "command": self.command, "db_user": self.db_user,
                "tool_version": self.tool_version, "started_at": self.steps[0].started_at.isoformat(),
                "finished_at": self.steps[-1].finished_at.isoformat(),
                "steps": [step.to_dict() for step in self.steps]}


@dataclass(frozen=True)
class HistoryReport:
    """The latest recorded runs for one migration and schema, newest first."""

    migration_id: str
    schema: str
    runs: tuple[RecordedRun, ...]

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        return {"migration_id": self.migration_id, "schema": self.schema, "runs": [r.to_dict() for r in self.runs]}


_LATEST_RUNS = sql.SQL(
    """
    WITH latest AS (
        SELECT run_id, min(id) AS first_id FROM {history}
        WHERE migration_id = %(migration)s AND target_schema = %(schema)s
        GROUP BY run_id ORDER BY min(id) DESC LIMIT %(limit)s
    )
    SELECT h.run_id::text AS run_id, h.command, h.db_user, h.tool_version, h.step, h.outcome, h.detail,
           h.started_at, h.finished_at, h.duration_ms, h.checksum
    FROM {history} h JOIN latest USING (run_id)
    ORDER BY latest.first_id DESC, h.id
    """
).format(history=sql.Identifier(HISTORY_SCHEMA, "history"))


def read_history(conn: psycopg.Connection[Any], target: Target, *, runs: int = 20) -> HistoryReport:
    """The latest ``runs`` runs recorded for this migration and schema, with their steps. Read-only.

    Raises PreflightFailed when the role may not read favmigrate.history; no history table is no run.
    """
    state = tool_table(conn, "history")
    if state is ToolTable.UNREADABLE:
        user = scalar(conn, sql.SQL("SELECT current_user"))
        raise PreflightFailed(f"role {user} may not read {HISTORY_SCHEMA}.history (it is closed to every role but "
                              "its owner)", hint=f"connect as its owner, or GRANT USAGE ON SCHEMA {HISTORY_SCHEMA} "
                              f"and SELECT ON {HISTORY_SCHEMA}.history to this role")
    found = []
    if state is ToolTable.READABLE:
        with read_only(conn):
            found = rows(conn, _LATEST_RUNS, {"migration": target.spec.id, "schema": target.schema, "limit": runs})
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in found:
        grouped.setdefault(row["run_id"], []).append(row)
    return HistoryReport(target.spec.id, target.schema, tuple(
        RecordedRun(run_id, steps[0]["command"], steps[0]["db_user"], steps[0]["tool_version"], tuple(
            RecordedStep(r["step"], r["outcome"], r["detail"], r["started_at"], r["finished_at"], r["duration_ms"],
                         r["checksum"]) for r in steps))
        for run_id, steps in grouped.items()))
