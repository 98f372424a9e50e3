"""The report's forgetting part (panels started from a source, `compare --init RUN`): the
summary (pure, like analysis.py), a table of what each strategy forgot, and the
target-versus-source trade-off figure.

Kept apart from report.py (and analysis.py): the report calls `grid`, `heading` and
`figure` only when `has_source`, so a panel without a source renders exactly as before.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import analysis as A

FIGURE_ID = "fig-tradeoff"
FORGETTING_COLUMNS = ["strategy", "n", "target", "target_std", "source_before", "source_after", "source_after_std",
                      "forgetting", "forgetting_std", "count"]
# the source's headline score, first that a panel has: (column stem, label, higher is better)
SOURCE_METRICS = (("source_accuracy", "source accuracy", True), ("source_micro_f1", "source micro F1", True),
                  ("source_rmse", "source RMSE", False), ("source_mlm_loss", "source masked-LM loss", False))


def source_metric(results: pd.DataFrame) -> tuple[str, str, bool] | None:
    """(column stem, label, higher is better) of the source score a panel carries, or None."""
    for stem, label, higher in SOURCE_METRICS:
        if f"{stem}_after" in results.columns and results[f"{stem}_after"].notna().any():
            return stem, label, higher
    return None


def forgetting_summary(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (strategy, n): mean target metric, source score before and after, and forgetting
    (what was lost of the source: accuracy points, or masked-LM loss gained), with the
    spread over seeds. Empty (with the columns) when the panel has no source."""
    found = source_metric(results)
    if found is None or "forgetting" not in results.columns:
        return pd.DataFrame(columns=FORGETTING_COLUMNS)
    stem = found[0]
    col = A.metric_column(results, metric)
    frame = A.finished_cells(results, col)
    frame = frame[frame["forgetting"].notna()]
    if frame.empty:
        return pd.DataFrame(columns=FORGETTING_COLUMNS)
    grouped = frame.groupby(["strategy", "n"], sort=False)
    out = grouped.agg(target=(col, "mean"), target_std=(col, "std"), source_before=(f"{stem}_before", "mean"),
                      source_after=(f"{stem}_after", "mean"), source_after_std=(f"{stem}_after", "std"),
                      forgetting=("forgetting", "mean"), forgetting_std=("forgetting", "std"),
                      count=("forgetting", "count")).reset_index()
    out["count"] = out["count"].astype(int)
    return A.order_rows(out[FORGETTING_COLUMNS], A.strategy_order(frame))


def has_source(report) -> bool:
    return not report.forgetting.empty


def grid(report) -> tuple[list[str], list[list[str]]]:
    """strategy x n: "forgetting ± std (source score after)"."""
    def cell(r) -> str:
        text = A.fmt_signed(r["forgetting"])
        if np.isfinite(r["forgetting_std"]):
            text += f" ± {A.fmt_metric(r['forgetting_std'])}"
        return text + f" ({A.fmt_metric(r['source_after'])})"

    return report.grid(report.order, report.forgetting, cell)


def heading(report) -> str:
    found = source_metric(report.results)
    label = found[1] if found else "source score"
    before = report.forgetting["source_before"].mean()
    what = "points lost" if found and found[2] else "increase"
    return f"Forgetting: {label}, {what} (after in brackets; before training: {A.fmt_metric(before)})"


def caption(report) -> str:
    found = source_metric(report.results)
    label = found[1] if found else "source score"
    return (f"Target test {report.label} against {label} after fine-tuning, one point per strategy and size "
            "(mean over seeds, bars: std). The dashed line is the source score before fine-tuning: a point "
            "near it forgot little. Up and towards the line is better on both.")


def figure(report, plt):
    f = report.forgetting
    found = source_metric(report.results)
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
