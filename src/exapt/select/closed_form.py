"""The closed-form feature scores: LogME (You et al., ICML 2021), the Bayesian evidence of
a linear model on the features, and H-score (Bao et al., ICIP 2019) with Ledoit-Wolf
shrinkage (Ibrahim et al., 2022). See scores.py for how they are registered and called."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .score_inputs import ScoreInputError, as_class_labels, as_features, as_targets, check_task


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
    check_task(task)
    f = as_features(f)
    n, d = f.shape
    if task == "classification":
        codes, classes = as_class_labels(y, n)
        targets = (codes[:, None] == np.arange(len(classes))[None, :]).astype(np.float64)
    else:
        targets = as_targets(y, n, task)
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
    f = as_features(f)
    n, d = f.shape
    codes, classes = as_class_labels(y, n)
    f = f - f.mean(axis=0, keepdims=True)
    counts = np.bincount(codes, minlength=len(classes)).astype(np.float64)
    means = np.zeros((len(classes), d))
    np.add.at(means, codes, f)
    means /= counts[:, None]                 # class means of centred f (their weighted mean is 0)
    if shrinkage:
        from sklearn.covariance import LedoitWolf  # heavy: imported on first use

        lw = LedoitWolf(assume_centered=True).fit(f)
        cov, scale = lw.covariance_, 1.0 - float(lw.shrinkage_)   # shrunk towards mu I: well-conditioned
    else:
        cov, scale = f.T @ f / (n - 1), 1.0
    solved = np.linalg.pinv(cov, rcond=1e-15, hermitian=True) @ means.T
    # tr(P cov_g) with cov_g = sum_c n_c mu_c mu_c^T / (n - 1)
    return float(scale * np.sum(counts * np.sum(means.T * solved, axis=0)) / (n - 1))
