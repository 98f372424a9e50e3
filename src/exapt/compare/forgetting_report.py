"""The report's forgetting part (panels started from a source, `compare --init RUN`): a
table of what each strategy forgot, and the target-versus-source trade-off figure.

Kept apart from report.py, which calls `tables`/`figure` only when the results carry a
source: a panel without one renders exactly as before.
"""
from __future__ import annotations

import numpy as np

from . import analysis as A

FIGURE_ID = "fig-tradeoff"


def has_source(report) -> bool:
    return not report.forgetting.empty


def grid(report) -> tuple[list[str], list[list[str]]]:
    """strategy x n: "forgetting ± std (source score after)"."""
    def cell(r) -> str:
        text = A.fmt_signed(r["forgetting"])
        if np.isfinite(r["forgetting_std"]):
            text += f" ± {A.fmt_metric(r['forgetting_std'])}"
        return text + f" ({A.fmt_metric(r['source_after'])})"

    return report._grid(report.order, report.forgetting, cell)


def heading(report) -> str:
    found = A.source_metric(report.results)
    label = found[1] if found else "source score"
    before = report.forgetting["source_before"].mean()
    what = "points lost" if found and found[2] else "increase"
    return f"Forgetting: {label}, {what} (after in brackets; before training: {A.fmt_metric(before)})"


def caption(report) -> str:
    found = A.source_metric(report.results)
    label = found[1] if found else "source score"
    return (f"Target test {report.label} against {label} after fine-tuning, one point per strategy and size "
            "(mean over seeds, bars: std). The dashed line is the source score before fine-tuning: a point "
            "near it forgot little. Up and towards the line is better on both.")


def figure(report, plt):
    f = report.forgetting
    found = A.source_metric(report.results)
    fig, ax = plt.subplots(figsize=(8.6, 4.8))
    sizes = sorted(f["n"].unique())
    markers = dict(zip(sizes, "osD^vP*X"))
    for s in report.order:
        rows = f[f["strategy"] == s]
        for r in rows.itertuples(index=False):
            ax.errorbar(r.source_after, r.target, xerr=np.nan_to_num(r.source_after_std),
                        yerr=np.nan_to_num(r.target_std), fmt=markers.get(r.n, "o"), ms=6,
                        color=report.colours[s], ecolor=report.colours[s], elinewidth=1, capsize=2, alpha=0.9)
        ax.plot([], [], "o", color=report.colours[s], label=s.replace("$", r"\$"))
    ax.axvline(f["source_before"].mean(), color="grey", ls="--", lw=1, label="source, before")
    if len(sizes) > 1:
        for n in sizes:
            ax.plot([], [], markers.get(n, "o"), color="black", ms=5, label=f"n={report.n_text(n)}")
    ax.set_xlabel((found[1] if found else "source score") + " after fine-tuning")
    ax.set_ylabel(f"target test {report.label}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig
