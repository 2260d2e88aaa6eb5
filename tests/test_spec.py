"""The spec and the shipped SQL cannot drift apart: each object is created by its up SQL, dropped by its down SQL."""

from __future__ import annotations

import re

import pytest
import sqlparse

from favmigrate.errors import UsageError
from favmigrate.spec import LockKind, Target, as_text, load_spec, parse_spec

SPEC = load_spec()
TARGET = Target(SPEC, "public")


def _up_sql() -> str:
    return "\n".join(as_text(s) for step in SPEC.steps for s in TARGET.up_statements(step))


def _down_sql() -> str:
    return "\n".join(as_text(s) for step in SPEC.down_steps for s in TARGET.down_statements(step))


@pytest.mark.parametrize("column", SPEC.columns, ids=lambda c: c.name)
def test_every_column_is_added_with_its_type_and_dropped(column):
    up = _up_sql()
    added = re.search(rf"ADD COLUMN IF NOT EXISTS {column.name} ([a-z ]+?)(,|\n|$| NOT NULL| DEFAULT)", up)
    assert added, f"{column.name} is not added by the up SQL"
    aliases = {"timestamptz": "timestamp with time zone"}
    assert aliases.get(added.group(1).strip(), added.group(1).strip()) == column.type
    if column.default is not None:
        assert re.search(rf"{column.name} \w+ NOT NULL DEFAULT {column.default}\b", up)
    assert f"DROP COLUMN IF EXISTS {column.name}" in _down_sql()
    assert f"COMMENT ON COLUMN \"public\".\"session_requests\".{column.name} IS" in up


def test_foreign_key_is_added_not_valid_then_validated_and_dropped():
    fk = SPEC.foreign_key
    up = _up_sql()
    added = re.search(
        rf"ADD CONSTRAINT {fk.name}\s+FOREIGN KEY \(([^)]*)\) REFERENCES \"public\"\.\"(\w+)\" \(([^)]*)\)\s+"
        rf"ON DELETE ([A-Z ]+?)\s+NOT VALID", up)
    assert added, "the FK must be added NOT VALID"
    assert tuple(c.strip() for c in added.group(1).split(",")) == fk.columns
    assert added.group(2) == fk.referenced_table
    assert tuple(c.strip() for c in added.group(3).split(",")) == fk.referenced_columns
    assert added.group(4) == fk.on_delete
    assert f"VALIDATE CONSTRAINT {fk.name}" in up
    assert f"DROP CONSTRAINT IF EXISTS {fk.name}" in _down_sql()


@pytest.mark.parametrize("index", SPEC.indexes, ids=lambda i: i.name)
def test_every_index_is_built_concurrently_as_specified_and_dropped_concurrently(index):
    step = next(s for s in SPEC.steps if s.index == index.name)
    assert step.lock is LockKind.CONCURRENT and not step.transactional
    (statement,) = [as_text(s) for s in TARGET.up_statements(step)]
    flat = " ".join(statement.split())
    expected = (f"CREATE INDEX CONCURRENTLY {index.name} ON \"public\".\"session_requests\" "
                f"({', '.join(index.columns)}) WHERE {index.predicate}")
    assert flat == expected
    (drop,) = [as_text(s) for s in TARGET.down_statements(step)]
    assert drop == f'DROP INDEX CONCURRENTLY IF EXISTS "public".{index.name}'


def test_concurrent_statements_only_in_non_transactional_steps():
    for step in (*SPEC.steps, *SPEC.converge):
        for statement in TARGET.up_statements(step) + TARGET.down_statements(step):
            if "CONCURRENTLY" in as_text(statement):
                assert not step.transactional, step.name
                assert len(TARGET.up_statements(step)) == 1, "CONCURRENTLY cannot share a step"


def test_no_step_uses_blocking_forms():
    """No plain CREATE INDEX, no validating ADD FOREIGN KEY anywhere in the shipped up SQL."""
    for step in (*SPEC.steps, *SPEC.converge):
        for statement in TARGET.up_statements(step):
            text = " ".join(as_text(statement).split())
            assert not re.search(r"CREATE (UNIQUE )?INDEX (?!CONCURRENTLY)", text), step.name
            if "FOREIGN KEY" in text or "CHECK (" in text:
                assert text.endswith("NOT VALID"), step.name


def test_schema_parameter_is_quoted_as_an_identifier():
    weird = Target(SPEC, 'tenant "a"; drop')
    text = as_text(weird.up_statements(SPEC.steps[0])[0])
    assert 'ALTER TABLE "tenant ""a""; drop"."session_requests"' in text


def test_every_check_a_step_satisfies_is_a_real_check_id():
    from favmigrate.catalog import Snapshot
    from favmigrate.checks import check_applied

    snapshot = Snapshot(server_version_num=150000, table_exists=True, referenced_table_exists=True)
    ids = {c.id for c in check_applied(SPEC, snapshot)}
    for step in (*SPEC.steps, *SPEC.converge):
        for check_id in step.satisfies:
            assert check_id in ids, f"{step.name} satisfies unknown check {check_id}"


def test_statements_split_cleanly():
    for step in (*SPEC.steps, *SPEC.converge):
        for statement in TARGET.up_statements(step):
            assert len(sqlparse.split(as_text(statement))) == 1


def test_malformed_spec_is_a_usage_error():
    with pytest.raises(UsageError, match="malformed"):
        parse_spec("[migration]\nid = 'x'\n")
