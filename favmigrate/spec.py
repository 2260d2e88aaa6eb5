"""THE description of a migration's end state: a migration.toml, loaded and validated into frozen values.

plan, apply, verify, backfill, finalize and rollback all read this one object, so they cannot disagree.
The built-in spec is Phase 4 (verify/migration.toml); ``--spec PATH`` (or FAVMIGRATE_SPEC) loads another
one: a migration.toml, or a folder holding one plus optional query files.

A spec that does not validate raises SpecError naming the field (``columns[2] (total).min: ...``): no
command starts from a spec it does not fully understand.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from functools import cache
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, TypeVar

import sqlparse
from psycopg import sql

from favmigrate.coltypes import ColumnRules, Kind, Number, SqlType, parse_type
from favmigrate.errors import UsageError
from favmigrate.resources import verify_dir

DEFAULT_SCHEMA = "public"
SPEC_FILE = "migration.toml"
QUERIES_FOLDER = "queries"
# backfill's widest intermediate result carries 7 columns per spec column, and PostgreSQL allows 1664 result
# columns (MaxTupleAttributeNumber): 237 columns fit; 200 leaves room for the unique checks' columns
MAX_COLUMNS = 200
MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1: longer names are silently truncated


class SpecError(UsageError):
    """The migration spec is not valid; the message names the field."""


class LockKind(StrEnum):
    BRIEF = "brief"  # strong lock for an instant: short lock_timeout, retried
    ONLINE = "online"  # long, weak lock (VALIDATE CONSTRAINT): statement_timeout only
    CONCURRENT = "concurrent"  # CREATE/DROP INDEX CONCURRENTLY: no transaction block
    BATCHED = "batched"  # repeated short transactions (NULL fill)


# ---------------------------------------------------------------- typed identities of objects and checks


class ObjectKind(StrEnum):
    TABLE = "table"
    COLUMN = "column"
    CONSTRAINT = "constraint"
    INDEX = "index"
    DATA = "data"
    TRIGGER = "trigger"  # only the change log a stopped rollback left: never the migration's


class Aspect(StrEnum):
    """What a check looks at on its object (the last part of a check id)."""

    EXISTS = "exists"
    ABSENT = "absent"
    TYPE = "type"
    NULLABLE = "nullable"
    DEFAULT = "default"
    COMMENT = "comment"
    DEFINITION = "definition"
    VALIDATED = "validated"
    VALID = "valid"
    ORPHANS = "orphans"
    RANGE = "range"
    BACKFILL_PENDING = "backfill-pending"


@dataclass(frozen=True)
class ObjectId:
    """One object of the migration (or of its table), e.g. the column ``priority_window_minutes``."""

    kind: ObjectKind
    name: str

    def check(self, aspect: Aspect) -> CheckId:
        return CheckId(self, aspect)

    def __str__(self) -> str:
        return f"{self.kind.value} {self.name}"


@dataclass(frozen=True)
class CheckId:
    """A check of one aspect of one object. Its text form is the stable id in every output."""

    object: ObjectId
    aspect: Aspect

    def __str__(self) -> str:
        return f"{self.object.kind.value}:{self.object.name}:{self.aspect.value}"


# ---------------------------------------------------------------- column types (coltypes owns them)

_INTEGER_KINDS = (Kind.SMALLINT, Kind.INTEGER, Kind.BIGINT)


def _type_bounds(column_type: SqlType) -> tuple[Number, Number] | None:
    """The type's own range (integers, numeric), None for a type without min/max."""
    return ColumnRules(column_type).bounds


class OnDelete(StrEnum):
    NO_ACTION = "NO ACTION"
    RESTRICT = "RESTRICT"
    CASCADE = "CASCADE"
    SET_NULL = "SET NULL"
    SET_DEFAULT = "SET DEFAULT"


# ---------------------------------------------------------------- the spec's objects

Value = int | Decimal | bool | str | dt.date


@dataclass(frozen=True)
class ForeignKeySpec:
    """A column's ``references``: a foreign key of its own name, added NOT VALID then validated."""

    name: str
    column: str
    referenced_table: str
    referenced_column: str
    on_delete: OnDelete
    unknown_reason: str = "unknown_reference"  # backfill's reject reason for a value whose row is missing

    @property
    def id(self) -> ObjectId:
        return ObjectId(ObjectKind.CONSTRAINT, self.name)

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    @property
    def referenced_columns(self) -> tuple[str, ...]:
        return (self.referenced_column,)


@dataclass(frozen=True)
class ColumnSpec:
    """A typed column that takes its values from one legacy key of the JSONB column."""

    name: str
    type: SqlType
    legacy_key: str
    nullable: bool = True  # in the end state
    comment: str | None = None
    default: Value | None = None
    min: int | Decimal | None = None
    max: int | Decimal | None = None
    max_length: int | None = None
    allowed: tuple[str, ...] | None = None
    foreign_key: ForeignKeySpec | None = None
    not_null_after_backfill: bool = False  # added nullable; `finalize` enforces NOT NULL once backfilled
    not_null_check: str | None = None  # the CHECK proving NOT NULL online (None for a nullable column)
    label: str = ""  # the column in step names (window-fill-nulls)

    @property
    def id(self) -> ObjectId:
        return ObjectId(ObjectKind.COLUMN, self.name)

    @property
    def rules(self) -> ColumnRules:
        """What the column accepts (coltypes reads and writes its values by these)."""
        return ColumnRules(self.type, self.min, self.max, self.max_length, self.allowed)

    @property
    def nullable_when_added(self) -> bool:
        return self.nullable or self.not_null_after_backfill

    @property
    def default_text(self) -> str | None:
        """The default as verify shows and compares it (the catalog's text without casts and quotes)."""
        if self.default is None:
            return None
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        return str(self.default)


@dataclass(frozen=True)
class IndexSpec:
    name: str
    columns: tuple[str, ...]
    predicate: str | None = None
    unique: bool = False

    @property
    def id(self) -> ObjectId:
        return ObjectId(ObjectKind.INDEX, self.name)


@dataclass(frozen=True)
class ExplainQuerySpec:
    """A query `explain` runs: its file (in the spec folder) and the index it must use (else the file's header)."""

    file: str
    expects: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportSpec:
    """A report query: its file and the parameters it takes."""

    name: str
    file: str
    params: tuple[str, ...] = ()


@dataclass(frozen=True)
class FlagSpec:
    """The feature flag the application reads, which `favmigrate flag` turns on once the migration verifies:
    the table holding it, its key and boolean columns, and the key of this migration's flag."""

    table: str
    key_column: str
    enabled_column: str
    key: str
    updated_at_column: str = "updated_at"  # set to now() on a change, when the table has it
    rollout_columns: tuple[str, ...] = ()  # shown by `flag status` when present; () = rollout*/enabled_for*


@dataclass(frozen=True)
class MigrationSpec:
    id: str
    description: str
    table: str
    primary_key: str
    metadata_column: str
    columns: tuple[ColumnSpec, ...]
    indexes: tuple[IndexSpec, ...] = ()
    schema: str = DEFAULT_SCHEMA
    existing_columns: tuple[str, ...] = ()  # columns of the table the indexes use besides the migration's
    explain: tuple[ExplainQuerySpec, ...] = ()
    reports: tuple[ReportSpec, ...] = ()
    flag: FlagSpec | None = None
    folder: Traversable | None = field(default=None, compare=False, repr=False)

    @property
    def foreign_keys(self) -> tuple[ForeignKeySpec, ...]:
        return tuple(c.foreign_key for c in self.columns if c.foreign_key is not None)

    @property
    def referenced_tables(self) -> tuple[str, ...]:
        """The tables the foreign keys reference, each once, in spec order."""
        return tuple(dict.fromkeys(fk.referenced_table for fk in self.foreign_keys))

    @property
    def table_id(self) -> ObjectId:
        return ObjectId(ObjectKind.TABLE, self.table)

    def column(self, name: str) -> ColumnSpec:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    def column_for_key(self, legacy_key: str) -> ColumnSpec:
        for column in self.columns:
            if column.legacy_key == legacy_key:
                return column
        raise KeyError(legacy_key)

    def index(self, name: str) -> IndexSpec:
        for index in self.indexes:
            if index.name == name:
                return index
        raise KeyError(name)

    @property
    def queries_folder(self) -> Traversable | None:
        """Where the spec's query files live: ``queries/`` of the spec folder when present, else the folder."""
        if self.folder is None:
            return None
        nested = self.folder.joinpath(QUERIES_FOLDER)
        return nested if nested.is_dir() else self.folder


# ---------------------------------------------------------------- reading TOML with field paths

T = TypeVar("T")


class _Fields:
    """One TOML table being read: every key must be consumed, every value of the expected type."""

    def __init__(self, raw: Any, path: str) -> None:
        if not isinstance(raw, dict):
            raise SpecError(f"{path}: must be a table, got {_describe(raw)}")
        self.raw: dict[str, Any] = dict(raw)
        self.path = path

    def error(self, key: str, message: str) -> SpecError:
        return SpecError(f"{self.where(key)}: {message}")

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def take(self, key: str, kind: type[T] | tuple[type, ...], what: str, *, required: bool = False) -> Any:
        if key not in self.raw:
            if required:
                raise SpecError(f"{self.where(key)}: missing (required)")
            return None
        value = self.raw.pop(key)
        if isinstance(value, bool) and kind is not bool and not (isinstance(kind, tuple) and bool in kind):
            raise self.error(key, f"must be {what}, got {_describe(value)}")
        if not isinstance(value, kind):
            raise self.error(key, f"must be {what}, got {_describe(value)}")
        return value

    def text(self, key: str, *, required: bool = False) -> str | None:
        value = self.take(key, str, "a string", required=required)
        if value is not None and not value.strip():
            raise self.error(key, "must not be empty")
        return value  # type: ignore[no-any-return]

    def name(self, key: str, *, required: bool = False) -> str | None:
        value = self.text(key, required=required)
        if value is not None:
            _check_identifier(value, self.where(key))
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.take(key, bool, "true or false")
        return default if value is None else bool(value)

    def strings(self, key: str, *, required: bool = False) -> tuple[str, ...] | None:
        value = self.take(key, list, "a list of strings", required=required)
        if value is None:
            return None
        if not all(isinstance(item, str) and item.strip() for item in value):
            raise self.error(key, "must be a list of non-empty strings")
        if len(set(value)) != len(value):
            raise self.error(key, "lists a value twice")
        return tuple(value)

    def tables(self, key: str) -> list[_Fields]:
        value = self.take(key, list, "an array of tables ([[" + key + "]])")
        return [_Fields(item, f"{self.where(key)}[{n}]") for n, item in enumerate(value or [])]

    def finish(self, hints: dict[str, str] | None = None) -> None:
        for key in self.raw:
            hint = (hints or {}).get(key)
            raise SpecError(f"{self.where(key)}: unknown key" + (f" ({hint})" if hint else ""))


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float, Decimal)):
        return f"{type(value).__name__} {value!r}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _check_identifier(name: str, where: str) -> None:
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise SpecError(f"{where}: {name!r} is longer than {MAX_IDENTIFIER_BYTES} bytes, which PostgreSQL would "
                        "truncate; choose a shorter name")
    if "\x00" in name:
        raise SpecError(f"{where}: {name!r} holds a NUL character")


def _derived_name(name: str, where: str) -> str:
    """A name the spec derives (an FK or CHECK name): must fit an identifier, else the field must be set."""
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise SpecError(f"{where}: the derived name {name!r} is longer than {MAX_IDENTIFIER_BYTES} bytes; "
                        "set it explicitly")
    return name


# ---------------------------------------------------------------- parsing


_REFERENCES = re.compile(r"\s*([^\s()]+)\s*\(\s*([^\s()]+)\s*\)\s*")
_MIGRATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_REASON = re.compile(r"[a-z][a-z0-9_]*")
_REMOVED = {
    "steps": "steps are generated from the columns and indexes",
    "converge": "NOT NULL enforcement is generated from the columns",
    "foreign_key": "declare it on its column: references = \"table(column)\", on_delete, foreign_key",
}


def _bound(fields: _Fields, key: str, column_type: SqlType) -> int | Decimal | None:
    if key not in fields.raw:
        return None
    bounds = _type_bounds(column_type)
    if bounds is None:
        raise fields.error(key, f"only integer and numeric columns take {key}, not {column_type}")
    if column_type.kind in _INTEGER_KINDS:
        value = fields.take(key, int, "an integer")
        low, high = bounds
        if not low <= value <= high:
            raise fields.error(key, f"{value} is outside the range of {column_type} ({low}..{high})")
        return int(value)
    raw = fields.take(key, (int, float, str), "a number or a decimal string")
    return _decimal(fields, key, raw, column_type)


def _decimal(fields: _Fields, key: str, raw: Any, column_type: SqlType) -> Decimal:
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise fields.error(key, f"{raw!r} is not a decimal number") from None
    if not value.is_finite():
        raise fields.error(key, f"{raw!r} is not a finite number")
    assert column_type.precision is not None and column_type.scale is not None
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > column_type.scale:
        raise fields.error(key, f"{raw} has more than {column_type.scale} fraction digits ({column_type})")
    if abs(value) >= Decimal(10) ** (column_type.precision - column_type.scale):
        raise fields.error(key, f"{raw} does not fit {column_type}")
    return value


def _default(fields: _Fields, column_type: SqlType) -> Value | None:
    key = "default"
    if key not in fields.raw:
        return None
    kind = column_type.kind
    if kind in (Kind.UUID, Kind.TIMESTAMPTZ):
        raise fields.error(key, f"a {column_type} column takes no default (defaults are constants of "
                           "integer, numeric, boolean, text and date columns)")
    if kind in _INTEGER_KINDS:
        return _bound(fields, key, column_type)
    if kind is Kind.NUMERIC:
        return _decimal(fields, key, fields.take(key, (int, float, str), "a number or a decimal string"), column_type)
    if kind is Kind.BOOLEAN:
        return bool(fields.take(key, bool, "true or false"))
    if kind is Kind.TEXT:
        return str(fields.take(key, str, "a string"))
    raw = fields.take(key, (str, dt.date), "a date (YYYY-MM-DD)")
    if isinstance(raw, dt.datetime):
        raise fields.error(key, "must be a date, not a date and time")
    if isinstance(raw, dt.date):
        return raw
    try:
        if not _DATE.fullmatch(raw):
            raise ValueError
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise fields.error(key, f"{raw!r} is not a date YYYY-MM-DD") from None


def _check_value(fields: _Fields, column: ColumnSpec, value: Value, what: str) -> None:
    """A default (or bound) must itself be a value the column accepts."""
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        if column.min is not None and value < column.min:
            raise fields.error(what, f"{value} is below min {column.min}")
        if column.max is not None and value > column.max:
            raise fields.error(what, f"{value} is above max {column.max}")
    if isinstance(value, str) and column.type.kind is Kind.TEXT:
        if column.max_length is not None and len(value) > column.max_length:
            raise fields.error(what, f"{value!r} is longer than max_length {column.max_length}")
        if column.allowed is not None and value not in column.allowed:
            raise fields.error(what, f"{value!r} is not among allowed")


def _column(fields: _Fields, table: str) -> ColumnSpec:
    name = fields.name("name", required=True)
    assert name is not None
    fields.path = f"{fields.path} ({name})"
    type_text = fields.text("type", required=True)
    assert type_text is not None
    try:
        column_type = parse_type(type_text)
    except ValueError as exc:
        raise fields.error("type", str(exc)) from None
    legacy_key = fields.text("legacy_key", required=True)
    nullable_given = "nullable" in fields.raw
    nullable = fields.boolean("nullable", True)
    comment = fields.text("comment")
    minimum = _bound(fields, "min", column_type)
    maximum = _bound(fields, "max", column_type)
    if minimum is not None and maximum is not None and minimum > maximum:
        raise fields.error("min", f"min {minimum} is greater than max {maximum}")
    max_length, allowed = None, None
    for key in ("max_length", "allowed"):
        if key in fields.raw and column_type.kind is not Kind.TEXT:
            raise fields.error(key, f"only text columns take {key}, not {column_type}")
    if "max_length" in fields.raw:
        max_length = fields.take("max_length", int, "a positive integer")
        if max_length < 1:
            raise fields.error("max_length", "must be a positive integer")
    if "allowed" in fields.raw:
        allowed = fields.strings("allowed")
        if not allowed:
            raise fields.error("allowed", "must list at least one value")
        too_long = [v for v in allowed if max_length is not None and len(v) > max_length]
        if too_long:
            raise fields.error("allowed", f"{too_long[0]!r} is longer than max_length {max_length}")
    default = _default(fields, column_type)
    foreign_key = _foreign_key(fields, table, name)
    not_null = fields.text("not_null")
    if not_null is not None and not_null != "after-backfill":
        raise fields.error("not_null", f"must be \"after-backfill\", got {not_null!r}")
    after_backfill = not_null is not None
    if after_backfill and nullable_given and nullable:
        raise fields.error("not_null", "contradicts nullable = true")
    label = fields.text("label") or name.replace("_", "-")
    check_name = fields.name("not_null_check")
    fields.finish()
    column = ColumnSpec(
        name=name, type=column_type, legacy_key=legacy_key or "", nullable=nullable and not after_backfill,
        comment=comment, default=default, min=minimum, max=maximum, max_length=max_length, allowed=allowed,
        foreign_key=foreign_key, not_null_after_backfill=after_backfill, label=label,
    )
    return _not_null_rules(fields, column, check_name=check_name, table=table)


def _not_null_rules(fields: _Fields, column: ColumnSpec, *, check_name: str | None, table: str) -> ColumnSpec:
    if column.default is not None:
        _check_value(fields, column, column.default, "default")
    if column.not_null_after_backfill:
        if column.default is not None:
            raise fields.error("not_null", "a column with a default is added NOT NULL at once: set nullable = false "
                               "instead of not_null = \"after-backfill\"")
    elif not column.nullable and column.default is None:
        raise fields.error("nullable", "a NOT NULL column needs a default (added NOT NULL at once, without a scan), "
                           "or not_null = \"after-backfill\" (added nullable, enforced by `favmigrate finalize`)")
    if column.nullable:
        if check_name is not None:
            raise fields.error("not_null_check", "only a NOT NULL column has a NOT NULL check")
        return column
    name = check_name or _derived_name(f"{table}_{column.name}_not_null_check", f"{fields.path}.not_null_check")
    return replace(column, not_null_check=name)


def _foreign_key(fields: _Fields, table: str, column: str) -> ForeignKeySpec | None:
    references = fields.text("references")
    on_delete = fields.text("on_delete")
    name = fields.name("foreign_key")
    unknown = fields.text("unknown_reference")
    if unknown is not None and not _REASON.fullmatch(unknown):
        raise fields.error("unknown_reference", f"{unknown!r} must be a snake_case reason, e.g. unknown_customer")
    if references is None:
        for key, given in (("on_delete", on_delete), ("foreign_key", name), ("unknown_reference", unknown)):
            if given is not None:
                raise SpecError(f"{fields.where(key)}: only a column with `references` takes {key}")
        return None
    match = _REFERENCES.fullmatch(references)
    if not match:
        raise fields.error("references", f"must be \"table(column)\", got {references!r}")
    referenced_table, referenced_column = match.groups()
    _check_identifier(referenced_table, fields.where("references"))
    _check_identifier(referenced_column, fields.where("references"))
    action = OnDelete.NO_ACTION
    if on_delete is not None:
        try:
            action = OnDelete(" ".join(on_delete.upper().split()))
        except ValueError:
            choices = ", ".join(a.value for a in OnDelete)
            raise fields.error("on_delete", f"must be one of {choices}, got {on_delete!r}") from None
    constraint = name or _derived_name(f"{table}_{column}_fkey", fields.where("foreign_key"))
    return ForeignKeySpec(constraint, column, referenced_table, referenced_column, action,
                          unknown or "unknown_reference")


def _index(fields: _Fields, known: set[str]) -> IndexSpec:
    name = fields.name("name", required=True)
    assert name is not None
    fields.path = f"{fields.path} ({name})"
    columns = fields.strings("columns", required=True) or ()
    if not columns:
        raise fields.error("columns", "must list at least one column")
    for column in columns:
        if column not in known:
            raise fields.error("columns", f"unknown column {column!r}: not a column of the migration, nor listed "
                               "in migration.existing_columns")
    predicate = fields.text("predicate")
    if predicate is not None and (";" in predicate or len(sqlparse.split(predicate)) != 1):
        raise fields.error("predicate", "must be one SQL boolean expression")
    unique = fields.boolean("unique", False)
    fields.finish()
    return IndexSpec(name, columns, predicate, unique)


def _explain(fields: _Fields, indexes: set[str], folder: Traversable | None) -> ExplainQuerySpec:
    file = fields.text("file", required=True)
    assert file is not None
    expects = _one_or_more(fields, "expects")
    for index in expects:
        if index not in indexes:
            raise fields.error("expects", f"unknown index {index!r}: not one of the migration's indexes")
    fields.finish()
    _require_file(fields, file, folder)
    return ExplainQuerySpec(file, expects)


def _report(fields: _Fields, folder: Traversable | None) -> ReportSpec:
    name = fields.text("name", required=True)
    file = fields.text("file", required=True)
    params = fields.strings("params") or ()
    fields.finish()
    assert name is not None and file is not None
    _require_file(fields, file, folder)
    return ReportSpec(name, file, params)


def _flag(fields: _Fields) -> FlagSpec:
    table = fields.name("table", required=True)
    key_column = fields.name("key_column", required=True)
    enabled_column = fields.name("enabled_column", required=True)
    key = fields.text("key", required=True)
    updated_at = fields.name("updated_at_column") or "updated_at"
    rollout = fields.strings("rollout_columns") or ()
    for name in rollout:
        _check_identifier(name, fields.where("rollout_columns"))
    fields.finish()
    assert table is not None and key_column is not None and enabled_column is not None and key is not None
    if key_column == enabled_column:
        raise fields.error("enabled_column", "must not be the key column")
    return FlagSpec(table, key_column, enabled_column, key, updated_at, rollout)


def _one_or_more(fields: _Fields, key: str) -> tuple[str, ...]:
    value = fields.raw.get(key)
    if isinstance(value, str):
        fields.raw.pop(key)
        return (value,)
    return fields.strings(key) or ()


def _require_file(fields: _Fields, file: str, folder: Traversable | None) -> None:
    if folder is None:
        return
    if not spec_file(folder, file).is_file():
        raise fields.error("file", f"{file!r} does not exist in the spec folder")


def spec_file(folder: Traversable, file: str) -> Traversable:
    """A file of the spec folder, by its path relative to it (``queries/report.sql``)."""
    found = folder
    for part in file.split("/"):
        found = found.joinpath(part)
    return found


def _unique(names: Iterator[tuple[str, str]]) -> None:
    seen: dict[str, str] = {}
    for where, name in names:
        if name in seen:
            raise SpecError(f"{where}: the name {name!r} is already used by {seen[name]}")
        seen[name] = where


def parse_spec(text: str, *, folder: Traversable | None = None, source: str = SPEC_FILE) -> MigrationSpec:
    """Build and validate a spec from TOML text. Raises SpecError naming the first wrong field."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{source} is not valid TOML: {exc}") from None
    top = _Fields(raw, "")
    migration = _Fields(top.take("migration", dict, "a table ([migration])", required=True), "migration")
    migration_id = migration.text("id", required=True)
    assert migration_id is not None
    if not _MIGRATION_ID.fullmatch(migration_id):
        raise migration.error("id", f"{migration_id!r} must be letters, digits, '_', '.' or '-'")
    description = migration.text("description", required=True)
    table = migration.name("table", required=True)
    schema = migration.name("schema") or DEFAULT_SCHEMA
    primary_key = migration.name("primary_key", required=True)
    metadata_column = migration.name("metadata_column", required=True)
    existing = migration.strings("existing_columns") or ()
    for name in existing:
        _check_identifier(name, "migration.existing_columns")
    migration.finish({"referenced_table": "declare references on the column",
                      "referenced_column": "declare references on the column",
                      "status_column": "list it in existing_columns"})
    assert table is not None and primary_key is not None and metadata_column is not None
    column_tables = top.tables("columns")
    if not column_tables:
        raise SpecError("columns: a migration needs at least one [[columns]] table")
    if len(column_tables) > MAX_COLUMNS:
        raise SpecError(f"columns: {len(column_tables)} [[columns]] tables; a migration takes at most {MAX_COLUMNS} "
                        "(backfill's statements would exceed PostgreSQL's 1664 result columns): split it in two")
    columns = tuple(_column(fields, table) for fields in column_tables)
    own = {primary_key, metadata_column, *existing}
    for number, column in enumerate(columns):
        if column.name in own:
            raise SpecError(f"columns[{number}] ({column.name}).name: {column.name!r} is already a column of "
                            f"{table} (primary_key, metadata_column or existing_columns)")
    _unique((f"columns[{n}].name", c.name) for n, c in enumerate(columns))
    _unique((f"columns[{n}] ({c.name}).legacy_key", c.legacy_key) for n, c in enumerate(columns))
    known = {c.name for c in columns} | set(existing)
    indexes = tuple(_index(fields, known) for fields in top.tables("indexes"))
    names = [(f"columns[{n}] ({c.name}).foreign_key", c.foreign_key.name) for n, c in enumerate(columns)
             if c.foreign_key]
    names += [(f"columns[{n}] ({c.name}).not_null_check", c.not_null_check) for n, c in enumerate(columns)
              if c.not_null_check]
    names += [(f"indexes[{n}].name", i.name) for n, i in enumerate(indexes)]
    _unique(iter(names))
    _unique((f"columns[{n}] ({c.name}).label", c.label) for n, c in enumerate(columns) if not c.nullable)
    index_names = {i.name for i in indexes}
    explain = tuple(_explain(fields, index_names, folder) for fields in top.tables("explain"))
    reports = tuple(_report(fields, folder) for fields in top.tables("reports"))
    flag_table = top.take("flag", dict, "a table ([flag])")
    flag = None if flag_table is None else _flag(_Fields(flag_table, "flag"))
    top.finish(_REMOVED)
    return MigrationSpec(
        id=migration_id, description=description or "", table=table, primary_key=primary_key,
        metadata_column=metadata_column, columns=columns, indexes=indexes, schema=schema,
        existing_columns=existing, explain=explain, reports=reports, flag=flag, folder=folder,
    )


def read_spec(path: Path) -> MigrationSpec:
    """Load a spec from a migration.toml, or a folder holding one. Raises SpecError (or UsageError when unreadable)."""
    file = path / SPEC_FILE if path.is_dir() else path
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read the migration spec {file}: {exc.strerror or exc}",
                         hint="--spec takes a migration.toml or a folder holding one") from None
    try:
        return parse_spec(text, folder=file.parent, source=str(file))
    except SpecError as exc:
        raise SpecError(f"{file}: {exc.message}", hint=exc.hint) from None


@cache
def load_spec() -> MigrationSpec:
    """The built-in Phase 4 spec (verify/migration.toml)."""
    folder = verify_dir()
    return parse_spec(folder.joinpath(SPEC_FILE).read_text(encoding="utf-8"), folder=folder)


def resolve_spec(path: Path | None) -> MigrationSpec:
    """The spec at ``path`` (a file or folder), else the built-in one."""
    return load_spec() if path is None else read_spec(path)


# ---------------------------------------------------------------- where it runs


@dataclass(frozen=True)
class Target:
    """Where the migration runs: the spec plus the schema chosen on the command line."""

    spec: MigrationSpec
    schema: str = DEFAULT_SCHEMA

    @classmethod
    def of(cls, spec: MigrationSpec, schema: str | None = None) -> Target:
        """The spec in ``schema``, else in the spec's own schema."""
        return cls(spec, schema or spec.schema)

    @property
    def lock_name(self) -> str:
        """The advisory-lock name shared by every command that changes this migration's table."""
        return f"favmigrate:{self.spec.id}:{self.schema}"

    @property
    def table(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.spec.table)

    def qualified(self, table: str) -> sql.Identifier:
        """Another table of the same schema (a referenced table)."""
        return sql.Identifier(self.schema, table)

    @property
    def referenced_table(self) -> sql.Identifier:
        """The table the first foreign key references (``{referenced_table}`` in query files)."""
        tables = self.spec.referenced_tables
        if not tables:
            raise SpecError(f"migration {self.spec.id} has no column with references")
        return self.qualified(tables[0])

    @property
    def table_name(self) -> str:
        """The schema-qualified table name as text, for messages and ::regclass parameters."""
        return self.qualified_name(self.spec.table)

    def qualified_name(self, table: str) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(table)}"

    @property
    def referenced_table_name(self) -> str:
        return self.qualified_name(self.spec.referenced_tables[0])

    def _arguments(self) -> dict[str, sql.Composable]:
        arguments: dict[str, sql.Composable] = {
            "schema": sql.Identifier(self.schema),
            "table": self.table,
            "after_id": sql.Placeholder("after_id"),
            "batch_size": sql.Placeholder("batch_size"),
        }
        if self.spec.referenced_tables:
            arguments["referenced_table"] = self.referenced_table
        return arguments

    def compose(self, template: str, extra: Mapping[str, sql.Composable] | None = None) -> list[sql.Composed]:
        """Split a SQL file into statements and fill its {placeholders} with identifiers and literals
        (and the caller's ``extra`` fragments)."""
        arguments = {**self._arguments(), **(extra or {})}
        statements = []
        for raw in sqlparse.split(template):
            text = sqlparse.format(raw, strip_comments=True).strip().rstrip(";").strip()
            if text:
                statements.append(sql.SQL(text).format(**arguments))
        return statements


def new_value(value: Value) -> sql.Composable:
    """A spec constant (a default) as an SQL literal."""
    if isinstance(value, dt.date):
        return sql.Literal(value.isoformat())
    return sql.Literal(value)


def quote_ident(name: str) -> str:
    """Quote an identifier for display the way PostgreSQL would (no connection needed)."""
    return sql.Identifier(name).as_string(None)


def as_text(statement: sql.Composable) -> str:
    """Render a composed statement for display (dry runs, plan)."""
    return statement.as_string(None)

