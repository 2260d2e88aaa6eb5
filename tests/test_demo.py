"""`favmigrate demo`: the whole lifecycle on its own disposable server, every stage checked, nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import psycopg
import pytest

from clihelp import cli
from favmigrate.sample import expected_rejects

pytestmark = [pytest.mark.db, pytest.mark.own_server]

FAVMIGRATE = Path(sys.executable).with_name("favmigrate")  # the console script installed beside this interpreter
STAGES = ["sandbox", "lint", "plan", "apply", "verify", "backfill", "explain", "report", "rollback", "verify --absent"]


def backend() -> str:
    return os.environ.get("FAVMIGRATE_PG") or "embedded"


def test_demo_runs_every_stage_and_leaves_no_server_and_no_files() -> None:
    done = subprocess.run([FAVMIGRATE, "demo", "--rows", "2000", "--backend", backend(), "--format", "json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["ok"] and report["not_run"] == [] and report["dsn"] is None
    assert [stage["stage"] for stage in report["stages"]] == STAGES
    assert all(stage["ok"] for stage in report["stages"])
    stages = {stage["stage"]: stage["data"] for stage in report["stages"]}
    assert stages["lint"]["seed_sql"]["ok"] is False and stages["lint"]["favmigrate"]["findings"] == []
    assert all(o["state"] == "missing" for o in stages["plan"]["objects"])
    apply = stages["apply"]
    assert apply["report"]["ok"] and apply["writer"]["transactions"] > 0 and apply["writer"]["errors"] == 0
    assert apply["seed_sql_writer"]["transactions"] > 0
    assert stages["verify"]["ok"]
    rejected = {reason: n for reason, n in stages["backfill"]["rejected"].items() if n}
    assert rejected == {reason: n for reason, n in expected_rejects(2000).items() if n}
    assert stages["report"]["totals"]["requests"] == stages["backfill"]["updated"]["preferred_mechanic_id"]
    rollback = stages["rollback"]
    assert rollback["values_checked"] > 0 and rollback["values_not_in_metadata"] == 0
    assert stages["verify --absent"]["mode"] == "absent" and stages["verify --absent"]["ok"]
    # the server process and its temp directory are gone
    server = report["server"]
    assert server["postmaster_pid"] and server["workdir"]
    assert not psutil.pid_exists(server["postmaster_pid"]) or \
        psutil.Process(server["postmaster_pid"]).status() == psutil.STATUS_ZOMBIE
    assert not Path(server["workdir"]).exists()
    assert "demo OK" not in done.stdout  # stdout is the JSON document only
    assert "6/10 backfill" in done.stderr


def test_demo_keep_leaves_the_database_until_ctrl_c() -> None:
    process = subprocess.Popen([FAVMIGRATE, "demo", "--rows", "1000", "--backend", backend(), "--keep"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("export FAVMIGRATE_DSN="):
                break
        text = "".join(lines)
        assert "demo OK" in text, text
        dsn = lines[-2].strip()
        assert lines[-1].strip() == f"export FAVMIGRATE_DSN='{dsn}'"
        with psycopg.connect(dsn) as conn:
            # the lifecycle ended rolled back: the sample is there, the migration's columns are not
            assert conn.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = "
                                "'session_requests' AND column_name = 'preferred_mechanic_id'").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM session_requests").fetchone()[0] >= 1000
            data_dir = conn.execute("SHOW data_directory").fetchone()[0]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, process.stderr.read() if process.stderr else ""
    finally:
        process.kill()
    assert not os.path.exists(data_dir)


def test_a_spec_without_a_sample_is_refused_before_any_server_starts(tmp_path: Path) -> None:
    spec = Path(__file__).resolve().parent / "specs" / "orders" / "migration.toml"
    folder = tmp_path / "no-sample"
    folder.mkdir()
    (folder / "migration.toml").write_text(spec.read_text(encoding="utf-8").replace(
        'file = "queries/open_shipped.sql"', 'file = "open_shipped.sql"'), encoding="utf-8")
    (folder / "open_shipped.sql").write_text((spec.parent / "queries" / "open_shipped.sql").read_text())
    result = cli("demo", "--spec", str(folder), "--rows", "10")
    assert result.exit_code == 2, result.stderr
    assert "brings no sample" in result.stderr and "sample.sql" in result.stderr
    assert result.stdout == ""


def test_rows_out_of_range_is_a_usage_error() -> None:
    result = cli("demo", "--rows", "0")
    assert result.exit_code == 2 and "allowed range" in result.stderr


def test_another_spec_runs_the_same_lifecycle_on_its_folders_sample() -> None:
    spec = str(Path(__file__).resolve().parent / "specs" / "orders")
    # --spec before the command, as every other command takes it
    result = cli("--spec", spec, "demo", "--rows", "500", "--backend", backend(), "--format", "json")
    assert result.exit_code == 0, result.stderr[-3000:]
    report = result.json()
    assert report["migration_id"] == "orders_promotion" and report["ok"]
    # no seed SQL to compare with, no Phase 4 report
    assert [stage["stage"] for stage in report["stages"]] == [s for s in STAGES if s != "report"]
    stages = {stage["stage"]: stage["data"] for stage in report["stages"]}
    assert "seed_sql" not in stages["lint"] and stages["apply"]["seed_sql_writer"] is None
    assert stages["apply"]["writer"]["transactions"] > 0 and stages["apply"]["writer"]["errors"] == 0
    # sample.sql makes every 50th order carry three values the backfill must reject
    assert {reason: n for reason, n in stages["backfill"]["rejected"].items() if n} == {
        "unknown_reference": 10, "invalid_integer": 10, "not_allowed": 10}
    assert stages["rollback"]["values_checked"] > 0 and stages["rollback"]["values_not_in_metadata"] == 0
    assert not Path(report["server"]["workdir"]).exists()


def test_demo_keep_in_json_prints_one_document_holding_the_dsn() -> None:
    process = subprocess.Popen([FAVMIGRATE, "demo", "--rows", "500", "--backend", backend(), "--keep",
                                "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line == "}\n":  # the end of the document: the server now waits for Ctrl-C
                break
        report = json.loads("".join(lines))
        assert report["ok"] and report["dsn"]
        with psycopg.connect(report["dsn"]) as conn:
            assert conn.execute("SELECT count(*) FROM session_requests").fetchone()[0] >= 500
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, process.stderr.read() if process.stderr else ""
        assert process.stdout.read() == ""  # nothing after the document
    finally:
        process.kill()
    assert not Path(report["server"]["workdir"]).exists()
