"""Read-only introspection of the catalogs: one snapshot of everything the checks compare to the spec.

Only catalog views and functions are read: no table is scanned, so the cost does not grow with rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from favmigrate.db import rows, scalar
from favmigrate.errors import PreflightFailed
from favmigrate.history import HISTORY_SCHEMA, ToolTable, tool_table
from favmigrate.spec import Target


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    data_type: str
    nullable: bool
    default: str | None
    comment: str | None


@dataclass(frozen=True)
class ConstraintInfo:
    name: str
    type: str  # pg_constraint.contype: f, c, p, u ...
    columns: tuple[str, ...]
    referenced_schema: str | None  # nspname and relname exactly as in the catalogs, never quoted
    referenced_table: str | None
    referenced_columns: tuple[str, ...]
    on_delete: str | None  # SET NULL, CASCADE ... for foreign keys
    validated: bool
    definition: str


@dataclass(frozen=True)
class IndexInfo:
    name: str
    columns: tuple[str, ...]
    predicate: str | None
    unique: bool
    method: str
    valid: bool
    ready: bool
    live: bool
    definition: str


@dataclass(frozen=True)
class Snapshot:
    """What the catalogs say about the migration's table, at one moment."""

    server_version_num: int
    table_exists: bool
    referenced_table_exists: bool
    columns: dict[str, ColumnInfo] = field(default_factory=dict)
    constraints: dict[str, ConstraintInfo] = field(default_factory=dict)
    indexes: dict[str, IndexInfo] = field(default_factory=dict)
    referenced_column_type: str | None = None
    referenced_column_unique: bool = False
    table_owner: str | None = None
    current_user: str = ""
    can_alter_table: bool = False
    estimated_rows: int = 0


def require_tables(snapshot: Snapshot, target: Target) -> None:
    """Refuse to run (PreflightFailed, exit 2) unless both tables of the migration exist: the one preflight
    every command shares, so a wrong --schema or database reads the same everywhere."""
    found = ((target.spec.table, snapshot.table_exists),
             (target.spec.referenced_table, snapshot.referenced_table_exists))
    missing = [f"{target.schema}.{name}" for name, exists in found if not exists]
    if missing:
        what = (f"table {missing[0]} does not exist" if len(missing) == 1
                else f"tables {' and '.join(missing)} do not exist")
        raise PreflightFailed(f"{what}; nothing was changed",
                              problems=[f"table {name} is missing" for name in missing],
                              hint="check --schema and the database named in the DSN")


_ON_DELETE = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}

_TABLE = sql.SQL(
    """
    SELECT c.oid, pg_get_userbyid(c.relowner) AS owner,
           pg_has_role(current_user, c.relowner, 'USAGE') AS can_alter,
           greatest(c.reltuples, 0)::bigint AS estimated_rows
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
    """
)

_COLUMNS = sql.SQL(
    """
    SELECT c.column_name, c.data_type, c.is_nullable = 'YES' AS nullable, c.column_default,
           col_description(%s::oid, c.ordinal_position::int) AS comment
    FROM information_schema.columns c
    WHERE c.table_schema = %s AND c.table_name = %s
    ORDER BY c.ordinal_position
    """
)

_CONSTRAINTS = sql.SQL(
    """
    SELECT con.conname, con.contype::text AS contype, con.convalidated, con.confdeltype::text AS confdeltype,
           rn.nspname AS referenced_schema, rc.relname AS referenced_table,
           ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.ord)
               AS columns,
           ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum ORDER BY k.ord)
               AS referenced_columns,
           pg_get_constraintdef(con.oid, true) AS definition
    FROM pg_constraint con
    LEFT JOIN pg_class rc ON rc.oid = con.confrelid
    LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
    WHERE con.conrelid = %s::oid
    """
)

_INDEXES = sql.SQL(
    """
    SELECT ic.relname AS name, i.indisunique, i.indisvalid, i.indisready, i.indislive, am.amname,
           ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnatts) k)
               AS columns,
           pg_get_expr(i.indpred, i.indrelid, true) AS predicate,
           pg_get_indexdef(i.indexrelid) AS definition
    FROM pg_index i
    JOIN pg_class ic ON ic.oid = i.indexrelid
    JOIN pg_am am ON am.oid = ic.relam
    WHERE i.indrelid = %s::oid
    """
)

_REFERENCED_KEY = sql.SQL(
    """
    SELECT format_type(a.atttypid, a.atttypmod) AS data_type,
           EXISTS (SELECT 1 FROM pg_constraint con
                   WHERE con.conrelid = a.attrelid AND con.contype IN ('p', 'u') AND con.conkey = ARRAY[a.attnum])
               AS is_unique
    FROM pg_attribute a
    WHERE a.attrelid = %s::oid AND a.attname = %s AND NOT a.attisdropped
    """
)


def read_snapshot(conn: psycopg.Connection[Any], target: Target) -> Snapshot:
    """Read columns, constraints, indexes and the referenced key of the migration's tables. Read-only."""
    spec = target.spec
    version = int(scalar(conn, sql.SQL("SELECT current_setting('server_version_num')")))
    user = str(scalar(conn, sql.SQL("SELECT current_user")))
    table = rows(conn, _TABLE, (target.schema, spec.table))
    referenced = rows(conn, _TABLE, (target.schema, spec.referenced_table))
    if not table:
        return Snapshot(version, False, bool(referenced), current_user=user)
    oid = table[0]["oid"]
    columns = {
        r["column_name"]: ColumnInfo(r["column_name"], r["data_type"], r["nullable"], r["column_default"], r["comment"])
        for r in rows(conn, _COLUMNS, (oid, target.schema, spec.table))
    }
    constraints = {
        r["conname"]: ConstraintInfo(
            name=r["conname"],
            type=r["contype"],
            columns=tuple(r["columns"]),
            referenced_schema=r["referenced_schema"],
            referenced_table=r["referenced_table"],
            referenced_columns=tuple(r["referenced_columns"]),
            on_delete=_ON_DELETE.get(r["confdeltype"]) if r["contype"] == "f" else None,
            validated=r["convalidated"],
            definition=r["definition"],
        )
        for r in rows(conn, _CONSTRAINTS, (oid,))
    }
    indexes = {
        r["name"]: IndexInfo(
            name=r["name"],
            columns=tuple(r["columns"]),
            predicate=r["predicate"],
            unique=r["indisunique"],
            method=r["amname"],
            valid=r["indisvalid"],
            ready=r["indisready"],
            live=r["indislive"],
            definition=r["definition"],
        )
        for r in rows(conn, _INDEXES, (oid,))
    }
    key_type, key_unique = None, False
    if referenced:
        key = rows(conn, _REFERENCED_KEY, (referenced[0]["oid"], spec.referenced_column))
        if key:
            key_type, key_unique = key[0]["data_type"], key[0]["is_unique"]
    return Snapshot(
        server_version_num=version,
        table_exists=True,
        referenced_table_exists=bool(referenced),
        columns=columns,
        constraints=constraints,
        indexes=indexes,
        referenced_column_type=key_type,
        referenced_column_unique=key_unique,
        table_owner=table[0]["owner"],
        current_user=user,
        can_alter_table=table[0]["can_alter"],
        estimated_rows=table[0]["estimated_rows"],
    )


_ROW_SECURITY = sql.SQL(
    """
    SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %s AND c.relname = ANY (%s) AND row_security_active(c.oid)
    ORDER BY c.relname DESC
    """
)


def hidden_by_row_security(conn: psycopg.Connection[Any], target: Target) -> tuple[str, ...]:
    """The migration's tables (schema.table) whose rows row level security filters for the current role:
    counts over them would be counts of what the role may see. Read-only."""
    names = [target.spec.table, target.spec.referenced_table]
    return tuple(f"{target.schema}.{r['relname']}" for r in rows(conn, _ROW_SECURITY, (target.schema, names)))


def row_security_warning(conn: psycopg.Connection[Any], hidden: tuple[str, ...]) -> str:
    """Why the data checks were skipped for a role that row level security filters."""
    user = scalar(conn, sql.SQL("SELECT current_user"))
    return (f"row level security filters what role {user} sees of {' and '.join(hidden)}: the data checks "
            "(orphans, window range, backfill pending) are skipped; run them as the table owner or a role with "
            "BYPASSRLS")


_WITHOUT_STATISTICS = sql.SQL(
    """
    SELECT c.name
    FROM unnest(%s::text[]) AS c(name)
    WHERE NOT EXISTS (SELECT 1 FROM pg_stats s
                      WHERE s.schemaname = %s AND s.tablename = %s AND s.attname = c.name)
    """
)


def columns_without_statistics(conn: psycopg.Connection[Any], target: Target) -> tuple[str, ...]:
    """The migration's columns that ANALYZE has not sampled yet (the planner guesses their selectivity). Read-only."""
    names = [column.name for column in target.spec.columns]
    found = rows(conn, _WITHOUT_STATISTICS, (names, target.schema, target.spec.table))
    return tuple(row["name"] for row in found)


@dataclass(frozen=True)
class DataStats:
    """Counts from the table itself (verify's data checks); each needs a scan."""

    orphaned_mechanic_ids: int
    window_out_of_range: int
    backfill_pending: int
    backfill_rejected: int = 0  # of the pending rows, those whose values a backfill run rejected
    skipped: tuple[str, ...] = ()  # what the role may not read, and what that leaves out of the counts


def legacy_pending_condition(target: Target) -> sql.Composed:
    """Rows whose metadata still holds a legacy value whose column is NULL (for preferred mechanic / notified)."""
    parts = []
    for column in target.spec.columns:
        if not column.nullable:
            continue  # a NOT NULL column with a default is never "still NULL"
        parts.append(
            sql.SQL("({col} IS NULL AND coalesce(jsonb_typeof({meta} -> {key}), 'null') <> 'null')").format(
                col=sql.Identifier(column.name),
                meta=sql.Identifier(target.spec.metadata_column),
                key=sql.Literal(column.legacy_key),
            )
        )
    return sql.SQL("(jsonb_typeof({meta}) = 'object' AND ({any}))").format(
        meta=sql.Identifier(target.spec.metadata_column), any=sql.SQL(" OR ").join(parts)
    )


def read_data_stats(conn: psycopg.Connection[Any], target: Target) -> DataStats:
    """Count orphaned mechanic ids, out-of-range windows and rows still waiting for backfill. Read-only."""
    spec = target.spec
    fk_column = sql.Identifier(spec.foreign_key.columns[0])
    window = next(c for c in spec.columns if c.min is not None)
    rejects = tool_table(conn, "backfill_rejects")
    rejected = _rejected_condition(target) if rejects is ToolTable.READABLE else sql.SQL("FALSE")
    skipped = () if rejects is not ToolTable.UNREADABLE else (
        f"role {scalar(conn, sql.SQL('SELECT current_user'))} may not read {HISTORY_SCHEMA}.backfill_rejects: "
        "rows whose legacy values backfill rejected are counted as waiting for backfill",)
    query = sql.SQL(
        """
        SELECT
          count(*) FILTER (WHERE t.{fk} IS NOT NULL AND NOT EXISTS
                           (SELECT 1 FROM {ref} m WHERE m.{ref_col} = t.{fk})) AS orphans,
          count(*) FILTER (WHERE t.{window} NOT BETWEEN {lo} AND {hi}) AS out_of_range,
          count(*) FILTER (WHERE {pending}) AS pending,
          count(*) FILTER (WHERE {pending} AND {rejected}) AS rejected
        FROM {table} t
        """
    ).format(
        rejected=rejected,
        fk=fk_column,
        ref=target.referenced_table,
        ref_col=sql.Identifier(spec.referenced_column),
        window=sql.Identifier(window.name),
        lo=sql.Literal(window.min),
        hi=sql.Literal(window.max),
        pending=legacy_pending_condition(target),
        table=target.table,
    )
    row = rows(conn, query)[0]
    return DataStats(row["orphans"], row["out_of_range"], row["pending"], row["rejected"], skipped)


def _rejected_condition(target: Target) -> sql.Composable:
    """Whether a backfill run recorded a reject for row ``t``."""
    return sql.SQL(
        "EXISTS (SELECT 1 FROM {rejects} r WHERE r.migration_id = {id} AND r.target_schema = {schema} "
        "AND r.row_id = t.{pk}::text)"
    ).format(rejects=sql.Identifier(HISTORY_SCHEMA, "backfill_rejects"), id=sql.Literal(target.spec.id),
             schema=sql.Literal(target.schema), pk=sql.Identifier(target.spec.primary_key))
