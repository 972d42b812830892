"""Report figures as PNG bytes (matplotlib's Agg canvas, no pyplot state): the verdict heatmap, replay latency and
the history of nights."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import pandas as pd  # type: ignore[import-untyped,unused-ignore]
from matplotlib.axes import Axes
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import NullLocator, ScalarFormatter

from graph_harness.core.results import CaseResult
from graph_harness.reports.baseline import OUTCOMES, Outcome, by_case, outcome, splitk_of
from graph_harness.reports.timing import on_gpu

DPI = 100
# Pale green reads "as expected" whatever the verdict says (an oob-write a buggy variant must show passes); a
# detection regression, the bug the harness was there to catch and did not, is the darkest cell.
_OUTCOME_COLOUR: dict[Outcome, str] = {"passed": "#b7e1a1", "failed": "#f5a25d", "detection regression": "#7f0000"}
_OUTCOME_TEXT: dict[Outcome, str] = {"passed": "black", "failed": "black", "detection regression": "white"}
_OUTCOME_LABEL: dict[Outcome, str] = {"passed": "passed (the expected verdict)", "failed": "failed",
                                      "detection regression": "detection regression (found less than expected)"}
# Cell labels fit a 0.55-inch column at 7 pt up to this many sizes; the 51 vLLM sizes get colour alone.
_LABELLED_SIZES = 16


def _png(figure: Figure) -> bytes:
    # A bare Figure (not pyplot's) renders PNG on the Agg canvas with no display and no global figure registry.
    buffer = io.BytesIO()
    # No Software/date metadata: the same results give the same bytes.
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _message(text: str) -> bytes:
    figure = Figure(figsize=(6, 1.5), layout="constrained")
    ax = figure.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    return _png(figure)


def verdict_heatmap(results: Sequence[CaseResult]) -> bytes:
    """One panel per variant: scenarios down, capture sizes across; each cell coloured by its outcome against the
    expectation (passed, failed, detection regression) with its verdict as the text, failures boxed."""
    if not results:
        return _message("no results")
    variants = list(dict.fromkeys(r.variant for r in results))
    scenarios = list(dict.fromkeys(r.scenario for r in results))
    sizes = sorted({r.capture_size for r in results})
    cells = by_case(results)  # (scenario, variant, T): one seed per cell
    cmap = ListedColormap([_OUTCOME_COLOUR[o] for o in OUTCOMES]).with_extremes(bad="#eeeeee")  # grey: not run
    norm = BoundaryNorm([i - 0.5 for i in range(len(OUTCOMES) + 1)], len(OUTCOMES))
    width = 3.2 + 0.55 * max(len(sizes), 4)
    panel = 0.9 + 0.32 * len(scenarios)
    figure = Figure(figsize=(width, panel * len(variants) + 0.9), layout="constrained")
    axes = figure.subplots(len(variants), 1, squeeze=False)[:, 0]
    for ax, variant in zip(axes, variants, strict=True):
        grid = [[math.nan] * len(sizes) for _ in scenarios]
        for (scenario, p, size), r in cells.items():
            if p == variant:
                grid[scenarios.index(scenario)][sizes.index(size)] = OUTCOMES.index(outcome(r))
        ax.imshow(grid, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
        for (scenario, p, size), r in cells.items():
            if p != variant:
                continue
            y, x = scenarios.index(scenario), sizes.index(size)
            if not r.passed:
                ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.5))
            if len(sizes) <= _LABELLED_SIZES:
                ax.text(x, y, r.verdict.short + ("*" if r.limits else ""), ha="center", va="center", fontsize=7,
                        color=_OUTCOME_TEXT[outcome(r)])
        ax.set_title(f"variant {variant}", fontsize=10, loc="left")
        ax.set_xticks(range(len(sizes)), [str(t) for t in sizes], fontsize=7,
                      rotation=90 if len(sizes) > _LABELLED_SIZES else 0)
        ax.set_yticks(range(len(scenarios)), scenarios, fontsize=7)
        ax.set_xlabel("capture size T", fontsize=8)
    handles = [Patch(facecolor=_OUTCOME_COLOUR[o], edgecolor="black" if o != "passed" else _OUTCOME_COLOUR[o],
                     linewidth=2.5 if o != "passed" else 0, label=_OUTCOME_LABEL[o]) for o in OUTCOMES]
    handles.append(Patch(color="#eeeeee", label="not run"))
    figure.legend(handles=handles, loc="outside upper center", ncol=2, fontsize=8, frameon=False,
                  title="cell colour: outcome against the expectation; text: the verdict (* not fully checked)",
                  title_fontsize=7)
    return _png(figure)


def _legend_columns(labels: Sequence[str], width_in: float) -> int:
    """As many legend columns as fit the figure's width at 8 pt (about 0.075 in a character, 0.5 in a marker),
    so that a one-panel figure's legend wraps to more rows rather than running off both edges."""
    widest = max(0.5 + 0.075 * len(label) for label in labels)
    return max(1, min(len(labels), int(width_in // widest)))


def _size_ticks(ax: Axes, sizes: Sequence[int]) -> None:
    """Capture sizes are integers: tick only sizes that ran (the powers of two among many), as plain integers."""
    shown = list(sizes) if len(sizes) <= 8 else [t for t in sizes if t & (t - 1) == 0] or [sizes[0], sizes[-1]]
    ax.set_xticks(shown, [str(t) for t in shown])
    ax.xaxis.set_minor_locator(NullLocator())  # a log axis's minor ticks would label 3, 5, 6 ... or 2^x


def latency_plot(results: Sequence[CaseResult]) -> bytes:
    """`latency_figure` as PNG bytes; a message when no case was replayed."""
    figure = latency_figure(results)
    return _message("no replay timings") if figure is None else _png(figure)


def latency_figure(results: Sequence[CaseResult]) -> Figure | None:
    """Replay time against capture size, one panel per scenario (and GPU), one line per variant; filled points
    split K. GPU graph replays in microseconds; a run with none shows its CPU interpreter times in seconds."""
    gpu = [r for r in results if on_gpu(r)]
    timed = gpu or [r for r in results if r.replay_us is not None]
    if not timed:
        return None
    scale, unit = (1.0, "replay us") if gpu else (1e-6, "replay s (CPU interpreter, not kernel time)")
    devices = list(dict.fromkeys(r.env.device for r in timed))

    def panel_of(r: CaseResult) -> str:
        return r.scenario if len(devices) == 1 else f"{r.scenario} on {r.env.device}"

    panels = list(dict.fromkeys(panel_of(r) for r in timed))
    variants = list(dict.fromkeys(r.variant for r in timed))
    colours = {p: f"C{i % 10}" for i, p in enumerate(variants)}
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    labels = [*variants, "split-K (splitk > 1)", "ksplit = 1"]
    ncol = _legend_columns(labels, 4.2 * columns)
    legend_rows = -(-len(labels) // ncol)
    figure = Figure(figsize=(4.2 * columns, 3.0 * rows + 0.5 + 0.2 * legend_rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, name in zip(axes, panels, strict=False):
        here = [r for r in timed if panel_of(r) == name]
        for variant in variants:
            line = sorted((r for r in here if r.variant == variant), key=lambda r: r.capture_size)
            if not line:
                continue
            ax.plot([r.capture_size for r in line], [(r.replay_us or 0.0) * scale for r in line],
                    color=colours[variant], linewidth=1.2)
            split = [r for r in line if splitk_of(r) > 1]
            whole = [r for r in line if splitk_of(r) <= 1]
            ax.plot([r.capture_size for r in split], [(r.replay_us or 0.0) * scale for r in split], "o",
                    color=colours[variant], markersize=5)
            ax.plot([r.capture_size for r in whole], [(r.replay_us or 0.0) * scale for r in whole], "s",
                    markerfacecolor="white", markeredgecolor=colours[variant], markersize=5)
        sizes = sorted({r.capture_size for r in here})
        if sizes[-1] >= 8 * sizes[0]:  # vLLM's sizes run 1..512: linear axes crush the decode sizes
            ax.set_xscale("log", base=2)
        _size_ticks(ax, sizes)
        ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))  # 22,340,571 us is never "2.23 +1e7"
        ax.ticklabel_format(axis="y", style="plain", useOffset=False)
        ax.set_title(name, fontsize=9, loc="left")
        ax.set_xlabel("capture size T", fontsize=8)
        ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.axis("off")
    handles: list[Line2D | Patch] = [Patch(color=colours[p], label=p) for p in variants]
    handles.append(Line2D([], [], marker="o", linestyle="", color="grey", label=labels[-2]))
    handles.append(Line2D([], [], marker="s", linestyle="", markerfacecolor="white", markeredgecolor="grey",
                          label=labels[-1]))
    figure.legend(handles=handles, loc="outside upper center", ncol=ncol, fontsize=8, frameon=False)
    return figure


def history_plot(history: pd.DataFrame) -> bytes:
    """Two panels over the nights: failed and detected cases; the median GPU replay time per device."""
    if history.empty:
        return _message("no nights")
    labels = list(history["night"])
    xs = list(range(len(labels)))
    width = max(6.0, 0.6 * len(labels) + 2.0)
    figure = Figure(figsize=(width, 5.6), layout="constrained")
    counts, timing = figure.subplots(2, 1, sharex=True)
    counts.plot(xs, history["failed"], "o-", color="#d62728", label="failed")
    counts.plot(xs, history["detected"], "s-", color="#1f77b4", label="detected (verdict not clean)")
    counts.set_ylabel("cases", fontsize=8)
    counts.set_ylim(bottom=0)
    counts.yaxis.get_major_locator().set_params(integer=True)
    counts.legend(fontsize=8, frameon=False, ncol=_legend_columns(["failed", "detected (verdict not clean)"], width))
    devices = sorted({device for timed in history["replay_us"] for device in timed})
    for i, device in enumerate(devices):
        ys = [timed.get(device, float("nan")) for timed in history["replay_us"]]
        timing.plot(xs, ys, "o-", color=f"C{(i + 2) % 10}", label=device)
    if devices:
        timing.legend(fontsize=8, frameon=False, ncol=_legend_columns(devices, width))
    else:
        timing.text(0.5, 0.5, "no GPU replay timings (CPU interpreter times are not kernel times)",
                    ha="center", va="center", transform=timing.transAxes, fontsize=8)
    timing.set_ylabel("median replay us", fontsize=8)
    timing.ticklabel_format(axis="y", style="plain", useOffset=False)
    timing.set_xticks(xs, labels, rotation=30 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center",
                      fontsize=7)
    timing.set_xlabel("night (--out folder)", fontsize=8)
    for ax in (counts, timing):
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return _png(figure)
