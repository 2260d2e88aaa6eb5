"""The SQL a dry run would run, as one script psql can run: text only, so the library can lint it too."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

LINE_BREAKS = re.compile(r"[\t\r\n]+")


def sql_script(steps: Sequence[dict[str, Any]], *, header: Sequence[str] = (), notes: Sequence[str] = ()) -> str:
    """The statements of planned steps (``PlannedStep.to_dict()``) as one script psql can run, exactly as
    favmigrate runs them: a transactional step between BEGIN and COMMIT, a CONCURRENTLY step on its own.
    A step's ``script`` statements, when it has them, run in its place: the same work written for psql
    (a batched step as one transaction over every row). Otherwise a statement favmigrate runs with values
    bound (``%(name)s``), and every statement of a batched step (repeated, one transaction per batch), is a
    commented template with ``:name`` for each value.
    ``header`` and ``notes`` become comment lines; a step's ``session`` statements (its lock_timeout and
    statement_timeout) come before it when they differ from the previous step's.
    """
    lines = [f"-- {_one_line(line)}" for line in header]
    session: list[str] = []
    for step in steps:
        if step.get("session", session) != session:  # the settings favmigrate sets before the step, when they change
            session = step["session"]
            lines += [statement + ";" for statement in session]
        lines.append(f"-- step {step['step']}: {_one_line(step['reason'])}")
        statements = [statement.strip().rstrip(";").rstrip() + ";" for statement in step.get("script") or step["sql"]]
        if step["lock"] == "batched" and not step.get("script"):
            lines.append(f"-- repeated in batches by favmigrate, one transaction each, until no row is left, with "
                         f"{_bound(statements)} bound for each batch (a template: not run by this script):")
            lines += _template(statements)
            continue
        body: list[str] = []
        for statement in statements:
            if _BOUND.search(statement):
                body.append(f"-- run by favmigrate with {_bound([statement])} bound (a template: not run by this "
                            "script):")
                body += _template([statement])
            else:
                body.append(statement)
        # CONCURRENTLY cannot run inside a transaction block
        lines += body if step["lock"] == "concurrent" else ["BEGIN;", *body, "COMMIT;"]
    lines += [f"-- {_one_line(note)}" for note in notes]
    return "\n".join(lines) + "\n"


def dry_run_script(data: dict[str, Any]) -> str:
    """The script of an apply or rollback dry run (its ``to_dict()``), headed by what it is."""
    steps = data["plan"]["steps"]
    header = [f"favmigrate {data['command']} --dry-run: the statements it would run, in order (favmigrate also "
              "retries a statement that times out waiting for its lock)"]
    if any(step["lock"] == "batched" and not step.get("script") for step in steps):
        header.append(f"the batched steps are templates this script does not run: only `favmigrate "
                      f"{data['command']}` runs them")
    if any(step["lock"] == "batched" and step.get("script") for step in steps):
        header.append(f"`favmigrate {data['command']}` runs the batched steps in short transactions; this script "
                      "runs each as one statement over the whole table, holding the row locks it takes until it "
                      "commits; run it with psql -v ON_ERROR_STOP=1, so that a failed statement stops it")
    return sql_script(steps, header=header if steps else (), notes=data["notes"])


def _bound(statements: Sequence[str]) -> str:
    names = dict.fromkeys(m.group(1) for st in statements for m in _BOUND.finditer(st) if m.group(1))
    return ", ".join(f":{name}" for name in names) or "its values"


def _template(statements: Sequence[str]) -> list[str]:
    shown = [_PLACEHOLDER.sub(_as_variable, statement) for statement in statements]
    return [f"--   {line}" for statement in shown for line in statement.splitlines()]


_BOUND = re.compile(r"%\((\w+)\)s|%s")  # the values psycopg binds; such a statement is shown as a template
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%|%s")


def _as_variable(match: re.Match[str]) -> str:
    """A psycopg placeholder as a psql-style :variable (``%%`` back to ``%``), for a template shown to people."""
    if match.group(1):
        return f":{match.group(1)}"
    return "%" if match.group(0) == "%%" else "?"


def _one_line(text: str) -> str:
    return LINE_BREAKS.sub(" ", text)
