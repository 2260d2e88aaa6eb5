"""check-types: the generated TypeScript types against the spec's columns, or the live ones (--dsn)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from xml.etree import ElementTree

import pytest

from clihelp import cli
from favmigrate.check_types import check_types, live_columns, spec_columns
from favmigrate.spec import Target, load_spec
from favmigrate.tstypes import TypesFileError, canonical_type, parse_database, tokenize

TYPES = Path(__file__).parent / "types"
CURRENT = (TYPES / "current.ts").read_text()
NEW_COLUMNS = ["preferred_mechanic_id", "priority_window_minutes", "priority_notified_at"]


def _write(tmp_path: Path, text: str, name: str = "types.ts") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _report(text: str):
    target = Target(load_spec())
    return check_types(text, target, spec_columns(target)).to_dict()


def test_types_generated_after_the_migration_are_current():
    result = cli("check-types", str(TYPES / "current.ts"), "--format", "json")
    assert result.exit_code == 0, result.stdout + result.stderr
    data = result.json()
    assert data["ok"] and data["source"] == "spec" and data["table"] == "session_requests"
    assert data["summary"] == {"pass": 9, "fail": 0, "warn": 0, "skip": 0}
    assert {c["id"] for c in data["checks"]} == {
        f"types:session_requests.{section}.{column}:declared"
        for section in ("Row", "Insert", "Update") for column in NEW_COLUMNS}
    window_id = "types:session_requests.Insert.priority_window_minutes:declared"
    window = next(c for c in data["checks"] if c["id"] == window_id)
    assert window["expected"] == window["actual"] == "priority_window_minutes?: number"


def test_types_generated_before_the_migration_are_stale_in_every_section():
    result = cli("check-types", str(TYPES / "stale.ts"), "--format", "json")
    assert result.exit_code == 1
    sections = result.json()["sections"]
    for section in ("Row", "Insert", "Update"):
        assert sections[section] == {"missing": NEW_COLUMNS, "mistyped": [], "extra": []}
    text = cli("check-types", str(TYPES / "stale.ts"))
    assert text.exit_code == 1
    assert "Row\tpreferred_mechanic_id\tmissing" in text.stdout and "STALE" in text.stdout


def test_mistyped_fields_name_the_section_the_type_and_the_optionality():
    result = cli("check-types", str(TYPES / "mistyped.ts"), "--format", "json")
    assert result.exit_code == 1
    sections = result.json()["sections"]
    assert sections["Row"]["mistyped"] == [{"field": "priority_window_minutes",
                                            "expected": "priority_window_minutes: number",
                                            "actual": "priority_window_minutes: number | null"}]
    assert sections["Insert"]["mistyped"] == [
        {"field": "priority_window_minutes", "expected": "priority_window_minutes?: number",
         "actual": "priority_window_minutes: number"},
        {"field": "priority_notified_at", "expected": "priority_notified_at?: string | null",
         "actual": "priority_notified_at?: Date | null"}]
    assert sections["Update"] == {"missing": [], "mistyped": [], "extra": []}


def test_junit_has_one_testcase_per_field(tmp_path):
    junit = tmp_path / "types.xml"
    assert cli("check-types", str(TYPES / "mistyped.ts"), "--junit", str(junit)).exit_code == 1
    suite = ElementTree.parse(junit).getroot()
    assert suite.get("tests") == "9" and suite.get("failures") == "3"


def test_the_table_of_another_schema_is_not_read_for_public():
    # graphql_public comes first in the file; a session_requests there must not stand in for public's
    decoy = CURRENT.replace(
        "  graphql_public: {\n    Tables: {\n      [_ in never]: never\n    }",
        "  graphql_public: {\n    Tables: {\n      session_requests: {\n        Row: { id: string }\n"
        "        Insert: { id?: string }\n        Update: { id?: string }\n"
        "        Relationships: []\n      }\n    }", 1)
    assert decoy != CURRENT
    assert _report(decoy)["ok"]
    stale_public = (TYPES / "stale.ts").read_text().replace(
        "  graphql_public: {\n    Tables: {\n      [_ in never]: never\n    }",
        "  graphql_public: {\n    Tables: {\n      session_requests: {\n"
        "        Row: { preferred_mechanic_id: string | null; priority_window_minutes: number;\n"
        "               priority_notified_at: string | null }\n      }\n    }", 1)
    assert _report(stale_public)["sections"]["Row"]["missing"] == NEW_COLUMNS


def test_schema_without_the_table_is_stale_and_says_which_schemas_exist(tmp_path):
    result = cli("check-types", str(TYPES / "current.ts"), "--schema", "graphql_public", "--format", "json")
    assert result.exit_code == 1
    assert result.json()["notes"] == ["Database['graphql_public'].Tables has no table 'session_requests'"]
    result = cli("check-types", str(TYPES / "current.ts"), "--schema", "app", "--format", "json")
    assert result.exit_code == 1
    assert result.json()["notes"][0] == ("the file declares no schema 'app' (schemas: __InternalSupabase, "
                                         "graphql_public, public)")


def test_comments_quoted_keys_and_reordered_unions_read_as_the_generator_meant():
    text = CURRENT.replace(
        "          preferred_mechanic_id: string | null\n",
        '          /* a } brace and a "quote" in a comment\n             span lines */\n'
        '          "preferred_mechanic_id": null | string // trailing } comment\n', 1)
    text = text.replace("          priority_window_minutes?: number\n          session_type?: string\n",
                        "          'priority_window_minutes'?: (number)\n          session_type?: string\n", 1)
    assert text.count("null | string") == 1 and "'priority_window_minutes'" in text
    assert _report(text)["ok"]


def test_semicolons_and_an_interface_as_older_generators_wrote_it():
    text = (
        "export type Json = string | number | boolean | null | { [key: string]: Json } | Json[];\n"
        "export interface Database {\n  public: {\n    Tables: {\n      session_requests: {\n"
        "        Row: { id: string; preferred_mechanic_id: string | null; priority_window_minutes: number;\n"
        "               priority_notified_at: string | null; tags: Array<string> };\n"
        "        Insert: { preferred_mechanic_id?: string | null; priority_window_minutes?: number;"
        " priority_notified_at?: string | null };\n"
        "        Update: { preferred_mechanic_id?: string | null, priority_window_minutes?: number,"
        " priority_notified_at?: string | null, };\n"
        "      };\n    };\n    Views: {};\n    Functions: {};\n    Enums: {};\n  };\n}\n")
    assert _report(text)["ok"]


def test_a_member_on_the_next_line_is_not_taken_for_an_index_of_the_previous_type():
    database = parse_database("export type Database = {\n  a: string\n  [key: string]: number\n  b: Json[]\n}")
    assert database.members["a"].type.canonical() == "string"
    assert database.members["b"].type.canonical() == "Json[]"
    assert database.signatures == ("[key: string]: number",)


@pytest.mark.parametrize(("written", "canonical"), [
    ("null | string", "string | null"),
    ("| string\n | null", "string | null"),
    ("Array<string>", "string[]"),
    ("(string)[]", "string[]"),
    ("(string | null)[] | null", "(string | null)[] | null"),
    ("Database['public']['Enums']['status']", 'Database["public"]["Enums"]["status"]'),
    ("Record<string, unknown>", "Record<string, unknown>"),
    ("{ a?: number; 'b-c': string }", '{ a?: number; "b-c": string }'),
])
def test_canonical_types(written, canonical):
    assert canonical_type(written) == canonical


@pytest.mark.parametrize(("text", "message"), [
    ("const x = 1\n", "no `export type Database = {...}` in the file"),
    ("export type Database = {\n  public: {\n    Tables: {\n",
     "the object type opened at line 3, column 13 is never closed"),
    ("export type Database = {\n  public: string string\n}", "expected ';', ',', a new line or '}' after a member at "
     "line 2, column 18, found 'string'"),
    ('export type Database = { "public: {} }', "unterminated string at line 1, column 26"),
    ("export type Database = { /* public: {} }", "unterminated block comment at line 1, column 26"),
    ("export type Database = string", "Database at line 1, column 13 is not an object type"),
])
def test_unparseable_files_say_where(text, message):
    with pytest.raises(TypesFileError) as raised:
        parse_database(text)
    assert raised.value.message.startswith(message)


def test_tokens_carry_lines_across_multi_line_comments_and_strings():
    tokens = tokenize('/* one\n two */ a `x\ny` b\n"c"')
    assert [(t.text, t.line, t.column) for t in tokens[:4]] == [("a", 2, 9), ("x\ny", 2, 11), ("b", 3, 4), ("c", 4, 1)]


def test_unreadable_and_unparseable_files_exit_2(tmp_path):
    missing = cli("check-types", str(tmp_path / "nope.ts"))
    assert missing.exit_code == 2 and "cannot read the types file" in missing.stderr
    binary = tmp_path / "binary.ts"
    binary.write_bytes(b"\xff\xfe\x00export")
    assert cli("check-types", str(binary)).exit_code == 2
    broken = cli("check-types", _write(tmp_path, CURRENT[: len(CURRENT) // 3]))
    assert broken.exit_code == 2 and "never closed" in broken.stderr and broken.stdout == ""


def test_stdin_is_read_for_a_dash():
    result = cli("check-types", "-", "--format", "json", input=CURRENT)
    assert result.exit_code == 0 and result.json()["ok"]


# ---------------------------------------------------------------- --dsn: the live columns


def test_live_columns_before_and_after_apply(db_dsn):
    before = cli("check-types", str(TYPES / "stale.ts"), "--dsn", db_dsn, "--format", "json")
    assert before.exit_code == 0, before.stdout + before.stderr
    data = before.json()
    assert data["source"] == "database" and data["summary"]["pass"] == 3 * 11
    # the enum column is compared as a Database[...]["Enums"] reference
    status = next(c for c in data["checks"] if c["id"] == "types:session_requests.Row.status:declared")
    assert status["expected"] == 'status: Database["public"]["Enums"]["session_request_status"]'

    early = cli("check-types", str(TYPES / "current.ts"), "--dsn", db_dsn, "--format", "json")
    assert early.exit_code == 1
    assert early.json()["sections"]["Row"] == {"missing": [], "mistyped": [], "extra": sorted(NEW_COLUMNS)}

    assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0
    after = cli("check-types", str(TYPES / "current.ts"), "--dsn", db_dsn, "--format", "json")
    assert after.exit_code == 0, after.stdout
    assert cli("check-types", str(TYPES / "stale.ts"), "--dsn", db_dsn).exit_code == 1


def test_live_arrays_identities_and_generated_columns(conn, db_dsn, tmp_path):
    conn.execute("""
        CREATE TABLE public.gadgets (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            tags text[] NOT NULL DEFAULT '{}',
            statuses session_request_status[],
            price numeric(12,2),
            doubled numeric GENERATED ALWAYS AS (price * 2) STORED,
            happened interval
        )""")
    text = """export type Database = {
  public: {
    Tables: {
      gadgets: {
        Row: {
          doubled: number | null
          happened: unknown
          id: number
          price: number | null
          statuses: Database["public"]["Enums"]["session_request_status"][] | null
          tags: string[]
        }
        Insert: {
          doubled?: never
          happened?: unknown | null
          id?: never
          price?: number | null
          statuses?: Database["public"]["Enums"]["session_request_status"][] | null
          tags?: string[]
        }
        Update: {
          doubled?: never
          happened?: unknown | null
          id?: never
          price?: number | null
          statuses?: Database["public"]["Enums"]["session_request_status"][] | null
          tags: string[]
        }
      }
    }
  }
}
"""
    target = Target(dataclasses.replace(load_spec(), table="gadgets"))
    columns = live_columns(conn, target)
    report = check_types(text, target, columns).to_dict()
    assert report["sections"]["Update"]["mistyped"] == [
        {"field": "tags", "expected": "tags?: string[]", "actual": "tags: string[]"}]
    assert report["summary"]["fail"] == 1
    assert report["notes"] == ["types not compared, only presence and optionality: happened (interval)"]


ORDERS_SPEC = Path(__file__).parent / "specs" / "orders"
ORDERS_FIELDS = {
    "customer_id": "string | null", "quantity": "number | null", "warehouse_id": "number | null",
    "external_ref": "number | null", "total": "number", "gift": "boolean", "channel": "string | null",
    "shipped_at": "string | null", "due_on": "string | null",
}


def _orders_types(insert_optional: set[str]) -> str:
    def section(name: str, optional: set[str]) -> str:
        fields = "".join(f"          {field}{'?' if field in optional else ''}: {ts}\n"
                         for field, ts in ORDERS_FIELDS.items())
        return f"        {name}: {{\n          id: number\n{fields}        }}\n"

    return ("export type Database = {\n  public: {\n    Tables: {\n      orders: {\n"
            + section("Row", set()) + section("Insert", insert_optional) + section("Update", set(ORDERS_FIELDS))
            + "        Relationships: []\n      }\n    }\n  }\n}\n")


def test_another_spec_names_its_own_table_and_types(tmp_path):
    # the end state: total NOT NULL (after finalize) and required in Insert; gift defaulted, so optional
    optional = {name for name, ts in ORDERS_FIELDS.items() if ts.endswith("null")} | {"gift"}
    current = cli("--spec", str(ORDERS_SPEC), "check-types", _write(tmp_path, _orders_types(optional)),
                  "--format", "json")
    assert current.exit_code == 0, current.stdout + current.stderr
    assert current.json()["table"] == "orders" and current.json()["summary"]["pass"] == 27
    wrong = cli("--spec", str(ORDERS_SPEC), "check-types", _write(tmp_path, _orders_types(optional | {"total"})),
                "--format", "json")
    assert wrong.exit_code == 1
    assert wrong.json()["sections"]["Insert"]["mistyped"] == [
        {"field": "total", "expected": "total: number", "actual": "total?: number"}]


def test_dsn_without_the_table_exits_2(empty_db_dsn):
    result = cli("check-types", str(TYPES / "current.ts"), "--dsn", empty_db_dsn)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines()[0] == ("error: table public.session_requests does not exist (or the role may "
                                             "not see its columns)")
