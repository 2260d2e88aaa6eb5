"""THE description of the migration's end state, loaded from verify/migration.toml.

plan, apply, verify and rollback all read this one object, so they cannot disagree.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any

import sqlparse
from psycopg import sql

from favmigrate.errors import UsageError
from favmigrate.resources import read_sql, read_verify

DEFAULT_SCHEMA = "public"


class LockKind(StrEnum):
    BRIEF = "brief"  # strong lock for an instant: short lock_timeout, retried
    ONLINE = "online"  # long, weak lock (VALIDATE CONSTRAINT): statement_timeout only
    CONCURRENT = "concurrent"  # CREATE/DROP INDEX CONCURRENTLY: no transaction block
    BATCHED = "batched"  # repeated short transactions (NULL fill)


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: str
    nullable: bool
    comment: str
    legacy_key: str
    default: str | None = None
    min: int | None = None
    max: int | None = None


@dataclass(frozen=True)
class ForeignKeySpec:
    name: str
    columns: tuple[str, ...]
    referenced_table: str
    referenced_columns: tuple[str, ...]
    on_delete: str


@dataclass(frozen=True)
class IndexSpec:
    name: str
    columns: tuple[str, ...]
    predicate: str


@dataclass(frozen=True)
class StepSpec:
    """One named step of the migration: its up SQL file, its paired down file, how it locks."""

    name: str
    up: str
    lock: LockKind
    satisfies: tuple[str, ...]
    down: str | None = None
    index: str | None = None

    @property
    def transactional(self) -> bool:
        return self.lock is not LockKind.CONCURRENT

    def up_text(self) -> str:
        return read_sql(self.up)

    def down_text(self) -> str | None:
        return read_sql(self.down) if self.down else None

    def checksum(self) -> str:
        """sha256 of the shipped up SQL, recorded in the history to detect edits after apply."""
        return hashlib.sha256(self.up_text().encode()).hexdigest()


@dataclass(frozen=True)
class MigrationSpec:
    id: str
    description: str
    table: str
    referenced_table: str
    referenced_column: str
    primary_key: str
    metadata_column: str
    status_column: str
    columns: tuple[ColumnSpec, ...]
    foreign_key: ForeignKeySpec
    indexes: tuple[IndexSpec, ...]
    steps: tuple[StepSpec, ...]
    converge: tuple[StepSpec, ...]

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

    def step(self, name: str) -> StepSpec:
        for step in (*self.steps, *self.converge):
            if step.name == name:
                return step
        raise KeyError(name)

    @property
    def down_steps(self) -> tuple[StepSpec, ...]:
        """Steps with a paired down file, in the order rollback runs them (reverse of apply)."""
        return tuple(step for step in reversed(self.steps) if step.down)


def _step(raw: dict[str, Any]) -> StepSpec:
    return StepSpec(
        name=raw["name"],
        up=raw["up"],
        down=raw.get("down"),
        lock=LockKind(raw["lock"]),
        satisfies=tuple(raw.get("satisfies", ())),
        index=raw.get("index"),
    )


def parse_spec(text: str) -> MigrationSpec:
    """Build the spec from TOML text. Raises UsageError when a required field is missing."""
    try:
        raw = tomllib.loads(text)
        migration = raw["migration"]
        fk = raw["foreign_key"]
        return MigrationSpec(
            id=migration["id"],
            description=migration["description"],
            table=migration["table"],
            referenced_table=migration["referenced_table"],
            referenced_column=migration["referenced_column"],
            primary_key=migration["primary_key"],
            metadata_column=migration["metadata_column"],
            status_column=migration["status_column"],
            columns=tuple(
                ColumnSpec(
                    name=c["name"], type=c["type"], nullable=c["nullable"], comment=c["comment"],
                    legacy_key=c["legacy_key"], default=c.get("default"), min=c.get("min"), max=c.get("max"),
                )
                for c in raw["columns"]
            ),
            foreign_key=ForeignKeySpec(
                name=fk["name"], columns=tuple(fk["columns"]), referenced_table=fk["referenced_table"],
                referenced_columns=tuple(fk["referenced_columns"]), on_delete=fk["on_delete"],
            ),
            indexes=tuple(
                IndexSpec(name=i["name"], columns=tuple(i["columns"]), predicate=i["predicate"])
                for i in raw["indexes"]
            ),
            steps=tuple(_step(s) for s in raw["steps"]),
            converge=tuple(_step(s) for s in raw.get("converge", ())),
        )
    except (KeyError, ValueError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"the migration spec is malformed: {exc}") from exc


@cache
def load_spec() -> MigrationSpec:
    """The shipped spec (verify/migration.toml)."""
    return parse_spec(read_verify("migration.toml"))


@dataclass(frozen=True)
class Target:
    """Where the migration runs: the spec plus the schema chosen on the command line."""

    spec: MigrationSpec
    schema: str = DEFAULT_SCHEMA

    @property
    def lock_name(self) -> str:
        """The advisory-lock name shared by every command that changes this migration's table."""
        return f"favmigrate:{self.spec.id}:{self.schema}"

    @property
    def table(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.spec.table)

    @property
    def referenced_table(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.spec.referenced_table)

    @property
    def table_name(self) -> str:
        """The schema-qualified table name as text, for messages and ::regclass parameters."""
        return f"{quote_ident(self.schema)}.{quote_ident(self.spec.table)}"

    @property
    def referenced_table_name(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.spec.referenced_table)}"

    def _arguments(self) -> dict[str, sql.Composable]:
        arguments: dict[str, sql.Composable] = {
            "schema": sql.Identifier(self.schema),
            "table": self.table,
            "referenced_table": self.referenced_table,
            "after_id": sql.Placeholder("after_id"),
            "batch_size": sql.Placeholder("batch_size"),
        }
        for column in self.spec.columns:
            arguments[f"comment_{column.name}"] = sql.Literal(column.comment)
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

    def up_statements(self, step: StepSpec) -> list[sql.Composed]:
        return self.compose(step.up_text())

    def down_statements(self, step: StepSpec) -> list[sql.Composed]:
        text = step.down_text()
        return self.compose(text) if text else []


def quote_ident(name: str) -> str:
    """Quote an identifier for display the way PostgreSQL would (no connection needed)."""
    return sql.Identifier(name).as_string(None)


def as_text(statement: sql.Composable) -> str:
    """Render a composed statement for display (dry runs, plan)."""
    return statement.as_string(None)
