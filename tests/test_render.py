"""render: plain tables when piped, tables that fit a terminal, huge values clipped. No database."""

from __future__ import annotations

import io
import json

from rich.console import Console

from favmigrate.render import clip, clip_strings, print_json, print_table

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
    console, out = terminal(70)
    words = "free text wraps onto several lines instead of the identifier being cut " * 2
    print_table(console, "t", ("id", "empty", "count", "note"), [(ID, None, 1234567, words), (ID, "", 1, "x")],
                wrap=("note",))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 70
    assert sum(ID in line for line in lines) == 2  # whole, once per row
    assert "empty" not in out.getvalue()
    assert "1,234,567" in out.getvalue()


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
