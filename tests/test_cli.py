"""The CLI contract: help on every command, exit codes, redacted connection errors, pooler refusal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from clihelp import cli
from favmigrate.cli import app

SECRET = "s3cr3t-Pa55word"


def test_every_command_has_help_with_an_example():
    import typer.main

    group = typer.main.get_command(app)
    assert set(group.commands) >= {"plan", "apply", "verify", "sandbox"}
    for name, command in group.commands.items():
        assert command.help and "Example:" in command.help, f"{name} lacks help with an example"
        result = cli(name, "--help")
        assert result.exit_code == 0 and "Usage" in result.stdout


def test_version_and_help():
    from favmigrate import __version__

    assert cli("--version").stdout.strip() == f"favmigrate {__version__}"
    help_text = cli("--help").stdout
    assert "Exit codes: 0 ok; 1" in help_text


def test_help_does_not_import_psycopg():
    code = ("import sys; sys.argv = ['favmigrate', '--help']\n"
            "from favmigrate.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('psycopg' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize("dsn", [
    f"postgresql://app:{SECRET}@127.0.0.1:1/app",
    f"host=127.0.0.1 port=1 user=app password={SECRET} dbname=app",
    f"postgresql://app:{SECRET}@unreachable.invalid:5432/app?connect_timeout=2",
])
def test_unreachable_host_is_one_clean_redacted_line(dsn):
    for command in ("verify", "apply", "plan"):
        result = cli(command, "--dsn", dsn)
        assert result.exit_code == 2
        assert SECRET not in result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.startswith("error: cannot reach PostgreSQL")
        assert len(result.stderr.strip().splitlines()) <= 2


def test_malformed_dsn_and_env_dsn_are_redacted():
    result = cli("verify", "--dsn", f"host=x password={SECRET} bogus_option=1")
    assert result.exit_code == 2 and "malformed DSN" in result.stderr and SECRET not in result.stderr
    from_env = cli("verify", env={"FAVMIGRATE_DSN": f"postgresql://u:{SECRET}@127.0.0.1:1/x"})
    assert from_env.exit_code == 2 and "127.0.0.1:1" in from_env.stderr and SECRET not in from_env.stderr
    from_url = cli("verify", env={"DATABASE_URL": f"postgresql://u:{SECRET}@127.0.0.1:2/x"})
    assert from_url.exit_code == 2 and "127.0.0.1:2" in from_url.stderr


def test_redact_dsn_never_shows_the_password():
    from favmigrate.db import redact_dsn, scrub

    for dsn in (f"postgresql://u:{SECRET}@h:5432/d", f"host=h password={SECRET}", f"password='{SECRET}' host=h"):
        assert SECRET not in redact_dsn(dsn)
        assert SECRET not in scrub(f"failed for {dsn}")


@pytest.mark.parametrize("dsn", [
    f"postgresql://postgres.ref:{SECRET}@aws-0-eu-central-1.pooler.supabase.com:6543/postgres",
    f"postgresql://postgres:{SECRET}@127.0.0.1:6543/postgres",
])
def test_transaction_pooler_is_refused_for_changes(dsn):
    result = cli("apply", "--dsn", dsn)
    assert result.exit_code == 2
    assert "transaction pooler" in result.stderr and "5432" in result.stderr
    assert SECRET not in result.stderr
    read_only = cli("verify", "--dsn", dsn.replace("pooler.supabase.com", "invalid") + "?connect_timeout=1")
    assert "warning" in read_only.stderr and "pooler" in read_only.stderr


@pytest.mark.db
def test_wrong_password_and_missing_database(pg_server):
    """Password auth is switched on for one role in pg_hba.conf so that a wrong password is really refused."""
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS pw_user")
        conn.execute(f"CREATE ROLE pw_user LOGIN PASSWORD 'right-{SECRET}'")
        hba = conn.execute("SHOW hba_file").fetchone()[0]
        original = Path(hba).read_text()
        Path(hba).write_text("local all pw_user scram-sha-256\nhost all pw_user all scram-sha-256\n" + original)
        conn.execute("SELECT pg_reload_conf()")
        try:
            params = psycopg.conninfo.conninfo_to_dict(pg_server.dsn)
            params.update(user="pw_user", password=SECRET)
            result = cli("verify", "--dsn", psycopg.conninfo.make_conninfo(**params))
            assert result.exit_code == 2
            assert "cannot log in" in result.stderr and "pw_user" in result.stderr
            assert SECRET not in result.stderr + result.stdout
        finally:
            Path(hba).write_text(original)
            conn.execute("SELECT pg_reload_conf()")
            conn.execute("DROP ROLE pw_user")
    missing = cli("verify", "--dsn", pg_server.dsn_for("no_such_database"))
    assert missing.exit_code == 2 and 'database "no_such_database" does not exist' in missing.stderr


@pytest.mark.db
def test_debug_shows_a_traceback_and_keeps_the_exit_code(empty_db_dsn):
    quiet = cli("apply", "--dsn", empty_db_dsn)
    assert quiet.exit_code == 2 and "Traceback" not in quiet.stderr
    loud = subprocess.run([sys.executable, "-m", "favmigrate.cli", "--debug", "apply", "--dsn", empty_db_dsn],
                          capture_output=True, text=True)
    assert loud.returncode == 2 and "Traceback" in loud.stderr and "PreflightFailed" in loud.stderr
    assert loud.stderr.rstrip().splitlines()[-2].startswith("error: tables public.session_requests")


@pytest.mark.parametrize("command", ["plan", "apply", "verify", "backfill", "explain", "report", "rollback"])
@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_is_accepted_on_every_command_and_never_changes_the_exit_code(command, where):
    dsn = f"postgresql://app:{SECRET}@127.0.0.1:1/app"
    args = ["--debug", command, "--dsn", dsn] if where == "before" else [command, "--dsn", dsn, "--debug"]
    result = cli(*args)
    assert result.exit_code == 2, result.stderr
    assert "Traceback" in result.stderr and "ConnectionFailed" in result.stderr
    assert "error: cannot reach PostgreSQL at 127.0.0.1:1" in result.stderr
    assert "re-run with --debug" not in result.stderr
    assert SECRET not in result.stderr + result.stdout
