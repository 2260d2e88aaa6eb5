"""How much does a migration stall the application's writes? favmigrate apply vs the seed's SQL, side by side.

One run starts a disposable PostgreSQL, loads the sample ``session_requests`` at each size into a
template database, and for every scenario clones a fresh database from that template (so each one
starts identical). While the migration runs, a writer thread with its own autocommit connection
commits small INSERT/UPDATE transactions on ``session_requests`` at a steady rate and records each
one's latency; a sampler watches ``pg_blocking_pids`` to name what the writer waited for.

Scenarios at each size:

* ``favmigrate apply`` run as the installed command (a subprocess: the real thing);
* the seed's original SQL (``favmigrate/sample/seed_original.sql``) sent as one query, as a SQL editor does.

It also times ``favmigrate verify --no-data`` at each size (catalog-only: should not grow) and the
start-up of ``favmigrate --help`` (and whether that imports psycopg), then prints a markdown table.
Writes only to the disposable server, which is always stopped and deleted.

    python -m bench.apply_bench                      # 200k and 1M rows, 3 runs per scenario
    python -m bench.apply_bench --rows 20000 --runs 1  # a quick smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from favmigrate.sample import load_sample, sample_writes, seed_sql
from favmigrate.sandbox import Server, disposable_postgres
from favmigrate.stall import LEAD_S, SAMPLE_S, Blocker, Recording, Txn, percentile, writes_during

PG15_BINDIR = Path("/usr/lib/postgresql/15/bin")
WRITER_APP = "bench-writer"
SEED_APP = "seed-sql"
# Targets: favmigrate's worst stall at the largest size this many times below the seed SQL's, and
# growing at most this much from the smallest to the largest size; verify --no-data flat.
STALL_RATIO_TARGET = 30.0
STALL_GROWTH_LIMIT = 2.0
VERIFY_GROWTH_LIMIT = 1.5


class Kind(StrEnum):
    SEED = "seed-sql"
    FAVMIGRATE = "favmigrate-apply"
    IDLE = "idle"


@dataclass(frozen=True)
class StepSpan:
    step: str
    started_s: float
    ended_s: float | None


@dataclass
class RunResult:
    """One scenario run on one fresh clone: the writer's latencies and what the migration did."""

    kind: Kind
    rows: int
    run: int
    migration_s: float
    txns: list[Txn]
    migration_at: tuple[float, float]  # when the migration started and ended, on the writer's clock
    rate_target: float
    blockers: list[Blocker] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)  # favmigrate's JSON report, per step
    spans: list[StepSpan] = field(default_factory=list)  # when each step ran, from its progress lines

    @property
    def recording(self) -> Recording:
        return Recording(self.rate_target, *self.migration_at, txns=self.txns, blockers=self.blockers)

    @property
    def latencies(self) -> list[float]:
        return self.recording.latencies

    @property
    def worst(self) -> float:
        return self.recording.worst

    @property
    def p99(self) -> float:
        return self.recording.p99

    @property
    def p99_intended(self) -> float:
        return self.recording.p99_intended

    @property
    def lock_wait(self) -> float:
        return self.recording.lock_wait

    @property
    def errors(self) -> int:
        return self.recording.errors

    @property
    def rate(self) -> float:
        return self.recording.achieved_rate

    def worst_during(self) -> str:
        """When the worst transaction ran: during which favmigrate step(s), or which other phase."""
        worst = max(self.txns, key=lambda t: t.latency)
        end = worst.started + worst.latency
        hits = [s.step for s in self.spans
                if s.started_s <= end and (s.ended_s is None or s.ended_s >= worst.started)]
        if hits:
            return "during " + ", ".join(hits)
        if self.kind is Kind.IDLE:
            return "with no migration running"
        if end < self.migration_at[0] or worst.started > self.migration_at[1]:
            return "outside the migration"
        if self.kind is Kind.SEED:
            return "during the migration"
        if self.spans and end < self.spans[0].started_s:
            return "during CLI start-up and preflight"
        if self.spans and all(s.ended_s is not None and worst.started > s.ended_s for s in self.spans):
            return "during the final verification"
        return "between steps"

    def summary(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "rows": self.rows, "run": self.run,
                "migration_s": round(self.migration_s, 3), "transactions": len(self.txns),
                "errors": self.errors, "rate_txn_s": round(self.rate, 1),
                "worst_ms": round(self.worst * 1000, 1), "p99_ms": round(self.p99 * 1000, 1),
                "p99_intended_ms": round(self.p99_intended * 1000, 1),
                "lock_wait_ms": round(self.lock_wait * 1000),
                "p50_ms": round(percentile(self.latencies, 50) * 1000, 1),
                "worst_during": self.worst_during(),
                "blockers": [asdict(b) for b in self.blockers], "steps": self.steps,
                "spans": [asdict(s) for s in self.spans]}


# ---------------------------------------------------------------- the database: templates and clones


def connect(dsn: str, application: str = "bench") -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True, application_name=application)


def template_name(rows: int) -> str:
    return f"bench_template_{rows}"


def build_template(server: Server, rows: int, seed: int) -> float:
    """Create a template database holding the sample at ``rows``, vacuumed and frozen. Returns seconds."""
    name = template_name(rows)
    started = time.perf_counter()
    with connect(server.create_database(name)) as conn:
        load_sample(conn, rows=rows, seed=seed)
        conn.execute("VACUUM (FREEZE, ANALYZE)")
    with connect(server.dsn) as admin:
        # no connection (autovacuum included) may touch it from now on: clones must be identical
        admin.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")
                      .format(sql.Identifier(name)))
        admin.execute("CHECKPOINT")
    return time.perf_counter() - started


def clone(server: Server, rows: int, name: str) -> str:
    """CREATE DATABASE ``name`` from the template of ``rows``; return its DSN, its pages read once."""
    dsn = server.create_database(name, template=template_name(rows))
    with connect(dsn) as conn:
        conn.execute("SELECT count(*) FROM public.session_requests")
    return dsn


@contextlib.contextmanager
def cloned(server: Server, rows: int, name: str) -> Iterator[str]:
    dsn = clone(server, rows, name)
    try:
        yield dsn
    finally:
        server.drop_database(name)


# ---------------------------------------------------------------- the migrations


def favmigrate_executable() -> str:
    """The installed `favmigrate` command of this interpreter's environment."""
    beside = Path(sys.executable).with_name("favmigrate")
    found = str(beside) if beside.exists() else shutil.which("favmigrate")
    if not found:
        raise SystemExit("the favmigrate command is not installed: pip install -e . (in the venv)")
    return found


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("FAVMIGRATE_DSN", "DATABASE_URL", "PGHOST", "PGPORT", "PGDATABASE", "PGUSER")}
    env["COLUMNS"] = "400"  # one progress event per line on stderr
    return env


_PROGRESS = re.compile(r"^\s*([>✓])\s+([\w-]+):")


def run_favmigrate(dsn: str, origin: float) -> tuple[list[dict[str, Any]], list[StepSpan]]:
    """Run `favmigrate apply --format json` and time its steps from the progress lines on stderr."""
    command = [favmigrate_executable(), "apply", "--dsn", dsn, "--format", "json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=cli_env(), encoding="utf-8")
    starts: dict[str, float] = {}
    spans: list[StepSpan] = []
    err_lines: list[str] = []

    def read_progress() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            now = time.perf_counter() - origin
            err_lines.append(line.rstrip())
            match = _PROGRESS.match(line)
            if match and match.group(1) == ">":
                starts[match.group(2)] = now
            elif match:
                spans.append(StepSpan(match.group(2), round(starts.pop(match.group(2), now), 3), round(now, 3)))

    reader = threading.Thread(target=read_progress, name="bench-progress", daemon=True)
    reader.start()
    try:
        assert process.stdout is not None
        stdout = process.stdout.read()  # not communicate(): the reader thread owns stderr
        process.wait(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=5)
    spans.extend(StepSpan(step, round(at, 3), None) for step, at in starts.items())
    if process.returncode != 0:
        raise RuntimeError(f"favmigrate apply exited {process.returncode}:\n" + "\n".join(err_lines[-20:]))
    report = json.loads(stdout)
    steps = [{"step": s["step"], "duration_s": s["duration_s"], "lock_retries": s["lock_retries"],
              "outcome": s["outcome"]} for s in report["steps"]]
    return steps, sorted(spans, key=lambda s: s.started_s)


def run_seed_sql(dsn: str) -> None:
    """Send the seed's SQL as one query (one implicit transaction), the way a SQL editor runs it."""
    with connect(dsn, SEED_APP) as conn:
        conn.execute(seed_sql())  # no parameters: the simple query protocol, so several statements may go at once


def run_scenario(server: Server, kind: Kind, rows: int, run: int, args: argparse.Namespace,
                 duration_s: float = 3.0) -> RunResult:
    """One fresh clone; the writer and the sampler around one migration (or ``duration_s`` idle)."""
    name = f"bench_{kind.value.replace('-', '_')}_{rows}_{run}"
    with cloned(server, rows, name) as dsn:
        origin = time.perf_counter()
        steps: list[dict[str, Any]] = []
        spans: list[StepSpan] = []
        writes = sample_writes(rows, seed=args.seed)
        with writes_during(dsn, writes, rate=args.rate, origin=origin, application=WRITER_APP) as recording:
            if kind is Kind.FAVMIGRATE:
                steps, spans = run_favmigrate(dsn, origin)
            elif kind is Kind.SEED:
                run_seed_sql(dsn)
            else:
                time.sleep(duration_s)
    return RunResult(kind, rows, run, recording.ended - recording.started, recording.txns,
                     (recording.started, recording.ended), args.rate, recording.blockers, steps, spans)


# ---------------------------------------------------------------- verify --no-data and start-up


def time_command(command: Sequence[str], repeat: int) -> float:
    """Best wall time of ``command`` over ``repeat`` runs (the least disturbed, as timeit reports); each must exit 0.

    Small, fixed work timed on a shared machine: the noise only ever adds, so the minimum is the
    estimate of the work itself.
    """
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=cli_env(), timeout=120)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(command)} exited {done.returncode}: {done.stderr.strip()}")
    return min(times)


def time_verify(server: Server, sizes: Sequence[int], repeat: int) -> dict[int, float]:
    """Best wall time of `favmigrate verify --no-data` per size, on clones where apply has run.

    The sizes take turns, so whatever else the machine does falls on all of them alike.
    """
    exe = favmigrate_executable()
    with contextlib.ExitStack() as stack:
        commands = {}
        for rows in sizes:
            dsn = stack.enter_context(cloned(server, rows, f"bench_verify_{rows}"))
            subprocess.run([exe, "apply", "--dsn", dsn, "--quiet", "--format", "json"], check=True,
                           capture_output=True, env=cli_env(), timeout=600)
            commands[rows] = [exe, "verify", "--no-data", "--dsn", dsn, "--format", "json"]
        with connect(server.dsn) as admin:
            admin.execute("CHECKPOINT")
        times: dict[int, list[float]] = {rows: [] for rows in sizes}
        for attempt in range(repeat + 1):
            for rows in sizes:
                took = time_command(commands[rows], 1)
                if attempt:  # the first round only warms the catalog caches
                    times[rows].append(took)
    return {rows: min(values) for rows, values in times.items()}


_HELP_PROBE = """
import sys
sys.argv = ["favmigrate", "--help"]
from favmigrate.cli import main
try:
    main()
except SystemExit:
    pass
sys.stderr.write("\\nPSYCOPG_IMPORTED=%d\\n" % ("psycopg" in sys.modules))
"""


def startup(repeat: int) -> dict[str, Any]:
    """`favmigrate --help` wall time (best), a bare interpreter's for scale, and whether psycopg loads."""
    probe = subprocess.run([sys.executable, "-c", _HELP_PROBE], capture_output=True, text=True, timeout=60)
    imported = "PSYCOPG_IMPORTED=1" in probe.stderr
    return {"help_s": time_command([favmigrate_executable(), "--help"], repeat),
            "python_s": time_command([sys.executable, "-c", "pass"], repeat),
            "psycopg_imported_by_help": imported}


# ---------------------------------------------------------------- the report


def ms_text(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds >= 0.0995 else f"{seconds * 1000:.1f} ms"


def ratio_text(value: float) -> str:
    return f"{value:.0f}x" if value >= 10 else f"{value:.1f}x"


def median_of(results: list[RunResult], metric: str) -> float:
    return statistics.median(float(getattr(r, metric)) for r in results)


def reproduce_command(args: argparse.Namespace, backend: str) -> str:
    parts = [f"FAVMIGRATE_PG={backend}", "python", "-m", "bench.apply_bench",
             "--rows", ",".join(str(r) for r in args.rows), "--runs", str(args.runs), "--rate", f"{args.rate:g}"]
    return " ".join(parts)


def render(results: dict[tuple[Kind, int], list[RunResult]], verify_s: dict[int, float], start: dict[str, Any],
           args: argparse.Namespace, server: Server, elapsed_s: float) -> tuple[str, list[str]]:
    """The markdown report, and the targets it missed."""
    sizes: list[int] = args.rows
    first, last = sizes[0], sizes[-1]
    runs = args.runs
    med = {key: {m: median_of(v, m) for m in ("worst", "p99", "p99_intended", "lock_wait", "migration_s")}
           for key, v in results.items()}

    def cells(kind: Kind, metric: str) -> list[str]:
        return [ms_text(med[(kind, n)][metric]) for n in sizes]

    def growth(kind: Kind, metric: str) -> float:
        return med[(kind, last)][metric] / med[(kind, first)][metric]

    def ratios(metric: str) -> list[str]:
        return [ratio_text(med[(Kind.SEED, n)][metric] / med[(Kind.FAVMIGRATE, n)][metric]) for n in sizes]

    grow = len(sizes) > 1
    header = ["metric", *(f"{n:,} rows" for n in sizes)] + ([f"growth {first:,} → {last:,}"] if grow else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(label: str, values: list[str], grown: float | None) -> None:
        extra = [ratio_text(grown) if grown is not None else ""] if grow else []
        lines.append("| " + " | ".join([label, *values, *extra]) + " |")

    row("writer's worst stall: seed SQL as one script", cells(Kind.SEED, "worst"), growth(Kind.SEED, "worst"))
    row("writer's worst stall: `favmigrate apply`", cells(Kind.FAVMIGRATE, "worst"),
        growth(Kind.FAVMIGRATE, "worst"))
    row("**worst-stall ratio seed / favmigrate**", [f"**{r}**" for r in ratios("worst")], None)
    row("writer's p99: seed SQL as one script", cells(Kind.SEED, "p99"), growth(Kind.SEED, "p99"))
    row("writer's p99: `favmigrate apply`", cells(Kind.FAVMIGRATE, "p99"), growth(Kind.FAVMIGRATE, "p99"))
    row("p99 ratio seed / favmigrate", ratios("p99"), None)
    row("writer's p99 as arriving requests see it¹: seed SQL", cells(Kind.SEED, "p99_intended"),
        growth(Kind.SEED, "p99_intended"))
    row("writer's p99 as arriving requests see it¹: `favmigrate apply`", cells(Kind.FAVMIGRATE, "p99_intended"),
        growth(Kind.FAVMIGRATE, "p99_intended"))
    row("**p99¹ ratio seed / favmigrate**", [f"**{r}**" for r in ratios("p99_intended")], None)
    row("writer seen waiting on a lock² (seed SQL / favmigrate)",
        [f"{med[(Kind.SEED, n)]['lock_wait'] * 1000:,.0f} ms / {med[(Kind.FAVMIGRATE, n)]['lock_wait'] * 1000:,.0f} ms"
         for n in sizes], None)
    row("writer alone, no migration: worst / p99 (noise floor)",
        [f"{ms_text(med[(Kind.IDLE, n)]['worst'])} / {ms_text(med[(Kind.IDLE, n)]['p99'])}" for n in sizes], None)
    row("migration wall time: seed SQL / favmigrate (context only)",
        [f"{med[(Kind.SEED, n)]['migration_s']:.2f} s / {med[(Kind.FAVMIGRATE, n)]['migration_s']:.2f} s"
         for n in sizes], None)
    row(f"`favmigrate verify --no-data` wall time (best of {args.verify_repeat})",
        [f"{verify_s[n]:.2f} s" for n in sizes], verify_s[last] / verify_s[first])

    missed: list[str] = []
    stall_ratio = med[(Kind.SEED, last)]["worst"] / med[(Kind.FAVMIGRATE, last)]["worst"]
    checks = [(f"worst-stall ratio seed/favmigrate at {last:,} rows ≥ {STALL_RATIO_TARGET:g}x",
               ratio_text(stall_ratio), stall_ratio >= STALL_RATIO_TARGET)]
    if grow:
        stall_growth = growth(Kind.FAVMIGRATE, "worst")
        verify_growth = verify_s[last] / verify_s[first]
        checks += [(f"favmigrate's worst stall grows ≤ {STALL_GROWTH_LIMIT:g}x from {first:,} to {last:,} rows",
                    ratio_text(stall_growth), stall_growth <= STALL_GROWTH_LIMIT),
                   (f"verify --no-data wall time grows ≤ {VERIFY_GROWTH_LIMIT:g}x (catalog-only)",
                    f"{verify_growth:.2f}x", verify_growth <= VERIFY_GROWTH_LIMIT)]
    checks.append(("`favmigrate --help` does not import psycopg",
                   "imports psycopg" if start["psycopg_imported_by_help"] else "psycopg not imported",
                   not start["psycopg_imported_by_help"]))
    target_lines = []
    for label, measured, ok in checks:
        target_lines.append(f"- {'met' if ok else '**MISSED**'}: {label} (measured {measured})")
        if not ok:
            missed.append(label)

    where = []
    for n in sizes:
        for kind in (Kind.SEED, Kind.FAVMIGRATE):
            values = ", ".join(ms_text(r.worst) for r in results[(kind, n)])
            during = "; ".join(sorted({r.worst_during() for r in results[(kind, n)]}))
            where.append(f"- {n:,} rows, {kind.value}: worst stall per run {values} ({during}); "
                         + _lock_waits(results[(kind, n)]))
        steps = _step_medians(results[(Kind.FAVMIGRATE, n)])
        where.append(f"- {n:,} rows, favmigrate steps (median s): "
                     + ", ".join(f"{step} {duration:.2f}" for step, duration in steps.items()))

    rates = [r.rate for v in results.values() for r in v]
    text = "\n".join([
        f"### favmigrate apply vs the seed's SQL under a live writer (PostgreSQL {server.version}, "
        f"{server.backend}, {os.cpu_count()} CPUs)",
        "",
        f"Writer: one autocommit connection, INSERT/UPDATE transactions on session_requests at "
        f"{args.rate:g} txn/s (achieved {min(rates):.0f}-{max(rates):.0f}, lower where a stall held it), "
        f"from {LEAD_S:g} s before to {LEAD_S:g} s after each migration. Each cell is the median of {runs} "
        "run(s), each on a fresh clone of the same template; ratios compare runs of the same benchmark invocation.",
        "",
        *lines,
        "",
        "¹ Per-transaction p99 hides a stall: one connection sends one transaction at a time, so a 0.5 s "
        "stall is a single slow sample. This p99 adds the transactions that were due while one was "
        "stalled, each with the wait it would have had (HdrHistogram's coordinated-omission correction).",
        f"² `pg_blocking_pids(writer)` polled every {SAMPLE_S * 1000:g} ms: samples that found the writer blocked "
        "x the interval. What remains of a stall without lock waits is CPU and I/O contention.",
        "",
        f"`favmigrate --help`: {start['help_s'] * 1000:.0f} ms, best of 5 (bare `python -c pass`: "
        f"{start['python_s'] * 1000:.0f} ms); psycopg imported by `--help`: "
        f"{'yes' if start['psycopg_imported_by_help'] else 'no'}.",
        "",
        "Targets:",
        *target_lines,
        "",
        "Where the stalls happened:",
        *where,
        "",
        f"Total benchmark time {elapsed_s:.0f} s. Reproduce (repository root, venv active):",
        "",
        "```sh",
        reproduce_command(args, server.backend),
        "```",
    ])
    return text, missed


def _lock_waits(results: list[RunResult]) -> str:
    blockers: dict[tuple[str, str, str], int] = {}
    for result in results:
        for b in result.blockers:
            blockers[(b.application, b.waiting_for, b.query)] = blockers.get((b.application, b.waiting_for, b.query),
                                                                             0) + b.samples
    if not blockers:
        return f"the writer was never seen waiting on a lock (sampled every {SAMPLE_S * 1000:g} ms)"
    return "the writer waited on a lock behind " + "; ".join(
        f"{app} ({samples} samples, writer wanted {mode}): `{query[:90]}…`"
        for (app, mode, query), samples in sorted(blockers.items(), key=lambda kv: -kv[1]))


def _step_medians(results: list[RunResult]) -> dict[str, float]:
    durations: dict[str, list[float]] = {}
    for result in results:
        for step in result.steps:
            durations.setdefault(step["step"], []).append(float(step["duration_s"]))
    return {step: statistics.median(values) for step, values in durations.items()}


# ---------------------------------------------------------------- main


def default_backend() -> str:
    return os.environ.get("FAVMIGRATE_PG") or ("local" if PG15_BINDIR.is_dir() else "embedded")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.apply_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=lambda s: sorted({int(x) for x in s.split(",")}),
                        default=[200_000, 1_000_000], help="comma-separated table sizes (default 200000,1000000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario and size; cells are medians")
    parser.add_argument("--rate", type=float, default=50.0, help="writer transactions per second")
    parser.add_argument("--seed", type=int, default=42, help="seed of the sample data")
    parser.add_argument("--verify-repeat", type=int, default=7, help="timed verify --no-data runs per size")
    parser.add_argument("--backend", default=None,
                        help="docker, local or embedded (default: $FAVMIGRATE_PG, else local PostgreSQL 15 "
                        "when installed, else embedded)")
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement to this file")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.rate <= 0 or min(args.rows) < 1000:
        parser.error("--runs ≥ 1, --rate > 0 and every --rows ≥ 1000")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    backend = args.backend or default_backend()
    began = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - began:6.1f}s] {message}", file=sys.stderr, flush=True)

    start = startup(repeat=5)
    results: dict[tuple[Kind, int], list[RunResult]] = {}
    with disposable_postgres(backend) as server:
        say(f"PostgreSQL {server.version} ({server.backend}) started")
        for rows in args.rows:
            say(f"loading the {rows:,}-row template")
            say(f"template ready in {build_template(server, rows, args.seed):.1f} s")
        for rows in args.rows:
            results[(Kind.IDLE, rows)] = [run_scenario(server, Kind.IDLE, rows, 0, args)]
            for run in range(args.runs):
                # alternate the order so neither scenario always runs on a warmer machine
                order = (Kind.SEED, Kind.FAVMIGRATE) if run % 2 == 0 else (Kind.FAVMIGRATE, Kind.SEED)
                for kind in order:
                    result = run_scenario(server, kind, rows, run, args)
                    results.setdefault((kind, rows), []).append(result)
                    say(f"{rows:,} rows, {kind.value}, run {run + 1}: migration {result.migration_s:.2f} s, "
                        f"writer worst {ms_text(result.worst)}, p99 {ms_text(result.p99)} "
                        f"({len(result.txns)} txns, {result.errors} errors; worst {result.worst_during()})")
        verify_s = time_verify(server, args.rows, args.verify_repeat)
        say("verify --no-data: " + ", ".join(f"{rows:,} rows {took:.3f} s" for rows, took in verify_s.items()))
        text, missed = render(results, verify_s, start, args, server, time.perf_counter() - began)
        if args.json:
            args.json.write_text(json.dumps({
                "server": {"version": server.version, "backend": server.backend},
                "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "startup": start, "verify_no_data_s": {str(k): v for k, v in verify_s.items()},
                "runs": [r.summary() for v in results.values() for r in v],
            }, indent=2) + "\n", encoding="utf-8")
    print(text)
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
