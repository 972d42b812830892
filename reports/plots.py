"""Report figures as PNG bytes (matplotlib's Agg canvas, no pyplot state): the verdict heatmap and replay latency."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import ScalarFormatter

from graph_harness.core.results import CaseResult
from graph_harness.core.verdict import Verdict
from graph_harness.reports.baseline import by_case, splitk_of

DPI = 100
VERDICTS = list(Verdict)  # precedence order: a colour index per verdict
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
    """One panel per variant: scenarios down, capture sizes across, each cell coloured by verdict, failures boxed."""
    if not results:
        return _message("no results")
    variants = list(dict.fromkeys(r.variant for r in results))
    scenarios = list(dict.fromkeys(r.scenario for r in results))
    sizes = sorted({r.capture_size for r in results})
    cells = by_case(results)  # (scenario, variant, T): one seed per cell
    cmap = ListedColormap([v.colour for v in VERDICTS]).with_extremes(bad="#eeeeee")  # grey: not run
    norm = BoundaryNorm([i - 0.5 for i in range(len(VERDICTS) + 1)], len(VERDICTS))
    width = 3.2 + 0.55 * max(len(sizes), 4)
    panel = 0.9 + 0.32 * len(scenarios)
    figure = Figure(figsize=(width, panel * len(variants) + 0.9), layout="constrained")
    axes = figure.subplots(len(variants), 1, squeeze=False)[:, 0]
    for ax, variant in zip(axes, variants, strict=True):
        grid = [[math.nan] * len(sizes) for _ in scenarios]
        for (scenario, p, size), r in cells.items():
            if p == variant:
                grid[scenarios.index(scenario)][sizes.index(size)] = r.verdict.rank
        ax.imshow(grid, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
        for (scenario, p, size), r in cells.items():
            if p != variant:
                continue
            y, x = scenarios.index(scenario), sizes.index(size)
            if not r.passed:
                ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.5))
            if len(sizes) <= _LABELLED_SIZES:
                ax.text(x, y, r.verdict.short + ("" if r.passed else "!"), ha="center", va="center", fontsize=7,
                        color="white" if r.verdict != "mismatch" else "black")
        ax.set_title(f"variant {variant}", fontsize=10, loc="left")
        ax.set_xticks(range(len(sizes)), [str(t) for t in sizes], fontsize=7,
                      rotation=90 if len(sizes) > _LABELLED_SIZES else 0)
        ax.set_yticks(range(len(scenarios)), scenarios, fontsize=7)
        ax.set_xlabel("capture size T", fontsize=8)
    handles = [Patch(color=v.colour, label=v.value) for v in VERDICTS]
    handles.append(Patch(facecolor="white", edgecolor="black", linewidth=2.5, label="failed (!)"))
    figure.legend(handles=handles, loc="outside upper center", ncol=4, fontsize=8, frameon=False)
    return _png(figure)


def latency_plot(results: Sequence[CaseResult]) -> bytes:
    """Replay time against capture size, one panel per scenario, one line per variant; filled points split K."""
    timed = [r for r in results if r.replay_us is not None]
    if not timed:
        return _message("no replay timings")
    scenarios = list(dict.fromkeys(r.scenario for r in timed))
    variants = list(dict.fromkeys(r.variant for r in timed))
    colours = {p: f"C{i % 10}" for i, p in enumerate(variants)}
    columns = min(3, len(scenarios))
    rows = -(-len(scenarios) // columns)
    figure = Figure(figsize=(4.2 * columns, 3.0 * rows + 0.8), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, scenario in zip(axes, scenarios, strict=False):
        here = [r for r in timed if r.scenario == scenario]
        for variant in variants:
            line = sorted((r for r in here if r.variant == variant), key=lambda r: r.capture_size)
            if not line:
                continue
            xs = [r.capture_size for r in line]
            ys = [r.replay_us or 0.0 for r in line]
            ax.plot(xs, ys, color=colours[variant], linewidth=1.2)
            split = [r for r in line if splitk_of(r) > 1]
            whole = [r for r in line if splitk_of(r) <= 1]
            ax.plot([r.capture_size for r in split], [r.replay_us or 0.0 for r in split], "o", color=colours[variant],
                    markersize=5)
            ax.plot([r.capture_size for r in whole], [r.replay_us or 0.0 for r in whole], "s",
                    markerfacecolor="white", markeredgecolor=colours[variant], markersize=5)
        sizes = sorted({r.capture_size for r in here})
        if sizes[-1] >= 8 * sizes[0]:  # vLLM's sizes run 1..512: linear axes crush the decode sizes
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_formatter(ScalarFormatter())  # 1, 2, 4 rather than 2^0, 2^1, 2^2
        ax.set_title(scenario, fontsize=9, loc="left")
        ax.set_xlabel("capture size T", fontsize=8)
        ax.set_ylabel("replay us", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(scenarios):]:
        ax.axis("off")
    handles: list[Line2D | Patch] = [Patch(color=colours[p], label=p) for p in variants]
    handles.append(Line2D([], [], marker="o", linestyle="", color="grey", label="split-K (splitk > 1)"))
    handles.append(Line2D([], [], marker="s", linestyle="", markerfacecolor="white", markeredgecolor="grey",
                          label="ksplit = 1"))
    figure.legend(handles=handles, loc="outside upper center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    return _png(figure)
