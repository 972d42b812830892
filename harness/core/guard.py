"""Guarded allocations: every factory call inside the op returns a view into a red-zoned slab.

`Guards` reserves one slab up front and carves `[guard | buffer | guard]` arenas out of it, so
that buffers allocated during graph capture need no allocation inside the graph and one
comparison over the slab checks every guard with one host sync. Guard bytes are compared
bitwise against a 4-byte word that alternates between two fills from run to run:

- `nan`   0xFFC5FFC5: a quiet NaN as fp32, bf16 and fp16, so an out-of-bounds read shows in the
  output. Its sign bit is set, so a NaN that arithmetic makes of it (CUDA's 0x7FFF, x86's 0x7FC0)
  differs in every byte: on the H100 a bf16 atomic add of NaN into 0x7FC5 left 0x7FFF, its high
  byte unchanged. On CPU a NaN absorbs an atomic add without changing its bits (numpy keeps the
  payload): the `dense` run sees that add.
- `dense` 0x805A805A: a negative denormal as fp32, bf16 and fp16, so any non-zero add changes it.

Every byte of both words is non-zero (a memset to 0 shows) and the two words differ in every
byte, so the union of a `nan` run and a `dense` run finds every byte a deterministic write touched.
Buffers made by `empty` hold poison: a NaN payload for floats, 0x7F.. (huge) for ints.
"""

from __future__ import annotations

import ctypes
import gc
import linecache
import os
import re
import sys
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from graph_harness.core import phases
from graph_harness.core.triton_env import tl, triton  # sets TRITON_INTERPRET on a CPU-only machine before triton loads

# A violation's types live where results, expectations and the CLI read them without loading torch; they are
# re-exported here, where guard-level code and older imports find them.
from graph_harness.core.violation import UNHELD as UNHELD
from graph_harness.core.violation import Access as Access
from graph_harness.core.violation import Side as Side
from graph_harness.core.violation import Violation as Violation

if TYPE_CHECKING:
    from graph_harness.core.lanes import LaunchArg

Fill = Literal["nan", "dense"]

WORDS: dict[Fill, int] = {"nan": 0xFFC5FFC5, "dense": 0x805A805A}
# Poison for `empty` buffers as a 4-byte word, by element size: each element reads as NaN for every
# float dtype (e4m3 0x7F, bf16/fp16 0x7FC5, fp32 and fp64 too) and as a huge value for every int.
_POISON_WORD = {1: 0x7F7F7F7F, 2: 0x7FC57FC5, 4: 0x7FC57FC5, 8: 0x7FC57FC5}
_BLOCK_WORDS = 4096  # words per program of the guard kernels: 16 KiB

MIB = 1 << 20
_MIN_GUARD = 2 * MIB  # a caching-allocator small segment: an in-segment overrun fits in one guard
_RATIO = 16  # the founding overrun is 16x (aiter #2508): a guard of 16x the buffer holds it
# Inputs and constants (weights) the op only reads: 16x a 60 GB weight is no guard anyone can hold, and a read
# past a weight goes a row or a tile too far (a 128-row tile of DeepSeek-V3's fp8 w1 is 0.9 MB), not 16
# times its size. Every guard is read by every check, so this keeps a layer's weights from doubling its cost.
_BOUNDED_MAX = 4 * MIB
_ALIGN = 256  # buffer starts, as the caching allocator aligns them (Triton vectorises on 16)
# Of the slab past the last arena, what the per-launch write set watches: a store past every guard lands here.
_TAIL_WATCH = 16 * MIB
_FREE_WORD = WORDS["nan"]  # what slab bytes no buffer holds are filled with
# What a stranger writes into memory the op released, before the graph replays again: a NaN as fp32, bf16 and
# fp16 (a read of it shows in the output) that differs from the guard and poison words in every byte.
STRANGER_WORD = 0xFFA5FFA5
_FREE_CHUNK = 1 << 28  # words compared at once by `check_free`: a 1 GiB bool at most



def _dirs(module_file: str) -> tuple[str, ...]:
    """A module's folder as frames name it: as imported and resolved (an editable install's tree of links
    names frames by the link)."""
    return tuple(dict.fromkeys((str(Path(module_file).parent), str(Path(module_file).resolve().parent))))


_CORE_DIRS = _dirs(__file__)  # the harness's own frames: never an op's call site
_TORCH_DIRS = _dirs(torch.__file__)
# Allocations made by triton itself (the interpreter's host copies of arguments) are not the op's.
_TRITON_DIRS = _dirs(triton.__file__)
_THIS = {__file__, str(Path(__file__).resolve())}
_ASSIGN = re.compile(r"\s*(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*)\s*(?::[^=]+)?=[^=]")  # `ws = `, `self.ws = `


def _lanes_checked(device: torch.device) -> bool:
    from graph_harness.core.lanes import lanes_checked  # here: the lane checker imports this module

    return lanes_checked(device)


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


@dataclass(eq=False)
class Buffer:
    """One guarded allocation: its place in the slab and where the op asked for it."""

    name: str
    site: str
    start: int  # byte offset of the buffer in the slab
    nbytes: int
    left: int  # guard bytes before the buffer
    right: int  # guard bytes after it
    row_bytes: int | None  # row stride of a 2-D buffer
    tag: int | None = None  # the capture size it belongs to, when several share the slab
    poison: int | None = None  # the 4-byte poison word of an `empty` buffer, re-written by every `arm`
    view: tuple[int, int] | None = None  # (byte offset, bytes) of the view the op was given, when only part of it
    # What a tensor made for the op holds on to (see Guards.owned): dead once nothing points at the buffer.
    holder: weakref.ref[Any] | None = None
    persistent: bool = False  # still pointed at when its scope ended: the op cached it
    # A constant's bytes as they should be (the tensor it was copied from, as uint8): the write set compares its
    # body against them after each launch instead of snapshotting a layer's weights before every one.
    source: torch.Tensor | None = None
    dtype: torch.dtype | None = None  # what the op was given it as
    adopted: bool = False  # a copy of a tensor made outside the op (an input, a constant)
    resized_away: bool = False  # the op `resize_`d its tensor past it: torch would have freed it

    def alive(self) -> bool:
        return self.holder is not None and self.holder() is not None


class _CudaArena:
    """Device memory as `__cuda_array_interface__`: a tensor made of it holds this object until it dies, and
    this object the slab, so that an op that caches the tensor past its check never points at freed memory."""

    __slots__ = ("__cuda_array_interface__", "__weakref__", "slab")

    def __init__(self, address: int, nbytes: int, slab: torch.Tensor) -> None:
        self.__cuda_array_interface__ = {"shape": (nbytes,), "typestr": "|u1", "data": (address, False),
                                         "version": 3, "strides": None}
        self.slab = slab


class _HostArena(np.ndarray):
    """Host memory of the slab as a numpy array: as `_CudaArena`, it holds the slab."""

    slab: torch.Tensor


@dataclass
class _Finding:
    """The union over runs of the corrupted bytes on one side of one buffer."""

    buffer: Buffer
    side: Side
    bits: torch.Tensor  # one bit per guard byte, packed 8 to a uint8, on the slab's device
    op: str | None
    phases: list[str] = field(default_factory=list)


_CHUNK_LIMIT = 1 << 22  # addresses a stray keeps before folding them into one sorted unique array


@dataclass(eq=False)
class _Stray:
    """The union over runs of the bytes outside its view that one kernel reached through one argument.

    Bytes are kept as offsets from the start of the buffer the view lies in (or of the view, for memory the
    harness did not make): a capture size's eager runs and its replays use buffers carved at other addresses.
    """

    kernel: str
    param: str
    access: Access
    owner: Buffer | None  # the guarded buffer the argument's view lies in; None for memory the harness did not make
    at: int  # the view's byte offset in it
    span: int  # the view's bytes
    row_bytes: int | None
    tag: int | None
    phases: list[str] = field(default_factory=list)
    offsets: _Offsets = field(default_factory=lambda: _Offsets())
    # The same bytes from the start of each buffer whose arena they lie in, by (name, site): what they explain.
    frames: dict[tuple[str, str], _Offsets] = field(default_factory=dict)


class _Offsets:
    """A growing set of byte offsets, kept as chunks and folded into one sorted unique array when read."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.count = 0

    def add(self, offsets: np.ndarray) -> None:
        self.chunks.append(offsets)
        self.count += offsets.size
        if self.count > _CHUNK_LIMIT:
            self.chunks = [self.sorted()]
            self.count = self.chunks[0].size

    def sorted(self) -> np.ndarray:
        if len(self.chunks) != 1:
            self.chunks = [np.unique(np.concatenate(self.chunks))] if self.chunks else [np.empty(0, np.int64)]
        return self.chunks[0]


@triton.jit  # type: ignore[untyped-decorator]
def _arm_kernel(words_ptr, bytes_ptr, lo_ptr, hi_ptr, value_ptr, word, poisoned, flip,  # type: ignore[no-untyped-def]
                tail_at_ptr, tail_byte_ptr, n_tail, BLOCK: tl.constexpr, TAIL: tl.constexpr):
    """Each program fills one block [lo, hi) of words: `word` where its value is -1 (a guard), else its
    poison (each bit flipped where `flip` is -1, times `poisoned`). Program 0 also writes the odd bytes that share
    a word with a buffer's end."""
    pid = tl.program_id(0)
    lo = tl.load(lo_ptr + pid)
    hi = tl.load(hi_ptr + pid)
    value = tl.load(value_ptr + pid)
    fill = tl.where(value == -1, word, (value ^ flip) * poisoned)
    offs = lo + tl.arange(0, BLOCK)
    tl.store(words_ptr + offs, tl.zeros((BLOCK,), tl.int32) + fill, mask=offs < hi)
    if pid == 0:
        t = tl.arange(0, TAIL)
        at = tl.load(tail_at_ptr + t, mask=t < n_tail, other=0)
        byte = tl.load(tail_byte_ptr + t, mask=t < n_tail, other=0)
        tl.store(bytes_ptr + at, byte, mask=t < n_tail)


@triton.jit  # type: ignore[untyped-decorator]
def _check_kernel(words_ptr, bytes_ptr, lo_ptr, hi_ptr, word, flag_ptr,  # type: ignore[no-untyped-def]
                  tail_at_ptr, tail_byte_ptr, n_tail, BLOCK: tl.constexpr, TAIL: tl.constexpr):
    """Add to the flag how many guard words (and odd guard bytes, in program 0) differ from the fill."""
    pid = tl.program_id(0)
    lo = tl.load(lo_ptr + pid)
    hi = tl.load(hi_ptr + pid)
    offs = lo + tl.arange(0, BLOCK)
    words = tl.load(words_ptr + offs, mask=offs < hi, other=word)
    changed = tl.sum((words != word).to(tl.int32), axis=0)
    if pid == 0:
        t = tl.arange(0, TAIL)
        at = tl.load(tail_at_ptr + t, mask=t < n_tail, other=0)
        want = tl.load(tail_byte_ptr + t, mask=t < n_tail, other=0)
        got = tl.load(bytes_ptr + at, mask=t < n_tail, other=0)
        changed += tl.sum((got != want).to(tl.int32), axis=0)
    if changed > 0:
        tl.atomic_add(flag_ptr, changed)


@triton.jit  # type: ignore[untyped-decorator]
def _snap_kernel(words_ptr, snap_ptr, lo_ptr, hi_ptr, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def]
    """Copy block [lo, hi) of words to the snapshot, block i at word i * BLOCK."""
    pid = tl.program_id(0)
    lo = tl.load(lo_ptr + pid)
    hi = tl.load(hi_ptr + pid)
    i = tl.arange(0, BLOCK)
    keep = lo + i < hi
    tl.store(snap_ptr + pid.to(tl.int64) * BLOCK + i, tl.load(words_ptr + lo + i, mask=keep), mask=keep)


@triton.jit  # type: ignore[untyped-decorator]
def _diff_kernel(words_ptr, ref_ptr, lo_ptr, hi_ptr, at_ptr, skip_lo_ptr, skip_hi_ptr, n_skip,  # type: ignore[no-untyped-def]
                 counts_ptr, totals_ptr, BLOCK: tl.constexpr):
    """Count, per block [lo, hi) of words, those that differ from the reference (its words from `at`): outside
    the word ranges [skip_lo, skip_hi) into `counts`, and all of them into `totals`."""
    pid = tl.program_id(0)
    lo = tl.load(lo_ptr + pid)
    hi = tl.load(hi_ptr + pid)
    i = tl.arange(0, BLOCK)
    offs = lo + i
    keep = offs < hi
    now = tl.load(words_ptr + offs, mask=keep, other=0)
    was = tl.load(ref_ptr + tl.load(at_ptr + pid) + i, mask=keep, other=0)
    diff = (now != was) & keep
    tl.store(totals_ptr + pid, tl.sum(diff.to(tl.int32), axis=0))
    for s in range(0, n_skip):
        inside = (offs >= tl.load(skip_lo_ptr + s)) & (offs < tl.load(skip_hi_ptr + s))
        diff = diff & ~inside
    tl.store(counts_ptr + pid, tl.sum(diff.to(tl.int32), axis=0))


@triton.jit  # type: ignore[untyped-decorator]
def _free_kernel(words_ptr, n, word, count_ptr, BLOCK: tl.constexpr, ITER: tl.constexpr):  # type: ignore[no-untyped-def]
    """Add to the count how many of words [0, n) differ from `word`; each program reads ITER blocks."""
    start = tl.program_id(0).to(tl.int64) * BLOCK * ITER
    changed = 0
    for i in range(ITER):
        offs = start + i * BLOCK + tl.arange(0, BLOCK)
        got = tl.load(words_ptr + offs, mask=offs < n, other=word)
        changed += tl.sum((got != word).to(tl.int32), axis=0)
    if changed > 0:
        tl.atomic_add(count_ptr, changed)


_FREE_ITER = 64  # blocks a program of `_free_kernel` reads: 1 MiB, 12,288 programs over a 48 GiB slab


def _blocks(ranges: Sequence[tuple[int, int, int]], device: torch.device) -> tuple[torch.Tensor, ...]:
    """(lo, hi, value) word offsets of every BLOCK-sized piece of the (lo, hi, value) ranges, on
    `device`. Built with array ops: a DeepSeek-V3 EP slab at T=512 holds gigabytes of guards, and a
    Python loop over its blocks took seconds per layout."""
    table = np.asarray(ranges, dtype=np.int64).reshape(-1, 3)
    start, end, value = table.T
    counts = (np.maximum(end - start, 0) + _BLOCK_WORDS - 1) // _BLOCK_WORDS
    which = np.repeat(np.arange(len(table)), counts)
    first = np.cumsum(counts) - counts  # index of each range's first block
    lo = start[which] + (np.arange(len(which)) - first[which]) * _BLOCK_WORDS
    packed = _to_device(torch.from_numpy(np.stack([lo, np.minimum(lo + _BLOCK_WORDS, end[which]), value[which]])),
                        device)
    return packed[0], packed[1], packed[2].to(torch.int32)


def _to_device(table: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host table on `device` without waiting for the device: copied from pinned memory behind the work queued
    before it. (A copy from pageable memory waits for all of that work to finish: three such waits a layout
    change took 15 s of the H200's scenario matrix.) Under capture the plain copy's error stands: a table
    copied inside a graph would be copied again at every replay, from host memory reused since."""
    if device.type != "cuda" or torch.cuda.is_current_stream_capturing():
        return table.to(device)
    return table.pin_memory().to(device, non_blocking=True)


@dataclass
class _Layout:
    """Where the guards and the poisoned buffers lie in the slab, in words, plus the odd bytes.

    Arenas start 256-aligned, so every guard is whole words except the first bytes of a right
    guard that share a word with the buffer's end ("tail" bytes, handled one by one).
    """

    guards: list[tuple[int, int]]
    poisons: list[tuple[int, int, int]]
    tail_at: list[int]  # byte offsets of guard bytes in a buffer's last word
    poison_tail_at: list[int]  # the last bytes of an `empty` buffer that do not fill a word
    poison_tail_bytes: list[int]
    device: torch.device
    _cache: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, buffers: Sequence[Buffer], device: torch.device, *, fresh_from: int = 0) -> _Layout:
        """`fresh_from`: no guard byte before it (a guard the buffer shares with the one before it, armed already
        and maybe holding what an overrun of that one wrote, not yet checked)."""
        guards: list[tuple[int, int]] = []
        poisons: list[tuple[int, int, int]] = []
        tail: list[int] = []
        poison_tail: list[int] = []
        poison_bytes: list[int] = []
        for b in buffers:
            end = b.start + b.nbytes
            guards.append((max(b.start - b.left, fresh_from) // 4, b.start // 4))
            guards.append((_round_up(end, 4) // 4, (end + b.right) // 4))
            tail.extend(range(end, _round_up(end, 4)))
            if b.poison is not None:
                poisons.append((b.start // 4, end // 4, b.poison))
                pattern = b.poison.to_bytes(4, "little")
                poison_tail.extend(range(end // 4 * 4, end))
                poison_bytes.extend(pattern[i % 4] for i in range(end // 4 * 4, end))
        return cls(_merged(guards), poisons, tail, poison_tail, poison_bytes, device)

    def cached(self, name: str, build: Callable[[], Any]) -> Any:
        """What `build` returns (a device table), built once per layout."""
        if name not in self._cache:
            self._cache[name] = build()
        return self._cache[name]

    def table(self, name: str, values: Callable[[], Sequence[int]], dtype: torch.dtype = torch.int64) -> torch.Tensor:
        """A device copy of a host list, built and copied once per layout."""
        return self.cached(name, lambda: _to_device(torch.tensor(list(values()), dtype=dtype), self.device))  # type: ignore[no-any-return]

    def blocks(self, name: str, ranges: Callable[[], Sequence[tuple[int, int, int]]]) -> tuple[torch.Tensor, ...]:
        """`_blocks` of the ranges, built once per layout."""
        return self.cached(name, lambda: _blocks(ranges(), self.device))  # type: ignore[no-any-return]

    def _arm_ranges(self) -> list[tuple[int, int, int]]:
        return [(a, b, -1) for a, b in self.guards] + [(a, b, _signed(w, 32)) for a, b, w in self.poisons]

    def arm(self, slab: torch.Tensor, word: int, pattern: bytes, poisoned: bool, flipped: bool) -> None:
        """One launch: every guard word, every poisoned word and every odd byte."""
        lo, hi, value = self.blocks("arm", self._arm_ranges)
        if not lo.numel():
            return
        at = self.tail_at + self.poison_tail_at
        _arm_kernel[(lo.numel(),)](
            slab.view(torch.int32), slab, lo, hi, value, _signed(word, 32), int(poisoned), -int(flipped),
            self.table("arm.tail", lambda: at),
            self.table(f"arm.bytes.{word}.{poisoned}.{flipped}", lambda: [pattern[i % 4] for i in self.tail_at]
                       + [(b ^ 0xFF * flipped) * poisoned for b in self.poison_tail_bytes], torch.uint8),
            len(at), BLOCK=_BLOCK_WORDS, TAIL=triton.next_power_of_2(max(len(at), 1)))

    def count_changed(self, slab: torch.Tensor, word: int, pattern: bytes, flag: torch.Tensor) -> None:
        """One launch: add to `flag` the guard words and odd bytes that differ from the fill."""
        lo, hi, _ = self.blocks("check", lambda: [(a, b, 0) for a, b in self.guards])
        if not lo.numel():
            return
        _check_kernel[(lo.numel(),)](
            slab.view(torch.int32), slab, lo, hi, _signed(word, 32), flag,
            self.table("check.tail", lambda: self.tail_at),
            self.table(f"check.bytes.{word}", lambda: [pattern[i % 4] for i in self.tail_at], torch.uint8),
            len(self.tail_at), BLOCK=_BLOCK_WORDS, TAIL=triton.next_power_of_2(max(len(self.tail_at), 1)))


def adoption_bytes(tensors: Sequence[torch.Tensor]) -> int:
    """Slab room that `Guards.adopt` takes for these tensors: each whole allocation and its bounded guards."""
    return sum(_round_up(t.untyped_storage().nbytes(), _ALIGN) + 2 * (_BOUNDED_MAX + _ALIGN) for t in tensors)


class UsageError(Exception):
    """The harness was used against its rules (an op that returns no tensor, inputs on another device): raised
    to the caller, never turned into a verdict about the op."""


class GuardBudgetError(UsageError):
    """The slab cannot hold a buffer even with the smallest guard (not a RuntimeError: no op raised it)."""


def call_site() -> tuple[str, str] | None:
    """(name, "file:line in function") of the first frame outside torch and the harness.

    The name is the assignment target on that line when there is one (`tmp_out = torch.empty(...)`).
    None when the factory was called by triton (the interpreter's views of kernel arguments) or by
    this module's own bookkeeping: those are not the op's buffers.
    """
    frame = sys._getframe(2)  # past call_site and GuardMode.__torch_function__
    while frame is not None and frame.f_code.co_filename.startswith(_TORCH_DIRS):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "buffer", "?"
    if frame.f_code.co_filename in _THIS or frame.f_code.co_filename.startswith(_TRITON_DIRS):
        return None
    while frame.f_back is not None and frame.f_code.co_filename.startswith((*_CORE_DIRS, *_TORCH_DIRS)):
        frame = frame.f_back
    filename, line, function = frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name
    try:
        shown = str(Path(filename).resolve().relative_to(Path.cwd()))
    except ValueError:
        shown = Path(filename).name
    match = _ASSIGN.match(linecache.getline(filename, line))
    return (match.group(1) if match else function), f"{shown}:{line} in {function}"


@dataclass
class _Spare:
    """A GPU slab kept for the next `Guards` of its device and size when its user is gone: a 48 GiB slab took
    87 ms to allocate, a tenth of a scenario-matrix case on the H200, and its fill as long again on the device.
    `clean_from`: from this byte on the slab holds the free word, as `check_free` last found it (None: not known,
    the next user fills all of it)."""

    pool: torch.cuda.MemPool
    slab: torch.Tensor
    user: weakref.ref[Guards]
    clean_from: int | None = None

    def free_for(self, nbytes: int) -> bool:
        """Whether the next slab of `nbytes` can be this one: same size, its user gone, no view of it alive (an
        output the user kept points into it)."""
        if self.user() is not None or self.slab.numel() != nbytes:
            return False
        # A buffer handed out holds the slab tensor (its storage is its own: see `Guards.owned`), a plain view the
        # slab's storage: beyond this record's own reference and the call's, and the storage object made to ask,
        # any is alive.
        if sys.getrefcount(self.slab) > 2:
            return False
        count = getattr(torch._C, "_storage_Use_Count", None)
        return count is not None and count(self.slab.untyped_storage()._cdata) <= 2


_SPARES: dict[torch.device, _Spare] = {}
_keeping = False  # whether a slab is kept for the next `Guards` (see `keep_slabs`)


def keep_slabs(on: bool) -> None:
    """Keep each GPU slab for the next `Guards` of its device and size (on), or give the one kept back to the
    device now and keep none (off, the default). On where cases run one after another (`graph-harness run`, the
    scenario items under pytest); off elsewhere, or the op's own code and a user's next test would find the device
    short by up to 48 GiB."""
    global _keeping
    _keeping = on
    if not on and _SPARES:
        _SPARES.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@contextmanager
def keeping_slabs() -> Iterator[None]:
    """`keep_slabs` on for the block, off after it."""
    keep_slabs(True)
    try:
        yield
    finally:
        keep_slabs(False)


_sharing = False  # whether neighbours carved from now on share the guard between them (see `sharing_guards`)


@contextmanager
def sharing_guards() -> Iterator[None]:
    """Inside the block, `Guards` made carve each buffer against the one before it with one guard between them,
    as large as the larger of the two wants, instead of two: every guard byte is read once a check, and a check
    reads about half the bytes (`graph-harness fuzz`, which checks after every replay). Each buffer still has its
    whole guard on either side; what the layout gives up is the exact extent of an overrun that runs past its own
    guard: that one reaches the neighbour's bytes, `at least` so much, where two guards would have held it.
    Outside it (`run`, the scenario items, `check`) each buffer has guards of its own."""
    global _sharing
    saved, _sharing = _sharing, True
    try:
        yield
    finally:
        _sharing = saved


def spare_bytes(device: torch.device) -> int:
    """Device memory held by a slab no `Guards` uses, kept for the next one (`default_budget` counts it free)."""
    spare = _SPARES.get(_indexed(device))
    return spare.slab.numel() if spare is not None and spare.user() is None else 0


def _indexed(device: torch.device) -> torch.device:
    """`cuda` as the device it means now (`cuda:0`, say): the key a slab is kept by."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


class Guards:
    """A red-zoned slab on one device, and the findings of every check made on it."""

    def __init__(self, device: torch.device | str, budget: int, *, cover: int | Mapping[int, tuple[int, int]] = 0,
                 min_guard: int = _MIN_GUARD, ratio: int = _RATIO, constants: int = 0) -> None:
        self.device = _indexed(torch.device(device))
        self.budget = _round_up(budget, _ALIGN)
        # Room for copies of the tensors made outside the op (`adopt`), on top of the budget: a layer's weights
        # must not take the guards of the op's own buffers. Dropped when the device cannot hold it.
        self.constants = _round_up(constants, _ALIGN)
        # Bytes of overflow the footprint predicts (see _cover).
        self.cover = cover
        self.min_guard = min_guard
        self.ratio = ratio
        self.shared = _sharing  # neighbours share the guard between them (see sharing_guards)
        self.buffers: list[Buffer] = []
        self._limits: list[tuple[int | None, str]] = []  # (tag, what could not be guarded as wanted)
        self.fill: Fill = "nan"
        self._words: dict[Fill, int] = dict(WORDS)
        self._poisoned = True
        self._flipped = False  # `empty` poison with every bit flipped (see flipped_empties)
        self.empties = 0  # `empty` buffers made so far: a run that made none reads no poison
        self._used = 0
        self._slab: torch.Tensor | None = None
        self._pool: torch.cuda.MemPool | None = None  # the slab's own, on CUDA (see reserve)
        self._spare: _Spare | None = None  # the record the slab is kept by between users, on CUDA
        self._high = 0  # the end of the farthest arena carved: what the next user of the slab fills again
        self._flag: torch.Tensor | None = None
        self._layout: _Layout | None = None
        self._patterns: dict[int, torch.Tensor] = {}
        self._findings: dict[tuple[int | None, str, str, Side], _Finding] = {}
        self._strays: dict[tuple[Any, ...], _Stray] = {}
        self._unguarded: dict[tuple[int | None, str, str], int] = {}  # (tag, kernel, param) -> bytes of its view
        self._sizes: dict[tuple[int | None, str], int] = {}  # (tag, buffer name) -> bytes, the largest carved
        self._outside: list[tuple[int, int]] = []  # address ranges of inputs and constants left unguarded (limits)
        self.phase = ""  # the run in progress (see `running`)
        self.watching = False  # the per-launch write set is taken (see watching_writes)
        self._snap: torch.Tensor | None = None  # the watched bytes before the launch in progress
        self._taken = False  # `_snap` holds the bytes of the launch in progress
        self._per_launch_constants = False  # each write set covers the constants too (see constants_changed)
        # Slab bytes no buffer holds (past the last arena, and arenas given back) hold `_FREE_WORD` where the
        # lane checker does not run: `check_free` finds what a write past every guard changed there.
        self._free_filled = False
        self._free_seen: list[np.ndarray] = []  # addresses there that a launch's write set already named
        self._loose: np.ndarray | None = None  # addresses there found changed by `check_free`
        self._label: str | None = None
        self._name: str | None = None
        self._tag: int | None = None
        self._bounded = False
        self._handed_out: dict[int, tuple[Buffer, torch.Tensor]] = {}  # released buffers given to a stranger

    # -- the slab ------------------------------------------------------------------------------

    def reserve(self) -> None:
        """Allocate the slab now: before any capture, which may not allocate outside its pool.

        On CUDA the slab is the only block of a segment of its own, from a private pool. Carved from a
        larger cached segment, a memset past its end would land in the process's other tensors and
        pass instantiation; whether it did would hang on what the process ran before.
        """
        if self._slab is None:
            if self.device.type == "cuda" and self._borrow():
                return
            if self.device.type == "cuda":
                self._pool = torch.cuda.MemPool()
            try:
                self._slab = self._allocate_slab(self.budget + self.constants)
            except torch.OutOfMemoryError:
                self.constants = 0  # then `adopt` copies only what leaves the op's buffers room, and says so
            try:
                if self._slab is None:
                    self._slab = self._allocate_slab(self.budget)
            except torch.OutOfMemoryError as err:
                raise GuardBudgetError(f"a guard slab of {self.budget:,} B does not fit in device memory") from err
            self._ready((0, self._slab.numel()))
            if self._pool is not None and _keeping:
                self._spare = _SPARES[self.device] = _Spare(self._pool, self._slab, weakref.ref(self))

    def _borrow(self) -> bool:
        """Take the device's spare slab if it has the size wanted, filling again only what its last user may have
        changed; else let it go (its memory back to the device) and say no."""
        spare = _SPARES.get(self.device)
        if spare is None:
            return False
        if not spare.free_for(self.budget + self.constants):
            if spare.user() is None:
                del _SPARES[self.device]
                del spare
                torch.cuda.empty_cache()
            return False
        spare.user = weakref.ref(self)
        self._spare, self._pool, self._slab = spare, spare.pool, spare.slab
        self._ready((0, spare.clean_from if spare.clean_from is not None else spare.slab.numel()))
        spare.clean_from = None
        return True

    def _ready(self, dirty: tuple[int, int]) -> None:
        """The slab just taken: its room counted, the flag made, and on a GPU its `dirty` byte range filled."""
        assert self._slab is not None
        self.budget += self.constants  # `constants` stays what is left of that room, for `adopt` alone
        self._flag = torch.zeros(1, dtype=torch.int32, device=self.device)
        if not _lanes_checked(self.device):
            self._fill_free([(dirty[0], _round_up(dirty[1], 4))])
            self._free_filled = True

    def _allocate_slab(self, nbytes: int) -> torch.Tensor:
        own_segment = torch.cuda.use_mem_pool(self._pool, self.device) if self._pool is not None else nullcontext()
        with own_segment:
            return torch.empty(nbytes, dtype=torch.uint8, device=self.device)

    @property
    def slab(self) -> torch.Tensor:
        self.reserve()
        assert self._slab is not None
        return self._slab

    def _cover(self, nbytes: int) -> int:
        """The predicted overflow this buffer's guard must hold: every buffer's for an int cover; per
        capture-size tag, only the buffer of the footprint's size (the stage1 output) for a mapping."""
        if self._name is not None:
            return 0  # the harness's own static inputs: the op only reads them
        if isinstance(self.cover, int):
            return self.cover
        alloc, overflow = self.cover.get(self._tag, (0, 0)) if self._tag is not None else (0, 0)
        return overflow if nbytes == alloc else 0

    def _guard_size(self, nbytes: int) -> int:
        if self._bounded:
            return _round_up(max(self.min_guard, min(self.ratio * nbytes, _BOUNDED_MAX)), _ALIGN)
        return _round_up(max(self.min_guard, self.ratio * nbytes, self._cover(nbytes)), _ALIGN)

    def allocate(self, nbytes: int, name: str, site: str, row_bytes: int | None, *, empty_itemsize: int | None = None,
                 capturing: bool = False) -> Buffer:
        """Carve `[guard | nbytes | guard]`; shrink the guards to fit the budget, and say so.

        Outside capture the guards are armed and an `empty` buffer (`empty_itemsize` set) poisoned at
        once; during capture that waits for the next `arm`, so the graph holds no harness nodes.
        """
        self.reserve()
        want = self._guard_size(nbytes)
        body = _round_up(max(nbytes, 1), 4)
        guard = want
        free = self.budget - self._used
        # Short of room: the guards would take over a quarter of what the buffer leaves (a bounded guard, at most
        # 4 MiB, never is: only whether it fits at all counts). Then the guard the footprint needs (or 2 MiB) if
        # it fits, else each guard a sixteenth of what is left, so that the buffers after this one get guards.
        tight = 2 * guard + _round_up(body, _ALIGN) > free if self._bounded else (
            2 * guard > (free - _round_up(body, _ALIGN)) // 4)
        if tight:
            guard = _round_up(max(self.min_guard, self._cover(nbytes)), _ALIGN)
            if 2 * guard + _round_up(body, _ALIGN) > free:
                guard = (free - _round_up(body, _ALIGN)) // 16 // _ALIGN * _ALIGN
            if guard < _ALIGN:
                raise GuardBudgetError(
                    f"guard budget {self.budget:,} B exhausted at {name} ({site}): {nbytes:,} B needs "
                    f"{2 * _ALIGN + body:,} B, {free:,} B left")
            if guard < want:
                self._limits.append((self._tag, f"not fully guarded: {name} ({site}) has {guard:,} B guards, "
                                                f"{want:,} B wanted (guard budget {self.budget:,} B)"))
        # Where neighbours share the guard between them (sharing_guards), it is as large as the larger of the two
        # wants, and the first one's overflow guard reaches the next one's start.
        prev, armed = self._adjacent() if self.shared else None, self._used
        base = _round_up(prev.start + prev.nbytes, _ALIGN) if prev is not None else self._used
        start = max(self._used, base + guard)
        if prev is not None:
            prev.right = start - (prev.start + prev.nbytes)
        right = _round_up(start + body, _ALIGN) + guard - (start + nbytes)
        poison = _POISON_WORD.get(empty_itemsize or 0) if empty_itemsize else None
        self.empties += poison is not None
        buf = Buffer(name, site, start, nbytes, start - base, right, row_bytes, self._tag, poison)
        self._used = start + nbytes + right
        self._high = max(self._high, self._used)
        self._touched()
        self.buffers.append(buf)
        self._sizes[self._tag, name] = max(nbytes, self._sizes.get((self._tag, name), 0))
        self._layout = None
        if not capturing:
            self._arm_with(_Layout.of([buf], self.device, fresh_from=armed), self._words[self.fill], few=True)
        return buf

    def _adjacent(self) -> Buffer | None:
        """The buffer whose overflow guard ends where the next one is carved: that guard is the next one's
        underflow guard too."""
        return next((b for b in reversed(self.buffers) if b.start + b.nbytes + b.right == self._used), None)

    def view(self, buf: Buffer, dtype: torch.dtype) -> torch.Tensor:
        """The buffer's bytes as a flat tensor of `dtype`."""
        return self.slab[buf.start: buf.start + buf.nbytes].view(dtype)

    def adopt(self, tensor: torch.Tensor, name: str, *, constant: bool = False) -> torch.Tensor:
        """A guarded copy of a tensor made outside the op (an input, a weight): its whole allocation is copied
        into an arena with a bounded guard, and the same view of it returned, so strides and offset stay.
        A `constant` (never re-loaded between runs, unlike an input) keeps the tensor as its reference bytes.

        The guards sit at the allocation's edges. When the tensor covers only part of its allocation, an
        overrun of the view that stays inside the allocation is not seen, and `limits` says so.
        """
        if tensor.device.type != self.device.type or (tensor.device.index not in (None, self.device.index)):
            raise UsageError(f"{name} is on {tensor.device}; the guards are on {self.device}: make it there")
        storage = tensor.untyped_storage()
        itemsize = tensor.element_size()
        nbytes = storage.nbytes()
        need = adoption_bytes([tensor])
        if need <= self.constants:
            self.constants -= need  # room reserved for it
        elif 2 * nbytes > self.budget - self._used - self.constants:
            # A copy that would take half the room left would starve the op's own buffers of guards: the tensor
            # stays where it is, unguarded, and the result says so. (A GPU run of DeepSeek-V3 EP, 11 GB of
            # weights, under four xdist workers: each worker's budget is a quarter of 60% of the free memory.)
            self._limits.append((self._tag, f"{name} ({nbytes:,} B) is not guarded: a copy would take more than "
                                            f"half of the guard budget's {self.budget - self._used:,} B left; "
                                            "a larger --guard-budget guards it"))
            self._outside.append((storage.data_ptr(), storage.data_ptr() + nbytes))
            return tensor
        row_bytes = tensor.stride(0) * itemsize if tensor.dim() == 2 else None
        span = (1 + sum((n - 1) * st for n, st in zip(tensor.shape, tensor.stride(), strict=True))
                if tensor.numel() else 0) * itemsize
        offset = int(tensor.storage_offset()) * itemsize
        with self.named(name), self._setting("_bounded", True):
            buf = self.allocate(nbytes, name, "made outside the op", row_bytes)
        buf.adopted, buf.dtype = True, tensor.dtype
        if (offset, span) != (0, nbytes):
            buf.view = (offset, span)
        if (offset, span) != (0, nbytes) and not _lanes_checked(self.device):  # the lane checker sees the view
            self._limits.append((self._tag, f"{name} is a view of {span:,} B at byte {offset:,} of its {nbytes:,} B "
                                            "allocation: the guards sit at the allocation's edges, so an overrun of "
                                            "the view that stays inside the allocation is not seen"))
        whole = torch.empty(0, dtype=torch.uint8, device=tensor.device).set_(storage, 0, (nbytes,), (1,))
        self.view(buf, torch.uint8).copy_(whole)
        if constant and nbytes % 4 == 0 and whole.data_ptr() % 4 == 0:
            buf.source = whole
        flat = self.slab[buf.start: buf.start + _round_up(nbytes, itemsize)].view(tensor.dtype)
        # as_strided counts its offset in the slab's storage, not from `flat`'s start.
        return flat.as_strided(tensor.shape, tensor.stride(), flat.storage_offset() + tensor.storage_offset())

    def limits(self, tag: int | None = None) -> tuple[str, ...]:
        """What could not be guarded as wanted, for buffers of capture size `tag` and those shared by all sizes."""
        return tuple(dict.fromkeys(text for t, text in self._limits if tag is None or t in (None, tag)))

    def owned(self, buf: Buffer, dtype: torch.dtype) -> torch.Tensor:
        """The buffer's bytes as a flat tensor of `dtype` with a storage of its own, so that `scope` sees whether
        anything still points at it (every view of the tensor holds that storage); a slab view where that fails."""
        nbytes = max(_round_up(buf.nbytes, dtype.itemsize), dtype.itemsize)
        address = self.slab.data_ptr() + buf.start
        holder: Any
        try:
            if self.device.type == "cuda":
                holder = _CudaArena(address, nbytes, self.slab)
                raw = torch.as_tensor(holder, device=self.device)
            else:
                holder = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(address)).view(_HostArena)
                holder.slab = self.slab
                raw = torch.from_numpy(holder)
        except (TypeError, RuntimeError, ValueError):
            return self.view(buf, dtype)
        buf.holder = weakref.ref(holder)
        return raw.view(dtype)[: buf.nbytes // dtype.itemsize]

    @contextmanager
    def scope(self) -> Iterator[None]:
        """Buffers carved inside are released on exit (the slab pointer goes back), except those something still
        points at when the block ends normally: the op cached them. Those keep their arenas and guards for good,
        and their bytes are no longer poisoned (the cache's contents are the op's)."""
        used, count = self._used, len(self.buffers)
        ended = False
        try:
            yield
            ended = True
        finally:
            carved = self.buffers[count:]
            if ended and any(b.alive() for b in carved):
                # A young reference cycle is not a cache. (A full collection took 0.12 s a scope on the H200;
                # a cycle older than that only keeps an arena it does not need, checked like any other.)
                gc.collect(1)
            kept = [b for b in carved if ended and b.alive()]
            for buf in kept:
                buf.persistent, buf.poison = True, None
            released = [b for b in carved if b not in kept]
            self.buffers[count:] = kept
            # (the buffer before the scope keeps the guard it shared with the first buffer carved in it)
            self._used = max([used, *(b.start + b.nbytes + b.right for b in self.buffers)])
            if self._free_filled:  # what was released, less the guards it shared with buffers still there
                self._fill_free(_less(_arenas(released), _arenas(self.buffers)))
            self._layout = None

    def persistent(self, tag: int | None = None) -> tuple[str, ...]:
        """The buffers the op cached, as `name (site): N B`, of capture size `tag` and those shared by all."""
        return tuple(f"{b.name} ({b.site}): {b.nbytes:,} B" for b in self.buffers
                     if b.persistent and (tag is None or b.tag in (None, tag)))

    def sizes(self, tag: int | None = None) -> dict[str, int]:
        """Bytes of every buffer carved for capture size `tag` (and those shared by all), by name, the largest
        where a name recurs: what a clean case allocated, which its violations cannot say."""
        sizes: dict[str, int] = {}
        for (t, name), nbytes in self._sizes.items():
            if tag is None or t in (None, tag):
                sizes[name] = max(nbytes, sizes.get(name, 0))
        return sizes

    @contextmanager
    def _setting(self, attribute: str, value: object) -> Iterator[None]:
        """Set one attribute for the duration of a block, then put the previous value back."""
        previous = getattr(self, attribute)
        setattr(self, attribute, value)
        try:
            yield
        finally:
            setattr(self, attribute, previous)

    def label(self, name: str) -> AbstractContextManager[None]:
        """Name the buffers allocated inside: `name`, or `name.<target>` when the site has one."""
        return self._setting("_label", name)

    def tagged(self, tag: int) -> AbstractContextManager[None]:
        """Tag the buffers allocated inside (with a capture size), so that findings stay apart."""
        return self._setting("_tag", tag)

    def benign_empties(self) -> AbstractContextManager[None]:
        """`empty` buffers get zeros instead of poison (an attribution run)."""
        return self._setting("_poisoned", False)

    def flipped_empties(self) -> AbstractContextManager[None]:
        """`empty` buffers hold their poison with every bit flipped (0x7FC5 becomes 0x803A, 0x7F 0x80): two runs
        that differ only in it differ in every byte a read of poison takes."""
        return self._setting("_flipped", True)

    @contextmanager
    def benign_guards(self) -> Iterator[None]:
        """Guards hold zeros instead of a fill (an attribution run; nothing is checked)."""
        saved, self._words[self.fill] = self._words[self.fill], 0
        self.arm(self.fill)
        try:
            yield
        finally:
            self._words[self.fill] = saved

    def named(self, name: str) -> AbstractContextManager[None]:
        """Give the buffers allocated inside exactly this name (the harness's static inputs)."""
        return self._setting("_name", name)

    def labelled(self, inferred: str) -> str:
        if self._name is not None:
            return self._name
        return inferred if self._label is None else f"{self._label}.{inferred}"

    # -- arming and checking -------------------------------------------------------------------

    @property
    def layout(self) -> _Layout:
        if self._layout is None:
            self._layout = _Layout.of(self.buffers, self.device)
        return self._layout

    def _pattern(self, word: int) -> torch.Tensor:
        if word not in self._patterns:
            self._patterns[word] = torch.tensor(list(word.to_bytes(4, "little")), dtype=torch.uint8,
                                                device=self.device)
        return self._patterns[word]

    def _arm_with(self, layout: _Layout, word: int, *, few: bool = False) -> None:
        """Fill the layout's guards with `word` and poison its `empty` buffers. `few`: a layout of one buffer, whose
        few ranges fills write at less cost than building the arming kernel's block tables (0.65 ms a buffer
        on an H200, 53 buffers a case)."""
        pattern = word.to_bytes(4, "little")
        if self.device.type == "cuda" and not few:
            layout.arm(self.slab, word, pattern, self._poisoned, self._flipped)
            return
        words = self.slab.view(torch.int32)
        for lo, hi in layout.guards:
            words[lo:hi].fill_(_signed(word, 32))
        for lo, hi, poison in layout.poisons:
            words[lo:hi].fill_(_signed(poison ^ (0xFFFFFFFF * self._flipped), 32) if self._poisoned else 0)
        for at in layout.tail_at:
            self.slab[at] = pattern[at % 4]
        for at, byte in zip(layout.poison_tail_at, layout.poison_tail_bytes, strict=True):
            self.slab[at] = (byte ^ (0xFF * self._flipped)) if self._poisoned else 0

    def arm(self, fill: Fill) -> None:
        """Write `fill` into every guard and poison every `empty` buffer: before each run, outside capture."""
        with phases.timed("guards"):
            self.fill = fill
            self._touched()
            self._arm_with(self.layout, self._words[fill])

    def _touched(self) -> None:
        """A run or a carve may change the slab anywhere: what `check_free` found clean is no longer known."""
        if self._spare is not None:
            self._spare.clean_from = None

    def dirty(self) -> bool:
        """Whether any guard byte differs from the armed fill: one pass over the guards, one host sync."""
        layout, word = self.layout, self._words[self.fill]
        pattern = word.to_bytes(4, "little")
        if self.device.type == "cuda":
            assert self._flag is not None
            self._flag.zero_()
            layout.count_changed(self.slab, word, pattern, self._flag)
            return bool(self._flag.item())
        words = self.slab.view(torch.int32)
        tail = self.slab[layout.tail_at].tolist() if layout.tail_at else []
        return (any(got != pattern[at % 4] for at, got in zip(layout.tail_at, tail, strict=True))
                or any(bool((words[lo:hi] != _signed(word, 32)).any()) for lo, hi in layout.guards))

    def count_changed(self, flag: torch.Tensor) -> None:
        """Add to the device word `flag` how many guard bytes differ from the armed fill: one launch, no sync (a
        GPU slab's)."""
        word = self._words[self.fill]
        self.layout.count_changed(self.slab, word, word.to_bytes(4, "little"), flag)

    def findings(self) -> int:
        """How many findings are recorded so far: a count that grows when a check or the lane checker finds
        something new."""
        return len(self._findings) + len(self._strays) + (self._loose is not None)

    def forget(self) -> None:
        """Drop every finding so far, so that the next run's are its own (who wrote them included)."""
        self._findings.clear()
        self._strays.clear()
        self._loose = None

    def check(self, phase: str, op: str | None = None) -> bool:
        """Record what changed in the guards since they were armed; True if anything did."""
        with phases.timed("guards"):
            return self._check(phase, op)

    def _check(self, phase: str, op: str | None) -> bool:
        if not self.dirty():
            return False
        pattern = self._pattern(self._words[self.fill])
        after = self._shared_neighbours()
        inside = {id(b) for b in after.values()}
        for buf in self.buffers:
            end = buf.start + buf.nbytes
            if id(buf) not in inside:  # (an underflow guard shared with the buffer before is read with its overflow)
                changed = self._changed(buf.start - buf.left, buf.start, pattern)
                if bool(changed.any()):
                    self._record(buf, "underflow", _pack(changed), phase, op)
            changed = self._changed(end, end + buf.right, pattern)
            if not bool(changed.any()):
                continue
            neighbour = after.get(id(buf))
            if neighbour is None:
                self._record(buf, "overflow", _pack(changed), phase, op)
                continue
            mine, theirs = _split_shared(changed, neighbour.left)
            if mine is not None:
                self._record(buf, "overflow", _pack(mine), phase, op)
            if theirs is not None:
                self._record(neighbour, "underflow", _pack(theirs[changed.numel() - neighbour.left:]), phase, op)
        return True

    def _changed(self, lo: int, hi: int, pattern: torch.Tensor) -> torch.Tensor:
        """Which slab bytes [lo, hi) of a guard differ from the fill."""
        expected = pattern.repeat((hi - lo) // 4 + 2)[lo % 4: lo % 4 + hi - lo]
        return self.slab[lo:hi] != expected

    def _shared_neighbours(self) -> dict[int, Buffer]:
        """For each buffer whose overflow guard is its neighbour's underflow guard too (by id), that neighbour."""
        by_start = {b.start: b for b in self.buffers}
        return {id(b): n for b in self.buffers
                if (n := by_start.get(b.start + b.nbytes + b.right)) is not None and n.left and n.left <= b.right}

    def _record(self, buf: Buffer, side: Side, bits: torch.Tensor, phase: str, op: str | None) -> None:
        key = (buf.tag, buf.name, buf.site, side)
        found = self._findings.get(key)
        if found is None:
            self._findings[key] = found = _Finding(buf, side, bits, op)
        elif found.bits.numel() != bits.numel():
            # The same buffer carved again with another guard (the budget left differed): the union, aligned at
            # the buffer's edge, under the larger guard; what earlier runs saw, and who wrote it, are kept.
            old, new = _aligned(found.bits, bits, side)
            if found.op is None and bool((new & ~old).any()):
                found.op = op
            if bits.numel() > found.bits.numel():
                found.buffer = buf
            found.bits = old | new
        else:
            if found.op is None and bool((bits & ~found.bits).any()):
                found.op = op  # the first op to change bytes nobody had
            found.bits |= bits
        if phase not in found.phases:
            found.phases.append(phase)

    def record_range(self, buf: Buffer, side: Side, lo: int, hi: int, phase: str, op: str) -> None:
        """Record bytes [lo, hi) of a guard as written without running anything (graph audit)."""
        span = buf.left if side == "underflow" else buf.right
        at = torch.arange(span, device=self.device)
        self._record(buf, side, _pack((at >= lo) & (at < hi)), phase, op)

    def owner(self, address: int) -> Buffer | None:
        """The buffer whose arena (guards included) holds a device address, if any; in a guard two neighbours
        share, the one after it."""
        base = self.slab.data_ptr()
        for buf in reversed(self.buffers):
            if base + buf.start - buf.left <= address < base + buf.start + buf.nbytes + buf.right:
                return buf
        return None

    def owners(self, addresses: np.ndarray) -> list[Buffer]:
        """The buffers whose arenas hold any of these addresses (sorted byte addresses), in slab order."""
        if not self.buffers or not addresses.size:
            return []
        base = self.slab.data_ptr()
        starts = np.array([base + b.start - b.left for b in self.buffers], dtype=np.int64)
        ends = np.array([base + b.start + b.nbytes + b.right for b in self.buffers], dtype=np.int64)
        first, past = np.searchsorted(addresses, starts), np.searchsorted(addresses, ends)
        return [b for b, lo, hi in zip(self.buffers, first, past, strict=True) if hi > lo]

    def in_slab(self, address: int) -> bool:
        base = self.slab.data_ptr()
        return base <= address < base + self.slab.numel()

    # -- graph state: what replays leave behind, and memory the op let go of ----------------------------------

    def state_buffers(self, tag: int) -> list[Buffer]:
        """The buffers the op made (not the copies of its inputs and constants) of capture size `tag`, and its caches
        whichever size made them: after capture, the graph's memory and the state a replay leaves."""
        return [b for b in self.buffers if not b.adopted and (b.tag in (None, tag) or b.persistent)]

    def state_bytes(self, buffers: Sequence[Buffer]) -> list[torch.Tensor]:
        """A copy of each buffer's bytes."""
        return [self.slab[b.start: b.start + b.nbytes].clone() for b in buffers]

    def put_state(self, buffers: Sequence[Buffer], saved: Sequence[torch.Tensor], *, skip: set[int]) -> None:
        """Write back bytes `state_bytes` took, except into the buffers in `skip` (by id)."""
        for buf, kept in zip(buffers, saved, strict=True):
            if id(buf) not in skip:
                self.slab[buf.start: buf.start + buf.nbytes].copy_(kept)

    def state_drift(self, buffers: Sequence[Buffer], first: tuple[list[torch.Tensor], list[torch.Tensor]],
                    last: tuple[list[torch.Tensor], list[torch.Tensor]], tol: float, label: str, *,
                    against: str = "replay #1", skip: set[int] = frozenset()) -> list[str]:  # type: ignore[assignment]
        """Where the last replay left a buffer otherwise than the first, on the same inputs: of the bytes either
        replay wrote (those another size's replay wrote in between are neither's), any that differ, bitwise for
        integers and within `tol` relative L2 for floats (atomics may add in another order)."""
        found = []
        for buf, b1, a1, b3, a3 in zip(buffers, *first, *last, strict=True):
            if id(buf) in skip or not buf.nbytes:
                continue
            differ = ((a1 != b1) | (a3 != b3)) & (a3 != a1)
            if not bool(differ.any()):
                continue
            dtype = buf.dtype or torch.uint8
            if dtype.is_floating_point and buf.nbytes % dtype.itemsize == 0:
                # Elements whose bytes differ must be finite in both (a NaN or inf that changed is drift), and
                # within `tol` of the buffer's finite elements (atomics add in another order on a GPU).
                changed = differ.view(-1, dtype.itemsize).any(1)
                x, y = a1.view(dtype).double(), a3.view(dtype).double()
                finite = x.isfinite() & y.isfinite()
                if not bool((changed & ~finite).any()):
                    norm = float(x[finite].norm())
                    err = float((y - x)[changed].norm())
                    if err <= tol * norm:
                        continue
            at = torch.nonzero(differ).flatten()
            lo, hi, count = int(at[0]), int(at[-1]) + 1, int(at.numel())
            element = lo // dtype.itemsize
            was, now = (v.view(dtype)[element].item() if buf.nbytes % dtype.itemsize == 0 else v[lo].item()
                        for v in (a1, a3))
            found.append(f"{buf.name} ({buf.site}) differs in {count:,} of its {buf.nbytes:,} B after {label} from "
                         f"after {against}, the inputs the same (bytes {lo:,} to {hi:,}; element {element:,} was "
                         f"{was!r}, now {now!r}): state the graph does not reset")
        return found

    def kept_from_capture(self, buffers: Sequence[Buffer], returned: torch.Tensor,
                          outside: Sequence[Buffer] = ()) -> None:
        """Of the buffers a capture made, those the op still points at when it ends are its cache (persistent):
        a graph's temporaries die with the capture, and the graph pool keeps their memory; a cache the op lets go
        of later is released, its memory the process's again. The output the capture returned is the harness's.
        `outside`: those made by the op's eager piece, outside the graph, which the graph still reads: no pool
        keeps their memory, so each is the process's again as soon as nothing points at it."""
        gc.collect(1)  # a young reference cycle is not a cache
        out = returned.data_ptr() - self.slab.data_ptr()
        made_outside = {id(b) for b in outside}
        for buf in buffers:
            if (buf.alive() or id(buf) in made_outside) and not buf.start <= out < buf.start + max(buf.nbytes, 1):
                buf.persistent, buf.poison = True, None

    def released(self) -> list[Buffer]:
        """Buffers the op cached and has since let go of (nothing points at them now), whichever size made them:
        any size's graph may still point at them."""
        return [b for b in self.buffers if b.persistent and (b.resized_away or b.holder is not None and not b.alive())]

    def hand_out_released(self, *, restored: bool = False) -> list[tuple[Buffer, torch.Tensor]]:
        """Give what the op released to a stranger, as the caching allocator would: a buffer of floats is filled
        with STRANGER_WORD (a NaN a read shows), one of integers with zeros (an index a read keeps in range,
        where a wild one would fault a GPU), again at each call, its bytes when first handed out kept.
        `restored`: the stranger puts those bytes back. A graph that still writes there changes the stranger's
        bytes; one that reads there gives another answer with them restored."""
        out = []
        for buf in self.released():
            if id(buf) not in self._handed_out:  # its bytes when first handed out, however often filled again
                self._handed_out[id(buf)] = (buf, self.slab[buf.start: buf.start + buf.nbytes].clone())
            kept = self._handed_out[id(buf)]
            out.append(kept)
            span = self.slab[buf.start: buf.start + buf.nbytes]
            if restored:
                span.copy_(kept[1])
            else:
                span.copy_(self._stranger_bytes(buf))
        return out

    def _stranger_bytes(self, buf: Buffer) -> torch.Tensor:
        if buf.dtype is not None and not buf.dtype.is_floating_point:
            return torch.zeros(buf.nbytes, dtype=torch.uint8, device=self.device)
        return self._pattern(STRANGER_WORD).repeat(_round_up(buf.nbytes, 4) // 4)[: buf.nbytes]

    def strangers_changed(self, strangers: Sequence[tuple[Buffer, torch.Tensor]]) -> list[str]:
        """What changed in the strangers' bytes since `hand_out_released`, one line per buffer."""
        found = []
        for buf, _ in strangers:
            fill = self._stranger_bytes(buf)
            changed = self.slab[buf.start: buf.start + buf.nbytes] != fill
            if bool(changed.any()):
                at = torch.nonzero(changed).flatten()
                lo, hi = int(at[0]), int(at[-1]) + 1
                what = "zeros" if not bool(fill.any()) else f"0x{STRANGER_WORD:08X}"
                found.append(f"bytes {lo:,} to {hi:,} of memory the op had released ({int(at.numel()):,} B now differ "
                             f"from the stranger's fill): {buf.name} ({buf.site}), {buf.nbytes:,} B, handed to a "
                             f"stranger who filled it with {what}")
        return found

    # -- the lane checker's findings and the launches' arguments ---------------------------------------

    def record_stray(self, kernel: str, arg: LaunchArg, access: Access, addresses: np.ndarray) -> None:
        """Record bytes (sorted addresses) that one kernel's access through `arg` reached outside its view."""
        base = self.slab.data_ptr()
        owner = self.owner(arg.lo) if arg.hi > arg.lo else self.owner(arg.lo - 1)
        origin = base + owner.start if owner is not None else arg.lo
        identity = (owner.name, owner.site) if owner is not None else None
        key = (self._tag, kernel, arg.param, access, identity, arg.lo - origin, arg.hi - arg.lo)
        stray = self._strays.get(key)
        if stray is None:
            stray = self._strays[key] = _Stray(kernel, arg.param, access, owner, arg.lo - origin, arg.hi - arg.lo,
                                               arg.row_bytes, self._tag)
        stray.offsets.add(addresses - origin)
        if self.phase not in stray.phases:
            stray.phases.append(self.phase)
        for buf in self.owners(addresses):
            frame = stray.frames.setdefault((buf.name, buf.site), _Offsets())
            frame.add(addresses - (base + buf.start))

    def record_launch(self, kernel: str, args: Sequence[tuple[str, torch.Tensor]]) -> None:
        """Note each tensor argument of a launch that lies outside the slab: memory the harness does not guard."""
        for param, tensor in args:
            address = int(tensor.data_ptr())
            if self.in_slab(address) or any(lo <= address < hi for lo, hi in self._outside):
                continue
            nbytes = tensor.numel() * tensor.element_size()
            self._unguarded.setdefault((self._tag, kernel, param), nbytes)

    def unguarded(self, tag: int | None = None) -> tuple[str, ...]:
        """Launch arguments outside guarded memory, as `kernel(param): N B`, for capture size `tag`."""
        return tuple(f"{kernel}({param}): {nbytes:,} B" for (t, kernel, param), nbytes in self._unguarded.items()
                     if tag is None or t in (None, tag))

    # -- the per-launch write set (step mode, where the lane checker does not run) ------------------------

    @contextmanager
    def watching_writes(self) -> Iterator[None]:
        """Take every Triton launch's write set inside the block (`snapshot` before, `changed` after); the
        snapshot's memory is given back after it."""
        try:
            with self._setting("watching", True):
                yield
        finally:
            self._snap, self._taken = None, False

    def constants_per_launch(self) -> AbstractContextManager[None]:
        """Inside, each launch's write set covers the constants too (compared against their sources)."""
        return self._setting("_per_launch_constants", True)

    def constants_changed(self) -> bool:
        """Whether any constant's bytes differ from the tensor it was copied from: one pass over a layer's weights
        at the end of a stepped run, instead of one after each of its launches."""
        sources = [b for b in self.buffers if b.source is not None]
        if self.device.type != "cuda":
            slab = self.slab.numpy()
            return any(bool((slab[b.start: b.start + b.nbytes] != b.source.numpy()).any())  # type: ignore[union-attr]
                       for b in sources)
        none = torch.zeros(1, dtype=torch.int64, device=self.device)
        totals = []
        for i, buf in enumerate(sources):
            assert buf.source is not None
            lo, hi, at = self._source_blocks(i, buf)
            counts, total = (torch.empty(lo.numel(), dtype=torch.int32, device=self.device) for _ in range(2))
            _diff_kernel[(lo.numel(),)](self.slab.view(torch.int32), buf.source.view(torch.int32), lo, hi, at, none,
                                        none, 0, counts, total, BLOCK=_BLOCK_WORDS)
            totals.append(total.sum())
        return bool(torch.stack(totals).sum()) if totals else False

    def _source_blocks(self, i: int, buf: Buffer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(lo, hi, offset in the source) of each block of the `i`th constant's body, in words."""
        def build() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            lo, hi, _ = _blocks([(buf.start // 4, (buf.start + buf.nbytes) // 4, 0)], self.device)
            return lo, hi, lo - buf.start // 4
        return self.layout.cached(f"source.{i}", build)  # type: ignore[no-any-return]

    def restore_constants(self) -> None:
        """Put every constant's bytes back as its source has them."""
        for b in self.buffers:
            if b.source is not None:
                self.slab[b.start: b.start + b.nbytes].copy_(b.source)

    def _watched_words(self) -> list[tuple[int, int, int]]:
        """(lo, hi, 0) word ranges the write set watches: every buffer's body, and the slab past the last arena.
        Guard bytes are the guards' to check: they hold a known fill, and need no snapshot."""
        out = [(b.start // 4, _round_up(b.start + b.nbytes, 4) // 4, 0) for b in self.buffers if b.source is None]
        end = min(self.slab.numel(), self._used + _TAIL_WATCH) // 4
        if end > self._used // 4:
            out.append((self._used // 4, end, 0))
        return out

    def snapshot(self) -> bool:
        """Keep the watched bytes as they are now (before a launch); False, with a limit, where they do not fit."""
        layout = self.layout
        if self.device.type != "cuda":
            mask = layout.cached("watched", lambda: _byte_mask(self._watched_words(), self._used))
            self._snap, self._taken = self.slab[: mask.size].clone(), True
            return True
        lo, hi, _ = layout.blocks("watched", self._watched_words)
        need = lo.numel() * _BLOCK_WORDS
        if self._snap is None or self._snap.numel() < need:
            self._snap = None
            try:
                self._snap = torch.empty(need + need // 4, dtype=torch.int32, device=self.device)
            except torch.OutOfMemoryError:
                self._limits.append((self._tag, f"the per-launch write set was not taken: a snapshot of "
                                                f"{4 * need:,} B of buffers did not fit in device memory"))
                return False
        if lo.numel():
            _snap_kernel[(lo.numel(),)](self.slab.view(torch.int32), self._snap, lo, hi, BLOCK=_BLOCK_WORDS)
        self._taken = True
        return True

    def changed(self, skip: Sequence[tuple[int, int]]) -> np.ndarray:
        """Byte addresses of watched bytes that differ from the last `snapshot` (a constant's: from its source),
        outside the address ranges `skip` (the launch's arguments), sorted; one host sync when nothing changed.
        A constant the launch was given and wrote keeps its new bytes as its reference."""
        snap, taken, self._taken = self._snap, self._taken, False
        if snap is None or not taken:
            return np.empty(0, np.int64)
        base = self.slab.data_ptr()
        sources = [b for b in self.buffers if b.source is not None] if self._per_launch_constants else []
        if self.device.type != "cuda":
            changed = self._changed_on_host(snap, sources, skip, base)
        else:
            changed = self._changed_on_device(snap, sources, skip, base)
        for a, b in skip:
            changed = changed[(changed < a) | (changed >= b)]
        if self._free_filled and changed.size:
            self._free_seen.append(changed[~self._in_arena(changed)])
        return changed

    def _changed_on_host(self, snap: torch.Tensor, sources: list[Buffer], skip: Sequence[tuple[int, int]],
                         base: int) -> np.ndarray:
        mask = self.layout.cached("watched", lambda: _byte_mask(self._watched_words(), self._used))
        slab = self.slab.numpy()
        found = [np.flatnonzero((slab[: mask.size] != snap.numpy()) & mask).astype(np.int64) + base]
        for buf in sources:
            assert buf.source is not None
            diff = np.flatnonzero(slab[buf.start: buf.start + buf.nbytes] != buf.source.numpy())
            if diff.size:
                found.append(diff.astype(np.int64) + base + buf.start)
                if _overlaps(buf, base, skip):
                    buf.source = self.slab[buf.start: buf.start + buf.nbytes].clone()
        return np.concatenate(found)

    def _changed_on_device(self, snap: torch.Tensor, sources: list[Buffer], skip: Sequence[tuple[int, int]],
                           base: int) -> np.ndarray:
        words = [(-(-(a - base) // 4), (b - base) // 4) for a, b in skip if b - a >= 4]
        table = _to_device(torch.tensor(words or [(0, 0)], dtype=torch.int64), self.device)
        skip_lo, skip_hi = table[:, 0].contiguous(), table[:, 1].contiguous()
        # (reference words, block table) of the snapshot and of each constant
        refs: list[tuple[torch.Tensor, tuple[torch.Tensor, ...], Buffer | None]] = []
        lo, hi, _ = self.layout.blocks("watched", self._watched_words)
        if lo.numel():
            at = self.layout.cached("watched.at", lambda: torch.arange(lo.numel(), device=self.device) * _BLOCK_WORDS)
            refs.append((snap, (lo, hi, at), None))
        for i, buf in enumerate(sources):
            assert buf.source is not None
            refs.append((buf.source.view(torch.int32), self._source_blocks(i, buf), buf))
        counts, totals = [], []
        for ref, (blo, bhi, at), _ in refs:
            c = torch.empty(blo.numel(), dtype=torch.int32, device=self.device)
            t = torch.empty_like(c)
            _diff_kernel[(blo.numel(),)](self.slab.view(torch.int32), ref, blo, bhi, at, skip_lo, skip_hi,
                                         len(words), c, t, BLOCK=_BLOCK_WORDS)
            counts.append(c)
            totals.append(t)
        if not refs:
            return np.empty(0, np.int64)
        sums = torch.stack([torch.stack([c.sum(), t.sum()]) for c, t in zip(counts, totals, strict=True)]).tolist()
        found = [np.empty(0, np.int64)]
        for (ref, (blo, bhi, at), owner), c, (outside, total) in zip(refs, counts, sums, strict=True):
            if outside:
                old = ref.view(torch.uint8)
                blocks = torch.nonzero(c).flatten()
                for a, b, w in zip(blo[blocks].tolist(), bhi[blocks].tolist(), at[blocks].tolist(), strict=True):
                    diff = torch.nonzero(self.slab[4 * a: 4 * b] != old[4 * w: 4 * w + 4 * (b - a)]).flatten()
                    found.append(diff.cpu().numpy().astype(np.int64) + base + 4 * a)
            if owner is not None and total and _overlaps(owner, base, skip):
                owner.source = self.slab[owner.start: owner.start + owner.nbytes].clone()  # a launch given it wrote it
        return np.concatenate(found)

    # -- slab bytes no buffer holds -----------------------------------------------------------------------

    def _fill_free(self, ranges: Sequence[tuple[int, int]]) -> None:
        words = self.slab.view(torch.int32)
        for lo, hi in ranges:
            words[lo // 4: hi // 4].fill_(_signed(_FREE_WORD, 32))

    def _in_arena(self, addresses: np.ndarray) -> np.ndarray:
        """Which of these byte addresses lie in some buffer's arena (guards included)."""
        inside = np.zeros(addresses.shape, dtype=bool)
        base = self.slab.data_ptr()
        for b in self.buffers:
            inside |= (addresses >= base + b.start - b.left) & (addresses < base + b.start + b.nbytes + b.right)
        return inside

    def check_free(self) -> None:
        """Find the bytes no buffer holds that something changed since they were filled: a write past every
        guard (or into an arena given back), which no guard and no write set saw. Once, when the protocol ends;
        such bytes are every size's violation, since nothing says which run wrote them."""
        if not self._free_filled:
            return
        words = self.slab.view(torch.int32)
        free = [(lo // 4, hi // 4) for lo, hi in _less([(0, 4 * words.numel())], _arenas(self.buffers))]
        chunks = [(a, min(a + _FREE_CHUNK, hi)) for lo, hi in free for a in range(lo, hi, _FREE_CHUNK)]
        fill = _signed(_FREE_WORD, 32)
        dirty = self._chunks_changed(words, chunks, fill)
        if self._spare is not None:  # the next user of the slab fills again only what lies before the clean part
            self._spare.clean_from = None if any(dirty) else self._high
        found = []
        pattern = self._pattern(_FREE_WORD)
        for (a, b), hit in zip(chunks, dirty, strict=True):
            if hit:
                index = torch.nonzero(words[a:b] != fill).flatten() + a
                at = (4 * index[:, None] + torch.arange(4, device=self.device)).flatten()
                bad = self.slab.view(torch.uint8)[at] != pattern.repeat(index.numel())
                found.append(at[bad].cpu().numpy().astype(np.int64))
        if not found:
            return
        addresses = np.concatenate(found) + self.slab.data_ptr()
        if self._free_seen:
            addresses = addresses[~np.isin(addresses, np.concatenate(self._free_seen))]
        if addresses.size:
            self._loose = np.unique(addresses if self._loose is None else np.concatenate([self._loose, addresses]))

    def _chunks_changed(self, words: torch.Tensor, chunks: Sequence[tuple[int, int]], fill: int) -> list[bool]:
        """Whether each word range [a, b) holds anything but `fill`. On a GPU one pass of a counting kernel over
        each (a `!=` first materialised a mask of a quarter of the slab's bytes, 48 GiB of them read and 12 GiB
        written at every case's end); on CPU the comparison itself."""
        if not chunks:
            return []
        if self.device.type != "cuda":
            return [bool(c) for c in torch.stack([(words[a:b] != fill).any() for a, b in chunks]).tolist()]
        counts = torch.zeros(len(chunks), dtype=torch.int32, device=self.device)
        span = _BLOCK_WORDS * _FREE_ITER
        for i, (a, b) in enumerate(chunks):
            _free_kernel[(triton.cdiv(b - a, span),)](words[a:], b - a, fill, counts[i:], BLOCK=_BLOCK_WORDS,
                                                      ITER=_FREE_ITER)
        return [bool(c) for c in counts.tolist()]

    @contextmanager
    def running(self, phase: str) -> Iterator[None]:
        """Name the run in progress, for what the lane checker finds during it."""
        with self._setting("phase", phase):
            yield

    def violations(self, tag: int | None = None) -> tuple[Violation, ...]:
        """The findings so far (of buffers tagged `tag` or shared by every size, if given), farthest-reaching first.

        Guard bytes that the lane checker saw a kernel write are its finding, not the guards': one overrun is
        one violation, with the lanes' exact figures and the kernel's argument, whatever guards it crossed.
        """
        mine = {key: s for key, s in self._strays.items() if tag is None or s.tag in (None, tag)}
        writes = {key[:3] + key[4:]: s for key, s in mine.items() if s.access == "write"}
        # A read-modify-write (a load and a store of the same lanes) that overruns is one write, not two findings.
        strays = [s for key, s in mine.items() if not (
            s.access == "read" and key[:3] + key[4:] in writes
            and np.isin(s.offsets.sorted(), writes[key[:3] + key[4:]].offsets.sorted()).all())]
        exact = [v for s in strays for v in _exact(s)]
        explained: dict[tuple[str, str], list[np.ndarray]] = {}
        for stray in (s for s in strays if s.access == "write"):
            for identity, frame in stray.frames.items():
                explained.setdefault(identity, []).append(frame.sorted())
        found = [f for f in self._findings.values() if tag is None or f.buffer.tag in (None, tag)]
        guarded = [g for g in (_guarded(f, explained.get((f.buffer.name, f.buffer.site), [])) for f in found)
                   if g is not None]
        out = exact + _merge_neighbours(guarded) + self._loose_violation()
        return tuple(sorted(out, key=lambda v: (-v.extent, v.buffer, v.side, v.access)))

    def _loose_violation(self) -> list[Violation]:
        if self._loose is None:
            return []
        offsets = self._loose - self.slab.data_ptr()
        lo, hi = int(offsets[0]), int(offsets[-1])
        site = (f"slab bytes {lo:,} to {hi + 1:,}, which no buffer held (past every arena, or in one given back): "
                "found when the protocol ended, by no run in particular")
        return [Violation(UNHELD, site, "overflow", lo, hi, int(offsets.size), None, 0, None,
                          ("after every run",))]


def _arenas(buffers: Sequence[Buffer]) -> list[tuple[int, int]]:
    """The buffers' arenas (guards included), as sorted byte ranges of the slab."""
    return sorted((b.start - b.left, b.start + b.nbytes + b.right) for b in buffers)


def _merged(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Ranges that overlap or touch, as one."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(r for r in ranges if r[1] > r[0]):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _less(ranges: Sequence[tuple[int, int]], taken: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of `ranges` that no range of `taken` covers."""
    out = []
    taken = _merged(taken)
    for lo, hi in _merged(ranges):
        for a, b in taken:
            if b <= lo or a >= hi:
                continue
            if a > lo:
                out.append((lo, a))
            lo = max(lo, b)
        if lo < hi:
            out.append((lo, hi))
    return out


def _split_shared(changed: torch.Tensor, theirs: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The changed bytes of a guard two neighbours share (A's overflow guard, whose last `theirs` bytes are B's
    underflow guard), as (A's, B's): what reaches in from one edge only is that buffer's; what lies in the middle,
    the nearer one's; one range from edge to edge is both (merged as one overrun into the neighbour); and a range
    from each edge is A's first range, then B's."""
    n = changed.numel()
    first = int(changed.to(torch.uint8).argmax())
    last = n - 1 - int(changed.flip(0).to(torch.uint8).argmax())
    from_a, from_b = first == 0, last == n - 1
    if from_a and from_b:
        count = int(changed.sum())
        if count == n:
            return changed, changed
        split = max(int((~changed).to(torch.uint8).argmax()), n - theirs)
        mine, rest = changed.clone(), changed.clone()
        mine[split:] = False
        rest[:split] = False
        return mine, rest
    if not (from_b or (not from_a and n - 1 - last < first)):
        return changed, None
    if bool(changed[: n - theirs].any()):  # bytes before B's guard stay A's
        mine = changed.clone()
        mine[n - theirs:] = False
        return mine, changed
    return None, changed


def _aligned(a: torch.Tensor, b: torch.Tensor, side: Side) -> tuple[torch.Tensor, torch.Tensor]:
    """Two packed guard bitmaps of different guard sizes, padded to one size, aligned at the buffer's edge: an
    overflow guard starts there, an underflow guard ends there (its size a multiple of 256, so whole bytes)."""
    n = max(a.numel(), b.numel())

    def pad(bits: torch.Tensor) -> torch.Tensor:
        extra = n - bits.numel()
        return torch.nn.functional.pad(bits, (extra, 0) if side == "underflow" else (0, extra))

    return pad(a), pad(b)


def _overlaps(buf: Buffer, base: int, ranges: Sequence[tuple[int, int]]) -> bool:
    """Whether a buffer's body meets any of these address ranges."""
    lo, hi = base + buf.start, base + buf.start + buf.nbytes
    return any(a < hi and lo < b for a, b in ranges)


def _byte_mask(words: Sequence[tuple[int, int, int]], used: int) -> np.ndarray:
    """A byte mask over the slab's start through the last watched word: True where a range of words covers it."""
    end = max([used // 4, *(hi for _, hi, _ in words)])
    mask = np.zeros(4 * end, dtype=bool)
    for lo, hi, _ in words:
        mask[4 * lo: 4 * hi] = True
    return mask


def _exact(stray: _Stray) -> list[Violation]:
    """A stray's bytes as violations of its view, a side each."""
    owner, offsets = stray.owner, stray.offsets.sorted()
    if owner is not None:
        name, site = owner.name, owner.site
        at = None if (stray.at, stray.span) == (0, owner.nbytes) else stray.at
    else:
        name, site, at = stray.param, "memory the harness did not allocate", None
    hits = tuple(n for n, s in stray.frames if owner is None or (n, s) != (owner.name, owner.site))
    out = []
    for side, picked in (("underflow", offsets[offsets < stray.at] - stray.at),
                         ("overflow", offsets[offsets >= stray.at + stray.span] - stray.at - stray.span)):
        if not picked.size:
            continue
        rows = int(np.unique(picked // stray.row_bytes).size) if stray.row_bytes else None
        out.append(Violation(name, site, side, int(picked[0]), int(picked[-1]), int(picked.size), rows,  # type: ignore[arg-type]
                             stray.span, stray.kernel, tuple(stray.phases), access=stray.access, arg=stray.param,
                             at=at, hits=hits))
    return out


def _guarded(found: _Finding, explained: list[np.ndarray]) -> _Guarded | None:
    """One guard finding as a violation, less the bytes the lane checker saw a kernel write; None if none are left.

    Figured on the packed bits, on their device: a DeepSeek-V3 EP overrun changes tens of MB of guard, and
    listing its bytes one by one tripled the H200 matrix. Bytes are listed only where something explains some.
    """
    buf = found.buffer
    bits = found.bits
    if explained:
        changed = _set_bits(bits)
        from_start = changed - buf.left if found.side == "underflow" else changed + buf.nbytes
        changed = changed[~np.isin(from_start, np.unique(np.concatenate(explained)))]
        keep = torch.zeros(bits.numel() * 8, dtype=torch.bool)
        keep[torch.from_numpy(changed)] = True
        bits = _pack(keep.to(bits.device))
    nonzero = torch.nonzero(bits).flatten()
    if not nonzero.numel():
        return None
    first_byte, last_byte = int(nonzero[0]), int(nonzero[-1])
    first = 8 * first_byte + _lowest_bit(int(bits[first_byte]))
    last = 8 * last_byte + int(bits[last_byte]).bit_length() - 1
    count = int(_POPCOUNT.to(bits.device)[bits.long()].sum())
    edge = buf.left if found.side == "underflow" else 0  # guard index of the buffer's edge
    span = buf.left if found.side == "underflow" else buf.right
    rows = None
    if buf.row_bytes:
        if buf.row_bytes % 8 == 0 and edge % 8 == 0:  # each packed byte lies in one row
            rows = int(torch.unique(torch.div(8 * nonzero - edge, buf.row_bytes, rounding_mode="floor")).numel())
        else:
            rows = int(np.unique((_set_bits(bits) - edge) // buf.row_bytes).size)
    reaches_far_end = first == 0 if found.side == "underflow" else last == span - 1
    v = Violation(buf.name, buf.site, found.side, first - edge, last - edge, count, rows, buf.nbytes, found.op,
                  tuple(found.phases), buf.view, at_least=bool(reaches_far_end))
    return _Guarded(v, buf, bits)


@dataclass
class _Guarded:
    violation: Violation
    buffer: Buffer
    bits: torch.Tensor  # the changed guard bytes, packed

    @property
    def offsets(self) -> np.ndarray:
        """The changed bytes from the buffer's edge (listed only for the rare merge of two neighbours)."""
        edge = self.buffer.left if self.violation.side == "underflow" else 0
        return _set_bits(self.bits) - edge


def _merge_neighbours(found: list[_Guarded]) -> list[Violation]:
    """One violation for a corrupted range that runs from one buffer's overflow guard, through its far end,
    into the next buffer's underflow guard: the buffer it left from is named, with the neighbour in `hits`."""
    unders = [g for g in found if g.violation.side == "underflow"]
    under_at = {(g.buffer.tag, g.buffer.start - g.buffer.left): g for g in unders}
    under_at.update({(g.buffer.tag, g.buffer.start): g for g in unders})  # a guard the two share
    merged: set[int] = set()
    out = []
    for over in (g for g in found if g.violation.side == "overflow"):
        a = over.buffer
        under = under_at.get((a.tag, a.start + a.nbytes + a.right))
        if under is None or not (over.violation.at_least and under.violation.at_least):
            continue
        if None not in (over.violation.op, under.violation.op) and over.violation.op != under.violation.op:
            continue  # two launches, one each side of the edge
        b = under.buffer
        # It ran on from A's end (it starts there) unless it only ends at B's start: then B underflowed.
        from_b = under.violation.last_offset == -1 and over.violation.first_offset != 0
        leaving, entering = (under, over) if from_b else (over, under)
        edge = b.start - (a.start + a.nbytes)  # B's start, from A's end
        if from_b:
            offsets = np.union1d(over.offsets - edge, under.offsets)
            through = over.violation.first_offset == 0
        else:
            offsets = np.union1d(over.offsets, edge + under.offsets)
            through = under.violation.last_offset == -1
        v, other = leaving.violation, entering.violation
        row_bytes = leaving.buffer.row_bytes
        out.append(replace(v, first_offset=int(offsets[0]), last_offset=int(offsets[-1]), bytes=int(offsets.size),
                           rows=int(np.unique(offsets // row_bytes).size) if row_bytes else None,
                           op=v.op or other.op, phases=tuple(dict.fromkeys(v.phases + other.phases)),
                           at_least=bool(through), hits=(entering.buffer.name,)))
        merged.update((id(over), id(under)))
    return out + [g.violation for g in found if id(g) not in merged]


_POPCOUNT = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int64)


def _lowest_bit(byte: int) -> int:
    return (byte & -byte).bit_length() - 1


def _pack(changed: torch.Tensor) -> torch.Tensor:
    """bool (n,) -> uint8 (ceil(n/8),), bit i of byte j for element 8j+i: a 60 MB guard keeps 7.5 MB."""
    pad = -changed.numel() % 8
    bits = torch.nn.functional.pad(changed.to(torch.uint8), (0, pad)).view(-1, 8)
    shifts = torch.arange(8, dtype=torch.uint8, device=changed.device)
    return (bits << shifts).sum(dim=1, dtype=torch.uint8)


def _set_bits(bits: torch.Tensor) -> np.ndarray:
    """The indices of the set bits of packed `bits`, sorted, without unpacking the bytes that hold none."""
    nonzero = torch.nonzero(bits).flatten()
    shifts = torch.arange(8, dtype=torch.uint8, device=bits.device)
    set_ = ((bits[nonzero][:, None] >> shifts) & 1).bool()
    index = (8 * nonzero[:, None] + shifts.long())[set_]
    return index.cpu().numpy().astype(np.int64)


# -- the factory interceptor ----------------------------------------------------------------------

def _size(args: Sequence[Any]) -> tuple[int, ...]:
    if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        return tuple(int(s) for s in args[0])
    return tuple(int(s) for s in args)


def _contiguous(shape: tuple[int, ...]) -> tuple[int, ...]:
    stride, step = [], 1
    for dim in reversed(shape):
        stride.append(step)
        step *= max(dim, 1)
    return tuple(reversed(stride))


_FACTORIES: dict[Callable[..., Any], str] = {
    torch.empty: "empty", torch.zeros: "zeros", torch.ones: "ones", torch.full: "full",
    torch.empty_like: "empty", torch.zeros_like: "zeros", torch.ones_like: "ones", torch.full_like: "full",
    torch.Tensor.new_empty: "empty", torch.Tensor.new_zeros: "zeros", torch.Tensor.new_ones: "ones",
    torch.Tensor.new_full: "full", torch.empty_strided: "empty",
}
_LIKE = {torch.empty_like, torch.zeros_like, torch.ones_like, torch.full_like}
_NEW = {torch.Tensor.new_empty, torch.Tensor.new_zeros, torch.Tensor.new_ones, torch.Tensor.new_full}


class GuardMode(TorchFunctionMode):
    """Inside it, tensor factories on the guarded device return views into `guards`' slab.

    `empty`, `zeros`, `ones`, `full`, their `_like` and `Tensor.new_` forms, and `empty_strided`.
    Values are honoured (`zeros` is zero); `empty` is poisoned. Other devices pass through.
    """

    def __init__(self, guards: Guards, *, capturing: bool = False) -> None:
        super().__init__()
        self.guards = guards
        self.capturing = capturing

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.resize_ and args and self._grows_guarded(args[0], args[1:], kwargs):
            return self._regrow(args[0], _size(list(args[1:]) or [kwargs["size"]]))
        kind = _FACTORIES.get(func)
        if kind is None:
            return func(*args, **kwargs)
        request = self._request(func, kind, args, kwargs)
        site = call_site() if request is not None else None
        if site is None:
            return func(*args, **kwargs)
        shape, stride, dtype, value, grad = request
        tensor = self.make(shape, stride, dtype, kind, value, site)
        return tensor.requires_grad_(True) if grad else tensor

    def _request(self, func: Callable[..., Any], kind: str, args: Sequence[Any], kwargs: dict[str, Any]):  # type: ignore[no-untyped-def]
        """(shape, stride, dtype, fill value) of a factory call on the guarded device, else None."""
        if kwargs.get("layout", torch.strided) != torch.strided or kwargs.get("out") is not None:
            return None  # torch writes into the tensor given, or makes no strided memory
        value = None
        stride = None
        if func in _LIKE:
            src, rest = args[0], list(args[1:])
            shape = tuple(src.shape)
            dtype, device = kwargs.get("dtype") or src.dtype, kwargs.get("device") or src.device
            # torch keeps a dense source's strides (preserve_format) or takes the format asked: ask it, on meta.
            stride = torch.empty_like(src, dtype=dtype, device="meta",
                                      memory_format=kwargs.get("memory_format", torch.preserve_format)).stride()
            if kind == "full":
                value = rest[0] if rest else kwargs["fill_value"]
        elif func in _NEW:
            src, rest = args[0], list(args[1:])
            if kind == "full":
                value = rest.pop() if len(rest) > 1 else kwargs["fill_value"]
            shape = _size(rest) if rest else _size([kwargs["size"]])
            dtype, device = kwargs.get("dtype") or src.dtype, kwargs.get("device") or src.device
        elif func is torch.empty_strided:
            shape = _size([args[0] if args else kwargs["size"]])
            stride = _size([args[1] if len(args) > 1 else kwargs["stride"]])
            dtype, device = kwargs.get("dtype") or torch.get_default_dtype(), kwargs.get("device")
        else:
            rest = list(args)
            if kind == "full":
                value = rest.pop() if len(rest) > 1 else kwargs["fill_value"]
            shape = _size(rest) if rest else _size([kwargs["size"]])
            if kwargs.get("memory_format", torch.contiguous_format) != torch.contiguous_format:
                stride = torch.empty(shape, device="meta", memory_format=kwargs["memory_format"]).stride()
            # `full` infers its dtype from the value as torch.tensor does: int64, bool, the default float dtype.
            dtype = kwargs.get("dtype") or (torch.tensor(value).dtype if kind == "full" else torch.get_default_dtype())
            device = kwargs.get("device")
        device = torch.device(device) if device is not None else torch.get_default_device()
        if device.type != self.guards.device.type or (device.index is not None
                                                      and device.index != self.guards.device.index):
            return None
        if kind == "zeros":
            value = 0
        elif kind == "ones":
            value = 1
        return shape, stride, dtype, value, bool(kwargs.get("requires_grad"))

    def _grows_guarded(self, tensor: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
        """Whether `tensor.resize_(...)` would grow memory torch did not allocate past its bytes (a guarded buffer, of
        this check or an earlier one the op cached it from), which torch cannot do."""
        if not isinstance(tensor, torch.Tensor) or tensor.device.type != self.guards.device.type:
            return False
        if tensor.untyped_storage().resizable():  # memory torch allocated: torch grows it
            return False
        shape = _size(list(args) or [kwargs.get("size", ())])
        numel = int(np.prod(shape)) if shape else 1
        return (tensor.storage_offset() + numel) * tensor.element_size() > tensor.untyped_storage().nbytes()

    def _regrow(self, tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """`resize_` as torch does it for memory it owns: new memory (a new guarded buffer, `empty` contents past
        the old bytes), the old bytes copied, the tensor moved onto it, and the old memory freed once nothing else
        points at it. A graph captured before still points at the old memory: flashinfer #4553's use-after-free."""
        site = call_site() or ("resize_", "resize_")
        old = tensor.untyped_storage()
        was = self.guards.owner(old.data_ptr())
        grown = self.make(shape, None, tensor.dtype, "empty", None, (was.name if was else site[0], site[1]))
        if was is not None:
            # torch frees the old memory here; the harness's views of it (a tensor's `_base`) would keep its holder
            # alive, so the buffer is marked released by hand
            was.resized_away = True
        itemsize = tensor.element_size()
        held = old.nbytes() // itemsize - tensor.storage_offset()  # from the tensor's start to its memory's end
        keep = min(held, grown.numel())
        grown.view(-1)[:keep].copy_(tensor.as_strided((held,), (1,))[:keep])
        return tensor.set_(grown.untyped_storage(), grown.storage_offset(), shape, grown.stride())

    def make(self, shape: tuple[int, ...], stride: tuple[int, ...] | None, dtype: torch.dtype, kind: str,
             value: Any, site: tuple[str, str]) -> torch.Tensor:
        """A guarded tensor of `shape` (and `stride`), filled as the factory `kind` would."""
        itemsize = dtype.itemsize
        if stride is None:
            stride = _contiguous(shape)
        numel = 1 + sum((s - 1) * st for s, st in zip(shape, stride, strict=True)) if all(shape) else 0
        nbytes = numel * itemsize
        row_bytes = stride[0] * itemsize if len(shape) == 2 else None
        inferred, where = site
        buf = self.guards.allocate(nbytes, self.guards.labelled(inferred), where, row_bytes,
                                   empty_itemsize=itemsize if kind == "empty" else None, capturing=self.capturing)
        buf.dtype = dtype
        # Owned under capture too (GRAPH_HARNESS_OWNED_IN_CAPTURE=0: a plain view of the slab there), so that a
        # cache the capture made is seen let go of.
        owned = not self.capturing or os.environ.get("GRAPH_HARNESS_OWNED_IN_CAPTURE", "1") != "0"
        flat = self.guards.owned(buf, dtype) if owned else self.guards.view(buf, dtype)
        tensor = flat.as_strided(shape, stride)
        if kind != "empty":
            flat.fill_(value)
        return tensor
