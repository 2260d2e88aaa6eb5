"""report: the favorites-priority analytics, per preferred mechanic and in total. Read-only.

The numbers come from verify/priority_analytics.sql, the same file `explain` checks against the
indexes. Definitions (also in `favmigrate report --help`):

- priority request: a row with a preferred mechanic, created in [since, until) (a bound left out is open);
- accepted by the preferred mechanic: status accepted and mechanic_id = preferred_mechanic_id;
- success rate: accepted by the preferred mechanic / priority requests;
- timed out: notified (priority_notified_at set) and not accepted within the row's own
  priority_window_minutes: still pending after priority_notified_at + window, or accepted after it;
  a cancelled request never counts as timed out;
- timeout rate: timed out / notified requests;
- response time: accepted_at - priority_notified_at, over the requests accepted by the preferred
  mechanic (average and median, in seconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from favmigrate.catalog import read_snapshot
from favmigrate.db import rows, scalar
from favmigrate.errors import UsageError
from favmigrate.queries import (
    hidden_by_row_security,
    mechanic_label,
    read_only_query,
    rejected,
    report_query,
    require_applied,
)
from favmigrate.spec import Target

REPORT_QUERY = "priority-analytics"
DEFAULT_TIMEOUT_S = 60.0

CSV_COLUMNS = (
    "mechanic_id", "mechanic_name", "requests", "notified", "accepted_by_preferred", "success_rate_pct",
    "timed_out", "timeout_rate_pct", "avg_response_s", "median_response_s",
)


@dataclass(frozen=True)
class ReportOptions:
    since: datetime | None = None  # inclusive, on created_at
    until: datetime | None = None  # exclusive, on created_at
    timeout_s: float | None = DEFAULT_TIMEOUT_S
    limit: int | None = None  # at most this many mechanics (the best first); the totals cover them all


def _number(value: Decimal | float | None) -> float | None:
    """A rate or a duration rounded to two decimals (what a person or a spreadsheet needs)."""
    return None if value is None else round(float(value), 2)


@dataclass(frozen=True)
class PriorityStats:
    """The priority numbers of one preferred mechanic, or of all of them (the totals)."""

    requests: int
    notified: int
    accepted_by_preferred: int
    success_rate_pct: float | None  # None when there is no request (never a division by zero)
    timed_out: int
    timeout_rate_pct: float | None  # None when no request was notified
    avg_response_s: float | None
    median_response_s: float | None
    mechanic_id: str | None = None
    mechanic_name: str | None = None  # None when mechanics has no display column, or no row for the id
    mechanic_missing: bool = False  # the id has no mechanics row (possible while the FK is NOT VALID)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> PriorityStats:
        return cls(
            requests=int(row["requests"]),
            notified=int(row["notified"]),
            accepted_by_preferred=int(row["accepted_by_preferred"]),
            success_rate_pct=_number(row["success_rate_pct"]),
            timed_out=int(row["timed_out"]),
            timeout_rate_pct=_number(row["timeout_rate_pct"]),
            avg_response_s=_number(row["avg_response_s"]),
            median_response_s=_number(row["median_response_s"]),
            mechanic_id=None if row["is_total"] or row["mechanic_id"] is None else str(row["mechanic_id"]),
            mechanic_name=None if row["is_total"] else row["mechanic_name"],
            mechanic_missing=bool(row["mechanic_missing"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "mechanic_id": self.mechanic_id,
            "mechanic_name": self.mechanic_name,
            "mechanic_missing": self.mechanic_missing,
            "requests": self.requests,
            "notified": self.notified,
            "accepted_by_preferred": self.accepted_by_preferred,
            "success_rate_pct": self.success_rate_pct,
            "timed_out": self.timed_out,
            "timeout_rate_pct": self.timeout_rate_pct,
            "avg_response_s": self.avg_response_s,
            "median_response_s": self.median_response_s,
        }


_EMPTY = PriorityStats(0, 0, 0, None, 0, None, None, None)


@dataclass(frozen=True)
class PriorityReport:
    """The outcome of `report`: totals, and one row per preferred mechanic (best success rate first)."""

    schema: str
    since: datetime | None
    until: datetime | None
    generated_at: datetime
    totals: PriorityStats
    mechanics: tuple[PriorityStats, ...]
    notes: tuple[str, ...] = ()
    mechanics_total: int = 0  # before --limit

    @property
    def ok(self) -> bool:
        return True

    def csv_rows(self) -> list[list[Any]]:
        """The per-mechanic rows in CSV_COLUMNS order (None stays None; the writer renders it empty)."""
        return [[stats.to_dict()[column] for column in CSV_COLUMNS] for stats in self.mechanics]

    def to_dict(self) -> dict[str, Any]:
        totals = self.totals.to_dict()
        del totals["mechanic_id"], totals["mechanic_name"], totals["mechanic_missing"]
        return {
            "ok": self.ok,
            "schema": self.schema,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "generated_at": self.generated_at.isoformat(),
            "totals": totals,
            "mechanics": [stats.to_dict() for stats in self.mechanics],
            "mechanics_total": self.mechanics_total,
            "notes": list(self.notes),
        }


def priority_report(
    conn: psycopg.Connection[Any], target: Target, options: ReportOptions | None = None
) -> PriorityReport:
    """Compute the priority analytics in one READ ONLY transaction that is rolled back.

    This is a read-only operation. Raises PreflightFailed before the migration is applied, UsageError
    when since is not before until or the query fails (a statement_timeout included).
    """
    options = options or ReportOptions()
    if options.since and options.until and options.since >= options.until:
        raise UsageError("--since must be before --until (the range is [since, until))")
    query = report_query(target.spec, REPORT_QUERY)
    with read_only_query(conn, timeout_s=options.timeout_s):
        snapshot = read_snapshot(conn, target)
        require_applied(snapshot, target)
        filtered = hidden_by_row_security(conn, target)
        generated_at: datetime = scalar(conn, sql.SQL("SELECT now()"))
        try:
            statement = query.statement(target, mechanic_label(conn, target))
            found = rows(conn, statement, {"since": options.since, "until": options.until})
        except pg_errors.QueryCanceled:
            raise UsageError(f"the report query was cancelled by statement_timeout after {options.timeout_s:g}s",
                             hint="raise --statement-timeout, or narrow --since/--until") from None
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError):
                raise
            raise rejected(query, exc) from None
    missing = [i.name for i in target.spec.indexes if i.name not in snapshot.indexes]
    notes = []
    if filtered:
        notes.append(f"row level security is active for this role: the numbers cover only the rows its policies "
                     f"let it see of {target.table_name} (connect as the table owner or a role with BYPASSRLS)")
    if missing:
        notes.append(f"index {', '.join(missing)} missing: the report read the table without it")
    totals = next((PriorityStats.from_row(r) for r in found if r["is_total"]), _EMPTY)
    mechanics = [PriorityStats.from_row(r) for r in found if not r["is_total"]]
    if options.limit is not None and len(mechanics) > options.limit:
        notes.append(f"the {options.limit:,} best of {len(mechanics):,} mechanics are shown (--limit); the totals "
                     "cover them all")
    return PriorityReport(
        schema=target.schema,
        since=options.since,
        until=options.until,
        generated_at=generated_at,
        totals=totals,
        mechanics=tuple(mechanics[:options.limit]),
        notes=tuple(notes),
        mechanics_total=len(mechanics),
    )
