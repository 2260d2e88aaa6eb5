"""The only module that imports rich: tables, progress, JSON and JUnit, all rendered from ``to_dict()``.

stdout carries only the requested format; progress, warnings and errors go to stderr.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from rich.console import Console
from rich.text import Text

from favmigrate.results import plural, size_text
from favmigrate.script import LINE_BREAKS, sql_script

STATUS_STYLE = {
    "pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim",
    "present": "green", "missing": "bold red", "drifted": "bold red",
    "applied": "green", "skipped": "dim", "would-apply": "cyan", "failed": "bold red", "interrupted": "yellow",
}


CELL_LIMIT = 200  # characters of one table cell; a longer value is cut and its size shown
JSON_STRING_LIMIT = 4_096  # characters of one string in JSON output


def stdout_console() -> Console:
    """stdout: tables and colour on a terminal; piped, plain lines that are never wrapped."""
    console = Console()
    if not console.is_terminal:
        console.soft_wrap = True
    return console


def stderr_console() -> Console:
    return Console(stderr=True, soft_wrap=True)


def print_error(message: str, *, hint: str | None = None, details: Sequence[str] = ()) -> None:
    """An error on stderr: ``error: message`` (the message is text, never markup: ``[flag]`` stays), its
    detail lines and a hint."""
    console = stderr_console()
    console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)
    for line in details:
        console.print(f"  {line}", highlight=False, markup=False)
    if hint:
        console.print(f"hint: {hint}", highlight=False, markup=False)


def clip(text: str, limit: int = CELL_LIMIT) -> str:
    """``text`` when it has at most ``limit`` characters, else its start and the whole value's size."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… (cut, {size_text(len(text.encode('utf-8', 'replace')))} in all)"


def clip_strings(data: Any, limit: int = JSON_STRING_LIMIT) -> Any:
    """``data`` with every string longer than ``limit`` clipped (see `clip`), for JSON output."""
    if isinstance(data, str):
        return clip(data, limit)
    if isinstance(data, dict):
        return {key: clip_strings(value, limit) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [clip_strings(value, limit) for value in data]
    return data


def styled(value: str) -> str:
    style = STATUS_STYLE.get(value)
    return f"[{style}]{value}[/{style}]" if style else value


def print_json(data: Any) -> None:
    """Machine output: one JSON document on stdout (huge strings clipped with their size)."""
    sys.stdout.write(json.dumps(clip_strings(data), indent=2, default=str) + "\n")


def print_lines(lines: Iterable[str], *, err: bool = False) -> None:
    """Plain lines, exactly as given, on stdout (or stderr)."""
    stream = sys.stderr if err else sys.stdout
    for line in lines:
        stream.write(line + "\n")


def cell_text(value: Any, *, plain: bool) -> str:
    """A table cell: None is empty, a count thousands-separated for people (bare when plain), long values
    clipped."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value) if plain else f"{value:,}"
    return clip(str(value))


_NUMBER = re.compile(r"^[-+]?[\d,]+(\.\d+)?(%|s|ms)?$")
FREE_TEXT_MIN_WIDTH = 20  # a free-text column narrower than this reads worse than the record layout


def print_table(
    console: Console, title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
    status_column: int | None = None, wrap: Iterable[str] = (),
) -> None:
    """A table on ``console``. Piped (not a terminal): the title, then the header and one line per row,
    tab-separated, never wrapped, every column kept. On a terminal, always-empty columns are left out and
    the cell in ``status_column`` is coloured: a rich table in which only the ``wrap`` columns (free text)
    wrap, between words, so no id is ever cut; when even that cannot fit the width, one record per row (its
    first cells as a heading, then a ``column: value`` line per non-empty cell).
    """
    plain = not console.is_terminal
    cells = [[cell_text(cell, plain=plain) for cell in row] for row in rows]
    if plain:
        lines = [title, "\t".join(columns)]
        lines += ["\t".join(LINE_BREAKS.sub(" ", cell) for cell in row) for row in cells]
        console.file.write("\n".join(lines) + "\n")
        console.file.flush()
        return
    from rich.table import Table
    from rich.text import Text

    def styled_cell(i: int, text: str) -> Text:
        return Text(text, style=STATUS_STYLE.get(text, "") if i == status_column else "")

    kept = [i for i in range(len(columns)) if any(row[i] for row in cells)] or list(range(len(columns)))
    wrapping = set(wrap)
    needed = {i: _min_width(columns[i], [row[i] for row in cells], free=columns[i] in wrapping) for i in kept}
    if sum(needed.values()) + 3 * len(kept) + 1 > console.width:
        heading = [i for i in kept[:2] if i == kept[0] or i == status_column]
        console.print(Text(title, style="bold"))
        for row in cells:
            # soft-wrapped: the terminal folds a long line, no newline is inserted into an id
            console.print(Text(" ").join(styled_cell(i, row[i]) for i in heading), highlight=False, soft_wrap=True)
            for i in kept:
                if i not in heading and row[i]:
                    console.print(Text.assemble(f"  {columns[i]}: ", row[i]), highlight=False, soft_wrap=True)
        return
    result = Table(title=title, title_justify="left", show_lines=False)
    for i in kept:
        free = columns[i] in wrapping
        numeric = all(_NUMBER.match(row[i]) for row in cells if row[i])
        result.add_column(columns[i], no_wrap=not free, overflow="fold" if free else "ellipsis",
                          min_width=needed[i] if free else None, justify="right" if numeric else "left")
    for row in cells:
        result.add_row(*(styled_cell(i, row[i]) for i in kept))
    console.print(result)


def _min_width(header: str, values: Sequence[str], *, free: bool) -> int:
    """The narrowest a column can be: its longest value (an id is never cut), or for free text up to
    FREE_TEXT_MIN_WIDTH; a header wraps between its words."""
    longest = max((len(value) for value in values), default=0)
    header_word = max((len(word) for word in header.split()), default=0)
    return max(header_word, min(FREE_TEXT_MIN_WIDTH, longest) if free else longest)


def render_checks(data: dict[str, Any], console: Console, *, title: str = "verify") -> None:
    """verify's table: check, status, expected, actual, message."""
    rows = [(c["id"], c["status"], c["expected"], c["actual"], c["message"]) for c in data["checks"]]
    print_table(console, title, ("check", "status", "expected", "actual", "message"), rows, status_column=1,
                wrap=("expected", "actual", "message"))
    summary = data["summary"]
    verdict = "[green]OK[/green]" if data["ok"] else "[bold red]FAILED[/bold red]"
    console.print(
        f"{verdict}: {summary['pass']} pass, {summary['fail']} fail, {summary['warn']} warn, {summary['skip']} skip"
    )
    for check in data["checks"]:
        if check["status"] in ("fail", "warn") and check["hint"]:
            console.print(f"  hint ({check['id']}): {check['hint']}")


def render_types(data: dict[str, Any], console: Console) -> None:
    """check-types: each missing, mistyped or extra field (section, field, expected, declared), then a verdict."""
    rows = [(section, found if isinstance(found, str) else found["field"], problem,
             "" if isinstance(found, str) else found["expected"], "" if isinstance(found, str) else found["actual"])
            for section, problems in data["sections"].items()
            for problem, fields in problems.items() for found in fields]
    where = f"{data['schema']}.{data['table']}"
    if rows:
        print_table(console, f"check-types {data['file']} ({where}, from the {data['source']})",
                    ("section", "field", "problem", "expected", "declared"), rows, status_column=2,
                    wrap=("expected", "declared"))
    for note in data["notes"]:
        console.print(f"- {note}", markup=False, highlight=False)
    fields = data["summary"]["pass"] + data["summary"]["fail"]
    if data["ok"]:
        console.print(f"[green]OK[/green]: {plural(fields, 'field')} of {where} declared as the generator emits them")
    else:
        console.print(f"[bold red]STALE[/bold red]: {plural(data['summary']['fail'], 'field')} missing, mistyped or "
                      f"extra; regenerate with `supabase gen types typescript`")


def render_flag(data: dict[str, Any], console: Console) -> None:
    """flag: the flag row (key, enabled, last update, rollout columns), what changed, and why it was refused."""
    flag = data["flag"]
    enabled = "missing" if not flag["exists"] else ("on" if flag["enabled"] else "off")
    rows = [("key", data["key"]), ("enabled", enabled), ("updated at", flag["updated_at"])]
    rows += [(name, json.dumps(value, default=str) if isinstance(value, list | dict) else value)
             for name, value in flag["rollout"].items()]
    print_table(console, f"flag {data['key']} in {data['table']}", ("field", "value"), rows)
    for note in data["notes"]:
        console.print(f"- {note}", markup=False, highlight=False)
    if data["refused"]:
        failing = data["failing_checks"]
        render_checks({"ok": False, "checks": failing, "summary": {
            status: sum(c["status"] == status for c in failing) for status in ("pass", "fail", "warn", "skip")}},
            console, title=f"enable refused: {plural(len(failing), 'check')} failing")
    elif data["changed"]:
        console.print(f"[green]{data['key']} is now {enabled}[/green]", highlight=False)


def render_run(data: dict[str, Any], console: Console) -> None:
    """apply / rollback: one row per step, then notes and the embedded verification."""
    rows = [(s["step"], s["outcome"], f"{s['duration_s']:.2f}s", s["lock_retries"], s["detail"]) for s in data["steps"]]
    if rows:
        print_table(console, data["command"], ("step", "outcome", "time", "lock retries", "detail"), rows,
                    status_column=1, wrap=("detail",))
    for note in data["notes"]:
        console.print(f"- {note}")
    verification = data.get("verification")
    if verification:
        problems = [c for c in verification["checks"] if c["status"] in ("fail", "warn")]
        if problems:
            render_checks({**verification, "checks": problems}, console, title="verification problems")
        else:
            console.print(f"[green]verified[/green]: all {verification['summary']['pass']} checks pass")


def render_history(data: dict[str, Any], console: Console) -> None:
    """history: one row per recorded step, newest run first, its steps in order."""
    if not data["runs"]:
        console.print(f"no run of {data['migration_id']} on schema {data['schema']} is recorded yet",
                      markup=False, highlight=False)
        return
    rows = [(run["run_id"], run["command"], step["step"], step["outcome"], step["started_at"],
             duration(step["duration_ms"] / 1000), run["db_user"], run["tool_version"], step["detail"])
            for run in data["runs"] for step in run["steps"]]
    print_table(console, f"history of {data['migration_id']} on schema {data['schema']}",
                ("run", "command", "step", "outcome", "started", "took", "user", "version", "detail"), rows,
                status_column=3, wrap=("detail",))


def print_sql(script: str, console: Console) -> None:
    """SQL exactly as given: syntax-highlighted on a terminal (never wrapped or cut), byte for byte otherwise."""
    if not console.is_terminal:
        console.file.write(script)
        console.file.flush()
        return
    from rich.syntax import Syntax

    highlighted = Syntax(script, "sql", theme="ansi_dark", background_color="default").highlight(script)
    console.print(highlighted, soft_wrap=True, end="")


def write_junit(data: dict[str, Any], path: Path, *, suite: str) -> None:
    """JUnit XML, one testcase per check (fail -> <failure>, skip -> <skipped>, warn -> system-out)."""
    checks = data["checks"]
    root = ElementTree.Element(
        "testsuite", name=suite, tests=str(len(checks)),
        failures=str(sum(c["status"] == "fail" for c in checks)),
        skipped=str(sum(c["status"] == "skip" for c in checks)),
    )
    for check in checks:
        case = ElementTree.SubElement(root, "testcase", classname=suite, name=check["id"])
        detail = f"expected: {check['expected']}\nactual: {check['actual']}\n{check['message']}".strip()
        if check["status"] == "fail":
            ElementTree.SubElement(case, "failure", message=check["message"] or "failed").text = detail
        elif check["status"] == "skip":
            ElementTree.SubElement(case, "skipped", message=check["message"] or "skipped")
        elif check["status"] == "warn":
            ElementTree.SubElement(case, "system-out").text = f"WARNING: {detail}"
    ElementTree.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def render_plan(data: dict[str, Any], console: Console) -> None:
    """plan: each expected object as present / missing / drifted, then the SQL apply would run."""
    rows = [(o["kind"], o["name"], o["state"], o["expected"], o["actual"]) for o in data["objects"]]
    print_table(console, "plan", ("kind", "object", "state", "expected", "actual"), rows, status_column=2,
                wrap=("expected", "actual"))
    if data["backfill_pending"] is not None:
        console.print(f"backfill: {data['backfill_pending']} rows still hold legacy metadata to move "
                      "(information; see `favmigrate backfill`)")
    if not data["steps"]:
        console.print("[green]Nothing to do: every object is in place.[/green]")
        return
    console.print(f"apply would run {plural(len(data['steps']), 'step')}:")
    print_sql(sql_script(data["steps"]), console)


def plan_tree(document: dict[str, Any]) -> list[str]:
    """An EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) plan as indented text: node, index or relation, actual
    rows, time, buffers, then its conditions."""
    lines: list[str] = []

    def walk(node: dict[str, Any], depth: int) -> None:
        head = node.get("Node Type", "?")
        if node.get("Parent Relationship") in ("InitPlan", "SubPlan"):
            head = f"{node.get('Subplan Name') or node['Parent Relationship']}: {head}"
        if node.get("Join Type") not in (None, "Inner"):
            head = f"{head} ({node['Join Type']})"
        if node.get("Index Name"):
            head += f" using {node['Index Name']}"
        if node.get("Relation Name"):
            head += f" on {node['Relation Name']}"
        prefix = "  " * depth + ("-> " if depth else "")
        lines.append(
            f"{prefix}{head} (actual rows={number_text(node.get('Actual Rows'))} "
            f"loops={number_text(node.get('Actual Loops'))} time={number_text(node.get('Actual Total Time'), 3)} ms, "
            f"buffers hit={node.get('Shared Hit Blocks', 0)} "
            f"read={node.get('Shared Read Blocks', 0)})"
        )
        for key in ("Index Cond", "Recheck Cond", "Filter", "Group Key", "Sort Key"):
            if key in node:
                value = node[key]
                text = ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
                lines.append(" " * (len(prefix) + 2) + f"{key}: {text}")
        for child in node.get("Plans", ()):
            walk(child, depth + 1)

    walk(document["Plan"], 0)
    lines.append(f"Planning Time: {number_text(document.get('Planning Time'), 3)} ms")
    lines.append(f"Execution Time: {number_text(document.get('Execution Time'), 3)} ms")
    return lines


def number_text(value: float | None, decimals: int = 2) -> str:
    """A number for people: whole when it is (PostgreSQL 18 reports ``31.0`` rows), else rounded; "-" for None."""
    if value is None:
        return "-"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.{decimals}f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _plan_cell(run: dict[str, Any]) -> str:
    if run["error"]:
        return "cancelled (timeout)"
    parts = list(run["indexes"])
    if run["seq_scan"]:
        parts.append("Seq Scan")
    return ", ".join(parts) or "-"


def render_explain(data: dict[str, Any], console: Console, *, show_plan: bool = False,
                   plan_console: Console | None = None) -> None:
    """explain: one row per query (status, index used naturally and forced, time, rows, buffers), the
    verdict messages and warnings; with ``show_plan`` the plan trees on ``plan_console``."""
    rows = []
    for query in data["queries"]:
        natural, forced = query["natural"], query["forced"]
        buffers = natural["buffers"]
        rows.append((
            query["id"], query["status"], _plan_cell(natural), _ms(natural["execution_ms"]),
            _plan_cell(forced), _ms(forced["execution_ms"]), "-" if natural["rows"] is None else natural["rows"],
            f"{buffers['hit'] if buffers['hit'] is not None else '-'}/"
            f"{buffers['read'] if buffers['read'] is not None else '-'}",
        ))
    print_table(
        console, f"explain ({data['table']}, ~{data['estimated_rows']:,} rows estimated)",
        ("query", "status", "natural plan", "natural ms", "forced plan (seqscan off)",
         "forced ms", "rows", "buffers hit/read"),
        rows, status_column=1,
    )
    for query in data["queries"]:
        if query["status"] != "pass":
            console.print(f"{styled(query['status'])} {query['id']}: ", end="", highlight=False)
            console.print(query["message"], markup=False, highlight=False)
            if query["hint"]:
                console.print(f"  hint: {query['hint']}", markup=False, highlight=False)
    for warning in data["warnings"]:
        console.print(f"{styled('warn')} {warning['id']}: ", end="", highlight=False)
        console.print(warning["message"], markup=False, highlight=False)
        if warning["hint"]:
            console.print(f"  hint: {warning['hint']}", markup=False, highlight=False)
    counts = {status: sum(q["status"] == status for q in data["queries"]) for status in ("pass", "warn", "fail")}
    verdict = "[green]OK[/green]" if data["ok"] else "[bold red]FAILED[/bold red]"
    console.print(f"{verdict}: {counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail, "
                  f"{plural(len(data['warnings']), 'warning')}")
    if show_plan:
        render_plans(data, plan_console or console)


def render_plans(data: dict[str, Any], console: Console) -> None:
    """The natural and forced plan tree of every query."""
    for query in data["queries"]:
        for mode in ("natural", "forced"):
            run = query[mode]
            console.print(f"\n{query['id']} ({mode}{', enable_seqscan=off' if mode == 'forced' else ''}):",
                          markup=False, highlight=False)
            if run["plan"] is None:
                console.print(f"  {run['error'] or 'no plan'}", markup=False, highlight=False)
                continue
            for line in plan_tree(run["plan"]):
                console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"


def duration(seconds: float | None) -> str:
    """Seconds for people: 42.5s, 3m 07s, 2h 05m, 3d 04h; "-" for None."""
    if seconds is None:
        return "-"
    if abs(seconds) < 60:
        return f"{seconds:.1f}s"
    sign = "-" if seconds < 0 else ""
    minutes, secs = divmod(round(abs(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{sign}{days}d {hours:02d}h"
    if hours:
        return f"{sign}{hours}h {minutes:02d}m"
    return f"{sign}{minutes}m {secs:02d}s"


def render_report(data: dict[str, Any], console: Console) -> None:
    """report: one row per preferred mechanic, then the totals."""
    span = f"created_at in [{data['since'] or '-inf'}, {data['until'] or '+inf'})"
    rows = [
        (m["mechanic_id"], "(no mechanics row)" if m["mechanic_missing"] else m["mechanic_name"], m["requests"],
         m["notified"], m["accepted_by_preferred"], _pct(m["success_rate_pct"]), m["timed_out"],
         _pct(m["timeout_rate_pct"]), duration(m["avg_response_s"]), duration(m["median_response_s"]))
        for m in data["mechanics"]
    ]
    columns = ("mechanic id", "mechanic", "requests", "notified", "accepted by preferred", "success", "timed out",
               "timeout rate", "avg response", "median response")
    if rows:
        print_table(console, f"priority by preferred mechanic, {span}", columns, rows, wrap=("mechanic",))
    else:
        console.print(f"no priority request (a request with a preferred mechanic) has {span}", markup=False,
                      highlight=False)
    render_report_totals(data["totals"], console)
    for note in data["notes"]:
        console.print(f"- {note}", markup=False, highlight=False)


def print_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Machine output: CSV with a header line on stdout (None is an empty field, a fraction has two decimals)."""
    import csv

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_csv_cell(cell) for cell in row] for row in rows)


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    return f"{value:.2f}" if isinstance(value, float) else value


def live_progress(console: Console, get_time: Callable[[], float] | None = None) -> Any:
    """A transient rich Progress for running steps: spinner, name, then a bar with thousands-separated counts
    and an ETA once a step reports counts against a known total (a count alone while the total is unknown;
    nothing, never ``0/?``, for a step without counts), extra text, and the elapsed time."""
    from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TextColumn
    from rich.text import Text

    class Bar(BarColumn):
        def render(self, task: Task) -> Any:
            return super().render(task) if task.total is not None else Text("")

    class Count(ProgressColumn):
        def render(self, task: Task) -> Text:
            if task.total is not None:
                return Text(f"{int(task.completed):,}/{int(task.total):,}")
            return Text(f"{int(task.completed):,}" if task.completed else "")

    class Remaining(ProgressColumn):
        max_refresh = 1.0

        def render(self, task: Task) -> Text:
            left = task.time_remaining
            return Text("" if task.total is None or left is None or task.finished else f"ETA {duration(left)}")

    class Elapsed(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(duration(task.elapsed), style="dim")

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), Bar(), Count(),
                    TextColumn("{task.fields[extra]}"), Remaining(), Elapsed(), console=console, transient=True,
                    get_time=get_time)


_EVENT_MARKS = {"warning": ("warning:", "yellow"), "step-done": ("✓", "green"), "retry": ("…", "yellow"),
                "waiting": ("…", "yellow"),
                "pause": ("‖", "yellow")}


def event_line(kind: str, message: str, step: str = "") -> Any:
    """One progress message as a line: a mark for its kind, the step, the message (never read as markup)."""
    from rich.text import Text

    mark, style = _EVENT_MARKS.get(kind, (">", "cyan"))
    return Text.assemble((mark, style), f" {step}: " if step else " ", message)


class ProgressEvents:
    """The events of apply and rollback on stderr, as a context manager (the display is gone before the
    summary or an error message).

    Every message is a line printed above the live display, through the same console, so it never lands on
    the spinner. On a terminal the running step shows as a spinner with its name and elapsed time, and a
    bar with thousands-separated counts and an ETA once it reports counts. ``quiet``: warnings only.
    """

    def __init__(self, *, quiet: bool = False, console: Console | None = None) -> None:
        self._console = console or stderr_console()
        self._quiet = quiet
        self._live = self._console.is_terminal and not quiet  # no live display in logs and pipes
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> ProgressEvents:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __call__(self, event: Any) -> None:
        kind = event.kind.value
        if kind == "progress" and getattr(event, "done", None) is not None:
            if self._live:
                self._advance(event.step, event.done, event.total)
            return
        if kind == "step-done" and event.step in self._tasks:
            self._finish(event.step)
        self._print(event)
        if kind == "step-start" and self._live:
            self._advance(event.step, 0, None)

    def _print(self, event: Any) -> None:
        if event.kind.value == "warning" or not self._quiet:
            self._console.print(event_line(event.kind.value, event.message, event.step), highlight=False)

    def _advance(self, step: str, done: int, total: int | None) -> None:
        if self._bar is None:
            self._bar = live_progress(self._console)
            self._bar.start()
        if step not in self._tasks:
            self._tasks[step] = self._bar.add_task(step, total=total, extra="")
        self._bar.update(self._tasks[step], completed=done, total=total)

    def _finish(self, step: str) -> None:
        self._bar.remove_task(self._tasks.pop(step))
        if not self._tasks:
            self.close()

    def close(self) -> None:
        """Stop the live display (before a prompt, at the end, on an error)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            self._tasks.clear()


def render_preservation(data: dict[str, Any], console: Console) -> None:
    """rollback: the sampled conflicts and non-object rows (of the run, or of the dry run's survey)."""
    found = data.get("preservation") or (data.get("plan") or {}).get("survey") or {}
    conflicts = found.get("conflict_sample") or []
    if conflicts:
        print_table(console, f"conflicts: metadata already held another value (first {len(conflicts)})",
                    ("row", "key", "metadata value", "column value"),
                    [(c["row"], c["key"], _metadata_text(c), json.dumps(c["column_value"])) for c in conflicts],
                    wrap=("metadata value", "column value"))
    if found.get("not_object_sample"):
        console.print(f"rows whose metadata is not a JSON object (left as they are, first "
                      f"{len(found['not_object_sample'])}): {', '.join(found['not_object_sample'])}",
                      markup=False, highlight=False)


def _metadata_text(conflict: dict[str, Any]) -> str:
    """A conflict's metadata value: its JSON text, which the library cut when it was long."""
    if conflict["metadata_truncated"]:
        cut = f"… (cut, {size_text(conflict['metadata_bytes'])} in all)"
        return str(conflict["metadata_json"])[:CELL_LIMIT - len(cut)] + cut  # fits a cell: never cut again
    return str(conflict["metadata_json"])


class BackfillProgress:
    """The backfill's progress on stderr: a bar (rows scanned of the estimate, rows/s, ETA, rejects so far)
    on a terminal, one line every ``log_every_s`` seconds otherwise; the run's notices (triggers that
    fire, lock retries, pauses, warnings) as lines above it. A context manager, so the bar is gone
    before the summary or an error message.
    """

    def __init__(self, *, quiet: bool = False, log_every_s: float = 10.0) -> None:
        self._console = stderr_console()
        self._quiet = quiet
        self._log_every_s = log_every_s
        self._last_log = 0.0
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> BackfillProgress:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __call__(self, event: Any) -> None:
        kind = event.kind.value
        if kind == "batch":
            if not self._quiet:
                self._show(event)
            return
        if kind == "done":
            self.close()
            return
        if kind == "warning" or (not self._quiet and event.message):
            self._console.print(event_line(kind, event.message), highlight=False)

    def _show(self, event: Any) -> None:
        import time

        rejects = f"{event.rejected:,} rejected, {event.conflicts:,} conflicts"
        if not self._console.is_terminal:
            now = time.monotonic()
            if now - self._last_log >= self._log_every_s:
                self._last_log = now
                total = f"/{event.total_estimate:,}" if event.total_estimate else ""
                self._console.print(f"backfill {event.phase.value}: {event.scanned:,}{total} rows scanned, "
                                    f"{event.rows_updated:,} updated, {event.rows_per_s:,.0f} rows/s, {rejects}",
                                    highlight=False, markup=False)
            return
        if self._bar is None:
            self._bar = live_progress(self._console)
            self._bar.start()
            self._task = self._bar.add_task("backfill", total=event.total_estimate, extra="")
        expected = max(event.total_estimate or 0, event.scanned) or None
        description = "backfill" if event.phase.value == "main" else f"backfill ({event.phase.value})"
        self._bar.update(self._task, completed=event.scanned, total=expected, description=description,
                         extra=f"{event.rows_per_s:,.0f} rows/s, {rejects}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def render_backfill(data: dict[str, Any], console: Console) -> None:
    """backfill's summary: rows updated per column, rejects per reason, conflicts, throughput."""
    title = "backfill (dry run: would update)" if data["dry_run"] else "backfill"
    print_table(console, title, ("column", "rows updated"), list(data["updated"].items()))
    rejected = [*data["rejected"].items(),
                ("conflict (left as is)" if not data["overwrite"] else "conflict", data["conflicts"])]
    print_table(console, "rejected values", ("reason", "values"), rejected)
    rate = f", {data['rows_per_s']:,.0f} rows/s" if data.get("rows_per_s") else ""
    console.print(f"{data['scanned']:,} rows scanned in {data['batches']:,} batches ({data['scan']}), "
                  f"{data['rows_updated']:,} rows updated, {data['elapsed_s']:.1f}s{rate}; longest batch "
                  f"{data['longest_batch_s'] * 1000:.0f} ms; catch-up pass {data['catch_up']['rows']:,} rows, "
                  f"{data['catch_up']['rows_updated']:,} updated", highlight=False, markup=False)
    if data.get("rejects_file"):
        console.print(f"rejects and conflicts written to {data['rejects_file']} (JSON Lines)", highlight=False,
                      markup=False)
    for note in data["notes"]:
        console.print(f"- {note}", highlight=False, markup=False)


def render_demo_stage(data: dict[str, Any], console: Console) -> None:
    """One stage of `favmigrate demo` (``StageResult.to_dict()``): what it showed, then its verdict line."""
    stage, found = data["stage"], data["data"]
    body = _DEMO_BODIES.get(stage)
    if body is not None and "error" not in found:
        body(found, console)
    mark = "[green]ok[/green]" if data["ok"] else "[bold red]FAILED[/bold red]"
    console.print(f"{mark} ({duration(data['elapsed_s'])}): ", end="", highlight=False)
    console.print(data["summary"], markup=False, highlight=False)
    if not data["ok"]:
        console.print(f"  expected: {data['expected']}", markup=False, highlight=False)
        if found.get("hint"):
            console.print(f"  hint: {found['hint']}", markup=False, highlight=False)


def _demo_lint(found: dict[str, Any], console: Console) -> None:
    from favmigrate.lint.reporters import text_lines

    for data in (found.get("seed_sql"), found["favmigrate"]):
        if data is not None:
            print_lines(text_lines(data) or [f"{', '.join(data['files'])}: no finding"])
            console.file.flush()


def _demo_plan(found: dict[str, Any], console: Console) -> None:
    console.print("apply would run: " + ", ".join(step["step"] for step in found["steps"]), markup=False,
                  highlight=False)


def _demo_apply(found: dict[str, Any], console: Console) -> None:
    writers = [("favmigrate apply", found["writer"])]
    if found["seed_sql_writer"] is not None:
        writers.insert(0, ("the seed's SQL, as one query", found["seed_sql_writer"]))
    print_table(console, "the application's writes while the migration ran",
                ("migration", "writes", "failed", "worst stall", "p99", "waiting on a lock"),
                [(name, w["transactions"], w["errors"], f"{w['worst_ms']:,.0f} ms", f"{w['p99_ms']:,.0f} ms",
                  f"{w['lock_wait_ms']:,} ms") for name, w in writers])
    render_run({**found["report"], "verification": None}, console)


def _demo_backfill(found: dict[str, Any], console: Console) -> None:
    render_backfill(found, console)
    if "expected_rejected" in found:
        console.print("the sample's known rejects: " + ", ".join(f"{reason} {count:,}" for reason, count in
                                                                 found["expected_rejected"].items()),
                      markup=False, highlight=False)


def render_report_totals(t: dict[str, Any], console: Console) -> None:
    """report's totals: one row over every priority request."""
    print_table(console, "totals", ("priority requests", "notified", "accepted by preferred", "success", "timed out",
                                    "timeout rate", "avg response", "median response"),
                [(t["requests"], t["notified"], t["accepted_by_preferred"], _pct(t["success_rate_pct"]),
                  t["timed_out"], _pct(t["timeout_rate_pct"]), duration(t["avg_response_s"]),
                  duration(t["median_response_s"]))])


_DEMO_BODIES: dict[str, Callable[[dict[str, Any], Console], None]] = {
    "lint": _demo_lint, "plan": _demo_plan, "apply": _demo_apply, "backfill": _demo_backfill,
    "explain": lambda found, console: render_explain(found, console),
    "report": lambda found, console: render_report_totals(found["totals"], console),
}


class DemoDisplay:
    """`favmigrate demo` as it runs: a heading per stage and, in text, the stage's output and verdict on
    stdout; the jobs' progress (steps, the backfill's bar) and the demo's notes on stderr. With ``json`` the
    headings and verdicts go to stderr too, leaving stdout to the final document."""

    def __init__(self, *, json: bool = False) -> None:
        self._json = json
        self._out = stderr_console() if json else stdout_console()
        self._err = stderr_console()
        self.steps = ProgressEvents(console=self._err)
        self.backfill = BackfillProgress()

    def __enter__(self) -> DemoDisplay:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.steps.close()
        self.backfill.close()

    def warn(self, message: str) -> None:
        self._err.print(event_line("warning", message), highlight=False)

    def __call__(self, event: Any) -> None:
        kind = event.kind.value
        if kind == "stage-start":
            self._out.print(f"\n[bold]{event.number}/{event.total} {event.stage.value}[/bold]: ", end="",
                            highlight=False)
            self._out.print(event.message, markup=False, highlight=False)
        elif kind == "note":
            self._err.print(event_line("note", event.message), highlight=False)
        else:
            self.close()
            if self._json:
                data = event.result.to_dict()
                mark = "ok" if data["ok"] else "FAILED"
                self._out.print(f"{mark}: ", end="", highlight=False)
                self._out.print(data["summary"], markup=False, highlight=False)
            else:
                render_demo_stage(event.result.to_dict(), self._out)


def render_demo(data: dict[str, Any], console: Console) -> None:
    """The last lines of `favmigrate demo`: the verdict over every stage."""
    took = sum(stage["elapsed_s"] for stage in data["stages"])
    if data["ok"]:
        console.print(f"\n[green]demo OK[/green]: every stage did what it should ({len(data['stages'])} stages, "
                      f"{duration(took)})", highlight=False)
        return
    failed = next((stage["stage"] for stage in data["stages"] if not stage["ok"]), "?")
    console.print(f"\n[bold red]demo FAILED[/bold red] at {failed}; not run: "
                  f"{', '.join(data['not_run']) or 'nothing'}", highlight=False)
