"""`baseline`: the classical model a statistician would fit first, in every comparison.

Its model is always the `classical` backbone (backbones/classical.py), whatever --model
says: TF-IDF of word 1-2-grams for text, k-mer frequencies (k = KMIN..KMAX) for DNA,
amino-acid + dipeptide composition for proteins, the raw values for numeric columns and
images. On those features a logistic regression (the probe's L-BFGS routine, scikit-learn's
objective) is fitted with C chosen by stratified K-fold cross-validation on the training
split from `C_GRID` (on the task's primary metric; a tie goes to the C nearest 1,
scikit-learn's default), then refitted on the whole training split.

    exapt fit promoters --strategy baseline           # k-mers 3..6
    exapt fit promoters --strategy baseline:k=4-5,folds=3
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..registry import STRATEGIES
from ..train.probe import fit_linear_head
from .base import Strategy

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
MAX_K = 6   # the classical backbone's largest k-mer (4^6 slots)


@STRATEGIES.register("baseline")
@dataclass
class Baseline(Strategy):
    k: str = "3-6"
    folds: int = 5
    summary = "classical features (TF-IDF, k-mers, composition, raw values) + logistic regression, C by CV"
    trains_encoder = False
    uses_pretrained = False   # nothing pretrained: the features are computed

    def __post_init__(self):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", self.k.strip())
        if not m or not 1 <= int(m.group(1)) <= int(m.group(2) or m.group(1)) <= MAX_K:
            raise ValueError(f"k must be K or KMIN-KMAX with 1 <= KMIN <= KMAX <= {MAX_K} (k-mer sizes), "
                             f"got {self.k!r}")
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2 (cross-validation folds), got {self.folds}")

    def own_model(self) -> str:
        return "classical" if self.k.strip() == "3-6" else f"classical:{self.k.strip()}"

    def first_trainable(self, n_blocks, epoch):
        return n_blocks

    @property
    def probe_features_cacheable(self) -> bool:
        return False   # TF-IDF and standardisation are fitted on this training split

    def fit_probe(self, head, features, targets, task, sample_weight=None) -> dict:
        # columns that are zero on every training example (unused TF-IDF or k-mer slots) get
        # zero weight at the L2-regularised optimum: fit on the others only, the same model, faster
        used = (features != 0).any(0)
        small = nn.utils.skip_init(nn.Linear, int(used.sum()), head.out_features)  # no random draws
        C, scores, folds = choose_C(small, features[:, used], targets, task, self.folds, sample_weight)
        out = fit_linear_head(small, features[:, used], targets, task, C=C, sample_weight=sample_weight)
        with torch.no_grad():
            head.weight.zero_()
            head.weight[:, used] = small.weight
            head.bias.copy_(small.bias)
        out.update(probe_C=C, probe_cv_folds=folds, probe_cv_metric=task.primary_metric,
                   probe_cv_scores={f"{c:g}": s for c, s in scores.items()})
        return out


def fold_indices(targets: torch.Tensor, task, folds: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, held-out) index pairs: stratified for classification, at most as many folds as
    the smallest class has examples; [] when a class has fewer than 2 (no CV possible)."""
    from sklearn.model_selection import KFold, StratifiedKFold  # heavy: imported on first use

    n = len(targets)
    if task.kind == "classification":
        y = targets.numpy()
        counts = np.bincount(y) if n else np.zeros(0, dtype=int)
        smallest = int(counts[counts > 0].min()) if n else 0
        if smallest < 2:
            return []
        splitter = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(n), y))
    if n < 4:
        return []
    return list(KFold(n_splits=min(folds, n // 2), shuffle=True, random_state=seed).split(np.zeros(n)))


def choose_C(head, features: torch.Tensor, targets: torch.Tensor, task, folds: int,
             sample_weight: torch.Tensor | None = None) -> tuple[float, dict, int]:
    """(C, mean held-out score per C, folds used): the C with the best mean score (a tie: the
    one nearest 1); C = 1 when there are too few examples to cross-validate. `head` is
    only copied (the fold fits start from zeros, as the probe always does)."""
    pairs = fold_indices(targets, task, folds)
    if not pairs:
        return 1.0, {}, 0
    sign = 1.0 if task.higher_is_better else -1.0
    scores = {}
    for C in C_GRID:
        values = []
        for train_idx, held_idx in pairs:
            fold_head = copy.deepcopy(head)
            weight = sample_weight[train_idx] if sample_weight is not None else None  # synthetic rows
            fit_linear_head(fold_head, features[train_idx], targets[train_idx], task, C=C, sample_weight=weight)
            with torch.no_grad():
                logits = fold_head(features[held_idx])
            values.append(task.metrics(logits, targets[held_idx])[task.primary_metric])
        scores[C] = float(np.mean(values))
    top = max(sign * v for v in scores.values())
    tied = [c for c in C_GRID if sign * scores[c] >= top - 1e-12]
    # a tie (common with a few examples per fold) goes to the C nearest scikit-learn's
    # default of 1, the larger on equal distance: the smallest C of a tie is an almost
    # constant model whose predictions float noise decides
    best = min(tied, key=lambda c: (abs(np.log10(c)), -c))
    return best, scores, len(pairs)
