"""Pure checks: the comparison logic, without a database."""

from __future__ import annotations

from dataclasses import replace

from favmigrate.catalog import ColumnInfo, ConstraintInfo, IndexInfo, Snapshot
from favmigrate.checks import check_absent, check_applied, normalize_predicate
from favmigrate.spec import load_spec

SPEC = load_spec()


def _complete_snapshot() -> Snapshot:
    columns = {
        c.name: ColumnInfo(c.name, c.type.name, c.nullable, c.default_text, c.comment) for c in SPEC.columns
    }
    (fk,) = SPEC.foreign_keys
    constraints = {fk.name: ConstraintInfo(fk.name, "f", fk.columns, "public", "mechanics", fk.referenced_columns,
                                           "SET NULL", True, "FOREIGN KEY ...")}
    indexes = {
        i.name: IndexInfo(i.name, i.columns, f"({i.predicate})", False, "btree", True, True, True, "CREATE INDEX ...")
        for i in SPEC.indexes
    }
    return Snapshot(150000, True, True, columns, constraints, indexes)


def _status(snapshot: Snapshot) -> dict[str, str]:
    return {c.id: c.status.value for c in check_applied(SPEC, snapshot)}


def test_complete_state_passes_every_check():
    statuses = _status(_complete_snapshot())
    assert statuses and set(statuses.values()) == {"pass"}


def test_enum_cast_and_parentheses_do_not_matter_but_the_value_does():
    enum_form = "((priority_notified_at IS NOT NULL) AND (status = 'pending'::session_request_status))"
    text_form = "priority_notified_at IS NOT NULL AND status = 'pending'::text"
    assert normalize_predicate(enum_form) == normalize_predicate(text_form)
    assert normalize_predicate("status = 'accepted' AND priority_notified_at IS NOT NULL") != normalize_predicate(
        text_form)
    assert normalize_predicate("(a IS NOT NULL) OR (b = 1)") != normalize_predicate("a IS NOT NULL AND b = 1")


def test_each_kind_of_drift_fails_its_own_check():
    base = _complete_snapshot()
    window, comment_col = "priority_window_minutes", "priority_notified_at"
    fk = SPEC.foreign_keys[0].name
    timeout_idx = "session_requests_priority_timeout_idx"
    cases = {
        f"column:{window}:type": replace(base, columns={**base.columns, window: replace(base.columns[window],
                                                                                     data_type="bigint")}),
        f"column:{window}:default": replace(base, columns={**base.columns, window: replace(base.columns[window],
                                                                                        default=None)}),
        f"column:{window}:nullable": replace(base, columns={**base.columns, window: replace(base.columns[window],
                                                                                         nullable=True)}),
        f"column:{comment_col}:comment": replace(base, columns={
            **base.columns, comment_col: replace(base.columns[comment_col], comment=None)}),
        f"constraint:{fk}:validated": replace(base, constraints={fk: replace(base.constraints[fk], validated=False)}),
        f"constraint:{fk}:definition": replace(base, constraints={fk: replace(base.constraints[fk],
                                                                              on_delete="CASCADE")}),
        f"index:{timeout_idx}:valid": replace(base, indexes={**base.indexes, timeout_idx: replace(
            base.indexes[timeout_idx], valid=False)}),
        f"index:{timeout_idx}:definition": replace(base, indexes={**base.indexes, timeout_idx: replace(
            base.indexes[timeout_idx], predicate="priority_notified_at IS NOT NULL")}),
    }
    for check_id, snapshot in cases.items():
        failed = {k for k, v in _status(snapshot).items() if v == "fail"}
        assert failed == {check_id}, check_id


def test_missing_objects_fail_exists_and_skip_the_rest():
    base = _complete_snapshot()
    snapshot = replace(base, indexes={})
    statuses = _status(snapshot)
    for index in SPEC.indexes:
        assert statuses[f"index:{index.name}:exists"] == "fail"
        assert statuses[f"index:{index.name}:valid"] == "skip"


def test_absent_mode():
    empty = Snapshot(150000, True, True)
    assert {c.status.value for c in check_absent(SPEC, empty)} == {"pass"}
    failed = [c.id for c in check_absent(SPEC, _complete_snapshot()) if c.failed]
    assert len(failed) == len(SPEC.columns) + 1 + len(SPEC.indexes)
