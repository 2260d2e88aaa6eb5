"""The spec: every mistake gets one clear error naming its field; the generated SQL creates and drops exactly
what the spec declares; sql/ stays what the generator renders. No database here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlparse

from favmigrate.catalog import Snapshot
from favmigrate.checks import check_applied, created_objects
from favmigrate.errors import UsageError
from favmigrate.ops import (
    all_steps,
    checksum_matches,
    down_steps,
    finalize_steps,
    migration_steps,
    rendered_files,
)
from favmigrate.spec import (
    LockKind,
    MigrationSpec,
    ObjectKind,
    SpecError,
    Target,
    as_text,
    load_spec,
    parse_spec,
    read_spec,
)

ROOT = Path(__file__).resolve().parent.parent
ORDERS = ROOT / "tests" / "specs" / "orders"
SPECS = {"phase4": load_spec(), "orders": read_spec(ORDERS)}


def _target(spec: MigrationSpec) -> Target:
    return Target.of(spec)


def _up(spec: MigrationSpec) -> str:
    return "\n".join(as_text(s) for step in all_steps(_target(spec)) for s in step.up)


def _down(spec: MigrationSpec) -> str:
    return "\n".join(as_text(s) for step in down_steps(_target(spec)) for s in step.down)


def _flat(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- the rendered sql/ folder


def test_sql_folder_is_what_the_spec_generates():
    """Edit verify/migration.toml, then `python -m favmigrate.ops` to regenerate sql/."""
    expected = rendered_files(_target(SPECS["phase4"]))
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "sql").glob("[0-9][0-9]_*.sql")}
    assert sorted(on_disk) == sorted(expected), "sql/ holds other files than the generated ones"
    for name, text in expected.items():
        assert on_disk[name] == text, f"sql/{name} differs from the generated SQL"


# ---------------------------------------------------------------- every object created and dropped


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_every_column_is_added_with_its_type_and_dropped(spec):
    (add_columns,) = migration_steps(_target(spec))[0].up
    clauses = as_text(add_columns).split("\n    ")[1:]
    added = {}
    for clause in clauses:
        match = re.fullmatch(r'ADD COLUMN IF NOT EXISTS "(\w+)" (.+?)( NOT NULL)?( DEFAULT (.+?))?,?', clause)
        assert match, clause
        added[match.group(1)] = (match.group(2).replace(", ", ","), bool(match.group(3)), match.group(5))
    assert list(added) == [c.name for c in spec.columns]
    up, down = _flat(_up(spec)), _flat(_down(spec))
    for column in spec.columns:
        assert added[column.name] == (column.type.name, not column.nullable_when_added, column.default_text)
        assert f'DROP COLUMN IF EXISTS "{column.name}"' in down
        if column.comment is not None:
            assert f'COMMENT ON COLUMN "public"."{spec.table}"."{column.name}" IS' in up


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_every_foreign_key_is_added_not_valid_then_validated_and_dropped(spec):
    up, down = _flat(_up(spec)), _flat(_down(spec))
    assert spec.foreign_keys
    for fk in spec.foreign_keys:
        assert (f'ADD CONSTRAINT "{fk.name}" FOREIGN KEY ("{fk.column}") REFERENCES "public"."{fk.referenced_table}" '
                f'("{fk.referenced_column}") ON DELETE {fk.on_delete} NOT VALID') in up
        assert f'VALIDATE CONSTRAINT "{fk.name}"' in up
        assert f'DROP CONSTRAINT IF EXISTS "{fk.name}"' in down


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_every_index_is_built_concurrently_as_specified_and_dropped_concurrently(spec):
    steps = {step.index.name: step for step in migration_steps(_target(spec)) if step.index}
    assert set(steps) == {index.name for index in spec.indexes}
    for index in spec.indexes:
        step = steps[index.name]
        assert step.lock is LockKind.CONCURRENT and not step.transactional
        (statement,) = [_flat(as_text(s)) for s in step.up]
        columns = ", ".join(f'"{c}"' for c in index.columns)
        where = f" WHERE {index.predicate}" if index.predicate else ""
        expected = (f'CREATE {"UNIQUE " if index.unique else ""}INDEX CONCURRENTLY "{index.name}" '
                    f'ON "public"."{spec.table}" ({columns}){where}')
        assert statement == expected
        (drop,) = [as_text(s) for s in step.down]
        assert drop == f'DROP INDEX CONCURRENTLY IF EXISTS "public"."{index.name}"'


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_every_created_object_is_dropped_by_a_down_step(spec):
    dropped = {obj for step in down_steps(_target(spec)) for obj in step.creates}
    assert dropped == set(created_objects(spec))


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_not_null_is_proven_by_a_validated_check_before_set_not_null(spec):
    for column in spec.columns:
        if column.nullable:
            continue
        steps = [s for s in all_steps(_target(spec)) if s.column == column]
        text = [_flat(as_text(statement)) for step in steps for statement in step.up]
        check = f'"{column.not_null_check}"'
        add = next(n for n, t in enumerate(text) if f"ADD CONSTRAINT {check} CHECK" in t)
        validate = next(n for n, t in enumerate(text) if f"VALIDATE CONSTRAINT {check}" in t)
        set_not_null = next(n for n, t in enumerate(text) if f'ALTER COLUMN "{column.name}" SET NOT NULL' in t)
        drop = next(n for n, t in enumerate(text) if f"DROP CONSTRAINT {check}" in t)
        assert add < validate < set_not_null < drop, column.name
        assert text[add].endswith("NOT VALID")
    assert [s.name for s in finalize_steps(_target(SPECS["orders"]))] == [
        "total-check-not-valid", "total-check-validate", "total-set-not-null"]


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_concurrent_statements_only_alone_in_non_transactional_steps(spec):
    for step in all_steps(_target(spec)):
        for statement in step.up + step.down:
            if "CONCURRENTLY" in as_text(statement):
                assert not step.transactional, step.name
                assert len(step.up) == 1, "CONCURRENTLY cannot share a step"


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_no_step_uses_blocking_forms_and_statements_split_cleanly(spec):
    """No plain CREATE INDEX, no validating ADD FOREIGN KEY or CHECK anywhere in the generated up SQL."""
    for step in all_steps(_target(spec)):
        for statement in step.up:
            text = _flat(as_text(statement))
            assert not re.search(r"CREATE (UNIQUE )?INDEX (?!CONCURRENTLY)", text), step.name
            if "FOREIGN KEY" in text or "CHECK (" in text:
                assert text.endswith("NOT VALID"), step.name
            assert len(sqlparse.split(as_text(statement))) == 1


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_every_check_a_step_satisfies_is_a_real_check_id(spec):
    snapshot = Snapshot(server_version_num=150000, table_exists=True, referenced_table_exists=True)
    ids = {c.id for c in check_applied(spec, snapshot)}
    for step in all_steps(_target(spec)):
        assert step.satisfies, step.name
        for check in step.satisfies:
            assert str(check) in ids, f"{step.name} satisfies unknown check {check}"


def test_check_ids_keep_their_text_form():
    spec = SPECS["phase4"]
    ids = {c.id for c in check_applied(spec, Snapshot(150000, True, True))}
    assert "constraint:session_requests_preferred_mechanic_id_fkey:validated" in ids
    assert "index:session_requests_priority_timeout_idx:valid" in ids
    assert "column:priority_window_minutes:nullable" in ids and "table:mechanics:exists" in ids
    assert {obj.kind for obj in created_objects(spec)} == {ObjectKind.COLUMN, ObjectKind.CONSTRAINT, ObjectKind.INDEX}


def test_schema_parameter_is_quoted_as_an_identifier():
    weird = Target(SPECS["phase4"], 'tenant "a"; drop')
    text = as_text(migration_steps(weird)[0].up[0])
    assert 'ALTER TABLE "tenant ""a""; drop"."session_requests"' in text


def test_phase4_history_recorded_by_the_hand_written_sql_still_matches():
    """Checksums recorded before the steps were generated are accepted: the SQL did the same."""
    spec = SPECS["phase4"]
    add_columns = migration_steps(_target(spec))[0]
    legacy = "f10017d41d592210fc8d4b501e47704450be14b326540d93beca7de5d5ec4849"
    assert checksum_matches(spec, add_columns, legacy)
    assert checksum_matches(spec, add_columns, add_columns.checksum())
    assert not checksum_matches(spec, add_columns, "0" * 64)
    assert not checksum_matches(SPECS["orders"], migration_steps(_target(SPECS["orders"]))[0], legacy)


def test_phase4_spec_keeps_its_names():
    spec = SPECS["phase4"]
    assert [fk.name for fk in spec.foreign_keys] == ["session_requests_preferred_mechanic_id_fkey"]
    assert spec.column("priority_window_minutes").not_null_check == "session_requests_priority_window_not_null"
    assert [s.name for s in migration_steps(_target(spec))] == [
        "add-columns", "add-fk-not-valid", "validate-fk", "index-preferred-mechanic", "index-priority-analytics",
        "index-priority-timeout", "column-comments"]


def test_reject_reason_of_a_missing_referenced_row():
    assert SPECS["phase4"].foreign_keys[0].unknown_reason == "unknown_mechanic"
    assert {fk.unknown_reason for fk in SPECS["orders"].foreign_keys} == {"unknown_reference"}


def test_derived_names_follow_postgresql():
    orders = SPECS["orders"]
    assert [fk.name for fk in orders.foreign_keys] == ["orders_customer_id_fkey", "orders_warehouse_fk"]
    assert orders.column("total").not_null_check == "orders_total_not_null_check"
    assert orders.column("total").nullable_when_added and not orders.column("total").nullable


# ---------------------------------------------------------------- spec mistakes: one clear error each

HEAD = """
[migration]
id = "m1"
description = "test"
table = "t"
primary_key = "id"
metadata_column = "meta"
existing_columns = ["status"]
"""


def _column(extra: str = "", name: str = "a", type_: str = "integer", key: str = "a") -> str:
    return f'\n[[columns]]\nname = "{name}"\ntype = "{type_}"\nlegacy_key = "{key}"\n{extra}\n'


MISTAKES = {
    "not TOML": ("[migration\n", "not valid TOML"),
    "no migration table": (_column(), "migration: missing (required)"),
    "missing required field": (HEAD.replace('table = "t"\n', "") + _column(), "migration.table: missing (required)"),
    "unknown key": (HEAD + _column('colour = "red"'), "columns[0] (a).colour: unknown key"),
    "unknown top-level table": (HEAD + _column() + "\n[[steps]]\nname = 'x'\n",
                                "steps: unknown key (steps are generated"),
    "old foreign_key table": (HEAD + _column() + "\n[foreign_key]\nname = 'x'\n", "declare it on its column"),
    "wrong value type": (HEAD + _column('nullable = "yes"'), "columns[0] (a).nullable: must be true or false"),
    "no columns": (HEAD, "at least one [[columns]]"),
    "unknown column type": (HEAD + _column(type_="money"), "columns[0] (a).type: unsupported column type 'money'"),
    "numeric without scale": (HEAD + _column(type_="numeric"), "numeric needs its precision and scale"),
    "min above max": (HEAD + _column("min = 10\nmax = 1"), "columns[0] (a).min: min 10 is greater than max 1"),
    "min on a text column": (HEAD + _column("min = 1", type_="text"), "only integer and numeric columns take min"),
    "bound outside the type": (HEAD + _column("max = 40000", type_="smallint"), "outside the range of smallint"),
    "bound not an integer": (HEAD + _column("max = 1.5"), "columns[0] (a).max: must be an integer"),
    "numeric bound too precise": (HEAD + _column('max = "1.234"', type_="numeric(5,2)"),
                                  "more than 2 fraction digits"),
    "max_length on an integer": (HEAD + _column("max_length = 3"), "only text columns take max_length"),
    "allowed longer than max_length": (HEAD + _column('max_length = 2\nallowed = ["abc"]', type_="text"),
                                       "longer than max_length 2"),
    "default not allowed": (HEAD + _column('default = "x"\nallowed = ["y"]', type_="text"),
                            "columns[0] (a).default: 'x' is not among allowed"),
    "default of the wrong type": (HEAD + _column('default = "10"'), "columns[0] (a).default: must be an integer"),
    "default below min": (HEAD + _column("default = 0\nmin = 1"), "columns[0] (a).default: 0 is below min 1"),
    "default on a uuid": (HEAD + _column('default = "x"', type_="uuid"), "a uuid column takes no default"),
    "not a date": (HEAD + _column('default = "2024-02-30"', type_="date"), "is not a date YYYY-MM-DD"),
    "NOT NULL without default": (HEAD + _column("nullable = false"), "a NOT NULL column needs a default"),
    "after-backfill with a default": (HEAD + _column('not_null = "after-backfill"\ndefault = 1'),
                                      "set nullable = false instead"),
    "after-backfill and nullable": (HEAD + _column('not_null = "after-backfill"\nnullable = true'),
                                    "contradicts nullable = true"),
    "unknown not_null": (HEAD + _column('not_null = "later"'), 'must be "after-backfill"'),
    "malformed references": (HEAD + _column('references = "customers.id"', type_="uuid"),
                             "columns[0] (a).references: must be \"table(column)\""),
    "unknown on_delete": (HEAD + _column('references = "c(id)"\non_delete = "nullify"', type_="uuid"),
                          "columns[0] (a).on_delete: must be one of"),
    "on_delete without references": (HEAD + _column('on_delete = "CASCADE"'),
                                     "only a column with `references` takes on_delete"),
    "unknown_reference not a reason": (HEAD + _column('references = "c(id)"\nunknown_reference = "No Row"'),
                                       "must be a snake_case reason"),
    "duplicate column": (HEAD + _column() + _column(key="b"), "columns[1].name: the name 'a' is already used"),
    "duplicate legacy key": (HEAD + _column() + _column(name="b"), "legacy_key: the name 'a' is already used"),
    "column clashes with the table": (HEAD + _column(name="status"), "is already a column of t"),
    "index on an unknown column": (HEAD + _column() + '\n[[indexes]]\nname = "i"\ncolumns = ["nope"]\n',
                                   "indexes[0] (i).columns: unknown column 'nope'"),
    "duplicate index name": (HEAD + _column('references = "c(id)"\nforeign_key = "i"') +
                             '\n[[indexes]]\nname = "i"\ncolumns = ["a"]\n',
                             "indexes[0].name: the name 'i' is already"),
    "two statements in a predicate": (HEAD + _column() + '\n[[indexes]]\nname = "i"\ncolumns = ["a"]\n'
                                      'predicate = "a > 1; DROP TABLE t"\n', "must be one SQL boolean expression"),
    "name too long": (HEAD + _column(name="x" * 64), "longer than 63 bytes"),
    "derived name too long": (HEAD.replace('table = "t"', f'table = "{"t" * 50}"') +
                              _column('references = "c(id)"', name="c" * 12), "set it explicitly"),
    "explain expects an unknown index": (HEAD + _column() + '\n[[explain]]\nfile = "q.sql"\nexpects = "nope"\n',
                                         "explain[0].expects: unknown index 'nope'"),
    "bad migration id": (HEAD.replace('id = "m1"', 'id = "m 1"') + _column(), "migration.id: 'm 1' must be"),
}


@pytest.mark.parametrize("mistake", MISTAKES, ids=list(MISTAKES))
def test_each_spec_mistake_is_one_clear_error_naming_the_field(mistake):
    text, message = MISTAKES[mistake]
    with pytest.raises(SpecError) as raised:
        parse_spec(text)
    assert message in raised.value.message
    assert raised.value.exit_code == 2


def test_a_query_file_must_exist_in_the_spec_folder(tmp_path):
    (tmp_path / "migration.toml").write_text(HEAD + _column() + '\n[[explain]]\nfile = "missing.sql"\n')
    with pytest.raises(SpecError, match=r"explain\[0\]\.file: 'missing.sql' does not exist"):
        read_spec(tmp_path)
    with pytest.raises(UsageError, match="cannot read the migration spec"):
        read_spec(tmp_path / "nope.toml")
