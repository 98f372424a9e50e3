"""Which candidate `exapt rank` suggests fine-tuning first, and how sure it can be.

The scores disagree more often than they agree at the top, so the suggestion follows one
score, chosen by what `benchmarks/rank_bench.py` measured on the tweets (MiniLM layers
1..6, the scratch twin, two encoders pre-trained on tweets; docs/rank.md): the
cross-validated probe followed fine-tuned accuracy best at 64 examples per class
(weighted Kendall tau 0.80 after lp-ft, 0.85 after full fine-tuning, against LogME's 0.55
and 0.57) and as well as LogME at 256 (0.75 against 0.72). LogME comes next: no split, no
fitting, and the closed form the literature ranks with.

A measured accuracy has a sampling error, so candidates within one binomial standard
error of the suggested one are named as a close call: fine-tune those (`--validate`, or
`exapt compare --model`) rather than trusting the order. And with no more examples than
feature dimensions, the evidence of a linear model on the features (LogME) and H-score's
covariance are ill-posed: the suggestion says so.
"""
from __future__ import annotations

import math

import pandas as pd

# the score a suggestion follows: the first of these that was computed for some candidate
PREFERRED = ("linear-probe-cv", "logme", "knn", "h-score", "leep", "nce")
MEASURED = ("linear-probe-cv", "knn")   # accuracies: they have a binomial standard error
ILL_POSED_WHEN_FEW = ("logme", "h-score")


def suggest(frame: pd.DataFrame, scores: list[str], n_train: int) -> dict | None:
    """The candidate to fine-tune first: {candidate, by, value, close, standard_error, picks,
    few_examples, n_train, dim}; None when no score ranks any candidate. ``frame`` holds one
    row per candidate with each score and ``dim`` (its feature dimension)."""
    by = next((s for s in PREFERRED if s in scores and frame[s].notna().any()), None)
    if by is None:
        return None
    best = frame.loc[frame[by].idxmax()]
    value = float(best[by])
    se, close = None, []
    if by in MEASURED and 0 <= value <= 1 and n_train > 0:
        se = math.sqrt(max(value * (1 - value), 0.0) / n_train)
        close = [str(c) for c, v in zip(frame["candidate"], frame[by])
                 if c != best["candidate"] and pd.notna(v) and v >= value - se]
    picks = {s: str(frame.loc[frame[s].idxmax(), "candidate"]) for s in scores if s != by and frame[s].notna().any()}
    dim = int(frame["dim"].max()) if "dim" in frame and frame["dim"].notna().any() else None
    few = dim is not None and n_train <= dim and any(s in scores for s in ILL_POSED_WHEN_FEW)
    return {"candidate": str(best["candidate"]), "by": by, "value": value, "close": close,
            "standard_error": None if se is None else round(se, 4), "picks": picks, "few_examples": few,
            "n_train": int(n_train), "dim": dim}


def suggestion_lines(s: dict | None) -> list[str]:
    """The suggestion as plain sentences (the CLI prints them, rank.md quotes them)."""
    if not s:
        return []
    agree = [k for k, c in s["picks"].items() if c == s["candidate"]]
    differ = [f"{k} picks {c}" for k, c in s["picks"].items() if c != s["candidate"]]
    parts = [f"{', '.join(agree)} agree{'s' if len(agree) == 1 else ''}" if agree else "", ", ".join(differ)]
    tail = "; ".join(p for p in parts if p)
    lines = [f"suggested: {s['candidate']} (best by {s['by']}, {s['value']:.4g})" + (f"; {tail}" if tail else "")]
    if s["close"]:
        both = "both" if len(s["close"]) == 1 else "them all"
        lines.append(f"  a close call: {', '.join(s['close'])} within one standard error ({s['standard_error']:.3f}) "
                     f"of it; fine-tune {both} (--validate) to decide")
    if s["few_examples"]:
        advice = (f"the suggestion follows {s['by']}" if s["by"] not in ILL_POSED_WHEN_FEW
                  else "add linear-probe-cv to --scores for a measured accuracy")
        lines.append(f"  {s['n_train']} examples for {s['dim']} feature dimensions: LogME and H-score are unreliable "
                     f"with no more examples than dimensions (docs/rank.md); {advice}")
    return lines
