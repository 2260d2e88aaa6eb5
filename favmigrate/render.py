"""The only module that imports rich: tables, progress, JSON and JUnit, all rendered from ``to_dict()``.

stdout carries only the requested format; progress, warnings and errors go to stderr.
"""

from __future__ import annotations

import json
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
    return Console(soft_wrap=False)


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
    if data.get("verification"):
        render_checks(data["verification"], console, title="verification")


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
