"""Decision rules and calibration for single-label classification, fitted on validation only.

A rule turns a model's logits z into calibrated probabilities and decisions:

    calibrated = z / T + shift          probabilities = softmax(calibrated)
    decision   = argmax(calibrated + offsets)

- T: temperature scaling (Guo et al. 2017), the one scalar minimising validation NLL;
  it never changes the argmax by itself.
- shift = log pi_data - log pi_trained: the prior correction (Saerens et al. 2002). A
  model trained on a sample balanced by --n-per-class, or with class weights, learned
  other class frequencies than those of the labelled data it was drawn from; the shift
  moves its probabilities to the data's own (counted over the rows that are not test).
- offsets: one per class, tuned by coordinate ascent to maximise macro-F1 on the
  validation split (rows reweighted to the data's class frequencies), or raised until a
  class reaches `--target-recall` there.

The rule is saved with the run (RunFolder.write_decision) and applied by Run's predict
and evaluate. Also here: per-class precision / recall / F1, expected calibration error
and the reliability table.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

OFFSET_GRID = np.linspace(-4.0, 4.0, 33)  # in logit units: up to e^4 ~ 55x in odds
ECE_BINS = 15                              # Guo et al.'s choice


@dataclass
class DecisionRule:
    rule: str                                  # calibrated | macro-f1 | target-recall
    temperature: float = 1.0
    shift: list[float] = field(default_factory=list)
    offsets: list[float] = field(default_factory=list)
    target_recall: dict = field(default_factory=dict)

    def calibrated(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float() / self.temperature + torch.tensor(self.shift, dtype=torch.float32)

    def decide(self, logits: torch.Tensor) -> np.ndarray:
        """Class indices."""
        return (self.calibrated(logits) + torch.tensor(self.offsets, dtype=torch.float32)).argmax(-1).numpy()

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "DecisionRule":
        return cls(str(d["rule"]), float(d["temperature"]), [float(x) for x in d["shift"]],
                   [float(x) for x in d["offsets"]], dict(d.get("target_recall") or {}))


# -- scores ------------------------------------------------------------------------------
def weighted_confusion(pred: np.ndarray, truth: np.ndarray, k: int, weights=None) -> np.ndarray:
    out = np.zeros((k, k))
    np.add.at(out, (truth, pred), 1.0 if weights is None else weights)
    return out


def f1_from_confusion(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, F1) per class; 0 where undefined (scikit-learn's zero_division=0)."""
    tp = np.diag(cm)
    predicted, actual = cm.sum(0), cm.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1


def per_class_scores(pred: np.ndarray, truth: np.ndarray, classes: list[str]) -> dict[str, dict]:
    cm = weighted_confusion(np.asarray(pred), np.asarray(truth), len(classes))
    precision, recall, f1 = f1_from_confusion(cm)
    return {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                "support": int(cm[i].sum())} for i, c in enumerate(classes)}


def reliability(probs: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Equal-width bins of the top probability: rows, mean confidence, accuracy."""
    confidence, pred = probs.max(1), probs.argmax(1)
    correct = (pred == truth).astype(float)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        rows = which == b
        if rows.any():
            out.append({"lo": b / bins, "hi": (b + 1) / bins, "n": int(rows.sum()),
                        "confidence": float(confidence[rows].mean()), "accuracy": float(correct[rows].mean())})
    return out


def expected_calibration_error(probs: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the row-weighted mean gap between confidence and accuracy over the bins."""
    table = reliability(probs, truth, bins)
    n = sum(b["n"] for b in table)
    return float(sum(b["n"] * abs(b["accuracy"] - b["confidence"]) for b in table) / max(n, 1))


def calibration_report(probs: np.ndarray, truth: np.ndarray) -> dict:
    return {"ece": expected_calibration_error(probs, truth), "reliability": reliability(probs, truth)}


# -- fitting on validation ----------------------------------------------------------------
def prior_shift(data_counts, trained_counts) -> np.ndarray:
    """log pi_data - log pi_trained, both smoothed by one row per class."""
    data = np.asarray(data_counts, float) + 1
    trained = np.asarray(trained_counts, float) + 1
    return np.log(data / data.sum()) - np.log(trained / trained.sum())


def row_weights(truth: np.ndarray, data_counts) -> np.ndarray:
    """Validation rows reweighted to the data's class frequencies (a validation split
    drawn by --n-per-class is balanced; the data it will be used on is not)."""
    k = len(data_counts)
    val = np.bincount(truth, minlength=k).astype(float)
    data = np.asarray(data_counts, float)
    ratio = np.divide(data / data.sum(), val / max(val.sum(), 1), out=np.ones(k), where=val > 0)
    return ratio[truth]


def fit_temperature(logits: torch.Tensor, truth: np.ndarray, shift: np.ndarray, weights: np.ndarray) -> float:
    """The T > 0 minimising weighted NLL of softmax(z / T + shift) (L-BFGS on log T)."""
    z, y = logits.double(), torch.as_tensor(truth)
    s, w = torch.as_tensor(shift, dtype=torch.float64), torch.as_tensor(weights, dtype=torch.float64)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        nll = torch.nn.functional.cross_entropy(z / log_t.exp() + s, y, reduction="none")
        loss = (w * nll).sum() / w.sum()
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().clamp(-4, 4).exp())


def weighted_macro_f1(scores: np.ndarray, offsets: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> float:
    cm = weighted_confusion((scores + offsets).argmax(1), truth, scores.shape[1], weights)
    return float(f1_from_confusion(cm)[2].mean())


def tune_offsets(scores: np.ndarray, truth: np.ndarray, weights: np.ndarray, rounds: int = 3) -> np.ndarray:
    """Per-class offsets maximising weighted macro-F1, by coordinate ascent over a grid;
    a tie keeps the offset nearest 0 (no move without a gain on validation)."""
    k = scores.shape[1]
    offsets = np.zeros(k)
    best = weighted_macro_f1(scores, offsets, truth, weights)
    for _ in range(rounds):
        moved = False
        for c in range(k):
            for value in sorted(OFFSET_GRID, key=abs):
                trial = offsets.copy()
                trial[c] = value
                f1 = weighted_macro_f1(scores, trial, truth, weights)
                if f1 > best + 1e-12:
                    best, offsets, moved = f1, trial, True
        if not moved:
            break
    return offsets


def reach_recall(scores: np.ndarray, offsets: np.ndarray, truth: np.ndarray, c: int, target: float) -> np.ndarray:
    """Raise class c's offset to the smallest grid value whose validation recall of c is
    at least `target` (the largest on the grid when none reaches it)."""
    rows = truth == c
    for value in OFFSET_GRID:
        if value < offsets[c]:
            continue
        trial = offsets.copy()
        trial[c] = value
        if ((scores[rows] + trial).argmax(1) == c).mean() >= target:
            return trial
    trial = offsets.copy()
    trial[c] = OFFSET_GRID[-1]
    return trial


def fit_rule(decision: str, target_recall: dict, logits: torch.Tensor, truth: np.ndarray, classes: list[str],
             data_counts, trained_counts) -> DecisionRule:
    """The rule a run applies, from its validation logits alone. `data_counts`: class
    counts of the labelled rows outside the test set; `trained_counts`: the class
    frequencies the loss saw (weighted counts of the training split)."""
    truth = np.asarray(truth)
    shift = prior_shift(data_counts, trained_counts)
    weights = row_weights(truth, data_counts)
    temperature = fit_temperature(logits, truth, shift, weights)
    scores = (logits.double() / temperature).numpy() + shift
    offsets = tune_offsets(scores, truth, weights) if decision == "macro-f1" else np.zeros(len(classes))
    for name, target in target_recall.items():
        offsets = reach_recall(scores, offsets, truth, classes.index(name), target)
    name = decision if decision != "argmax" else "target-recall"  # --target-recall alone
    return DecisionRule(name, temperature, [float(x) for x in shift], [float(x) for x in offsets],
                        dict(target_recall))
