"""One exception root, translated to an exit status in one place (the CLI)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit-code convention shared by every command."""

    OK = 0
    FAILED = 1  # a check failed, drift, or work pending
    PRECONDITION = 2  # usage, connection or preflight error; nothing changed
    INTERRUPTED = 3  # interrupted or partially done; safe to re-run


class FavmigrateError(Exception):
    """A failure to run, with the exit code the CLI turns it into, an optional hint, and ``details``: lines
    shown under the message but never recorded (the message may go to favmigrate.history)."""

    exit_code: ExitCode = ExitCode.PRECONDITION

    def __init__(self, message: str, *, hint: str | None = None, details: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details


class UsageError(FavmigrateError):
    """Options that do not fit together, or a file that cannot be read."""


class ConnectionFailed(FavmigrateError):
    """The server could not be reached or refused the login (message carries no password)."""


class PoolerRefused(FavmigrateError):
    """A command that changes the database was pointed at a transaction pooler."""


class ReadOnlyServer(FavmigrateError):
    """A command that changes the database was pointed at a hot standby or a read-only database."""


class PreflightFailed(FavmigrateError):
    """The database is not in a state the command can safely start from; nothing was changed."""

    def __init__(self, message: str, *, problems: list[str] | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems or []


class LockHeld(FavmigrateError):
    """Another favmigrate run holds the advisory lock, or application locks outlasted the retries."""

    def __init__(self, message: str, *, blockers: list[dict[str, object]] | None = None,
                 hint: str | None = None, details: tuple[str, ...] = ()) -> None:
        super().__init__(message, hint=hint, details=details)
        self.blockers = blockers or []


class StepFailed(FavmigrateError):
    """A migration step raised an error from the server; earlier steps stay done and re-running resumes."""

    exit_code = ExitCode.INTERRUPTED


class Interrupted(FavmigrateError):
    """Stopped by Ctrl-C or a lost connection between statements or batches; safe to re-run."""

    exit_code = ExitCode.INTERRUPTED
