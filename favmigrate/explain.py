"""explain: prove that each query the migration's indexes exist for can use, and does use, its index.

Every query runs twice under EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON), each time in a READ ONLY
transaction that is rolled back under a statement_timeout: once as the planner likes (the natural
plan), once with enable_seqscan off (the forced plan), which proves the index can serve the query at
all. Small tables are read faster with a sequential scan, so "only the forced plan uses it" is a
warning, not a failure.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib.resources.abc import Traversable
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from favmigrate.catalog import IndexInfo, Snapshot, columns_without_statistics, read_snapshot
from favmigrate.checks import describe_index, normalize_predicate
from favmigrate.db import read_only, rows
from favmigrate.errors import ExitCode, UsageError
from favmigrate.queries import (
    QuerySpec,
    check_param_names,
    hidden_by_row_security,
    load_queries,
    mechanic_label,
    read_only_query,
    rejected,
    require_applied,
    resolve_params,
    spec_queries,
)
from favmigrate.results import CheckResult, CheckStatus
from favmigrate.spec import IndexSpec, Target

DEFAULT_TIMEOUT_S = 60.0
# Below this many rows the planner's costs of two indexes differ by noise: a forced plan that picks
# another index proves nothing about ours.
SMALL_TABLE_ROWS = 10_000
_INDEX_NODES = ("Index Scan", "Index Only Scan", "Bitmap Index Scan")


class PlanMode(StrEnum):
    NATURAL = "natural"  # the planner's own choice
    FORCED = "forced"  # enable_seqscan = off: can the index serve the query at all?


@dataclass(frozen=True)
class ExplainOptions:
    timeout_s: float | None = DEFAULT_TIMEOUT_S
    params: Mapping[str, str] = field(default_factory=dict)
    queries_dir: Traversable | None = None  # default: the spec's queries


@dataclass(frozen=True)
class PlanRun:
    """One EXPLAIN ANALYZE of a query: how it read the table, how long it took, what it touched."""

    mode: PlanMode
    indexes: tuple[str, ...] = ()  # indexes of the migration's table, in plan order
    seq_scan: bool = False  # a sequential scan of the migration's table
    execution_ms: float | None = None
    planning_ms: float | None = None
    rows: int | None = None
    shared_hit: int | None = None
    shared_read: int | None = None
    plan: dict[str, Any] | None = None  # the raw FORMAT JSON document
    error: str = ""  # set when the run was cancelled by the statement_timeout

    def uses(self, index: str) -> bool:
        return index in self.indexes

    def access(self) -> str:
        """How the table was read, for messages: index names, or "Seq Scan"."""
        if self.error:
            return "(cancelled)"
        parts = list(dict.fromkeys(self.indexes))
        if self.seq_scan:
            parts.append("Seq Scan")
        return ", ".join(parts) or "(table not read)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "index_used": self.indexes[0] if self.indexes else None,
            "indexes": list(dict.fromkeys(self.indexes)),
            "seq_scan": self.seq_scan,
            "execution_ms": self.execution_ms,
            "planning_ms": self.planning_ms,
            "rows": self.rows,
            "buffers": {"hit": self.shared_hit, "read": self.shared_read},
            "error": self.error,
            "plan": self.plan,
        }


@dataclass(frozen=True)
class QueryExplain:
    """The verdict on one query: pass (natural plan uses the index), warn (only forced), fail (neither)."""

    query: QuerySpec
    status: CheckStatus
    message: str
    params: dict[str, Any]
    natural: PlanRun
    forced: PlanRun
    hint: str = ""

    def check(self) -> CheckResult:
        return CheckResult(
            f"query:{self.query.id}", self.status, " | ".join(self.query.expects), self.natural.access(), self.message,
            self.hint,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.query.id,
            "title": self.query.title,
            "file": self.query.file,
            "status": self.status.value,
            "expected_index": self.query.expected_index,
            "accepted_indexes": list(self.query.expects),
            "message": self.message,
            "hint": self.hint,
            "params": {name: value if isinstance(value, int | float | str | None) else str(value)
                       for name, value in self.params.items()},
            "natural": self.natural.to_dict(),
            "forced": self.forced.to_dict(),
        }


@dataclass(frozen=True)
class ExplainReport:
    """The outcome of `explain`: one verdict per query, and advice about the indexes as warnings."""

    schema: str
    table: str
    estimated_rows: int
    queries: tuple[QueryExplain, ...]
    warnings: tuple[CheckResult, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(q.status is CheckStatus.FAIL for q in self.queries)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.ok else ExitCode.FAILED

    def checks(self) -> tuple[CheckResult, ...]:
        """One check per query, then the warnings: the shape JUnit and verify's renderers take."""
        return (*(q.check() for q in self.queries), *self.warnings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "schema": self.schema,
            "table": self.table,
            "estimated_rows": self.estimated_rows,
            "queries": [q.to_dict() for q in self.queries],
            "warnings": [w.to_dict() for w in self.warnings],
        }


# ---------------------------------------------------------------- reading a plan


def plan_nodes(node: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every node of a FORMAT JSON plan tree, depth first (init plans and sub plans included)."""
    yield node
    for child in node.get("Plans", ()):
        yield from plan_nodes(child)


def read_plan(
    document: list[dict[str, Any]], mode: PlanMode, *, table: str, table_indexes: frozenset[str]
) -> PlanRun:
    """Summarise an EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) result for the migration's ``table``."""
    top = document[0]
    root = top["Plan"]
    indexes: list[str] = []
    seq_scan = False
    for node in plan_nodes(root):
        kind = node.get("Node Type")
        if kind in _INDEX_NODES and node.get("Index Name") in table_indexes:
            indexes.append(node["Index Name"])
        elif kind == "Seq Scan" and node.get("Relation Name") == table:
            seq_scan = True
    return PlanRun(
        mode=mode,
        indexes=tuple(indexes),
        seq_scan=seq_scan,
        execution_ms=top.get("Execution Time"),
        planning_ms=top.get("Planning Time"),
        rows=None if root.get("Actual Rows") is None else round(root["Actual Rows"]),  # a float since PostgreSQL 18
        shared_hit=root.get("Shared Hit Blocks"),
        shared_read=root.get("Shared Read Blocks"),
        plan=top,
    )


# ---------------------------------------------------------------- running


def _run(
    conn: psycopg.Connection[Any],
    target: Target,
    query: QuerySpec,
    params: dict[str, Any],
    mode: PlanMode,
    *,
    timeout_s: float | None,
    table_indexes: frozenset[str],
    label: sql.Composable,
) -> PlanRun:
    statement = sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}").format(query.statement(target, label))
    settings = {"enable_seqscan": "off"} if mode is PlanMode.FORCED else {}
    try:
        with read_only_query(conn, timeout_s=timeout_s, **settings):
            row = conn.execute(statement, params).fetchone()
    except pg_errors.QueryCanceled:
        return PlanRun(mode, error=f"cancelled by statement_timeout after {timeout_s:g}s")
    except psycopg.Error as exc:
        if isinstance(exc, psycopg.OperationalError):
            raise
        raise rejected(query, exc) from None
    if row is None:
        raise UsageError(f"query {query.id}: EXPLAIN returned no plan")
    return read_plan(row[0], mode, table=target.spec.table, table_indexes=table_indexes)


def _verdict(
    query: QuerySpec, natural: PlanRun, forced: PlanRun, snapshot: Snapshot
) -> tuple[CheckStatus, str, str]:
    usable = [name for name in query.expects
              if name in snapshot.indexes and snapshot.indexes[name].valid and snapshot.indexes[name].ready]
    wanted = " or ".join(query.expects)
    if not usable:
        broken = [name for name in query.expects if name in snapshot.indexes]
        state = f"is INVALID ({', '.join(broken)})" if broken else "does not exist"
        return (CheckStatus.FAIL, f"index {wanted} {state}; the query reads {natural.access()}",
                "run `favmigrate verify`, then `favmigrate apply` to build it")
    if natural.error:
        return (CheckStatus.FAIL, f"the natural plan was {natural.error}",
                "raise --statement-timeout, or look at the forced plan with --show-plan")
    chosen = next((name for name in usable if natural.uses(name)), None)
    if chosen:
        return CheckStatus.PASS, f"the planner uses {chosen}", ""
    forced_choice = next((name for name in usable if forced.uses(name)), None)
    if forced_choice:
        return (
            CheckStatus.WARN,
            f"the planner prefers {natural.access()} on ~{snapshot.estimated_rows:,} estimated rows; only with "
            f"enable_seqscan=off does it use {forced_choice}, so the index can serve the query. Normal on a small "
            "table, where reading every page costs less than the index",
            "run explain against production-sized data (run ANALYZE first if the estimate is stale)",
        )
    if not (natural.indexes or natural.seq_scan or forced.indexes or forced.seq_scan or forced.error):
        return (
            CheckStatus.WARN,
            "neither plan reads the table: the planner proved the result empty (a NULL parameter, or a WHERE "
            f"clause that contradicts itself), so nothing shows whether it would use {wanted}",
            "pass the parameters explicitly (--param NAME=VALUE) with values found in the data",
        )
    if forced.indexes and not forced.seq_scan and snapshot.estimated_rows < SMALL_TABLE_ROWS:
        return (
            CheckStatus.WARN,
            f"with enable_seqscan=off the planner reads {forced.access()} instead of {wanted}: on "
            f"~{snapshot.estimated_rows:,} estimated rows the costs of the two barely differ, so this does not show "
            f"that {wanted} cannot serve the query",
            "run explain against production-sized data (run ANALYZE first if the estimate is stale)",
        )
    forced_text = forced.error or f"it reads {forced.access()}"
    return (
        CheckStatus.FAIL,
        f"neither the natural plan ({natural.access()}) nor the forced plan ({forced_text}) uses {wanted}",
        "compare the query's WHERE clause with the index's columns and predicate (--show-plan)",
    )


def _row_security_warnings(target: Target, filtered: bool) -> Iterator[CheckResult]:
    if filtered:
        yield CheckResult(
            f"row-security:{target.spec.table}", CheckStatus.WARN, "no row level security for this role", "active",
            f"row level security is active for this role on {target.table_name}: the plans include its policies' "
            "filters, which the application's service role does not run",
            "connect as the table owner or a role with BYPASSRLS to see the plans the service role gets",
        )


def _statistics_warnings(target: Target, unsampled: tuple[str, ...]) -> Iterator[CheckResult]:
    if unsampled:
        yield CheckResult(
            f"no-statistics:{target.spec.table}", CheckStatus.WARN, "sampled by ANALYZE", "no statistics",
            f"column {', '.join(unsampled)} of {target.table_name} has no planner statistics yet (added or filled "
            "since the last ANALYZE): the planner guesses how many rows match, and its plans above may differ "
            "from the ones it will choose",
            f"run ANALYZE {target.table_name} (it reads a sample and does not block writes), then explain again",
        )


# pg_stats and a sample of the table disagree by more than this fraction of the rows: the statistics
# predate the data (apply analyses the new columns while they are empty; backfill fills them).
STALE_FRACTION = 0.1
_STALE_SAMPLE_ROWS = 30_000  # ANALYZE's own sample at the default statistics target


@dataclass(frozen=True)
class StaleStatistic:
    """A column whose pg_stats figure (the share of NULLs, or of its most common value) the data contradicts."""

    column: str
    what: str  # "NULL", or the most common value as pg_stats shows it
    in_statistics: float
    in_table: float

    def describe(self) -> str:
        return (f"{self.column} {self.in_statistics:.0%} {self.what} in pg_stats, {self.in_table:.0%} in a sample "
                "of the table")


_COLUMN_STATISTICS = sql.SQL(
    """
    SELECT attname AS name, null_frac, (most_common_vals::text::text[])[1] AS common_value,
           most_common_freqs[1] AS common_freq
    FROM pg_stats WHERE schemaname = %s AND tablename = %s AND attname = ANY(%s)
    """
)


def stale_statistics(conn: psycopg.Connection[Any], target: Target, estimated_rows: int) -> tuple[StaleStatistic, ...]:
    """The migration's columns whose planner statistics the table's contents contradict.

    Compares pg_stats' null fraction and most common value's frequency with a sample of the table
    (TABLESAMPLE SYSTEM, about ANALYZE's sample size; the whole table when it is small). Read-only.
    """
    found = {row["name"]: row for row in rows(conn, _COLUMN_STATISTICS, (
        target.schema, target.spec.table, [column.name for column in target.spec.columns]))}
    if not found:
        return ()
    measures: list[sql.Composable] = [sql.SQL("count(*)")]
    for name, row in found.items():
        column = sql.Identifier(name)
        measures.append(sql.SQL("count(*) FILTER (WHERE {} IS NULL)").format(column))
        common = row["common_value"]
        measures.append(sql.SQL("count(*) FILTER (WHERE {}::text = {})").format(column, sql.Literal(common))
                        if common is not None else sql.SQL("0"))
    percent = 100.0 if estimated_rows <= _STALE_SAMPLE_ROWS else 100.0 * _STALE_SAMPLE_ROWS / estimated_rows
    counts = conn.execute(sql.SQL("SELECT {} FROM {} TABLESAMPLE SYSTEM (%s)").format(
        sql.SQL(", ").join(measures), target.table), (percent,)).fetchone()
    assert counts is not None
    sampled, stale = counts[0], []
    if not sampled:
        return ()
    for index, (name, row) in enumerate(found.items()):
        nulls, common = counts[1 + 2 * index] / sampled, counts[2 + 2 * index] / sampled
        if abs(float(row["null_frac"]) - nulls) > STALE_FRACTION:
            stale.append(StaleStatistic(name, "NULL", float(row["null_frac"]), nulls))
        elif row["common_value"] is not None and abs(float(row["common_freq"]) - common) > STALE_FRACTION:
            stale.append(StaleStatistic(name, row["common_value"], float(row["common_freq"]), common))
    return tuple(stale)


def _stale_statistics_warnings(target: Target, stale: tuple[StaleStatistic, ...]) -> Iterator[CheckResult]:
    if stale:
        yield CheckResult(
            f"stale-statistics:{target.spec.table}", CheckStatus.WARN, "pg_stats agrees with the table",
            "; ".join(s.describe() for s in stale),
            f"the planner statistics of {target.table_name} predate its data ({'; '.join(s.describe() for s in stale)}"
            "): its estimates, and the plans above, may not be the ones it will choose once they are refreshed",
            f"run ANALYZE {target.table_name} (backfill ends with one; it reads a sample and does not block "
            "writes), then explain again",
        )


def _covers(wide: IndexInfo | IndexSpec, narrow: IndexSpec) -> bool:
    """``wide`` starts with every column of ``narrow`` and has the same predicate."""
    columns = tuple(c.strip('"') for c in wide.columns)
    return (
        columns[: len(narrow.columns)] == narrow.columns
        and normalize_predicate(wide.predicate) == normalize_predicate(narrow.predicate)
    )


def _unused_index_warnings(
    target: Target, snapshot: Snapshot, results: list[QueryExplain]
) -> Iterator[CheckResult]:
    used_by: dict[str, list[str]] = {}
    for result in results:
        for run in (result.natural, result.forced):
            for name in run.indexes:
                label = f"{result.query.id} ({run.mode.value})"
                if label not in used_by.setdefault(name, []):
                    used_by[name].append(label)
    for index in target.spec.indexes:
        if index.name not in snapshot.indexes or index.name in used_by:
            continue
        evidence = ""
        for other in target.spec.indexes:
            if other.name != index.name and other.name in used_by and _covers(other, index):
                evidence = (f"; {other.name} has the same leading column(s) ({', '.join(index.columns)}) and "
                            f"predicate and served {', '.join(used_by[other.name])}, so {index.name} looks redundant "
                            "for these queries")
                break
        if snapshot.estimated_rows < SMALL_TABLE_ROWS:
            evidence += f" (measured on ~{snapshot.estimated_rows:,} estimated rows, where plans say little)"
        yield CheckResult(
            f"unused-index:{index.name}", CheckStatus.WARN, "used by a query of the set", "unused",
            f"no query of the set uses {index.name}, in its natural or its forced plan{evidence}",
            "measure on production (pg_stat_user_indexes.idx_scan) before dropping it; favmigrate never drops it",
        )


def duplicate_index_warnings(target: Target, snapshot: Snapshot) -> Iterator[CheckResult]:
    """Indexes that are not the migration's but duplicate one of its indexes (one is a prefix of the other,
    same predicate, both plain btree)."""
    ours = {index.name for index in target.spec.indexes}
    for index in target.spec.indexes:
        for other in snapshot.indexes.values():
            if other.name in ours or other.method != "btree" or other.unique:
                continue
            other_columns = tuple(c.strip('"') for c in other.columns)
            shorter = min(len(other_columns), len(index.columns))
            if other_columns[:shorter] != index.columns[:shorter]:
                continue
            if normalize_predicate(other.predicate) != normalize_predicate(index.predicate):
                continue
            yield CheckResult(
                f"duplicate-index:{other.name}", CheckStatus.WARN, describe_index(index.columns, index.predicate),
                describe_index(other.columns, other.predicate),
                f"existing index {other.name} duplicates the migration's {index.name}: same leading column(s) "
                f"({', '.join(other_columns[:shorter])}) and predicate",
                "keep one: compare pg_stat_user_indexes.idx_scan of both, then drop the other concurrently",
            )


def explain(
    conn: psycopg.Connection[Any], target: Target, options: ExplainOptions | None = None
) -> ExplainReport:
    """EXPLAIN ANALYZE every query twice (natural, enable_seqscan=off) and judge its index use.

    Each run is a READ ONLY transaction that is rolled back, under a statement_timeout. This is a
    read-only operation. Raises PreflightFailed before the migration is applied, UsageError for a
    query file that writes, is malformed or fails, or a param that is unknown or invalid.
    """
    options = options or ExplainOptions()
    queries = load_queries(options.queries_dir) if options.queries_dir is not None else spec_queries(target.spec)
    check_param_names(queries, options.params)
    with read_only(conn):
        snapshot = read_snapshot(conn, target)
        require_applied(snapshot, target)
        unsampled = columns_without_statistics(conn, target)
        stale = stale_statistics(conn, target, snapshot.estimated_rows)
        filtered = hidden_by_row_security(conn, target)
        label = mechanic_label(conn, target)
    table_indexes = frozenset(snapshot.indexes)
    results = []
    for query in queries:
        with read_only_query(conn, timeout_s=options.timeout_s):
            params = resolve_params(conn, target, query, options.params)
        runs = {
            mode: _run(conn, target, query, params, mode, timeout_s=options.timeout_s, table_indexes=table_indexes,
                       label=label)
            for mode in PlanMode
        }
        natural, forced = runs[PlanMode.NATURAL], runs[PlanMode.FORCED]
        status, message, hint = _verdict(query, natural, forced, snapshot)
        if status is not CheckStatus.PASS and (unsampled or stale):
            hint = (f"first run ANALYZE {target.table_name}: the planner statistics are missing or stale (see the "
                    "statistics warning), so this plan may not be the one it will choose")
        results.append(QueryExplain(query, status, message, params, natural, forced, hint))
    warnings = (
        *_row_security_warnings(target, filtered),
        *_statistics_warnings(target, unsampled),
        *_stale_statistics_warnings(target, stale),
        *_unused_index_warnings(target, snapshot, results),
        *duplicate_index_warnings(target, snapshot),
    )
    return ExplainReport(
        schema=target.schema,
        table=target.table_name,
        estimated_rows=snapshot.estimated_rows,
        queries=tuple(results),
        warnings=warnings,
    )
