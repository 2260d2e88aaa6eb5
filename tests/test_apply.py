"""plan -> apply -> verify on a real PostgreSQL: the lifecycle, each sabotage, convergence, locks."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from clihelp import cli

pytestmark = pytest.mark.db

SEED_ORIGINAL_SQL = """
ALTER TABLE public.session_requests ADD COLUMN IF NOT EXISTS preferred_mechanic_id UUID;
ALTER TABLE public.session_requests ADD COLUMN IF NOT EXISTS priority_window_minutes INTEGER DEFAULT 10;
ALTER TABLE public.session_requests ADD COLUMN IF NOT EXISTS priority_notified_at TIMESTAMPTZ;
ALTER TABLE public.session_requests ADD CONSTRAINT session_requests_preferred_mechanic_id_fkey
  FOREIGN KEY (preferred_mechanic_id) REFERENCES public.mechanics(id) ON DELETE SET NULL;
CREATE INDEX session_requests_preferred_mechanic_idx ON session_requests(preferred_mechanic_id)
  WHERE preferred_mechanic_id IS NOT NULL;
CREATE INDEX session_requests_priority_analytics_idx
  ON session_requests(preferred_mechanic_id, priority_notified_at, status) WHERE preferred_mechanic_id IS NOT NULL;
CREATE INDEX session_requests_priority_timeout_idx ON session_requests(priority_notified_at, status)
  WHERE priority_notified_at IS NOT NULL AND status = 'pending';
"""


def failed_ids(result) -> set[str]:
    return {c["id"] for c in result.json()["checks"] if c["status"] == "fail"}


def test_lifecycle_plan_apply_verify_apply_again(db_dsn):
    plan = cli("plan", "--dsn", db_dsn, "--format", "json")
    assert plan.exit_code == 1
    assert {o["state"] for o in plan.json()["objects"]} == {"missing"}
    assert [s["step"] for s in plan.json()["steps"]][:2] == ["add-columns", "add-fk-not-valid"]

    dry = cli("apply", "--dsn", db_dsn, "--dry-run")
    assert dry.exit_code == 0 and "CREATE INDEX CONCURRENTLY" in dry.stdout
    assert cli("plan", "--dsn", db_dsn, "--format", "json").exit_code == 1, "dry run changed something"

    applied = cli("apply", "--dsn", db_dsn, "--format", "json")
    assert applied.exit_code == 0, applied.stderr
    report = applied.json()
    assert report["ok"] and report["changed"] and report["verification"]["ok"]
    assert [s["outcome"] for s in report["steps"]] == ["applied"] * 8 and report["steps"][-1]["step"] == "analyze"

    verify = cli("verify", "--dsn", db_dsn, "--format", "json")
    assert verify.exit_code == 0, verify.stdout
    ids = {c["id"] for c in verify.json()["checks"]}
    assert "index:session_requests_priority_timeout_idx:valid" in ids
    assert "constraint:session_requests_preferred_mechanic_id_fkey:validated" in ids

    again = cli("apply", "--dsn", db_dsn)
    assert again.exit_code == 0 and "already applied" in again.stdout
    assert cli("plan", "--dsn", db_dsn, "--format", "json").exit_code == 0

    with psycopg.connect(db_dsn) as conn:
        recorded = conn.execute("SELECT step, outcome, checksum, duration_ms, db_user, tool_version "
                                "FROM favmigrate.history ORDER BY id").fetchall()
    assert [r[0] for r in recorded][:2] == ["add-columns", "add-fk-not-valid"]
    assert all(r[1] == "applied" and r[4] and r[5] for r in recorded)
    assert [r[0] for r in recorded if r[2] is None] == ["analyze"], "each spec step records its SQL's checksum"
    assert all(len(r[2]) == 64 for r in recorded if r[0] != "analyze")


SABOTAGES = {
    "dropped index": ("DROP INDEX session_requests_preferred_mechanic_idx",
                      "index:session_requests_preferred_mechanic_idx:exists"),
    "index with another predicate": (
        "DROP INDEX session_requests_priority_timeout_idx; CREATE INDEX session_requests_priority_timeout_idx "
        "ON session_requests (priority_notified_at, status) WHERE priority_notified_at IS NOT NULL",
        "index:session_requests_priority_timeout_idx:definition"),
    "invalid index": ("UPDATE pg_index SET indisvalid = false "
                      "WHERE indexrelid = 'session_requests_priority_analytics_idx'::regclass",
                      "index:session_requests_priority_analytics_idx:valid"),
    "fk not valid": (
        "ALTER TABLE session_requests DROP CONSTRAINT session_requests_preferred_mechanic_id_fkey; "
        "ALTER TABLE session_requests ADD CONSTRAINT session_requests_preferred_mechanic_id_fkey FOREIGN KEY "
        "(preferred_mechanic_id) REFERENCES mechanics(id) ON DELETE SET NULL NOT VALID",
        "constraint:session_requests_preferred_mechanic_id_fkey:validated"),
    "fk on delete cascade": (
        "ALTER TABLE session_requests DROP CONSTRAINT session_requests_preferred_mechanic_id_fkey; "
        "ALTER TABLE session_requests ADD CONSTRAINT session_requests_preferred_mechanic_id_fkey FOREIGN KEY "
        "(preferred_mechanic_id) REFERENCES mechanics(id) ON DELETE CASCADE",
        "constraint:session_requests_preferred_mechanic_id_fkey:definition"),
    "column of the wrong type": ("ALTER TABLE session_requests ALTER COLUMN priority_window_minutes TYPE bigint",
                                 "column:priority_window_minutes:type"),
    "missing default": ("ALTER TABLE session_requests ALTER COLUMN priority_window_minutes DROP DEFAULT",
                        "column:priority_window_minutes:default"),
    "missing comment": ("COMMENT ON COLUMN session_requests.priority_notified_at IS NULL",
                        "column:priority_notified_at:comment"),
}


@pytest.mark.parametrize("sabotage", SABOTAGES, ids=list(SABOTAGES))
def test_each_sabotage_fails_its_specific_check(db_dsn, sabotage):
    statement, check_id = SABOTAGES[sabotage]
    assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(statement)
    result = cli("verify", "--dsn", db_dsn, "--format", "json", "--no-data")
    assert result.exit_code == 1
    assert failed_ids(result) == {check_id}
    assert cli("plan", "--dsn", db_dsn, "--format", "json").exit_code == 1


def test_predicate_check_passes_when_status_is_text(db_dsn):
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("DROP INDEX session_requests_status_idx; "
                     "ALTER TABLE session_requests ALTER COLUMN status DROP DEFAULT, "
                     "ALTER COLUMN status TYPE text USING status::text, ALTER COLUMN status SET DEFAULT 'pending'")
    assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0
    assert cli("verify", "--dsn", db_dsn, "--no-data").exit_code == 0


def test_apply_repairs_an_invalid_index_and_refuses_a_different_one_unless_replace(db_dsn):
    assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("UPDATE pg_index SET indisvalid = false "
                     "WHERE indexrelid = 'session_requests_priority_analytics_idx'::regclass")
        before = conn.execute("SELECT 'session_requests_priority_analytics_idx'::regclass::oid").fetchone()[0]
    repaired = cli("apply", "--dsn", db_dsn, "--format", "json")
    assert repaired.exit_code == 0
    assert [s["step"] for s in repaired.json()["steps"]] == ["index-priority-analytics", "analyze"]
    assert "DROP INDEX CONCURRENTLY" in repaired.json()["steps"][0]["sql"]
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        after = conn.execute("SELECT 'session_requests_priority_analytics_idx'::regclass::oid").fetchone()[0]
        assert after != before
        conn.execute("DROP INDEX session_requests_priority_timeout_idx; CREATE INDEX "
                     "session_requests_priority_timeout_idx ON session_requests (priority_notified_at)")
    refused = cli("apply", "--dsn", db_dsn)
    assert refused.exit_code == 2
    assert "session_requests_priority_timeout_idx" in refused.stderr and "--replace" in refused.stderr
    assert cli("apply", "--dsn", db_dsn, "--replace", "-q").exit_code == 0
    assert cli("verify", "--dsn", db_dsn, "--no-data").exit_code == 0


def test_apply_converges_the_seed_sql_run_by_hand(db_dsn):
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(SEED_ORIGINAL_SQL)
        conn.execute("UPDATE session_requests SET priority_window_minutes = NULL WHERE created_at < now() - "
                     "interval '30 days'")
        nulls = conn.execute("SELECT count(*) FROM session_requests WHERE priority_window_minutes IS NULL"
                             ).fetchone()[0]
    assert nulls > 0
    before = cli("verify", "--dsn", db_dsn, "--format", "json", "--no-data")
    assert failed_ids(before) >= {"column:priority_window_minutes:nullable", "column:preferred_mechanic_id:comment"}
    result = cli("apply", "--dsn", db_dsn, "--format", "json", "--batch-size", "100")
    assert result.exit_code == 0, result.stderr
    steps = [s["step"] for s in result.json()["steps"]]
    assert steps == ["window-fill-nulls", "window-check-not-valid", "window-check-validate", "window-set-not-null",
                     "column-comments", "analyze"]
    assert f"{nulls} NULL windows" in result.json()["steps"][0]["detail"]
    assert cli("verify", "--dsn", db_dsn, "--no-data").exit_code == 0
    with psycopg.connect(db_dsn) as conn:
        leftover = conn.execute("SELECT count(*) FROM pg_constraint WHERE conname = "
                                "'session_requests_priority_window_not_null'").fetchone()[0]
    assert leftover == 0


def test_preflight_refuses_and_changes_nothing(db_dsn, empty_db_dsn):
    missing = cli("apply", "--dsn", empty_db_dsn)
    assert missing.exit_code == 2 and "public.session_requests and public.mechanics do not exist" in missing.stderr
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE session_requests ADD COLUMN priority_notified_at text")
    wrong_type = cli("apply", "--dsn", db_dsn)
    assert wrong_type.exit_code == 2
    assert "priority_notified_at has type text" in wrong_type.stderr and "Traceback" not in wrong_type.stderr
    with psycopg.connect(db_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = 'session_requests' "
                            "AND column_name = 'preferred_mechanic_id'").fetchone()[0] == 0
        assert conn.execute("SELECT to_regclass('favmigrate.history')").fetchone()[0] is None


def test_recorded_checksum_mismatch_refuses_unless_force(db_dsn):
    assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("UPDATE favmigrate.history SET checksum = repeat('0', 64) WHERE step = 'add-columns'")
    refused = cli("apply", "--dsn", db_dsn)
    assert refused.exit_code == 2 and "add-columns" in refused.stderr
    assert cli("apply", "--dsn", db_dsn, "--force").exit_code == 0


class Writer(threading.Thread):
    """A small-transaction writer recording each transaction's latency."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.latencies, self.stop = dsn, [], threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                started = time.monotonic()
                conn.execute("INSERT INTO session_requests (customer_id) VALUES (gen_random_uuid())")
                self.latencies.append(time.monotonic() - started)
                time.sleep(0.02)


def test_held_lock_apply_retries_then_exits_2_naming_the_blocker_without_stalling_writers(db_dsn):
    holder = psycopg.connect(db_dsn, application_name="long-report")
    holder.execute("LOCK TABLE session_requests IN ACCESS SHARE MODE")
    holder_pid = holder.info.backend_pid
    writer = Writer(db_dsn)
    writer.start()
    try:
        result = cli("apply", "--dsn", db_dsn, "--lock-timeout", "0.3", "--retries", "2")
    finally:
        writer.stop.set()
        writer.join()
        holder.close()
    assert result.exit_code == 2
    assert f"pid {holder_pid}" in result.stderr and "long-report" in result.stderr
    assert result.stderr.count("retry") >= 2
    assert len(writer.latencies) > 10
    assert max(writer.latencies) < 0.3 + 0.4, "a writer queued behind apply longer than about one lock_timeout"
    assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0, "apply continues once the lock is gone"


def test_second_run_waits_for_the_advisory_lock_then_names_the_holder(db_dsn):
    from favmigrate.db import advisory_key
    from favmigrate.spec import Target, load_spec

    with psycopg.connect(db_dsn, autocommit=True, application_name="other-favmigrate") as other:
        other.execute("SELECT pg_advisory_lock(%s)", (advisory_key(Target(load_spec()).lock_name),))
        result = cli("apply", "--dsn", db_dsn, "--lock-wait", "0.5")
        assert result.exit_code == 2
        assert f"pid {other.info.backend_pid}" in result.stderr and "other-favmigrate" in result.stderr


def test_statement_timeout_overrides_the_role_default(db_dsn):
    """Supabase roles carry a statement_timeout; one that kills an index build leaves an INVALID index."""
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        dbname = conn.info.dbname
        conn.execute(f'ALTER ROLE current_user IN DATABASE "{dbname}" SET statement_timeout = \'1ms\'')
    try:
        with psycopg.connect(db_dsn) as conn:
            assert conn.execute("SHOW statement_timeout").fetchone()[0] == "1ms"
        result = cli("apply", "--dsn", db_dsn, "-q")
        assert result.exit_code == 0, result.stderr
    finally:
        with psycopg.connect(db_dsn, autocommit=True, options="-c statement_timeout=0") as conn:
            conn.execute(f'ALTER ROLE current_user IN DATABASE "{dbname}" RESET statement_timeout')


def test_junit_file_has_one_testcase_per_check(db_dsn, tmp_path: Path):
    junit = tmp_path / "verify.xml"
    result = cli("verify", "--dsn", db_dsn, "--junit", str(junit), "--no-data")
    assert result.exit_code == 1
    from xml.etree import ElementTree

    suite = ElementTree.parse(junit).getroot()
    cases = suite.findall("testcase")
    assert len(cases) == int(suite.get("tests")) > 20
    assert int(suite.get("failures")) == sum(1 for c in cases if c.find("failure") is not None) > 0


def test_ctrl_c_during_a_concurrent_build_exits_3_and_the_next_apply_repairs(db_dsn):
    import os
    import signal
    import subprocess
    import sys

    # an open REPEATABLE READ transaction keeps its snapshot: CREATE INDEX CONCURRENTLY must wait for it
    holder = psycopg.connect(db_dsn)
    holder.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    holder.execute("SELECT count(*) FROM mechanics")
    apply = subprocess.Popen([sys.executable, "-m", "favmigrate.cli", "apply", "--dsn", db_dsn],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "FAVMIGRATE_DSN": ""})
    try:
        with psycopg.connect(db_dsn, autocommit=True) as watcher:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                waiting = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'CREATE INDEX CONCURRENTLY%' "
                    "AND wait_event_type IS NOT NULL AND application_name = 'favmigrate'").fetchone()[0]
                if waiting:
                    break
                time.sleep(0.1)
            assert waiting, "apply never reached the concurrent index build"
        apply.send_signal(signal.SIGINT)
        _, stderr = apply.communicate(timeout=30)
    finally:
        apply.kill()
        holder.close()
    assert apply.returncode == 3, stderr
    assert "Traceback" not in stderr
    leftover = cli("verify", "--dsn", db_dsn, "--format", "json", "--no-data")
    assert "index:session_requests_preferred_mechanic_idx:valid" in failed_ids(leftover)
    repaired = cli("apply", "--dsn", db_dsn, "--format", "json")
    assert repaired.exit_code == 0, repaired.stderr
    assert repaired.json()["steps"][0]["detail"].startswith("rebuilt")
    assert cli("verify", "--dsn", db_dsn, "--no-data").exit_code == 0


def test_verify_takes_no_lock_stronger_than_access_share(db_dsn):
    """EXCLUSIVE mode admits only ACCESS SHARE: verify (data checks included) must still finish."""
    assert cli("apply", "--dsn", db_dsn, "-q").exit_code == 0
    with psycopg.connect(db_dsn) as holder:
        holder.execute("LOCK TABLE session_requests, mechanics IN EXCLUSIVE MODE")
        holder.execute("SET statement_timeout = 0")
        # a lock verify had to wait for would time out, and verify would not exit 0
        result = cli("verify", "--dsn", db_dsn, "--format", "json",
                     env={"PGOPTIONS": "-c lock_timeout=3000"})
    assert result.exit_code == 0, result.stdout
    assert any(c["id"] == "data:preferred_mechanic_id:orphans" for c in result.json()["checks"])


def test_a_lock_timeout_after_the_columns_were_added_exits_3_with_what_was_done(db_dsn):
    """Exit 2 promises that nothing changed: once add-columns ran, a later step's lock timeout is exit 3."""
    holder = psycopg.connect(db_dsn, application_name="mechanics-editor")
    holder.execute("LOCK TABLE mechanics IN ROW EXCLUSIVE MODE")  # add-fk-not-valid needs SHARE ROW EXCLUSIVE
    try:
        result = cli("apply", "--dsn", db_dsn, "--format", "json", "--lock-timeout", "0.1", "--retries", "1")
    finally:
        holder.close()
    assert result.exit_code == 3, result.stderr
    report = result.json()
    assert [(s["step"], s["outcome"]) for s in report["steps"]] == [("add-columns", "applied"),
                                                                  ("add-fk-not-valid", "interrupted")]
    assert "mechanics-editor" in report["steps"][1]["detail"]
    assert "Done in this run: add-columns" in report["notes"][0] and "Re-run `favmigrate apply`" in report["notes"][0]
    resumed = cli("apply", "--dsn", db_dsn, "--format", "json")
    assert resumed.exit_code == 0, resumed.stderr
    assert resumed.json()["steps"][0]["step"] == "add-fk-not-valid"


def test_a_lock_timeout_before_any_change_exits_2(db_dsn):
    holder = psycopg.connect(db_dsn)
    holder.execute("LOCK TABLE session_requests IN ACCESS SHARE MODE")
    try:
        result = cli("apply", "--dsn", db_dsn, "--lock-timeout", "0.1", "--retries", "0")
    finally:
        holder.close()
    assert result.exit_code == 2, result.stderr
    assert cli("plan", "--dsn", db_dsn, "--format", "json").json()["steps"][0]["step"] == "add-columns"


def unsampled_columns(conn: psycopg.Connection) -> set[str]:
    found = conn.execute("SELECT attname FROM pg_stats WHERE tablename = 'session_requests' AND attname = ANY(%s)",
                         (["preferred_mechanic_id", "priority_window_minutes", "priority_notified_at"],)).fetchall()
    return {"preferred_mechanic_id", "priority_window_minutes", "priority_notified_at"} - {row[0] for row in found}


def test_an_interrupted_final_analyze_is_run_by_the_next_apply(db_dsn):
    from favmigrate.apply import apply_migration
    from favmigrate.spec import Target, load_spec

    def stop_at_analyze(event):
        if event.kind.value == "step-start" and event.step == "analyze":
            raise KeyboardInterrupt

    with psycopg.connect(db_dsn, autocommit=True) as conn:
        stopped = apply_migration(conn, Target(load_spec()), on_event=stop_at_analyze)
        assert int(stopped.exit_code) == 3 and stopped.steps[-1].step == "analyze"
        assert len(unsampled_columns(conn)) == 3
        history = conn.execute("SELECT outcome FROM favmigrate.history WHERE step = 'analyze'").fetchall()
        assert history == [("interrupted",)]

        again = cli("apply", "--dsn", db_dsn, "--format", "json")
        assert again.exit_code == 0, again.stderr
        assert [(s["step"], s["outcome"]) for s in again.json()["steps"]] == [("analyze", "applied")]
        assert unsampled_columns(conn) == set()
        third = cli("apply", "--dsn", db_dsn, "--format", "json")
        assert third.json()["steps"] == [] and "already applied" in third.json()["notes"][0]


def test_a_concurrent_build_waiting_for_an_older_transaction_names_it_while_it_waits(db_dsn):
    from favmigrate.apply import ApplyOptions, apply_migration
    from favmigrate.runner import EventKind
    from favmigrate.spec import Target, load_spec

    # a REPEATABLE READ snapshot taken on another table: every concurrent build waits for it to end
    holder = psycopg.connect(db_dsn, application_name="nightly-export")
    holder.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    holder.execute("SELECT count(*) FROM mechanics WHERE id::text <> 'password=hunter2'")
    holder_pid = holder.info.backend_pid
    waiting: list = []
    outcome: list = []

    def note(event):
        if event.kind is EventKind.WAITING:
            waiting.append(event)
            if len(waiting) == 2:
                holder.close()  # the second report proves they repeat; now let the build finish

    def run_apply():
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            outcome.append(apply_migration(conn, Target(load_spec()), ApplyOptions(wait_report_s=0.5),
                                           on_event=note))

    thread = threading.Thread(target=run_apply)
    thread.start()
    thread.join(timeout=60)
    holder.close()
    thread.join(timeout=60)
    assert outcome and outcome[0].ok, outcome
    assert len(waiting) >= 2 and waiting[0].step.startswith("index-")
    message = waiting[0].message
    assert f"pid {holder_pid}" in message and "nightly-export" in message
    assert "in transaction for" in message and "every older transaction" in message
    assert "hunter2" not in message, "other sessions' statements are shown with their literals masked"


def test_apply_verifies_as_verify_does_and_a_second_run_prints_no_empty_table(db_dsn):
    applied = cli("apply", "--dsn", db_dsn, "--format", "json", "-q")
    assert applied.exit_code == 0, applied.stderr
    verify = cli("verify", "--dsn", db_dsn, "--format", "json")
    assert verify.exit_code == 0, verify.stderr
    expected = verify.json()
    assert expected["summary"]["warn"] >= 1, "the sample's legacy metadata waits for backfill: a warning"
    for report in (applied.json(), cli("apply", "--dsn", db_dsn, "--format", "json").json()):
        assert report["verification"]["summary"] == expected["summary"]
        assert [c["id"] for c in report["verification"]["checks"]] == [c["id"] for c in expected["checks"]]
    again = cli("apply", "--dsn", db_dsn)
    assert again.exit_code == 0, again.stderr
    assert "already applied" in again.stdout
    assert "outcome" not in again.stdout and "lock retries" not in again.stdout, "no empty step table"
    assert "data:metadata:backfill-pending" in again.stdout, "the warning verify shows is shown"
