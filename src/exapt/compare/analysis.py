"""What a compare panel's results say: learning curves, gain over scratch, labels saved
(the pick is in recommendation.py).

Pure functions of the results table (one row per finished cell: strategy, n, seed,
`test_*` metrics, cost columns), so the report, the CLI and a notebook all read the
same numbers. Nothing here plots or prints.

Two choices matter for honesty with few seeds and few sizes:

* gains over the baseline are paired per seed (same n, same seed means same sampled
  training set), which removes the sampling noise the two cells share;
* "labels saved" is read off the baseline's mean curve by interpolating in log(n)
  between sizes that were measured, and says "at most"/"more than" rather than
  extrapolating beyond them.

Functions raise ValueError for a table they cannot analyse (no such metric column, no
finished cell), which the compare runner catches while a panel is still partial.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

# the formatters are used with these figures everywhere (report, CLI): reachable here as before
from .formatting import fmt_fraction, fmt_metric, fmt_n, fmt_seconds, fmt_signed, metric_label

SUMMARY_COLUMNS = ["strategy", "n", "mean", "std", "count", "min", "max"]
GAIN_COLUMNS = ["strategy", "n", "gain", "std", "count"]
LABELS_COLUMNS = ["strategy", "n", "metric", "baseline_n_needed", "relation", "saved_per_class",
                  "ratio", "text"]


# -- helpers ------------------------------------------------------------------------
def metric_column(results: pd.DataFrame, metric: str) -> str:
    """`accuracy` or `test_accuracy` -> the column that holds it (ValueError if none does)."""
    for name in ([metric] if metric.startswith("test_") else [f"test_{metric}", metric]):
        if name in results.columns:
            return name
    shown = ", ".join(c for c in results.columns if str(c).startswith("test_")) or "none"
    raise ValueError(f"results have no column for metric {metric!r} (test metrics: {shown})")


def strategy_order(results: pd.DataFrame, preferred=None) -> list[str]:
    """Strategies in `preferred` order first (the panel's), then as they first appear."""
    seen = list(dict.fromkeys(str(s) for s in results["strategy"])) if "strategy" in results else []
    head = [str(s) for s in (preferred or []) if str(s) in seen]
    return head + [s for s in seen if s not in head]


def finished_cells(results: pd.DataFrame, col: str) -> pd.DataFrame:
    for needed in ("strategy", "n"):
        if needed not in results.columns:
            raise ValueError(f"results have no {needed!r} column")
    frame = results[results[col].notna()].copy()
    frame["strategy"] = frame["strategy"].astype(str)
    frame["n"] = pd.to_numeric(frame["n"])
    if "seed" not in frame.columns:
        frame["seed"] = 0
    return frame


def order_rows(frame: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    rank = {s: i for i, s in enumerate(order)}
    frame = frame.sort_values(["strategy", "n"], key=lambda s: s.map(rank) if s.name == "strategy" else s,
                              kind="stable")
    return frame.reset_index(drop=True)


# -- summaries ----------------------------------------------------------------------
def summarize(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, spread and count of `metric` per (strategy, n); std is NaN for a single seed.

    Cells whose metric is missing (NaN) are left out of the counts, and a (strategy, n)
    with no finished cell has no row: a partial panel summarises what it has.
    """
    col = metric_column(results, metric)
    frame = finished_cells(results, col)
    if frame.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    order = strategy_order(frame)
    grouped = frame.groupby(["strategy", "n"], sort=False)[col]
    out = grouped.agg(["mean", "std", "count", "min", "max"]).reset_index()
    out["count"] = out["count"].astype(int)
    return order_rows(out[SUMMARY_COLUMNS], order)


def per_seed(frame: pd.DataFrame, col: str) -> pd.DataFrame:
    """One value per (strategy, n, seed); a repeated cell counts once (its mean)."""
    return frame.groupby(["strategy", "n", "seed"], sort=False)[col].mean().reset_index()


def transfer_gain(results: pd.DataFrame, metric: str, baseline: str = "scratch") -> pd.DataFrame:
    """Per (strategy, n): mean and std of `metric` minus the baseline's, paired by seed.

    Same n and seed means the same sampled training set, so pairing removes the
    sampling noise both cells share. Only seeds that both finished count; a strategy
    with no paired seed at some n has no row there. The sign is raw (strategy minus
    baseline): for an error metric such as RMSE a negative gain is an improvement.
    Empty (with the columns) when the baseline was not run.
    """
    col = metric_column(results, metric)
    frame = finished_cells(results, col)
    if frame.empty or baseline not in set(frame["strategy"]):
        return pd.DataFrame(columns=GAIN_COLUMNS)
    per = per_seed(frame, col)
    base = per[per["strategy"] == baseline][["n", "seed", col]].rename(columns={col: "_base"})
    paired = per[per["strategy"] != baseline].merge(base, on=["n", "seed"], how="inner")
    if paired.empty:
        return pd.DataFrame(columns=GAIN_COLUMNS)
    paired["_diff"] = paired[col] - paired["_base"]
    out = paired.groupby(["strategy", "n"], sort=False)["_diff"].agg(gain="mean", std="std", count="count")
    out = out.reset_index()
    out["count"] = out["count"].astype(int)
    return order_rows(out[GAIN_COLUMNS], strategy_order(frame))


def _n_needed(sizes: np.ndarray, values: np.ndarray, target: float) -> tuple[float, str]:
    """Where a rising curve (sizes ascending) first reaches `target`, interpolated in log n."""
    if target <= values[0]:
        return float(sizes[0]), "at most"
    for i in range(len(sizes) - 1):
        if values[i + 1] >= target:  # values[i] < target here, so the segment crosses it
            t = (target - values[i]) / (values[i + 1] - values[i])
            lo, hi = math.log(sizes[i]), math.log(sizes[i + 1])
            return float(math.exp(lo + t * (hi - lo))), "="
    return float(sizes[-1]), "more than"


def labels_saved(summary: pd.DataFrame, baseline: str = "scratch", higher_is_better: bool = True
                 ) -> pd.DataFrame:
    """How many labels per class the baseline needs to match each strategy's mean at each n.

    Read off the baseline's mean curve (from `summarize`) by linear interpolation in
    log(n) between measured sizes, taking the first size where the curve gets there
    (so a curve that dips later does not change the answer). Beyond the measured sizes
    nothing is extrapolated: a strategy at or below the baseline's smallest-n value
    gets "at most <smallest n>", one the baseline never reaches gets "more than
    <largest n>", and `saved_per_class` (needed - n) is only given for "=".
    Empty (with the columns) when the baseline is not in the summary.
    """
    base = summary[(summary["strategy"] == baseline) & summary["mean"].notna()].sort_values("n")
    rows = []
    if not base.empty:
        sign = 1.0 if higher_is_better else -1.0  # turn "lower is better" into a rising curve
        sizes = base["n"].to_numpy(dtype=float)
        values = sign * base["mean"].to_numpy(dtype=float)
        for r in summary[(summary["strategy"] != baseline) & summary["mean"].notna()].itertuples(index=False):
            needed, relation = _n_needed(sizes, values, sign * float(r.mean))
            exact = relation == "="
            ratio = needed / float(r.n) if exact else float("nan")
            rows.append({"strategy": r.strategy, "n": r.n, "metric": float(r.mean), "baseline_n_needed": needed,
                         "relation": relation, "saved_per_class": needed - float(r.n) if exact else float("nan"),
                         "ratio": ratio, "text": _labels_text(baseline, needed, relation, ratio)})
    return pd.DataFrame(rows, columns=LABELS_COLUMNS)


def _labels_text(baseline: str, needed: float, relation: str, ratio: float) -> str:
    if relation == "more than":
        return f"{baseline} needs more than {fmt_n(needed)} per class (the most measured)"
    if relation == "at most":
        return f"{baseline} needs at most {fmt_n(needed)} per class (the fewest measured)"
    return f"{baseline} needs ~{fmt_n(needed)} per class ({ratio:.1f}x)"


# -- small helpers ------------------------------------------------------------------
def mean_or_nan(values) -> float:
    arr = np.asarray(list(values), dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")
