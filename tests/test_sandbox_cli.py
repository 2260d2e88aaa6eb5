"""`favmigrate sandbox` from the installed CLI: prints a usable DSN, and Ctrl-C removes everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import psycopg
import pytest

pytestmark = [pytest.mark.db, pytest.mark.own_server]


def test_sandbox_serves_the_sample_until_ctrl_c():
    # the console script installed beside this interpreter (the venv need not be on PATH)
    favmigrate = Path(sys.executable).with_name("favmigrate")
    assert favmigrate.exists(), "the favmigrate command is not installed"
    backend = os.environ.get("FAVMIGRATE_PG") or "embedded"
    process = subprocess.Popen([favmigrate, "sandbox", "--rows", "500", "--backend", backend],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        dsn = process.stdout.readline().strip()
        export = process.stdout.readline().strip()
        assert export == f"export FAVMIGRATE_DSN='{dsn}'"
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM session_requests").fetchone()[0] == 500
            postmaster = conn.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"
                                      ).fetchone()[0]
            data_dir = conn.execute("SHOW data_directory").fetchone()[0]
        server = psutil.Process(postmaster).parent()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, process.stderr.read() if process.stderr else ""
    finally:
        process.kill()
    assert not psutil.pid_exists(server.pid) or server.status() == psutil.STATUS_ZOMBIE
    assert not os.path.exists(data_dir)
