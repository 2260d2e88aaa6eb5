"""A spec of many columns: backfill's statements and its summary hold any number of them."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from clihelp import cli
from favmigrate.spec import MAX_COLUMNS

pytestmark = pytest.mark.db

WIDTH = 60  # past jsonb_build_object's 100 arguments (50 pairs)


def wide_spec(folder: Path, width: int) -> Path:
    columns = "".join(f'\n[[columns]]\nname = "c{n}"\ntype = "integer"\nlegacy_key = "k{n}"\n' for n in range(width))
    (folder / "migration.toml").write_text(
        '[migration]\nid = "wide"\ndescription = "many keys"\ntable = "wide"\nprimary_key = "id"\n'
        f'metadata_column = "data"\n{columns}')
    return folder


def test_a_spec_of_60_columns_applies_and_its_dry_run_counts_each(empty_db_dsn, tmp_path):
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE wide (id bigint PRIMARY KEY, data jsonb)")
        with conn.cursor() as cur:
            # row r carries keys k0 .. k{r}: column c{n} has WIDTH - n values, one of them bad in c59
            cur.executemany("INSERT INTO wide VALUES (%s, %s)",
                            [(r, Jsonb({f"k{n}": n for n in range(r + 1)})) for r in range(WIDTH)])
            cur.execute("INSERT INTO wide VALUES (%s, %s)", (WIDTH, Jsonb({"k59": "bad"})))
    spec = str(wide_spec(tmp_path, WIDTH))
    applied = cli("--spec", spec, "apply", "--dsn", empty_db_dsn, "--format", "json")
    assert applied.exit_code == 0, applied.stderr
    dry = cli("--spec", spec, "backfill", "--dsn", empty_db_dsn, "--dry-run", "--format", "json")
    assert dry.exit_code == 0, dry.stderr
    report = dry.json()
    assert report["rows_updated"] == WIDTH, report
    assert report["updated"] == {f"c{n}": WIDTH - n for n in range(WIDTH)}
    assert {reason: n for reason, n in report["rejected"].items() if n} == {"invalid_integer": 1}

    filled = cli("--spec", spec, "backfill", "--dsn", empty_db_dsn, "--format", "json")
    assert filled.exit_code == 0, filled.stderr
    assert filled.json()["updated"] == report["updated"], "the dry run counts what the real run does"
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        conn.execute("UPDATE wide SET data = '{}' WHERE id = %s", (WIDTH - 1,))
    rolled_back = cli("--spec", spec, "rollback", "--dsn", empty_db_dsn, "--yes", "--format", "json")
    assert rolled_back.exit_code == 0, rolled_back.stderr
    with psycopg.connect(empty_db_dsn) as conn:
        assert conn.execute("SELECT data FROM wide WHERE id = %s", (WIDTH - 1,)).fetchone() == (
            {f"k{n}": n for n in range(WIDTH)},), "every key is written back"


def test_the_widest_spec_dry_runs_and_one_more_column_is_refused(empty_db_dsn, tmp_path):
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE wide (id bigint PRIMARY KEY, data jsonb)")
        conn.execute("INSERT INTO wide SELECT 1, jsonb_object_agg('k' || n, n) FROM generate_series(0, %s - 1) AS n",
                     (MAX_COLUMNS,))
    spec = str(wide_spec(tmp_path, MAX_COLUMNS))
    assert cli("--spec", spec, "apply", "--dsn", empty_db_dsn).exit_code == 0
    dry = cli("--spec", spec, "backfill", "--dsn", empty_db_dsn, "--dry-run", "--format", "json")
    assert dry.exit_code == 0, dry.stderr
    assert dry.json()["updated"] == {f"c{n}": 1 for n in range(MAX_COLUMNS)}

    too_wide = cli("--spec", str(wide_spec(tmp_path, MAX_COLUMNS + 1)), "plan", "--dsn", empty_db_dsn)
    assert too_wide.exit_code == 2
    assert f"a migration takes at most {MAX_COLUMNS}" in too_wide.stderr
