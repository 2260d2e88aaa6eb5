"""flag status|enable|disable: the application's feature flag, switched on only once the migration verifies."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from test_privileges import as_role, make_role  # noqa: F401  (make_role is a fixture)

from clihelp import cli
from favmigrate.resources import verify_dir
from favmigrate.spec import SpecError, load_spec, parse_spec

KEY = "ENABLE_FAVORITES_PRIORITY"
ORDERS_SPEC = Path(__file__).parent / "specs" / "orders"


def _flag_rows(conn: psycopg.Connection, key: str = KEY) -> list[tuple]:
    return conn.execute("SELECT is_enabled, flag_name, updated_at FROM public.feature_flags WHERE flag_key = %s",
                        (key,)).fetchall()


def _flag_history(conn: psycopg.Connection) -> list[tuple[str, str, str]]:
    if conn.execute("SELECT to_regclass('favmigrate.history')").fetchone()[0] is None:
        return []
    return conn.execute("SELECT command, step, detail FROM favmigrate.history WHERE command = 'flag' "
                        "ORDER BY id").fetchall()


def test_status_shows_the_row_and_its_rollout_columns(db_dsn):
    result = cli("flag", "status", "--dsn", db_dsn, "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["table"] == "public.feature_flags" and data["key"] == KEY
    assert data["flag"]["exists"] is True and data["flag"]["enabled"] is False
    assert data["flag"]["updated_at"] is not None
    assert data["flag"]["rollout"] == {"enabled_for_roles": ["customer"], "rollout_percentage": 0}
    assert data["changed"] is False
    text = cli("flag", "status", "--dsn", db_dsn)
    assert "enabled\toff" in text.stdout and "rollout_percentage\t0" in text.stdout


def test_enable_refuses_before_the_migration_and_force_records_what_it_overrode(db_dsn, conn):
    refused = cli("flag", "enable", "--dsn", db_dsn, "--format", "json")
    assert refused.exit_code == 1, refused.stderr
    data = refused.json()
    assert data["refused"] and not data["changed"] and data["flag"]["enabled"] is False
    failing = {check["id"] for check in data["failing_checks"]}
    assert "column:preferred_mechanic_id:exists" in failing
    assert all(check["status"] == "fail" for check in data["failing_checks"])
    assert _flag_rows(conn)[0][0] is False and _flag_history(conn) == []
    text = cli("flag", "enable", "--dsn", db_dsn)
    assert text.exit_code == 1 and "enable refused" in text.stdout
    assert "column:preferred_mechanic_id:exists" in text.stdout

    forced = cli("flag", "enable", "--force", "--dsn", db_dsn, "--format", "json")
    assert forced.exit_code == 0, forced.stderr
    assert forced.json()["forced"] and forced.json()["flag"]["enabled"] is True
    assert _flag_rows(conn)[0][0] is True
    [(command, step, detail)] = _flag_history(conn)
    assert (command, step) == ("flag", "flag-enable")
    assert detail.startswith(f"{KEY}: off -> on (--force past ") and "column:preferred_mechanic_id:exists" in detail


def test_enable_after_apply_and_require_backfill_waits_for_the_backfill(db_dsn, conn):
    assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0
    before = _flag_rows(conn)[0][2]
    waiting = cli("flag", "enable", "--require-backfill", "--dsn", db_dsn, "--format", "json")
    assert waiting.exit_code == 1
    assert [c["id"] for c in waiting.json()["failing_checks"]] == ["data:metadata:backfill-pending"]
    assert _flag_rows(conn)[0][0] is False

    enabled = cli("flag", "enable", "--dsn", db_dsn, "--format", "json")
    assert enabled.exit_code == 0, enabled.stderr
    data = enabled.json()
    assert data["changed"] and not data["forced"] and data["before"]["enabled"] is False
    assert data["flag"]["enabled"] is True
    is_enabled, _, updated_at = _flag_rows(conn)[0]
    assert is_enabled is True and updated_at > before

    again = cli("flag", "enable", "--dsn", db_dsn, "--format", "json")
    assert again.exit_code == 0 and not again.json()["changed"]
    assert f"{KEY} was already on: nothing changed" in again.json()["notes"]

    assert cli("backfill", "--dsn", db_dsn, "-q").exit_code == 0
    assert cli("flag", "disable", "--dsn", db_dsn).exit_code == 0
    assert cli("flag", "enable", "--require-backfill", "--dsn", db_dsn).exit_code == 0
    assert [step for _, step, _ in _flag_history(conn)] == ["flag-enable", "flag-disable", "flag-enable"]
    assert [detail for _, _, detail in _flag_history(conn)] == [f"{KEY}: off -> on", f"{KEY}: on -> off",
                                                                f"{KEY}: off -> on"]
    history = cli("history", "--dsn", db_dsn, "--format", "json").json()
    assert [run["command"] for run in history["runs"][:3]] == ["flag", "flag", "flag"]


def test_a_missing_row_is_created_disabled_with_required_text_filled_from_the_key(db_dsn, conn):
    # the real table: flag_name text NOT NULL without a default, row level security enabled
    conn.execute("ALTER TABLE public.feature_flags ENABLE ROW LEVEL SECURITY")
    conn.execute("DELETE FROM public.feature_flags")
    status = cli("flag", "status", "--dsn", db_dsn, "--format", "json")
    assert status.exit_code == 0 and status.json()["flag"]["exists"] is False
    assert "the application reads the flag as off" in status.json()["notes"][0]

    created = cli("flag", "disable", "--dsn", db_dsn, "--format", "json")
    assert created.exit_code == 0, created.stderr
    data = created.json()
    assert data["created"] and data["changed"] and data["filled"] == {"flag_name": KEY}
    assert f"created the row with flag_name = '{KEY}' (required, no default: filled from the key)" in data["notes"]
    assert [(enabled, name) for enabled, name, _ in _flag_rows(conn)] == [(False, KEY)]
    assert _flag_history(conn) == [("flag", "flag-disable", f"{KEY}: missing -> off")]

    other = cli("flag", "enable", "--flag", "OTHER_FLAG", "--force", "--dsn", db_dsn, "--format", "json")
    assert other.exit_code == 0 and other.json()["created"] and other.json()["flag"]["enabled"] is True
    assert [(enabled, name) for enabled, name, _ in _flag_rows(conn, "OTHER_FLAG")] == [(True, "OTHER_FLAG")]


def test_a_required_column_that_cannot_be_filled_is_named(db_dsn, conn):
    conn.execute("ALTER TABLE public.feature_flags ADD COLUMN team_id integer NOT NULL DEFAULT 1")
    conn.execute("ALTER TABLE public.feature_flags ALTER COLUMN team_id DROP DEFAULT")
    conn.execute("DELETE FROM public.feature_flags")
    result = cli("flag", "disable", "--dsn", db_dsn)
    assert result.exit_code == 2
    assert ("error: cannot create the flag row 'ENABLE_FAVORITES_PRIORITY': column team_id (integer) of "
            "public.feature_flags is NOT NULL without a default; nothing was changed") in result.stderr
    assert _flag_rows(conn) == [] and _flag_history(conn) == []


def test_without_a_unique_key_the_row_is_created_once(db_dsn, conn):
    conn.execute("ALTER TABLE public.feature_flags DROP CONSTRAINT feature_flags_flag_key_key")
    for _ in range(2):
        assert cli("flag", "disable", "--flag", "NEW_FLAG", "--dsn", db_dsn).exit_code == 0
    assert len(_flag_rows(conn, "NEW_FLAG")) == 1


def test_row_level_security_for_the_role_is_refused(db_dsn, conn, make_role):  # noqa: F811
    app = make_role("app")
    conn.execute("ALTER TABLE public.feature_flags ENABLE ROW LEVEL SECURITY")
    conn.execute(sql.SQL("GRANT ALL ON public.feature_flags TO {}").format(sql.Identifier(app)))
    conn.execute(sql.SQL("GRANT ALL ON SCHEMA public TO {}").format(sql.Identifier(app)))
    result = cli("flag", "disable", "--dsn", as_role(db_dsn, app))
    assert result.exit_code == 2
    assert f"row level security on public.feature_flags applies to role {app}" in result.stderr
    status = cli("flag", "status", "--dsn", as_role(db_dsn, app), "--format", "json")
    assert status.exit_code == 0 and status.json()["flag"]["exists"] is False
    assert any("row level security" in note for note in status.json()["notes"])


@pytest.mark.parametrize(("ddl", "message"), [
    ("DROP TABLE public.feature_flags",
     "error: table public.feature_flags (the spec's [flag] table) does not exist; nothing was changed"),
    ("ALTER TABLE public.feature_flags RENAME COLUMN is_enabled TO enabled",
     "error: table public.feature_flags has no column is_enabled (the spec's [flag] enabled_column)"),
    ("ALTER TABLE public.feature_flags ALTER COLUMN is_enabled TYPE text",
     "error: column is_enabled of public.feature_flags is text, not boolean"),
])
def test_a_missing_table_or_column_is_one_line_and_exit_2(db_dsn, conn, ddl, message):
    conn.execute(ddl)
    for action in ("status", "disable"):
        result = cli("flag", action, "--dsn", db_dsn)
        assert result.exit_code == 2 and result.stdout == ""
        assert result.stderr.splitlines()[0].startswith(message)


def test_a_spec_without_a_flag_table_says_so():
    result = cli("--spec", str(ORDERS_SPEC), "flag", "status", "--dsn", "postgresql://u@127.0.0.1:1/x")
    assert result.exit_code == 2
    assert "error: the migration spec orders_promotion declares no [flag] table" in result.stderr


def test_the_flag_table_of_the_spec():
    flag = load_spec().flag
    assert flag is not None
    assert (flag.table, flag.key_column, flag.enabled_column, flag.key) == (
        "feature_flags", "flag_key", "is_enabled", KEY)
    text = verify_dir().joinpath("migration.toml").read_text()
    without = text[: text.index("[flag]")]
    assert parse_spec(without).flag is None
    with pytest.raises(SpecError, match=r"flag.key: missing \(required\)"):
        parse_spec(without + '[flag]\ntable = "t"\nkey_column = "k"\nenabled_column = "e"\n')
    with pytest.raises(SpecError, match=r"flag.colour: unknown key"):
        parse_spec(without + '[flag]\ntable = "t"\nkey_column = "k"\nenabled_column = "e"\nkey = "K"\n'
                   'colour = "red"\n')
