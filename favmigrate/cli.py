"""The command line: parse options -> call one library function -> render -> exit with its code.

The only place that catches FavmigrateError. Heavy imports (psycopg, rich tables) happen inside the
commands so that `favmigrate --help` starts fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from favmigrate import __version__
from favmigrate.errors import ExitCode, FavmigrateError

if TYPE_CHECKING:
    from favmigrate.spec import Target

# --help lists the commands in the order they are used, not alphabetically or as defined
WORKFLOW_ORDER = ("demo", "plan", "apply", "verify", "backfill", "finalize", "explain", "report", "rollback",
                  "history", "check-types", "flag", "lint", "sandbox")


class WorkflowOrder(TyperGroup):
    def list_commands(self, ctx: Any) -> list[str]:
        known = [name for name in WORKFLOW_ORDER if name in self.commands]
        return known + sorted(name for name in self.commands if name not in WORKFLOW_ORDER)


app = typer.Typer(
    name="favmigrate",
    cls=WorkflowOrder,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Take a live PostgreSQL through a migration that promotes JSONB keys into typed columns safely: plan "
    "it, apply it online, verify it against the catalogs, backfill the legacy JSONB values, enforce NOT NULL, "
    "measure it, roll it back without losing data. The built-in migration is Phase 4 (favorites priority); "
    "--spec runs another one.\n\nExit codes: 0 ok; 1 a check failed / drift / work pending; 2 usage, connection or "
    "preflight error (nothing changed); 3 interrupted or partially done (safe to re-run).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


class _State:
    debug = False
    spec: Path | None = None


DsnOption = Annotated[
    str | None,
    typer.Option("--dsn", help="Connection string, a postgresql:// URL or libpq key=value pairs.",
                 show_default="FAVMIGRATE_DSN, else DATABASE_URL, else the PG* variables"),
]
SchemaOption = Annotated[str | None, typer.Option("--schema", help="Schema holding the migration's tables.",
                                                 show_default="the spec's schema, public for the built-in one")]
FormatOption = Annotated[OutputFormat, typer.Option("--format", help="text (tables on a terminal) or json.")]
MAX_TIMEOUT_S = 2_147_483  # PostgreSQL's largest timeout setting, INT_MAX milliseconds
MAX_BATCH_ROWS = 1_000_000
MAX_ROLLBACK_JOBS = 16


def in_range(kind: type[int] | type[float], low: float, high: float) -> Callable[[Any], Any]:
    """A parser for a number option that refuses, naming the allowed range, what is not a ``kind`` within
    [low, high]: inf, nan, 1e20 rows, negative seconds."""
    noun = "a whole number" if kind is int else "a number"
    allowed = f"{_number(low)}..{_number(high)}"

    def parse(text: Any) -> Any:
        try:
            value = kind(text)
        except (TypeError, ValueError, OverflowError):
            value = None
        if value is None or not low <= value <= high:  # nan compares false: refused too
            raise typer.BadParameter(f"{text!r} is not {noun} in the allowed range {allowed}")
        return value

    return parse


def ranged(*names: str, kind: type[int] | type[float], low: float, high: float, help: str, **extra: Any) -> Any:
    """A number option checked by the parser, its allowed range stated in --help."""
    return typer.Option(*names, parser=in_range(kind, low, high),
                        help=f"{help} Allowed: {_number(low)}..{_number(high)}.", **extra)


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:g}"


def statement_timeout_option(what: str) -> Any:
    """--statement-timeout, the same name and meaning on every database command; ``what`` it limits."""
    return ranged(
        "--statement-timeout", kind=float, low=0, high=MAX_TIMEOUT_S,
        help=f"Seconds {what} may run before the server cancels it (0: no limit; fractions round up to whole "
        "milliseconds). Set at session level, so a role's or database's own statement_timeout does not apply.")


DebugOption = Annotated[bool, typer.Option("--debug", help="Also print the traceback of an error (the exit code "
                                          "stays the same).")]
JunitOption = Annotated[Path | None, typer.Option("--junit", help="Also write JUnit XML, one testcase per check.",
                                                  dir_okay=False, show_default="none: not written")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"favmigrate {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    debug: DebugOption = False,
    spec: Annotated[Path | None, typer.Option(
        "--spec", envvar="FAVMIGRATE_SPEC", help="The migration to run: a migration.toml, or a folder holding one "
        "and its query files.", show_default="the built-in Phase 4 migration")] = None,
) -> None:
    _State.debug = debug
    _State.spec = spec


def warn(message: str) -> None:
    """A warning on stderr (never on stdout, which carries only the requested format)."""
    from favmigrate.render import stderr_console

    stderr_console().print(f"[yellow]warning:[/yellow] {message}", highlight=False)


def fail(message: str, *, hint: str | None = None, code: ExitCode = ExitCode.PRECONDITION,
         details: tuple[str, ...] = ()) -> NoReturn:
    """One or two clear lines (and any details) on stderr, then exit with ``code``."""
    from favmigrate.render import print_error

    print_error(message, hint=hint, details=details)
    raise typer.Exit(int(code))


def run(job: Callable[[], int], *, debug: bool, writes: bool = False) -> NoReturn:
    """Run a command body, translating every failure into a message and a documented exit code.

    ``debug`` (the command's --debug, or the one before the command) adds the traceback, scrubbed of
    passwords; it never changes the exit code. A command that ``writes`` exits 3 when stopped by a
    lost connection or timeout (re-runnable); a read command stopped by a timeout could not run (exit 2).
    """
    show_traceback = debug or _State.debug
    try:
        code = job()
    except typer.Exit:
        raise
    except FavmigrateError as exc:
        _print_traceback(show_traceback)
        fail(exc.message, hint=exc.hint, code=exc.exit_code, details=exc.details)
    except BrokenPipeError:
        # the reader went away (`favmigrate report --format csv | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(int(ExitCode.OK)) from None
    except KeyboardInterrupt:
        _print_traceback(show_traceback)
        fail("interrupted; nothing is left half-done that a re-run cannot finish", code=ExitCode.INTERRUPTED)
    except Exception as exc:
        _print_traceback(show_traceback)
        from favmigrate.db import scrub, statement_timeout_message

        timed_out = statement_timeout_message(exc)
        if timed_out:
            fail(timed_out, code=ExitCode.INTERRUPTED if writes else ExitCode.PRECONDITION)
        fail(f"{type(exc).__name__}: {scrub(str(exc))}".splitlines()[0],
             hint=None if show_traceback else "re-run with --debug for the traceback", code=_exit_for(exc))
    raise typer.Exit(code)


def _print_traceback(enabled: bool) -> None:
    if not enabled:
        return
    import traceback

    from favmigrate.db import scrub

    typer.echo(scrub(traceback.format_exc()), err=True, nl=False)


def _exit_for(exc: Exception) -> ExitCode:
    import psycopg

    if isinstance(exc, psycopg.OperationalError):
        return ExitCode.INTERRUPTED  # connection lost mid-command: every step is re-runnable
    return ExitCode.PRECONDITION


def target_for(schema: str | None) -> Target:
    """The --spec migration (else the built-in one) in --schema (else the spec's schema). Raises SpecError."""
    from favmigrate.spec import Target, resolve_spec

    return Target.of(resolve_spec(_State.spec), schema)


def emit(data: dict[str, Any], fmt: OutputFormat, render_text: Callable[[dict[str, Any]], None]) -> None:
    from favmigrate.render import print_json

    if fmt is OutputFormat.json:
        print_json(data)
    else:
        render_text(data)


# ---------------------------------------------------------------- commands


@app.command()
def verify(
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    no_data: Annotated[bool, typer.Option("--no-data", help="Catalog checks only: skip the checks that scan rows.")]
    = False,
    absent: Annotated[bool, typer.Option("--absent", help="Verify the rolled-back state: no migration object exists.")]
    = False,
    strict: Annotated[bool, typer.Option("--strict", help="Warnings fail too (exit 1): rows still waiting for "
                                         "backfill, or anything the role could not read. For CI gates that want a "
                                         "finished backfill.")] = False,
    smoke: Annotated[bool, typer.Option("--smoke", help="Also run the seed's scenarios (insert a row with a "
                                        "reference, defaults, read-back, the join, 23503 for a missing reference, "
                                        "ON DELETE) in one transaction that is always rolled back. It writes rows, "
                                        "so triggers fire inside it; refused on a read-only connection.")] = False,
    statement_timeout: Annotated[float, statement_timeout_option("each query (the data checks scan the table)")]
    = 0.0,
    fmt: FormatOption = OutputFormat.text,
    junit: JunitOption = None,
    debug: DebugOption = False,
) -> None:
    """Prove the migration's end state against the catalogs (read-only unless --smoke).

    Compares columns (type, nullability, default, comment), the foreign keys (definition, validated) and the
    indexes (columns, predicate, unique, valid/ready/live) with the spec (--spec, else the built-in Phase 4
    one), then counts orphaned references, out-of-range values and rows still waiting for backfill. Runs in a
    READ ONLY transaction. --smoke then runs the verification plan's scenarios on real rows (their triggers
    fire) inside one transaction that is always rolled back, building rows from the tables' own required
    columns. Exit 0 all pass (warnings allowed unless --strict), 1 any check fails, 2 could not run (the
    tables do not exist in --schema, connection error, --statement-timeout reached, --smoke on a read-only
    server).

    Example: favmigrate verify --smoke --dsn postgresql://postgres@localhost/app --format json
    """

    def job() -> int:
        from favmigrate.db import open_session
        from favmigrate.errors import UsageError
        from favmigrate.render import render_checks, stdout_console, write_junit
        from favmigrate.verify import verify as run_verify

        if smoke and absent:
            raise UsageError("--smoke runs the scenarios of the applied migration: it does not go with --absent")
        with open_session(dsn, writes=smoke, statement_timeout_s=statement_timeout or None, warn=warn) as conn:
            report = run_verify(conn, target_for(schema), data=not no_data, absent=absent, strict=strict,
                                smoke=smoke)
        for skipped in report.warnings:
            warn(skipped)
        data = report.to_dict()
        emit(data, fmt, lambda d: render_checks(d, stdout_console(), title="verify --absent" if absent else "verify"))
        if junit:
            write_junit(data, junit, suite="favmigrate.verify")
        return int(report.exit_code)

    run(job, debug=debug)


@app.command()
def plan(
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    replace: Annotated[bool, typer.Option("--replace", help="Plan as apply --replace would.")] = False,
    statement_timeout: Annotated[float, statement_timeout_option("each query (the backfill count scans the "
                                                                 "table)")] = 0.0,
    fmt: FormatOption = OutputFormat.text,
    debug: DebugOption = False,
) -> None:
    """Show every expected object as present / missing / drifted and the exact SQL apply would run (read-only).

    Exit 0 when every schema object is in place, 1 when any is missing or drifted. Rows still waiting
    for backfill are shown as information and do not change the exit code.

    Example: favmigrate plan --dsn postgresql://postgres@localhost/app
    """

    def job() -> int:
        from favmigrate.db import open_session
        from favmigrate.plan import plan as run_plan
        from favmigrate.render import render_plan, stdout_console

        with open_session(dsn, writes=False, statement_timeout_s=statement_timeout or None, warn=warn) as conn:
            report = run_plan(conn, target_for(schema), replace=replace)
        for skipped in report.warnings:
            warn(skipped)
        emit(report.to_dict(), fmt, lambda d: render_plan(d, stdout_console()))
        return int(report.exit_code)

    run(job, debug=debug)


LockTimeoutOption = Annotated[float, ranged(
    "--lock-timeout", kind=float, low=0.01, high=3600, help="Seconds a statement needing a strong lock may wait "
    "before it gives up and retries (keeps application queries from piling up behind it). Concurrent index "
    "drops, VALIDATE and ANALYZE wait at least the server's deadlock_timeout + 0.5 s, so that the server "
    "cancels an autovacuum blocking them.")]
RetriesOption = Annotated[int, ranged("--retries", kind=int, low=0, high=1000,
                                      help="Retries after a lock timeout, with backoff and jitter (0: give up at the "
                                      "first).")]
LockWaitOption = Annotated[float, ranged("--lock-wait", kind=float, low=0, high=86_400,
                                         help="Seconds to wait for another favmigrate run on this database to "
                                         "finish (0: do not wait).")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Print the SQL it would run; change nothing.")]


class RunFormat(StrEnum):
    text = "text"
    json = "json"
    sql = "sql"


RunFormatOption = Annotated[RunFormat, typer.Option(
    "--format", help="text (tables on a terminal), json, or sql: with --dry-run, exactly the statements that "
    "would run, as a script psql can run (apply's batched steps as commented templates; rollback's write-back "
    "as statements that run).")]
OutputOption = Annotated[Path | None, typer.Option(
    "--output", "-o", dir_okay=False, show_default="stdout",
    help="With --dry-run: write the SQL script to this file instead of stdout (implies --format sql).")]


def check_sql_output(fmt: RunFormat, output: Path | None, dry_run: bool) -> RunFormat:
    """The format to render: --output implies sql. Raises UsageError when the options do not go together."""
    from favmigrate.errors import UsageError

    if output is not None and fmt is RunFormat.json:
        raise UsageError("--output writes the SQL script: use it with --format sql (or without --format)")
    chosen = RunFormat.sql if output is not None else fmt
    if chosen is RunFormat.sql and not dry_run:
        raise UsageError("--format sql and --output show the statements of a dry run: add --dry-run")
    return chosen


def session_limits(lock_timeout: float, retries: int, statement_timeout: float, lock_wait: float) -> Any:
    """The --lock-timeout / --retries / --statement-timeout (0: none) / --lock-wait options as one value."""
    from favmigrate.db import SessionLimits

    return SessionLimits(lock_timeout_s=lock_timeout, retries=retries, statement_timeout_s=statement_timeout or None,
                         lock_wait_s=lock_wait)


@app.command()
def apply(
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    lock_timeout: LockTimeoutOption = 1.0,
    retries: RetriesOption = 10,
    statement_timeout: Annotated[float, statement_timeout_option("a long weak-lock step (index build, VALIDATE) or "
                                                                 "a batch")] = 0.0,
    lock_wait: LockWaitOption = 30.0,
    batch_size: Annotated[int, ranged("--batch-size", kind=int, low=1, high=MAX_BATCH_ROWS, help="Rows per "
                                      "transaction when filling NULL "
                                            "windows left by a hand-run nullable column.")] = 5_000,
    replace: Annotated[bool, typer.Option("--replace", help="Rebuild (concurrently) an index of ours whose valid "
                                          "definition differs from the spec, instead of refusing.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Accept a step's SQL that changed since the step was "
                                        "applied.")] = False,
    finalize: Annotated[bool, typer.Option("--finalize", help="Then enforce NOT NULL on the columns the spec marks "
                                           "not_null = \"after-backfill\" (as `favmigrate finalize`).")] = False,
    dry_run: DryRunOption = False,
    quiet: QuietOption = False,
    fmt: RunFormatOption = RunFormat.text,
    output: OutputOption = None,
    debug: DebugOption = False,
) -> None:
    """Apply the migration online-safely: only the steps still needed, then verify.

    Columns and the FK (NOT VALID) are added under a short lock_timeout with retries; the FK is then
    VALIDATEd in its own transaction; indexes are built CONCURRENTLY (INVALID leftovers are dropped
    and rebuilt). Preflight refuses, changing nothing, what it cannot safely fix. One run at a time
    per database (advisory lock). A second run says "already applied". Every step is recorded in the
    favmigrate.history table. Ctrl-C stops with exit 3; re-running repairs and continues.

    Example: favmigrate apply --dsn postgresql://postgres@db.example.com:5432/postgres --lock-timeout 2
    Example: favmigrate apply --dry-run -o phase4.sql && psql -f phase4.sql
    """

    def job() -> int:
        from favmigrate.apply import ApplyOptions, apply_migration
        from favmigrate.db import open_session
        from favmigrate.render import ProgressEvents

        chosen = check_sql_output(fmt, output, dry_run)
        options = ApplyOptions(limits=session_limits(lock_timeout, retries, statement_timeout, lock_wait),
                               batch_size=batch_size, replace=replace, force=force,
                               dry_run=dry_run, finalize=finalize)
        with (open_session(dsn, writes=not dry_run, statement_timeout_s=statement_timeout or None, warn=warn) as conn,
              ProgressEvents(quiet=quiet) as events):
            report = apply_migration(conn, target_for(schema), options, on_event=events)
        emit_run(report.to_dict(), chosen, output)
        return int(report.exit_code)

    run(job, debug=debug, writes=not dry_run)


@app.command()
def finalize(
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    lock_timeout: LockTimeoutOption = 1.0,
    retries: RetriesOption = 10,
    statement_timeout: Annotated[float, statement_timeout_option("the VALIDATE of a NOT NULL check")] = 0.0,
    lock_wait: LockWaitOption = 30.0,
    dry_run: DryRunOption = False,
    quiet: QuietOption = False,
    fmt: RunFormatOption = RunFormat.text,
    output: OutputOption = None,
    debug: DebugOption = False,
) -> None:
    """Enforce NOT NULL online on the columns the spec marks not_null = "after-backfill", once backfilled.

    apply adds such columns nullable. finalize first counts their NULL rows and refuses (exit 1, nothing
    changed) while any remain; then, per column: ADD CONSTRAINT ... CHECK (col IS NOT NULL) NOT VALID
    (brief lock, retried), VALIDATE (writes continue), SET NOT NULL (no scan: the CHECK proves it) and
    DROP CONSTRAINT of the CHECK. Re-running continues where it stopped; a finished column is skipped.
    Exit 0 done (or nothing to do), 1 NULLs remain, 2 could not start, 3 interrupted.

    Example: favmigrate --spec ./orders-promotion finalize --dsn postgresql://postgres@localhost/app
    """

    def job() -> int:
        from favmigrate.db import open_session
        from favmigrate.finalize import finalize_migration
        from favmigrate.render import ProgressEvents
        from favmigrate.runner import RunnerOptions

        chosen = check_sql_output(fmt, output, dry_run)
        options = RunnerOptions(limits=session_limits(lock_timeout, retries, statement_timeout, lock_wait))
        with (open_session(dsn, writes=not dry_run, statement_timeout_s=statement_timeout or None, warn=warn) as conn,
              ProgressEvents(quiet=quiet) as events):
            report = finalize_migration(conn, target_for(schema), options, dry_run=dry_run, on_event=events)
        emit_run(report.to_dict(), chosen, output)
        return int(report.exit_code)

    run(job, debug=debug, writes=not dry_run)


def emit_run(data: dict[str, Any], fmt: RunFormat, output: Path | None,
             render_more: Callable[[dict[str, Any]], None] | None = None) -> None:
    """apply / rollback output: JSON; the dry run's SQL script (on stdout or in ``output``); or the run's
    table (the script, for a dry run) followed by ``render_more``."""
    from favmigrate.errors import UsageError
    from favmigrate.render import print_json, print_sql, render_run, stdout_console
    from favmigrate.script import dry_run_script

    if fmt is RunFormat.json:
        print_json(data)
        return
    console = stdout_console()
    if not data["dry_run"]:
        render_run(data, console)
    else:
        script = dry_run_script(data)
        if output is not None:
            try:
                output.write_text(script, encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
            return
        print_sql(script, console)
        if fmt is RunFormat.sql:
            return
    if render_more is not None:
        render_more(data)


def discard_typed_ahead() -> None:
    """Drop what was typed on the terminal while the survey ran, so that a stray "y" or Enter typed before
    the question was shown cannot answer it."""
    try:
        import termios
    except ImportError:  # not a POSIX terminal
        return
    with contextlib.suppress(termios.error, OSError, ValueError):
        termios.tcflush(sys.stdin.fileno(), termios.TCIFLUSH)


@app.command()
def rollback(
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    lock_timeout: LockTimeoutOption = 1.0,
    retries: RetriesOption = 10,
    statement_timeout: Annotated[float, statement_timeout_option("one statement (a write-back batch, a drop)")]
    = 0.0,
    lock_wait: LockWaitOption = 30.0,
    batch_size: Annotated[int, ranged("--batch-size", kind=int, low=1, high=MAX_BATCH_ROWS, help="Rows per "
                                      "transaction while writing the values back into metadata: a page range of "
                                      "that many rows (PostgreSQL 14+; at most that many hold values), before 14 "
                                      "that many rows holding values.")] = 1_000,
    jobs: Annotated[int, ranged("--jobs", kind=int, low=1, high=MAX_ROLLBACK_JOBS, help="Connections writing "
                                "values back at once, each taking the next page range (PostgreSQL 14+; one "
                                "before). More finish sooner where the server has idle cores; each is one more "
                                "connection.")] = 1,
    sleep: Annotated[float, ranged("--sleep", kind=float, low=0, high=3600,
                                   help="Seconds to pause between batches, a throttle (0: none).")]
    = 0.0,
    prefer_columns: Annotated[bool, typer.Option("--prefer-columns", help="Where a legacy key already holds "
                                                 "another value, overwrite it with the column's value (default: "
                                                 "keep metadata's and report the conflict).")] = False,
    discard_data: Annotated[bool, typer.Option("--discard-data", help="Do not write the values back: they are "
                                               "dropped with the columns (the count is shown first).")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (required when stdin is "
                                      "not a terminal).")] = False,
    dry_run: DryRunOption = False,
    quiet: QuietOption = False,
    fmt: RunFormatOption = RunFormat.text,
    output: OutputOption = None,
    debug: DebugOption = False,
) -> None:
    """Roll the migration back without losing data: values back into metadata, then drop its objects.

    First every value of the three columns is written back into session_requests.metadata under its
    Phase 3 key (only rows that need it, in batches; a key already holding another value is a
    conflict, kept and reported unless --prefer-columns; metadata that is not a JSON object is never
    touched). Then the indexes are dropped CONCURRENTLY and the foreign key under a short lock_timeout
    with retries; rows the application writes meanwhile are logged by a temporary trigger, and the last
    of them are preserved in the same transaction as the column drop, under the table's lock. The
    backfill's checkpoint and rejects are cleared, and the result is verified as `verify --absent`
    would. Asks for confirmation after a survey of the rows (--yes for scripts: no survey, no
    question; without --yes and without a terminal it refuses before the survey). Works from any
    partial state; a second run says "already rolled back". Exit 0 rolled back, 1 verification
    failed, 2 refused, not confirmed or stopped before changing anything, 3 stopped after a change
    (the report says what was done; re-run to finish).

    Example: favmigrate rollback --dsn postgresql://postgres@db.example.com:5432/postgres --dry-run
    """

    def job() -> int:
        from favmigrate.db import open_session
        from favmigrate.errors import UsageError
        from favmigrate.render import ProgressEvents, render_preservation, stderr_console, stdout_console
        from favmigrate.rollback import RollbackOptions, RollbackPlan, rollback_migration

        if prefer_columns and discard_data:
            raise UsageError("--prefer-columns and --discard-data exclude each other")
        chosen = check_sql_output(fmt, output, dry_run)
        options = RollbackOptions(limits=session_limits(lock_timeout, retries, statement_timeout, lock_wait),
                                  batch_size=batch_size, sleep_s=sleep, jobs=jobs,
                                  prefer_columns=prefer_columns, discard_data=discard_data, dry_run=dry_run)

        def confirm(plan: RollbackPlan) -> bool:
            events.close()
            console = stderr_console()
            for note in plan.notes():
                console.print(f"- {note}", markup=False, highlight=False)
            discard_typed_ahead()
            return typer.confirm("Roll back now?", default=False, err=True)

        with (open_session(dsn, writes=not dry_run, statement_timeout_s=statement_timeout or None, warn=warn) as conn,
              ProgressEvents(quiet=quiet) as events):
            report = rollback_migration(conn, target_for(schema), options, on_event=events,
                                        confirm=None if yes else confirm, can_confirm=sys.stdin.isatty())

        emit_run(report.to_dict(), chosen, output, lambda data: render_preservation(data, stdout_console()))
        return int(report.exit_code)

    run(job, debug=debug, writes=not dry_run)


def _params(values: list[str] | None) -> dict[str, str]:
    from favmigrate.errors import UsageError

    params: dict[str, str] = {}
    for value in values or []:
        name, equals, text = value.partition("=")
        if not equals or not name.strip():
            raise UsageError(f"--param {value!r} is not NAME=VALUE")
        params[name.strip()] = text
    return params


@app.command()
def explain(
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    statement_timeout: Annotated[float, statement_timeout_option("each EXPLAIN ANALYZE run")] = 60.0,
    param: Annotated[list[str] | None, typer.Option(
        "--param", metavar="NAME=VALUE", help="A query parameter (repeatable), e.g. mechanic_id=<uuid>; "
        "a parameter left out takes its default from the data.", show_default="taken from the data")] = None,
    queries: Annotated[Path | None, typer.Option(
        "--queries", file_okay=False, exists=True, help="A folder of annotated query files to use instead of "
        "the spec's.", show_default="the spec's [[explain]] files, else its queries/ folder")] = None,
    show_plan: Annotated[bool, typer.Option("--show-plan", help="Print every plan tree (on stderr with "
                                            "--format json).")] = False,
    fmt: FormatOption = OutputFormat.text,
    junit: JunitOption = None,
    debug: DebugOption = False,
) -> None:
    """Prove that the queries the indexes exist for use them (read-only EXPLAIN ANALYZE).

    Runs each query of the spec (for Phase 4, verify/*.sql: the priority-timeout scan, one preferred mechanic's
    requests, the per-mechanic analytics) under EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) twice, each in a READ
    ONLY transaction that is rolled back, under --statement-timeout: the planner's natural plan, and a forced
    plan with enable_seqscan=off. pass: the natural plan uses the expected index; warn: only the forced plan
    does (normal on a small table); fail: neither. Warns about an index of the migration no query uses and an
    existing index that duplicates one of them. A query file that writes is refused. Exit 0 no fail, 1 any fail,
    2 could not run (migration not applied, bad query file or param).

    Example: favmigrate explain --param mechanic_id=0b6f...e1 --show-plan
    """

    def job() -> int:
        from favmigrate.db import open_session
        from favmigrate.explain import ExplainOptions
        from favmigrate.explain import explain as run_explain
        from favmigrate.render import render_explain, render_plans, stderr_console, stdout_console, write_junit

        options = ExplainOptions(timeout_s=statement_timeout or None, params=_params(param), queries_dir=queries)
        with open_session(dsn, writes=False, statement_timeout_s=statement_timeout or None, warn=warn) as conn:
            report = run_explain(conn, target_for(schema), options)
        data = report.to_dict()
        emit(data, fmt, lambda d: render_explain(d, stdout_console(), show_plan=show_plan))
        if show_plan and fmt is OutputFormat.json:
            render_plans(data, stderr_console())
        if junit:
            write_junit({"checks": [c.to_dict() for c in report.checks()]}, junit, suite="favmigrate.explain")
        return int(report.exit_code)

    run(job, debug=debug)


class ReportFormat(StrEnum):
    text = "text"
    json = "json"
    csv = "csv"


def _moment(value: str | None, option: str) -> Any:
    """An ISO 8601 date or time; one without an offset is UTC."""
    from datetime import UTC, datetime

    from favmigrate.errors import UsageError

    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option} {value!r} is not an ISO 8601 date or time",
                         hint="e.g. 2025-11-01 or 2025-11-01T08:00:00+01:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command()
def report(
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    since: Annotated[str | None, typer.Option("--since", help="Only requests created at or after this ISO 8601 "
                                              "date/time (inclusive; UTC without an offset).",
                                              show_default="open: since the first")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Only requests created before this ISO 8601 "
                                              "date/time (exclusive; UTC without an offset).",
                                              show_default="open: up to the last")] = None,
    statement_timeout: Annotated[float, statement_timeout_option("the report query")] = 60.0,
    limit: Annotated[int | None, ranged("--limit", kind=int, low=1, high=1_000_000, show_default="all",
                                        help="Show at most this many mechanics, the best success rate first (the "
                                        "totals still cover all of them).")] = None,
    fmt: Annotated[ReportFormat, typer.Option("--format", help="text (tables), json (totals and per-mechanic "
                                              "rows) or csv (the per-mechanic rows, with a header line).")]
    = ReportFormat.text,
    debug: DebugOption = False,
) -> None:
    """Priority analytics per preferred mechanic, with totals (read-only).

    A priority request is a session request with a preferred mechanic whose created_at is in
    [--since, --until): since inclusive, until exclusive, a bound left out is open. Success rate:
    requests accepted by the preferred mechanic (status accepted and mechanic_id = preferred_mechanic_id)
    / priority requests. Response time: accepted_at - priority_notified_at of those acceptances (average
    and median). Timed out: notified, and not accepted within the row's own priority_window_minutes -
    still pending after priority_notified_at + window, or accepted after it (by anyone); cancelled
    requests never count. Timeout rate: timed out / notified requests. A rate with a zero denominator is
    empty, never an error. Runs verify/priority_analytics.sql (checked by `favmigrate explain`) in a
    READ ONLY transaction. Exit 0 done, 2 could not run (migration not applied, bad option).

    Example: favmigrate report --since 2025-10-01 --until 2025-11-01 --limit 10 --format csv > priority.csv
    """

    def job() -> int:
        from favmigrate.db import open_session
        from favmigrate.render import print_csv, print_json, render_report, stdout_console
        from favmigrate.report import CSV_COLUMNS, ReportOptions, priority_report

        options = ReportOptions(since=_moment(since, "--since"), until=_moment(until, "--until"),
                                timeout_s=statement_timeout or None, limit=limit)
        with open_session(dsn, writes=False, statement_timeout_s=statement_timeout or None, warn=warn) as conn:
            result = priority_report(conn, target_for(schema), options)
        if fmt is ReportFormat.csv:
            print_csv(CSV_COLUMNS, result.csv_rows())
        elif fmt is ReportFormat.json:
            print_json(result.to_dict())
        else:
            render_report(result.to_dict(), stdout_console())
        return 0

    run(job, debug=debug)


@app.command()
def history(
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    limit: Annotated[int, ranged("--limit", kind=int, low=1, high=10_000,
                                 help="Show at most this many runs, the latest first.")] = 20,
    statement_timeout: Annotated[float, statement_timeout_option("the history query")] = 0.0,
    fmt: FormatOption = OutputFormat.text,
    debug: DebugOption = False,
) -> None:
    """The runs and steps of apply and rollback recorded in favmigrate.history, newest run first (read-only).

    Each run shows its id, command, database user and tool version; each step its outcome, detail, start
    and duration. Nothing recorded yet is not an error. Exit 0 shown, 2 could not run (connection, a
    role that may not read favmigrate.history).

    Example: favmigrate history --limit 5 --format json
    """

    def job() -> int:
        from favmigrate.db import open_session
        from favmigrate.history import read_history
        from favmigrate.render import render_history, stdout_console

        with open_session(dsn, writes=False, statement_timeout_s=statement_timeout or None, warn=warn) as conn:
            report = read_history(conn, target_for(schema), runs=limit)
        emit(report.to_dict(), fmt, lambda d: render_history(d, stdout_console()))
        return int(report.exit_code)

    run(job, debug=debug)


@app.command("check-types")
def check_types(
    file: Annotated[str, typer.Argument(metavar="FILE", help="The generated types file (- for stdin).",
                                        show_default=False)],
    dsn: Annotated[str | None, typer.Option("--dsn", help="Compare with every live column of the table "
                                            "(information_schema, read-only) instead of the spec's columns.",
                                            show_default="none: the spec's columns")] = None,
    schema: SchemaOption = None,
    statement_timeout: Annotated[float, statement_timeout_option("the catalog query (with --dsn)")] = 0.0,
    fmt: FormatOption = OutputFormat.text,
    junit: JunitOption = None,
    debug: DebugOption = False,
) -> None:
    """Check that the app's generated TypeScript types declare the migration's columns as
    `supabase gen types typescript` emits them now.

    Reads Database[schema].Tables[table] Row / Insert / Update and checks every column of the spec (with
    --dsn: every live column of the table, and no field for a column it lacks): the type the generator
    emits (string | null for a nullable uuid/text/timestamptz/date, number for integers and numeric,
    boolean, Json), required in Row, optional in Insert when nullable or defaulted, optional in Update.
    Parses the file (object types, quoted keys, unions, Database[...] references, comments); never
    runs it. Exit 0 current, 1 stale (fields missing, mistyped or extra), 2 unreadable or not the
    generator's TypeScript (or no database with --dsn).

    Example: supabase gen types typescript --project-id abc > types.ts && favmigrate check-types types.ts
    """

    def job() -> int:
        from favmigrate.check_types import Source, live_columns, read_types_file, spec_columns
        from favmigrate.check_types import check_types as run_check_types
        from favmigrate.render import render_types, stdout_console, write_junit

        target = target_for(schema)
        text = read_types_file(file)
        if dsn:
            from favmigrate.db import open_session

            with open_session(dsn, writes=False, statement_timeout_s=statement_timeout or None, warn=warn) as conn:
                columns = live_columns(conn, target)
            source = Source.DATABASE
        else:
            columns, source = spec_columns(target), Source.SPEC
        report = run_check_types(text, target, columns, file=file, source=source)
        data = report.to_dict()
        emit(data, fmt, lambda d: render_types(d, stdout_console()))
        if junit:
            write_junit(data, junit, suite="favmigrate.check-types")
        return int(report.exit_code)

    run(job, debug=debug)


class FlagChoice(StrEnum):
    """flag ACTION (the values of favmigrate.flag.FlagAction, kept here so --help imports no psycopg)."""

    status = "status"
    enable = "enable"
    disable = "disable"


@app.command()
def flag(
    action: Annotated[FlagChoice, typer.Argument(help="status (read-only), enable or disable.",
                                                 show_default=False)],
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    key: Annotated[str | None, typer.Option("--flag", help="Another flag key of the same table.",
                                            show_default="the spec's [flag] key")] = None,
    force: Annotated[bool, typer.Option("--force", help="enable even when verify has failing checks (recorded "
                                        "in the history with the checks it was forced past).")] = False,
    require_backfill: Annotated[bool, typer.Option("--require-backfill", help="enable refuses too while rows "
                                                   "still wait for backfill.")] = False,
    lock_timeout: LockTimeoutOption = 1.0,
    retries: RetriesOption = 10,
    statement_timeout: Annotated[float, statement_timeout_option("each query (enable's verify scans the "
                                                                 "table)")] = 0.0,
    lock_wait: LockWaitOption = 30.0,
    fmt: FormatOption = OutputFormat.text,
    debug: DebugOption = False,
) -> None:
    """Show or switch the application's feature flag (the spec's [flag] table; Phase 4:
    ENABLE_FAVORITES_PRIORITY in public.feature_flags).

    status shows enabled, the last update and the table's rollout columns (read-only). enable first runs
    verify and refuses (exit 1, the failing checks listed) on any failing check unless --force;
    --require-backfill also refuses while rows wait for backfill. A missing row is created disabled (an
    upsert), required text columns without a default filled from the key. Every change is recorded in
    favmigrate.history. Exit 0 done (or already so), 1 refused, 2 the table or its columns are missing,
    row level security applies to the role, or no database.

    Example: favmigrate flag enable --require-backfill --dsn postgresql://postgres@db.example.com:5432/postgres
    """

    def job() -> int:
        from favmigrate.db import open_session
        from favmigrate.flag import FlagAction, change_flag, flag_spec, flag_status
        from favmigrate.render import render_flag, stdout_console

        chosen = FlagAction(action.value)
        target = target_for(schema)
        flag_spec(target)  # a spec without [flag] is refused before connecting
        writes = chosen is not FlagAction.STATUS
        with open_session(dsn, writes=writes, statement_timeout_s=statement_timeout or None, warn=warn) as conn:
            if writes:
                report = change_flag(conn, target, chosen, key=key, force=force, require_backfill=require_backfill,
                                     limits=session_limits(lock_timeout, retries, statement_timeout, lock_wait))
            else:
                report = flag_status(conn, target, key=key)
        emit(report.to_dict(), fmt, lambda d: render_flag(d, stdout_console()))
        return int(report.exit_code)

    run(job, debug=debug, writes=action is not FlagChoice.status)


class ScanChoice(StrEnum):
    """backfill --scan (the values of favmigrate.backfill.Scan, kept here so --help imports no psycopg)."""

    auto = "auto"
    ctid = "ctid"
    pk = "pk"


@app.command()
def backfill(
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    batch_size: Annotated[int, ranged("--batch-size", kind=int, low=1, high=MAX_BATCH_ROWS,
                                      help="Rows scanned per batch (one short transaction each).")] = 10_000,
    sleep: Annotated[float, ranged("--sleep", kind=float, low=0, high=3600,
                                   help="Seconds to pause after every batch, a throttle (0: none).")] = 0.0,
    max_rows_per_second: Annotated[float | None, ranged("--max-rows-per-second", kind=float, low=1, high=1e9,
                                                        show_default="none", help="Throttle to at most this many "
                                                        "rows scanned per second.")] = None,
    max_replica_lag: Annotated[float | None, ranged("--max-replica-lag", kind=float, low=0, high=86_400,
                                                    show_default="none", help="Pause between batches while a "
                                                    "replica's replay lag (pg_stat_replication) exceeds this many "
                                                    "seconds.")] = None,
    rejects: Annotated[Path | None, typer.Option("--rejects", dir_okay=False, show_default="none: not written",
                                                 help="Write every rejected value and conflict as JSON Lines "
                                                 "{id, key, value, reason} to this file.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a differing value already in a column "
                                            "(default: keep it and report a conflict).")] = False,
    disable_triggers: Annotated[bool, typer.Option("--disable-triggers", help="Run the batches with "
                                                   "session_replication_role=replica, so user triggers (updated_at) "
                                                   "and FK checks do not fire. Needs superuser or SET on the "
                                                   "parameter.")] = False,
    restart: Annotated[bool, typer.Option("--restart", help="Start a new pass instead of resuming an unfinished "
                                          "one.")] = False,
    scan: Annotated[ScanChoice, typer.Option("--scan", help="Batches by page range (ctid, PostgreSQL 14+), by "
                                             "primary key (pk), or auto (ctid where it can).")] = ScanChoice.auto,
    lock_timeout: LockTimeoutOption = 1.0,
    retries: RetriesOption = 10,
    statement_timeout: Annotated[float, statement_timeout_option("one batch")] = 60.0,
    lock_wait: LockWaitOption = 30.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what a real run would update, reject and "
                                          "leave as conflicts; change nothing.")] = False,
    quiet: QuietOption = False,
    fmt: FormatOption = OutputFormat.text,
    debug: DebugOption = False,
) -> None:
    """Copy the legacy metadata values into the new columns, in short resumable batches.

    Validates every value in SQL (canonical uuid of an existing mechanic; integer window 1..1440;
    ISO-8601 timestamp, UTC when it has no offset), fills only empty columns (the window: NULL or the
    default 10), never changes metadata, and reports each rejected value and conflict. Progress is
    checkpointed in the favmigrate schema with every batch: Ctrl-C (exit 3) and a re-run continues;
    a re-run after completion changes nothing. Before the first batch it lists the triggers each
    update fires; a finished run ends with ANALYZE of the table (fresh planner statistics). Needs the
    columns: run `favmigrate apply` first (exit 2 otherwise).

    Example: favmigrate backfill --dsn postgresql://postgres@db.example.com:5432/postgres --rejects rejects.jsonl
    """

    def job() -> int:
        from favmigrate.backfill import BackfillOptions, Scan
        from favmigrate.backfill import backfill as run_backfill
        from favmigrate.db import open_session
        from favmigrate.render import BackfillProgress, render_backfill, stdout_console

        scan_mode = Scan(scan.value)
        options = BackfillOptions(
            batch_size=batch_size, sleep_s=sleep, max_rows_per_second=max_rows_per_second, dry_run=dry_run,
            restart=restart, overwrite=overwrite, disable_triggers=disable_triggers, rejects_path=rejects,
            max_replica_lag_s=max_replica_lag, scan=scan_mode,
            limits=session_limits(lock_timeout, retries, statement_timeout, lock_wait))
        with (open_session(dsn, writes=not dry_run, statement_timeout_s=statement_timeout or None, warn=warn) as conn,
              BackfillProgress(quiet=quiet) as progress):
            report = run_backfill(conn, target_for(schema), options, on_event=progress)
        emit(report.to_dict(), fmt, lambda d: render_backfill(d, stdout_console()))
        return int(report.exit_code)

    run(job, debug=debug, writes=not dry_run)


class SandboxBackend(StrEnum):
    """sandbox --backend (the backends favmigrate.sandbox knows)."""

    docker = "docker"
    local = "local"
    embedded = "embedded"


SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the sample's deterministic data generator.")]
BackendOption = Annotated[SandboxBackend | None, typer.Option(
    "--backend", show_default="FAVMIGRATE_PG, else embedded", help="Where the disposable PostgreSQL comes from.")]


def sandbox_backend(backend: SandboxBackend | None) -> str:
    """--backend, else $FAVMIGRATE_PG, else the embedded server."""
    return (backend.value if backend else None) or os.environ.get("FAVMIGRATE_PG") or "embedded"


def serve_until_interrupted(dsn: str, *, announce: bool = True) -> None:
    """Print the DSN and an export line on stdout (unless the output already carries it), then wait for
    Ctrl-C (SIGTERM and SIGHUP too)."""
    import time

    from favmigrate.render import stderr_console

    if announce:
        sys.stdout.write(f"{dsn}\nexport FAVMIGRATE_DSN='{dsn}'\n")
        sys.stdout.flush()
    else:
        stderr_console().print("the server keeps running until Ctrl-C", highlight=False)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stderr_console().print("stopping the server and removing its files ...")


@app.command()
def sandbox(
    rows: Annotated[int, ranged("--rows", kind=int, low=0, high=100_000_000,
                                help="session_requests rows to generate.")] = 10_000,
    seed: SeedOption = 42,
    backend: BackendOption = None,
    debug: DebugOption = False,
) -> None:
    """Start a disposable PostgreSQL loaded with the sample database, and keep it until Ctrl-C.

    Prints the DSN and an `export FAVMIGRATE_DSN=...` line so that every other command can be tried
    by hand in another terminal. Ctrl-C stops the server and removes its files.

    Example: favmigrate sandbox --rows 100000
    """

    def job() -> int:
        from favmigrate.db import connect
        from favmigrate.render import stderr_console
        from favmigrate.sample import load_sample
        from favmigrate.sandbox import disposable_postgres

        console = stderr_console()
        with disposable_postgres(sandbox_backend(backend)) as server:
            with connect(server.dsn) as conn:
                summary = load_sample(conn, rows=rows, seed=seed, progress=lambda m: console.print(m, markup=False))
            console.print(
                f"PostgreSQL {server.version} ({server.backend}) with {summary.session_requests} session_requests, "
                f"{summary.legacy_rows} carrying legacy metadata. Ctrl-C stops it and removes everything.",
                highlight=False,
            )
            serve_until_interrupted(server.dsn)
        return 0

    run(job, debug=debug)


@app.command()
def demo(
    rows: Annotated[int, ranged("--rows", kind=int, low=1, high=10_000_000,
                                help="Rows of the sample's main table (session_requests).")] = 100_000,
    seed: SeedOption = 42,
    spec: Annotated[Path | None, typer.Option(
        "--spec", help="Run another migration (a migration.toml, or its folder) on the sample its folder's "
        "sample.sql creates (also accepted before the command).", show_default="the built-in Phase 4 migration")]
    = None,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the server running afterwards, print the database's "
                                       "DSN and wait for Ctrl-C.")] = False,
    backend: BackendOption = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="text (each stage as it runs) or json (a summary "
                                              "per stage at the end).")] = OutputFormat.text,
    debug: DebugOption = False,
) -> None:
    """Run the whole migration on a throw-away PostgreSQL loaded with the sample, and check every stage.

    Needs no database, Docker or installed PostgreSQL (the favmigrate[sandbox] extra's embedded server).
    Stages: lint (the seed's hand-written SQL next to what apply runs), plan, apply while an application
    writer commits 50 transactions/s (its worst stall next to the seed's SQL under the same writer, on a
    copy), verify, backfill (rejects compared with the sample's known counts), explain, report,
    rollback (every value found back in metadata), verify --absent. Then the server and its files are
    removed (--keep: left running until Ctrl-C). Exit 0 every stage did what it should, 1 one did not
    (the run stops there), 2 usage error or no server could start, 3 interrupted.

    Example: favmigrate demo --rows 20000 --format json
    """

    def job() -> int:
        from favmigrate.demo import DemoOptions, DemoProgress
        from favmigrate.demo import demo as run_demo
        from favmigrate.render import DemoDisplay, print_json, render_demo, stdout_console

        options = DemoOptions(rows=rows, seed=seed, backend=sandbox_backend(backend), spec_path=spec or _State.spec)
        with DemoDisplay(json=fmt is OutputFormat.json) as display:
            progress = DemoProgress(on_demo=display, on_steps=display.steps, on_backfill=display.backfill,
                                    warn=display.warn)
            with run_demo(options, progress) as report:
                display.close()
                data = report.to_dict()
                if fmt is OutputFormat.json:
                    print_json({**data, "dsn": report.dsn if keep else None})
                else:
                    render_demo(data, stdout_console())
                if keep:  # in JSON the document carries the DSN: stdout stays one document
                    serve_until_interrupted(report.dsn, announce=fmt is not OutputFormat.json)
        return int(report.exit_code)

    run(job, debug=debug)


class LintFormat(StrEnum):
    text = "text"
    json = "json"
    sarif = "sarif"


class LintFailOn(StrEnum):
    note = "note"
    warning = "warning"
    error = "error"
    never = "never"


@app.command()
def lint(
    paths: Annotated[list[str] | None, typer.Argument(metavar="PATH...", help="SQL files, folders (every *.sql in "
                                                      "them) or - for stdin.", show_default=False)] = None,
    dsn: Annotated[str | None, typer.Option("--dsn", help="Read table sizes and column types from this database's "
                                            "catalogs (read-only) to grade findings.",
                                            show_default="none: sizes and types unknown")] = None,
    rule: Annotated[list[str] | None, typer.Option("--rule", help="Run only these rules (repeatable or "
                                                   "comma-separated; all, default).",
                                                   show_default="default, or the [lint] table's")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Skip these rules (repeatable or "
                                                      "comma-separated).",
                                                      show_default="none, or the [lint] table's")] = None,
    fail_on: Annotated[LintFailOn | None, typer.Option("--fail-on", help="Exit 1 on findings of this severity "
                                                       "or above.", show_default="warning")] = None,
    config: Annotated[Path | None, typer.Option("--config", dir_okay=False, help="Project config file with a "
                                                "[lint] table.", show_default="./favmigrate.toml")] = None,
    assume_in_transaction: Annotated[bool | None, typer.Option(
        "--assume-in-transaction/--no-assume-in-transaction", help="Each file is run in one transaction by a "
        "migration tool (as squawk's option).", show_default="no")] = None,
    list_rules: Annotated[bool, typer.Option("--list-rules", help="List every rule and exit.")] = False,
    fmt: Annotated[LintFormat, typer.Option("--format", help="text, json or sarif.")] = LintFormat.text,
    junit: Annotated[Path | None, typer.Option("--junit", dir_okay=False, show_default="none: not written",
                                               help="Also write JUnit XML, one testcase per finding.")] = None,
    statement_timeout: Annotated[float, statement_timeout_option("each catalog query (with --dsn)")] = 0.0,
    debug: DebugOption = False,
) -> None:
    """Find lock-unsafe statements in migration SQL before deploy (squawk's rule ids).

    Flags a plain CREATE INDEX, a validating foreign key or CHECK, SET NOT NULL, type changes,
    drops, renames, missing lock_timeout / statement_timeout, CREATE INDEX CONCURRENTLY in a
    transaction, and more (--list-rules). Reads DO bodies and constant EXECUTE strings; a table
    created in the same file is new. `-- squawk-ignore RULE, ...` or `-- favmigrate:ignore RULE`
    skips the next statement, the `-file` forms the file. Settings come from the [lint] table
    (rules, exclude, fail-on, assume-in-transaction) of favmigrate.toml. With --dsn only the
    catalogs are read, in a READ ONLY transaction. GitHub annotations go to stderr when
    GITHUB_ACTIONS is set. Exit 0 clean, 1 findings at or above --fail-on, 2 unreadable input,
    unknown rule id or no database.

    Example: favmigrate lint migrations/ --format sarif > lint.sarif
    """

    def job() -> int:
        from favmigrate.errors import UsageError
        from favmigrate.lint import lint as run_lint
        from favmigrate.lint import lint_options, load_config, read_sources
        from favmigrate.lint.reporters import github_annotations, sarif, summary_line, text_lines, write_junit
        from favmigrate.render import print_json, print_lines

        options = lint_options(load_config(config), rules=rule, exclude=exclude,
                               fail_on=fail_on.value if fail_on else None, assume_in_transaction=assume_in_transaction)
        if list_rules:
            listing = [r.to_dict() for r in options.rules]
            if fmt is LintFormat.json:
                print_json(listing)
            else:
                print_lines(f"{r['id']}  {r['severity']}{'' if r['default'] else ' (opt-in)'}  {r['summary']}"
                            for r in listing)
            return 0
        if not paths:
            raise UsageError("nothing to lint: give SQL files, folders or - for stdin")
        sources = read_sources(paths)
        if dsn:
            from favmigrate.db import open_session

            with open_session(dsn, writes=False, statement_timeout_s=statement_timeout or None, warn=warn) as conn:
                report = run_lint(sources, options, conn)
        else:
            report = run_lint(sources, options)
        data = report.to_dict()
        if fmt is LintFormat.json:
            print_json(data)
        elif fmt is LintFormat.sarif:
            print_json(sarif(data, [r.to_dict() for r in report.rules]))
        else:
            print_lines(text_lines(data))
        if junit:
            write_junit(data, junit)
        if os.environ.get("GITHUB_ACTIONS") == "true":
            print_lines(github_annotations(data), err=True)
        print_lines([summary_line(data)], err=True)
        return int(report.exit_code)

    run(job, debug=debug)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
