"""`graph-harness reproduce`, `list` and `schema` (being built: issue 4, sections 2 and 4)."""

from __future__ import annotations

from typing import Any


def add_reproduce(sub: Any) -> None:
    """Register the `reproduce` subcommand (not yet registered)."""


def add_list(sub: Any) -> None:
    """Register the `list` subcommand (not yet registered)."""


def add_schema(sub: Any) -> None:
    """Register the `schema` subcommand (not yet registered)."""
