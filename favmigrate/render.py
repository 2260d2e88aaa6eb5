"""The only module that imports rich: tables, progress, JSON and JUnit, all rendered from ``to_dict()``.

stdout carries only the requested format; progress, warnings and errors go to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from rich.console import Console
from rich.table import Table

STATUS_STYLE = {
    "pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim",
    "present": "green", "missing": "bold red", "drifted": "bold red",
    "applied": "green", "skipped": "dim", "would-apply": "cyan", "failed": "bold red", "interrupted": "yellow",
}


def stdout_console() -> Console:
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160  # piped output: do not fold tables at 80 columns
    return console


def stderr_console() -> Console:
    return Console(stderr=True, soft_wrap=True)


def styled(value: str) -> str:
    style = STATUS_STYLE.get(value)
    return f"[{style}]{value}[/{style}]" if style else value


def print_json(data: Any) -> None:
    """Machine output: one JSON document on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(
    title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, status_column: int | None = None
) -> Table:
    """A rich table; the cell in ``status_column`` is coloured by its value."""
    result = Table(title=title, title_justify="left", show_lines=False)
    for name in columns:
        result.add_column(name, overflow="fold")
    for row in rows:
        cells = ["" if cell is None else str(cell) for cell in row]
        if status_column is not None:
            cells[status_column] = styled(cells[status_column])
        result.add_row(*cells)
    return result


def render_checks(data: dict[str, Any], console: Console, *, title: str = "verify") -> None:
    """verify's table: check, status, expected, actual, message."""
    rows = [(c["id"], c["status"], c["expected"], c["actual"], c["message"]) for c in data["checks"]]
    console.print(table(title, ("check", "status", "expected", "actual", "message"), rows, status_column=1))
    summary = data["summary"]
    verdict = "[green]OK[/green]" if data["ok"] else "[bold red]FAILED[/bold red]"
    console.print(
        f"{verdict}: {summary['pass']} pass, {summary['fail']} fail, {summary['warn']} warn, {summary['skip']} skip"
    )
    for check in data["checks"]:
        if check["status"] in ("fail", "warn") and check["hint"]:
            console.print(f"  hint ({check['id']}): {check['hint']}")


def render_run(data: dict[str, Any], console: Console) -> None:
    """apply / rollback: one row per step, then notes and the embedded verification."""
    rows = [(s["step"], s["outcome"], f"{s['duration_s']:.2f}s", s["lock_retries"], s["detail"]) for s in data["steps"]]
    console.print(table(data["command"], ("step", "outcome", "time", "lock retries", "detail"), rows, status_column=1))
    for note in data["notes"]:
        console.print(f"- {note}")
    verification = data.get("verification")
    if verification:
        problems = [c for c in verification["checks"] if c["status"] in ("fail", "warn")]
        if problems:
            render_checks({**verification, "checks": problems}, console, title="verification problems")
        else:
            console.print(f"[green]verified[/green]: all {verification['summary']['pass']} checks pass")


def render_sql(statements: Sequence[str], console: Console) -> None:
    """SQL exactly as it would run, syntax-highlighted on a terminal, plain otherwise."""
    from rich.syntax import Syntax

    for statement in statements:
        if console.is_terminal:
            console.print(Syntax(statement.rstrip(";") + ";", "sql", theme="ansi_dark", background_color="default"))
        else:
            console.print(statement.rstrip(";") + ";", markup=False, highlight=False)


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
    console.print(table("plan", ("kind", "object", "state", "expected", "actual"), rows, status_column=2))
    if data["backfill_pending"] is not None:
        console.print(f"backfill: {data['backfill_pending']} rows still hold legacy metadata to move "
                      "(information; see `favmigrate backfill`)")
    if not data["steps"]:
        console.print("[green]Nothing to do: every object is in place.[/green]")
        return
    console.print(f"apply would run {len(data['steps'])} step(s):")
    for step in data["steps"]:
        console.print(f"-- step {step['step']}: {step['reason']}", markup=False, highlight=False)
        render_sql(step["sql"], console)
