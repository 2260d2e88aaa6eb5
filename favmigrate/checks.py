"""Pure comparison of the spec with a catalog snapshot: (spec, snapshot) -> findings. No database here."""

from __future__ import annotations

import re
from collections.abc import Iterator

from favmigrate.catalog import IndexInfo, Snapshot
from favmigrate.changelog import CHANGE_LOG
from favmigrate.datastats import DataStats
from favmigrate.results import CheckResult, CheckStatus, plural
from favmigrate.spec import (
    Aspect,
    CheckId,
    ColumnSpec,
    ForeignKeySpec,
    IndexSpec,
    MigrationSpec,
    ObjectId,
    ObjectKind,
)

PASS, FAIL, WARN, SKIP = CheckStatus.PASS, CheckStatus.FAIL, CheckStatus.WARN, CheckStatus.SKIP

_IDENT = r"(\"(?:[^\"]|\"\")+\"|[a-z_][a-z0-9_$]*)"  # a quoted identifier may hold "" (a doubled quote)
_CAST = re.compile(rf"::\s*{_IDENT}(\s*\.\s*{_IDENT})?"
                   r"(\s+(varying|with(out)?\s+time\s+zone|precision))*(\[\])?", re.IGNORECASE)


def _strip_outer_parens(text: str) -> str:
    while text.startswith("(") and text.endswith(")"):
        depth = 0
        for position, char in enumerate(text):
            depth += (char == "(") - (char == ")")
            if depth == 0 and position < len(text) - 1:
                return text  # the first "(" closes before the end: not one wrapping pair
        text = text[1:-1].strip()
    return text


def _split_top_level_and(text: str) -> list[str]:
    parts, depth, start, quoted = [], 0, 0, False
    lowered = text.lower()
    position = 0
    while position < len(text):
        char = text[position]
        if char == "'":
            quoted = not quoted
        elif not quoted and char in "()":
            depth += 1 if char == "(" else -1
        elif not quoted and depth == 0 and lowered.startswith(" and ", position):
            parts.append(text[start:position])
            start = position + 5
            position += 4
        position += 1
    parts.append(text[start:])
    return parts


def normalize_predicate(predicate: str | None) -> frozenset[str]:
    """A predicate as a set of conjuncts, without casts, redundant parentheses, case or spacing.

    `(status = 'pending'::session_request_status)` and `status = 'pending'` compare equal, so the check
    holds whether `status` is text or an enum; conjunct order does not matter.
    """
    if not predicate:
        return frozenset()
    text = _CAST.sub("", predicate)
    text = re.sub(r"\s+", " ", text).strip()
    conjuncts = set()
    for part in _split_top_level_and(_strip_outer_parens(text)):
        conjunct = _strip_outer_parens(part.strip())
        conjunct = re.sub(r"\s*([()=<>,])\s*", r"\1", conjunct)
        conjunct = re.sub(r"'[^']*'|[^']+", lambda m: m.group(0) if m.group(0).startswith("'") else m.group(0).lower(),
                          conjunct)
        conjuncts.add(conjunct.replace('"', ""))
    return frozenset(conjuncts)


def _normalize_default(default: str | None) -> str | None:
    if default is None:
        return None
    return _strip_outer_parens(_CAST.sub("", default).strip()).strip("'")


def index_matches(spec: IndexSpec, found: IndexInfo) -> bool:
    """Same columns in the same order, same partial predicate, a btree index, unique as the spec says."""
    return (
        tuple(c.strip('"') for c in found.columns) == spec.columns
        and normalize_predicate(found.predicate) == normalize_predicate(spec.predicate)
        and found.method == "btree"
        and found.unique == spec.unique
    )


def describe_index(columns: tuple[str, ...], predicate: str | None, method: str = "btree", unique: bool = False) -> str:
    kind = f"{'unique ' if unique else ''}{method}"
    where = f" WHERE {predicate}" if predicate else ""
    return f"{kind} ({', '.join(columns)}){where}"


def _result(check: CheckId, status: CheckStatus, expected: str = "", actual: str = "", message: str = "",
            hint: str = "") -> CheckResult:
    return CheckResult(str(check), status, expected, actual, message, hint)


def _missing(obj: ObjectId, aspects: tuple[Aspect, ...]) -> Iterator[CheckResult]:
    yield _result(obj.check(Aspect.EXISTS), FAIL, "present", "missing", f"{obj} does not exist")
    for aspect in aspects:
        yield _result(obj.check(aspect), SKIP, message=f"{obj} is missing")


def _column_checks(column: ColumnSpec, snapshot: Snapshot) -> Iterator[CheckResult]:
    obj = column.id
    found = snapshot.columns.get(column.name)
    if found is None:
        yield from _missing(obj, (Aspect.TYPE, Aspect.NULLABLE, Aspect.DEFAULT, Aspect.COMMENT))
        return
    yield _result(obj.check(Aspect.EXISTS), PASS, "present", "present")
    expected_type = column.type.name
    yield _result(
        obj.check(Aspect.TYPE), PASS if found.data_type == expected_type else FAIL, expected_type, found.data_type,
        "" if found.data_type == expected_type else f"column {column.name} has type {found.data_type}",
    )
    yield _nullable_check(column, found.nullable)
    actual_default = _normalize_default(found.default)
    default_ok = actual_default == column.default_text
    yield _result(
        obj.check(Aspect.DEFAULT), PASS if default_ok else FAIL, column.default_text or "(none)",
        found.default or "(none)", "" if default_ok else f"column {column.name} default differs",
    )
    comment_ok = found.comment == column.comment
    yield _result(
        obj.check(Aspect.COMMENT), PASS if comment_ok else FAIL, column.comment or "(none)", found.comment or "(none)",
        "" if comment_ok else f"column {column.name} comment {'is missing' if not found.comment else 'differs'}",
    )


def _nullable_check(column: ColumnSpec, found_nullable: bool) -> CheckResult:
    check = column.id.check(Aspect.NULLABLE)
    expected = "NULL" if column.nullable else "NOT NULL"
    actual = "NULL" if found_nullable else "NOT NULL"
    if expected == actual:
        return _result(check, PASS, expected, actual)
    if column.not_null_after_backfill:
        # added nullable on purpose: NOT NULL waits until backfill has filled the column
        return _result(check, WARN, expected, actual, f"column {column.name} is NOT NULL only after backfill",
                       hint="once backfilled, run `favmigrate finalize` to enforce NOT NULL online")
    return _result(check, FAIL, expected, actual, f"column {column.name} is {actual}")


def _foreign_key_checks(fk: ForeignKeySpec, snapshot: Snapshot, schema: str) -> Iterator[CheckResult]:
    obj = fk.id
    found = snapshot.constraints.get(fk.name)
    expected = (f"FOREIGN KEY ({', '.join(fk.columns)}) REFERENCES {fk.referenced_table}"
                f"({', '.join(fk.referenced_columns)}) ON DELETE {fk.on_delete}")
    if found is None:
        yield from _missing(obj, (Aspect.DEFINITION, Aspect.VALIDATED))
        return
    yield _result(obj.check(Aspect.EXISTS), PASS, "present", "present")
    same_table = (found.referenced_schema, found.referenced_table) == (schema, fk.referenced_table)
    definition_ok = (
        found.type == "f" and found.columns == fk.columns and same_table
        and found.referenced_columns == fk.referenced_columns and found.on_delete == fk.on_delete
    )
    yield _result(
        obj.check(Aspect.DEFINITION), PASS if definition_ok else FAIL, expected, found.definition,
        "" if definition_ok else f"constraint {fk.name} has another definition",
    )
    yield _result(
        obj.check(Aspect.VALIDATED), PASS if found.validated else FAIL, "validated", "validated" if found.validated
        else "NOT VALID", "" if found.validated else f"constraint {fk.name} is NOT VALID: existing rows unchecked",
        hint="" if found.validated else "run `favmigrate apply` to VALIDATE it",
    )


def _index_checks(index: IndexSpec, snapshot: Snapshot) -> Iterator[CheckResult]:
    obj = index.id
    found = snapshot.indexes.get(index.name)
    expected = describe_index(index.columns, index.predicate, unique=index.unique)
    if found is None:
        yield from _missing(obj, (Aspect.DEFINITION, Aspect.VALID))
        return
    yield _result(obj.check(Aspect.EXISTS), PASS, "present", "present")
    matches = index_matches(index, found)
    yield _result(
        obj.check(Aspect.DEFINITION), PASS if matches else FAIL, expected,
        describe_index(found.columns, found.predicate, found.method, found.unique),
        "" if matches else f"index {index.name} has another definition",
    )
    healthy = found.valid and found.ready and found.live
    state = ", ".join(word if flag else f"not {word}"
                      for word, flag in (("valid", found.valid), ("ready", found.ready), ("live", found.live)))
    yield _result(
        obj.check(Aspect.VALID), PASS if healthy else FAIL, "valid, ready, live", state,
        "" if healthy else f"index {index.name} is INVALID (an interrupted concurrent build?)",
        hint="" if healthy else "run `favmigrate apply`: it drops the invalid index concurrently and rebuilds it",
    )


def _data_checks(spec: MigrationSpec, data: DataStats) -> Iterator[CheckResult]:
    for column, orphans in data.orphaned.items():
        yield CheckResult(
            f"data:{column}:orphans", PASS if orphans == 0 else FAIL, "0", str(orphans),
            "" if not orphans else f"{plural(orphans, 'row')} reference a missing {data.references[column]} row",
        )
    for column, outside in data.out_of_range.items():
        limits = data.limits[column]
        yield CheckResult(
            f"data:{column}:range", PASS if outside == 0 else FAIL, limits, f"{plural(outside, 'row')} outside",
            "" if not outside else f"{plural(outside, 'row')} outside {limits}",
        )
    waiting = data.backfill_pending - data.backfill_rejected
    message, hint = "", ""
    if waiting:
        message = f"{plural(data.backfill_pending, 'row')} still with legacy metadata keys whose columns are NULL"
        hint = "run `favmigrate backfill`"
    elif data.backfill_rejected:
        message = (f"{plural(data.backfill_rejected, 'row')} with legacy values that backfill rejected, so their "
                   "columns stay NULL")
        hint = "review them: `favmigrate backfill --dry-run --rejects FILE` lists each value and why"
    yield CheckResult(
        "data:metadata:backfill-pending", PASS if data.backfill_pending == 0 else WARN, "0",
        str(data.backfill_pending) + (f" ({data.backfill_rejected} rejected)" if data.backfill_rejected else ""),
        message, hint=hint,
    )


def _table_checks(spec: MigrationSpec, snapshot: Snapshot, schema: str) -> Iterator[CheckResult]:
    tables = [(spec.table, snapshot.table_exists)]
    tables += [(name, name not in snapshot.missing_tables and snapshot.referenced_table_exists)
               for name in spec.referenced_tables]
    for name, exists in tables:
        yield _result(
            ObjectId(ObjectKind.TABLE, name).check(Aspect.EXISTS), PASS if exists else FAIL, "present",
            "present" if exists else "missing", "" if exists else f"table {schema}.{name} does not exist",
        )


def _change_log_check(spec: MigrationSpec, snapshot: Snapshot, schema: str, remedy: str) -> CheckResult:
    """A rollback's change log left on the table: its trigger records the id of every row the application
    writes, for as long as it stays."""
    if not snapshot.change_log:
        return _result(CHANGE_LOG.check(Aspect.ABSENT), PASS, "absent", "absent")
    return _result(CHANGE_LOG.check(Aspect.ABSENT), FAIL, "absent", "present",
                   f"the change log of a rollback that did not finish is on {schema}.{spec.table}: trigger "
                   f"{CHANGE_LOG.name} records the id of every row the application writes",
                   f"{remedy} (unless a rollback is running now)")


def check_applied(
    spec: MigrationSpec, snapshot: Snapshot, data: DataStats | None = None, schema: str = "public"
) -> tuple[CheckResult, ...]:
    """Every check of the applied end state (and the data checks when ``data`` is given)."""
    results = list(_table_checks(spec, snapshot, schema))
    if not snapshot.table_exists:
        return tuple(results)
    results.append(_change_log_check(spec, snapshot, schema, "`favmigrate apply` removes it, or `favmigrate "
                                     "rollback` finishes the rollback"))
    for column in spec.columns:
        results.extend(_column_checks(column, snapshot))
    for fk in spec.foreign_keys:
        results.extend(_foreign_key_checks(fk, snapshot, schema))
    for index in spec.indexes:
        results.extend(_index_checks(index, snapshot))
    if data is not None:
        results.extend(_data_checks(spec, data))
    return tuple(results)


def check_absent(spec: MigrationSpec, snapshot: Snapshot, schema: str = "public") -> tuple[CheckResult, ...]:
    """Checks of the rolled-back state: none of the migration's objects exist."""
    results = list(_table_checks(spec, snapshot, schema))
    if not snapshot.table_exists:
        return tuple(results)
    for obj in created_objects(spec):
        present = is_present(obj, snapshot)
        results.append(_result(
            obj.check(Aspect.ABSENT), FAIL if present else PASS, "absent", "present" if present else "absent",
            f"{obj} still exists" if present else "",
        ))
    results.append(_change_log_check(spec, snapshot, schema, "`favmigrate rollback` removes it"))
    return tuple(results)


def created_objects(spec: MigrationSpec) -> tuple[ObjectId, ...]:
    """Every object the migration creates: its columns, then foreign keys, then indexes."""
    return (tuple(c.id for c in spec.columns) + tuple(fk.id for fk in spec.foreign_keys)
            + tuple(i.id for i in spec.indexes))


def is_present(obj: ObjectId, snapshot: Snapshot) -> bool:
    """Whether the catalogs hold this column, constraint or index of the migration's table."""
    if obj.kind is ObjectKind.COLUMN:
        return obj.name in snapshot.columns
    if obj.kind is ObjectKind.CONSTRAINT:
        return obj.name in snapshot.constraints
    return obj.kind is ObjectKind.INDEX and obj.name in snapshot.indexes


def failing(checks: tuple[CheckResult, ...], ids: tuple[CheckId, ...]) -> list[CheckResult]:
    """The checks among ``ids`` that do not pass (a step is needed when any of its `satisfies` checks does not)."""
    wanted = {str(check) for check in ids}
    return [c for c in checks if c.id in wanted and c.status is not PASS]
