"""Transferability scores: guess, before any fine-tuning, which pretrained model suits a task.

Every score here reads what a frozen backbone produces on the labelled target data
(features, or the source head's class probabilities) and returns one float, **higher =
more transferable**. None of them trains the backbone; they cost seconds where fine-tuning
each candidate costs hours, which is the whole point: rank many models, fine-tune the best.

Feature scores (`SCORES`, each callable as ``fn(f, y, task)``):

- ``logme``: Bayesian evidence of a linear model on the features (You et al., ICML 2021).
- ``h-score``: how well class means separate relative to the feature covariance
  (Bao et al., ICIP 2019), by default with Ledoit-Wolf shrinkage (Ibrahim et al., 2022).
- ``knn``: leave-one-out k-nearest-neighbour accuracy.
- ``linear-probe-cv``: stratified k-fold accuracy of a logistic-regression probe.

Source-head scores (`SOURCE_SCORES`, each callable as ``fn(source_probs, y, task)``), for
models that come with a classifier over some source label set Z (e.g. ImageNet classes):

- ``leep``: log expected empirical prediction (Nguyen et al., ICML 2020).
- ``nce``: negative conditional entropy H(Y|Z) (Tran et al., ICCV 2019).

And the two rank correlations used to judge a score against the accuracies that
fine-tuning really reached: `kendall_tau` and `weighted_kendall_tau`.

Inputs are numpy arrays: features ``f`` of shape (n, d); labels ``y`` of shape (n,) with
class ids (integers, or strings) for classification, (n,) or (n, k) numbers for
regression, an (n, L) 0/1 matrix for multi-label. Bad input raises `ScoreInputError`, a
`ValueError` (and an `ExaptError`, so the CLI prints it as one line).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

# LogME and H-score live in closed_form.py, the input checks in score_inputs.py; their public
# names are re-exported here, where every score is registered
from .closed_form import LogMEResult, h_score, logme, logme_fit
from .score_inputs import TASKS, ScoreInputError, as_class_labels, as_features, as_source_probs, check_task, unsupported

__all__ = ["TASKS", "ScoreInputError", "LogMEResult", "logme", "logme_fit", "h_score", "leep", "nce", "knn_accuracy",
           "linear_probe_cv", "kendall_tau", "weighted_kendall_tau", "SCORES", "SOURCE_SCORES", "FEATURE_SCORE_TASKS",
           "SOURCE_SCORE_TASKS"]


# ----------------------------------------------------------------------------- source-head scores
def leep(source_probs, y) -> float:
    r"""LEEP: Log Expected Empirical Prediction (Nguyen, Hassner, Seeger, Archambeau, ICML 2020,
    https://arxiv.org/abs/2002.12462).

    With theta(x_i) the source head's probabilities over its Z classes, the empirical joint
    and conditional of target label y and source label z are

        P(y, z) = 1/n sum_{i: y_i = y} theta(x_i)_z,     P(y | z) = P(y, z) / sum_y' P(y', z)

    and LEEP = 1/n sum_i log sum_z P(y_i | z) theta(x_i)_z: the average log-likelihood of the
    "expected empirical predictor" that relabels the source head's output through P(y|z).
    Natural log; at most 0. Why: it needs only one forward pass of the source model with
    its head, and it bounds how well the transferred head (with a re-learnt label map)
    can do on the target.
    """
    p = as_source_probs(source_probs)
    codes, classes = as_class_labels(y, len(p))
    onehot = np.zeros((len(p), len(classes)))
    onehot[np.arange(len(p)), codes] = 1.0
    joint = onehot.T @ p / len(p)                                     # (C, Z)
    pz = joint.sum(axis=0)
    cond = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)   # P(y | z); unused z get 0
    eep = np.sum(p * cond[codes], axis=1)                             # > 0 for every row
    return float(np.mean(np.log(eep)))


def nce(source_labels, y) -> float:
    r"""NCE: Negative Conditional Entropy -H(Y | Z) (Tran, Nguyen, Hassner, "Transferability and
    Hardness of Supervised Classification Tasks", ICCV 2019, https://arxiv.org/abs/1908.08142).

    With z_i the source model's hard prediction (``source_labels`` of shape (n,), or the
    argmax of an (n, Z) array of source probabilities/logits) and the empirical joint
    P(y, z) = #{i: y_i = y, z_i = z} / n,

        NCE = -H(Y | Z) = sum_{y,z} P(y, z) log P(y | z)   (natural log)

    0 when the source labels determine the target labels; -H(Y) when they are independent
    of them. Why: the paper shows -H(Y|Z) bounds the log-likelihood of the transferred
    model, so a source task whose predictions already explain the target labels transfers
    well.
    """
    z = np.asarray(source_labels)
    if z.ndim == 2:
        z = as_features(z, name="source outputs").argmax(axis=1)
    z_codes, _ = _source_codes(z)
    codes, classes = as_class_labels(y, len(z_codes))
    joint = np.zeros((len(classes), int(z_codes.max()) + 1))
    np.add.at(joint, (codes, z_codes), 1.0)
    joint /= len(codes)
    pz = joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log((joint / np.where(pz > 0, pz, 1.0))[nz])))


def _source_codes(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if z.ndim != 1:
        raise ScoreInputError(f"source labels must have shape (n,) or (n, Z); got {z.shape}")
    if z.dtype.kind == "f":
        if not np.isfinite(z).all() or not np.all(z == np.round(z)):
            raise ScoreInputError("source labels must be integer class ids")
    elif z.dtype.kind not in "biuUSO":
        raise ScoreInputError(f"source labels must be class ids; got dtype {z.dtype}")
    if len(z) < 2:
        raise ScoreInputError("need at least 2 samples")
    values, codes = np.unique(z, return_inverse=True)
    return codes.reshape(-1), values


# ----------------------------------------------------------------------------- kNN and probe
def knn_accuracy(f, y, k: int = 5, metric: str = "cosine", *, chunk_size: int = 1024) -> float:
    r"""Leave-one-out k-nearest-neighbour accuracy of the features.

    Each sample is classified by a majority vote of its k nearest *other* samples
    (``metric`` "cosine" (1 - cosine similarity) or "euclidean"); a tied vote goes to the
    tied class whose member is nearest. k is capped at n - 1. Neighbours at exactly equal
    distance to the k-th are taken in no guaranteed order.

    Why: a non-parametric check of the feature geometry (do same-class examples sit close
    together?) with no fitting at all; used as a transferability baseline, e.g. in Kornblith,
    Shlens, Le, "Do Better ImageNet Models Transfer Better?", CVPR 2019. Memory is
    O(chunk_size x n): distances are computed ``chunk_size`` rows at a time.
    """
    f = as_features(f)
    n = len(f)
    codes, classes = as_class_labels(y, n)
    if metric not in ("cosine", "euclidean"):
        raise ScoreInputError(f"unknown kNN metric {metric!r}; expected 'cosine' or 'euclidean'")
    if int(k) != k or k < 1:
        raise ScoreInputError(f"k must be a positive integer; got {k}")
    k = min(int(k), n - 1)
    if metric == "cosine":
        norms = np.linalg.norm(f, axis=1, keepdims=True)
        g = f / np.where(norms > 0, norms, 1.0)
    else:
        g = f
        sq = np.sum(f * f, axis=1)
    n_classes = len(classes)
    correct = 0
    for start in range(0, n, chunk_size):
        rows = np.arange(start, min(start + chunk_size, n))
        if metric == "cosine":
            dist = 1.0 - g[rows] @ g.T
        else:
            dist = np.maximum(sq[rows, None] + sq[None, :] - 2.0 * (g[rows] @ g.T), 0.0)
        dist[np.arange(len(rows)), rows] = np.inf                     # leave the sample itself out
        nbr = np.argpartition(dist, k - 1, axis=1)[:, :k]
        nbr = np.sort(nbr, axis=1)                                    # equal distances: by index
        order = np.argsort(np.take_along_axis(dist, nbr, axis=1), axis=1, kind="stable")
        lab = codes[np.take_along_axis(nbr, order, axis=1)]           # (rows, k), nearest first
        votes = np.zeros((len(rows), n_classes))
        np.add.at(votes, (np.repeat(np.arange(len(rows)), k), lab.ravel()), 1.0)
        is_top = np.take_along_axis(votes == votes.max(axis=1, keepdims=True), lab, axis=1)
        pred = lab[np.arange(len(rows)), np.argmax(is_top, axis=1)]   # nearest member of a top class
        correct += int(np.sum(pred == codes[rows]))
    return correct / n


def linear_probe_cv(f, y, folds: int = 5, C: float = 1.0, seed: int = 0) -> float:
    r"""Stratified k-fold accuracy of a logistic-regression probe on the raw features.

    sklearn LogisticRegression (lbfgs, L2 strength ``C``, max_iter 2000) is fitted on each
    training fold of a shuffled StratifiedKFold (``seed``) and the score is the mean
    held-out accuracy. ``folds`` is reduced to the smallest class count when a class has
    fewer examples (each fold must see every class); a class with fewer than 2 examples
    raises. Features are used as given (no standardisation).

    Why: the most direct proxy of how a frozen backbone will do with a trained head (the
    "linear evaluation protocol"); slower than the closed-form scores and dependent on C,
    but hard to fool.
    """
    f = as_features(f)
    codes, classes = as_class_labels(y, len(f))
    counts = np.bincount(codes)
    if counts.min() < 2:
        few = [str(c) for c, m in zip(classes, counts) if m < 2]
        raise ScoreInputError(f"linear-probe-cv needs at least 2 examples of every class; "
                              f"class(es) {', '.join(few)} have 1")
    if int(folds) != folds or folds < 2:
        raise ScoreInputError(f"folds must be an integer >= 2; got {folds}")
    from sklearn.linear_model import LogisticRegression  # heavy: imported on first use
    from sklearn.model_selection import StratifiedKFold  # heavy: imported on first use

    k = min(int(folds), int(counts.min()))
    accs = []
    for train, test in StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(f, codes):
        clf = LogisticRegression(C=C, solver="lbfgs", max_iter=2000).fit(f[train], codes[train])
        accs.append(float(np.mean(clf.predict(f[test]) == codes[test])))
    return float(np.mean(accs))


# ----------------------------------------------------------------------------- rank correlation
def _paired(scores, accuracies) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    a = np.asarray(accuracies, dtype=np.float64)
    if s.ndim != 1 or a.shape != s.shape:
        raise ScoreInputError(f"scores and accuracies must be 1-D and of equal length; got {s.shape} and {a.shape}")
    if len(s) < 2:
        raise ScoreInputError("need at least 2 models to correlate")
    if not (np.isfinite(s).all() and np.isfinite(a).all()):
        raise ScoreInputError("scores and accuracies must be finite")
    return s, a


def kendall_tau(scores, accuracies) -> float:
    """Kendall's tau-b between a score and the accuracies fine-tuning reached, one entry per
    model (scipy.stats.kendalltau). 1: same order; -1: reversed; NaN if either is constant."""
    from scipy.stats import kendalltau  # heavy: imported on first use

    s, a = _paired(scores, accuracies)
    return float(kendalltau(s, a).statistic)


def weighted_kendall_tau(scores, accuracies) -> float:
    r"""Weighted Kendall tau (Vigna, "A weighted correlation index for rankings with ties",
    WWW 2015), the rank correlation used to evaluate transferability scores (LogME, and
    most later papers), as ``scipy.stats.weightedtau(scores, accuracies)``.

    Each discordant pair costs a weight from the hyperbolic weigher 1/(r + 1) of its
    members' ranks (rank 0 = best), so misordering the top models costs more than
    misordering the bottom ones: what matters when choosing a model is picking the best.
    With scipy's default ``rank=True`` the ranks come from each variable in turn (by
    scores, then by accuracies) and the two values are averaged, making it symmetric.
    1: same order; -1: reversed.
    """
    from scipy.stats import weightedtau  # heavy: imported on first use

    s, a = _paired(scores, accuracies)
    return float(weightedtau(s, a).statistic)


# ----------------------------------------------------------------------------- registries
FEATURE_SCORE_TASKS: dict[str, tuple[str, ...]] = {
    "logme": ("classification", "regression", "multilabel"),
    "h-score": ("classification",),
    "knn": ("classification",),
    "linear-probe-cv": ("classification",),
}
SOURCE_SCORE_TASKS: dict[str, tuple[str, ...]] = {"leep": ("classification",), "nce": ("classification",)}


def _registered(name: str, supported: tuple[str, ...], fn: Callable[..., float],
                public: Callable[..., float]) -> Callable[..., float]:
    """``fn(f, y, task)`` that refuses tasks outside ``supported`` with a clear message."""

    def score(f, y, task: str = "classification") -> float:
        if check_task(task) not in supported:
            raise unsupported(name, task, supported)
        return fn(f, y, task)

    score.__name__ = score.__qualname__ = name.replace("-", "_")
    score.__doc__ = f"{name!r} as fn(f, y, task); see `{public.__name__}`.\n\n{public.__doc__}"
    return score


SCORES: dict[str, Callable[..., float]] = {
    "logme": _registered("logme", FEATURE_SCORE_TASKS["logme"], lambda f, y, task: logme(f, y, task), logme),
    "h-score": _registered("h-score", FEATURE_SCORE_TASKS["h-score"], lambda f, y, task: h_score(f, y), h_score),
    "knn": _registered("knn", FEATURE_SCORE_TASKS["knn"], lambda f, y, task: knn_accuracy(f, y), knn_accuracy),
    "linear-probe-cv": _registered("linear-probe-cv", FEATURE_SCORE_TASKS["linear-probe-cv"],
                                   lambda f, y, task: linear_probe_cv(f, y), linear_probe_cv),
}
"""Feature-only scores, each fn(f, y, task) -> float (higher = more transferable)."""

SOURCE_SCORES: dict[str, Callable[..., float]] = {
    "leep": _registered("leep", SOURCE_SCORE_TASKS["leep"], lambda p, y, task: leep(p, y), leep),
    "nce": _registered("nce", SOURCE_SCORE_TASKS["nce"], lambda p, y, task: nce(p, y), nce),
}
"""Scores on the source head's outputs, each fn(source_probs, y, task) -> float, where
source_probs is (n, Z) probabilities over the source classes (nce takes their argmax)."""
