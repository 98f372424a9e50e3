"""The compare report's figures, drawn once from the report's numbers and embedded in
report.html as base64 PNG (no external file, no JavaScript)."""
from __future__ import annotations

import base64
import math

import numpy as np
import pandas as pd

from ..figures import png_bytes
from . import analysis as A
from . import forgetting_report as F
from . import reliability_report as R

FIGURE_IDS = ("fig-learning-curve", "fig-gain", "fig-labels-saved", "fig-cost")
DPI = 110
SCRATCH_COLOUR = "#4d4d4d"
HATCH = {"more than": "///", "at most": "..."}
STYLE = {
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.6, "figure.facecolor": "white",
}


def figures(report) -> list[tuple[str, str | None, str, str]]:
    """[(id, base64 PNG or None, caption, note when there is no figure)] in page order."""
    import matplotlib  # heavy: imported on first use
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: imported on first use

    out = []
    better = "higher" if report.higher else "lower"
    with plt.rc_context(STYLE):
        out.append((FIGURE_IDS[0], _png(plt, _fig_learning_curve(report, plt)),
                    f"Test {report.label} against labelled examples per class (log scale, ticks at the "
                    f"measured sizes; {better} is better). Line: mean over seeds; band: min to max over "
                    "seeds; dots: single seeds.", ""))
        gain_note = report.gain_note()
        out.append((FIGURE_IDS[1], None if gain_note else _png(plt, _fig_gain(report, plt)),
                    f"Change in test {report.label} over {report.baseline} at the same size, paired by seed: "
                    f"mean ± std of the per-seed differences. {'Above' if report.higher else 'Below'} zero "
                    f"means better than {report.baseline}.", gain_note))
        saved_note = report.saved_note()
        out.append((FIGURE_IDS[2], None if saved_note else _png(plt, _fig_labels_saved(report, plt)),
                    f"Labelled examples per class that {report.baseline} would need to match each strategy's "
                    f"mean {report.label}, read off {report.baseline}'s curve (interpolated in log n between "
                    "measured sizes). The dashed mark is the strategy's own n: a bar above it means labels "
                    f"saved. Hatched: beyond the measured sizes ({report.baseline} did not get there, or "
                    "already did at its smallest size).", saved_note))
        out.append((FIGURE_IDS[3], _png(plt, _fig_cost(report, plt)),
                    "Mean wall time per cell and mean peak memory (RSS) per strategy; the label on each "
                    "time bar gives the share of parameters trained.", ""))
        if F.has_source(report):
            out.append((F.FIGURE_ID, _png(plt, F.figure(report, plt)), F.caption(report), ""))
        if R.has_reliability(report):
            out.append((R.FIGURE_ID, _png(plt, R.figure(report, plt)), R.caption(), ""))
    return out

def _x_axis(report, ax, sizes) -> None:
    from matplotlib.ticker import NullLocator  # heavy: imported on first use

    ax.set_xscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([report.n_text(n) for n in sizes])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(min(sizes) / 1.35, max(sizes) * 1.35)
    ax.set_xlabel("labelled examples per class (n)")

def _offsets(names) -> dict[str, float]:
    """Small multiplicative x offsets so that points and error bars of strategies do not overlap."""
    k = len(names)
    return {s: math.exp(0.035 * (i - (k - 1) / 2)) for i, s in enumerate(names)}

def _fig_learning_curve(report, plt):
    fig, ax = plt.subplots(figsize=(8.6, 4.8))
    shift = _offsets(report.order)
    for s in report.order:
        rows = report.summary[report.summary["strategy"] == s].sort_values("n")
        x = rows["n"].to_numpy(float) * shift[s]
        c = report.colours[s]
        dashed = "--" if s == report.baseline else "-"
        ax.plot(x, rows["mean"], dashed, marker="o", ms=5, lw=2, color=c, label=_mpl(s), zorder=3)
        if len(rows) > 1:
            ax.fill_between(x, rows["min"], rows["max"], color=c, alpha=0.13, lw=0, zorder=1)
        pts = report.results[report.results["strategy"].astype(str) == s]
        ax.scatter(pd.to_numeric(pts["n"]).to_numpy(float) * shift[s], pts[report.col], s=14, color=c,
                   alpha=0.55, edgecolors="none", zorder=2)
    _x_axis(report, ax, report.sizes)
    ax.set_ylabel(f"test {report.label}" + ("" if report.higher else " (lower is better)"))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="strategy")
    return fig

def _fig_gain(report, plt):
    fig, ax = plt.subplots(figsize=(8.6, 4.4))
    names = [s for s in report.others if s in set(report.gain["strategy"])]
    shift = _offsets(names)
    for s in names:
        rows = report.gain[report.gain["strategy"] == s].sort_values("n")
        x = rows["n"].to_numpy(float) * shift[s]
        ax.errorbar(x, rows["gain"], yerr=rows["std"].fillna(0).to_numpy(float), marker="o", ms=5, lw=1.8,
                    capsize=3, color=report.colours[s], label=_mpl(s))
    ax.axhline(0, color="black", lw=1, zorder=0)
    _x_axis(report, ax, sorted(report.gain["n"].unique()))
    ax.set_ylabel(f"{report.label}: strategy − {_mpl(report.baseline)}\n(paired by seed)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="strategy")
    return fig

def _fig_labels_saved(report, plt):
    from matplotlib.lines import Line2D  # heavy: imported on first use
    from matplotlib.patches import Patch  # heavy: imported on first use
    from matplotlib.ticker import NullLocator  # heavy: imported on first use

    names = [s for s in report.others if s in set(report.saved["strategy"])]
    sizes = sorted(report.saved["n"].unique())
    base_sizes = sorted(report.summary.loc[report.summary["strategy"] == report.baseline, "n"])
    fig, ax = plt.subplots(figsize=(min(11.0, max(6.5, 3.2 + 0.42 * len(names) * len(sizes))), 4.8))
    width = 0.8 / max(len(names), 1)
    low = min(base_sizes + sizes) / 2.2
    top = max(report.saved["baseline_n_needed"].max(), max(sizes)) * 2.6
    for j, s in enumerate(names):
        for i, n in enumerate(sizes):
            hit = report.saved[(report.saved["strategy"] == s) & (report.saved["n"] == n)]
            if hit.empty:
                continue
            r = hit.iloc[0]
            x = i - 0.4 + width * (j + 0.5)
            exact = r["relation"] == "="
            hatch = None if exact else HATCH[r["relation"]]
            ax.bar(x, r["baseline_n_needed"] - low, bottom=low, width=width * 0.92, color=report.colours[s],
                   alpha=0.9 if exact else 0.45, hatch=hatch, edgecolor="white" if exact else report.colours[s],
                   lw=0.8)
            text = short_saved(r).replace(" (", "\n(")
            ax.text(x, r["baseline_n_needed"] * 1.08, text, ha="center", va="bottom", fontsize=7.5)
    for i, n in enumerate(sizes):
        ax.plot([i - 0.42, i + 0.42], [n, n], "--", color="black", lw=1.1, zorder=4)
    ax.set_yscale("log")
    ax.set_ylim(low, top)
    ticks = sorted(set(base_sizes))
    ax.set_yticks(ticks)
    ax.set_yticklabels([report.n_text(n) for n in ticks])
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xticks(range(len(sizes)))
    ax.set_xticklabels([f"strategy at n={report.n_text(n)}" for n in sizes])
    ax.set_xlim(-0.6, len(sizes) - 0.4)
    ax.grid(axis="x", visible=False)
    ax.set_ylabel(f"{_mpl(report.baseline)} labels per class needed")
    handles = [Patch(color=report.colours[s], label=_mpl(s)) for s in names]
    handles += [Line2D([], [], ls="--", color="black", label="the strategy's own n (no saving)"),
                Patch(facecolor="white", edgecolor="grey", hatch=HATCH["more than"],
                      label=f"more than the largest n ({_mpl(report.baseline)} never got there)"),
                Patch(facecolor="white", edgecolor="grey", hatch=HATCH["at most"],
                      label="at most the smallest n measured")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig

def _fig_cost(report, plt):
    names = list(report.cost["strategy"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 0.55 * len(names) + 1.6), sharey=True)
    y = np.arange(len(names))
    colours = [report.colours[s] for s in names]
    secs = report.cost["cell_seconds"].to_numpy(float)
    mem = report.cost["peak_rss_mb"].to_numpy(float)
    for ax, values, title, fmt in ((left, secs, "mean time per cell (s)", A.fmt_seconds),
                                   (right, mem, "mean peak RSS (MB)", mb)):
        shown = np.where(np.isfinite(values), values, 0.0)
        ax.barh(y, shown, color=colours, height=0.62)
        span = float(np.nanmax(shown)) if np.any(shown > 0) else 1.0
        ax.set_xlim(0, span * 1.6)
        for yi, v, s in zip(y, values, names):
            text = fmt(v) if np.isfinite(v) else "not measured"
            if ax is left:
                frac = report.cost.loc[report.cost["strategy"] == s, "trainable_fraction"].iloc[0]
                if np.isfinite(frac):
                    text += f" · {A.fmt_fraction(frac)} trainable"
            ax.text((v if np.isfinite(v) else 0) + span * 0.02, yi, text, va="center", fontsize=8.5)
        ax.set_title(title, loc="left")
        ax.grid(axis="y", visible=False)
        if not np.any(np.isfinite(values)):
            ax.set_xticks([])
    left.set_yticks(y)
    left.set_yticklabels([_mpl(s) for s in names])
    left.invert_yaxis()
    fig.tight_layout()
    return fig


def colours(order: list[str], baseline: str) -> dict[str, str]:
    """One colour per strategy for every figure; the baseline is always grey."""
    from matplotlib import colormaps  # heavy: imported on first use
    from matplotlib.colors import to_hex  # heavy: imported on first use

    palette = [to_hex(c) for i, c in enumerate(colormaps["tab10"].colors) if i != 7]  # 7 is grey
    palette += [to_hex(c) for c in colormaps["Dark2"].colors]
    out, i = {}, 0
    for s in order:
        if s == baseline:
            out[s] = SCRATCH_COLOUR
        else:
            out[s] = palette[i % len(palette)]
            i += 1
    return out


def short_saved(row) -> str:
    if row["relation"] == "more than":
        return f"> {A.fmt_n(row['baseline_n_needed'])}"
    if row["relation"] == "at most":
        return f"≤ {A.fmt_n(row['baseline_n_needed'])}"
    return f"~{A.fmt_n(row['baseline_n_needed'])} ({row['ratio']:.1f}x)"


def _png(plt, fig) -> str:
    return base64.b64encode(png_bytes(fig, dpi=DPI, tight=True)).decode("ascii")


def _mpl(text) -> str:
    """Plain text for matplotlib: a `$` would start mathtext."""
    return str(text).replace("$", r"\$")


def mb(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:,.0f} MB"
