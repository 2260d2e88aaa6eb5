"""The tool's own state, in its schema `favmigrate`: its creation (closed to every role but its owner), the
tables of each job (history of every run and step, backfill checkpoint and rejects) and writing the history.
The `history` command reads it (favmigrate.history)."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import sql

from favmigrate import __version__
from favmigrate.db import rows, scalar
from favmigrate.results import StepResult
from favmigrate.spec import Target

HISTORY_SCHEMA = "favmigrate"

_CREATE_HISTORY = sql.SQL(
    """
    CREATE TABLE IF NOT EXISTS {schema}.history (
        id            bigserial PRIMARY KEY,
        run_id        uuid NOT NULL,
        command       text NOT NULL,
        migration_id  text NOT NULL,
        target_schema text NOT NULL,
        step          text NOT NULL,
        checksum      text,
        outcome       text NOT NULL,
        detail        text NOT NULL DEFAULT '',
        started_at    timestamptz NOT NULL,
        finished_at   timestamptz NOT NULL DEFAULT now(),
        duration_ms   bigint NOT NULL,
        db_user       text NOT NULL DEFAULT current_user,
        tool_version  text NOT NULL
    );
    CREATE INDEX IF NOT EXISTS history_migration_step_idx
        ON {schema}.history (migration_id, target_schema, step, id)
    """
).format(schema=sql.Identifier(HISTORY_SCHEMA))


class ToolTable(StrEnum):
    """What the current role can do with one table of the favmigrate schema."""

    MISSING = "missing"
    READABLE = "readable"
    UNREADABLE = "unreadable"  # exists, but no USAGE on the schema or no SELECT on the table


_TOOL_TABLE = sql.SQL(
    """
    SELECT has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT') AS readable
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %s AND c.relname = %s
    """
)


def tool_table(conn: psycopg.Connection[Any], name: str) -> ToolTable:
    """Whether favmigrate.``name`` exists and the current role may read it, asked of the catalogs only
    (to_regclass raises for a schema the role has no USAGE on). Read-only."""
    found = rows(conn, _TOOL_TABLE, (HISTORY_SCHEMA, name))
    if not found:
        return ToolTable.MISSING
    return ToolTable.READABLE if found[0]["readable"] else ToolTable.UNREADABLE


# Every privilege on the schema and its tables and sequences held by a role other than the owner: PUBLIC
# (grantee 0) or what ALTER DEFAULT PRIVILEGES granted when they were created.
_FOREIGN_GRANTS = sql.SQL(
    """
    SELECT DISTINCT g.kind, g.name, r.rolname AS grantee  -- rolname NULL: PUBLIC
    FROM (SELECT 'SCHEMA' AS kind, NULL::name AS name, a.grantee
          FROM pg_namespace n, aclexplode(n.nspacl) a
          WHERE n.nspname = %(schema)s AND a.grantee <> n.nspowner
          UNION ALL
          SELECT CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, c.relname, a.grantee
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
          WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p', 'S', 'v', 'm') AND a.grantee <> c.relowner) g
    LEFT JOIN pg_roles r ON r.oid = g.grantee
    """
)


def create_tool_tables(conn: psycopg.Connection[Any], ddl: sql.Composed) -> None:
    """Create the favmigrate schema if missing and run ``ddl`` (CREATE TABLE IF NOT EXISTS ...) in one
    transaction, then revoke every privilege on the schema and its tables from every role but their owner.

    The tables record other commands' SQL, values and rejects: a role granted SELECT on all new tables by
    default privileges (Supabase's anon) must not read them. Writes. Raises psycopg errors (privileges).
    """
    # CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema is there
    schema_exists = scalar(conn, sql.SQL("SELECT to_regnamespace(%s) IS NOT NULL"), (HISTORY_SCHEMA,))
    with conn.transaction():
        if not schema_exists:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(HISTORY_SCHEMA)))
        conn.execute(ddl)
        for grant in rows(conn, _FOREIGN_GRANTS, {"schema": HISTORY_SCHEMA}):
            target = (sql.Identifier(HISTORY_SCHEMA) if grant["name"] is None
                      else sql.Identifier(HISTORY_SCHEMA, grant["name"]))
            grantee = sql.SQL("PUBLIC") if grant["grantee"] is None else sql.Identifier(grant["grantee"])
            conn.execute(sql.SQL("REVOKE ALL ON {kind} {target} FROM {grantee}").format(
                kind=sql.SQL(grant["kind"]), target=target, grantee=grantee))


def ensure_history(conn: psycopg.Connection[Any]) -> None:
    """Create the favmigrate schema and history table if missing, closed to other roles. Writes."""
    if tool_table(conn, "history") is ToolTable.MISSING:
        create_tool_tables(conn, _CREATE_HISTORY)


def new_run_id() -> uuid.UUID:
    return uuid.uuid4()


def record_step(
    conn: psycopg.Connection[Any], target: Target, *, run_id: uuid.UUID, command: str, result: StepResult,
    checksum: str | None,
) -> None:
    """Append one step's outcome to the history. Writes."""
    conn.execute(
        sql.SQL(
            """
            INSERT INTO {schema}.history (run_id, command, migration_id, target_schema, step, checksum, outcome,
                                          detail, started_at, duration_ms, tool_version)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now() - make_interval(secs => %s), %s, %s)
            """
        ).format(schema=sql.Identifier(HISTORY_SCHEMA)),
        (run_id, command, target.spec.id, target.schema, result.step, checksum, result.outcome.value, result.detail,
         result.duration_s, int(result.duration_s * 1000), __version__),
    )


def applied_checksums(conn: psycopg.Connection[Any], target: Target) -> dict[str, str]:
    """The checksum recorded when each step was last applied (since the last rollback). Read-only."""
    if tool_table(conn, "history") is ToolTable.MISSING:
        return {}
    found = rows(
        conn,
        sql.SQL(
            """
            SELECT DISTINCT ON (step) step, checksum
            FROM {schema}.history
            WHERE migration_id = %s AND target_schema = %s AND outcome = 'applied' AND command = 'apply'
              AND id > coalesce((SELECT max(id) FROM {schema}.history
                                 WHERE migration_id = %s AND target_schema = %s AND command = 'rollback'
                                   AND outcome = 'applied'), 0)
            ORDER BY step, id DESC
            """
        ).format(schema=sql.Identifier(HISTORY_SCHEMA)),
        (target.spec.id, target.schema, target.spec.id, target.schema),
    )
    return {r["step"]: r["checksum"] for r in found if r["checksum"]}
