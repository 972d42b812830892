"""Numeric comparison of an output against its reference or eager run: diagnostics, never a bare bool."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Comparison:
    """An output against its reference: relative L2 error, non-finite counts and the worst elements."""

    rel_l2: float
    nan: int
    inf: int
    tolerance: float
    worst: tuple[tuple[int, float, float], ...]  # (flat index, output, reference)

    @property
    def ok(self) -> bool:
        return self.nan == 0 and self.inf == 0 and self.rel_l2 <= self.tolerance

    def __str__(self) -> str:
        worst = ", ".join(f"[{i}] {o:.4g} vs {r:.4g}" for i, o, r in self.worst)
        return (f"rel L2 {self.rel_l2:.3e} (tol {self.tolerance:g}), {self.nan} NaN, {self.inf} inf; "
                f"worst: {worst}")


def compare(out: torch.Tensor, ref: torch.Tensor, tol: float, worst: int = 3) -> Comparison:
    """Compare in fp64 on `ref`'s device; the error is inf when the output is not finite."""
    out64 = out.detach().to(device=ref.device, dtype=torch.float64).reshape(ref.shape)
    ref64 = ref.double()
    nan, inf = int(out64.isnan().sum()), int(out64.isinf().sum())
    diff = (out64 - ref64).abs().flatten()
    norm = float(ref64.norm())
    if nan or inf:
        err = math.inf
    else:
        err = float(diff.norm()) / norm if norm else float(diff.norm())
    top = diff.nan_to_num(math.inf).topk(min(worst, diff.numel()))
    flat_out, flat_ref = out64.flatten(), ref64.flatten()
    rows = tuple((int(i), float(flat_out[i]), float(flat_ref[i])) for i in top.indices.tolist())
    return Comparison(err, nan, inf, tol, rows)


def finite(out: torch.Tensor, tol: float, worst: int = 3) -> Comparison:
    """What can be checked of an output with no reference: that it holds no NaN or inf (error 0 when it holds none)."""
    out64 = out.detach().to(torch.float64).flatten()
    bad = ~out64.isfinite()
    nan, inf = int(out64.isnan().sum()), int(out64.isinf().sum())
    rows = tuple((int(i), float(out64[i]), math.nan) for i in torch.nonzero(bad).flatten()[:worst].tolist())
    return Comparison(math.inf if nan or inf else 0.0, nan, inf, tol, rows)


def agree(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    """Whether two outputs of one op on the same inputs are the same: NaN and inf at the same places, and
    the finite rest within `tol` relative L2 (atomics may add in another order)."""
    a64, b64 = a.detach().double().flatten(), b.detach().to(a.device).double().flatten()
    if not torch.equal(a64.isnan(), b64.isnan()) or not torch.equal(a64.isinf(), b64.isinf()):
        return False
    if not torch.equal(a64[a64.isinf()], b64[b64.isinf()]):
        return False
    finite = a64.isfinite()
    diff, norm = float((a64[finite] - b64[finite]).norm()), float(b64[finite].norm())
    return diff <= tol * norm if norm else diff == 0


class Mismatch(AssertionError):
    """A comparison that failed, with its diagnostics as the message."""


def assert_close(out: torch.Tensor, ref: torch.Tensor, tol: float) -> Comparison:
    """Raise `Mismatch` with diagnostics unless `out` is within `tol` of `ref`."""
    result = compare(out, ref, tol)
    if not result.ok:
        raise Mismatch(str(result))
    return result
