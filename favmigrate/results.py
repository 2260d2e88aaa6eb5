"""Results as small typed values. Every output format is rendered from their ``to_dict()``."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from favmigrate.errors import ExitCode


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """A count for people: ``1 row``, ``2 rows``, ``1,234 values`` (an irregular plural through ``nouns``)."""
    return f"{count:,} {noun if count == 1 else nouns or noun + 's'}"


def size_text(count: int) -> str:
    """A byte count for people: 812 B, 12.4 kB, 10.0 MB (powers of 1000)."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


class CheckStatus(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"


@dataclass(frozen=True)
class CheckResult:
    """One finding: a stable id naming the object it checks, what was expected and what was found."""

    id: str
    status: CheckStatus
    expected: str = ""
    actual: str = ""
    message: str = ""
    hint: str = ""

    @property
    def failed(self) -> bool:
        return self.status is CheckStatus.FAIL

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status.value,
            "expected": self.expected,
            "actual": self.actual,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass(frozen=True)
class CheckReport:
    """The outcome of `verify` (or of the checks embedded in another command)."""

    checks: tuple[CheckResult, ...]
    mode: str = "applied"  # "applied" or "absent"
    schema: str = "public"
    warnings: tuple[str, ...] = ()  # what could not be checked (e.g. tool tables the role may not read)
    strict: bool = False  # warnings fail too: a warn check, or something that could not be checked

    @property
    def ok(self) -> bool:
        if any(check.failed for check in self.checks):
            return False
        return not (self.strict and (self.warnings or any(c.status is CheckStatus.WARN for c in self.checks)))

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.ok else ExitCode.FAILED

    def counts(self) -> dict[str, int]:
        tally = {status.value: 0 for status in CheckStatus}
        for check in self.checks:
            tally[check.status.value] += 1
        return tally

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "mode": self.mode,
            "schema": self.schema,
            "strict": self.strict,
            "summary": self.counts(),
            "checks": [check.to_dict() for check in self.checks],
            "warnings": list(self.warnings),
        }


class StepOutcome(StrEnum):
    APPLIED = "applied"
    SKIPPED = "skipped"  # already in place
    WOULD_APPLY = "would-apply"  # dry run
    FAILED = "failed"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class StepResult:
    """What one migration step did."""

    step: str
    outcome: StepOutcome
    detail: str = ""
    sql: str = ""
    duration_s: float = 0.0
    lock_retries: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "outcome": self.outcome.value,
            "detail": self.detail,
            "sql": self.sql,
            "duration_s": round(self.duration_s, 3),
            "lock_retries": self.lock_retries,
        }


@dataclass(frozen=True)
class RunReport:
    """The outcome of a command that runs steps (apply, rollback)."""

    command: str
    steps: tuple[StepResult, ...]
    dry_run: bool = False
    notes: tuple[str, ...] = ()
    verification: CheckReport | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return any(step.outcome is StepOutcome.APPLIED for step in self.steps)

    @property
    def ok(self) -> bool:
        steps_ok = not any(s.outcome in (StepOutcome.FAILED, StepOutcome.INTERRUPTED) for s in self.steps)
        return steps_ok and (self.verification is None or self.verification.ok)

    @property
    def exit_code(self) -> ExitCode:
        if any(s.outcome is StepOutcome.INTERRUPTED for s in self.steps):
            return ExitCode.INTERRUPTED
        return ExitCode.OK if self.ok else ExitCode.FAILED

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "command": self.command,
            "dry_run": self.dry_run,
            "changed": self.changed,
            "steps": [step.to_dict() for step in self.steps],
            "notes": list(self.notes),
            "verification": self.verification.to_dict() if self.verification else None,
            **self.extra,
        }
