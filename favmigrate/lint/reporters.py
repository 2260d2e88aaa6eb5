"""Plain-text reporters for `lint`, each built from ``LintReport.to_dict()``: gcc-style text, SARIF 2.1.0
(GitHub code scanning), JUnit XML and GitHub Actions annotations. No rich here: every one is exact text
for a machine or a log."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from favmigrate import __version__

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
RULE_DOCS = "https://squawkhq.com/docs/{}"


def text_lines(data: dict[str, Any]) -> list[str]:
    """`path:line:col: rule: message` per finding, its severity and fix on the next line."""
    lines = []
    for f in data["findings"]:
        lines.append(f"{f['path']}:{f['line']}:{f['column']}: {f['rule']}: {f['message']}")
        lines.append(f"    {f['severity']}; fix: {f['help']}")
    return lines


def summary_line(data: dict[str, Any]) -> str:
    """One line for stderr: counts per severity, files, and whether that fails the run."""
    counts = data["summary"]
    files = len(data["files"])
    total = sum(counts.values())
    verdict = "ok" if data["ok"] else f"failed (--fail-on {data['fail_on']})"
    return (f"{total} finding(s) in {files} file(s): {counts['error']} error, {counts['warning']} warning, "
            f"{counts['note']} note; {verdict}")


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotations(data: dict[str, Any]) -> list[str]:
    """GitHub Actions workflow commands (`::error file=...,line=...,col=...,title=...::message`)."""
    command = {"error": "error", "warning": "warning", "note": "notice"}
    return [
        f"::{command[f['severity']]} file={_escape_property(f['path'])},line={f['line']},col={f['column']},"
        f"title={_escape_property(f['rule'])}::{_escape_data(f['message'] + ' (fix: ' + f['help'] + ')')}"
        for f in data["findings"]
    ]


def artifact_uri(path: str) -> str:
    """A file as SARIF wants it: relative to the working directory (the repository root in CI) when it is
    under it, else a file:// URI."""
    location = Path(path)
    if not location.is_absolute():
        return location.as_posix()
    try:
        return location.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return location.as_uri()


def sarif(data: dict[str, Any], rules: list[dict[str, Any]]) -> dict[str, Any]:
    """A SARIF 2.1.0 log with one run: the rules that ran and one result per finding."""
    index = {rule["id"]: position for position, rule in enumerate(rules)}
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "favmigrate",
                "version": __version__,
                "informationUri": "https://squawkhq.com/docs/rules",
                "rules": [{
                    "id": rule["id"],
                    "name": rule["id"],
                    "shortDescription": {"text": rule["summary"]},
                    "help": {"text": rule["help"]},
                    "defaultConfiguration": {"level": rule["severity"]},
                    **({"helpUri": RULE_DOCS.format(rule["id"])} if rule["squawk"] else {}),
                } for rule in rules],
            }},
            "results": [{
                "ruleId": f["rule"],
                "ruleIndex": index[f["rule"]],
                "level": f["severity"],
                "message": {"text": f"{f['message']}. Fix: {f['help']}"},
                "locations": [{"physicalLocation": {
                    "artifactLocation": {"uri": artifact_uri(f["path"])},
                    "region": {"startLine": f["line"], "startColumn": f["column"]},
                }}],
            } for f in data["findings"]],
            "columnKind": "unicodeCodePoints",
        }],
    }


def write_junit(data: dict[str, Any], path: Path) -> None:
    """JUnit XML: one testcase per file with no finding, and one per finding (a failure when it fails the run)."""
    failing_rank = {"note": 0, "warning": 1, "error": 2, "never": 3}[data["fail_on"]]
    rank = {"note": 0, "warning": 1, "error": 2}
    findings = data["findings"]
    clean = [name for name in data["files"] if not any(f["path"] == name for f in findings)]
    failures = [f for f in findings if rank[f["severity"]] >= failing_rank]
    root = ElementTree.Element("testsuite", name="favmigrate.lint", tests=str(len(findings) + len(clean)),
                               failures=str(len(failures)), skipped="0")
    for name in clean:
        ElementTree.SubElement(root, "testcase", classname=name, name="no findings")
    for f in findings:
        case = ElementTree.SubElement(root, "testcase", classname=f["path"],
                                      name=f"{f['rule']} at {f['line']}:{f['column']}")
        detail = f"{f['path']}:{f['line']}:{f['column']}: {f['message']}\nfix: {f['help']}"
        if rank[f["severity"]] >= failing_rank:
            ElementTree.SubElement(case, "failure", message=f["message"], type=f["severity"]).text = detail
        else:
            ElementTree.SubElement(case, "system-out").text = f"{f['severity'].upper()}: {detail}"
    ElementTree.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
