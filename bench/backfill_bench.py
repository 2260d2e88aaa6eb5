"""How fast is `favmigrate backfill`, and what does it cost the application? Measured against the ceiling.

One run starts a disposable PostgreSQL, loads the sample ``session_requests`` (about a third of the
rows carry the legacy keys) into a template database, gives the table the extra indexes a real one
carries (20+ in all), and then, each on a fresh ``CREATE DATABASE ... TEMPLATE`` clone, while a
writer thread commits small INSERT/UPDATE transactions at ~50 txn/s on its own connection:

* ``single``: one hand-written ``UPDATE ... FROM`` doing the same validated work in one statement
  (the physical ceiling: no batches, no checkpoint, no reject bookkeeping, parallel scan, no JIT);
* ``favmigrate backfill`` (the installed command) at its default batch size, at smaller and larger
  batches, and walking by primary key instead of page ranges;
* the other order: ``favmigrate backfill`` before the migration's three indexes exist, then
  ``favmigrate apply`` building them, against building them first (on empty columns) and
  backfilling after;
* rollback: one ``UPDATE`` writing every column value back into metadata, then the drops, against
  ``favmigrate rollback`` on one connection (the default) and with ``--jobs 2``.

Throughput is rows updated per second; every figure is reported as a ratio to the single statement.
Writes only to the disposable server, which is always stopped and deleted.

    python -m bench.backfill_bench                    # 1M rows (~6 min on 2 cores)
    python -m bench.backfill_bench --rows 100000      # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from favmigrate.apply import apply_migration
from favmigrate.backfill import DEFAULT_BATCH_SIZE
from favmigrate.backfill_sql import actions, assignments, backfill_columns, candidate, classify
from favmigrate.ops import down_steps, migration_steps
from favmigrate.rollback import holds_values_condition
from favmigrate.sample import load_sample
from favmigrate.sandbox import Server, disposable_postgres, find_local_bindir
from favmigrate.spec import Target, load_spec
from favmigrate.stall import Recording, WriteTransaction, writes_during

WRITER_RATE = 50.0  # transactions per second
THROUGHPUT_TARGET = 0.90  # of the single statement's rows/s, at the default batch size
STALL_TARGET = 50.0  # the writer's worst stall at least this many times below the single statement's
ROLLBACK_JOBS = 2  # rollback --jobs measured beside the default (one connection)

# Indexes a production session_requests carries besides its primary key, the sample's two and the
# migration's three: every non-HOT update of a row touches each of them.
EXTRA_INDEXES = (
    "(customer_id)", "(mechanic_id)", "(session_type)", "(plan_code)", "(accepted_at)", "(notification_sent_at)",
    "(updated_at)", "(status, created_at)", "(customer_id, status)", "(mechanic_id, status)",
    "(session_type, status)", "(lower(plan_code))", "(created_at DESC, status)", "((metadata ->> 'source'))",
    "((metadata ->> 'client_version'))", "(customer_id, created_at)", "(plan_code, created_at)",
)
MIGRATION_INDEX_STEPS = ("index-preferred-mechanic", "index-priority-analytics", "index-priority-timeout")


# ---------------------------------------------------------------- the writer


def application_writes(dsn: str) -> WriteTransaction:
    """The application's transactions: a third insert a request with legacy metadata (older application
    code), the others change the status of a request anywhere in the table."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        # rows anywhere in the table, in random order (a sample's pages come in physical order, and rows holding
        # values can sit together at the table's end)
        ids = [r[0] for r in conn.execute("SELECT id FROM session_requests TABLESAMPLE SYSTEM (5) ORDER BY random() "
                                          "LIMIT 20000")]
        mechanic = conn.execute("SELECT id::text FROM mechanics LIMIT 1").fetchone()[0]

    def write(conn: psycopg.Connection[Any], n: int) -> str:
        if n % 3 == 0:
            conn.execute("INSERT INTO session_requests (customer_id, metadata) VALUES (gen_random_uuid(), "
                         "jsonb_build_object('source', 'web', 'priority_mechanic_id', %s::text, "
                         "'priority_window_minutes', 15))", (mechanic,))
            return "insert"
        conn.execute("UPDATE session_requests SET status = 'cancelled' WHERE id = %s", (ids[n % len(ids)],))
        return "update"

    return write


@contextmanager
def writer(dsn: str) -> Iterator[Recording]:
    """The application's transactions at WRITER_RATE on their own connection, each latency recorded."""
    # no lock sampler: only the stalls are reported, and its 100 queries a second would load the two cores
    with writes_during(dsn, application_writes(dsn), rate=WRITER_RATE, application="bench-writer",
                       sample_locks=False) as recording:
        yield recording


# ---------------------------------------------------------------- the database


def execute(dsn: str, statement: sql.Composable | str, params: Any = None) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(statement, params).fetchall() if params is not None else conn.execute(statement)


def clone(server: Server, template: str) -> str:
    dsn = server.create_database(f"bench_{uuid.uuid4().hex[:10]}", template=template)
    execute(dsn, "CHECKPOINT")
    return dsn


def drop(server: Server, dsn: str) -> None:
    server.drop_database(str(conninfo_to_dict(dsn)["dbname"]))


@dataclass(frozen=True)
class Templates:
    applied: str  # the whole migration applied, columns empty
    no_index: str  # columns and foreign key, not the migration's three indexes
    index_build_s: float  # apply's time building those three on the empty columns


def build_templates(server: Server, base: str, name: str, extra_indexes: tuple[str, ...],
                    say: Callable[[str], None]) -> Templates:
    """Template databases named ``name``_* from ``base`` (the loaded sample, see load_plain) with
    ``extra_indexes``: every table variant starts from identical data."""
    target = Target(load_spec())
    with psycopg.connect(server.create_database(f"{name}_base", template=base), autocommit=True) as conn:
        say(f"{name}: building {len(extra_indexes)} more indexes")
        for n, columns in enumerate(extra_indexes):
            conn.execute(sql.SQL("CREATE INDEX {} ON session_requests {}").format(
                sql.Identifier(f"session_requests_extra_{n}_idx"), sql.SQL(columns)))
        for step in migration_steps(target):  # columns and foreign key, not the indexes
            if step.name not in MIGRATION_INDEX_STEPS:
                for statement in step.up:
                    conn.execute(statement)
        conn.execute("VACUUM ANALYZE session_requests")
    templates = Templates(f"{name}_applied", f"{name}_no_index", 0.0)
    server.create_database(templates.no_index, template=f"{name}_base")
    with psycopg.connect(server.create_database(templates.applied, template=f"{name}_base"),
                         autocommit=True) as conn:
        began = time.monotonic()
        report = apply_migration(conn, target)
        index_build_s = time.monotonic() - began
        assert report.ok, report.to_dict()
        conn.execute("VACUUM ANALYZE session_requests")
    server.drop_database(f"{name}_base")
    return replace(templates, index_build_s=index_build_s)


def load_plain(server: Server, rows: int, say: Callable[[str], None]) -> str:
    """A template of the sample alone (its primary key and two indexes), the base of both tables."""
    with psycopg.connect(server.create_database("bench_plain"), autocommit=True) as conn:
        say(f"loading {rows:,} rows")
        load_sample(conn, rows=rows)
    return "bench_plain"


# ---------------------------------------------------------------- what is measured


@dataclass
class Result:
    name: str
    seconds: float
    rows_updated: int
    longest_txn_s: float | None
    stalls: Recording
    note: str = ""

    @property
    def rows_per_s(self) -> float:
        return self.rows_updated / self.seconds if self.seconds else 0.0


def single_statement(target: Target) -> sql.Composed:
    """The same validation and the same fill rules, as one UPDATE over the whole table."""
    columns = backfill_columns(target)
    classified = classify(target, columns, in_batch=sql.SQL("TRUE"),
                          candidate=candidate(target, columns, "t", pending=False), row_lock=False,
                          lock_references=False)
    return classified + sql.SQL(
        """,
        updated AS (
            UPDATE {table} AS t
            SET {assignments}
            FROM decided AS d
            WHERE t.ctid = d.row_ctid AND 'update' IN ({actions})
            RETURNING 1
        )
        SELECT count(*) FROM updated
        """
    ).format(table=target.table, assignments=assignments(columns), actions=actions(columns))


def run_single(dsn: str) -> Result:
    statement = single_statement(Target(load_spec()))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET jit = off")
        with writer(dsn) as stalls:
            began = time.monotonic()
            with conn.transaction():
                updated = conn.execute(statement, {"overwrite": False}).fetchone()[0]
            seconds = time.monotonic() - began
    return Result("single UPDATE ... FROM (ceiling)", seconds, updated, seconds, stalls)


def favmigrate_command() -> list[str]:
    found = shutil.which("favmigrate")
    return [found] if found else [sys.executable, "-m", "favmigrate.cli"]


def timed_command(dsn: str, name: str, *args: str) -> tuple[dict[str, Any], float, Any]:
    """Run one favmigrate command (JSON output) while the writer commits: its report, seconds and stalls."""
    command = [*favmigrate_command(), *args[:1], "--dsn", dsn, "--format", "json", "--quiet", *args[1:]]
    with writer(dsn) as stalls:
        began = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}): {done.stderr.strip()}")
    return json.loads(done.stdout), seconds, stalls


def run_backfill(dsn: str, name: str, *args: str) -> Result:
    report, seconds, stalls = timed_command(dsn, name, "backfill", *args)
    return Result(name, seconds, report["rows_updated"], report["longest_batch_s"], stalls,
                  f"{report['batches']} batches, catch-up {report['catch_up']['rows_updated']} rows")


def run_apply(dsn: str) -> float:
    began = time.monotonic()
    done = subprocess.run([*favmigrate_command(), "apply", "--dsn", dsn, "--format", "json", "--quiet"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"apply failed: {done.stderr.strip()}")
    return time.monotonic() - began


# ---------------------------------------------------------------- rollback's write-back


def build_rollback_template(server: Server, applied: str, say: Callable[[str], None]) -> str:
    """The applied table backfilled, then its legacy keys removed from metadata (the Phase 4 code writes only
    the columns): every value rollback finds must be written back. bench.ids keeps the table's keys, so
    metadata is compared over these rows only (the writer inserts rows with random keys)."""
    target = Target(load_spec())
    keys = [c.legacy_key for c in target.spec.columns]
    with psycopg.connect(server.create_database("bench_rollback", template=applied), autocommit=True) as conn:
        say("rollback: backfilling, then removing the legacy keys")
        conn.execute("SET jit = off")
        with conn.transaction():
            conn.execute(single_statement(target), {"overwrite": False})
        conn.execute(sql.SQL("UPDATE {table} SET {meta} = {meta} - %(keys)s::text[] "
                             "WHERE jsonb_typeof({meta}) = 'object' AND {meta} ?| %(keys)s::text[]").format(
            table=target.table, meta=sql.Identifier(target.spec.metadata_column)), {"keys": keys})
        conn.execute(sql.SQL("CREATE SCHEMA bench; CREATE TABLE bench.ids AS SELECT {pk} AS id FROM {table}").format(
            pk=sql.Identifier(target.spec.primary_key), table=target.table))
        conn.execute("VACUUM ANALYZE session_requests")
    return "bench_rollback"


def write_back_statement(target: Target) -> sql.Composed:
    """Rollback's write-back as one UPDATE: each column value under its legacy key, rendered as rollback renders
    it (lower-case uuid, integer, ISO-8601 UTC time without a zero fraction); a column with a default only
    when it differs from it or the row holds another value."""
    columns = target.spec.columns
    others = sql.SQL(" OR ").join(sql.SQL("t.{} IS NOT NULL").format(sql.Identifier(c.name))
                                  for c in columns if c.default is None)
    pairs: list[sql.Composable] = []
    for column in columns:
        name = sql.Identifier(column.name)
        value: sql.Composable = sql.SQL("t.{}").format(name)
        if column.type.kind.value == "timestamptz":
            value = sql.SQL("replace(to_char(t.{} AT TIME ZONE 'UTC', {}), '.000000Z', 'Z')").format(
                name, sql.Literal('YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
        elif column.default is not None:
            value = sql.SQL("CASE WHEN {} OR t.{} <> {} THEN t.{} END").format(
                others, name, sql.Literal(column.default), name)
        pairs += [sql.Literal(column.legacy_key), value]
    meta = sql.Identifier(target.spec.metadata_column)
    return sql.SQL("UPDATE {table} AS t SET {meta} = t.{meta} || jsonb_strip_nulls(jsonb_build_object({pairs})) "
                   "WHERE {holds} AND jsonb_typeof(t.{meta}) = 'object'").format(
        table=target.table, meta=meta, pairs=sql.SQL(", ").join(pairs), holds=holds_values_condition(columns))


def metadata_md5(dsn: str) -> str:
    """md5 over the metadata of the template's rows, ordered by key."""
    return str(execute(dsn, "SELECT md5(string_agg(t.id::text || ' ' || t.metadata::text, E'\\n' ORDER BY t.id)) "
                            "FROM session_requests AS t JOIN bench.ids USING (id)", ())[0][0])


def run_single_rollback(dsn: str) -> Result:
    target = Target(load_spec())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET jit = off")
        with writer(dsn) as stalls:
            began = time.monotonic()
            with conn.transaction():
                updated = conn.execute(write_back_statement(target)).rowcount
            longest = time.monotonic() - began
            for step in down_steps(target):
                for statement in step.down:
                    conn.execute(statement)
            seconds = time.monotonic() - began
    return Result("single UPDATE writing back, then the drops (ceiling)", seconds, updated, longest, stalls,
                  f"metadata md5 {metadata_md5(dsn)[:12]}")


def run_rollback(dsn: str, name: str, *args: str) -> Result:
    report, seconds, stalls = timed_command(dsn, name, "rollback", "--yes", *args)
    steps = {s["step"]: s["duration_s"] for s in report["steps"]}
    timing = ", ".join(f"{step} {seconds:.1f}s" for step, seconds in steps.items() if seconds >= 0.05)
    return Result(name, seconds, report["preservation"]["rows_written"], None, stalls,
                  f"metadata md5 {metadata_md5(dsn)[:12]}; {timing}")


# ---------------------------------------------------------------- the report


def table(results: list[Result], ceiling: Result) -> str:
    lines = ["| run | rows updated/s | throughput vs single | longest transaction | writer worst stall | "
             "writer p99 | worst stall vs single | notes |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        ratio = r.rows_per_s / ceiling.rows_per_s if ceiling.rows_per_s else 0.0
        stall = ceiling.stalls.worst / r.stalls.worst if r.stalls.worst else float("inf")
        longest = "–" if r.longest_txn_s is None else f"{r.longest_txn_s * 1000:,.0f} ms"
        lines.append(f"| {r.name} | {r.rows_per_s:,.0f} | {ratio:.2f} | {longest} | "
                     f"{r.stalls.worst * 1000:,.0f} ms | {r.stalls.p99 * 1000:,.0f} ms | 1/{stall:,.0f} | {r.note} |")
    return "\n".join(lines)


def verdict(what: str, measured: Result, ceiling: Result) -> tuple[str, bool]:
    """One line checking the throughput and writer-stall targets of ``measured`` against ``ceiling``."""
    ratio = measured.rows_per_s / ceiling.rows_per_s if ceiling.rows_per_s else 0.0
    stall_ratio = ceiling.stalls.worst / max(measured.stalls.worst, 0.000001)
    ok = ratio >= THROUGHPUT_TARGET and stall_ratio >= STALL_TARGET
    return (f"- {what}: {ratio:.2f} of the single statement's rows/s (target >= {THROUGHPUT_TARGET}) "
            f"{'PASS' if ratio >= THROUGHPUT_TARGET else 'MISS'}; writer's worst stall 1/{stall_ratio:,.0f} of the "
            f"single statement's (target <= 1/{STALL_TARGET:.0f}) {'PASS' if stall_ratio >= STALL_TARGET else 'MISS'}"
            ), ok


VARIANTS = ("heavy", "light", "rollback")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backend", default=None, help="docker, local or embedded (default: FAVMIGRATE_PG, "
                        "else local when present, else embedded)")
    parser.add_argument("--only", default=",".join(VARIANTS),
                        help="what to measure, comma-separated: heavy (backfill, 23 indexes), light (backfill, "
                        "6 indexes), rollback (write-back and drops, on --rollback-table)")
    parser.add_argument("--extras", action="store_true", help="on the 23-index table, also other batch sizes, "
                        "--scan pk, and the backfill before the indexes exist")
    parser.add_argument("--batch-sizes", default="2000,30000", help="the batch sizes --extras compares")
    parser.add_argument("--rollback-table", choices=("heavy", "light"), default="heavy",
                        help="the table rollback is measured on")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    backend = args.backend or os.environ.get("FAVMIGRATE_PG") or ("local" if find_local_bindir() else "embedded")
    sizes = [int(s) for s in args.batch_sizes.split(",") if s]
    only = [v for v in args.only.split(",") if v]
    if unknown := set(only) - set(VARIANTS):
        parser.error(f"--only: unknown {', '.join(sorted(unknown))} (choose from {', '.join(VARIANTS)})")

    def say(message: str) -> None:
        print(f"# {message}", file=sys.stderr, flush=True)

    started = time.monotonic()
    verdicts: list[tuple[str, bool]] = []
    sections: list[str] = []
    with disposable_postgres(backend) as server:
        say(f"PostgreSQL {server.version} ({server.backend})")
        plain = load_plain(server, args.rows, say)

        def on_clone(results: list[Result], template: str, measure: Callable[[str], Result]) -> Result:
            dsn = clone(server, template)
            try:
                result = measure(dsn)
            finally:
                drop(server, dsn)
            say(f"{result.name}: {result.seconds:.1f}s, {result.rows_updated:,} rows, "
                f"worst stall {result.stalls.worst * 1000:.0f} ms")
            results.append(result)
            return result

        heavy: Templates | None = None
        if "heavy" in only or ("rollback" in only and args.rollback_table == "heavy"):
            heavy = build_templates(server, plain, "bench", EXTRA_INDEXES, say)
        if "heavy" in only:
            assert heavy is not None
            results: list[Result] = []
            ceiling = on_clone(results, heavy.applied, run_single)
            default = on_clone(results, heavy.applied,
                               lambda dsn: run_backfill(dsn, f"backfill, batch {DEFAULT_BATCH_SIZE:,} (default)"))
            lines = [table_heading("backfill", args.rows, server, heavy.applied), ""]
            if args.extras:
                for size in sizes:
                    on_clone(results, heavy.applied, lambda dsn, size=size: run_backfill(
                        dsn, f"backfill, batch {size:,}", "--batch-size", str(size)))
                on_clone(results, heavy.applied, lambda dsn: run_backfill(
                    dsn, f"backfill --scan pk, batch {DEFAULT_BATCH_SIZE:,}", "--scan", "pk"))

                def backfill_then_index(dsn: str) -> Result:
                    result = run_backfill(dsn, "backfill before the 3 indexes exist")
                    result.note += f"; then apply (indexes) {run_apply(dsn):.1f}s"
                    return result

                before = on_clone(results, heavy.no_index, backfill_then_index)
                index_after_s = float(before.note.rsplit("apply (indexes) ", 1)[1].rstrip("s"))
                order_first = heavy.index_build_s + default.seconds
                order_after = before.seconds + index_after_s
                lines.append(f"- order: indexes first, then backfill: {heavy.index_build_s:.1f}s + "
                             f"{default.seconds:.1f}s = {order_first:.1f}s; backfill first, then indexes: "
                             f"{before.seconds:.1f}s + {index_after_s:.1f}s = {order_after:.1f}s "
                             f"({order_first / order_after:.2f}x)")
            verdicts.append(verdict(f"backfill, 23 indexes, default batch size {DEFAULT_BATCH_SIZE:,}", default,
                                    ceiling))
            sections.append("\n".join([lines[0], "", table(results, ceiling), "", verdicts[-1][0], *lines[2:]]))
        light: Templates | None = None
        if "light" in only or ("rollback" in only and args.rollback_table == "light"):
            light = build_templates(server, plain, "light", (), say)
        if "light" in only:
            assert light is not None
            results = []
            ceiling = on_clone(results, light.applied, run_single)
            default = on_clone(results, light.applied,
                               lambda dsn: run_backfill(dsn, f"backfill, batch {DEFAULT_BATCH_SIZE:,} (default)"))
            verdicts.append(verdict(f"backfill, 6 indexes, default batch size {DEFAULT_BATCH_SIZE:,}", default,
                                    ceiling))
            sections.append("\n".join([table_heading("backfill", args.rows, server, light.applied), "",
                                       table(results, ceiling), "", verdicts[-1][0]]))
        if "rollback" in only:
            base = heavy if args.rollback_table == "heavy" else light
            assert base is not None
            template = build_rollback_template(server, base.applied, say)
            results = []
            ceiling = on_clone(results, template, run_single_rollback)
            one = on_clone(results, template, lambda dsn: run_rollback(dsn, "favmigrate rollback --yes"))
            jobs = ("--jobs", str(ROLLBACK_JOBS))
            two = on_clone(results, template,
                           lambda dsn: run_rollback(dsn, "favmigrate rollback --yes " + " ".join(jobs), *jobs))
            lines = [verdict("rollback, one connection (the default)", one, ceiling),
                     verdict(f"rollback --jobs {ROLLBACK_JOBS}", two, ceiling)]
            same = all(r.note.split(";")[0] == ceiling.note.split(";")[0] for r in (one, two))
            lines.append((f"- rollback: metadata identical to the single UPDATE's (md5 over the rows ordered by "
                          f"key) {'PASS' if same else 'MISS'}", same))
            verdicts += lines
            sections.append("\n".join([table_heading("rollback", args.rows, server, template), "",
                                       table(results, ceiling), "", *(line for line, _ in lines)]))

    for section in sections:
        print(section, end="\n\n")
    print(f"- bench runtime {time.monotonic() - started:.0f}s")
    options = shlex.join(argv if argv is not None else sys.argv[1:])
    command = " ".join(["FAVMIGRATE_PG=" + server.backend, "python -m bench.backfill_bench", options]).strip()
    print(f"\nReproduce: `{command}`")
    missed = [line for line, ok in verdicts if not ok]
    return 1 if args.strict and missed else 0


def table_heading(what: str, rows: int, server: Server, template: str) -> str:
    indexes = execute(server.dsn_for(template), "SELECT count(*) FROM pg_indexes WHERE tablename = "
                      "'session_requests'", ())[0][0]
    versus = "one UPDATE" if what == "backfill" else "one UPDATE writing the values back, then the drops"
    return (f"## favmigrate {what} vs {versus}: {rows:,} rows, PostgreSQL {server.version} ({server.backend}), "
            f"session_requests with {indexes} indexes, writer at {WRITER_RATE:.0f} txn/s")


if __name__ == "__main__":
    sys.exit(main())
