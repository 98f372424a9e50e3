"""The sentence every compare report carries about the classical baseline: does the best
transfer beat the best classical model (`baseline`: TF-IDF / k-mer / composition / raw
values + a cross-validated logistic regression), by how much, and how steady is that
over seeds. A pure function of the results table, like recommendation.py.

Which entries are classical and which are transfer the strategies declare: a strategy
with a model of its own (`own_model`) is a classical baseline; one that starts from
pretrained weights (`uses_pretrained`) is a transfer; `scratch` is neither.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ExaptError
from ..strategies import parse_strategy
from .analysis import per_seed
from .formatting import fmt_n
from .panel import split_label


MISSING = ("No classical baseline is in the panel (add `baseline`: TF-IDF, k-mer or composition features + "
           "logistic regression), so whether the transfer beats it is not measured.")


def _strategy(label: str):
    """The strategy of a results row's label, or None for a label that names none (a
    results table made by hand, or by another version)."""
    try:
        return parse_strategy(split_label(label)[0])
    except ExaptError:
        return None


def is_classical(label: str) -> bool:
    s = _strategy(label)
    return s is not None and s.own_model() is not None


def is_transfer(label: str) -> bool:
    s = _strategy(label)
    return s is not None and s.uses_pretrained


def classical_comparison(frame: pd.DataFrame, col: str, ranking: list[str], sizes: list, label: str,
                         higher_is_better: bool) -> dict | None:
    """{"baseline", "transfer", "difference", "seed_sd", "seeds", "sentence"} for the best
    (by the recommendation's ranking) classical and transfer entries, over `sizes`; None
    when the panel has no transfer; only a sentence saying so when it has no baseline. `difference`: transfer minus baseline, the mean
    over sizes, paired by seed; `seed_sd`: the standard deviation of that over seeds."""
    classical = [s for s in ranking if is_classical(s)]
    transfer = [s for s in ranking if is_transfer(s)]
    if not transfer:
        return None
    if not classical:
        return {"baseline": None, "transfer": transfer[0], "sentence": MISSING}
    b, t = classical[0], transfer[0]
    per = per_seed(frame[frame["n"].isin(sizes)], col)
    left = per[per["strategy"] == t][["n", "seed", col]]
    right = per[per["strategy"] == b][["n", "seed", col]]
    both = left.merge(right, on=["n", "seed"], suffixes=("_t", "_b"))
    if both.empty:
        return None
    both["d"] = both[f"{col}_t"] - both[f"{col}_b"]
    by_seed = both.groupby("seed")["d"].mean()          # each seed: mean over sizes
    diff = float(by_seed.mean())
    sd = float(by_seed.std(ddof=1)) if len(by_seed) > 1 else float("nan")
    ahead = diff > 0 if higher_is_better else diff < 0
    spread = (f", seed spread sd {abs(sd) * 100:.1f} points over {len(by_seed)} seeds" if np.isfinite(sd)
              else " (one seed: no spread measured)")
    where = f"n={fmt_n(min(both['n']))}..{fmt_n(max(both['n']))}" if both["n"].nunique() > 1 else \
        f"n={fmt_n(both['n'].iloc[0])}"
    noisy = np.isfinite(sd) and abs(diff) <= sd
    if ahead:
        sentence = (f"Against the classical baseline ({b}), the best transfer, {t}, is ahead by {diff * 100:+.1f} points "
                    f"of {label} (mean over {where}, paired by seed{spread})")
    else:
        sentence = (f"The classical baseline ({b}) is ahead of the best transfer, {t}, by "
                    f"{-diff * 100:+.1f} points of {label} (mean over {where}, paired by seed{spread}): "
                    f"use {b} unless a transfer wins at the size you have")
    sentence += ("; within the seed spread, so not a clear difference." if noisy else ".")
    return {"baseline": b, "transfer": t, "difference": diff, "seed_sd": sd, "seeds": int(len(by_seed)),
            "baseline_wins": not ahead, "sentence": sentence}
