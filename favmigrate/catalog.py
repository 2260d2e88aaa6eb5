"""Read-only introspection of the catalogs: one snapshot of everything the checks compare to the spec.

Only catalog views and functions are read: no table is scanned, so the cost does not grow with rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from favmigrate.changelog import CHANGE_LOG_TRIGGER, change_log_name
from favmigrate.db import rows, scalar
from favmigrate.errors import PreflightFailed
from favmigrate.spec import Target
from favmigrate.state import HISTORY_SCHEMA


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    data_type: str  # as format_type() spells it: integer, timestamp with time zone, numeric(12,2)
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
class ReferencedKey:
    """The column a foreign key references: its type, and whether a primary key or unique constraint covers it."""

    data_type: str | None  # None: the column does not exist
    unique: bool = False


@dataclass(frozen=True)
class Snapshot:
    """What the catalogs say about the migration's table, at one moment."""

    server_version_num: int
    table_exists: bool
    referenced_table_exists: bool  # every table the foreign keys reference exists
    columns: dict[str, ColumnInfo] = field(default_factory=dict)
    constraints: dict[str, ConstraintInfo] = field(default_factory=dict)
    indexes: dict[str, IndexInfo] = field(default_factory=dict)
    missing_tables: frozenset[str] = frozenset()  # referenced tables that do not exist
    referenced_keys: dict[tuple[str, str], ReferencedKey] = field(default_factory=dict)  # (table, column) -> key
    table_owner: str | None = None
    current_user: str = ""
    can_alter_table: bool = False
    estimated_rows: int = 0
    # a rollback's change-log trigger on the table, or its log: a rollback is running, or one stopped early
    change_log: bool = False


def require_tables(snapshot: Snapshot, target: Target) -> None:
    """Refuse to run (PreflightFailed, exit 2) unless the migration's table and the tables its foreign keys
    reference exist: the one preflight every command shares, so a wrong --schema or database reads the same
    everywhere."""
    found = [(target.spec.table, snapshot.table_exists)]
    found += [(name, name not in snapshot.missing_tables) for name in target.spec.referenced_tables]
    missing = [f"{target.schema}.{name}" for name, exists in found if not exists]
    if missing:
        what = (f"table {missing[0]} does not exist" if len(missing) == 1
                else f"tables {', '.join(missing[:-1])} and {missing[-1]} do not exist")
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
    SELECT a.attname AS column_name, format_type(a.atttypid, a.atttypmod) AS data_type,
           NOT a.attnotnull AS nullable, pg_get_expr(d.adbin, d.adrelid) AS column_default,
           col_description(a.attrelid, a.attnum) AS comment
    FROM pg_attribute a
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attrelid = %s::oid AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY a.attnum
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


# from the catalogs, not to_regclass(): a role without USAGE on the tool's schema can read them
_CHANGE_LOG = sql.SQL(
    "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = %s AND tgname = %s) "
    "OR EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relname = %s)")


def read_snapshot(conn: psycopg.Connection[Any], target: Target) -> Snapshot:
    """Read columns, constraints, indexes and the referenced key of the migration's tables. Read-only."""
    spec = target.spec
    version = int(scalar(conn, sql.SQL("SELECT current_setting('server_version_num')")))
    user = str(scalar(conn, sql.SQL("SELECT current_user")))
    table = rows(conn, _TABLE, (target.schema, spec.table))
    referenced = {name: rows(conn, _TABLE, (target.schema, name)) for name in spec.referenced_tables}
    missing = frozenset(name for name, found in referenced.items() if not found)
    if not table:
        return Snapshot(version, False, not missing, missing_tables=missing, current_user=user)
    oid = table[0]["oid"]
    columns = {
        r["column_name"]: ColumnInfo(r["column_name"], r["data_type"], r["nullable"], r["column_default"], r["comment"])
        for r in rows(conn, _COLUMNS, (oid,))
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
    keys = {}
    for fk in spec.foreign_keys:
        if referenced[fk.referenced_table]:
            key = rows(conn, _REFERENCED_KEY, (referenced[fk.referenced_table][0]["oid"], fk.referenced_column))
            keys[(fk.referenced_table, fk.referenced_column)] = (
                ReferencedKey(key[0]["data_type"], key[0]["is_unique"]) if key else ReferencedKey(None))
    return Snapshot(
        server_version_num=version,
        table_exists=True,
        referenced_table_exists=not missing,
        columns=columns,
        constraints=constraints,
        indexes=indexes,
        missing_tables=missing,
        referenced_keys=keys,
        table_owner=table[0]["owner"],
        current_user=user,
        can_alter_table=table[0]["can_alter"],
        estimated_rows=table[0]["estimated_rows"],
        change_log=bool(scalar(conn, _CHANGE_LOG, (oid, CHANGE_LOG_TRIGGER, HISTORY_SCHEMA, change_log_name(target)))),
    )


@dataclass(frozen=True)
class TableColumn:
    """A column as a writer of rows needs it: its type, and whether an INSERT must give it a value."""

    name: str
    type: str  # format_type(): usable as a cast target
    category: str  # pg_type.typcategory: S string, N numeric, B boolean, D date/time, E enum, A array, U other
    not_null: bool
    has_default: bool  # a default, an identity or a generated column: an INSERT may leave it out
    generated: bool  # GENERATED ALWAYS AS (...): an INSERT may not give it
    unique_alone: bool  # a valid unique index on this column alone: an upsert's target; a copied value collides
    first_label: str | None  # an enum's first label

    @property
    def required(self) -> bool:
        """An INSERT must give it a value (NOT NULL, no default)."""
        return self.not_null and not self.has_default


_TABLE_COLUMNS = sql.SQL(
    """
    SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, t.typcategory::text AS category,
           a.attnotnull AS not_null, (a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '') AS has_default,
           a.attgenerated <> '' AS generated,
           EXISTS (SELECT 1 FROM pg_index i
                   WHERE i.indrelid = a.attrelid AND i.indisunique AND i.indisvalid AND i.indnatts = 1
                     AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indkey[0] = a.attnum) AS unique_alone,
           (SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder LIMIT 1)
               AS first_label
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_type t ON t.oid = a.atttypid
    WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY a.attnum
    """
)


def table_columns(conn: psycopg.Connection[Any], schema: str, table: str) -> dict[str, TableColumn]:
    """The columns of ``schema.table`` by name, in order; empty when the table does not exist. Read-only."""
    return {row["name"]: TableColumn(**row) for row in rows(conn, _TABLE_COLUMNS, (schema, table))}


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
    names = [target.spec.table, *target.spec.referenced_tables]
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


def relation_pages(conn: psycopg.Connection[Any], target: Target) -> int:
    """The table's size in pages now (a page-range walk ends there). Read-only."""
    return int(scalar(conn, sql.SQL(
        "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::bigint"), (target.table_name,)))


def rows_per_page(conn: psycopg.Connection[Any], target: Target) -> float:
    """Live rows per page as the planner estimates them (50 before the first ANALYZE). Read-only."""
    found = rows(conn, sql.SQL("SELECT reltuples, relpages FROM pg_class WHERE oid = %s::regclass"),
                 (target.table_name,))[0]
    if found["relpages"] > 0 and found["reltuples"] > 0:
        return max(1.0, float(found["reltuples"]) / float(found["relpages"]))
    return 50.0
