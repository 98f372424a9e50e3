"""The report's per-class part (single-label classification): each class's test F1,
precision and recall per strategy at the largest size, the expected calibration error,
and the note that says when the panel is ranked by macro-F1 because the classes are
imbalanced (tasks.ranking_metric).

The cells' rows carry `class_<name>_<score>` columns (compare/runner.py copies them from
metrics.json's per_class table); a panel without them renders as before.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..tasks import IMBALANCE_SHARE
from .formatting import fmt_metric
from .reliability_report import row_value

PREFIX = "class_"
SCORES = ("f1", "precision", "recall")


def row_columns(metrics: dict) -> dict:
    """A cell's per-class scores and ECE, flattened for the results table."""
    out = {}
    for name, scores in (metrics.get("per_class") or {}).get("test", {}).items():
        out.update({f"{PREFIX}{name}_{k}": scores[k] for k in (*SCORES, "support")})
    if "calibration" in metrics:
        out["test_ece"] = metrics["calibration"]["ece"]
    out.update(row_value(metrics))  # the bins, for the report's reliability figure
    return out


def class_names(results: pd.DataFrame) -> list[str]:
    suffix = "_support"
    return [c[len(PREFIX):-len(suffix)] for c in results.columns if c.startswith(PREFIX) and c.endswith(suffix)]


def has_classes(report) -> bool:
    return bool(report.sizes) and bool(class_names(report.results))


def heading(report) -> str:
    return f"Per class at {report.n_text(max(report.sizes))} per class: test F1 (precision / recall), mean over seeds"


def grid(report) -> tuple[list[str], list[list[str]]]:
    """strategy x class: "F1 (precision / recall)", then the ECE of the probabilities."""
    names = class_names(report.results)
    frame = report.results[pd.to_numeric(report.results["n"]) == max(report.sizes)]
    support = {c: frame[f"{PREFIX}{c}_support"].mean() for c in names}
    head = ["strategy"] + [f"{c} ({support[c]:.0f} test)" for c in names] + ["ECE"]
    body = []
    for strategy in report.order:
        rows = frame[frame["strategy"].astype(str) == strategy]
        if rows.empty:
            continue
        cells = [strategy]
        for c in names:
            f1, p, r = (rows[f"{PREFIX}{c}_{k}"].mean() for k in SCORES)
            cells.append(f"{fmt_metric(f1)} ({fmt_metric(p)} / {fmt_metric(r)})")
        ece = rows["test_ece"].mean() if "test_ece" in rows else np.nan
        cells.append(fmt_metric(ece) if np.isfinite(ece) else "-")
        body.append(cells)
    return head, body


def ranking_note(counts: list[int], metric: str) -> str | None:
    """Why the panel is ranked by macro-F1, when it is."""
    if metric != "macro_f1" or not counts:
        return None
    share, k = min(counts) / sum(counts), len(counts)
    return (f"The classes are imbalanced (the smallest is {share:.1%} of the labelled rows, below half of a uniform "
            f"share, {IMBALANCE_SHARE / k:.1%}), so strategies are ranked by macro-F1, not accuracy.")
