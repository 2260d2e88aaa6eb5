"""--help is the reference: every option states its default (and seconds where it is a time), and every command
and option the README names exists in that command's --help."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
import typer.main

from clihelp import cli
from favmigrate.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLES = sorted((ROOT / "examples").glob("*.yml"))
COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
# an option line of --help: "  -o, --output <file>   help ..." (a flag has no metavar)
OPTION_LINE = re.compile(r"^  (?:-\w, )?(--[\w-]+)(?: ?/ ?--[\w-]+)?(?: (<[^>]*>|[A-Z][A-Z_=.]*))?(?:\s{2,}|$)")
OTHER_PROGRAMS = ("bench.", "pytest", "pip ", "python ", "supabase ")  # lines naming their options
TIME_WORDS = ("timeout", "wait", "sleep", "lag")


@cache
def help_options(command: str | None) -> dict[str, tuple[bool, str]]:
    """--name -> (takes a value, its help text in one line) of ``favmigrate [command] --help``."""
    result = cli(*([command] if command else []), "--help")
    assert result.exit_code == 0, result.stderr
    found: dict[str, tuple[bool, list[str]]] = {}
    current = None
    for line in result.stdout.split("Options:", 1)[1].splitlines():
        match = OPTION_LINE.match(line)
        if match:
            current = match.group(1)
            found[current] = (match.group(2) is not None, [line])
        elif current and line.startswith("    "):
            found[current][1].append(line)
        else:
            current = None
    return {name: (value, " ".join(" ".join(lines).split())) for name, (value, lines) in found.items()}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_states_its_default_and_unit(command: str) -> None:
    options = help_options(command)
    assert options, f"no option parsed from `favmigrate {command} --help`"
    for name, (takes_value, text) in options.items():
        if takes_value:
            assert "[default:" in text, f"favmigrate {command} {name}: no default in --help: {text}"
        if takes_value and set(name[2:].split("-")) & set(TIME_WORDS):
            assert "seconds" in text.lower(), f"favmigrate {command} {name}: no unit in --help: {text}"


def mentions_in(path: Path) -> list[tuple[str | None, str, str]]:
    """(command or None, option, where) for every --option a README or workflow names: in a `favmigrate COMMAND
    ...` line or code span, else in the section about one command (a heading naming `favmigrate COMMAND`), else
    None."""
    mentions: list[tuple[str | None, str, str]] = []
    section: str | None = None
    benchmark = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("#"):
            heading = re.search(r"`favmigrate ([a-z-]+)", line)
            section = heading.group(1) if heading and heading.group(1) in COMMANDS else None
            benchmark = "benchmark" in line.lower()
            continue
        if benchmark or any(program in line for program in OTHER_PROGRAMS):
            continue
        taken: set[int] = set()
        # `favmigrate [--spec X] COMMAND ...`, or a code span starting with a command: `verify --absent`
        invocations = [re.finditer(start + r"((?:--[\w-]+ \S+ )*)([a-z][a-z-]*)([^`|#;&]*)", line)
                       for start in ("favmigrate ", "`")]
        for command_line in (*invocations[0], *invocations[1]):
            command = command_line.group(2)
            if command not in COMMANDS or command_line.start() in taken:
                continue
            for option in re.finditer(r"--[a-z][\w-]*", command_line.group(1) + " " + command_line.group(3)):
                mentions.append((command, option.group(0), f"{path.name}:{number}"))
            taken.update(range(command_line.start(), command_line.end()))
        for option in re.finditer(r"(?<![\w-])--[a-z][\w-]*", line):
            if option.start() not in taken:
                mentions.append((section, option.group(0), f"{path.name}:{number}"))
    return mentions


def test_the_readme_names_only_commands_that_exist() -> None:
    named = set(re.findall(r"`favmigrate ([a-z][a-z-]*)", README.read_text(encoding="utf-8")))
    assert named, "the README names no command"
    assert named <= set(COMMANDS), named - set(COMMANDS)


def options_missing_from_help(mentions: list[tuple[str | None, str, str]]) -> list[str]:
    top = help_options(None)
    everywhere = set(top).union(*(help_options(command) for command in COMMANDS))
    missing = []
    for command, option, where in mentions:
        known = set(top) | set(help_options(command)) if command else everywhere
        if option not in known:
            missing.append(f"{where}: {option} ({'favmigrate ' + command if command else 'any command'})")
    return missing


def test_every_option_the_readme_names_is_in_that_commands_help() -> None:
    mentions = mentions_in(README)
    assert len(mentions) > 50  # the extraction finds the README's options
    missing = options_missing_from_help(mentions)
    assert not missing, "options the README names that --help does not list:\n" + "\n".join(missing)


@pytest.mark.parametrize("workflow", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_the_example_workflows_run_commands_and_options_that_exist(workflow: Path) -> None:
    text = workflow.read_text(encoding="utf-8")
    commands = re.findall(r"run: favmigrate ([a-z][a-z-]*)", text)
    assert commands and set(commands) <= set(COMMANDS), commands
    assert {"lint", "apply", "verify"} <= set(commands) and "--junit" in text
    # only the favmigrate command lines: the rest are docker's and psql's options
    missing = options_missing_from_help([mention for mention in mentions_in(workflow) if mention[0]])
    assert not missing, "options the workflow uses that --help does not list:\n" + "\n".join(missing)
