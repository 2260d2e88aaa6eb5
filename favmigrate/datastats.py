"""The table scans verify needs, per column of the spec: rows still waiting for backfill (and of those, the
ones whose values backfill rejected), values referencing a missing row, values outside the spec's limits.

Read-only. One statement scans the table once; every count is a FILTER of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from favmigrate.backfill_sql import REJECTS_TABLE, BackfillColumn, backfill_columns
from favmigrate.catalog import hidden_by_row_security, row_security_warning
from favmigrate.db import rows, scalar
from favmigrate.spec import Target
from favmigrate.state import HISTORY_SCHEMA, ToolTable, tool_table


@dataclass(frozen=True)
class DataStats:
    """Counts from the table itself (verify's data checks); each needs a scan."""

    orphaned: Mapping[str, int]  # per column with references: rows naming a missing row
    out_of_range: Mapping[str, int]  # per column with limits (min/max, max_length, allowed): rows breaking them
    backfill_pending: int  # rows with a legacy value whose column is still NULL
    backfill_rejected: int = 0  # of the pending rows, those whose values a backfill run rejected
    skipped: tuple[str, ...] = ()  # what the role may not read, and what that leaves out of the counts
    limits: Mapping[str, str] = field(default_factory=dict)  # per limited column: its limits in words
    references: Mapping[str, str] = field(default_factory=dict)  # per column with references: the table


def legacy_pending_condition(target: Target, columns: tuple[BackfillColumn, ...] | None = None) -> sql.Composed:
    """Rows whose metadata still holds a legacy value whose column is NULL (a NOT NULL column never is)."""
    meta = sql.Identifier(target.spec.metadata_column)
    parts = [sql.SQL("({col} IS NULL AND coalesce(jsonb_typeof({meta} -> {key}), 'null') <> 'null')").format(
        col=sql.Identifier(column.name), meta=meta, key=sql.Literal(column.key))
        for column in columns or backfill_columns(target)]
    return sql.SQL("(jsonb_typeof({meta}) = 'object' AND ({any}))").format(meta=meta, any=sql.SQL(" OR ").join(parts))


def _rejected_condition(target: Target) -> sql.Composable:
    """Whether a backfill run recorded a reject for row ``t``."""
    return sql.SQL(
        "EXISTS (SELECT 1 FROM {rejects} r WHERE r.migration_id = {id} AND r.target_schema = {schema} "
        "AND r.row_id = t.{pk}::text)"
    ).format(rejects=REJECTS_TABLE, id=sql.Literal(target.spec.id), schema=sql.Literal(target.schema),
             pk=sql.Identifier(target.spec.primary_key))


def read_data_stats(conn: psycopg.Connection[Any], target: Target) -> DataStats:
    """Count, per column, orphaned references and values outside the limits, and the rows still waiting for
    backfill. Read-only (one scan of the table, plus a probe of each referenced table per non-NULL value).
    """
    columns = backfill_columns(target)
    rejects = tool_table(conn, "backfill_rejects")
    rejected = _rejected_condition(target) if rejects is ToolTable.READABLE else sql.SQL("FALSE")
    skipped = () if rejects is not ToolTable.UNREADABLE else (
        f"role {scalar(conn, sql.SQL('SELECT current_user'))} may not read {HISTORY_SCHEMA}.backfill_rejects: "
        "rows whose legacy values backfill rejected are counted as waiting for backfill",)
    pending = legacy_pending_condition(target, columns)
    counts: list[sql.Composable] = [
        sql.SQL("count(*) FILTER (WHERE {}) AS pending").format(pending),
        sql.SQL("count(*) FILTER (WHERE {} AND {}) AS rejected").format(pending, rejected),
    ]
    for i, column in enumerate(columns):
        col = sql.SQL("t.{}").format(sql.Identifier(column.name))
        if column.reference is not None:
            counts.append(sql.SQL(
                "count(*) FILTER (WHERE {col} IS NOT NULL AND NOT EXISTS "
                "(SELECT 1 FROM {ref} m WHERE m.{ref_col} = {col})) AS {name}").format(
                col=col, ref=column.reference.table, ref_col=sql.Identifier(column.reference.column),
                name=sql.Identifier(f"orphans_{i}")))
        if column.rules.limited:
            counts.append(sql.SQL("count(*) FILTER (WHERE {}) AS {}").format(
                column.rules.outside(col), sql.Identifier(f"outside_{i}")))
    row = rows(conn, sql.SQL("SELECT {} FROM {} AS t").format(sql.SQL(",\n  ").join(counts), target.table))[0]
    return DataStats(
        orphaned={c.name: int(row[f"orphans_{i}"]) for i, c in enumerate(columns) if c.reference is not None},
        out_of_range={c.name: int(row[f"outside_{i}"]) for i, c in enumerate(columns) if c.rules.limited},
        backfill_pending=int(row["pending"]), backfill_rejected=int(row["rejected"]), skipped=skipped,
        limits={c.name: c.rules.describe_limits() for c in columns if c.rules.limited},
        references={c.name: c.reference.table_name for c in columns if c.reference is not None},
    )


def readable_data_stats(conn: psycopg.Connection[Any], target: Target) -> tuple[DataStats | None, tuple[str, ...]]:
    """The data counts and what the role could not read; no counts when row level security filters the
    tables (they would be counts of what the role may see, a false pass). Read-only."""
    hidden = hidden_by_row_security(conn, target)
    if hidden:
        return None, (row_security_warning(conn, hidden),)
    stats = read_data_stats(conn, target)
    return stats, stats.skipped
