"""How a compare panel's numbers and metric names read in sentences and tables."""
from __future__ import annotations

import numpy as np


def metric_label(metric: str) -> str:
    """`test_macro_f1` -> `macro F1`: the name a reader expects in a sentence."""
    name = metric[5:] if metric.startswith("test_") else metric
    words = {"f1": "F1", "auroc": "AUROC", "rmse": "RMSE", "mae": "MAE", "r2": "R²"}
    return " ".join(words.get(w, w) for w in name.split("_"))


def fmt_metric(value: float) -> str:
    """Three decimals for the usual 0..1 metrics; significant figures for large errors."""
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.4g}"


def fmt_signed(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    text = fmt_metric(abs(value))
    return ("+" if value >= 0 else "−") + text


def fmt_seconds(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    if value >= 120:
        return f"{value / 60:.1f} min"
    return f"{value:.1f} s" if value >= 1 else f"{value:.2f} s"


def fmt_fraction(value: float) -> str:
    """Share of parameters trained: 100%, 3%, 0.5%, 0.008%."""
    if value is None or not np.isfinite(value):
        return "n/a"
    pct = 100 * value
    if pct >= 10:
        return f"{pct:.0f}%"
    if pct >= 0.1:
        return f"{pct:.1f}%"
    return f"{pct:.2g}%"


def fmt_n(value: float) -> str:
    """Labels per class: whole numbers from 10 up, one decimal below."""
    return f"{value:.0f}" if value >= 10 or float(value).is_integer() else f"{value:.1f}"
