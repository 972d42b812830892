"""`graph-harness report`: the nightly job (being built: issue 4, section 3)."""

from __future__ import annotations

from typing import Any


def add_report(sub: Any) -> None:
    """Register the `report` subcommand (not yet registered)."""
