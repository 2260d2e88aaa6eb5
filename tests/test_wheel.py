"""The built wheel carries sql/ and verify/ and works from any directory, without the checkout."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.db
def test_wheel_installed_in_a_fresh_venv_runs_from_tmp(tmp_path: Path, db_dsn: str):
    wheels = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
                   check=True, capture_output=True)
    (wheel,) = wheels.glob("favmigrate-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)}))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    # the dependencies come from this interpreter's site-packages, but not the editable checkout
    deps = Path(sysconfig.get_path("purelib"))
    (site / "deps.pth").write_text(str(deps) + "\n")
    python = env_dir / "bin" / "python"
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()

    where = subprocess.run([python, "-c", "import favmigrate.resources as r, favmigrate, favmigrate.sample as s; "
                            "print(favmigrate.__file__); print(r.sql_dir()); print(r.verify_dir()); "
                            "print(len(s.seed_sql()))"],
                           cwd=workdir, capture_output=True, text=True, check=True).stdout.split()
    assert len(where) == 4 and all(str(site) in line for line in where[:3]), where
    # the seed's SQL, which `favmigrate demo` lints and runs, ships too
    assert where[3] == str(len((ROOT / "favmigrate" / "sample" / "seed_original.sql").read_text(encoding="utf-8")))

    result = subprocess.run([python, "-m", "favmigrate.cli", "apply", "--dsn", db_dsn, "--dry-run"],
                            cwd=workdir, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert 'CREATE INDEX CONCURRENTLY "session_requests_priority_timeout_idx"' in result.stdout
    verify = subprocess.run([python, "-m", "favmigrate.cli", "verify", "--dsn", db_dsn, "--format", "json"],
                            cwd=workdir, capture_output=True, text=True)
    assert verify.returncode == 1 and '"ok": false' in verify.stdout
    lint = subprocess.run([python, "-m", "favmigrate.cli", "lint", "-"], input="CREATE INDEX i ON t (a);\n",
                          cwd=workdir, capture_output=True, text=True)
    assert lint.returncode == 1 and "require-concurrent-index-creation" in lint.stdout, lint.stderr
