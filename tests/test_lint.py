"""lint rules without a database: one case that fires and one that does not per rule, the context the pass
keeps (new tables, transactions, timeouts), DO blocks, ignore comments, favmigrate's own SQL and the seed's."""

from __future__ import annotations

from pathlib import Path

import pytest

from favmigrate.db import SessionLimits
from favmigrate.errors import UsageError
from favmigrate.lint import RULES, LintOptions, Source, lint, select_rules
from favmigrate.ops import converge_steps, migration_steps
from favmigrate.resources import sql_dir
from favmigrate.runner import session_statements
from favmigrate.spec import Target, as_text, load_spec

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "favmigrate" / "sample" / "seed_original.sql"  # the seed document's hand-written SQL, verbatim
CORPUS = Path(__file__).resolve().parent / "lint" / "corpus"
TIMEOUTS = "SET lock_timeout = '1s';\nSET statement_timeout = '5s';\n"


def found(text: str, *rules: str) -> list[tuple[str, int, int]]:
    """(rule, line, column) of every finding of ``text`` with ``rules`` (default: all)."""
    report = lint([Source("m.sql", text)], LintOptions(select_rules(rules or ["all"], None)))
    return [(f.rule, f.line, f.column) for f in report.findings]


def rules_of(text: str, *rules: str) -> list[str]:
    return [rule for rule, _, _ in found(text, *rules)]


# (rule, SQL that must be flagged, similar SQL that must not)
CASES = [
    ("require-concurrent-index-creation",
     "CREATE INDEX IF NOT EXISTS i ON t (a);",
     "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a);"),
    ("require-concurrent-index-deletion",
     "DROP INDEX IF EXISTS i;",
     "DROP INDEX CONCURRENTLY IF EXISTS i;"),
    ("ban-concurrent-index-creation-in-transaction",
     "BEGIN;\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a);\nCOMMIT;",
     "BEGIN;\nCOMMIT;\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a);"),
    ("constraint-missing-not-valid",
     "ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0);",
     "ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0) NOT VALID;"),
    ("adding-foreign-key-constraint",
     "ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (u) REFERENCES u (id);",
     "ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (u) REFERENCES u (id) NOT VALID;"),
    ("disallowed-unique-constraint",
     "ALTER TABLE t ADD CONSTRAINT k UNIQUE (a);",
     "ALTER TABLE t ADD CONSTRAINT k UNIQUE USING INDEX k_idx;"),
    ("require-lock-timeout",
     "ALTER TABLE t ADD COLUMN IF NOT EXISTS a text;",
     "SET lock_timeout = '1s';\nALTER TABLE t ADD COLUMN IF NOT EXISTS a text;"),
    ("require-statement-timeout",
     "SET lock_timeout = '1s';\nCREATE INDEX IF NOT EXISTS i ON t (a);",
     "SET lock_timeout = '1s';\nSET statement_timeout = '5s';\nCREATE INDEX IF NOT EXISTS i ON t (a);"),
    ("ban-drop-column",
     "ALTER TABLE t DROP COLUMN IF EXISTS a;",
     "ALTER TABLE t DROP CONSTRAINT IF EXISTS a;"),
    ("ban-drop-table",
     "DROP TABLE IF EXISTS t;",
     "CREATE TABLE IF NOT EXISTS t (a int);\nDROP TABLE IF EXISTS t;"),
    ("changing-column-type",
     "ALTER TABLE t ALTER COLUMN a TYPE bigint;",
     "ALTER TABLE t ALTER COLUMN a SET DEFAULT 1;"),
    ("renaming-column",
     "ALTER TABLE t RENAME COLUMN a TO b;",
     "ALTER TABLE t RENAME CONSTRAINT a TO b;"),
    ("renaming-table",
     "ALTER TABLE t RENAME TO u;",
     "ALTER TABLE t RENAME COLUMN a TO b;"),
    ("adding-field-with-default",
     "ALTER TABLE t ADD COLUMN IF NOT EXISTS a uuid DEFAULT gen_random_uuid();",
     "ALTER TABLE t ADD COLUMN IF NOT EXISTS a timestamptz DEFAULT now();"),
    ("adding-required-field",
     "ALTER TABLE t ADD COLUMN IF NOT EXISTS a int NOT NULL;",
     "ALTER TABLE t ADD COLUMN IF NOT EXISTS a int NOT NULL DEFAULT 10;"),
    ("adding-not-nullable-field",
     "ALTER TABLE t ALTER COLUMN a SET NOT NULL;",
     "BEGIN;\nALTER TABLE t ADD CONSTRAINT a_nn CHECK (a IS NOT NULL) NOT VALID;\nCOMMIT;\n"
     "ALTER TABLE t VALIDATE CONSTRAINT a_nn;\nALTER TABLE t ALTER COLUMN a SET NOT NULL;"),
    ("prefer-robust-stmts",
     "CREATE INDEX CONCURRENTLY i ON t (a);",
     "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a);"),
    ("ban-uncommitted-transaction",
     "BEGIN;\nALTER TABLE t ADD COLUMN IF NOT EXISTS a text;",
     "BEGIN;\nALTER TABLE t ADD COLUMN IF NOT EXISTS a text;\nCOMMIT;"),
    ("transaction-nesting",
     "BEGIN;\nBEGIN;\nCOMMIT;",
     "BEGIN;\nCOMMIT;\nBEGIN;\nCOMMIT;"),
]


def test_every_rule_has_a_case() -> None:
    assert sorted(rule for rule, _, _ in CASES) == sorted(RULES)


@pytest.mark.parametrize(("rule", "positive", "negative"), CASES, ids=[case[0] for case in CASES])
def test_rule_fires_on_its_case_and_not_on_the_safe_form(rule: str, positive: str, negative: str) -> None:
    assert rule in rules_of(positive)
    assert rule not in rules_of(negative)


def test_seed_sql_gives_exactly_its_known_findings() -> None:
    assert found(SEED.read_text()) != []
    assert sorted(rules_of(SEED.read_text(), "default")) == sorted([
        "require-lock-timeout", "require-statement-timeout",
        "constraint-missing-not-valid", "adding-foreign-key-constraint",
        "require-concurrent-index-creation", "require-concurrent-index-creation", "require-concurrent-index-creation",
    ])
    positions = {(rule, line) for rule, line, _ in found(SEED.read_text(), "default")}
    assert {("require-concurrent-index-creation", line) for line in (27, 32, 37)} <= positions
    assert ("adding-foreign-key-constraint", 21) in positions


def rendered_migration() -> str:
    """The statements apply runs on a table where the seed's SQL ran (every step, convergence included), with
    the session settings its step runner makes before each step (apply's defaults: lock_timeout 1s, none for a
    concurrent index build, no statement_timeout), each non-concurrent step in its own transaction.
    `apply --dry-run --format sql` prints the same (test_lint_cli.py lints that too, on a database)."""
    target = Target(load_spec())
    migration = migration_steps(target)
    steps = [migration[0], *converge_steps(target), *migration[1:]]
    lines = []
    for step in steps:
        lines += [statement + ";" for statement in session_statements(step.lock, SessionLimits())]
        statements = [as_text(s) + ";" for s in ((step.first_batch,) if step.first_batch else ()) + step.up]
        if step.transactional:
            statements = ["BEGIN;", *statements, "COMMIT;"]
        lines += statements
    return "\n".join(lines) + "\n"


def test_favmigrates_own_migration_lints_clean() -> None:
    text = rendered_migration()
    assert "CREATE INDEX CONCURRENTLY" in text and "SET NOT NULL" in text
    assert found(text, "default") == []


def test_the_same_migration_without_its_session_settings_is_flagged() -> None:
    text = "\n".join(line for line in rendered_migration().splitlines() if "set_config" not in line)
    assert rules_of(text, "default") == ["require-lock-timeout"]


# What a template says taken alone: the rollback drops the columns, and SET NOT NULL is proven safe only by the
# CHECK that steps 10-11 validate before it (test_favmigrates_own_migration_lints_clean).
TEMPLATE_FINDINGS = {
    "01_add_columns.down.sql": {"ban-drop-column"},
    "12_window_set_not_null.up.sql": {"adding-not-nullable-field", "require-statement-timeout"},
}


@pytest.mark.parametrize("name", sorted(p.name for p in Path(str(sql_dir())).glob("*.sql")))
def test_shipped_templates_with_placeholders_parse(name: str) -> None:
    text = Path(str(sql_dir())).joinpath(name).read_text()
    # {table}, {classify}, %(overwrite)s parse; a missing lock_timeout is all the rest may be told
    expected = TEMPLATE_FINDINGS.get(name, set())
    assert set(rules_of(text, "default")) - {"require-lock-timeout"} == expected


def test_placeholder_table_names_are_tables() -> None:
    assert rules_of("CREATE INDEX i ON {table} (a);", "require-concurrent-index-creation") == [
        "require-concurrent-index-creation"]
    assert rules_of("CREATE TABLE IF NOT EXISTS {rejects_table} (a int);\nCREATE INDEX i ON {rejects_table} (a);",
                    "default") == []


# ---------------------------------------------------------------- splitting


def test_do_blocks_constant_execute_and_comments() -> None:
    result = found((CORPUS / "do_block.sql").read_text(), "all")
    assert result == [("require-concurrent-index-creation", 9, 9), ("ban-drop-column", 11, 33)]


def test_dollar_quote_holding_semicolons_is_one_statement() -> None:
    text = TIMEOUTS + "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $body$ SELECT 1; DROP TABLE t; $body$;\n" \
        "CREATE INDEX i ON t (a);"
    assert found(text, "default") == [("require-concurrent-index-creation", 4, 1)]


def test_strings_and_comments_holding_ddl_are_not_statements() -> None:
    text = TIMEOUTS + ("SELECT 'DROP TABLE t; ALTER TABLE t RENAME TO u;' AS s; -- DROP TABLE t;\n"
                       "/* CREATE INDEX i ON t (a); */ SELECT E'a\\'; DROP TABLE t; --';\n")
    assert found(text) == []


def test_execute_of_a_computed_string_is_not_guessed() -> None:
    text = TIMEOUTS + "DO $$ BEGIN EXECUTE format('DROP TABLE %I', 't'); END $$;"
    assert found(text) == []


def test_a_finding_after_a_doubled_quote_in_an_execute_string_points_at_its_place_in_the_file() -> None:
    line = "  EXECUTE 'ALTER TABLE t ADD COLUMN c text DEFAULT ''x'' NOT NULL, ADD CONSTRAINT f CHECK (c <> '''')';"
    text = TIMEOUTS + "DO $$\nBEGIN\n" + line + "\nEND $$;\n"
    column = line.index("ADD CONSTRAINT") + 1
    assert found(text, "constraint-missing-not-valid") == [("constraint-missing-not-valid", 5, column)]
    # the same in a DO body quoted with single quotes
    body = "  ALTER TABLE t ADD COLUMN c text DEFAULT ''x'', ADD CONSTRAINT f CHECK (c <> '''');"
    quoted = TIMEOUTS + "DO '\nBEGIN\n" + body + "\nEND';\n"
    assert found(quoted, "constraint-missing-not-valid") == [
        ("constraint-missing-not-valid", 5, body.index("ADD CONSTRAINT") + 1)]


def test_a_sql_standard_function_body_is_one_statement_and_its_end_closes_no_transaction() -> None:
    text = ("BEGIN;\nCREATE FUNCTION f(a int) RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n"
            "  SELECT CASE WHEN a > 0 THEN 1 END;\n  SELECT a + 1;\nEND;\n"
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a);\nCOMMIT;\n")
    assert found(text, "ban-concurrent-index-creation-in-transaction") == [
        ("ban-concurrent-index-creation-in-transaction", 7, 1)]


def test_concurrent_build_in_a_do_block_is_in_a_transaction() -> None:
    text = "DO $$ BEGIN CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a); END $$;"
    assert rules_of(text) == ["ban-concurrent-index-creation-in-transaction"]


# ---------------------------------------------------------------- ignores


def test_squawk_ignore_skips_the_next_statement_only() -> None:
    text = TIMEOUTS + ("-- squawk-ignore ban-drop-column, renaming-column\n"
                       "ALTER TABLE t DROP COLUMN IF EXISTS a;\n"
                       "ALTER TABLE t DROP COLUMN IF EXISTS b;\n")
    assert found(text) == [("ban-drop-column", 5, 15)]


def test_favmigrate_ignore_skips_the_next_statement_only() -> None:
    text = TIMEOUTS + ("ALTER TABLE t RENAME TO u; -- favmigrate:ignore renaming-column\n"
                       "ALTER TABLE u RENAME COLUMN a TO b;\n"
                       "ALTER TABLE u RENAME COLUMN c TO d;\n")
    assert found(text, "default") == [("renaming-table", 3, 15), ("renaming-column", 5, 15)]


def test_ignore_without_rules_skips_every_rule_of_the_statement() -> None:
    text = "/* favmigrate:ignore */\nCREATE INDEX i ON t (a);\nCREATE INDEX j ON t (b);"
    assert found(text, "default") == [("require-lock-timeout", 3, 1), ("require-concurrent-index-creation", 3, 1),
                                      ("require-statement-timeout", 3, 1)]


def test_squawk_ignore_as_squawk_reads_it() -> None:
    text = TIMEOUTS + ("-- squawk-ignore\nALTER TABLE t DROP COLUMN IF EXISTS a;\n"  # names no rule: nothing
                       "ALTER TABLE t\n    -- squawk-ignore ban-drop-column\n    DROP COLUMN IF EXISTS b;\n")
    assert found(text) == [("ban-drop-column", 4, 15)]


@pytest.mark.parametrize("comment", ["-- squawk-ignore-file require-concurrent-index-creation",
                                     "-- favmigrate:ignore-file require-concurrent-index-creation"])
def test_file_ignores(comment: str) -> None:
    text = TIMEOUTS + "CREATE INDEX i ON t (a);\n" + comment + "\nCREATE INDEX j ON t (b);\n"
    assert found(text, "default") == []


def test_favmigrate_ignore_of_an_unknown_rule_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no-such-rule"):
        found("-- favmigrate:ignore no-such-rule\nSELECT 1;")
    # squawk-ignore may name squawk's own rules that favmigrate does not have
    assert found("-- squawk-ignore prefer-bigint-over-int\nSELECT 1;") == []


# ---------------------------------------------------------------- context


@pytest.mark.parametrize("setting", [
    "SET lock_timeout = '1s';",
    "SET SESSION lock_timeout TO 1000;",
    "SELECT set_config('lock_timeout', '1s', false);",
    "BEGIN;\nSET LOCAL lock_timeout = '1s';",
    "BEGIN;\nSELECT set_config('lock_timeout', '1s', true);",
])
def test_lock_timeout_is_tracked_through_set_and_set_config(setting: str) -> None:
    assert "require-lock-timeout" not in rules_of(setting + "\nALTER TABLE t ADD COLUMN IF NOT EXISTS a text;")


@pytest.mark.parametrize("setting", [
    "SET statement_timeout = 0;",
    "SET statement_timeout = '0ms';",
    "SELECT set_config('statement_timeout', '0', false);",
    "SET statement_timeout = '5s';\nRESET statement_timeout;",
    "SET statement_timeout TO DEFAULT;",
    "SET LOCAL statement_timeout = '5s';",  # outside a transaction block SET LOCAL does nothing
    "BEGIN;\nSET LOCAL statement_timeout = '5s';\nCOMMIT;",  # ended with its transaction
    "BEGIN;\nSET statement_timeout = '5s';\nROLLBACK;",  # rolled back with it
])
def test_statement_timeout_of_zero_or_gone_is_not_set(setting: str) -> None:
    text = setting + "\nSET lock_timeout = '1s';\nCREATE INDEX IF NOT EXISTS i ON t (a);"
    assert "require-statement-timeout" in rules_of(text)


def test_missing_timeouts_are_reported_once_per_file() -> None:
    text = "CREATE INDEX i ON t (a);\nCREATE INDEX j ON t (b);"
    assert rules_of(text, "require-lock-timeout", "require-statement-timeout") == [
        "require-lock-timeout", "require-statement-timeout"]


def test_a_table_created_in_the_file_is_new() -> None:
    text = TIMEOUTS + ("CREATE TABLE IF NOT EXISTS t (id bigint PRIMARY KEY, u bigint, a text);\n"
                       "CREATE INDEX IF NOT EXISTS t_u_idx ON t (u);\n"
                       "ALTER TABLE t ADD CONSTRAINT t_u_fkey FOREIGN KEY (u) REFERENCES u (id);\n"
                       "ALTER TABLE t ADD CONSTRAINT t_a_key UNIQUE (a);\n"
                       "ALTER TABLE t ALTER COLUMN a SET NOT NULL;\n")
    assert found(text, "default") == []
    assert rules_of(text.replace("CREATE TABLE IF NOT EXISTS t", "CREATE TABLE IF NOT EXISTS other"), "default") == [
        "require-concurrent-index-creation", "constraint-missing-not-valid", "adding-foreign-key-constraint",
        "disallowed-unique-constraint", "adding-not-nullable-field"]


def test_validate_in_the_transaction_that_added_the_constraint() -> None:
    text = TIMEOUTS + ("BEGIN;\nALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (u) REFERENCES u (id) NOT VALID;\n"
                       "ALTER TABLE t VALIDATE CONSTRAINT f;\nCOMMIT;\n")
    assert found(text) == [("constraint-missing-not-valid", 5, 15)]


def test_rule_selection() -> None:
    assert [r.id for r in select_rules(["renaming-table,renaming-column"], None)] == [
        "renaming-column", "renaming-table"]
    assert "prefer-robust-stmts" not in [r.id for r in select_rules(None, None)]
    assert "ban-drop-table" not in [r.id for r in select_rules(["all"], ["ban-drop-table"])]
    with pytest.raises(UsageError, match="nope"):
        select_rules(["nope"], None)
    with pytest.raises(UsageError, match="nope"):
        select_rules(None, ["nope"])


def test_a_default_calling_an_unknown_function_may_rewrite() -> None:
    text = TIMEOUTS + "ALTER TABLE t ADD COLUMN IF NOT EXISTS a int DEFAULT next_code();"
    assert rules_of(text) == ["adding-field-with-default"]
    assert rules_of(text.replace("next_code()", "10")) == []


@pytest.mark.parametrize("column", ["id bigserial", "id bigint GENERATED ALWAYS AS IDENTITY",
                                    "total numeric GENERATED ALWAYS AS (price * 2) STORED"])
def test_columns_that_fill_every_row_rewrite_the_table(column: str) -> None:
    text = TIMEOUTS + f"ALTER TABLE t ADD COLUMN IF NOT EXISTS {column};"
    assert rules_of(text) == ["adding-field-with-default"]


CUT_STATEMENTS = ["DROP INDEX", "CREATE INDEX", "CREATE UNIQUE INDEX", "ALTER TABLE", "ALTER TABLE t ADD",
                  "ALTER TABLE t ALTER COLUMN", "ALTER TABLE t VALIDATE", "SET", "RESET", "DO", "DROP TABLE",
                  "CREATE TABLE", "SELECT set_config()", "DO $$ EXECUTE $$", ")"]


@pytest.mark.parametrize("text", CUT_STATEMENTS)
def test_a_cut_statement_does_not_break_the_pass(text: str) -> None:
    assert "renaming-table" in rules_of(text + ";\nALTER TABLE t RENAME TO u;")  # what follows is still linted


def wrapped(text: str, *rules: str) -> list[str]:
    """Rules found when a migration tool runs the file in one transaction (--assume-in-transaction)."""
    options = LintOptions(select_rules(rules or ["all"], None), assume_in_transaction=True)
    report = lint([Source("m.sql", text)], options)
    return [f.rule for f in report.findings]


def test_a_file_run_in_one_transaction() -> None:
    concurrent = TIMEOUTS + "CREATE INDEX CONCURRENTLY i ON t (a);"
    assert rules_of(concurrent) == ["prefer-robust-stmts"]
    assert wrapped(concurrent) == ["ban-concurrent-index-creation-in-transaction"]
    # NOT VALID then VALIDATE in one file is one transaction: the ADD's lock is held for the whole scan
    two_steps = TIMEOUTS + ("ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (u) REFERENCES u (id) NOT VALID;\n"
                            "ALTER TABLE t VALIDATE CONSTRAINT f;")
    assert "constraint-missing-not-valid" not in rules_of(two_steps)
    assert "constraint-missing-not-valid" in wrapped(two_steps)
    assert wrapped("SET LOCAL lock_timeout = '1s';\nALTER TABLE t ADD COLUMN IF NOT EXISTS a text;") == []
    assert wrapped("BEGIN;\nCOMMIT;") == ["transaction-nesting", "transaction-nesting"]


@pytest.mark.parametrize(("statement", "expected"), [
    ("REINDEX TABLE t;", ["require-lock-timeout", "require-statement-timeout"]),
    ("REINDEX TABLE CONCURRENTLY t;", []),
    ("VACUUM FULL t;", ["require-lock-timeout", "require-statement-timeout"]),
    ("VACUUM t;", []),
    ("TRUNCATE t;", ["require-lock-timeout"]),
    ("COMMENT ON COLUMN t.a IS 'x';", []),
])
def test_other_statements_that_lock_or_scan(statement: str, expected: list[str]) -> None:
    assert rules_of(statement) == expected
