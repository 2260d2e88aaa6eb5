"""The tool's own record in the `favmigrate` schema: every run and step of apply and rollback."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg import sql

from favmigrate import __version__
from favmigrate.db import rows, scalar
from favmigrate.results import StepResult
from favmigrate.spec import Target

HISTORY_SCHEMA = "favmigrate"

_CREATE = sql.SQL(
    """
    CREATE SCHEMA IF NOT EXISTS {schema};
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


def ensure_history(conn: psycopg.Connection[Any]) -> None:
    """Create the favmigrate schema and history table if missing. Writes."""
    exists = scalar(conn, sql.SQL("SELECT to_regclass(%s) IS NOT NULL"), (f"{HISTORY_SCHEMA}.history",))
    if not exists:
        with conn.transaction():
            conn.execute(_CREATE)


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
    if not scalar(conn, sql.SQL("SELECT to_regclass(%s) IS NOT NULL"), (f"{HISTORY_SCHEMA}.history",)):
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


def read_history(conn: psycopg.Connection[Any], target: Target, limit: int = 50) -> list[dict[str, Any]]:
    """The latest history rows for this migration and schema. Read-only."""
    if not scalar(conn, sql.SQL("SELECT to_regclass(%s) IS NOT NULL"), (f"{HISTORY_SCHEMA}.history",)):
        return []
    return rows(
        conn,
        sql.SQL(
            "SELECT * FROM {schema}.history WHERE migration_id = %s AND target_schema = %s ORDER BY id DESC LIMIT %s"
        ).format(schema=sql.Identifier(HISTORY_SCHEMA)),
        (target.spec.id, target.schema, limit),
    )
