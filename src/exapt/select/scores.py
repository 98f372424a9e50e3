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

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ExaptError

TASKS = ("classification", "regression", "multilabel")


class ScoreInputError(ExaptError, ValueError):
    """Input a score cannot use: wrong shape, NaN/inf, too few classes, unsupported task."""


# ----------------------------------------------------------------------------- validation
def _check_task(task: str) -> str:
    if task not in TASKS:
        raise ScoreInputError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return task


def _features(f, name: str = "features") -> np.ndarray:
    a = np.asarray(f)
    if a.ndim != 2:
        raise ScoreInputError(f"{name} must be a 2-D array (n_samples, n_features); got shape {a.shape}")
    if a.dtype.kind not in "biuf":
        raise ScoreInputError(f"{name} must be numeric; got dtype {a.dtype}")
    if a.shape[0] < 2 or a.shape[1] < 1:
        raise ScoreInputError(f"{name} need at least 2 samples and 1 dimension; got shape {a.shape}")
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ScoreInputError(f"{name} contain NaN or infinite values")
    return a


def _class_labels(y, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Class ids -> (codes 0..C-1 of shape (n,), the distinct classes in sorted order)."""
    a = np.asarray(y)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ScoreInputError(f"classification labels must be a 1-D array of class ids; got shape {a.shape}")
    if len(a) != n:
        raise ScoreInputError(f"labels have {len(a)} rows but features have {n}")
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ScoreInputError("labels contain NaN or infinite values")
        if not np.all(a == np.round(a)):
            raise ScoreInputError("classification labels must be integer class ids; got fractional numbers "
                                  "(is this a regression task?)")
        a = a.astype(np.int64)
    elif a.dtype.kind not in "biuUSO":
        raise ScoreInputError(f"classification labels must be integer class ids; got dtype {a.dtype}")
    classes, codes = np.unique(a, return_inverse=True)
    if len(classes) < 2:
        raise ScoreInputError(f"need at least 2 classes; the labels hold {len(classes)}")
    return codes.reshape(-1), classes


def _targets(y, n: int, task: str) -> np.ndarray:
    """Regression / multi-label targets -> float array of shape (n, k)."""
    a = np.asarray(y)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ScoreInputError(f"{task} targets must have shape (n,) or (n, k); got {a.shape}")
    if len(a) != n:
        raise ScoreInputError(f"targets have {len(a)} rows but features have {n}")
    if a.dtype.kind not in "biuf":
        raise ScoreInputError(f"{task} targets must be numeric; got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ScoreInputError("targets contain NaN or infinite values")
    if task == "multilabel" and not np.isin(a, (0.0, 1.0)).all():
        raise ScoreInputError("multilabel targets must be a 0/1 indicator matrix of shape (n, n_labels)")
    return a


def _source_probs(p) -> np.ndarray:
    a = _features(p, name="source probabilities")
    if (a < 0).any():
        raise ScoreInputError("source probabilities must be non-negative; apply a softmax to logits first")
    sums = a.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-2):
        raise ScoreInputError("source probabilities must sum to 1 in each row; apply a softmax to logits first")
    return a / sums[:, None]


def _unsupported(name: str, task: str, supported: tuple[str, ...]) -> ScoreInputError:
    return ScoreInputError(f"score {name!r} does not support task {task!r} (it supports: {', '.join(supported)})")


# ----------------------------------------------------------------------------- LogME
@dataclass(frozen=True)
class LogMEResult:
    """What `logme_fit` converged to, one entry per target column.

    ``evidence`` is each column's log evidence divided by n; ``score`` is its mean.
    ``alpha`` (prior precision of the weights) and ``beta`` (noise precision) are the
    values the evidence was evaluated at. ``converged`` is False where ``max_iter`` ran
    out before the relative change of alpha/beta fell below ``tol``.
    """

    score: float
    evidence: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray


def _spectrum(f: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sigma (the non-zero eigenvalues of F^T F) and X = U^T Y (targets in F's left singular basis).

    n > d: eigen-decompose the d x d Gram matrix F^T F = V diag(sigma) V^T (O(n d^2), one
    pass over F) and get U^T Y = diag(sigma^-1/2) V^T (F^T Y) without ever forming the
    n x d matrix U. n <= d: economy SVD of F (O(n^2 d)). Directions with (numerically)
    zero singular value are dropped: their sigma is 0, and their share of y is counted in
    the residual ||y||^2 - ||U^T y||^2, exactly as if sigma were kept at 0.
    """
    n, d = f.shape
    eps = np.finfo(np.float64).eps
    if n > d:
        sigma, v = np.linalg.eigh(f.T @ f)
        keep = sigma > max(sigma[-1], 0.0) * max(n, d) * eps
        sigma, v = sigma[keep], v[:, keep]
        x = (v.T @ (f.T @ targets)) / np.sqrt(sigma)[:, None]
    else:
        u, s, _ = np.linalg.svd(f, full_matrices=False)
        keep = s > s[0] * max(n, d) * eps
        sigma, u = s[keep] ** 2, u[:, keep]
        x = u.T @ targets
    if len(sigma) == 0:
        raise ScoreInputError("features are all zero; LogME needs features of rank >= 1")
    return sigma, x


def _logme_terms(t: float, sigma: np.ndarray, x2: np.ndarray, res_null: float) -> tuple[float, float]:
    """m^T m and ||F m - y||^2 at lambda = alpha/beta, with m = (F^T F + lambda I)^-1 F^T y."""
    m2 = float(np.sum(sigma * x2 / (t + sigma) ** 2))
    res2 = float(np.sum(x2 * (t / (t + sigma)) ** 2)) + res_null
    return m2, res2


def _logme_column(y_: np.ndarray, x: np.ndarray, sigma: np.ndarray, n: int, d: int,
                  tol: float, max_iter: int) -> tuple[float, float, float, int, bool]:
    x2 = x ** 2
    yy = float(y_ @ y_)
    res_null = max(yy - float(x2.sum()), 0.0)            # part of y outside F's column space
    # Floors for the updates' denominators, relative to the target's scale. They only act in
    # the degenerate case where the evidence keeps growing towards beta -> inf (the features
    # fit y exactly, e.g. n <= d) or alpha -> inf (y orthogonal to every feature): there
    # they stop alpha, beta overflowing. (The reference adds an absolute 1e-5 instead.)
    res_floor, m2_floor = 1e-12 * yy, 1e-12 * yy / float(sigma.max())
    alpha, beta = 1.0, 1.0
    converged, it = False, 0
    for it in range(1, max_iter + 1):
        t = alpha / beta
        gamma = float(np.sum(sigma / (sigma + t)))           # = sum beta s_i / (alpha + beta s_i)
        m2, res2 = _logme_terms(t, sigma, x2, res_null)
        alpha = gamma / max(m2, m2_floor)
        beta = (n - gamma) / max(res2, res_floor)
        if abs(alpha / beta - t) <= tol * t:
            converged = True
            break
    # the evidence at the final (alpha, beta), with m the posterior mean at those values
    m2, res2 = _logme_terms(alpha / beta, sigma, x2, res_null)
    logdet_a = float(np.sum(np.log(alpha + beta * sigma))) + (d - len(sigma)) * math.log(alpha)
    evidence = (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
                - beta / 2 * res2 - alpha / 2 * m2 - logdet_a / 2)
    return evidence / n, alpha, beta, it, converged


def logme_fit(f, y, task: str = "classification", *, tol: float = 1e-3, max_iter: int = 11) -> LogMEResult:
    """LogME with its per-target details (alpha, beta, evidence, iterations); see `logme`."""
    _check_task(task)
    f = _features(f)
    n, d = f.shape
    if task == "classification":
        codes, classes = _class_labels(y, n)
        targets = (codes[:, None] == np.arange(len(classes))[None, :]).astype(np.float64)
    else:
        targets = _targets(y, n, task)
    if tol <= 0 or max_iter < 1:
        raise ScoreInputError(f"LogME needs tol > 0 and max_iter >= 1; got tol={tol}, max_iter={max_iter}")
    empty = np.flatnonzero(~targets.any(axis=0))
    if len(empty):
        raise ScoreInputError(f"target column {int(empty[0])} is all zeros; LogME needs a non-zero target "
                              "(for multilabel: a label with at least one positive example)")
    sigma, x = _spectrum(f, targets)
    cols = [_logme_column(targets[:, j], x[:, j], sigma, n, d, tol, max_iter) for j in range(targets.shape[1])]
    ev, al, be, its, conv = (np.array(c) for c in zip(*cols))
    return LogMEResult(score=float(ev.mean()), evidence=ev, alpha=al, beta=be, iterations=its, converged=conv)


def logme(f, y, task: str = "classification", *, tol: float = 1e-3, max_iter: int = 11) -> float:
    r"""LogME: the log marginal evidence of a Bayesian linear model on the features, per sample.

    You, Liu, Wang, Long. "LogME: Practical Assessment of Pre-trained Models for Transfer
    Learning", ICML 2021 (https://arxiv.org/abs/2102.11005).

    Each target column y (one one-hot column per class for classification, each target
    for regression, each label for multi-label) is modelled as y = F w + noise with
    w ~ N(0, alpha^-1 I) and noise ~ N(0, beta^-1 I). Its evidence p(y | F) maximised over
    (alpha, beta) is

        L = n/2 log beta + d/2 log alpha - n/2 log 2pi - beta/2 ||F m - y||^2
            - alpha/2 m^T m - 1/2 log|A|,   A = alpha I + beta F^T F,  m = beta A^-1 F^T y

    found by the paper's fixed-point iteration (MacKay's updates), from alpha = beta = 1:

        gamma = sum_i beta s_i / (alpha + beta s_i)      (s_i: eigenvalues of F^T F)
        alpha = gamma / m^T m,      beta = (n - gamma) / ||F m - y||^2

    until the relative change of alpha/beta is below ``tol`` or after ``max_iter`` rounds
    (11, as in the authors' code; `logme_fit` reports which columns converged). Each
    fixed point is a stationary point of L in (alpha, beta). When the features can fit a
    column exactly (typically n <= d) L may instead grow towards a finite limit as
    beta -> inf; the rounds then just stop at ``max_iter``, as in the reference. The score
    is the mean over columns of L / n. One SVD of F serves every column, and every quantity above is then
    an O(min(n, d)) sum, so the score costs about one pass of F^T F even for n = 10^4.

    Why: the evidence rewards features on which a *simple* linear model fits the labels
    well, penalising both misfit and the complexity needed; it needs no training,
    no hyper-parameter and no validation split, and it correlated best with fine-tuned
    accuracy among the scores the paper compared.
    """
    return logme_fit(f, y, task, tol=tol, max_iter=max_iter).score


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
    p = _source_probs(source_probs)
    codes, classes = _class_labels(y, len(p))
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
        z = _features(z, name="source outputs").argmax(axis=1)
    z_codes, _ = _source_codes(z)
    codes, classes = _class_labels(y, len(z_codes))
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


# ----------------------------------------------------------------------------- H-score
def h_score(f, y, shrinkage: bool = True) -> float:
    r"""H-score: tr(cov(f)^-1 cov(E[f | y])) (Bao, Li, Huang, Zheng, Liu, Tan, Huang, "An
    Information-Theoretic Approach to Transferability in Task Transfer Learning", ICIP 2019).

    cov(E[f|y]) is the covariance of the features with each sample replaced by its class
    mean (the between-class scatter). Why: the score is the (asymptotic) log-loss gain a
    linear classifier on f can reach, i.e. how far class means stand apart measured in the
    metric of the feature covariance (Fisher's discriminant ratio).

    ``shrinkage=False``: the original, cov = the sample covariance (1/(n-1)) inverted with
    a pseudo-inverse; it blows up when n <= d or features are correlated, because tiny
    eigenvalues of cov(f) get huge weights.

    ``shrinkage=True`` (default): the regularised H-score of Ibrahim, Ponomareva, Mazumder,
    "Newer is not always better: Rethinking transferability metrics, their peculiarities,
    stability and performance", ECML-PKDD 2022 (https://arxiv.org/abs/2110.06893):

        H_a = tr(cov_a(f)^-1 (1 - a) cov(E[f | y]))

    with cov_a the Ledoit-Wolf covariance (sklearn.covariance.LedoitWolf) and a its
    shrinkage intensity; well-conditioned whatever n and d. As in the authors' code,
    cov(E[f|y]) keeps the 1/(n-1) normalisation while Ledoit-Wolf uses 1/n.
    """
    f = _features(f)
    n, d = f.shape
    codes, classes = _class_labels(y, n)
    f = f - f.mean(axis=0, keepdims=True)
    counts = np.bincount(codes, minlength=len(classes)).astype(np.float64)
    means = np.zeros((len(classes), d))
    np.add.at(means, codes, f)
    means /= counts[:, None]                 # class means of centred f (their weighted mean is 0)
    if shrinkage:
        from sklearn.covariance import LedoitWolf

        lw = LedoitWolf(assume_centered=True).fit(f)
        cov, scale = lw.covariance_, 1.0 - float(lw.shrinkage_)   # shrunk towards mu I: well-conditioned
    else:
        cov, scale = f.T @ f / (n - 1), 1.0
    solved = np.linalg.pinv(cov, rcond=1e-15, hermitian=True) @ means.T
    # tr(P cov_g) with cov_g = sum_c n_c mu_c mu_c^T / (n - 1)
    return float(scale * np.sum(counts * np.sum(means.T * solved, axis=0)) / (n - 1))


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
    f = _features(f)
    n = len(f)
    codes, classes = _class_labels(y, n)
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
    f = _features(f)
    codes, classes = _class_labels(y, len(f))
    counts = np.bincount(codes)
    if counts.min() < 2:
        few = [str(c) for c, m in zip(classes, counts) if m < 2]
        raise ScoreInputError(f"linear-probe-cv needs at least 2 examples of every class; "
                              f"class(es) {', '.join(few)} have 1")
    if int(folds) != folds or folds < 2:
        raise ScoreInputError(f"folds must be an integer >= 2; got {folds}")
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

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
    from scipy.stats import kendalltau

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
    from scipy.stats import weightedtau

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
        if _check_task(task) not in supported:
            raise _unsupported(name, task, supported)
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
