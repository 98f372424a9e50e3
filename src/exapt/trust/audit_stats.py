"""The statistics of a membership-inference audit, on arrays alone (no model, no run).

- `logit_confidence`: LiRA's logit-scaled confidence phi = log(p / (1 - p)) of the true
  class, p = softmax(z)_y, computed stably as z_y - logsumexp_{j != y} z_j (Carlini et al.
  2022, arXiv 2112.03570, Section IV-B: the scaling makes the shadow distributions nearly
  Gaussian).
- `lira_online`: the Gaussian likelihood ratio, log N(phi; mu_in, s_in^2) - log N(phi; mu_out,
  s_out^2), with mu and s from the shadow models trained with (in) and without (out) the
  example (their Algorithm 1). With fewer than 64 shadows the paper's fixed (global) variance
  is used: one s_in and one s_out pooled over all examples.
- `lira_offline`: out-shadows only, the one-sided test Lambda = Pr[Z < phi], Z ~ N(mu_out,
  s_out^2) (their Section VI-C), scored as log Phi((phi - mu_out) / s_out).
- `loss_scores`: the loss-threshold attack (Yeom et al. 2018): a member when the loss is
  low, so the score is minus the cross-entropy.
- `roc`, `tpr_at_fpr`, `clopper_pearson`, `epsilon_lower_bound`: the report's numbers.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

FIXED_VARIANCE_BELOW = 64  # shadows; the paper's choice for few shadow models
BOUND_CONFIDENCE = 0.95


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """phi = log p_y - log(1 - p_y) for each row, without forming p (no overflow at p ~ 1)."""
    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(z))
    true = z[rows, labels]
    rest = z.copy()
    rest[rows, labels] = -np.inf
    return true - _logsumexp(rest)


def loss_scores(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Minus each row's cross-entropy: higher means more likely a member (Yeom et al.)."""
    z = np.asarray(logits, dtype=np.float64)
    return z[np.arange(len(z)), labels] - _logsumexp(z)


def _logsumexp(z: np.ndarray) -> np.ndarray:
    top = z.max(axis=1)
    return top + np.log(np.exp(z - top[:, None]).sum(axis=1))


def _spread(phi: np.ndarray, mask: np.ndarray, fixed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-example mean and standard deviation of the shadows' phi where `mask` holds
    ([shadows, examples]); with `fixed`, one standard deviation pooled over all examples."""
    counts = mask.sum(axis=0)
    mean = np.where(counts > 0, (phi * mask).sum(axis=0) / np.maximum(counts, 1), np.nan)
    resid = np.where(mask, phi - mean[None, :], 0.0)
    if fixed:
        pooled = math.sqrt((resid ** 2).sum() / max(1, counts.sum() - (counts > 0).sum()))
        sd = np.full(phi.shape[1], pooled)
    else:
        sd = np.sqrt((resid ** 2).sum(axis=0) / np.maximum(counts - 1, 1))
    return mean, np.maximum(sd, 1e-6)


def lira_online(target_phi: np.ndarray, shadow_phi: np.ndarray, shadow_in: np.ndarray,
                fixed_variance: bool | None = None) -> np.ndarray:
    """Log likelihood ratio of membership per example (Algorithm 1 of Carlini et al.)."""
    shadow_in = np.asarray(shadow_in, dtype=bool)
    if fixed_variance is None:
        fixed_variance = len(shadow_phi) < FIXED_VARIANCE_BELOW
    mu_in, sd_in = _spread(shadow_phi, shadow_in, fixed_variance)
    mu_out, sd_out = _spread(shadow_phi, ~shadow_in, fixed_variance)
    score = stats.norm.logpdf(target_phi, mu_in, sd_in) - stats.norm.logpdf(target_phi, mu_out, sd_out)
    return np.nan_to_num(score, nan=0.0)  # an example no shadow saw in (or out): no evidence


def lira_offline(target_phi: np.ndarray, shadow_phi: np.ndarray, shadow_in: np.ndarray,
                 fixed_variance: bool | None = None) -> np.ndarray:
    shadow_in = np.asarray(shadow_in, dtype=bool)
    if fixed_variance is None:
        fixed_variance = len(shadow_phi) < FIXED_VARIANCE_BELOW
    mu_out, sd_out = _spread(shadow_phi, ~shadow_in, fixed_variance)
    return np.nan_to_num(stats.norm.logcdf(target_phi, mu_out, sd_out), nan=0.0)


def roc(scores: np.ndarray, members: np.ndarray) -> dict:
    """FPR and TPR at every threshold (higher score: 'member'), the counts behind them, and
    the AUC (the Mann-Whitney probability that a member outscores a non-member)."""
    scores, members = np.asarray(scores, dtype=np.float64), np.asarray(members, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    s, m = scores[order], members[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # the end of each run of tied scores
    tp = np.r_[0, np.cumsum(m)[last]]
    fp = np.r_[0, np.cumsum(~m)[last]]
    n_in, n_out = int(m.sum()), int((~m).sum())
    ranks = stats.rankdata(scores)
    auc = (ranks[members].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out)
    return {"tp": tp, "fp": fp, "n_in": n_in, "n_out": n_out, "tpr": tp / n_in, "fpr": fp / n_out, "auc": float(auc)}


def clopper_pearson(k: int, n: int, confidence: float = BOUND_CONFIDENCE) -> tuple[float, float]:
    """The exact two-sided binomial interval for k successes in n trials."""
    a = 1 - confidence
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def tpr_at_fpr(curve: dict, fpr: float) -> dict:
    """The best TPR among thresholds whose FPR is at most `fpr`, with its Clopper-Pearson
    interval; `resolvable` is False when one false positive already exceeds `fpr`."""
    ok = np.flatnonzero(curve["fpr"] <= fpr)
    i = ok[np.argmax(curve["tpr"][ok])]
    tp = int(curve["tp"][i])
    lo, hi = clopper_pearson(tp, curve["n_in"])
    return {"fpr": fpr, "tpr": tp / curve["n_in"], "tpr_interval": [lo, hi], "true_positives": tp,
            "false_positives": int(curve["fp"][i]), "achieved_fpr": float(curve["fpr"][i]),
            "resolvable": curve["n_out"] * fpr >= 1}


def epsilon_lower_bound(curve: dict, delta: float, confidence: float = BOUND_CONFIDENCE) -> dict:
    """The largest epsilon that the audit proves, at `confidence`, from its ROC.

    An (eps, delta)-DP mechanism limits every membership test (Kairouz, Oh, Viswanath 2015,
    Theorem 2.1): FPR + e^eps FNR >= 1 - delta and FNR + e^eps FPR >= 1 - delta, so
        eps >= max( log((1 - delta - FPR) / FNR), log((1 - delta - FNR) / FPR) ).
    As in Jagielski, Ullman, Oprea (2020), FPR and FNR are replaced by their one-sided
    Clopper-Pearson upper bounds; the bound is taken at every ROC threshold, so each
    threshold's bounds are at confidence 1 - (1 - confidence) / m (Bonferroni over m)."""
    m = len(curve["tp"])
    alpha = (1 - confidence) / m
    best, where = 0.0, None
    for tp, fp in zip(curve["tp"], curve["fp"]):
        fpr_hi = _upper(int(fp), curve["n_out"], alpha)
        fnr_hi = _upper(curve["n_in"] - int(tp), curve["n_in"], alpha)
        for num, den in ((1 - delta - fpr_hi, fnr_hi), (1 - delta - fnr_hi, fpr_hi)):
            if num > 0 and den > 0 and math.log(num / den) > best:
                best, where = math.log(num / den), {"tpr": tp / curve["n_in"], "fpr": fp / curve["n_out"]}
    return {"epsilon_lower_bound": best, "delta": delta, "confidence": confidence, "thresholds": m, "at": where}


def _upper(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson upper bound at level 1 - alpha."""
    return 1.0 if k >= n else float(stats.beta.ppf(1 - alpha, k + 1, n - k))
