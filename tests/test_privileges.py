"""Privileges: read commands work for a read-only role; the tool's own schema is closed to every other role."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from clihelp import cli
from favmigrate.db import DEADLOCK_CHECK_AFTER_MS, SessionLimits


@pytest.fixture
def make_role(db_dsn: str) -> Iterator[Any]:
    """Creates roles for the test (LOGIN, trust auth) and drops them, and what they own, afterwards."""
    made: list[str] = []

    def make(prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        made.append(name)
        return name

    yield make
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def as_role(dsn: str, role: str) -> str:
    return f"{dsn} user={role}"


def test_default_privileges_do_not_open_the_tools_schema(db_dsn, make_role):
    anon = make_role("anon")
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        for grant in ("GRANT SELECT ON TABLES TO {}", "GRANT SELECT ON TABLES TO PUBLIC",
                      "GRANT ALL ON SEQUENCES TO {}", "GRANT USAGE ON SCHEMAS TO {}"):
            conn.execute(sql.SQL("ALTER DEFAULT PRIVILEGES " + grant).format(sql.Identifier(anon)))
    assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0
    assert cli("backfill", "--dsn", db_dsn, "-q").exit_code == 0
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.created_later (id int)")
        opened = conn.execute("SELECT has_table_privilege(%s, 'public.created_later', 'SELECT')", (anon,)).fetchone()
        assert opened == (True,), "the default privileges are in force for other tables"
        tool = conn.execute(
            "SELECT c.relname, has_table_privilege(%s, c.oid, 'SELECT'), has_table_privilege('public', c.oid, "
            "'SELECT'), (SELECT count(*) FROM aclexplode(c.relacl) a WHERE a.grantee <> c.relowner) "
            "FROM pg_class c WHERE c.relnamespace = 'favmigrate'::regnamespace AND c.relkind IN ('r', 'S')",
            (anon,)).fetchall()
        assert {name for name, *_ in tool} >= {"history", "backfill_checkpoint", "backfill_rejects"}
        assert all(row[1:] == (False, False, 0) for row in tool), tool
        schema = conn.execute("SELECT has_schema_privilege(%s, 'favmigrate', 'USAGE'), "
                              "has_schema_privilege('public', 'favmigrate', 'USAGE')", (anon,)).fetchone()
        assert schema == (False, False)
    with psycopg.connect(as_role(db_dsn, anon)) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM favmigrate.history")


def read_only_role(db_dsn: str, make_role: Any) -> str:
    """A role with USAGE on the application's schema and SELECT on its tables, after apply and backfill."""
    assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0
    assert cli("backfill", "--dsn", db_dsn, "-q").exit_code == 0
    reader = make_role("reader")
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(reader)))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(reader)))
    return reader


def without(report: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    return [c for c in report["checks"] if not c["id"].startswith(prefix)]


def test_a_read_only_role_runs_the_read_commands_and_is_told_what_it_skipped(db_dsn, make_role):
    reader = read_only_role(db_dsn, make_role)
    dsn = as_role(db_dsn, reader)
    owners = cli("verify", "--dsn", db_dsn, "--format", "json").json()
    verified = cli("verify", "--dsn", dsn, "--format", "json")
    assert verified.exit_code == 0, verified.stderr
    (warning,) = verified.json()["warnings"]
    assert f"row level security filters what role {reader} sees of public.session_requests" in warning
    assert warning in verified.stderr.replace("\n", " ")
    assert not [c for c in verified.json()["checks"] if c["id"].startswith("data:")], "no false pass from RLS"
    assert verified.json()["checks"] == without(owners, "data:"), "the catalog findings are the owner's"
    planned = cli("plan", "--dsn", dsn, "--format", "json")
    assert planned.exit_code == 0 and planned.json()["backfill_pending"] is None, planned.stderr
    assert "row level security" in planned.stderr
    for command in ("explain", "report"):
        result = cli(command, "--dsn", dsn, "--format", "json")
        assert result.exit_code == 0, (command, result.stderr)
    history = cli("history", "--dsn", dsn)
    assert history.exit_code == 2
    assert f"error: role {reader} may not read favmigrate.history" in history.stderr


def test_without_row_security_a_read_only_role_counts_and_says_what_it_could_not_read(db_dsn, make_role):
    reader = read_only_role(db_dsn, make_role)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE session_requests DISABLE ROW LEVEL SECURITY")
    owners = cli("verify", "--dsn", db_dsn, "--format", "json").json()
    verified = cli("verify", "--dsn", as_role(db_dsn, reader), "--format", "json")
    assert verified.exit_code == 0, verified.stderr
    skipped = (f"role {reader} may not read favmigrate.backfill_rejects: rows whose legacy values backfill "
               "rejected are counted as waiting for backfill")
    assert verified.json()["warnings"] == [skipped]
    pending = "data:metadata:backfill-pending"
    assert without(verified.json(), pending) == without(owners, pending)
    (mine,) = [c for c in verified.json()["checks"] if c["id"] == pending]
    (theirs,) = [c for c in owners["checks"] if c["id"] == pending]
    assert mine["actual"] == theirs["actual"].split(" ")[0], "the rejected rows are still counted as pending"


def test_a_role_that_may_not_set_deadlock_timeout_keeps_the_servers(db_dsn, make_role):
    """Commands that change the database shorten the deadlock check where the role may; elsewhere they go on."""
    with psycopg.connect(db_dsn, autocommit=True) as owner, \
            psycopg.connect(as_role(db_dsn, make_role("app")), autocommit=True) as plain:
        server_default = plain.execute("SHOW deadlock_timeout").fetchone()[0]
        for conn in (owner, plain):
            SessionLimits().set_on(conn)
        assert owner.execute("SELECT setting::integer FROM pg_settings WHERE name = 'deadlock_timeout'"
                             ).fetchone()[0] == DEADLOCK_CHECK_AFTER_MS
        assert plain.execute("SHOW deadlock_timeout").fetchone()[0] == server_default == "1s"
