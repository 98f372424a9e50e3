"""Concept shift: with a few target labels, does the source model still label the target right?

When TARGET has labels, N of them per class train a *target probe* (logistic regression on
the same frozen features) and the remaining target rows judge both models, class by class:

- the source model's recall on held-out source rows (how good it is at home) and on the
  target. Recall per class, P(predicted c | y = c), depends on p(x | y) only, so under pure
  label shift it does not move: a drop from home means p(x | y) changed;
- its recall after label-shift correction (posteriors re-weighted by the estimated priors:
  what correcting p(y) alone recovers);
- the source model made prior-neutral (posteriors re-weighted to uniform priors) against
  the target probe, trained class-balanced: both then assume the same flat prior, so the gap
  between them is not an artefact of the source's class shares. A class where the probe
  beats the source model by a wide margin is one whose decision rule moved: p(y | x) differs,
  which no re-weighting of the source fixes.

The draw of N labels per class is repeated and the recalls averaged, so one lucky draw
does not decide.

    from exapt.shift.concept import concept_shift
    res = concept_shift(xt, yt, source_outputs, classes, n_per_class=20, em_priors=q)
    res.table   # per class: n, recall at home, on target, balanced, probe, drop, gap
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..estimators.label_shift import adjust_posteriors

DEFAULT_N_PER_CLASS = 20
DEFAULT_REPEATS = 5
DEFAULT_C = 0.1               # the probe sees N per class in hundreds of dimensions: regularise


@dataclass
class ConceptResult:
    n_per_class: int
    repeats: int
    table: pd.DataFrame            # one row per class (index: class name)
    accuracy: dict                 # source / source_bbse / source_em / probe on the evaluated target rows
    balanced_accuracy: dict

    @property
    def worst(self) -> tuple[str, float]:
        """The class where the (prior-neutral) source model loses most against the probe, in points."""
        drops = self.table["gap_to_probe"].dropna()
        if drops.empty:
            return "", 0.0
        c = drops.idxmax()
        return str(c), float(drops[c])

    def to_dict(self) -> dict:
        rows = {str(c): {k: (None if pd.isna(v) else (int(v) if k == "n_eval" else round(float(v), 4)))
                         for k, v in r.items()} for c, r in self.table.iterrows()}
        return {"n_per_class": self.n_per_class, "repeats": self.repeats, "per_class": rows,
                "accuracy": self.accuracy, "balanced_accuracy": self.balanced_accuracy,
                "worst_class": self.worst[0], "worst_drop_points": self.worst[1]}


def _nanmean(a: np.ndarray, axis=None):
    """nanmean without the warning for an all-NaN slice (a class with no target rows)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis)


def _recalls(pred: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    out = np.full(k, np.nan)
    for c in range(k):
        mask = y == c
        if mask.any():
            out[c] = float((pred[mask] == c).mean())
    return out


def _draw(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """N rows per class for the probe; a class with too few rows gives half of them, so
    some remain to be evaluated on."""
    picked = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        take = min(n, max(1, len(rows) // 2)) if len(rows) > 1 else 0
        picked.append(rng.choice(rows, take, replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, int)


def concept_shift(target_x: np.ndarray, target_y: np.ndarray, source, classes: list[str], *,
                  n_per_class: int = DEFAULT_N_PER_CLASS, repeats: int = DEFAULT_REPEATS, seed: int = 0,
                  bbse_priors: np.ndarray | None = None, em_priors: np.ndarray | None = None,
                  C: float = DEFAULT_C) -> ConceptResult | None:
    """Per-class recalls of the source model (`source`: a `SourceOutputs`) and of target probes.

    Returns None when fewer than two target classes have rows to train on."""
    from sklearn.preprocessing import StandardScaler  # heavy: imported on first use

    k = len(classes)
    y = np.asarray(target_y, int)
    if len(np.unique(y)) < 2 or n_per_class < 1:
        return None
    # unlabelled target features are free, so the scaler sees all of them (no labels involved)
    x = StandardScaler().fit_transform(np.asarray(target_x, float))
    predictions = _source_predictions(source, k, bbse_priors, em_priors)
    recalls, acc, n_eval = _repeated_probes(x, y, predictions, k, n_per_class, repeats, seed, C)
    home = _recalls(source.heldout_probabilities.argmax(1), source.heldout_labels, k)
    mean = {name: _nanmean(np.array(r), 0) for name, r in recalls.items()}
    table = _recall_table(classes, n_eval, home, mean)
    accuracy = {name: round(float(np.mean(v)), 4) for name, v in acc.items()}
    balanced = {name: round(float(_nanmean(m)), 4) for name, m in mean.items()}
    return ConceptResult(n_per_class, repeats, table, accuracy, balanced)


def _source_predictions(source, k: int, bbse_priors, em_priors) -> dict[str, np.ndarray]:
    """The source model's target predictions: as is, with balanced priors, and with the
    BBSE / EM priors when given."""
    prob, trained = source.target_probabilities, source.training_priors
    predictions = {"source": prob.argmax(1),
                   "source_balanced": adjust_posteriors(prob, trained, np.full(k, 1.0 / k)).argmax(1)}
    if bbse_priors is not None:
        predictions["source_bbse"] = adjust_posteriors(prob, trained, bbse_priors).argmax(1)
    if em_priors is not None:
        predictions["source_em"] = adjust_posteriors(prob, trained, em_priors).argmax(1)
    return predictions


def _repeated_probes(x, y, predictions: dict, k: int, n_per_class: int, repeats: int, seed: int, C: float):
    """Over `repeats` draws of n_per_class labelled target rows: a probe trained on them, and
    every prediction's per-class recalls and accuracy on the rest. Returns (recalls, accuracies,
    mean rows evaluated per class)."""
    from sklearn.linear_model import LogisticRegression  # heavy: imported on first use

    rng = np.random.default_rng(seed)
    recalls = {name: [] for name in (*predictions, "probe")}
    acc = {name: [] for name in recalls}
    n_eval = np.zeros(k)
    for _ in range(repeats):
        train = _draw(y, n_per_class, rng)
        test = np.setdiff1d(np.arange(len(y)), train)
        probe = LogisticRegression(C=C, max_iter=2000, class_weight="balanced").fit(x[train], y[train])
        current = {**{n: p[test] for n, p in predictions.items()}, "probe": probe.predict(x[test])}
        for name, pred in current.items():
            recalls[name].append(_recalls(pred, y[test], k))
            acc[name].append(float((pred == y[test]).mean()))
        n_eval += np.bincount(y[test], minlength=k) / repeats
    return recalls, acc, n_eval


def _recall_table(classes: list[str], n_eval, home, mean: dict) -> pd.DataFrame:
    table = pd.DataFrame({"n_eval": np.round(n_eval).astype(int), "source_recall_on_source": home,
                          "source_recall_on_target": mean["source"]}, index=pd.Index(classes, name="class"))
    for name in ("source_bbse", "source_em", "source_balanced"):
        if name in mean:
            table[f"{name}_recall_on_target"] = mean[name]
    table["probe_recall_on_target"] = mean["probe"]
    table["drop_from_source"] = 100 * (table["source_recall_on_source"] - table["source_recall_on_target"])
    table["gap_to_probe"] = 100 * (table["probe_recall_on_target"] - table["source_balanced_recall_on_target"])
    table.loc[table["n_eval"] == 0, [c for c in table.columns if c.endswith("_on_target")]
              + ["drop_from_source", "gap_to_probe"]] = np.nan
    return table
