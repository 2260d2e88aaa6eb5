"""The migration's steps, generated from the spec: the DDL of each, its down step, its lock, the checks it satisfies.

Nothing here touches a database: a step is data (statements composed with psycopg.sql). apply runs the
steps whose checks fail, finalize the NOT NULL enforcement of ``not_null = "after-backfill"`` columns,
rollback the down steps in reverse. ``python -m favmigrate.ops`` rewrites sql/ (the built-in migration
as reviewable SQL); a test keeps those files equal to what is generated here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from psycopg import sql

from favmigrate.spec import (
    Aspect,
    CheckId,
    ColumnSpec,
    IndexSpec,
    LockKind,
    MigrationSpec,
    ObjectId,
    Target,
    as_text,
    new_value,
)


class NotNullStage(StrEnum):
    """The steps that make a column NOT NULL online, in order."""

    SET_DEFAULT = "set-default"
    FILL_NULLS = "fill-nulls"
    ADD_CHECK = "check-not-valid"
    VALIDATE_CHECK = "check-validate"
    SET_NOT_NULL = "set-not-null"


class Phase(StrEnum):
    APPLY = "apply"  # creates the objects (apply)
    CONVERGE = "converge"  # brings a NOT NULL column left nullable by hand-run SQL to the spec (apply)
    FINALIZE = "finalize"  # enforces NOT NULL on a column once backfilled (finalize, apply --finalize)


@dataclass(frozen=True)
class Op:
    """The statements for one or more objects within a step, and the checks they satisfy.

    A step runs only its ops whose checks fail, so one foreign key already in place is not added twice.
    """

    up: tuple[sql.Composed, ...]
    satisfies: tuple[CheckId, ...]
    down: tuple[sql.Composed, ...] = ()
    creates: tuple[ObjectId, ...] = ()  # what the down statements drop


@dataclass(frozen=True)
class Step:
    """One named step: its ops, how it locks, and whether it can run inside a transaction."""

    name: str
    lock: LockKind
    ops: tuple[Op, ...] = ()
    phase: Phase = Phase.APPLY
    why: str = ""  # the reviewer's one-line reason for the form of the SQL (a comment in sql/)
    index: IndexSpec | None = None  # the index a CONCURRENT step builds
    column: ColumnSpec | None = None  # the column a NOT NULL step is about
    stage: NotNullStage | None = None  # which NOT NULL step it is
    first_batch: sql.Composed | None = None  # BATCHED: the first batch (no lower key bound)

    @property
    def transactional(self) -> bool:
        return self.lock is not LockKind.CONCURRENT

    @property
    def satisfies(self) -> tuple[CheckId, ...]:
        return tuple(check for op in self.ops for check in op.satisfies)

    @property
    def creates(self) -> tuple[ObjectId, ...]:
        return tuple(obj for op in self.ops for obj in op.creates)

    @property
    def up(self) -> tuple[sql.Composed, ...]:
        return tuple(statement for op in self.ops for statement in op.up)

    @property
    def down(self) -> tuple[sql.Composed, ...]:
        return tuple(statement for op in self.ops for statement in op.down)

    def checksum(self) -> str:
        """sha256 of the step's up SQL, recorded in the history to detect a changed spec after apply."""
        text = ";\n".join(as_text(s) for s in self.up)
        return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------- generation


def _column_definition(column: ColumnSpec) -> sql.Composed:
    parts: list[sql.Composable] = [sql.Identifier(column.name), column.type.sql]
    if not column.nullable_when_added:
        parts.append(sql.SQL("NOT NULL"))
    if column.default is not None:
        parts.append(sql.SQL("DEFAULT {}").format(new_value(column.default)))
    return sql.SQL(" ").join(parts)


def _alter(target: Target, clauses: list[sql.Composable]) -> sql.Composed:
    return sql.SQL("ALTER TABLE {table}\n    {clauses}").format(table=target.table,
                                                             clauses=sql.SQL(",\n    ").join(clauses))


def _add_columns(target: Target) -> Step:
    columns = target.spec.columns
    up = _alter(target, [sql.SQL("ADD COLUMN IF NOT EXISTS {}").format(_column_definition(c)) for c in columns])
    down = _alter(target, [sql.SQL("DROP COLUMN IF EXISTS {}").format(sql.Identifier(c.name)) for c in columns])
    op = Op((up,), tuple(c.id.check(Aspect.EXISTS) for c in columns), (down,), tuple(c.id for c in columns))
    return Step("add-columns", LockKind.BRIEF, (op,),
                why="Adding nullable columns, and NOT NULL columns with a constant default, only touches the "
                "catalog: no table rewrite, the ACCESS EXCLUSIVE lock is held for milliseconds.")


def _foreign_key_steps(target: Target) -> Iterator[Step]:
    keys = target.spec.foreign_keys
    if not keys:
        return
    adds, validates = [], []
    for fk in keys:
        add = _alter(target, [sql.SQL(
            "ADD CONSTRAINT {name}\n    FOREIGN KEY ({column}) REFERENCES {table} ({referenced})\n"
            "    ON DELETE {action}\n    NOT VALID"
        ).format(name=sql.Identifier(fk.name), column=sql.Identifier(fk.column),
                 table=target.qualified(fk.referenced_table), referenced=sql.Identifier(fk.referenced_column),
                 action=sql.SQL(fk.on_delete.value))])
        drop = _alter(target, [sql.SQL("DROP CONSTRAINT IF EXISTS {}").format(sql.Identifier(fk.name))])
        adds.append(Op((add,), (fk.id.check(Aspect.EXISTS),), (drop,), (fk.id,)))
        validate = _alter(target, [sql.SQL("VALIDATE CONSTRAINT {}").format(sql.Identifier(fk.name))])
        validates.append(Op((validate,), (fk.id.check(Aspect.VALIDATED),)))
    yield Step("add-fk-not-valid", LockKind.BRIEF, tuple(adds),
               why="NOT VALID: existing rows are not scanned now, so the SHARE ROW EXCLUSIVE lock is brief.")
    yield Step("validate-fk", LockKind.ONLINE, tuple(validates),
               why="VALIDATE scans the table under SHARE UPDATE EXCLUSIVE: reads and writes continue meanwhile.")


def index_step_name(spec: MigrationSpec, index: IndexSpec) -> str:
    """``index-`` and the index name without the table prefix and ``_idx`` suffix, in kebab case."""
    stem = index.name.removeprefix(f"{spec.table}_").removesuffix("_idx") or index.name
    return "index-" + stem.replace("_", "-")


def create_index(target: Target, index: IndexSpec) -> sql.Composed:
    """CREATE [UNIQUE] INDEX CONCURRENTLY for one index of the spec."""
    statement = sql.SQL("CREATE {unique}INDEX CONCURRENTLY {name}\n    ON {table} ({columns})").format(
        unique=sql.SQL("UNIQUE ") if index.unique else sql.SQL(""), name=sql.Identifier(index.name),
        table=target.table, columns=sql.SQL(", ").join(sql.Identifier(c) for c in index.columns))
    if index.predicate:
        statement = sql.SQL("{}\n    WHERE {}").format(statement, sql.SQL(index.predicate))
    return statement


def drop_index(target: Target, index: IndexSpec) -> sql.Composed:
    return sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(target.schema, index.name))


def _index_step(target: Target, index: IndexSpec) -> Step:
    op = Op((create_index(target, index),), (index.id.check(Aspect.EXISTS), index.id.check(Aspect.VALID)),
            (drop_index(target, index),), (index.id,))
    return Step(index_step_name(target.spec, index), LockKind.CONCURRENT, (op,), index=index,
                why="CONCURRENTLY: built without blocking writes, outside any transaction block.")


def _comments(target: Target) -> Step | None:
    commented = [c for c in target.spec.columns if c.comment is not None]
    if not commented:
        return None
    statements = tuple(
        sql.SQL("COMMENT ON COLUMN {table}.{column} IS {comment}").format(
            table=target.table, column=sql.Identifier(c.name), comment=sql.Literal(c.comment))
        for c in commented)
    return Step("column-comments", LockKind.BRIEF, (Op(statements, tuple(c.id.check(Aspect.COMMENT)
                                                                         for c in commented)),))


def fill_nulls_batch(target: Target, column: ColumnSpec, *, first: bool) -> sql.Composed:
    """One batch setting NULLs of ``column`` to its default, keyset by primary key; returns the keys it set."""
    pk = sql.Identifier(target.spec.primary_key)
    after = sql.SQL("") if first else sql.SQL("{pk} > %(after_id)s AND ").format(pk=pk)
    return sql.SQL(
        "WITH batch AS (\n"
        "    SELECT {pk}\n"
        "    FROM {table}\n"
        "    WHERE {after}{column} IS NULL\n"
        "    ORDER BY {pk}\n"
        "    LIMIT %(batch_size)s\n"
        ")\n"
        "UPDATE {table} AS t\n"
        "SET {column} = {default}\n"
        "FROM batch\n"
        "WHERE t.{pk} = batch.{pk} AND t.{column} IS NULL\n"
        "RETURNING t.{pk}"
    ).format(pk=pk, table=target.table, after=after, column=sql.Identifier(column.name),
             default=new_value(column.default) if column.default is not None else sql.SQL("NULL"))


def _not_null_steps(target: Target, column: ColumnSpec, phase: Phase) -> Iterator[Step]:
    """NOT NULL without a long ACCESS EXCLUSIVE scan: CHECK NOT VALID, VALIDATE, SET NOT NULL, drop the CHECK."""
    assert column.not_null_check is not None
    name, check = sql.Identifier(column.name), sql.Identifier(column.not_null_check)
    nullable = (column.id.check(Aspect.NULLABLE),)

    def step(stage: NotNullStage, lock: LockKind, statements: tuple[sql.Composed, ...],
             satisfies: tuple[CheckId, ...] = nullable, **more: Any) -> Step:
        return Step(f"{column.label}-{stage.value}", lock, (Op(statements, satisfies),), phase, column=column,
                    stage=stage, **more)

    if phase is Phase.CONVERGE and column.default is not None:
        default = new_value(column.default)
        yield step(NotNullStage.SET_DEFAULT, LockKind.BRIEF,
                   (_alter(target, [sql.SQL("ALTER COLUMN {} SET DEFAULT {}").format(name, default)]),),
                   (column.id.check(Aspect.DEFAULT),))
        yield step(NotNullStage.FILL_NULLS, LockKind.BATCHED, (fill_nulls_batch(target, column, first=False),),
                   first_batch=fill_nulls_batch(target, column, first=True),
                   why="One batch of the NULL fill, run repeatedly, one short transaction per batch, keyset by "
                   "primary key, until it returns no row.")
    yield step(NotNullStage.ADD_CHECK, LockKind.BRIEF, (_alter(target, [
        sql.SQL("ADD CONSTRAINT {} CHECK ({} IS NOT NULL) NOT VALID").format(check, name)]),))
    yield step(NotNullStage.VALIDATE_CHECK, LockKind.ONLINE,
               (_alter(target, [sql.SQL("VALIDATE CONSTRAINT {}").format(check)]),),
               why="VALIDATE scans under SHARE UPDATE EXCLUSIVE: reads and writes continue meanwhile.")
    yield step(NotNullStage.SET_NOT_NULL, LockKind.BRIEF,
               (_alter(target, [sql.SQL("ALTER COLUMN {} SET NOT NULL").format(name)]),
                _alter(target, [sql.SQL("DROP CONSTRAINT {}").format(check)])),
               why="The validated CHECK proves there is no NULL, so SET NOT NULL skips its full-table scan (PG 12+).")


def migration_steps(target: Target) -> tuple[Step, ...]:
    """The steps creating the spec's objects, in the order apply runs them. Pure."""
    steps = [_add_columns(target), *_foreign_key_steps(target)]
    steps += [_index_step(target, index) for index in target.spec.indexes]
    comments = _comments(target)
    if comments is not None:
        steps.append(comments)
    return tuple(steps)


def converge_steps(target: Target) -> tuple[Step, ...]:
    """For each NOT NULL column with a default: converge it where hand-run SQL left it nullable. Pure."""
    return tuple(step for column in target.spec.columns if not column.nullable and not column.not_null_after_backfill
                 for step in _not_null_steps(target, column, Phase.CONVERGE))


def finalize_steps(target: Target) -> tuple[Step, ...]:
    """For each ``not_null = "after-backfill"`` column: enforce NOT NULL online. Pure."""
    return tuple(step for column in target.spec.columns if column.not_null_after_backfill
                 for step in _not_null_steps(target, column, Phase.FINALIZE))


def all_steps(target: Target) -> tuple[Step, ...]:
    return migration_steps(target) + converge_steps(target) + finalize_steps(target)


def down_steps(target: Target) -> tuple[Step, ...]:
    """Steps that drop something, in the order rollback runs them (reverse of apply)."""
    return tuple(step for step in reversed(migration_steps(target)) if step.down)


def step_named(target: Target, name: str) -> Step:
    for step in all_steps(target):
        if step.name == name:
            return step
    raise KeyError(name)


def extra_constraints(spec: MigrationSpec) -> tuple[str, ...]:
    """The CHECK constraints the NOT NULL steps add for a moment (dropped with their column on rollback)."""
    return tuple(c.not_null_check for c in spec.columns if c.not_null_check is not None)


# Checksums that versions running the hand-written sql/ files recorded for the built-in migration's steps:
# those files did what the generated steps do, so a history holding them is not "changed since applied".
LEGACY_CHECKSUMS: dict[tuple[str, str], str] = {
    ("phase4_favorites_priority", "add-columns"): "f10017d41d592210fc8d4b501e47704450be14b326540d93beca7de5d5ec4849",
    ("phase4_favorites_priority", "add-fk-not-valid"):
        "e8f23276128d67757e682a118aba9d50fcc1f199cf73ea3b41c0ccb40984f25c",
    ("phase4_favorites_priority", "validate-fk"): "b5af09b2200b43ab7601c5abbcf558e3460f6c327cf2ca945bd408c63f96249e",
    ("phase4_favorites_priority", "index-preferred-mechanic"):
        "47a4ee6b892c79a6d51fd7d50f12b7d876a988900b3c312129f73a1b145fffac",
    ("phase4_favorites_priority", "index-priority-analytics"):
        "148f0865ea84f3d6c72177af859720785d93912f67a7bbf4cda85b96a439aad7",
    ("phase4_favorites_priority", "index-priority-timeout"):
        "4082267b520d5c210e84153561e9bf75ccf871913e4979e141144aa95487bda0",
    ("phase4_favorites_priority", "column-comments"):
        "259a28566c6dde560e76914cbbdae1f1c64859c4c91abacb525ae303a27da2f6",
}


def checksum_matches(spec: MigrationSpec, step: Step, recorded: str) -> bool:
    """Whether a checksum in the history is the one of this step's SQL (now, or as an earlier version shipped it)."""
    return recorded in (step.checksum(), LEGACY_CHECKSUMS.get((spec.id, step.name)))


# ---------------------------------------------------------------- the rendered sql/ folder

SQL_HEADER = ("-- Generated from {source} by `python -m favmigrate.ops`: do not edit; edit the spec and regenerate.\n"
              "-- Step {name}: lock {lock}{transaction}.\n")


def rendered_files(target: Target, source: str = "verify/migration.toml") -> dict[str, str]:
    """The migration as reviewable SQL files, one ``NN_step.up.sql`` (and ``.down.sql``) per step. Pure."""
    files: dict[str, str] = {}
    for number, step in enumerate(all_steps(target), start=1):
        stem = f"{number:02d}_{step.name.replace('-', '_')}"
        header = SQL_HEADER.format(source=source, name=step.name, lock=step.lock.value,
                                   transaction="" if step.transactional else ", outside any transaction block")
        why = f"-- {step.why}\n" if step.why else ""
        statements = list(step.up)
        if step.first_batch is not None:
            why += "-- The first batch has no lower key bound; each next one starts after the last key returned.\n"
            statements = [step.first_batch, *statements]
        files[f"{stem}.up.sql"] = header + why + "".join(f"{as_text(s)};\n" for s in statements)
        if step.down:
            files[f"{stem}.down.sql"] = header + "".join(f"{as_text(s)};\n" for s in step.down)
    return files


def write_rendered(folder: Path, target: Target) -> list[Path]:
    """Replace the generated files of ``folder`` with what the spec renders to. Writes files."""
    files = rendered_files(target)
    for old in folder.glob("[0-9][0-9]_*.sql"):
        if old.name not in files:
            old.unlink()
    written = []
    for name, text in files.items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    from favmigrate.spec import load_spec

    for path in write_rendered(Path(__file__).resolve().parent.parent / "sql", Target(load_spec())):
        print(path)
