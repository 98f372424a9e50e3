"""The pick: which strategy a compare panel recommends, and why, in sentences that cite
its numbers (the ranking, paired wins, gain over the baseline, cost, and cautions when
the pick might be luck). A pure function of the results table, like analysis.py."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .analysis import finished_cells, mean_or_nan, metric_column, per_seed, strategy_order, summarize, transfer_gain
from .classical import classical_comparison
from .formatting import fmt_fraction, fmt_metric, fmt_n, fmt_seconds, fmt_signed, metric_label

TIE_TOLERANCE = 0.002
CHEAPER_BY = 0.10       # a tie goes to a strategy whose cells take at least 10% less time: less is timing noise
CLEAR_MAJORITY = 2 / 3  # paired wins at or below this share earn a caution


def recommend(results: pd.DataFrame, metric: str, higher_is_better: bool, baseline: str = "scratch",
              tie_tolerance: float = TIE_TOLERANCE) -> dict:
    """Pick a strategy and say why, in sentences that cite the numbers.

    Score: the mean over sizes of the per-size mean metric (the area under the learning
    curve on the measured sizes), over the sizes every strategy finished, so a strategy
    with a missing size is neither helped nor hurt by it. Scores within `tie_tolerance`
    of the best are a tie, which goes to a strategy whose cells take at least
    `CHEAPER_BY` less time (the cheapest such one): a score difference that small is not
    worth paying for, and a smaller time difference is timing noise.

    Returns {"strategy", "runner_up", "sizes", "reasons", "table", "per_size", "classical"}
    (`classical`: the best transfer against the classical baseline, or None); `table` is
    the full ranking, `per_size` maps each common size to the strategy with the best mean
    there (a reason names the sizes where that is not the pick). Raises ValueError when no cell has a value for the metric.
    """
    p = _Panel.of(results, metric, higher_is_better, tie_tolerance)
    ranking = p.ranking()
    best = ranking[0]
    runner = ranking[1] if len(ranking) > 1 else None
    label = metric_label(p.col)
    wins = pairs = 0
    if runner is None:
        reasons = _alone_reasons(p, best, label)
    else:
        reasons, (wins, _, pairs) = _versus_reasons(p, best, runner, label)
    per_size = _per_size_best(p.means, p.order, p.common, higher_is_better)
    reasons.extend(_per_size_reasons(p, best, per_size, label))
    reasons.extend(_gain_reasons(p.frame, p.col, best, baseline, label, higher_is_better, p.sizes_for(best)))
    reasons.extend(_cost_reasons(p, best, runner))
    reasons.extend(_cautions(p, best, runner, wins, pairs))
    classical = classical_comparison(p.frame, p.col, ranking, p.sizes_for(best), label, higher_is_better)
    if classical is not None:  # every report says where the classical baseline stands
        reasons.append(classical["sentence"])
    return {"strategy": best, "runner_up": runner, "sizes": list(p.sizes_for(best)), "reasons": reasons,
            "table": p.table(ranking), "per_size": per_size, "classical": classical}


@dataclass
class _Panel:
    """The finished cells recommend() reasons over and each strategy's figures on its sizes."""
    frame: pd.DataFrame
    col: str
    summary: pd.DataFrame
    order: list[str]
    sizes_of: dict          # strategy -> the sizes it finished
    common: list            # the sizes every strategy finished
    higher_is_better: bool
    tie_tolerance: float
    means: pd.Series = field(init=False)   # (strategy, n) -> mean metric over seeds
    stds: pd.Series = field(init=False)
    score: dict = field(default_factory=dict)     # mean over sizes of the per-size mean metric
    cost: dict = field(default_factory=dict)      # mean seconds per cell
    memory: dict = field(default_factory=dict)    # mean peak RSS (MB)
    fraction: dict = field(default_factory=dict)  # mean share of parameters trained

    @classmethod
    def of(cls, results: pd.DataFrame, metric: str, higher_is_better: bool, tie_tolerance: float) -> "_Panel":
        col = metric_column(results, metric)
        frame = finished_cells(results, col)
        if frame.empty:
            raise ValueError(f"no finished cell has a value for {col}")
        summary = summarize(frame, col)
        order = strategy_order(frame)
        sizes_of = {s: set(summary.loc[summary["strategy"] == s, "n"]) for s in order}
        common = sorted(set.intersection(*sizes_of.values()))
        panel = cls(frame, col, summary, order, sizes_of, common, higher_is_better, tie_tolerance)
        for s in order:
            panel._measure(s)
        return panel

    def __post_init__(self):
        self.means = self.summary.set_index(["strategy", "n"])["mean"]
        self.stds = self.summary.set_index(["strategy", "n"])["std"]

    def sizes_for(self, s: str) -> list:
        return self.common if self.common else sorted(self.sizes_of[s])

    def better(self, a, b) -> bool:
        return a > b if self.higher_is_better else a < b

    def _measure(self, s: str) -> None:
        means = self.means
        self.score[s] = float(np.mean([means[(s, n)] for n in self.sizes_for(s)]))
        rows = self.frame[(self.frame["strategy"] == s) & self.frame["n"].isin(self.sizes_for(s))]
        self.cost[s] = mean_or_nan(rows["cell_seconds"]) if "cell_seconds" in rows else float("nan")
        self.memory[s] = mean_or_nan(rows["peak_rss_mb"]) if "peak_rss_mb" in rows else float("nan")
        if {"trainable_parameters", "total_parameters"} <= set(rows.columns):
            total = pd.to_numeric(rows["total_parameters"], errors="coerce").replace(0, np.nan)
            self.fraction[s] = mean_or_nan(pd.to_numeric(rows["trainable_parameters"], errors="coerce") / total)
        else:
            self.fraction[s] = float("nan")

    def tied(self, a: str, b: str) -> bool:
        return abs(self.score[a] - self.score[b]) <= self.tie_tolerance + 1e-12

    def ranking(self) -> list[str]:
        """The best remaining score, unless a cheaper strategy is within the tolerance."""
        score, cost, hib = self.score, self.cost, self.higher_is_better
        ranking, remaining = [], list(self.order)
        while remaining:
            top = max(remaining, key=lambda s: score[s] if hib else -score[s])
            close = [s for s in remaining if self.tied(s, top)]
            cheaper = [s for s in close if np.isfinite(cost[s]) and np.isfinite(cost[top])
                       and cost[s] <= (1 - CHEAPER_BY) * cost[top]]
            pick = min(cheaper, key=lambda s: (cost[s], -score[s] if hib else score[s])) if cheaper else top
            ranking.append(pick)
            remaining.remove(pick)
        return ranking

    def table(self, ranking: list[str]) -> pd.DataFrame:
        best = ranking[0]
        return pd.DataFrame({
            "rank": range(1, len(ranking) + 1),
            "strategy": ranking,
            "score": [self.score[s] for s in ranking],
            "sizes": [", ".join(fmt_n(n) for n in self.sizes_for(s)) for s in ranking],
            "cell_seconds": [self.cost[s] for s in ranking],
            "peak_rss_mb": [self.memory[s] for s in ranking],
            "trainable_fraction": [self.fraction[s] for s in ranking],
            "tied_with_best": [self.tied(s, best) for s in ranking],
        })


def _alone_reasons(p: _Panel, best: str, label: str) -> list[str]:
    per_n = "; ".join(f"n={fmt_n(n)}: {fmt_metric(p.means[(best, n)])}" for n in p.sizes_for(best))
    return [f"Only one strategy ({best}) was run, so there is nothing to rank it against.",
            f"Its mean {label} per size: {per_n}."]


def _versus_reasons(p: _Panel, best: str, runner: str, label: str) -> tuple[list[str], tuple[int, int, int]]:
    """Why `best` over `runner`, and their paired (wins, ties, pairs)."""
    reasons, score, means = [], p.score, p.means
    sizes_text = ", ".join(fmt_n(n) for n in p.sizes_for(best))
    word = "highest" if p.higher_is_better else "lowest"
    if p.better(score[runner], score[best]):  # the tie went to the cheaper one
        reasons.append(
            f"{best} and {runner} are within {p.tie_tolerance:g} of each other in mean {label} over "
            f"n = {sizes_text} ({fmt_metric(score[best])} vs {fmt_metric(score[runner])}); {best} is "
            f"chosen because it is cheaper ({fmt_seconds(p.cost[best])} vs {fmt_seconds(p.cost[runner])} per cell).")
    else:
        reasons.append(
            f"{best} has the {word} mean {label} over n = {sizes_text} ({fmt_metric(score[best])} vs "
            f"{fmt_metric(score[runner])} for {runner}, the runner-up).")
    per_n = "; ".join(f"n={fmt_n(n)}: {fmt_metric(means[(best, n)])} vs {fmt_metric(means[(runner, n)])}"
                      for n in p.common)
    if per_n:
        reasons.append(f"Per size, {best} vs {runner}: {per_n}.")
    wins, ties, pairs = _paired_wins(p.frame, p.col, best, runner, p.common, p.better)
    if pairs:
        tied = f" ({ties} tied)" if ties else ""
        reasons.append(f"It beats {runner} in {wins} of {pairs} paired (n, seed) runs{tied}.")
    else:
        reasons.append(f"No (n, seed) pair finished for both {best} and {runner}, so they cannot be "
                       "compared run by run.")
    return reasons, (wins, ties, pairs)


def _per_size_reasons(p: _Panel, best: str, per_size: dict, label: str) -> list[str]:
    others = {n: s for n, s in per_size.items() if s != best}
    if not others:
        return []
    means = p.means
    parts = "; ".join(f"n={fmt_n(n)}: {s} ({fmt_metric(means[(s, n)])} vs {fmt_metric(means[(best, n)])})"
                      for n, s in others.items())
    return [f"{best} is not the best at every size. Highest mean {label} per size, where another "
            f"strategy leads: {parts}. If your labelled set is near one of these sizes, weigh that "
            "size's result (each is a mean over fewer runs than the overall score)."]


def _cost_reasons(p: _Panel, best: str, runner: str | None) -> list[str]:
    cost, fraction = p.cost, p.fraction
    if runner is not None and np.isfinite(cost[best]) and np.isfinite(cost[runner]):
        sentence = f"A cell of {best} took {fmt_seconds(cost[best])} vs {fmt_seconds(cost[runner])} for {runner}"
        if np.isfinite(fraction[best]) and np.isfinite(fraction[runner]):
            sentence += (f", and it trains {fmt_fraction(fraction[best])} of the parameters vs "
                         f"{fmt_fraction(fraction[runner])}")
        return [sentence + "."]
    if runner is None and np.isfinite(cost[best]):
        return [f"A cell took {fmt_seconds(cost[best])}, training {fmt_fraction(fraction[best])} "
                "of the parameters."]
    return []


def _cautions(p: _Panel, best: str, runner: str | None, wins: int, pairs: int) -> list[str]:
    """When the pick might be luck, or rests on fewer sizes than were run."""
    reasons = []
    seeds_max = int(p.summary["count"].max())
    if seeds_max < 2:
        reasons.append("Caution: only one seed per size was run, so seed noise is unknown; run more seeds "
                       "before trusting a small difference.")
    if runner is not None:
        if pairs and wins <= CLEAR_MAJORITY * pairs:
            reasons.append(f"Caution: {best} beats {runner} in only {wins} of {pairs} paired runs, "
                           "not a clear majority.")
        stds = p.stds
        spread = mean_or_nan(math.sqrt((stds.get((best, n), np.nan) ** 2 + stds.get((runner, n), np.nan) ** 2) / 2)
                              for n in p.common)
        diff = abs(p.score[best] - p.score[runner])
        if np.isfinite(spread) and diff < spread:
            reasons.append(f"Caution: the difference ({fmt_metric(diff)}) is smaller than the seed spread "
                           f"(std {fmt_metric(spread)}): the difference is within seed noise.")
    all_sizes = sorted(set().union(*p.sizes_of.values()))
    if not p.common:
        reasons.append("Caution: no size was finished by every strategy, so each is scored on its own sizes "
                       "and the scores are not strictly comparable.")
    elif len(p.common) < len(all_sizes):
        missing = [f"{s} at n={fmt_n(n)}" for s in p.order for n in all_sizes if n not in p.sizes_of[s]]
        reasons.append(f"Ranked on the sizes every strategy finished (n = {', '.join(fmt_n(n) for n in p.common)}); "
                       f"missing: {', '.join(missing)}.")
    return reasons


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
    per = per_seed(frame[frame["n"].isin(sizes)], col)
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

