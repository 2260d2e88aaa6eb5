"""The verification of a target: its catalog snapshot and data counts, checked against the spec.

Shared machinery of every job that proves a state (verify, apply and finalize after their steps, rollback,
plan, flag): jobs import this module, never each other. Read-only.
"""

from __future__ import annotations

from typing import Any

import psycopg

from favmigrate.catalog import Snapshot, read_snapshot, require_tables
from favmigrate.checks import check_absent, check_applied
from favmigrate.datastats import DataStats, readable_data_stats
from favmigrate.db import read_only
from favmigrate.results import CheckReport
from favmigrate.spec import Target


def verify_target(conn: psycopg.Connection[Any], target: Target, *, data: bool = True,
                  absent: bool = False) -> CheckReport:
    """Check the database against the spec inside a READ ONLY transaction that is rolled back.

    Takes no lock stronger than ACCESS SHARE (the data checks read the table). This is a read-only operation.
    Raises PreflightFailed when the tables do not exist (wrong --schema or database: nothing to verify).
    """
    return snapshot_and_checks(conn, target, data=data, absent=absent)[1]


def snapshot_and_checks(conn: psycopg.Connection[Any], target: Target, *, data: bool,
                        absent: bool) -> tuple[Snapshot, CheckReport]:
    """verify_target's report with the catalog snapshot it was computed from. Read-only."""
    with read_only(conn):
        snapshot = read_snapshot(conn, target)
        require_tables(snapshot, target)
        return snapshot, checks_for(conn, target, snapshot, data=data, absent=absent)


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

