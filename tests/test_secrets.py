"""Secrets: a password never reaches the terminal, and nothing else is hidden in its name."""

from __future__ import annotations

import pytest

from clihelp import cli
from favmigrate.db import redact_dsn, refuse_ambiguous_url, scrub
from favmigrate.errors import ConnectionFailed

PASSWORD_PARTS = ("Zq7", "Secret")


@pytest.mark.parametrize("dsn", [
    "postgresql://u:Zq7@Secret@127.0.0.1:1/db",
    "postgres://u:Zq7@Secret@127.0.0.1/db?connect_timeout=1",
    "postgresql://u:Zq7/Secret@127.0.0.1:1/db",
    "postgresql://u@Zq7:Secret@127.0.0.1:1/db",
])
@pytest.mark.parametrize("command", ["verify", "apply"])
def test_an_ambiguous_url_is_refused_before_connecting_and_not_quoted(dsn, command):
    result = cli(command, "--dsn", dsn)
    assert result.exit_code == 2
    assert "error: the connection URL is ambiguous" in result.stderr and "%40" in result.stderr
    assert "cannot reach" not in result.stderr, "it must not have tried to connect"
    for part in PASSWORD_PARTS:
        assert part not in result.stderr + result.stdout


def test_an_ambiguous_url_from_the_environment_is_refused_too():
    result = cli("plan", env={"DATABASE_URL": "postgresql://u:Zq7@Secret@127.0.0.1:1/db"})
    assert result.exit_code == 2 and "ambiguous" in result.stderr
    assert not any(part in result.stderr for part in PASSWORD_PARTS)


@pytest.mark.parametrize("dsn", [
    "postgresql://u:Zq7%40Secret@127.0.0.1:1/db",
    "postgresql://u:Zq7?Secret@127.0.0.1:1/db",  # libpq keeps a '?' inside the user info
    "postgresql://127.0.0.1:1/db?user=ops@example.com",
    "postgresql://u@127.0.0.1:1/db",
    "host=127.0.0.1 port=1 user=u password=Zq7@Secret",
])
def test_unambiguous_dsns_are_used_as_libpq_reads_them(dsn):
    refuse_ambiguous_url(dsn)
    result = cli("verify", "--dsn", dsn)
    assert result.exit_code == 2 and "error: cannot reach PostgreSQL at 127.0.0.1:1" in result.stderr
    assert not any(part in result.stderr for part in PASSWORD_PARTS)


def test_refusal_names_no_part_of_the_url():
    with pytest.raises(ConnectionFailed) as caught:
        refuse_ambiguous_url("postgresql://admin:Zq7@Secret@db.internal:5432/app")
    text = f"{caught.value.message} {caught.value.hint}"
    assert not any(part in text for part in ("admin", "Zq7", "Secret", "db.internal", "app"))


def test_a_malformed_dsn_quotes_no_fragment_of_it():
    result = cli("verify", "--dsn", "host=x password=Zq7 Secret")
    assert result.exit_code == 2 and "malformed DSN" in result.stderr
    assert not any(part in result.stderr for part in PASSWORD_PARTS)


def test_only_the_password_places_are_redacted():
    assert scrub('password authentication failed for user "sec"') == 'password authentication failed for user "sec"'
    assert scrub("host=h user=sec password=sec dbname=sec") == "host=h user=sec password=*** dbname=sec"
    assert scrub("password='a b\\' c' host=h") == "password=*** host=h"
    assert scrub("postgresql://sec:sec@h/sec") == "postgresql://sec:***@h/sec"
    assert scrub("postgresql://u:Zq7@Secret@h/d") == "postgresql://u:***@h/d"
    assert "sec" not in redact_dsn("host=h user=u password=sec").replace("user=u", "")


@pytest.mark.db
def test_a_user_spelled_like_pgpassword_stays_readable(pg_server):
    dsn = pg_server.dsn_for("postgres") + " user=sec"
    result = cli("verify", "--dsn", dsn, env={"PGPASSWORD": "sec"})
    assert result.exit_code == 2
    assert 'role "sec" does not exist' in result.stderr and "***" not in result.stderr
