"""The change log rollback keeps while it runs: a trigger recording the ids of the rows the application
writes (and, for an UPDATE, the columns' earlier values) into an unlogged table in the tool's schema.

Rollback creates it before its first pass and drops it with the columns. A rollback that stopped without
removing it (its table lock never granted, a crash) leaves it behind: the catalog snapshot tells (verify
fails ``trigger:favmigrate_rollback_changes:absent``), the next rollback starts by dropping it, and apply
removes it as its own step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from favmigrate.db import advisory_key
from favmigrate.spec import ColumnSpec, ObjectId, ObjectKind, Target, as_text
from favmigrate.state import HISTORY_SCHEMA

# The trigger recording the rows the application writes while rollback runs.
CHANGE_LOG_TRIGGER = "favmigrate_rollback_changes"
CHANGE_LOG = ObjectId(ObjectKind.TRIGGER, CHANGE_LOG_TRIGGER)
# Set on rollback's own connection while the trigger exists: its writes into metadata are not logged.
OWN_WRITES_SETTING = "favmigrate.rollback_writing_back"


def mark_own_writes(conn: psycopg.Connection[Any]) -> None:
    """From now on the change log's trigger leaves this connection's writes out."""
    conn.execute(sql.SQL("SELECT set_config({}, 'on', false)").format(sql.Literal(OWN_WRITES_SETTING)))


def change_log_name(target: Target) -> str:
    """The name of the change log table (and of its trigger function) in the tool's schema; one per target."""
    return f"rollback_changes_{advisory_key(target.lock_name) & 0xFFFFFFFF:08x}"


def change_log_table(target: Target) -> sql.Identifier:
    """The log of rows written while rollback runs, in the tool's schema; one per target (and its function)."""
    return sql.Identifier(HISTORY_SCHEMA, change_log_name(target))


def track_statements(target: Target, columns: Sequence[ColumnSpec]) -> list[sql.Composed]:
    """Create the change log, its trigger function and the trigger, in this order (one transaction).

    The log holds the row's key and, for an UPDATE, the columns' values before it (a later pass tells
    metadata still holding such an earlier value, which an earlier pass wrote, from a real conflict). It is
    UNLOGGED: it only lives while rollback runs; a crash empties it, and the re-run starts with a full pass
    anyway. The function is SECURITY DEFINER so the application's role needs no privilege on the tool's
    schema; every INSERT and UPDATE fires it but rollback's own metadata writes (its connection sets
    OWN_WRITES_SETTING).
    """
    log = change_log_table(target)
    pk = sql.Identifier(target.spec.primary_key)
    names = [sql.Identifier(c.name) for c in columns]
    body = sql.SQL(
        "BEGIN IF TG_OP = 'UPDATE' THEN INSERT INTO {log} (row_id, {names}) VALUES (NEW.{pk}, {old}); "
        "ELSE INSERT INTO {log} (row_id) VALUES (NEW.{pk}); END IF; RETURN NULL; END"
    ).format(log=log, pk=pk, names=sql.SQL(", ").join(names),
             old=sql.SQL(", ").join(sql.SQL("OLD.{}").format(n) for n in names))
    return [
        sql.SQL("CREATE UNLOGGED TABLE {log} AS SELECT {pk} AS row_id, {names} FROM {table} WITH NO DATA").format(
            log=log, pk=pk, names=sql.SQL(", ").join(names), table=target.table),
        sql.SQL("CREATE FUNCTION {log}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
                "SET search_path = pg_catalog AS {body}").format(log=log, body=sql.Literal(as_text(body))),
        # a trigger fires without EXECUTE, and nobody else has a reason to call it
        sql.SQL("REVOKE ALL ON FUNCTION {}() FROM PUBLIC").format(log),
        # every write but rollback's own: one that only moves a row (a status update) can move it behind the
        # page-range walk of the first pass
        sql.SQL("CREATE TRIGGER {trigger} AFTER INSERT OR UPDATE ON {table} FOR EACH ROW "
                "WHEN (current_setting({setting}, true) IS DISTINCT FROM 'on') EXECUTE FUNCTION {log}()").format(
            trigger=sql.Identifier(CHANGE_LOG_TRIGGER), table=target.table, log=log,
            setting=sql.Literal(OWN_WRITES_SETTING)),
    ]


def untrack_statements(target: Target) -> list[sql.Composed]:
    """Drop the trigger, its function and the change log (what a stopped or crashed run left too)."""
    log = change_log_table(target)
    return [sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(CHANGE_LOG_TRIGGER), target.table),
            sql.SQL("DROP FUNCTION IF EXISTS {}()").format(log),
            sql.SQL("DROP TABLE IF EXISTS {}").format(log)]
