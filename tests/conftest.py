"""Shared fixtures: one disposable PostgreSQL per test session, a sample template, fresh databases.

The server backend is ``$FAVMIGRATE_PG`` (docker, local or embedded) or the first available one.
A server that cannot start fails the run; database tests are never skipped.

Every test that uses a database fixture is marked ``db``, so ``pytest -m "not db"`` runs none.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from favmigrate.errors import FavmigrateError
from favmigrate.sample import SampleSummary, load_sample
from favmigrate.sandbox import Server, disposable_postgres

TEMPLATE_DB = "favmigrate_template"
TEMPLATE_ROWS = 2000
# Where the version tests record each outcome (one JSON object a line) for the README's support table.
ENV_SUPPORT_RESULTS = "FAVMIGRATE_SUPPORT_RESULTS"
# The fixtures below that need a server; a test using any of them (even indirectly) is marked db.
DATABASE_FIXTURES = frozenset({"pg_server", "server_version_num", "admin_conn", "template_summary",
                               "template_rows", "db_dsn", "empty_db_dsn", "conn"})


def pytest_configure(config: pytest.Config) -> None:
    """Let Ctrl-C interrupt the run even when it was started with SIGINT ignored.

    A shell script starts background jobs with SIGINT ignored; an ignored signal stays ignored
    in every child, so a test sending SIGINT to a command it started would see no effect, and a
    Ctrl-C would leave the session's server running. Children of a process with a handler start
    with the default disposition instead.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a database fixture ``db``; note the version a version test asks for."""
    for item in items:
        if DATABASE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "version_server" in callspec.params:
            item.user_properties.append(("postgresql", callspec.params["version_server"]))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Append a version test's outcome to ``$FAVMIGRATE_SUPPORT_RESULTS``, when that is set.

    The version is the last ``postgresql`` user property: the one asked for, then the server's.
    """
    path = os.environ.get(ENV_SUPPORT_RESULTS)
    versions = [str(value) for key, value in report.user_properties if key == "postgresql"]
    if not path or not versions or versions[-1] == "session" or not (report.when == "call" or report.failed):
        return
    with open(path, "a", encoding="utf-8") as results:
        results.write(json.dumps({"postgresql": versions[-1], "test": report.nodeid,
                                  "outcome": report.outcome}) + "\n")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    """The session's disposable PostgreSQL server (stopped and deleted after the run)."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(disposable_postgres())
        except FavmigrateError as exc:
            hint = f" ({exc.hint})" if exc.hint else ""
            pytest.fail(f"could not start a PostgreSQL server for the tests: {exc.message}{hint}",
                        pytrace=False)
        yield server


@pytest.fixture(scope="session")
def server_version_num(pg_server: Server) -> int:
    """``server_version_num`` of the session's server, e.g. 150018."""
    return pg_server.version_num


@pytest.fixture(scope="session")
def admin_conn(pg_server: Server) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit superuser connection to the ``postgres`` database, for creating databases."""
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def template_summary(pg_server: Server, admin_conn: psycopg.Connection[Any]) -> SampleSummary:
    """Create ``favmigrate_template`` with ``load_sample(rows=2000)`` once; return its summary."""
    with psycopg.connect(pg_server.create_database(TEMPLATE_DB), autocommit=True) as conn:
        summary = load_sample(conn, rows=TEMPLATE_ROWS)
    # Cloning needs a template nobody is connected to; refusing connections keeps it that way.
    admin_conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false")
                       .format(sql.Identifier(TEMPLATE_DB)))
    return summary


@pytest.fixture
def template_rows(template_summary: SampleSummary) -> int:
    """How many session_requests a database cloned from the template holds."""
    return template_summary.session_requests


@contextlib.contextmanager
def fresh_database(pg_server: Server, template: str | None) -> Iterator[str]:
    """Create a database (a copy of ``template``, else empty), yield its DSN, drop it after."""
    name = f"test_{uuid.uuid4().hex}"
    dsn = pg_server.create_database(name, template=template)
    try:
        yield dsn
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def db_dsn(pg_server: Server, template_summary: SampleSummary) -> Iterator[str]:
    """DSN of a fresh database cloned from the sample template (dropped after the test)."""
    with fresh_database(pg_server, TEMPLATE_DB) as dsn:
        yield dsn


@pytest.fixture
def empty_db_dsn(pg_server: Server) -> Iterator[str]:
    """DSN of a fresh empty database (dropped after the test)."""
    with fresh_database(pg_server, None) as dsn:
        yield dsn


@pytest.fixture
def conn(db_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to ``db_dsn``."""
    with psycopg.connect(db_dsn, autocommit=True) as connection:
        yield connection
