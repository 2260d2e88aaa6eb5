"""demo: the whole lifecycle on a disposable PostgreSQL loaded with a sample, every stage checked.

An orchestrator above the jobs: it starts the disposable server (`favmigrate.sandbox`), loads the sample,
and calls each job's library function in the order a DBA runs them: lint (the seed's hand-written SQL next
to the SQL apply would run) -> plan -> apply while an application writer commits at a steady rate (and
the seed's SQL under the same writer on a copy of the database) -> verify -> backfill -> explain ->
report -> rollback -> verify --absent. Each stage returns a `StageResult` saying whether it did what it
should; the first that did not ends the run. Progress goes through the callbacks of `DemoProgress`.
Everything lives in the server's temp directory, removed when the `demo` block is left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from favmigrate.apply import ApplyOptions, apply_migration
from favmigrate.backfill import BackfillOptions, OnBackfillEvent, backfill
from favmigrate.db import open_session
from favmigrate.errors import ExitCode, FavmigrateError, UsageError
from favmigrate.explain import ExplainOptions, explain
from favmigrate.lint import LintOptions, Source, lint
from favmigrate.plan import ObjectState, plan
from favmigrate.report import ReportOptions, priority_report
from favmigrate.results import plural
from favmigrate.rollback import RollbackOptions, rollback_migration
from favmigrate.runner import OnEvent
from favmigrate.sample import SEED_SQL_FILE, expected_rejects, load_sample, sample_writes, seed_sql
from favmigrate.sandbox import Server, disposable_postgres
from favmigrate.script import dry_run_script
from favmigrate.spec import MigrationSpec, Target, load_spec, resolve_spec
from favmigrate.stall import Recording, WriteTransaction, writes_during
from favmigrate.verify import verify

DEFAULT_ROWS = 100_000
WRITER_RATE = 50.0  # application write transactions per second during apply (the benchmark's rate)
SAMPLE_FILE = "sample.sql"  # a spec folder's own sample: creates its tables and rows
SAMPLE_ROWS_SETTING = "favmigrate.sample_rows"  # what --rows asks of a spec's sample.sql (current_setting)
SAMPLE_DB = "favmigrate_demo_sample"  # the loaded sample, copied for each run below, then dropped
DEMO_DB = "favmigrate_demo"  # where the lifecycle runs (left running with --keep)
SEED_SQL_DB = "favmigrate_demo_seed_sql"  # a copy where the seed's SQL runs under the same writer
SEED_SQL_APP = "seed-sql"


class Stage(StrEnum):
    SANDBOX = "sandbox"
    LINT = "lint"
    PLAN = "plan"
    APPLY = "apply"
    VERIFY = "verify"
    BACKFILL = "backfill"
    EXPLAIN = "explain"
    REPORT = "report"
    ROLLBACK = "rollback"
    VERIFY_ABSENT = "verify --absent"


# The heading each stage is shown under (for a migration without hand-written SQL to compare: UNCOMPARED).
UNCOMPARED = {
    Stage.LINT: "the SQL favmigrate apply runs",
    Stage.APPLY: "online, while the application writes",
}
TITLES = {
    Stage.SANDBOX: "a disposable PostgreSQL with the sample data",
    Stage.LINT: "the seed's hand-written SQL next to the SQL favmigrate apply runs",
    Stage.PLAN: "what is missing, and the SQL apply would run",
    Stage.APPLY: "online, while the application writes (and the seed's SQL under the same writer, on a copy)",
    Stage.VERIFY: "the end state against the catalogs",
    Stage.BACKFILL: "the legacy metadata into the new columns",
    Stage.EXPLAIN: "the queries use the new indexes",
    Stage.REPORT: "priority analytics from the new columns",
    Stage.ROLLBACK: "values written back into metadata, then the objects dropped",
    Stage.VERIFY_ABSENT: "nothing of the migration is left",
}


@dataclass(frozen=True)
class StageResult:
    """One stage: whether it did what it should (``expected``), what it found, and the job's own report."""

    stage: Stage
    ok: bool
    summary: str
    expected: str
    data: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage.value, "ok": self.ok, "summary": self.summary,
                "expected": self.expected, "elapsed_s": round(self.elapsed_s, 3), "data": self.data}


@dataclass(frozen=True)
class DemoReport:
    """The whole run: every stage that ran, in order, and those left out after a failure."""

    spec_id: str
    rows: int
    server: dict[str, Any]
    stages: tuple[StageResult, ...]
    not_run: tuple[Stage, ...]
    dsn: str

    @property
    def ok(self) -> bool:
        return not self.not_run and all(stage.ok for stage in self.stages)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.ok else ExitCode.FAILED

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "command": "demo", "migration_id": self.spec_id, "rows": self.rows,
                "server": self.server, "stages": [stage.to_dict() for stage in self.stages],
                "not_run": [stage.value for stage in self.not_run]}


class DemoEventKind(StrEnum):
    STAGE_START = "stage-start"
    STAGE_DONE = "stage-done"
    NOTE = "note"


@dataclass(frozen=True)
class DemoEvent:
    kind: DemoEventKind
    stage: Stage
    number: int  # 1-based position of the stage in the run
    total: int
    message: str = ""
    result: StageResult | None = None


def _ignore(_: Any) -> None:
    return None


@dataclass(frozen=True)
class DemoProgress:
    """Where the demo reports: its own stages and notes, and the events of the jobs it runs."""

    on_demo: Callable[[DemoEvent], None] = _ignore
    on_steps: OnEvent = _ignore  # apply and rollback
    on_backfill: OnBackfillEvent = _ignore
    warn: Callable[[str], None] = _ignore


@dataclass(frozen=True)
class DemoOptions:
    rows: int = DEFAULT_ROWS
    seed: int = 42
    backend: str | None = None  # the disposable server's backend (favmigrate.sandbox); None: embedded
    spec_path: Path | None = None  # another migration and its folder's sample.sql; None: Phase 4


@dataclass(frozen=True)
class _Sample:
    """How a spec's sample is loaded, what the application writes to it, and what its backfill rejects."""

    load: Callable[[psycopg.Connection[Any]], str]  # loads it; returns a one-line description
    writes: Callable[[psycopg.Connection[Any]], WriteTransaction]
    expected_rejects: dict[str, int] | None  # None: not known
    seed_sql: str | None  # the hand-written SQL this migration replaces, when there is one


def _phase4_sample(options: DemoOptions) -> _Sample:
    def load(conn: psycopg.Connection[Any]) -> str:
        summary = load_sample(conn, rows=options.rows, seed=options.seed)
        return (f"{summary.session_requests:,} session_requests ({summary.legacy_rows:,} carrying legacy metadata), "
                f"{summary.mechanics:,} mechanics")

    rejects = {reason: count for reason, count in expected_rejects(options.rows).items() if count}
    return _Sample(load, lambda conn: sample_writes(options.rows, seed=options.seed), rejects, seed_sql())


def _spec_sample(spec: MigrationSpec, text: str, options: DemoOptions) -> _Sample:
    target = Target.of(spec)

    def load(conn: psycopg.Connection[Any]) -> str:
        with conn.transaction():
            conn.execute("SELECT set_config(%s, %s, true)", (SAMPLE_ROWS_SETTING, str(options.rows)))
            conn.execute(text)  # no parameters: the simple query protocol runs every statement of the file
        count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(target.table)).fetchone()
        return f"{count[0] if count else 0:,} rows in {target.table_name} from the spec's {SAMPLE_FILE}"

    return _Sample(load, lambda conn: touch_writes(conn, target), None, None)


def touch_writes(conn: psycopg.Connection[Any], target: Target, rows: int = 1000) -> WriteTransaction:
    """Application-like writes on any spec's table: each transaction updates one row (of the first ``rows`` by
    primary key) without changing it, which takes the same locks an application's update does. Writes."""
    pk = sql.Identifier(target.spec.primary_key)
    keys = [row[0] for row in conn.execute(sql.SQL("SELECT {} FROM {} ORDER BY 1 LIMIT {}").format(
        pk, target.table, sql.Literal(rows))).fetchall()]
    if not keys:
        raise UsageError(f"the sample left {target.table_name} empty: there is nothing for the writer to update")
    metadata = sql.Identifier(target.spec.metadata_column)
    update = sql.SQL("UPDATE {} SET {} = {} WHERE {} = %s").format(target.table, metadata, metadata, pk)

    def write(write_conn: psycopg.Connection[Any], n: int) -> str:
        with write_conn.transaction():
            write_conn.execute(update, (keys[n % len(keys)],))
        return "update"

    return write


def _sample_for(spec: MigrationSpec, options: DemoOptions) -> _Sample:
    """The sample of ``spec``: its folder's sample.sql, else for the built-in migration the Phase 4 sample.
    Raises UsageError when there is none."""
    folder = spec.folder
    file = folder.joinpath(SAMPLE_FILE) if folder is not None else None
    if file is not None and file.is_file():
        return _spec_sample(spec, file.read_text(encoding="utf-8"), options)
    if spec.id == load_spec().id:
        return _phase4_sample(options)
    raise UsageError(f"the migration {spec.id} brings no sample to run the demo on",
                     hint=f"add a {SAMPLE_FILE} to its folder that creates its tables and rows "
                     f"(current_setting('{SAMPLE_ROWS_SETTING}') is --rows)")


# ---------------------------------------------------------------- the stages


def _session(dsn: str, progress: DemoProgress, *, writes: bool = True) -> Any:
    """A session as the CLI opens one for a command: session-level statement_timeout off."""
    return open_session(dsn, writes=writes, statement_timeout_s=None, warn=progress.warn)


def _lint(dsn: str, target: Target, sample: _Sample, progress: DemoProgress) -> StageResult:
    with _session(dsn, progress, writes=False) as conn:
        dry_run = apply_migration(conn, target, ApplyOptions(dry_run=True))
    own = lint([Source("favmigrate apply --dry-run", dry_run_script(dry_run.to_dict()))], LintOptions())
    data: dict[str, Any] = {"favmigrate": own.to_dict()}
    summary = f"favmigrate's own SQL ({plural(len(dry_run.steps), 'step')}): {plural(len(own.findings), 'finding')}"
    ok = own.exit_code is ExitCode.OK
    expected = "favmigrate's SQL lints clean"
    if sample.seed_sql is not None:
        seed = lint([Source(SEED_SQL_FILE, sample.seed_sql)], LintOptions())
        data["seed_sql"] = seed.to_dict()
        rules = sorted({finding.rule for finding in seed.findings})
        summary = (f"the seed's SQL: {plural(len(seed.findings), 'finding')} ({', '.join(rules)}); " + summary)
        ok = ok and seed.exit_code is ExitCode.FAILED
        expected += "; the seed's SQL is flagged"
    return StageResult(Stage.LINT, ok, summary, expected, data)


def _plan(dsn: str, target: Target, progress: DemoProgress) -> StageResult:
    with _session(dsn, progress, writes=False) as conn:
        report = plan(conn, target)
    missing = [o for o in report.objects if o.state is ObjectState.MISSING]
    ok = len(missing) == len(report.objects) and bool(report.steps)
    summary = (f"{len(missing)} of {plural(len(report.objects), 'object')} missing; apply would run "
               f"{plural(len(report.steps), 'step')}")
    return StageResult(Stage.PLAN, ok, summary, "every object missing on the fresh sample, with the steps to add "
                       "them", report.to_dict())


def _seed_sql_stall(server: Server, sample: _Sample, progress: DemoProgress, number: int, total: int,
                    ) -> Recording | None:
    """The writer's stalls while the seed's SQL runs as one query (as a SQL editor sends it) on the copy."""
    if sample.seed_sql is None:
        return None
    progress.on_demo(DemoEvent(DemoEventKind.NOTE, Stage.APPLY, number, total,
                               "the seed's SQL, sent as one query as a SQL editor does, on a copy of the database"))
    dsn = server.dsn_for(SEED_SQL_DB)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            writes = sample.writes(conn)
        with (psycopg.connect(dsn, autocommit=True, application_name=SEED_SQL_APP) as conn,
              writes_during(dsn, writes, rate=WRITER_RATE) as recording):
            conn.execute(sample.seed_sql)
    finally:
        server.drop_database(SEED_SQL_DB)
    return recording


def _apply(server: Server, dsn: str, target: Target, sample: _Sample, progress: DemoProgress, number: int,
           total: int) -> StageResult:
    seed = _seed_sql_stall(server, sample, progress, number, total)
    progress.on_demo(DemoEvent(DemoEventKind.NOTE, Stage.APPLY, number, total,
                               f"favmigrate apply while the application writes {WRITER_RATE:g} transactions/s"))
    with _session(dsn, progress) as conn:
        writes = sample.writes(conn)
        with writes_during(dsn, writes, rate=WRITER_RATE) as recording:
            report = apply_migration(conn, target, ApplyOptions(), on_event=progress.on_steps)
    data: dict[str, Any] = {"report": report.to_dict(), "writer": recording.to_dict(),
                            "seed_sql_writer": seed.to_dict() if seed else None}
    applied = sum(1 for step in report.steps if step.outcome.value == "applied")
    summary = (f"{plural(applied, 'step')} applied and verified; the application's worst write stall "
               f"{recording.worst * 1000:,.0f} ms")
    if seed is not None:
        ratio = seed.worst / recording.worst if recording.worst else 0.0
        data["worst_stall_ratio"] = round(ratio, 1)
        summary += f", under the seed's SQL {seed.worst * 1000:,.0f} ms ({ratio:.1f}x)"
    ok = report.ok and recording.errors == 0
    return StageResult(Stage.APPLY, ok, summary, "apply and its verification pass; no application write fails",
                       data)


def _verify(dsn: str, target: Target, progress: DemoProgress, *, absent: bool) -> StageResult:
    with _session(dsn, progress, writes=False) as conn:
        report = verify(conn, target, absent=absent)
    counts = report.counts()
    summary = f"{counts['pass']} pass, {counts['fail']} fail, {counts['warn']} warn"
    warned = [c.message for c in report.checks if c.status.value == "warn"]
    if warned:
        summary += f" ({'; '.join(warned)})"
    stage = Stage.VERIFY_ABSENT if absent else Stage.VERIFY
    return StageResult(stage, report.ok, summary, "exit 0: every check passes", report.to_dict())


def _backfill(dsn: str, target: Target, sample: _Sample, progress: DemoProgress) -> StageResult:
    with _session(dsn, progress) as conn:
        report = backfill(conn, target, BackfillOptions(), on_event=progress.on_backfill)
    data = report.to_dict()
    rejected = {reason: count for reason, count in data["rejected"].items() if count}
    summary = (f"{data['rows_updated']:,} rows updated, {data['rejected_total']:,} values rejected "
               f"({', '.join(f'{reason} {count:,}' for reason, count in rejected.items()) or 'none'}), "
               f"{data['conflicts']:,} conflicts")
    ok = report.ok and data["conflicts"] == 0
    expected = "done, no conflict"
    if sample.expected_rejects is not None:
        ok = ok and rejected == sample.expected_rejects
        expected += "; the rejects per reason are the sample's known counts"
        data["expected_rejected"] = sample.expected_rejects
    return StageResult(Stage.BACKFILL, ok, summary, expected, data)


def _explain(dsn: str, target: Target, progress: DemoProgress) -> StageResult:
    with _session(dsn, progress, writes=False) as conn:
        report = explain(conn, target, ExplainOptions())
    data = report.to_dict()
    statuses = [f"{query['id']} {query['status']}" for query in data["queries"]]
    return StageResult(Stage.EXPLAIN, report.exit_code is ExitCode.OK, "; ".join(statuses) or "no query",
                       "no query fails (warn: only the forced plan uses the index, normal on a small table)",
                       data)


def _report(dsn: str, target: Target, backfilled: StageResult, progress: DemoProgress) -> StageResult:
    with _session(dsn, progress, writes=False) as conn:
        report = priority_report(conn, target, ReportOptions())
    data = report.to_dict()
    totals = data["totals"]
    preferred = backfilled.data["updated"].get("preferred_mechanic_id")
    rate = "-" if totals["success_rate_pct"] is None else f"{totals['success_rate_pct']:.2f}%"
    summary = (f"{totals['requests']:,} priority requests over {plural(data['mechanics_total'], 'mechanic')}, "
               f"success rate {rate}")
    return StageResult(Stage.REPORT, totals["requests"] == preferred,
                       summary, f"every request the backfill gave a preferred mechanic is counted ({preferred:,})",
                       data)


def _column_values(conn: psycopg.Connection[Any], target: Target) -> dict[Any, dict[str, str]]:
    """Every row's column values that hold data (not NULL, not at the column's default), by primary key, as
    canonical JSON text (coltypes: one text per value)."""
    spec = target.spec
    held: list[sql.Composable] = []
    for column in spec.columns:
        value = sql.Identifier(column.name)
        at_default = sql.SQL("FALSE") if column.default_text is None else column.rules.same(
            column.rules.literal(column.default_text), value)
        held.append(sql.SQL("CASE WHEN {value} IS NOT NULL AND NOT {at_default} THEN ({json})::text END").format(
            value=value, at_default=at_default, json=column.rules.write_back(value)))
    query = sql.SQL("SELECT {}, {} FROM {}").format(sql.Identifier(spec.primary_key), sql.SQL(", ").join(held),
                                                   target.table)
    found: dict[Any, dict[str, str]] = {}
    with conn.cursor(name="favmigrate_demo_values") as cursor, conn.transaction():
        for key, *values in cursor.execute(query):
            texts = {column.name: text for column, text in zip(spec.columns, values, strict=True) if text is not None}
            if texts:
                found[key] = texts
    return found


def _values_not_in_metadata(conn: psycopg.Connection[Any], target: Target, before: dict[Any, dict[str, str]]) -> int:
    """How many of the values ``before`` held are not in metadata under their legacy key, read as the backfill
    reads it (compared as canonical JSON text)."""
    spec = target.spec
    meta = sql.Identifier(spec.metadata_column)
    read = [sql.SQL("({})::text").format(column.rules.write_back(column.rules.read(
        sql.SQL("{} -> {}").format(meta, sql.Literal(column.legacy_key))))) for column in spec.columns]
    query = sql.SQL("SELECT {}, {} FROM {}").format(sql.Identifier(spec.primary_key), sql.SQL(", ").join(read),
                                                   target.table)
    missing = sum(len(values) for values in before.values())
    with conn.cursor(name="favmigrate_demo_metadata") as cursor, conn.transaction():
        for key, *legacy in cursor.execute(query):
            held = before.get(key)
            if not held:
                continue
            reads = {column.name: text for column, text in zip(spec.columns, legacy, strict=True)}
            missing -= sum(reads[name] == text for name, text in held.items())
    return missing


def _rollback(dsn: str, target: Target, progress: DemoProgress) -> StageResult:
    with _session(dsn, progress) as conn:
        before = _column_values(conn, target)
        report = rollback_migration(conn, target, RollbackOptions(), on_event=progress.on_steps)
        not_kept = _values_not_in_metadata(conn, target, before)
    data = report.to_dict()
    values = sum(len(held) for held in before.values())
    data["values_checked"] = values
    data["values_not_in_metadata"] = not_kept
    preserved = data.get("preservation") or {}
    summary = (f"{values:,} column values (besides defaults) in {plural(len(before), 'row')}: "
               f"{values - not_kept:,} found in metadata afterwards; "
               f"{preserved.get('rows_written', 0):,} rows written back, objects dropped")
    return StageResult(Stage.ROLLBACK, report.ok and not_kept == 0, summary,
                       "rolled back and verified absent; every value is in metadata, read back as backfill reads it",
                       data)


# ---------------------------------------------------------------- the run


def _stages(spec: MigrationSpec) -> tuple[Stage, ...]:
    report = (Stage.REPORT,) if spec.id == load_spec().id else ()  # the priority analytics are Phase 4's
    return (Stage.SANDBOX, Stage.LINT, Stage.PLAN, Stage.APPLY, Stage.VERIFY, Stage.BACKFILL, Stage.EXPLAIN,
            *report, Stage.ROLLBACK, Stage.VERIFY_ABSENT)


def _load(server: Server, sample: _Sample, options: DemoOptions, progress: DemoProgress,
          number: int, total: int) -> StageResult:
    """Load the sample once and copy it for the lifecycle and for the seed's SQL."""
    progress.on_demo(DemoEvent(DemoEventKind.NOTE, Stage.SANDBOX, number, total,
                               f"PostgreSQL {server.version} ({server.backend}) started; loading the sample"))
    with psycopg.connect(server.create_database(SAMPLE_DB), autocommit=True) as conn:
        described = sample.load(conn)
    server.create_database(DEMO_DB, template=SAMPLE_DB)
    if sample.seed_sql is not None:
        server.create_database(SEED_SQL_DB, template=SAMPLE_DB)
    server.drop_database(SAMPLE_DB)
    data = {"version": server.version, "backend": server.backend, "rows": options.rows, "sample": described}
    return StageResult(Stage.SANDBOX, True, f"PostgreSQL {server.version} ({server.backend}): {described}",
                       "the server starts and the sample loads", data)


@contextlib.contextmanager
def demo(options: DemoOptions, progress: DemoProgress | None = None) -> Iterator[DemoReport]:
    """Run the lifecycle on a disposable PostgreSQL and yield its report; the server keeps running until the
    block is left, then it is stopped and its files removed. Writes only to that server.

    Raises UsageError (a --spec without a sample, a bad spec), SandboxUnavailable / SandboxStartFailed
    (no server can start): nothing was left behind. KeyboardInterrupt stops the run; the server is removed.
    """
    progress = progress or DemoProgress()
    if options.rows < 1:
        raise UsageError(f"rows must be at least 1, not {options.rows}")
    spec = resolve_spec(options.spec_path)
    target = Target.of(spec)
    sample = _sample_for(spec, options)
    stages = _stages(spec)
    total = len(stages)
    with disposable_postgres(options.backend or "embedded") as server:
        dsn = server.dsn_for(DEMO_DB)
        results: list[StageResult] = []
        runs: dict[Stage, Callable[[int], StageResult]] = {
            Stage.SANDBOX: lambda n: _load(server, sample, options, progress, n, total),
            Stage.LINT: lambda n: _lint(dsn, target, sample, progress),
            Stage.PLAN: lambda n: _plan(dsn, target, progress),
            Stage.APPLY: lambda n: _apply(server, dsn, target, sample, progress, n, total),
            Stage.VERIFY: lambda n: _verify(dsn, target, progress, absent=False),
            Stage.BACKFILL: lambda n: _backfill(dsn, target, sample, progress),
            Stage.EXPLAIN: lambda n: _explain(dsn, target, progress),
            Stage.REPORT: lambda n: _report(dsn, target, _result(results, Stage.BACKFILL), progress),
            Stage.ROLLBACK: lambda n: _rollback(dsn, target, progress),
            Stage.VERIFY_ABSENT: lambda n: _verify(dsn, target, progress, absent=True),
        }
        titles = TITLES if sample.seed_sql is not None else {**TITLES, **UNCOMPARED}
        for number, stage in enumerate(stages, start=1):
            progress.on_demo(DemoEvent(DemoEventKind.STAGE_START, stage, number, total, titles[stage]))
            started = time.perf_counter()
            try:
                result = runs[stage](number)
            except FavmigrateError as exc:
                result = StageResult(stage, False, exc.message, "the stage runs",
                                     {"error": exc.message, "hint": exc.hint})
            result = dataclasses.replace(result, elapsed_s=time.perf_counter() - started)
            results.append(result)
            progress.on_demo(DemoEvent(DemoEventKind.STAGE_DONE, stage, number, total, result=result))
            if not result.ok:
                break
        facts = {"version": server.version, "backend": server.backend, "postmaster_pid": server.postmaster_pid,
                 "workdir": server.workdir}
        yield DemoReport(spec.id, options.rows, facts, tuple(results), stages[len(results):], dsn)


def _result(results: list[StageResult], stage: Stage) -> StageResult:
    return next(result for result in results if result.stage is stage)
