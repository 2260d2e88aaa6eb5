"""Connections, session settings, the run lock, and running statements under lock-timeout retries.

Every connection is autocommit with explicit ``conn.transaction()`` blocks, carries
``application_name=favmigrate`` and a connect timeout, and never lets a password reach a message.
"""

from __future__ import annotations

import hashlib
import math
import os
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from favmigrate.errors import ConnectionFailed, Interrupted, LockHeld, PoolerRefused, ReadOnlyServer

APPLICATION_NAME = "favmigrate"
DEFAULT_CONNECT_TIMEOUT_S = 10
SUPABASE_POOLER_HOST = "pooler.supabase.com"
TRANSACTION_POOLER_PORT = "6543"

Warn = Callable[[str], None]
T = TypeVar("T")


def _ignore(_: str) -> None:
    return None


# ---------------------------------------------------------------- DSN handling


def resolve_dsn(dsn: str | None) -> str:
    """The DSN to use: the option, else FAVMIGRATE_DSN, else DATABASE_URL, else "" (libpq PG* variables)."""
    for candidate in (dsn, os.environ.get("FAVMIGRATE_DSN"), os.environ.get("DATABASE_URL")):
        if candidate:
            return candidate
    return ""


_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)\S*@")  # greedy: an unencoded '@' in the password stays hidden
_KEYED_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_URL_SCHEMES = ("postgresql://", "postgres://")


def scrub(text: str) -> str:
    """Hide passwords where connection strings carry them: a URL's user info and ``password=...``.

    Only those places: a user or database that happens to be spelled like the password stays readable.
    """
    return _KEYED_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


def redact_dsn(dsn: str) -> str:
    """A DSN fit to print: every parameter but the password, which becomes ***."""
    if not dsn:
        return "(libpq defaults from PG* environment variables)"
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return scrub(dsn)
    if "password" in params:
        params["password"] = "***"
    return make_conninfo("", **params)


def refuse_ambiguous_url(dsn: str) -> None:
    """Refuse a connection URL that libpq would split where the user did not mean to (ConnectionFailed).

    libpq ends the user info at the first '@' that comes before any '/', so an unencoded '@' or '/' in a
    password turns the rest of it into a host name (looked up in DNS) or a database name. Such a URL
    leaves an '@' after the user info; it is refused before connecting, quoting no part of it.
    """
    scheme = next((s for s in _URL_SCHEMES if dsn[:len(s)].lower() == s), None)
    if scheme is None:
        return
    rest = dsn[len(scheme):]
    at, slash = rest.find("@"), rest.find("/")
    if at != -1 and (slash == -1 or at < slash):
        rest = rest[at + 1:]
    if "@" in rest.split("?", 1)[0]:
        raise ConnectionFailed(
            "the connection URL is ambiguous: an '@' follows its user info, so libpq would read part of the user "
            "name or password as the host or database; it was not used",
            hint="percent-encode '@' as %40, '/' as %2F and ':' as %3A in the user name and password, or use "
            "key=value form (password='...')")


_UNQUOTED_PARSE_ERROR = re.compile(r'invalid (connection option|sslmode value|integer value) "[A-Za-z_]+"')


def dsn_params(dsn: str) -> dict[str, str]:
    """The parameters libpq would use, including those taken from PG* environment variables.

    Raises ConnectionFailed for a DSN libpq cannot parse or an ambiguous URL, quoting no value from it.
    """
    refuse_ambiguous_url(dsn)
    try:
        params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    except psycopg.Error as exc:
        # libpq quotes the fragment it stopped at, which may be part of a password: keep only option names
        known = _UNQUOTED_PARSE_ERROR.search(str(exc))
        raise ConnectionFailed(
            f"malformed DSN: {known.group(0) if known else 'libpq cannot parse it'}",
            hint="key=value pairs with values holding spaces or quotes in single quotes, or a "
            "postgresql:// URL with its parts percent-encoded") from None
    for key, env in (("host", "PGHOST"), ("port", "PGPORT")):
        if key not in params and os.environ.get(env):
            params[key] = os.environ[env]
    return params


def is_transaction_pooler(dsn: str) -> bool:
    """True for Supabase's transaction pooler: port 6543, or a host under pooler.supabase.com."""
    params = dsn_params(dsn)
    return params.get("port") == TRANSACTION_POOLER_PORT or SUPABASE_POOLER_HOST in params.get("host", "")


# ---------------------------------------------------------------- connecting


def _describe_connect_error(exc: psycopg.Error, dsn: str) -> tuple[str, str]:
    """The error in one redacted line, and a hint that fits it."""
    raw = scrub(str(exc)).strip()
    params = dsn_params(dsn)
    where = params.get("host", "local socket")
    if params.get("port"):
        where = f"{where}:{params['port']}"
    lines = [line.strip() for line in raw.splitlines() if line.strip()]
    detail = lines[-1] if lines else type(exc).__name__
    detail = re.sub(r"^(connection failed: )?(connection to server .*? failed: )?(FATAL:\s*)?", "", detail)
    lowered = raw.lower()
    if not dsn.strip():
        where_from = "pass --dsn, or set FAVMIGRATE_DSN / DATABASE_URL / PG* variables"
        return f"cannot reach PostgreSQL at {where}: {detail}", where_from
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return (f"cannot log in to {where}: {detail}",
                "check the user and the password (in the DSN, PGPASSWORD or ~/.pgpass)")
    if "does not exist" in lowered:
        return f"cannot connect to {where}: {detail}", "check the user and database names in the DSN"
    if isinstance(exc, psycopg.ProgrammingError) or ("invalid" in lowered and "connection option" in lowered):
        return f"malformed DSN: {detail}", "write it as postgresql://user@host:5432/dbname or host=... dbname=..."
    return (f"cannot reach PostgreSQL at {where}: {detail}",
            "check the host and port, and that the server accepts connections from here")


def connect(dsn: str, *, connect_timeout: int = DEFAULT_CONNECT_TIMEOUT_S,
            startup_settings: dict[str, str] | None = None) -> psycopg.Connection[Any]:
    """Open an autocommit connection tagged application_name=favmigrate.

    ``startup_settings`` travel in the startup packet (libpq's ``options``, after any the DSN carries), so
    they are in force before the first query: a role's 1 ms statement_timeout cannot cancel the very
    statement that would lift it. Raises ConnectionFailed with one redacted line for a bad DSN, login,
    host or database.
    """
    try:
        params = dsn_params(dsn)
        extra: dict[str, Any] = {}
        if startup_settings:
            # a -c value escapes spaces and backslashes with a backslash (libpq's options syntax)
            switches = [f"-c {name}={_escape_option(value)}" for name, value in startup_settings.items()]
            extra["options"] = " ".join(filter(None, [params.get("options", ""), *switches]))
        return psycopg.connect(
            dsn, autocommit=True, application_name=APPLICATION_NAME, connect_timeout=connect_timeout, **extra
        )
    except psycopg.Error as exc:
        message, hint = _describe_connect_error(exc, dsn)
        raise ConnectionFailed(message, hint=hint) from None


def conninfo_of(conn: psycopg.Connection[Any]) -> str:
    """The parameters ``conn`` connected with, its startup settings and password included (never shown)."""
    password = conn.info.password
    return make_conninfo(conn.info.dsn, password=password) if password else conn.info.dsn


def connect_like(conn: psycopg.Connection[Any], count: int) -> list[psycopg.Connection[Any]]:
    """``count`` more connections opened as ``conn`` was (same parameters, role and startup settings); the
    caller closes them. Raises ConnectionFailed (the server's connection limit, say), having closed those
    already open."""
    opened: list[psycopg.Connection[Any]] = []
    try:
        for _ in range(count):
            opened.append(connect(conninfo_of(conn)))
    except ConnectionFailed:
        for extra in opened:
            extra.close()
        raise
    return opened


@contextmanager
def open_session(
    dsn: str | None, *, writes: bool, statement_timeout_s: float | None, warn: Warn = _ignore,
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT_S,
) -> Iterator[psycopg.Connection[Any]]:
    """Connect for a command. A command that ``writes`` refuses transaction poolers, unpinned sessions, hot
    standbys and read-only databases.

    Every command sets its statement_timeout (None: no limit) at session level before its first query, so a
    role's or database's own statement_timeout never applies to it; behind a transaction pooler (read
    commands only) session settings would leak to other clients, so the role's applies there.
    Raises ConnectionFailed, PoolerRefused or ReadOnlyServer; changes nothing.
    """
    resolved = resolve_dsn(dsn)
    pooled = is_transaction_pooler(resolved)
    if pooled and writes:
        raise PoolerRefused(
            "this is Supabase's transaction pooler, which breaks session settings and advisory locks",
            hint="use the direct connection (port 5432, host db.<project>.supabase.co) for commands that "
            "change the database",
        )
    if pooled:
        warn("connected through a transaction pooler: fine for read-only commands, never for changes")
    # behind a transaction pooler session settings would leak to other clients (and may be refused)
    startup = None if pooled else {"statement_timeout": ms(statement_timeout_s)}
    conn = connect(resolved, connect_timeout=connect_timeout, startup_settings=startup)
    try:
        if writes:
            refuse_read_only(conn)
            ensure_pinned_session(conn)
        yield conn
    finally:
        conn.close()


WATCH_STATEMENT_TIMEOUT = "10s"


def _escape_option(value: str) -> str:
    return value.replace("\\", "\\\\").replace(" ", "\\ ")


def refuse_read_only(conn: psycopg.Connection[Any]) -> None:
    """Refuse (ReadOnlyServer, exit 2) a hot standby or a database whose transactions are read-only by
    default, before anything is written: each write would fail, and a re-run could never finish."""
    found = rows(conn, sql.SQL("SELECT pg_is_in_recovery() AS standby, "
                               "current_setting('default_transaction_read_only') AS read_only"))[0]
    if found["standby"]:
        raise ReadOnlyServer("the server is a hot standby (in recovery): it cannot be changed; nothing was done",
                             hint="connect to the primary")
    if found["read_only"] == "on":
        raise ReadOnlyServer(
            "the database is read-only (default_transaction_read_only = on for this database or role); "
            "nothing was done",
            hint="run it where writes are allowed, or ALTER DATABASE ... SET default_transaction_read_only = off "
            "if the read-only setting is not intended")


def ensure_pinned_session(conn: psycopg.Connection[Any]) -> None:
    """Refuse a pooler that hands each transaction to another backend (session settings would be lost)."""
    first = scalar(conn, sql.SQL("SELECT pg_backend_pid()"))
    second = scalar(conn, sql.SQL("SELECT pg_backend_pid()"))
    if first != second:
        raise PoolerRefused(
            "the connection is not pinned to one server session (a transaction-mode pooler?)",
            hint="connect directly to PostgreSQL, or through a session-mode pooler",
        )


# ---------------------------------------------------------------- small query helpers


def scalar(conn: psycopg.Connection[Any], query: sql.SQL | sql.Composed, params: Any = None) -> Any:
    """The first column of the first row, or None."""
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def rows(conn: psycopg.Connection[Any], query: sql.SQL | sql.Composed, params: Any = None) -> list[dict[str, Any]]:
    """All rows as dicts."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return cur.fetchall()


@contextmanager
def read_only(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A READ ONLY transaction that is always rolled back."""
    with conn.transaction(force_rollback=True):
        conn.execute(sql.SQL("SET TRANSACTION READ ONLY"))
        yield


def set_session(conn: psycopg.Connection[Any], **settings: str) -> None:
    """Set GUCs at session level, overriding role defaults (Supabase roles carry a statement_timeout)."""
    for name, value in settings.items():
        conn.execute(sql.SQL("SELECT set_config(%s, %s, false)"), (name, value))


def set_local(conn: psycopg.Connection[Any], **settings: str) -> None:
    """Set GUCs for the current transaction only (SET LOCAL): they end with its commit or rollback."""
    for name, value in settings.items():
        conn.execute(sql.SQL("SELECT set_config(%s, %s, true)"), (name, value))


def ms(seconds: float | None) -> str:
    """A timeout in seconds as a PostgreSQL setting, rounded up to whole milliseconds (so a tiny positive
    value is 1ms, never 0, which PostgreSQL reads as no limit); None or 0 means no limit."""
    return "0" if not seconds else f"{math.ceil(seconds * 1000)}ms"


def statement_timeout_message(exc: BaseException) -> str | None:
    """For a statement cancelled by the statement_timeout, what happened and the option to raise; else None."""
    if not isinstance(exc, pg_errors.QueryCanceled) or "statement timeout" not in str(exc):
        return None
    return ("a statement ran longer than the statement timeout and was cancelled: raise --statement-timeout "
            "(0: no limit)")


# ---------------------------------------------------------------- the run lock


def advisory_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


_LOCK_HOLDER = sql.SQL(
    """
    SELECT a.pid, a.usename, a.application_name, a.client_addr::text AS client_addr,
           date_trunc('second', now() - a.backend_start)::text AS connected_for
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid::text::bigint = %s AND l.objid::text::bigint = %s
    """
)


@contextmanager
def run_lock(conn: psycopg.Connection[Any], name: str, *, wait_s: float, poll_s: float = 0.2) -> Iterator[None]:
    """Hold a session-level advisory lock so only one favmigrate run changes this database at a time.

    Polls pg_try_advisory_lock: a session blocked in pg_advisory_lock would hold a virtual transaction
    that CREATE INDEX CONCURRENTLY in the lock holder waits for, a deadlock nobody detects.
    Raises LockHeld naming the holder when ``wait_s`` runs out.
    """
    key = advisory_key(name)
    deadline = time.monotonic() + wait_s
    while not scalar(conn, sql.SQL("SELECT pg_try_advisory_lock(%s)"), (key,)):
        if time.monotonic() >= deadline:
            unsigned = key & 0xFFFFFFFFFFFFFFFF
            holders = rows(conn, _LOCK_HOLDER, (unsigned >> 32, unsigned & 0xFFFFFFFF))
            who = ", ".join(f"pid {h['pid']} ({h['application_name'] or h['usename']})" for h in holders)
            raise LockHeld(
                f"another favmigrate run holds the lock on this database: {who or 'a backend'}",
                blockers=holders,
                hint="wait for it to finish, or raise --lock-wait",
            )
        time.sleep(poll_s)
    try:
        yield
    finally:
        if not conn.closed and not conn.broken:
            conn.execute(sql.SQL("SELECT pg_advisory_unlock(%s)"), (key,))


# ---------------------------------------------------------------- lock-timeout retries


@dataclass(frozen=True)
class RetryPolicy:
    """How statements that need a strong lock wait: briefly, then back off and try again."""

    lock_timeout_s: float = 1.0
    retries: int = 10
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 10.0

    def delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter, so retries of several runs do not line up."""
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)


# how far past deadlock_timeout a weak lock's attempt waits, so that the server's deadlock check has run
AUTOVACUUM_CANCEL_MARGIN_S = 0.5
# deadlock_timeout of our sessions where the role may set it (see shorten_deadlock_check), in milliseconds
DEADLOCK_CHECK_AFTER_MS = 100


def shorten_deadlock_check(conn: psycopg.Connection[Any]) -> None:
    """Lower the session's deadlock_timeout to DEADLOCK_CHECK_AFTER_MS where the role may set it (a superuser,
    or SET granted on it, PostgreSQL 15+); never raise it.

    The server cancels an autovacuum that blocks a lock request (one preventing wraparound excepted) when the
    request's deadlock check runs, after deadlock_timeout (1 s by default): the write-back or backfill's own
    dead rows start one, and a step's lock request behind it would otherwise wait the full second, or time
    out every retry under a shorter --lock-timeout. The check only runs for our own waits."""
    allowed = [sql.SQL("current_setting('is_superuser')::boolean")]
    if conn.info.server_version >= 150000:
        allowed.append(sql.SQL("has_parameter_privilege('deadlock_timeout', 'SET')"))
    if scalar(conn, sql.SQL("SELECT ({allowed}) AND setting::integer > {limit} FROM pg_settings "
                            "WHERE name = 'deadlock_timeout'").format(allowed=sql.SQL(" OR ").join(allowed),
                                                                      limit=sql.Literal(DEADLOCK_CHECK_AFTER_MS))):
        set_session(conn, deadlock_timeout=f"{DEADLOCK_CHECK_AFTER_MS}ms")


def weak_lock_policy(conn: psycopg.Connection[Any], policy: RetryPolicy) -> RetryPolicy:
    """``policy`` for a statement whose lock the application's reads and writes never queue behind (SHARE UPDATE
    EXCLUSIVE: a concurrent index drop, VALIDATE CONSTRAINT, ANALYZE): each attempt waits past deadlock_timeout,
    when the server cancels an autovacuum that blocks it (one preventing wraparound excepted). With a
    lock_timeout at or below deadlock_timeout, the autovacuum a large backfill or write-back starts would
    outlast every retry. Read-only."""
    deadlock_timeout_s = float(scalar(conn, sql.SQL(
        "SELECT setting::float8 / 1000 FROM pg_settings WHERE name = 'deadlock_timeout'")))
    return replace(policy, lock_timeout_s=max(policy.lock_timeout_s, deadlock_timeout_s + AUTOVACUUM_CANCEL_MARGIN_S))


@dataclass(frozen=True)
class SessionLimits:
    """How long a command that changes the database may wait: for a strong lock (then it retries), for one
    statement, and for another favmigrate run's advisory lock."""

    lock_timeout_s: float = 1.0
    retries: int = 10
    statement_timeout_s: float | None = None
    lock_wait_s: float = 30.0

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(lock_timeout_s=self.lock_timeout_s, retries=self.retries)

    def set_on(self, conn: psycopg.Connection[Any], **extra: str) -> None:
        """Set the timeouts at session level before the first query, so a role's own statement_timeout
        (Supabase sets one) never applies to us; and a short deadlock check where the role may
        (shorten_deadlock_check)."""
        set_session(conn, statement_timeout=ms(self.statement_timeout_s), lock_timeout=ms(self.lock_timeout_s),
                    **extra)
        shorten_deadlock_check(conn)


# ---------------------------------------------------------------- other sessions' statements

_QUERY_SHOWN_CHARS = 120
_PARAM = re.compile(r"\$(\d+)")
_NUMBER = re.compile(r"0[xXoObB][0-9a-fA-F_]+|(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_IDENTIFIER = re.compile(r"U&(?=[\"'])|[^\W\d][\w$]*", re.IGNORECASE)
_DOLLAR_TAG = re.compile(r"\$(?:[^\W\d]\w*)?\$")
_STRING_PREFIXES = {"e", "b", "x", "n", "u&"}


def mask_query(text: str | None, limit: int = _QUERY_SHOWN_CHARS) -> str:
    """Another session's statement fit to show: every literal (string, number, bit string, dollar-quoted
    body) replaced by ``$n`` as pg_stat_statements normalizes it, comments dropped, whitespace collapsed,
    cut to ``limit`` characters.

    Its literals may hold secrets (``ALTER ROLE ... PASSWORD '...'``); an unterminated one (the text is
    cut at track_activity_query_size) hides everything after its start. Never store the result.
    """
    if not text:
        return ""
    out: list[str] = []
    number = max((int(m.group(1)) for m in _PARAM.finditer(text)), default=0)
    i, size = 0, len(text)

    def placeholder() -> str:
        nonlocal number
        number += 1
        return f"${number}"

    while i < size:
        char = text[i]
        if text.startswith("--", i):
            end = text.find("\n", i)
            i = size if end == -1 else end
            out.append(" ")
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < size and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            out.append(" ")
        elif char == "'":
            i = _end_of_string(text, i, escapes=bool(out) and out[-1].lower() == "e")
            if out and out[-1].lower() in _STRING_PREFIXES:
                out.pop()
            out.append(placeholder())
        elif char == '"':
            end = i + 1
            while end < size and not (text[end] == '"' and not text.startswith('""', end)):
                end += 2 if text.startswith('""', end) else 1
            out.append(text[i:end + 1])
            i = end + 1
        elif (param := _PARAM.match(text, i)) is not None:
            out.append(param.group(0))
            i = param.end()
        elif (tag := _DOLLAR_TAG.match(text, i)) is not None:
            end = text.find(tag.group(0), tag.end())
            i = size if end == -1 else end + len(tag.group(0))
            out.append(placeholder())
        elif (word := _IDENTIFIER.match(text, i)) is not None:
            out.append(word.group(0))
            i = word.end()
        elif (literal := _NUMBER.match(text, i)) is not None:
            out.append(placeholder())
            i = literal.end()
        else:
            out.append(char)
            i += 1
    shown = " ".join("".join(out).split())
    return shown if len(shown) <= limit else shown[:limit - 1] + "…"


def _end_of_string(text: str, start: int, *, escapes: bool) -> int:
    """The index after the string literal opening at ``start`` ('' doubles a quote; \\ escapes in E'')."""
    i = start + 1
    while i < len(text):
        if escapes and text[i] == "\\":
            i += 2
        elif text[i] == "'":
            if text.startswith("''", i):
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return len(text)


_BLOCKERS = sql.SQL(
    """
    SELECT a.pid, a.usename AS user, a.application_name, a.state,
           date_trunc('millisecond', now() - a.xact_start)::text AS transaction_age, a.query
    FROM pg_stat_activity a
    WHERE a.pid = ANY (pg_blocking_pids(%s))
    ORDER BY a.xact_start
    """
)


def blocking_sessions(conn: psycopg.Connection[Any], pid: int) -> list[dict[str, Any]]:
    """The sessions blocking backend ``pid``, their last statement masked by mask_query. Read-only."""
    return [{**found, "query": mask_query(found["query"])} for found in rows(conn, _BLOCKERS, (pid,))]


OnBlocked = Callable[[list[dict[str, Any]], float], None]


class BlockerWatch:
    """Watches, from a second connection, which backends block our statement while it waits for a lock."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None
        self.last: list[dict[str, Any]] = []

    @classmethod
    def for_connection(cls, conn: psycopg.Connection[Any]) -> BlockerWatch:
        """A watch that connects with the same parameters as ``conn`` (password included, never shown)."""
        return cls(conninfo_of(conn))

    @contextmanager
    def watching(self, pid: int, *, interval_s: float = 0.05, on_blocked: OnBlocked | None = None,
                 every_s: float = 5.0) -> Iterator[None]:
        """Poll the sessions blocking ``pid`` every ``interval_s`` while the block runs (kept in ``last``).

        ``on_blocked(blockers, waited_s)`` is called from the watching thread once ``pid`` has been blocked
        for ``every_s`` seconds, then every ``every_s`` seconds while it stays blocked.
        """
        stop = threading.Event()
        self.last = []

        def poll() -> None:
            blocked_since: float | None = None
            reported = 0.0
            try:
                if self._conn is None:
                    # its own bound, not the role's: a role's 1 ms statement_timeout would blind it
                    self._conn = connect(self._dsn, startup_settings={"statement_timeout": WATCH_STATEMENT_TIMEOUT})
                while not stop.wait(interval_s):
                    found = blocking_sessions(self._conn, pid)
                    if found:
                        self.last = found
                    now = time.monotonic()
                    if not found or on_blocked is None:
                        blocked_since = None
                        continue
                    blocked_since = blocked_since or now
                    if now - blocked_since >= every_s and now - reported >= every_s:
                        reported = now
                        on_blocked(found, now - blocked_since)
            except Exception:  # the watch only improves a message; never let it break the step
                return

        thread = threading.Thread(target=poll, name="favmigrate-blocker-watch", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=2)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def describe_blockers(blockers: list[dict[str, Any]], *, queries: bool = True) -> str:
    """One clause per blocking backend: pid, user, application, transaction age and (masked) last statement.

    Without ``queries`` the text is fit to record: other sessions' statements are shown, never stored.
    """
    return "; ".join(
        f"pid {b['pid']} " + (f"user {b['user']}" if b["user"] else "(a background process, no user)")
        + f" app {b['application_name'] or '-'} in transaction for {b['transaction_age'] or '?'}"
        + (f" ({b['state']})" if b["state"] else "")
        + (f": {b['query']}" if queries and b.get("query") else "")
        for b in blockers
    )


def with_lock_retries(
    conn: psycopg.Connection[Any],
    action: Callable[[], T],
    *,
    policy: RetryPolicy,
    watch: BlockerWatch | None = None,
    on_retry: Callable[[int, float, list[dict[str, Any]]], None] | None = None,
    what: str = "statement",
    lock_timeout_set: bool = False,
) -> tuple[T, int]:
    """Run ``action`` under the policy's lock_timeout, retrying on lock timeout (SQLSTATE 55P03).

    Returns (result, retries used). Raises LockHeld naming the blockers when the retries run out,
    Interrupted on Ctrl-C. The action must run its own transaction so a failed attempt rolls back.
    ``lock_timeout_set``: the caller has set the policy's lock_timeout on ``conn`` (a loop of short batches
    saves a round trip each).
    """
    if not lock_timeout_set:
        set_session(conn, lock_timeout=ms(policy.lock_timeout_s))
    pid = conn.info.backend_pid
    # the watch polls from another thread: a short attempt on a loaded machine can end before its first
    # poll, so the blockers seen by an earlier attempt are kept until a later one sees any
    seen: list[dict[str, Any]] = []
    for attempt in range(policy.retries + 1):
        try:
            if watch is None:
                return action(), attempt
            with watch.watching(pid):
                return action(), attempt
        except pg_errors.LockNotAvailable:
            blockers = seen = (watch.last if watch else []) or seen
            if attempt == policy.retries:
                raise LockHeld(
                    f"could not take the lock for {what} within {policy.lock_timeout_s:g}s after "
                    f"{policy.retries} retries; blocked by: "
                    f"{describe_blockers(blockers, queries=False) or 'unknown backends'}",
                    blockers=blockers,
                    details=tuple(f"pid {b['pid']} last ran: {b['query']}" for b in blockers if b.get("query")),
                    hint="end or wait for the blocking transactions, then run the command again "
                    "(or raise --retries / --lock-timeout)",
                ) from None
            delay = policy.delay(attempt + 1)
            if on_retry:
                on_retry(attempt + 1, delay, blockers)
            try:
                time.sleep(delay)
            except KeyboardInterrupt:
                raise Interrupted(f"interrupted while waiting to retry {what}") from None
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- one task per connection at a time

Task = TypeVar("Task")
_NO_MORE = object()


def run_in_parallel(connections: Sequence[psycopg.Connection[Any]], tasks: Iterable[Task],
                    work: Callable[[psycopg.Connection[Any], Task], T], done: Callable[[T], None],
                    stop: threading.Event) -> None:
    """Run ``work(connection, task)`` for every task, each connection running one task at a time in a thread of
    its own, and hand each result to ``done`` in the calling thread as it arrives.

    The first error, or Ctrl-C in the calling thread, sets ``stop``: no task starts after it, the statements
    still running are cancelled, the results of the tasks that finished are handed to ``done`` all the same,
    then the error (the KeyboardInterrupt) is raised. ``work`` checks ``stop`` before anything it should not
    start once another task has failed (a retry after a lock timeout).
    """
    pending = iter(tasks)
    taking = threading.Lock()
    arrived: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()  # (finished, result or error)

    def next_task() -> Any:
        with taking:
            return _NO_MORE if stop.is_set() else next(pending, _NO_MORE)

    def worker(conn: psycopg.Connection[Any]) -> None:
        try:
            while (task := next_task()) is not _NO_MORE:
                arrived.put((False, work(conn, task)))
        except BaseException as exc:  # handed to the calling thread, which raises it
            stop.set()
            arrived.put((True, exc))
        else:
            arrived.put((True, None))

    threads = [threading.Thread(target=worker, args=(conn,), name="favmigrate-worker", daemon=True)
               for conn in connections]
    for thread in threads:
        thread.start()
    running, failure = len(threads), None
    try:
        while running:
            try:
                finished, item = arrived.get(timeout=0.1)  # a bounded wait: Ctrl-C is seen between waits
            except queue.Empty:
                continue
            if not finished:
                done(item)
                continue
            running -= 1
            if item is not None and failure is None:
                failure = item
                _cancel_running(connections)
    except BaseException:
        stop.set()
        _cancel_running(connections)
        for thread in threads:
            thread.join()
        while not arrived.empty():  # the work that committed before the cancel still counts
            finished, item = arrived.get()
            if not finished:
                with suppress(Exception, KeyboardInterrupt):  # already stopping on the first error
                    done(item)
        raise
    if failure is not None:
        raise failure


def _cancel_running(connections: Sequence[psycopg.Connection[Any]]) -> None:
    """Ask the server to cancel whatever each connection runs (nothing, when it is between statements)."""
    for conn in connections:
        if not conn.closed:
            with suppress(psycopg.Error):
                conn.cancel_safe(timeout=5.0)
