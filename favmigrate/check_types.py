"""check-types: does the application's generated TypeScript (`supabase gen types typescript`) declare the
migration's columns as the generator would emit them now? Pure, or read-only with a connection.

What the generator emits for a column (postgres-meta's typescript template): in ``Row`` every column is
required, ``type | null`` when nullable; in ``Insert`` a column is optional (``?:``) when it is nullable, has
a default or is an identity; in ``Update`` every column is optional; an ``ALWAYS`` identity or generated
column is ``?: never`` in both. Types: ``boolean``; ``number`` for integers, floats and numeric; ``string``
for text, uuid, dates, times and timestamps; ``Json`` for json/jsonb; ``T[]`` for arrays; enums as
``Database["schema"]["Enums"]["name"]``. A type the generator maps in a way this table does not know is
checked for presence and optionality only.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from favmigrate.db import read_only, rows
from favmigrate.errors import ExitCode, UsageError
from favmigrate.results import CheckResult, CheckStatus
from favmigrate.spec import Target
from favmigrate.tstypes import Member, ObjectType, canonical_type, parse_database

SECTIONS = ("Row", "Insert", "Update")
REGENERATE = "regenerate the types after the migration: supabase gen types typescript"

_NUMBER = ("int2", "smallint", "int4", "integer", "int", "int8", "bigint", "float4", "real", "float8",
           "double precision", "numeric", "decimal")
_STRING = ("bytea", "bpchar", "char", "character", "varchar", "character varying", "text", "citext", "uuid", "date",
           "time", "timetz", "time with time zone", "time without time zone", "timestamp", "timestamptz",
           "timestamp with time zone", "timestamp without time zone", "vector")
GENERATED_TS_TYPES: dict[str, str] = {
    "bool": "boolean", "boolean": "boolean", "json": "Json", "jsonb": "Json",
    **{name: "number" for name in _NUMBER}, **{name: "string" for name in _STRING},
}
_TYPE_MODIFIER = re.compile(r"\(.*\)")


def generated_ts_type(pg_type: str) -> str | None:
    """The TypeScript type the generator emits for a PostgreSQL type name (``uuid``, ``int4``,
    ``numeric(12,2)``, ``timestamp with time zone``), None when this table does not know it. Pure."""
    return GENERATED_TS_TYPES.get(_TYPE_MODIFIER.sub("", pg_type).strip().lower())


@dataclass(frozen=True)
class ExpectedColumn:
    """A column as the generator sees it."""

    name: str
    pg_type: str  # for messages
    ts_type: str | None  # the base TypeScript type; None: not known, so not compared
    nullable: bool
    has_default: bool
    writable: bool = True  # False for ALWAYS identities and generated columns: `?: never` in Insert and Update

    def declaration(self, section: str) -> tuple[bool, str | None]:
        """(optional, canonical type) of this column's field in ``section`` (Row, Insert, Update)."""
        if section != "Row" and not self.writable:
            return True, "never"
        if self.ts_type is None:
            base = None
        else:
            base = canonical_type(f"{self.ts_type} | null" if self.nullable else self.ts_type)
        optional = {"Row": False, "Insert": self.nullable or self.has_default, "Update": True}[section]
        return optional, base


def spec_columns(target: Target) -> tuple[ExpectedColumn, ...]:
    """The spec's columns in their end state. Pure."""
    return tuple(
        ExpectedColumn(column.name, str(column.type), generated_ts_type(str(column.type)), column.nullable,
                       column.default is not None)
        for column in target.spec.columns
    )


_LIVE_COLUMNS = sql.SQL(
    """
    SELECT c.column_name, c.is_nullable = 'YES' AS nullable, c.column_default IS NOT NULL AS has_default,
           c.is_identity = 'YES' AS is_identity, c.identity_generation, c.is_generated <> 'NEVER' AS is_generated,
           c.udt_name, t.typtype::text AS typtype, tn.nspname AS type_schema,
           et.typname AS element_name, et.typtype::text AS element_typtype, en.nspname AS element_schema
    FROM information_schema.columns c
    JOIN pg_namespace tn ON tn.nspname = c.udt_schema
    JOIN pg_type t ON t.typnamespace = tn.oid AND t.typname = c.udt_name
    LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
    LEFT JOIN pg_namespace en ON en.oid = et.typnamespace
    WHERE c.table_schema = %s AND c.table_name = %s
    ORDER BY c.ordinal_position
    """
)


def _live_ts_type(name: str, typtype: str | None, schema: str | None) -> str | None:
    if typtype == "e":
        return f'Database["{schema}"]["Enums"]["{name}"]'
    if typtype == "c":
        return f'Database["{schema}"]["CompositeTypes"]["{name}"]'
    return generated_ts_type(name)


def live_columns(conn: psycopg.Connection[Any], target: Target) -> tuple[ExpectedColumn, ...]:
    """Every column of the spec's table as the database has it now (information_schema, in a READ ONLY
    transaction). Read-only. Raises UsageError when the table does not exist."""
    with read_only(conn):
        found = rows(conn, _LIVE_COLUMNS, (target.schema, target.spec.table))
    if not found:
        raise UsageError(f"table {target.schema}.{target.spec.table} does not exist (or the role may not see its "
                         "columns)",
                         hint="check --schema and the database named in the DSN")
    columns = []
    for row in found:
        if row["element_name"] is not None:
            element = _live_ts_type(row["element_name"], row["element_typtype"], row["element_schema"])
            ts_type = None if element is None else f"({element})[]"
            pg_type = f"{row['element_name']}[]"
        else:
            ts_type = _live_ts_type(row["udt_name"], row["typtype"], row["type_schema"])
            pg_type = row["udt_name"]
        writable = not (row["is_generated"] or row["identity_generation"] == "ALWAYS")
        columns.append(ExpectedColumn(row["column_name"], pg_type, ts_type, row["nullable"],
                                      row["has_default"] or row["is_identity"], writable))
    return tuple(columns)


class Source(StrEnum):
    SPEC = "spec"
    DATABASE = "database"


def read_types_file(path: str) -> str:
    """The text of a types file (``-``: stdin). Raises UsageError when it cannot be read as UTF-8."""
    try:
        if path == "-":
            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"cannot read the types file {path}: {reason}") from None


class Problem(StrEnum):
    NONE = "none"
    MISSING = "missing"
    MISTYPED = "mistyped"
    EXTRA = "extra"  # a field for a column the table does not have (with --dsn)


@dataclass(frozen=True)
class FieldCheck:
    """One field of one section, and what is wrong with it."""

    section: str
    field: str
    problem: Problem
    check: CheckResult


@dataclass(frozen=True)
class TypesReport:
    """What check-types found: one check per column and section, plus fields the table does not have."""

    file: str
    schema: str
    table: str
    source: Source
    fields: tuple[FieldCheck, ...]
    notes: tuple[str, ...] = ()

    @property
    def checks(self) -> tuple[CheckResult, ...]:
        return tuple(found.check for found in self.fields)

    @property
    def ok(self) -> bool:
        return not any(check.failed for check in self.checks)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.ok else ExitCode.FAILED

    def to_dict(self) -> dict[str, Any]:
        sections: dict[str, dict[str, list[Any]]] = {
            name: {"missing": [], "mistyped": [], "extra": []} for name in SECTIONS}
        counts = {status.value: 0 for status in CheckStatus}
        for found in self.fields:
            counts[found.check.status.value] += 1
            if found.problem is Problem.MISTYPED:
                sections[found.section][found.problem.value].append(
                    {"field": found.field, "expected": found.check.expected, "actual": found.check.actual})
            elif found.problem is not Problem.NONE:
                sections[found.section][found.problem.value].append(found.field)
        return {"ok": self.ok, "file": self.file, "schema": self.schema, "table": self.table,
                "source": self.source.value, "summary": counts, "sections": sections,
                "checks": [check.to_dict() for check in self.checks], "notes": list(self.notes)}


def _declared(name: str, optional: bool, type_text: str | None) -> str:
    return f"{name}{'?' if optional else ''}: {type_text if type_text is not None else '(any type)'}"


def _field_check(table: str, section: str, column: ExpectedColumn, found: Member | None,
                 where: str) -> FieldCheck:
    check_id = f"types:{table}.{section}.{column.name}:declared"
    optional, expected_type = column.declaration(section)
    expected = _declared(column.name, optional, expected_type)
    if found is None:
        return FieldCheck(section, column.name, Problem.MISSING, CheckResult(
            check_id, CheckStatus.FAIL, expected, "missing", f"{where}.{section} has no field {column.name}",
            hint=REGENERATE))
    actual_type = found.type.canonical()
    actual = _declared(column.name, found.optional, actual_type)
    problems = []
    if expected_type is not None and actual_type != expected_type:
        problems.append(f"type {actual_type}, the generator emits {expected_type} for {column.pg_type}"
                        f"{' NULL' if column.nullable else ' NOT NULL'}")
    if found.optional != optional:
        problems.append("optional" if found.optional else "required")
    if not problems:
        return FieldCheck(section, column.name, Problem.NONE, CheckResult(check_id, CheckStatus.PASS, expected, actual))
    return FieldCheck(section, column.name, Problem.MISTYPED, CheckResult(
        check_id, CheckStatus.FAIL, expected, actual, f"{section}.{column.name}: " + "; ".join(problems),
        hint=REGENERATE))


def _member(node: ObjectType | None, name: str) -> ObjectType | None:
    if node is None or name not in node.members:
        return None
    found = node.members[name].type
    return found if isinstance(found, ObjectType) else None


def check_types(text: str, target: Target, columns: tuple[ExpectedColumn, ...], *, file: str = "",
                source: Source = Source.SPEC) -> TypesReport:
    """Compare the generated types in ``text`` with ``columns`` of the target's table. Pure.

    Raises TypesFileError when the file is not TypeScript of the generator's shape.
    """
    database = parse_database(text)
    schema, table = target.schema, target.spec.table
    notes: list[str] = []
    schema_type = _member(database, schema)
    if schema_type is None:
        declared = ", ".join(database.members) or "none"
        notes.append(f"the file declares no schema {schema!r} (schemas: {declared})")
    table_type = _member(_member(schema_type, "Tables"), table)
    if schema_type is not None and table_type is None:
        notes.append(f"Database[{schema!r}].Tables has no table {table!r}")
    where = f'Database["{schema}"]["Tables"]["{table}"]'
    checks: list[FieldCheck] = []
    known = {column.name for column in columns}
    for section in SECTIONS:
        fields = _member(table_type, section)
        if table_type is not None and fields is None:
            notes.append(f"{where} has no {section}")
        for column in columns:
            member = fields.members.get(column.name) if fields else None
            checks.append(_field_check(table, section, column, member, where))
        if source is Source.DATABASE and fields is not None:
            for extra in (name for name in fields.members if name not in known):
                member = fields.members[extra]
                checks.append(FieldCheck(section, extra, Problem.EXTRA, CheckResult(
                    f"types:{table}.{section}.{extra}:declared", CheckStatus.FAIL, "absent",
                    _declared(extra, member.optional, member.type.canonical()),
                    f"{section}.{extra} is not a column of {schema}.{table}", hint=REGENERATE)))
    if any(column.ts_type is None for column in columns):
        unknown = ", ".join(f"{c.name} ({c.pg_type})" for c in columns if c.ts_type is None)
        notes.append(f"types not compared, only presence and optionality: {unknown}")
    return TypesReport(file, schema, table, source, tuple(checks), tuple(notes))

