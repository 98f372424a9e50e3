"""The report's reliability diagram (single-label classification): for the best cell of
each strategy (its best test score over sizes and seeds), the test rows binned by the top
probability, each bin's mean confidence against its accuracy, and the cell's expected
calibration error. A perfectly calibrated model sits on the diagonal.

The numbers are what each cell's run already saved (metrics.json's `calibration`:
decision.py's 15 equal-width bins); compare/runner.py copies the bins into the results
table as one JSON column. A panel without them (older results) renders as before.
"""
from __future__ import annotations

import json
import math

import pandas as pd

from .formatting import fmt_metric

COLUMN = "test_reliability"
FIGURE_ID = "fig-reliability"
MAX_PANELS = 12


def row_value(metrics: dict) -> dict:
    """The cell's reliability bins as one results-table column ({} when the run has none)."""
    bins = (metrics.get("calibration") or {}).get("reliability")
    return {COLUMN: json.dumps(bins)} if bins else {}


def best_cells(report) -> list[tuple[str, pd.Series, list[dict]]]:
    """[(strategy, its best row, that row's bins)] in the report's strategy order."""
    frame = report.results
    if COLUMN not in frame.columns or report.col is None:
        return []
    out = []
    for strategy in report.order:
        rows = frame[(frame["strategy"].astype(str) == strategy) & frame[COLUMN].notna()]
        if rows.empty:
            continue
        row = rows.loc[rows[report.col].idxmax() if report.higher else rows[report.col].idxmin()]
        try:
            bins = json.loads(row[COLUMN])
        except (TypeError, ValueError):
            continue
        if bins:
            out.append((strategy, row, bins))
    return out[:MAX_PANELS]


def has_reliability(report) -> bool:
    return bool(best_cells(report))


def ece(bins: list[dict]) -> float:
    """The row-weighted mean |accuracy - confidence| over the bins (decision.py's ECE)."""
    n = sum(b["n"] for b in bins)
    return sum(b["n"] * abs(b["accuracy"] - b["confidence"]) for b in bins) / max(n, 1)


def cell_text(report, row) -> str:
    return f"n={report.n_text(row['n'])}, seed {row['seed']}, {report.label} {fmt_metric(row[report.col])}"


def caption() -> str:
    return ("Reliability of the best cell of each strategy (its best test score over sizes and seeds): the test "
            "rows binned by the predicted class's probability (15 equal-width bins); each bar is a bin's accuracy "
            "at its mean confidence, its width the bin's, its shade the bin's share of rows. On the diagonal: "
            "calibrated. ECE: the row-weighted mean gap.")


def figure(report, plt):
    cells = best_cells(report)
    cols = min(4, len(cells))
    rows = math.ceil(len(cells) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols + 0.4, 2.7 * rows + 0.3), squeeze=False,
                             sharex=True, sharey=True)
    for ax, (strategy, row, bins) in zip(axes.flat, cells):
        total = sum(b["n"] for b in bins)
        for b in bins:
            ax.bar((b["lo"] + b["hi"]) / 2, b["accuracy"], width=(b["hi"] - b["lo"]) * 0.92,
                   color=report.colours.get(strategy, "#1f77b4"), alpha=0.35 + 0.65 * b["n"] / total)
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", ms=3, color="black")
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{strategy}\nECE {ece(bins):.3f} (n={report.n_text(row['n'])}, seed {row['seed']})",
                     fontsize=9)
    for ax in axes.flat[len(cells):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("confidence")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    fig.tight_layout()
    return fig


def grid(report) -> tuple[list[str], list[list[str]]]:
    """The same numbers as a table (the Markdown page has no figures)."""
    head = ["strategy", "best cell", "ECE", "confidence -> accuracy (test rows), per bin"]
    body = []
    for strategy, row, bins in best_cells(report):
        text = "; ".join(f"{b['confidence']:.2f} -> {b['accuracy']:.2f} ({b['n']})" for b in bins)
        body.append([strategy, cell_text(report, row), f"{ece(bins):.3f}", text])
    return head, body
