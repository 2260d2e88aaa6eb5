"""Finds the shipped sql/ and verify/ folders, from an installed wheel or from a checkout."""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def _folder(package: str, checkout_dir: str) -> Traversable:
    try:
        found = resources.files(package)
        if found.is_dir():
            return found
    except ModuleNotFoundError:
        pass
    return _CHECKOUT / checkout_dir


def sql_dir() -> Traversable:
    """The folder of migration SQL files (``sql/`` in the checkout, ``favmigrate/sql`` when installed)."""
    return _folder("favmigrate.sql", "sql")


def verify_dir() -> Traversable:
    """The folder of the expected end state and the EXPLAIN queries (``verify/``)."""
    return _folder("favmigrate.expected", "verify")


def read_sql(name: str) -> str:
    """The text of one file of ``sql/``."""
    return sql_dir().joinpath(name).read_text(encoding="utf-8")


def read_verify(name: str) -> str:
    """The text of one file of ``verify/``."""
    return verify_dir().joinpath(name).read_text(encoding="utf-8")
