"""verify: prove the end state (or the rolled-back state) against the catalogs. Read-only."""

from __future__ import annotations

import dataclasses
from typing import Any

import psycopg

from favmigrate.catalog import (
    Snapshot,
    hidden_by_row_security,
    read_snapshot,
    require_tables,
    row_security_warning,
)
from favmigrate.checks import check_absent, check_applied
from favmigrate.datastats import DataStats, read_data_stats
from favmigrate.db import read_only
from favmigrate.results import CheckReport
from favmigrate.smoke import skipped_smoke, smoke_checks
from favmigrate.spec import Target


def verify(conn: psycopg.Connection[Any], target: Target, *, data: bool = True, absent: bool = False,
           strict: bool = False, smoke: bool = False) -> CheckReport:
    """Check the database against the spec inside a READ ONLY transaction that is rolled back; ``strict``:
    warnings fail the report too; ``smoke``: then run the scenarios of favmigrate.smoke.

    Takes no lock stronger than ACCESS SHARE (the data checks read the table). This is a read-only operation,
    except ``smoke``, which writes rows in a transaction that is always rolled back (triggers fire).
    Raises PreflightFailed when the tables do not exist (wrong --schema or database: nothing to verify).
    """
    with read_only(conn):
        snapshot = read_snapshot(conn, target)
        require_tables(snapshot, target)
        report = checks_for(conn, target, snapshot, data=data, absent=absent)
    if smoke:
        missing = [c.name for c in target.spec.columns if c.name not in snapshot.columns]
        scenarios = (skipped_smoke(f"the scenarios need the migration's columns: {', '.join(missing)} missing")
                     if missing else smoke_checks(conn, target))
        report = dataclasses.replace(report, checks=report.checks + scenarios)
    return dataclasses.replace(report, strict=strict)


def checks_for(
    conn: psycopg.Connection[Any], target: Target, snapshot: Snapshot, *, data: bool, absent: bool
) -> CheckReport:
    """The report for an already-read snapshot; reads the data stats when asked and the columns exist."""
    if absent:
        return CheckReport(check_absent(target.spec, snapshot, target.schema), mode="absent", schema=target.schema)
    columns_present = snapshot.table_exists and all(c.name in snapshot.columns for c in target.spec.columns)
    stats: DataStats | None = None
    warnings: tuple[str, ...] = ()
    if data and columns_present and snapshot.referenced_table_exists:
        stats, warnings = readable_data_stats(conn, target)
    return CheckReport(check_applied(target.spec, snapshot, stats, target.schema), schema=target.schema,
                       warnings=warnings)


def readable_data_stats(conn: psycopg.Connection[Any], target: Target) -> tuple[DataStats | None, tuple[str, ...]]:
    """The data counts and what the role could not read; no counts when row level security filters the
    tables (they would be counts of what the role may see, a false pass). Read-only."""
    hidden = hidden_by_row_security(conn, target)
    if hidden:
        return None, (row_security_warning(conn, hidden),)
    stats = read_data_stats(conn, target)
    return stats, stats.skipped
