"""What the live database knows about the tables a migration touches (optional, from --dsn).

Only the catalogs are read (pg_class, pg_attribute, pg_cast, pg_proc), inside a READ ONLY transaction
that is rolled back: no table is scanned and nothing of the migration is executed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg import sql

from favmigrate.db import rows
from favmigrate.lint.statements import TableRef
from favmigrate.results import size_text
from favmigrate.spec import quote_ident

# A rough rate for work under a lock that reads the whole table (index build, validation, rewrite):
# the estimate is the slower of reading its heap and processing its rows.
HEAP_BYTES_PER_SECOND = 100 * 1024 * 1024
ROWS_PER_SECOND = 500_000
SMALL_TABLE_ROWS = 10_000  # below this (and under a second) a blocking build is a note
LARGE_TABLE_ROWS = 1_000_000  # from this (or 10 s of estimated lock) it is an error
LARGE_LOCK_SECONDS = 10.0


@dataclass(frozen=True)
class TableSize:
    """pg_class.reltuples (-1: never analyzed) and pg_relation_size of a table."""

    table: str
    rows: float
    bytes: int

    @property
    def lock_seconds(self) -> float:
        """Estimated seconds a statement that reads the whole table holds its lock."""
        return max(self.bytes / HEAP_BYTES_PER_SECOND, max(self.rows, 0) / ROWS_PER_SECOND)

    @property
    def is_small(self) -> bool:
        return 0 <= self.rows < SMALL_TABLE_ROWS and self.lock_seconds < 1

    @property
    def is_large(self) -> bool:
        return self.rows >= LARGE_TABLE_ROWS or self.lock_seconds >= LARGE_LOCK_SECONDS

    def describe(self) -> str:
        counted = "rows unknown (never analyzed)" if self.rows < 0 else f"~{int(self.rows):,} rows"
        return f"{self.table}: {counted}, {size_text(self.bytes)}; estimated lock time ~{self.lock_seconds:.1f}s"


class Facts(Protocol):
    """Answers about the database; None means "cannot tell" (no --dsn, or the object is not there)."""

    def table_size(self, table: TableRef) -> TableSize | None: ...

    def rewrite_free(self, table: TableRef, column: str, new_type: str) -> bool | None: ...

    def volatile(self, function: str) -> bool | None: ...


class NoFacts:
    """Linting without a database: nothing is known."""

    def table_size(self, table: TableRef) -> TableSize | None:
        return None

    def rewrite_free(self, table: TableRef, column: str, new_type: str) -> bool | None:
        return None

    def volatile(self, function: str) -> bool | None:
        return None


_SIZE = sql.SQL(
    "SELECT c.reltuples::float8 AS rows, pg_relation_size(c.oid) AS bytes FROM pg_class c WHERE c.oid = to_regclass(%s)"
)
_COLUMN = sql.SQL(
    """
    SELECT a.atttypid::int AS type_oid, a.atttypmod AS typmod, t.typname
    FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
    WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped
    """
)
_NEW_TYPE = sql.SQL(
    "SELECT to_regtype(%s)::oid::int AS type_oid, (SELECT typname FROM pg_type WHERE oid = to_regtype(%s)) AS typname"
)
_BINARY_CAST = sql.SQL(
    "SELECT EXISTS (SELECT 1 FROM pg_cast WHERE castsource = %s AND casttarget = %s AND castmethod = 'b') AS binary"
)
_VOLATILE = sql.SQL("SELECT bool_or(provolatile = 'v') AS volatile FROM pg_proc WHERE proname = %s")
_TYPMOD = re.compile(r"\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)\s*$")


def _regclass_text(table: TableRef) -> str:
    return ".".join(quote_ident(part) for part in table.parts)


class CatalogFacts:
    """Facts read from the catalogs over ``conn``, which must be inside a READ ONLY transaction."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._sizes: dict[TableRef, TableSize | None] = {}

    def table_size(self, table: TableRef) -> TableSize | None:
        if table.is_placeholder:
            return None
        if table not in self._sizes:
            found = rows(self.conn, _SIZE, (_regclass_text(table),))
            self._sizes[table] = TableSize(str(table), found[0]["rows"], found[0]["bytes"]) if found else None
        return self._sizes[table]

    def rewrite_free(self, table: TableRef, column: str, new_type: str) -> bool | None:
        """True when changing ``column`` to ``new_type`` needs neither a rewrite nor a scan: a binary-coercible
        cast without a length limit (varchar(n) -> text), or the same type with a wider or no limit."""
        if table.is_placeholder:
            return None
        current = rows(self.conn, _COLUMN, (_regclass_text(table), column))
        target = rows(self.conn, _NEW_TYPE, (new_type, new_type))
        if not current or not target or target[0]["type_oid"] is None:
            return None
        old, new = current[0], target[0]
        old_typmod: int = old["typmod"]
        limit = _TYPMOD.search(new_type)
        if old["type_oid"] == new["type_oid"]:
            if limit is None:
                return True
            if new["typname"] in ("varchar", "bpchar", "varbit", "bit") and old_typmod >= 0:
                return new["typname"] == "varchar" and int(limit.group(1)) + 4 >= old_typmod
            if new["typname"] == "numeric" and old_typmod >= 0:
                old_precision, old_scale = (old_typmod - 4) >> 16, (old_typmod - 4) & 0xFFFF
                scale = int(limit.group(2) or 0)
                return scale == old_scale and int(limit.group(1)) >= old_precision
            return False
        if limit is not None:
            return False  # a length limit on the new type is checked row by row
        found = rows(self.conn, _BINARY_CAST, (old["type_oid"], new["type_oid"]))
        return bool(found and found[0]["binary"])

    def volatile(self, function: str) -> bool | None:
        found = rows(self.conn, _VOLATILE, (function.lower(),))
        volatile = found[0]["volatile"] if found else None
        return None if volatile is None else bool(volatile)
