"""The graph-state verdicts on ops of their own, through the public API: state carried from replay to replay,
decisions baked in at capture, memory a graph keeps after its owner let go, and runs that never end. Each
planted bug has a clean counterpart that must not trip its check."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch

import graph_harness as gh
from graph_harness.kernels._triton import tl, triton

ROWS, COLS = 8, 32
SPLITS = 4


def _x(size: int, seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(size * ROWS, COLS, generator=g).to(device)}


def _single(results: list[gh.CaseResult]) -> gh.CaseResult:
    (result,) = results
    return result


# -- replay-state: a counter zeroed once ---------------------------------------------------------------------

@triton.jit
def _split_sum_kernel(x_ptr, partial_ptr, out_ptr, count_ptr, n_rows, COLS: tl.constexpr, SPLITS: tl.constexpr,
                      RESET: tl.constexpr):
    """Split-K in miniature: each program sums a slice of rows into its partial; the last to arrive (by the ticket
    counter) adds the partials into `out`. RESET: the last one puts the counter back to 0, as aiter's fixed
    kernels do; without it, only the first launch after the counter was zeroed reduces."""
    pid = tl.program_id(0)
    cols = tl.arange(0, COLS)
    acc = tl.zeros((COLS,), dtype=tl.float32)
    for r in range(pid, n_rows, SPLITS):
        acc += tl.load(x_ptr + r * COLS + cols)
    tl.store(partial_ptr + pid * COLS + cols, acc)
    ticket = tl.atomic_add(count_ptr, 1)
    if ticket == SPLITS - 1:
        total = tl.zeros((COLS,), dtype=tl.float32)
        for s in range(SPLITS):
            total += tl.load(partial_ptr + s * COLS + cols)
        tl.store(out_ptr + cols, total)
        if RESET:
            tl.atomic_xchg(count_ptr, 0)


class SplitSum:
    """Column sums by split-K with a semaphore the op allocates, zeroed, on its first call and keeps (the cache
    aiter #4494 describes). `reset`: the kernel re-arms it; `zero_each_call`: the wrapper zeroes it every call,
    which a graph records as a memset node."""

    def __init__(self, reset: bool = False, zero_each_call: bool = False) -> None:
        self.reset, self.zero_each_call = reset, zero_each_call
        self.count: torch.Tensor | None = None

    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        if self.count is None:
            self.count = torch.zeros(1, dtype=torch.int32, device=x.device)
        if self.zero_each_call:
            self.count.zero_()
        partial = torch.empty(SPLITS, COLS, device=x.device)
        out = torch.zeros(COLS, device=x.device)
        _split_sum_kernel[(SPLITS,)](x, partial, out, self.count, x.shape[0], COLS=COLS, SPLITS=SPLITS,
                                     RESET=self.reset)
        return out


def _column_sums(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return inputs["x"].double().sum(0)


def test_a_semaphore_zeroed_once_is_replay_state(device: torch.device) -> None:
    result = _single(gh.check(SplitSum(), lambda t, s: _x(t, s, device), [2], reference=_column_sums,
                              device=device, expect=gh.expect.replay_state()))
    assert (result.verdict, result.passed, result.violations) == ("replay-state", True, ())
    drift = [n for n in result.notes if n.startswith("replay-state: ")]
    # the counter holds 4 more after every launch; between the first replay and the last: replay #2, the eager run
    # after capture (the op keeps memory across calls) and replay #3
    (state,) = [n for n in drift if n.startswith("replay-state: count (tests/test_graph_state.py:")]
    was, now = map(int, re.search(r"element 0 was (\d+), now (\d+)", state).groups())  # type: ignore[union-attr]
    assert now - was == 3 * SPLITS
    assert "differs in 1 of its 4 B after replay #3 from after replay #1, the inputs the same" in state
    assert any("replay #1 was the first to drift" in n for n in drift), drift
    if device.type == "cpu":  # on a GPU the warm-up made the first call: eager run #1 is already wrong
        assert any(n.startswith("replay-state: eagerly, the same inputs gave another output after capture")
                   for n in drift)


@pytest.mark.parametrize("op", [SplitSum(reset=True), SplitSum(zero_each_call=True)],
                         ids=["kernel-re-arms-it", "zeroed-in-the-graph"])
def test_a_semaphore_that_is_re_armed_is_clean(device: torch.device, op: SplitSum) -> None:
    result = _single(gh.check(op, lambda t, s: _x(t, s, device), [2], reference=_column_sums, device=device))
    assert (result.verdict, result.passed, result.violations) == ("clean", True, ())
    assert not [n for n in result.notes if n.startswith("replay-state")]


@triton.jit
def _atomic_sum_kernel(x_ptr, out_ptr, n_rows, COLS: tl.constexpr, SPLITS: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, COLS)
    acc = tl.zeros((COLS,), dtype=tl.float32)
    for r in range(pid, n_rows, SPLITS):
        acc += tl.load(x_ptr + r * COLS + cols)
    tl.atomic_add(out_ptr + cols, acc)


def test_atomics_whose_order_changes_are_clean(device: torch.device) -> None:
    """fp32 atomic adds land in another order from run to run on a GPU: the last bits differ, within tolerance."""
    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        out = torch.zeros(COLS, device=x.device)
        _atomic_sum_kernel[(SPLITS * 4,)](x, out, x.shape[0], COLS=COLS, SPLITS=SPLITS * 4)
        return out

    results = gh.check(op, lambda t, s: _x(t, s, device), [2, 16], reference=_column_sums, device=device)
    assert [(r.verdict, r.passed) for r in results] == [("clean", True)] * 2


# -- stale-capture: a host decision baked in -----------------------------------------------------------------

def _valid_rows(size: int, seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Rows past `n` are padding; each input set has another `n` (as num_local_tokens does, aiter's S7)."""
    made = _x(size, seed, device)
    made["n"] = torch.tensor([1 + seed % (size * ROWS - 1)], dtype=torch.int32, device=device)
    return made


def _doubled_valid(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    x = inputs["x"].double()
    keep = torch.arange(x.shape[0], device=x.device)[:, None] < inputs["n"].long()
    return torch.where(keep, 2 * x, 0)


class HostCount:
    """Reads the valid row count on the host when it may (not while capturing) and keeps it: under capture it
    uses the count of the last eager call. `on_device`: the count stays a tensor and a mask follows it."""

    def __init__(self, on_device: bool = False) -> None:
        self.on_device = on_device
        self.rows = 0

    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x, n = inputs["x"], inputs["n"]
        out = torch.zeros_like(x)
        if self.on_device:
            keep = torch.arange(x.shape[0], device=x.device)[:, None] < n
            out.copy_(torch.where(keep, 2 * x, 0))
            return out
        if not torch.cuda.is_current_stream_capturing():
            self.rows = int(n.item())
        out[: self.rows] = 2 * x[: self.rows]
        return out


def test_a_count_read_on_the_host_at_capture_is_stale_capture(device: torch.device) -> None:
    result = _single(gh.check(HostCount(), lambda t, s: _valid_rows(t, s, device), [2], reference=_doubled_valid,
                              device=device, seed=5, expect=gh.expect.stale_capture()))
    assert (result.verdict, result.passed, result.violations) == ("stale-capture", True, ())
    (note,) = [n for n in result.notes if n.startswith("stale-capture: ")]
    assert "replay #1 (input set 1, the graph captured with set 1) disagrees with eager on the same inputs" in note


def test_a_count_kept_on_the_device_is_clean(device: torch.device) -> None:
    result = _single(gh.check(HostCount(on_device=True), lambda t, s: _valid_rows(t, s, device), [2],
                              reference=_doubled_valid, device=device, seed=5))
    assert (result.verdict, result.passed) == ("clean", True)


# -- use-after-free: a workspace re-allocated after a graph captured it --------------------------------------

@triton.jit
def _through_workspace_kernel(x_ptr, ws_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(ws_ptr + offs, tl.load(x_ptr + offs, mask=mask) * 2, mask=mask)
    tl.store(out_ptr + offs, tl.load(ws_ptr + offs, mask=mask) + 1, mask=mask)


class Workspace:
    """Keeps one workspace, sized to the call. `policy`:
    - "exact": a call of another size frees it and allocates another, though a graph still points at it;
    - "per-size": one per size, kept for good (a cache used correctly);
    - "retire": the old one is kept alive when replaced (flashinfer's fix in #4553)."""

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.ws: dict[int, torch.Tensor] = {}
        self.retired: list[torch.Tensor] = []

    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        need = x.numel()
        key = need if self.policy == "per-size" else 0
        ws = self.ws.get(key)
        if ws is None or ws.numel() != need:
            if ws is not None and self.policy == "retire":
                self.retired.append(ws)
            ws = self.ws[key] = torch.empty(need, device=x.device)
        out = torch.empty_like(x)
        _through_workspace_kernel[(triton.cdiv(need, 256),)](x, ws, out, need, BLOCK=256)
        return out


def _doubled_plus_one(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return inputs["x"].double() * 2 + 1


def test_a_workspace_freed_while_a_graph_holds_it_is_use_after_free(device: torch.device) -> None:
    results = gh.check(Workspace("exact"), lambda t, s: _x(t, s, device), [2, 4], reference=_doubled_plus_one,
                       device=device, expect=gh.expect.use_after_free())
    assert [(r.capture_size, r.verdict, r.passed) for r in results] == [(2, "use-after-free", True),
                                                                       (4, "use-after-free", True)]
    # T=4's graph kept the workspace its eager runs cached, and T=2's capture replaced it: 4 x 8 x 32 fp32; T=2's
    # graph kept the one its capture made, and the eager run at T=4 after capture replaced that: 2 x 8 x 32 fp32
    for result, nbytes in zip(results, (2048, 4096), strict=True):
        (note,) = [n for n in result.notes if n.startswith("use-after-free: ")]
        assert note.startswith(f"use-after-free: replay #3 wrote bytes 0 to {nbytes:,} of memory the op had released")
        assert "): ws (tests/test_graph_state.py:" in note
        assert f"{nbytes:,} B, handed to a stranger who filled it with 0xFFA5FFA5" in note


@pytest.mark.parametrize("policy", ["per-size", "retire"])
def test_a_workspace_kept_alive_for_its_graphs_is_clean(device: torch.device, policy: str) -> None:
    results = gh.check(Workspace(policy), lambda t, s: _x(t, s, device), [2, 4], reference=_doubled_plus_one,
                       device=device)
    assert [(r.verdict, r.passed) for r in results] == [("clean", True)] * 2


class GrowingWorkspace:
    """flashinfer's shared GEMM workspace (#4553): one buffer for every size, grown with `resize_()` when a plan
    asks for more. Under capture the plan for T=2 asks 256 B more than any eager run did (the thread's log:
    33,554,432 B grown to 33,554,688 B mid-capture), after T=4's graph captured the old address. `retire`: the fix
    of #4399, a new buffer, the old one kept alive for the graphs that point at it."""

    def __init__(self, retire: bool = False) -> None:
        self.retire = retire
        self.ws: torch.Tensor | None = None
        self.retired: list[torch.Tensor] = []

    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        need = 4 * ROWS * COLS + (64 if x.shape[0] == 2 * ROWS and torch.cuda.is_current_stream_capturing() else 0)
        if self.ws is None:
            self.ws = torch.empty(4 * ROWS * COLS, device=x.device)
        if self.ws.numel() < need:
            if self.retire:
                self.retired.append(self.ws)
                self.ws = torch.empty(need, device=x.device)
            else:
                self.ws.resize_(need)
        out = torch.empty_like(x)
        _through_workspace_kernel[(triton.cdiv(x.numel(), 256),)](x, self.ws, out, x.numel(), BLOCK=256)
        return out


def test_a_workspace_grown_by_resize_under_a_graph_is_use_after_free(device: torch.device) -> None:
    results = gh.check(GrowingWorkspace(), lambda t, s: _x(t, s, device), [2, 4], reference=_doubled_plus_one,
                       device=device, expect=gh.expect.use_after_free())
    assert [(r.capture_size, r.verdict, r.passed) for r in results] == [(2, "use-after-free", True),
                                                                       (4, "use-after-free", True)]
    # T=4's graph writes its 4 x 8 x 32 fp32 rows into the 1,024-float workspace it captured, now a stranger's
    (wrote,) = [n for n in results[1].notes if n.startswith("use-after-free: ")]
    assert wrote.startswith("use-after-free: replay #3 wrote bytes 0 to 4,096 of memory the op had released")
    assert "4,096 B, handed to a stranger" in wrote
    # T=2's graph recorded the resize itself: each replay copies the old workspace into the new one, as the memcpy
    # node of a CUDA capture would, and so reads the stranger's bytes
    (read,) = [n for n in results[0].notes if n.startswith("use-after-free: ")]
    assert read.startswith("use-after-free: replay #3 read memory the op had released (ws (tests/test_graph_state.py:")
    assert "with the bytes it held before put back, the same inputs replayed again, ws (" in read


def test_a_workspace_grown_by_retiring_the_old_one_is_clean(device: torch.device) -> None:
    results = gh.check(GrowingWorkspace(retire=True), lambda t, s: _x(t, s, device), [2, 4],
                       reference=_doubled_plus_one, device=device)
    assert [(r.verdict, r.passed) for r in results] == [("clean", True)] * 2


# -- hang: a counter that must be zero when a launch starts --------------------------------------------------

@triton.jit
def _entry_zero_kernel(x_ptr, out_ptr, flag_ptr, n, RESET: tl.constexpr, BLOCK: tl.constexpr):
    """Waits until the flag is 0, takes it, works; RESET gives it back. Without, the next launch spins for ever
    (aiter #4916: 132 waves waiting on a counter holding 2)."""
    while tl.atomic_add(flag_ptr, 0) != 0:
        pass
    tl.atomic_add(flag_ptr, 1)
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) * 2, mask=mask)
    if RESET:
        tl.atomic_add(flag_ptr, -1)


class EntryZero:
    def __init__(self, reset: bool) -> None:
        self.reset = reset
        self.flag: torch.Tensor | None = None

    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        if self.flag is None:
            self.flag = torch.zeros(1, dtype=torch.int32, device=x.device)
        out = torch.empty_like(x)
        _entry_zero_kernel[(1,)](x, out, self.flag, x.numel(), RESET=self.reset,
                                 BLOCK=triton.next_power_of_2(x.numel()))
        return out


def _doubled(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return inputs["x"].double() * 2


def _hang_check(op: Any, device: torch.device, **kw: Any) -> gh.CaseResult:
    return _single(gh.check(op, lambda t, s: _x(t, s, device), [1], reference=_doubled, device=device,
                            hang_after=1.0, **kw))


def test_a_counter_left_non_zero_hangs_the_next_launch(device: torch.device) -> None:
    if device.type == "cuda":
        pytest.skip("a hung GPU kernel cannot be stopped in-process: test_isolate runs it in a child process")
    result = _hang_check(EntryZero(reset=False), device, expect=gh.expect.hang(match="_entry_zero_kernel"))
    assert (result.verdict, result.passed) == ("hang", True)
    assert re.fullmatch(r"eager T=1 #2, in _entry_zero_kernel did not finish within its bound of [0-9.]+ s \(it had "
                        r"not returned\)", result.error or "")


def test_a_counter_given_back_does_not_hang(device: torch.device) -> None:
    result = _hang_check(EntryZero(reset=True), device)
    assert (result.verdict, result.passed) == ("clean", True)


def test_a_hang_in_one_op_leaves_the_next_check_working(device: torch.device) -> None:
    if device.type == "cuda":
        pytest.skip("a hung GPU kernel cannot be stopped in-process")
    _hang_check(EntryZero(reset=False), device, expect="hang")
    assert _hang_check(EntryZero(reset=True), device).verdict == "clean"


# -- use-after-free: what a piecewise op's eager piece allocates per call -------------------------------------

@triton.jit
def _gather_rows_kernel(x_ptr, index_ptr, out_ptr, COLS: tl.constexpr):
    """out[r] = x[index[r]]: the graph's piece reads the row index the eager piece computed."""
    r = tl.program_id(0)
    cols = tl.arange(0, COLS)
    row = tl.load(index_ptr + r)
    tl.store(out_ptr + r * COLS + cols, tl.load(x_ptr + row * COLS + cols))


class ReversedIndex:
    """The eager piece: the reversed row order, into a buffer made per call (`kept`: one per shape)."""

    def __init__(self, kept: bool) -> None:
        self.kept = kept
        self.index: dict[int, torch.Tensor] = {}

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rows = inputs["x"].shape[0]
        index = self.index.get(rows) if self.kept else None
        if index is None:
            index = torch.empty(rows, dtype=torch.int32, device=inputs["x"].device)
            if self.kept:
                self.index[rows] = index
        index.copy_(torch.arange(rows - 1, -1, -1, dtype=torch.int32, device=index.device))
        return {"index": index}


def _gather(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    x = inputs["x"]
    out = torch.empty_like(x)
    _gather_rows_kernel[(x.shape[0],)](x, inputs["index"], out, COLS=COLS)
    return out


def _reversed(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return inputs["x"].double().flip(0)


def test_an_index_the_eager_piece_allocates_per_call_is_use_after_free(device: torch.device) -> None:
    op = gh.Piecewise(eager=ReversedIndex(kept=False), graph=_gather)
    result = _single(gh.check(op, lambda t, s: _x(t, s, device), [2], reference=_reversed, device=device,
                              expect=gh.expect.use_after_free()))
    assert (result.verdict, result.passed, result.violations) == ("use-after-free", True, ())
    # the stranger holds the 16 int32 row indices as zeros: every row of the replay is row 0 of x, and with the
    # capture's indices put back the output is x reversed again
    (note,) = [n for n in result.notes if n.startswith("use-after-free: ")]
    assert note.startswith("use-after-free: replay #3 read memory the op had released (index (tests/"
                           "test_graph_state.py:")
    assert ", 64 B)) (made outside the graph by the op's eager piece, at capture" in note
    assert "integers with zeros): with the bytes it held before put back, the same inputs replayed again, its " \
           "output changed" in note


def test_an_index_the_eager_piece_keeps_per_shape_is_clean(device: torch.device) -> None:
    op = gh.Piecewise(eager=ReversedIndex(kept=True), graph=_gather)
    result = _single(gh.check(op, lambda t, s: _x(t, s, device), [2], reference=_reversed, device=device))
    assert (result.verdict, result.passed) == ("clean", True)


def test_an_eager_piece_that_returns_no_dict_is_a_usage_error(device: torch.device) -> None:
    op = gh.Piecewise(eager=lambda inputs: inputs["x"], graph=_gather)  # type: ignore[arg-type, return-value]
    with pytest.raises(gh.UsageError, match="the eager piece returned Tensor; allowed: a dict of name -> Tensor"):
        gh.check(op, lambda t, s: _x(t, s, device), [2], reference=_reversed, device=device)


# -- oob-read on a GPU: a read past a buffer whose value matters -----------------------------------------------

@triton.jit
def _bias_rows_kernel(x_ptr, ids_ptr, bias_ptr, out_ptr, COLS: tl.constexpr):
    r = tl.program_id(0)
    cols = tl.arange(0, COLS)
    e = tl.load(ids_ptr + r)
    tl.store(out_ptr + r * COLS + cols, tl.load(x_ptr + r * COLS + cols) + tl.load(bias_ptr + e * COLS + cols))


def test_a_read_past_a_bias_shows_by_the_guards_fill_where_no_lane_is_checked(
        device: torch.device, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows 6 and 7 take bias rows 6 and 7 of a 6-row bias (aiter #3208's global ids): zeros in the guards are no
    more right than NaN, but the output moves with the guards' fill."""
    monkeypatch.setenv("GRAPH_HARNESS_LANES", "0")  # as on a GPU
    experts = 6
    bias = torch.randn(experts, COLS, generator=torch.Generator().manual_seed(3)).to(device)

    def op(inputs: dict[str, torch.Tensor], bias: torch.Tensor) -> torch.Tensor:
        x = inputs["x"]
        ids = torch.empty(x.shape[0], dtype=torch.int32, device=x.device)
        ids.copy_(torch.arange(x.shape[0], dtype=torch.int32, device=x.device))
        out = torch.empty_like(x)
        _bias_rows_kernel[(x.shape[0],)](x, ids, bias, out, COLS=COLS)
        return out

    def reference(inputs: dict[str, torch.Tensor], bias: torch.Tensor) -> torch.Tensor:
        rows = inputs["x"].shape[0]
        return inputs["x"].double() + bias.double()[torch.arange(rows).clamp(max=experts - 1)]

    result = _single(gh.check(op, lambda t, s: _x(t, s, device), [1], reference=reference, device=device,
                              constants={"bias": bias}, expect=gh.expect.oob_read()))
    assert (result.verdict, result.passed, result.violations) == ("oob-read", True, ())
    (note,) = [n for n in result.notes if n.startswith("oob-read: ")]
    assert note.startswith("oob-read: the output changed with the guards' fill (nan to dense), the inputs the same")


def test_an_index_read_from_garbage_is_recorded_not_dereferenced(device: torch.device) -> None:
    """Where the lanes are checked, a gather through an index the op never wrote (torch.empty: the poison, a row
    far past x) is an exact read past x, and the interpreter goes on instead of dying at the wild address."""
    if device.type != "cpu":
        pytest.skip("the lane checker runs under the interpreter")

    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        index = torch.empty(x.shape[0], dtype=torch.int32, device=x.device)  # never written
        out = torch.empty_like(x)
        _gather_rows_kernel[(x.shape[0],)](x, index, out, COLS=COLS)
        return out

    expect = gh.expect.all_of(gh.expect.oob_read("input.x", side="overflow", bytes=128),
                              gh.expect.oob_read("input.x", side="underflow", bytes=128))
    result = _single(gh.check(op, lambda t, s: _x(t, s, device), [1], reference=_reversed, device=device,
                              expect=expect))
    assert (result.verdict, result.passed) == ("oob-read", True)
    # every program reads the 32 fp32 of row `index * COLS`, an int32 product that wraps: of the poison
    # 0x7FC57FC5 far before x, of the flipped poison 0x803A803A far past its 1,024 B; 128 B each
    def wrapped(row: int) -> int:
        return ((row * COLS + (1 << 31)) % (1 << 32) - (1 << 31)) * 4

    over, under = sorted(result.violations, key=lambda v: v.side)
    assert (over.side, over.first_offset, over.bytes, over.op, over.arg) == (
        "overflow", wrapped(0x803A803A - (1 << 32)) - 1024, 128, "_gather_rows_kernel", "x_ptr")
    assert (under.side, under.first_offset, under.bytes) == ("underflow", wrapped(0x7FC57FC5), 128)


@pytest.mark.parametrize("value", ["abc", "-1", "0", "nan"])
def test_a_bad_hang_floor_in_the_environment_is_a_usage_error(device: torch.device, monkeypatch: pytest.MonkeyPatch,
                                                             value: str) -> None:
    monkeypatch.setenv("GRAPH_HARNESS_HANG_AFTER", value)
    with pytest.raises(gh.UsageError, match=re.escape(f"GRAPH_HARNESS_HANG_AFTER: got {value!r}; allowed: seconds, "
                                                      "a number > 0")):
        gh.check(_gather, lambda t, s: _x(t, s, device), [1], device=device)
