"""Lint findings as values, and the report whose exit code is derived from them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from favmigrate.errors import ExitCode


class Severity(StrEnum):
    NOTE = "note"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return ("note", "warning", "error").index(self.value)


class FailOn(StrEnum):
    """The lowest severity that makes `lint` exit 1 (``never``: always exit 0 once it ran)."""

    NOTE = "note"
    WARNING = "warning"
    ERROR = "error"
    NEVER = "never"


@dataclass(frozen=True)
class RuleInfo:
    """A rule's stable kebab-case id (squawk's where the meaning matches), what it catches and the fix."""

    id: str
    severity: Severity
    summary: str
    help: str
    default: bool = True  # on unless selected with --rule
    squawk: bool = True  # squawk has a rule with this id

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "severity": self.severity.value, "summary": self.summary, "help": self.help,
                "default": self.default, "squawk": self.squawk}


@dataclass(frozen=True)
class Finding:
    """One problem at a 1-based line and column of a file."""

    path: str
    line: int
    column: int
    rule: str
    severity: Severity
    message: str
    help: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "column": self.column, "rule": self.rule,
                "severity": self.severity.value, "message": self.message, "help": self.help}


@dataclass(frozen=True)
class LintReport:
    """Every finding over the files linted, with the threshold that decides the exit code."""

    files: tuple[str, ...]
    findings: tuple[Finding, ...]
    rules: tuple[RuleInfo, ...]  # the rules that ran
    fail_on: FailOn = FailOn.WARNING
    database: bool = False  # catalog facts from --dsn were used

    def failing(self) -> tuple[Finding, ...]:
        """The findings at or above ``fail_on``."""
        if self.fail_on is FailOn.NEVER:
            return ()
        threshold = Severity(self.fail_on.value).rank
        return tuple(f for f in self.findings if f.severity.rank >= threshold)

    @property
    def ok(self) -> bool:
        return not self.failing()

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.ok else ExitCode.FAILED

    def counts(self) -> dict[str, int]:
        tally = {severity.value: 0 for severity in Severity}
        for finding in self.findings:
            tally[finding.severity.value] += 1
        return tally

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "fail_on": self.fail_on.value,
            "database": self.database,
            "files": list(self.files),
            "rules": [rule.id for rule in self.rules],
            "summary": self.counts(),
            "findings": [finding.to_dict() for finding in self.findings],
        }
