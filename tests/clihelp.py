"""Running the CLI in-process for tests, with stdout and stderr apart."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from typer.testing import CliRunner

from favmigrate.cli import app


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def cli(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> CliResult:
    """Invoke `favmigrate ARGS` in-process (FAVMIGRATE_DSN/DATABASE_URL cleared unless given)."""
    base = {"FAVMIGRATE_DSN": None, "DATABASE_URL": None, "COLUMNS": "200"}
    result = CliRunner(env={**base, **(env or {})}).invoke(app, list(args), input=input)
    return CliResult(result.exit_code, result.stdout, result.stderr)
