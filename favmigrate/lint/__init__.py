"""lint: find lock-unsafe statements in migration SQL before they reach production.

Rule ids are squawk's where a rule means the same. With a connection, the catalogs say how large each
table is (a blocking index build on 200 rows is a note, on 10M rows an error) and whether a type change
is binary-coercible; only catalogs are read, in a READ ONLY transaction that is rolled back.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from favmigrate.errors import UsageError
from favmigrate.lint.facts import CatalogFacts, Facts, NoFacts
from favmigrate.lint.findings import FailOn, Finding, LintReport, RuleInfo, Severity
from favmigrate.lint.rules import RULES, FileLinter

__all__ = ["RULES", "FailOn", "Finding", "LintOptions", "LintReport", "RuleInfo", "Severity", "Source",
           "lint", "lint_options", "load_config", "read_sources", "select_rules"]

CONFIG_FILE = "favmigrate.toml"
STDIN = "-"


@dataclass(frozen=True)
class Source:
    """One SQL text to lint and the name its findings carry."""

    path: str
    text: str


@dataclass(frozen=True)
class LintOptions:
    rules: tuple[RuleInfo, ...] = field(default_factory=lambda: select_rules(None, None))
    fail_on: FailOn = FailOn.WARNING
    assume_in_transaction: bool = False  # a migration tool runs each file in one transaction


def _names(values: Iterable[str]) -> list[str]:
    return [name.strip().lower() for value in values for name in value.split(",") if name.strip()]


def select_rules(rules: Sequence[str] | None, exclude: Sequence[str] | None) -> tuple[RuleInfo, ...]:
    """The rules to run: ``rules`` (ids, ``all`` or ``default``; none given: the default set) less ``exclude``.

    Raises UsageError naming any unknown rule id.
    """
    chosen: list[str] = []
    for name in _names(rules or ["default"]):
        if name == "all":
            chosen += list(RULES)
        elif name == "default":
            chosen += [rule.id for rule in RULES.values() if rule.default]
        else:
            chosen.append(name)
    excluded = _names(exclude or [])
    unknown = sorted({name for name in chosen + excluded if name not in RULES})
    if unknown:
        raise UsageError(f"unknown rule id(s): {', '.join(unknown)}",
                         hint="`favmigrate lint --list-rules` shows every rule id")
    return tuple(RULES[name] for name in RULES if name in chosen and name not in excluded)


def load_config(path: Path | None) -> dict[str, Any]:
    """The [lint] table of a project config file (``favmigrate.toml`` in the working directory when ``path`` is
    None and it exists): keys ``rules``, ``exclude`` (lists of rule ids), ``fail-on`` and
    ``assume-in-transaction`` (a boolean).

    Raises UsageError for an unreadable file, bad TOML or an unknown key. Read-only.
    """
    if path is None:
        path = Path(CONFIG_FILE)
        if not path.is_file():
            return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    table = data.get("lint", {})
    if not isinstance(table, dict):
        raise UsageError(f"config file {path}: [lint] must be a table")
    unknown = sorted(set(table) - {"rules", "exclude", "fail-on", "assume-in-transaction"})
    if unknown:
        raise UsageError(f"config file {path}: unknown [lint] key(s): {', '.join(unknown)}",
                         hint="known keys: rules, exclude, fail-on, assume-in-transaction")
    if not isinstance(table.get("assume-in-transaction", False), bool):
        raise UsageError(f"config file {path}: [lint] assume-in-transaction must be true or false")
    for key in ("rules", "exclude"):
        if key in table and not (isinstance(table[key], list) and all(isinstance(v, str) for v in table[key])):
            raise UsageError(f"config file {path}: [lint] {key} must be a list of rule ids")
    if "fail-on" in table and table["fail-on"] not in {f.value for f in FailOn}:
        raise UsageError(f"config file {path}: [lint] fail-on must be one of {', '.join(f.value for f in FailOn)}")
    return dict(table)


def lint_options(config: dict[str, Any], *, rules: Sequence[str] | None = None, exclude: Sequence[str] | None = None,
                 fail_on: str | None = None, assume_in_transaction: bool | None = None) -> LintOptions:
    """The options of a run: each given one, else the config's [lint] value, else the default.

    Raises UsageError naming an unknown rule id.
    """
    return LintOptions(
        select_rules(rules or config.get("rules"), exclude or config.get("exclude")),
        FailOn(fail_on or config.get("fail-on", FailOn.WARNING.value)),
        config.get("assume-in-transaction", False) if assume_in_transaction is None else assume_in_transaction,
    )


def read_sources(paths: Sequence[str]) -> list[Source]:
    """The SQL of every path: a file, every ``*.sql`` under a folder (sorted), or ``-`` for stdin.

    Raises UsageError for a path that does not exist, cannot be read, is not UTF-8, or is a folder without
    any ``*.sql``. Read-only.
    """
    sources: list[Source] = []
    for name in paths:
        if name == STDIN:
            sources.append(Source("<stdin>", sys.stdin.read().removeprefix("\ufeff")))
            continue
        path = Path(name)
        files = sorted(path.rglob("*.sql")) if path.is_dir() else [path]
        if not files:
            raise UsageError(f"no *.sql file under {path}")
        for file in files:
            try:
                sources.append(Source(str(file), file.read_text(encoding="utf-8-sig")))
            except FileNotFoundError:
                raise UsageError(f"cannot read {file}: no such file or folder") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"cannot read {file}: {exc}") from None
    return sources


def lint(sources: Sequence[Source], options: LintOptions, conn: psycopg.Connection[Any] | None = None) -> LintReport:
    """Lint every source. With ``conn``, facts come from its catalogs inside a READ ONLY transaction that is
    rolled back. This is a read-only operation.

    Raises UsageError for a `favmigrate:ignore` comment naming an unknown rule.
    """
    enabled = frozenset(rule.id for rule in options.rules)

    def run(facts: Facts) -> list[Finding]:
        findings: list[Finding] = []
        for source in sources:
            wraps = options.assume_in_transaction
            findings += FileLinter(source.path, source.text, enabled, facts, tool_wraps=wraps, wrapped=wraps).run()
        return findings

    if conn is None:
        findings = run(NoFacts())
    else:
        from favmigrate.db import read_only

        with read_only(conn):
            findings = run(CatalogFacts(conn))
    return LintReport(tuple(s.path for s in sources), tuple(findings), options.rules, options.fail_on,
                      database=conn is not None)
