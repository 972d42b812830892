"""What the guards and the lane checker report: a `Violation` and its types, kept free of torch so that
results, expectations, the bug registry and the CLI read them without loading it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Side = Literal["underflow", "overflow"]
Access = Literal["write", "read"]
UNHELD = "(slab)"  # the buffer a violation names for slab bytes that no buffer held (see Guards.check_free)


@dataclass(frozen=True)
class Violation:
    """Bytes outside one buffer that a run wrote (or, for `access="read"`, read), as offsets from its edge.

    Overflow offsets count from the end (0 is the first byte past it); underflow offsets are negative from the
    start (-1 is the last byte before it). `rows` counts rows of a 2-D buffer.

    Two detectors make them. The guards see bytes a write changed in the red zones around a buffer: `arg` is
    None, and `at_least` says the change reached the guard's far end, so the true extent is at least `extent`.
    The lane checker (under the Triton interpreter) sees every lane of every access against the view the
    kernel was given as `arg`: offsets are then from that view's edge, `buffer_bytes` is the view's size and
    `at` its byte offset in the buffer, and the figures are exact. `hits` names the other buffers whose
    bytes the same access (or the same corrupted range of guard bytes) reached.
    """

    buffer: str
    site: str
    side: Side
    first_offset: int
    last_offset: int
    bytes: int
    rows: int | None
    buffer_bytes: int
    op: str | None
    phases: tuple[str, ...]
    # (byte offset, bytes) of the view the op was given, when the guarded buffer is its whole allocation and the
    # view covers only part of it: the offsets above are then from the allocation's edge, not the view's.
    view: tuple[int, int] | None = None
    access: Access = "write"
    arg: str | None = None  # the kernel's parameter the access went through (lane checker)
    at: int | None = None  # byte offset of that argument's view in `buffer`, when it is not all of it
    at_least: bool = False
    hits: tuple[str, ...] = ()

    @property
    def extent(self) -> int:
        """Bytes from the edge through the farthest corrupted byte."""
        return self.last_offset + 1 if self.side == "overflow" else -self.first_offset
