"""render: plain tables when piped, tables that fit a terminal, huge values clipped. No database."""

from __future__ import annotations

import io
import json
import re
from types import SimpleNamespace
from typing import Any

from rich.console import Console

from favmigrate.render import ProgressEvents, clip, clip_strings, live_progress, print_json, print_table

ID = "0b6f5d1c-3a9e-4c61-9d8e-5f2a7b1c44e1"


def piped() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=40, soft_wrap=True), out


def terminal(width: int) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=width, force_terminal=True, color_system=None), out


def test_piped_table_is_one_tab_separated_line_per_row_never_wrapped():
    console, out = piped()
    message = "a message far longer than the forty columns of this console, kept on its line"
    print_table(console, "verify", ("check", "status", "count", "message"),
                [(ID, "fail", 12_345, message), ("x", "pass", None, "two\nlines\tand a tab")], status_column=1)
    assert out.getvalue().splitlines() == [
        "verify",
        "check\tstatus\tcount\tmessage",
        f"{ID}\tfail\t12345\t{message}",
        "x\tpass\t\ttwo lines and a tab",
    ]


def test_terminal_table_fits_the_width_keeps_ids_whole_and_drops_empty_columns():
    console, out = terminal(80)
    words = "free text wraps onto several lines instead of the identifier being cut " * 2
    print_table(console, "t", ("id", "empty", "count", "note"), [(ID, None, 1234567, words), (ID, "", 1, "x")],
                wrap=("note",))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    assert sum(ID in line for line in lines) == 2  # whole, once per row
    assert "┃ id" in out.getvalue() and "empty" not in out.getvalue()
    assert "1,234,567" in out.getvalue() and sum("free text" in line for line in lines) == 2
    assert "│         1 │" in out.getvalue()  # counts are right-aligned


def test_too_narrow_a_terminal_gets_one_record_per_row_with_ids_whole():
    console, out = terminal(50)
    print_table(console, "verify", ("check", "status", "expected", "message"),
                [(f"index:{ID}:valid", "fail", "valid, ready, live", ""), ("x", "pass", "", "")],
                status_column=1, wrap=("expected", "message"))
    assert out.getvalue().splitlines() == [
        "verify", f"index:{ID}:valid fail", "  expected: valid, ready, live", "x pass"]


def test_markup_in_a_cell_is_shown_as_text():
    console, out = terminal(80)
    print_table(console, "t", ("value",), [("[bold]x[/bold]",)])
    assert "[bold]x[/bold]" in out.getvalue()


def test_huge_values_are_clipped_with_their_size():
    huge = "x" * 10_000_000
    assert clip("short") == "short"
    clipped = clip(huge)
    assert clipped.startswith("x" * 200 + "…") and clipped.endswith("(cut, 10.0 MB in all)") and len(clipped) < 300
    console, out = piped()
    print_table(console, "conflicts", ("row", "metadata value"), [(ID, json.dumps(huge))])
    assert len(out.getvalue()) < 400 and "10.0 MB in all" in out.getvalue()
    assert clip_strings({"a": [huge, 1, None], "b": "ok"}) == {"a": [clip(huge, 4096), 1, None], "b": "ok"}


def test_json_output_clips_huge_strings(capsys):
    print_json({"conflicts": [{"metadata_value": "é" * 5_000_000}]})
    data = json.loads(capsys.readouterr().out)
    value = data["conflicts"][0]["metadata_value"]
    assert value.startswith("é" * 4096 + "…") and value.endswith("(cut, 10.0 MB in all)")


def test_a_step_without_counts_is_a_spinner_with_its_name_and_elapsed_time_never_0_of_unknown():
    now = [100.0]
    console, out = terminal(100)
    progress = live_progress(console, get_time=lambda: now[0])
    ddl = progress.add_task("add-columns", total=None, extra="")
    now[0] += 75
    console.print(progress.make_tasks_table([progress.tasks[ddl]]))
    line = out.getvalue()
    assert "add-columns" in line and "1m 15s" in line
    assert "0/?" not in line and "?" not in line and "ETA" not in line


def test_a_step_with_counts_shows_thousands_separated_counts_and_an_eta():
    now = [0.0]
    console, out = terminal(120)
    progress = live_progress(console, get_time=lambda: now[0])
    task = progress.add_task("preserve-metadata", total=1_200_000, extra="")
    for done in (0, 300_000, 600_000):
        progress.update(task, completed=done)
        now[0] += 30
    console.print(progress.make_tasks_table([progress.tasks[task]]))
    assert "600,000/1,200,000" in out.getvalue() and "ETA 1m 00s" in out.getvalue()
    count_only = progress.add_task("survey", total=None, extra="")
    progress.update(count_only, completed=12_345)
    console.print(progress.make_tasks_table([progress.tasks[count_only]]))
    assert "12,345" in out.getvalue() and "12,345/" not in out.getvalue()


def event(kind: str, step: str = "", message: str = "", done: int | None = None) -> Any:
    return SimpleNamespace(kind=SimpleNamespace(value=kind), step=step, message=message, done=done, total=None)


def test_step_messages_are_whole_lines_above_the_live_display():
    console, out = terminal(100)
    with ProgressEvents(console=console) as events:
        events(event("step-start", "index-priority-timeout", "index does not exist"))
        events(event("retry", "index-priority-timeout", "lock timeout, retry 1 of 10 in 0.5s"))
        events(event("step-done", "index-priority-timeout", "built concurrently in 1.20s"))
        events(event("warning", message="a [bold] message stays text"))
    lines = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue()).replace("\r", "\n").splitlines()
    for text in ("> index-priority-timeout: index does not exist",
                 "… index-priority-timeout: lock timeout, retry 1 of 10 in 0.5s",
                 "✓ index-priority-timeout: built concurrently in 1.20s",
                 "warning: a [bold] message stays text"):
        assert text in [line.rstrip() for line in lines], (text, lines)


def test_piped_progress_is_plain_lines_and_quiet_keeps_warnings():
    console, out = piped()
    with ProgressEvents(console=console) as events:
        events(event("step-start", "add-columns", "column preferred_mechanic_id does not exist"))
        events(event("progress", "survey", "", done=5))
        events(event("step-done", "add-columns", "applied in 0.01s"))
    assert out.getvalue() == ("> add-columns: column preferred_mechanic_id does not exist\n"
                              "✓ add-columns: applied in 0.01s\n")
    console, out = piped()
    with ProgressEvents(console=console, quiet=True) as events:
        events(event("step-start", "add-columns", "x"))
        events(event("warning", message="careful"))
    assert out.getvalue() == "warning: careful\n"


def test_plural_counts():
    from favmigrate.results import plural

    assert [plural(0, "row"), plural(1, "row"), plural(1234, "row"), plural(2, "index", "indexes")] == [
        "0 rows", "1 row", "1,234 rows", "2 indexes"]


def test_plan_numbers_read_as_numbers_on_postgresql_18():
    from favmigrate.render import plan_tree

    document = {"Plan": {"Node Type": "Index Scan", "Index Name": "i", "Relation Name": "t", "Actual Rows": 31.0,
                         "Actual Loops": 1, "Actual Total Time": 0.0312, "Plans": [
                             {"Node Type": "Seq Scan", "Relation Name": "u", "Actual Rows": 0.5, "Actual Loops": 2,
                              "Actual Total Time": 12.0}]},
                "Planning Time": 0.1, "Execution Time": 0.25}
    lines = plan_tree(document)
    assert lines[0].startswith("Index Scan using i on t (actual rows=31 loops=1 time=0.031 ms")
    assert "(actual rows=0.50 loops=2 time=12 ms" in lines[1]
    assert lines[-2:] == ["Planning Time: 0.100 ms", "Execution Time: 0.250 ms"]


def test_blockers_without_a_user_read_as_prose():
    from favmigrate.db import describe_blockers

    text = describe_blockers([{"pid": 7, "user": None, "application_name": "", "transaction_age": None,
                               "state": None, "query": ""}])
    assert text == "pid 7 (a background process, no user) app - in transaction for ?"
    assert "None" not in text
