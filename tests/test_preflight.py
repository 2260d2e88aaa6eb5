"""Preflights every command shares: refused before anything is read from or written to the tables (exit 2)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from clihelp import cli
from favmigrate.sandbox import Server

COMMANDS = [
    ("plan",), ("apply",), ("apply", "--dry-run"), ("verify",), ("verify", "--absent"), ("verify", "--no-data"),
    ("backfill",), ("backfill", "--dry-run"), ("explain",), ("report",), ("rollback", "--yes"),
    ("rollback", "--dry-run"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_missing_tables_read_the_same_for_every_command(empty_db_dsn, command):
    result = cli(*command, "--dsn", empty_db_dsn, "--schema", "garage")
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "error: tables garage.session_requests and garage.mechanics do not exist; nothing was changed" \
        in result.stderr
    assert "hint: check --schema and the database named in the DSN" in result.stderr
    assert result.stdout == ""


WRITING_COMMANDS = [("apply",), ("backfill",), ("rollback", "--yes")]


@pytest.mark.parametrize("command", WRITING_COMMANDS, ids=" ".join)
def test_a_read_only_database_refuses_every_writing_command_before_anything(db_dsn, command):
    import psycopg
    from psycopg import sql

    if command[0] != "apply":
        assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        history_before = conn.execute("SELECT to_regclass('favmigrate.history') IS NOT NULL").fetchone()
        conn.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on")
                     .format(sql.Identifier(conn.info.dbname)))
    result = cli(*command, "--dsn", db_dsn)
    assert result.exit_code == 2, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith("error: the database is read-only (default_transaction_read_only = on")
    assert "re-run" not in result.stderr and "ReadOnlySqlTransaction" not in result.stderr
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('favmigrate.history') IS NOT NULL").fetchone() == history_before
    read = cli("verify", "--dsn", db_dsn, "--no-data")
    assert read.exit_code in (0, 1), "read commands still run"


def _run_as(uid: int, gid: int, *args: str | Path) -> None:
    as_user: dict[str, Any] = {"user": uid, "group": gid, "extra_groups": []} if os.geteuid() == 0 else {}
    subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, timeout=120,
                   env={**os.environ, "LC_ALL": "C"}, stdin=subprocess.DEVNULL, **as_user)


@pytest.fixture
def hot_standby_dsn(pg_server: Server) -> Iterator[str]:
    """A second server, started in standby mode (standby.signal) from a fresh cluster, with the same binaries
    and OS user as the session's server: it accepts read-only connections and pg_is_in_recovery() is true."""
    assert pg_server.postmaster_pid, "the standby is built with the session server's own binaries"
    proc = Path(f"/proc/{pg_server.postmaster_pid}")
    bindir, owner = Path(os.readlink(proc / "exe")).parent, proc.stat()
    workdir = Path(tempfile.mkdtemp(prefix="favmigrate-standby-", dir="/tmp"))
    datadir, sockdir = workdir / "data", workdir / "sock"
    sockdir.mkdir()
    for path in (workdir, sockdir):
        os.chown(path, owner.st_uid, owner.st_gid)
    try:
        _run_as(owner.st_uid, owner.st_gid, bindir / "initdb", "-D", datadir, "--auth=trust", "-U", "postgres",
                "--no-sync")
        _run_as(owner.st_uid, owner.st_gid, "touch", datadir / "standby.signal")
        _run_as(owner.st_uid, owner.st_gid, bindir / "pg_ctl", "-D", datadir, "-l", workdir / "log", "-w",
                "-t", "60", "-o", f"-k {sockdir} -c listen_addresses=''", "start")
        yield make_conninfo(host=str(sockdir), port="5432", user="postgres", dbname="postgres")
    finally:
        if (datadir / "postmaster.pid").exists():
            _run_as(owner.st_uid, owner.st_gid, bindir / "pg_ctl", "-D", datadir, "-m", "immediate", "-w", "stop")
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_hot_standby_refuses_every_writing_command_before_anything(hot_standby_dsn):
    with psycopg.connect(hot_standby_dsn) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    for command in WRITING_COMMANDS:
        result = cli(*command, "--dsn", hot_standby_dsn)
        assert result.exit_code == 2, result.stderr
        (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert error.startswith("error: the server is a hot standby (in recovery)"), error
        assert "hint: connect to the primary" in result.stderr
