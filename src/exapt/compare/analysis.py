"""What a compare panel's results say: learning curves, gain over scratch, labels saved, a pick.

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

TIE_TOLERANCE = 0.002
CHEAPER_BY = 0.10       # a tie goes to a strategy whose cells take at least 10% less time: less is timing noise
CLEAR_MAJORITY = 2 / 3  # paired wins at or below this share earn a caution
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


def metric_label(metric: str) -> str:
    """`test_macro_f1` -> `macro F1`: the name a reader expects in a sentence."""
    name = metric[5:] if metric.startswith("test_") else metric
    words = {"f1": "F1", "auroc": "AUROC", "rmse": "RMSE", "mae": "MAE", "r2": "R²"}
    return " ".join(words.get(w, w) for w in name.split("_"))


def strategy_order(results: pd.DataFrame, preferred=None) -> list[str]:
    """Strategies in `preferred` order first (the panel's), then as they first appear."""
    seen = list(dict.fromkeys(str(s) for s in results["strategy"])) if "strategy" in results else []
    head = [str(s) for s in (preferred or []) if str(s) in seen]
    return head + [s for s in seen if s not in head]


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


def _finished(results: pd.DataFrame, col: str) -> pd.DataFrame:
    for needed in ("strategy", "n"):
        if needed not in results.columns:
            raise ValueError(f"results have no {needed!r} column")
    frame = results[results[col].notna()].copy()
    frame["strategy"] = frame["strategy"].astype(str)
    frame["n"] = pd.to_numeric(frame["n"])
    if "seed" not in frame.columns:
        frame["seed"] = 0
    return frame


def _order_rows(frame: pd.DataFrame, order: list[str]) -> pd.DataFrame:
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
    frame = _finished(results, col)
    if frame.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    order = strategy_order(frame)
    grouped = frame.groupby(["strategy", "n"], sort=False)[col]
    out = grouped.agg(["mean", "std", "count", "min", "max"]).reset_index()
    out["count"] = out["count"].astype(int)
    return _order_rows(out[SUMMARY_COLUMNS], order)


def _per_seed(frame: pd.DataFrame, col: str) -> pd.DataFrame:
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
    frame = _finished(results, col)
    if frame.empty or baseline not in set(frame["strategy"]):
        return pd.DataFrame(columns=GAIN_COLUMNS)
    per = _per_seed(frame, col)
    base = per[per["strategy"] == baseline][["n", "seed", col]].rename(columns={col: "_base"})
    paired = per[per["strategy"] != baseline].merge(base, on=["n", "seed"], how="inner")
    if paired.empty:
        return pd.DataFrame(columns=GAIN_COLUMNS)
    paired["_diff"] = paired[col] - paired["_base"]
    out = paired.groupby(["strategy", "n"], sort=False)["_diff"].agg(gain="mean", std="std", count="count")
    out = out.reset_index()
    out["count"] = out["count"].astype(int)
    return _order_rows(out[GAIN_COLUMNS], strategy_order(frame))


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


# -- the pick -----------------------------------------------------------------------
def _mean_or_nan(values) -> float:
    arr = np.asarray(list(values), dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def recommend(results: pd.DataFrame, metric: str, higher_is_better: bool, baseline: str = "scratch",
              tie_tolerance: float = TIE_TOLERANCE) -> dict:
    """Pick a strategy and say why, in sentences that cite the numbers.

    Score: the mean over sizes of the per-size mean metric (the area under the learning
    curve on the measured sizes), over the sizes every strategy finished, so a strategy
    with a missing size is neither helped nor hurt by it. Scores within `tie_tolerance`
    of the best are a tie, which goes to a strategy whose cells take at least
    `CHEAPER_BY` less time (the cheapest such one): a score difference that small is not
    worth paying for, and a smaller time difference is timing noise.

    Returns {"strategy", "runner_up", "sizes", "reasons", "table", "per_size"}; `table` is
    the full ranking, `per_size` maps each common size to the strategy with the best mean
    there (a reason names the sizes where that is not the pick). Raises ValueError when no cell has a value for the metric.
    """
    col = metric_column(results, metric)
    frame = _finished(results, col)
    if frame.empty:
        raise ValueError(f"no finished cell has a value for {col}")
    summary = summarize(frame, col)
    order = strategy_order(frame)
    sizes_of = {s: set(summary.loc[summary["strategy"] == s, "n"]) for s in order}
    common = sorted(set.intersection(*sizes_of.values()))
    better = (lambda a, b: a > b) if higher_is_better else (lambda a, b: a < b)

    def sizes_for(s):
        return common if common else sorted(sizes_of[s])

    means = summary.set_index(["strategy", "n"])["mean"]
    stds = summary.set_index(["strategy", "n"])["std"]
    score, cost, memory, fraction = {}, {}, {}, {}
    for s in order:
        score[s] = float(np.mean([means[(s, n)] for n in sizes_for(s)]))
        rows = frame[(frame["strategy"] == s) & frame["n"].isin(sizes_for(s))]
        cost[s] = _mean_or_nan(rows["cell_seconds"]) if "cell_seconds" in rows else float("nan")
        memory[s] = _mean_or_nan(rows["peak_rss_mb"]) if "peak_rss_mb" in rows else float("nan")
        if {"trainable_parameters", "total_parameters"} <= set(rows.columns):
            total = pd.to_numeric(rows["total_parameters"], errors="coerce").replace(0, np.nan)
            fraction[s] = _mean_or_nan(pd.to_numeric(rows["trainable_parameters"], errors="coerce") / total)
        else:
            fraction[s] = float("nan")

    # Rank: the best remaining score, unless a cheaper strategy is within the tolerance.
    ranking, remaining = [], list(order)
    while remaining:
        top = max(remaining, key=lambda s: score[s] if higher_is_better else -score[s])
        close = [s for s in remaining if abs(score[s] - score[top]) <= tie_tolerance + 1e-12]
        cheaper = [s for s in close if np.isfinite(cost[s]) and np.isfinite(cost[top])
                   and cost[s] <= (1 - CHEAPER_BY) * cost[top]]
        pick = min(cheaper, key=lambda s: (cost[s], -score[s] if higher_is_better else score[s])) if cheaper else top
        ranking.append(pick)
        remaining.remove(pick)
    best = ranking[0]
    table = pd.DataFrame({
        "rank": range(1, len(ranking) + 1),
        "strategy": ranking,
        "score": [score[s] for s in ranking],
        "sizes": [", ".join(fmt_n(n) for n in sizes_for(s)) for s in ranking],
        "cell_seconds": [cost[s] for s in ranking],
        "peak_rss_mb": [memory[s] for s in ranking],
        "trainable_fraction": [fraction[s] for s in ranking],
        "tied_with_best": [abs(score[s] - score[best]) <= tie_tolerance + 1e-12 for s in ranking],
    })

    label = metric_label(col)
    sizes_text = ", ".join(fmt_n(n) for n in sizes_for(best))
    reasons: list[str] = []
    runner = ranking[1] if len(ranking) > 1 else None
    if runner is None:
        per_n = "; ".join(f"n={fmt_n(n)}: {fmt_metric(means[(best, n)])}" for n in sizes_for(best))
        reasons.append(f"Only one strategy ({best}) was run, so there is nothing to rank it against.")
        reasons.append(f"Its mean {label} per size: {per_n}.")
    else:
        word = "highest" if higher_is_better else "lowest"
        if better(score[runner], score[best]):  # the tie went to the cheaper one
            reasons.append(
                f"{best} and {runner} are within {tie_tolerance:g} of each other in mean {label} over "
                f"n = {sizes_text} ({fmt_metric(score[best])} vs {fmt_metric(score[runner])}); {best} is "
                f"chosen because it is cheaper ({fmt_seconds(cost[best])} vs {fmt_seconds(cost[runner])} per cell).")
        else:
            reasons.append(
                f"{best} has the {word} mean {label} over n = {sizes_text} ({fmt_metric(score[best])} vs "
                f"{fmt_metric(score[runner])} for {runner}, the runner-up).")
        per_n = "; ".join(f"n={fmt_n(n)}: {fmt_metric(means[(best, n)])} vs {fmt_metric(means[(runner, n)])}"
                          for n in common)
        if per_n:
            reasons.append(f"Per size, {best} vs {runner}: {per_n}.")
        wins, ties, pairs = _paired_wins(frame, col, best, runner, common, better)
        if pairs:
            tied = f" ({ties} tied)" if ties else ""
            reasons.append(f"It beats {runner} in {wins} of {pairs} paired (n, seed) runs{tied}.")
        else:
            reasons.append(f"No (n, seed) pair finished for both {best} and {runner}, so they cannot be "
                           "compared run by run.")
    per_size = _per_size_best(means, order, common, higher_is_better)
    others = {n: s for n, s in per_size.items() if s != best}
    if others:
        parts = "; ".join(f"n={fmt_n(n)}: {s} ({fmt_metric(means[(s, n)])} vs {fmt_metric(means[(best, n)])})"
                          for n, s in others.items())
        reasons.append(f"{best} is not the best at every size. Highest mean {label} per size, where another "
                       f"strategy leads: {parts}. If your labelled set is near one of these sizes, weigh that "
                       "size's result (each is a mean over fewer runs than the overall score).")
    reasons.extend(_gain_reasons(frame, col, best, baseline, label, higher_is_better, sizes_for(best)))
    if runner is not None and np.isfinite(cost[best]) and np.isfinite(cost[runner]):
        sentence = f"A cell of {best} took {fmt_seconds(cost[best])} vs {fmt_seconds(cost[runner])} for {runner}"
        if np.isfinite(fraction[best]) and np.isfinite(fraction[runner]):
            sentence += (f", and it trains {fmt_fraction(fraction[best])} of the parameters vs "
                         f"{fmt_fraction(fraction[runner])}")
        reasons.append(sentence + ".")
    elif runner is None and np.isfinite(cost[best]):
        reasons.append(f"A cell took {fmt_seconds(cost[best])}, training {fmt_fraction(fraction[best])} "
                       "of the parameters.")

    # Cautions: when the pick might be luck.
    seeds_max = int(summary["count"].max())
    if seeds_max < 2:
        reasons.append("Caution: only one seed per size was run, so seed noise is unknown; run more seeds "
                       "before trusting a small difference.")
    if runner is not None:
        if pairs and wins <= CLEAR_MAJORITY * pairs:
            reasons.append(f"Caution: {best} beats {runner} in only {wins} of {pairs} paired runs, "
                           "not a clear majority.")
        spread = _mean_or_nan(math.sqrt((stds.get((best, n), np.nan) ** 2 + stds.get((runner, n), np.nan) ** 2) / 2)
                              for n in common)
        diff = abs(score[best] - score[runner])
        if np.isfinite(spread) and diff < spread:
            reasons.append(f"Caution: the difference ({fmt_metric(diff)}) is smaller than the seed spread "
                           f"(std {fmt_metric(spread)}): the difference is within seed noise.")
    all_sizes = sorted(set().union(*sizes_of.values()))
    if not common:
        reasons.append("Caution: no size was finished by every strategy, so each is scored on its own sizes "
                       "and the scores are not strictly comparable.")
    elif len(common) < len(all_sizes):
        missing = [f"{s} at n={fmt_n(n)}" for s in order for n in all_sizes if n not in sizes_of[s]]
        reasons.append(f"Ranked on the sizes every strategy finished (n = {', '.join(fmt_n(n) for n in common)}); "
                       f"missing: {', '.join(missing)}.")
    return {"strategy": best, "runner_up": runner, "sizes": list(sizes_for(best)), "reasons": reasons,
            "table": table, "per_size": per_size}


def _per_size_best(means: pd.Series, order: list[str], sizes: list, higher_is_better: bool) -> dict:
    """{n: the strategy with the best mean metric at n} over the sizes every strategy
    finished (ties go to the first in panel order)."""
    out = {}
    for n in sizes:
        values = [(s, means[(s, n)]) for s in order if np.isfinite(means[(s, n)])]
        if values:
            out[n] = (max if higher_is_better else min)(values, key=lambda v: v[1])[0]
    return out


def _paired_wins(frame, col, a, b, sizes, better) -> tuple[int, int, int]:
    """(wins of a, ties, pairs) over (n, seed) where both finished, at the given sizes."""
    per = _per_seed(frame[frame["n"].isin(sizes)], col)
    left = per[per["strategy"] == a][["n", "seed", col]]
    right = per[per["strategy"] == b][["n", "seed", col]]
    both = left.merge(right, on=["n", "seed"], suffixes=("_a", "_b"))
    va, vb = both[f"{col}_a"].to_numpy(), both[f"{col}_b"].to_numpy()
    wins = int(sum(better(x, y) for x, y in zip(va, vb)))
    ties = int(np.sum(np.isclose(va, vb, rtol=0, atol=1e-12)))
    return wins, ties, len(both)


def _gain_reasons(frame, col, best, baseline, label, higher_is_better, sizes) -> list[str]:
    strategies = set(frame["strategy"])
    if best == baseline:
        return [f"It is the {baseline} baseline itself: no pretrained strategy beat training from scratch "
                "on these sizes."]
    if baseline not in strategies:
        return [f"No {baseline} run is in the panel, so the gain from pretraining is not measured."]
    gains = transfer_gain(frame, col, baseline)
    gains = gains[(gains["strategy"] == best) & gains["n"].isin(sizes)].sort_values("n")
    if gains.empty:
        return [f"No seed finished for both {best} and {baseline} at the same size, so the gain over "
                f"{baseline} is not measured."]
    ends = gains.iloc[[0, -1]] if len(gains) > 1 else gains
    parts = " and ".join(f"{fmt_signed(g.gain)} at n={fmt_n(g.n)}" for g in ends.itertuples(index=False))
    if higher_is_better:
        return [f"Over {baseline} it gains {parts} in {label} (mean of paired seed differences)."]
    return [f"Against {baseline} it changes {label} by {parts} (lower is better; mean of paired seed "
            "differences)."]

