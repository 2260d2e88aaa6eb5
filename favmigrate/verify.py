"""verify: prove the end state (or the rolled-back state) against the catalogs. Read-only."""

from __future__ import annotations

import dataclasses
from typing import Any

import psycopg

from favmigrate.results import CheckReport
from favmigrate.smoke import skipped_smoke, smoke_checks
from favmigrate.spec import Target
from favmigrate.verification import snapshot_and_checks


def verify(conn: psycopg.Connection[Any], target: Target, *, data: bool = True, absent: bool = False,
           strict: bool = False, smoke: bool = False) -> CheckReport:
    """Check the database against the spec inside a READ ONLY transaction that is rolled back; ``strict``:
    warnings fail the report too; ``smoke``: then run the scenarios of favmigrate.smoke.

    Takes no lock stronger than ACCESS SHARE (the data checks read the table). This is a read-only operation,
    except ``smoke``, which writes rows in a transaction that is always rolled back (triggers fire).
    Raises PreflightFailed when the tables do not exist (wrong --schema or database: nothing to verify).
    """
    snapshot, report = snapshot_and_checks(conn, target, data=data, absent=absent)
    if smoke:
        missing = [c.name for c in target.spec.columns if c.name not in snapshot.columns]
        scenarios = (skipped_smoke(f"the scenarios need the migration's columns: {', '.join(missing)} missing")
                     if missing else smoke_checks(conn, target))
        report = dataclasses.replace(report, checks=report.checks + scenarios)
    return dataclasses.replace(report, strict=strict)
