"""The queries the migration's indexes exist for: annotated SQL files in verify/, shared by explain and report.

Each ``*.sql`` file holds one statement and starts with a comment header::

    -- title: what the query is for
    -- expects: session_requests_priority_timeout_idx
    -- param: mechanic_id uuid = (SELECT ... FROM {table} ...)
    -- param: since timestamptz = NULL

``expects`` names the index the query should use; ``A | B`` accepts either (two indexes with the same
leading column and predicate serve a full scan of that predicate equally, and the planner takes the
smaller one, or either on a tie). A ``param`` is a ``%(name)s`` placeholder of the
statement with its type and an optional default, an SQL expression evaluated in the database (so it
can be taken from the data); a param without default must be given. ``{table}`` and
``{referenced_table}`` are filled by `Target.compose`; ``{mechanic_label}`` is the display label of the
referenced row aliased ``m``, composed from whichever display columns that table has (see
`mechanic_label`). The query id is the file name without ``.sql``, with ``-`` for ``_``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from favmigrate import catalog
from favmigrate.catalog import Snapshot, require_tables
from favmigrate.db import ms, read_only, rows, scalar, set_local
from favmigrate.errors import PreflightFailed, UsageError
from favmigrate.resources import verify_dir
from favmigrate.spec import MigrationSpec, Target, spec_file

_HEADER = re.compile(r"^--\s*(title|expects|param)\s*:\s*(.*?)\s*$")
_PARAM = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*)\s+(?P<type>[a-z_][a-z0-9_ .]*?(\[\])?)\s*(=\s*(?P<default>.+))?$",
                    re.IGNORECASE)


# The referenced table's display columns, in order of preference; a group is joined with spaces. The real
# application's mechanics table has `name`, the sample's first_name and last_name: none may be assumed.
LABEL_COLUMNS = (("name",), ("first_name", "last_name"), ("full_name",), ("display_name",), ("email",))
NO_LABEL = sql.SQL("NULL::text")


def mechanic_label(conn: psycopg.Connection[Any], target: Target, alias: str = "m") -> sql.Composable:
    """A text expression labelling a row of the referenced table (aliased ``alias``): the first non-empty of
    its display columns (LABEL_COLUMNS) that exist and the role may read, or NULL when it has none.

    Read-only (the catalogs only).
    """
    readable = {
        row["attname"] for row in rows(conn, sql.SQL(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped"
            " AND has_column_privilege(attrelid, attnum, 'SELECT')"), (target.referenced_table_name,))
    }
    parts = []
    for group in LABEL_COLUMNS:
        present = [sql.Identifier(alias, name) for name in group if name in readable]
        if present:
            parts.append(sql.SQL("nullif(btrim(concat_ws(' ', {})), '')").format(sql.SQL(", ").join(present)))
    if not parts:
        return NO_LABEL
    return parts[0] if len(parts) == 1 else sql.SQL("coalesce({})").format(sql.SQL(", ").join(parts))


@dataclass(frozen=True)
class QueryParam:
    """A ``%(name)s`` placeholder: its type, and the SQL expression giving its default (None: required)."""

    name: str
    type: str
    default: str | None = None


@dataclass(frozen=True)
class QuerySpec:
    """One annotated query file."""

    id: str
    file: str
    title: str
    expects: tuple[str, ...]  # the index the query should use, then accepted alternatives
    params: tuple[QueryParam, ...]
    template: str

    @property
    def expected_index(self) -> str:
        return self.expects[0]

    def statement(self, target: Target, label: sql.Composable = NO_LABEL) -> sql.Composed:
        """The single statement of the file, with the target's identifiers and the mechanic ``label`` filled in.

        Raises UsageError when the file holds no statement or several.
        """
        statements = target.compose(self.template, {"mechanic_label": label})
        if len(statements) != 1:
            raise UsageError(f"query file {self.file} must hold exactly one statement, found {len(statements)}")
        return statements[0]


def parse_query(file: str, text: str, expects_given: tuple[str, ...] = (), *,
                required_expects: bool = True) -> QuerySpec:
    """Read the header of one query file. Raises UsageError when ``expects`` is missing or a param is malformed."""
    title, params = "", []
    expects: tuple[str, ...] = ()
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            break
        match = _HEADER.match(stripped)
        if not match:
            continue
        key, value = match.groups()
        if key == "title":
            title = value
        elif key == "expects":
            expects = tuple(name.strip() for name in value.split("|") if name.strip())
        else:
            found = _PARAM.match(value)
            if not found:
                raise UsageError(f"query file {file}: malformed param line {value!r}",
                                 hint="write `-- param: name type` or `-- param: name type = SQL expression`")
            default = found.group("default")
            params.append(QueryParam(found.group("name"), found.group("type").strip(),
                                     default.strip() if default else None))
    expects = expects_given or expects
    if not expects and required_expects:
        raise UsageError(f"query file {file} names no index: add a `-- expects: <index name>` header line",
                         hint="or give it in the spec: [[explain]] file = ..., expects = \"<index name>\"")
    stem = file.rsplit("/", 1)[-1].removesuffix(".sql")
    return QuerySpec(id=stem.replace("_", "-"), file=file, title=title or stem, expects=expects,
                     params=tuple(params), template=text)


def load_queries(folder: Traversable | None = None) -> tuple[QuerySpec, ...]:
    """Every ``*.sql`` file of ``folder`` (default: the shipped verify/), sorted by name.

    Raises UsageError when the folder cannot be read or holds no query file.
    """
    where = folder if folder is not None else verify_dir()
    try:
        files = sorted((entry for entry in where.iterdir() if entry.name.endswith(".sql")), key=lambda e: e.name)
        queries = tuple(parse_query(entry.name, entry.read_text(encoding="utf-8")) for entry in files)
    except OSError as exc:
        raise UsageError(f"cannot read the query files in {where}: {exc}") from None
    if not queries:
        raise UsageError(f"no query file (*.sql) in {where}")
    return queries


def spec_queries(spec: MigrationSpec) -> tuple[QuerySpec, ...]:
    """The queries `explain` runs for a spec: its [[explain]] files (their index given there or in the file's
    header), else every ``*.sql`` of its query folder. Raises UsageError when a file cannot be read."""
    if not spec.explain:
        return load_queries(spec.queries_folder)
    assert spec.folder is not None
    queries = []
    for entry in spec.explain:
        found = spec_file(spec.folder, entry.file)
        try:
            text = found.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read the query file {entry.file}: {exc}") from None
        queries.append(parse_query(entry.file, text, entry.expects))
    return tuple(queries)


def report_query(spec: MigrationSpec, name: str) -> QuerySpec:
    """The query of the spec's report ``name`` ([[reports]]). Raises UsageError when the spec has none."""
    entry = next((report for report in spec.reports if report.name == name), None)
    if entry is None or spec.folder is None:
        raise UsageError(f"migration {spec.id} declares no {name} report",
                         hint=f"its spec needs [[reports]] name = \"{name}\", file = ...")
    try:
        text = spec_file(spec.folder, entry.file).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read the query file {entry.file}: {exc}") from None
    query = parse_query(entry.file, text, required_expects=False)
    missing = sorted(set(entry.params) - {param.name for param in query.params})
    if missing:
        raise UsageError(f"report {name}: {entry.file} declares no param {', '.join(missing)}",
                         hint="add a `-- param: name type` header line for each")
    return query


def require_applied(snapshot: Snapshot, target: Target) -> None:
    """Refuse to run the queries before the migration's columns exist. Raises PreflightFailed."""
    require_tables(snapshot, target)
    missing = [c.name for c in target.spec.columns if c.name not in snapshot.columns]
    if missing:
        raise PreflightFailed(
            f"the migration is not applied: {target.table_name} has no column {', '.join(missing)}",
            problems=[f"column {name} is missing" for name in missing],
            hint="run `favmigrate plan`, then `favmigrate apply`",
        )


def hidden_by_row_security(conn: psycopg.Connection[Any], target: Target) -> bool:
    """True when row level security filters what the current role sees of the table. Read-only."""
    return f"{target.schema}.{target.spec.table}" in catalog.hidden_by_row_security(conn, target)


def _type(param: QueryParam, query: QuerySpec) -> sql.SQL:
    if not re.fullmatch(r"[a-z_][a-z0-9_ .]*(\[\])?", param.type, re.IGNORECASE):
        raise UsageError(f"query file {query.file}: param {param.name} has an unusable type {param.type!r}")
    return sql.SQL(param.type)


def resolve_params(
    conn: psycopg.Connection[Any], target: Target, query: QuerySpec, given: Mapping[str, str]
) -> dict[str, Any]:
    """The value of every param of ``query``: the given text cast to its type, else its default from the data.

    Run inside a transaction. Raises UsageError for a value the type rejects or a missing required param.
    """
    values: dict[str, Any] = {}
    for param in query.params:
        cast = _type(param, query)
        if param.name in given:
            statement = sql.SQL("SELECT %s::{}").format(cast)
            try:
                with conn.transaction():
                    values[param.name] = scalar(conn, statement, (given[param.name],))
            except psycopg.DataError as exc:
                raise UsageError(f"--param {param.name}={given[param.name]}: {first_line(exc)}") from None
        elif param.default is not None:
            expression = target.compose(param.default)
            if len(expression) != 1:
                raise UsageError(f"query file {query.file}: the default of {param.name} is not one expression")
            statement = sql.SQL("SELECT ({})::{}").format(expression[0], cast)
            try:
                with conn.transaction():
                    values[param.name] = scalar(conn, statement)
            except pg_errors.QueryCanceled:
                raise UsageError(
                    f"query file {query.file}: the default of {param.name} was cancelled by statement_timeout",
                    hint=f"raise --statement-timeout, or pass --param {param.name}=VALUE",
                ) from None
            except psycopg.Error as exc:
                if isinstance(exc, psycopg.OperationalError):
                    raise
                raise UsageError(f"query file {query.file}: the default of {param.name} failed: "
                                 f"{first_line(exc)}") from None
        else:
            raise UsageError(f"query {query.id} needs a value for {param.name}",
                             hint=f"pass --param {param.name}=VALUE")
    return values


def check_param_names(queries: tuple[QuerySpec, ...], given: Mapping[str, str]) -> None:
    """Refuse a --param that no query declares (a typo would otherwise be ignored). Raises UsageError."""
    known = {param.name for query in queries for param in query.params}
    unknown = sorted(set(given) - known)
    if unknown:
        raise UsageError(f"no query takes the param {', '.join(unknown)}",
                         hint=f"params of these queries: {', '.join(sorted(known)) or '(none)'}")


@contextmanager
def read_only_query(conn: psycopg.Connection[Any], *, timeout_s: float | None, **settings: str) -> Iterator[None]:
    """A READ ONLY transaction, always rolled back, with a local statement_timeout and other local settings."""
    with read_only(conn):
        set_local(conn, statement_timeout=ms(timeout_s), **settings)
        yield


def first_line(exc: BaseException) -> str:
    """The server's message without its LINE/HINT context lines."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def rejected(query: QuerySpec, exc: psycopg.Error) -> UsageError:
    """The error for a query the server rejected: one that writes (refused by the READ ONLY transaction,
    SQLSTATE 25006), or one that fails."""
    if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
        return UsageError(
            f"query file {query.file} writes: the server refused it in the READ ONLY transaction ({first_line(exc)})",
            hint="only queries that read are run; nothing was changed",
        )
    return UsageError(f"query {query.id} ({query.file}) failed: {first_line(exc)}")
