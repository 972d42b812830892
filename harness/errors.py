"""Bad user input: one exception class whose message is one line a user can act on."""

from __future__ import annotations

from pathlib import Path

# Longest rendering of a bad value; a pasted 51-size list must not bury the rest of the line.
_SHOW_MAX = 60


class BadInput(Exception):
    """A bad scenario file, scenario id or flag; str() is one line: where, field, value, what is allowed."""


def show(value: object) -> str:
    """Render a user-supplied value on one short line: strings quoted, null for None."""
    text = one_line("null" if value is None else repr(value) if isinstance(value, str) else str(value))
    return text if len(text) <= _SHOW_MAX else text[: _SHOW_MAX - 3] + "..."


def one_line(text: str) -> str:
    """Line breaks (from YAML problems, OS errors) as spaces: every message stays one line."""
    return " ".join(text.splitlines())


def display_path(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def bad_value(where: str, field: str, got: str, allowed: str, reason: str = "") -> BadInput:
    """`where: field: got X; allowed: Y[; reason]`, the one shape every bad-input message takes."""
    head = f"{where}: {field}: " if field else f"{where}: "
    tail = f"; {reason}" if reason else ""
    return BadInput(one_line(f"{head}got {got}; allowed: {allowed}{tail}"))
