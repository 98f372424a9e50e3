"""Label shift: the target's class priors, estimated without a single target label.

Under label shift p(x | y) stays the same and only p(y) moves. Two estimators, both from
the outputs of a classifier trained on the source:

- **BBSE**, black-box shift estimation (Lipton, Wang & Smola 2018): with C[i, j] =
  P_source(prediction = i, y = j) measured on *held-out* source rows and
  mu[i] = P_target(prediction = i), label shift gives C w = mu for the weights
  w[j] = q(y = j) / p(y = j). Solve (least squares), clip w to >= 0; the target priors
  are w * p normalised. It needs no calibration, only an invertible confusion matrix.
- **EM prior adaptation** (Saerens, Latinne & Decaestecker 2002): re-weight the source
  posteriors by the ratio of the current prior estimate to the training priors,
  renormalise, and set the new priors to the mean adjusted posterior, until nothing moves.
  It uses the full probabilities, so it is sharper when the classifier is calibrated.

    from exapt.estimators.label_shift import bbse, em_priors
    est = bbse(confusion, target_predictions.mean(0), source_priors)   # hard predictions, one-hot
    q = em_priors(target_probabilities, source_priors)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class BBSEResult:
    priors: np.ndarray            # estimated target priors, sum 1
    weights: np.ndarray           # w = q(y) / p(y) after clipping (before normalising the priors)
    condition: float              # condition number of the confusion matrix (large: unreliable)


def confusion_joint(predicted: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """C[i, j] = share of rows with prediction i and label j (sums to 1)."""
    c = np.zeros((n_classes, n_classes))
    np.add.at(c, (np.asarray(predicted, int), np.asarray(labels, int)), 1.0)
    return c / max(len(predicted), 1)


def bbse(confusion: np.ndarray, target_prediction_rates: np.ndarray, source_priors: np.ndarray) -> BBSEResult:
    """Solve C w = mu (least squares, so a singular C still gives an answer), clip w >= 0,
    priors = w * p / sum(w * p). `confusion` is the joint C above; `source_priors` p are
    the label shares of the rows C was measured on (its column sums)."""
    c = np.asarray(confusion, float)
    mu = np.asarray(target_prediction_rates, float)
    p = np.asarray(source_priors, float)
    w = np.linalg.lstsq(c, mu, rcond=None)[0]
    w = np.clip(w, 0.0, None)
    q = w * p
    q = q / q.sum() if q.sum() > 0 else np.full(len(p), 1.0 / len(p))
    return BBSEResult(q, w, float(np.linalg.cond(c)))


def em_priors(probabilities: np.ndarray, source_priors: np.ndarray, *, tol: float = 1e-8,
              max_iter: int = 1000) -> np.ndarray:
    """Saerens et al. 2002, eqs. 2.9-2.10: the target priors maximising the likelihood of the
    target rows' source posteriors, by EM from the source priors."""
    prob = np.asarray(probabilities, float)
    p = np.asarray(source_priors, float)
    p = np.clip(p, 1e-12, None)
    q = p.copy()
    for _ in range(max_iter):
        adjusted = prob * (q / p)
        adjusted /= np.clip(adjusted.sum(1, keepdims=True), 1e-300, None)
        new = adjusted.mean(0)
        if np.abs(new - q).max() < tol:
            q = new
            break
        q = new
    return q / q.sum()


def adjust_posteriors(probabilities: np.ndarray, source_priors: np.ndarray, target_priors: np.ndarray) -> np.ndarray:
    """p_t(y | x) proportional to p_s(y | x) q(y) / p(y): the source model corrected for label shift."""
    ratio = np.asarray(target_priors, float) / np.clip(np.asarray(source_priors, float), 1e-12, None)
    adjusted = np.asarray(probabilities, float) * ratio
    return adjusted / np.clip(adjusted.sum(1, keepdims=True), 1e-300, None)


def total_variation(a: np.ndarray, b: np.ndarray) -> float:
    """Half the L1 distance between two distributions: the share of mass that moved."""
    return 0.5 * float(np.abs(np.asarray(a, float) - np.asarray(b, float)).sum())


@dataclass
class PriorEstimate:
    """BBSE and EM priors with percentile bootstrap intervals (rows of the held-out source
    and of the target resampled together)."""
    classes: list[str]
    source: np.ndarray
    bbse: np.ndarray
    bbse_ci: np.ndarray           # [K, 2]
    em: np.ndarray
    em_ci: np.ndarray
    condition: float
    prediction_shift_p: float = 1.0         # chi-square test: predicted-class shares, held-out source vs target
    true_target: np.ndarray | None = None   # when the target has labels: what to compare with

    def to_dict(self) -> dict:
        def named(v):
            return {c: round(float(x), 6) for c, x in zip(self.classes, v)}

        out = {"classes": self.classes, "source_priors": named(self.source),
               "bbse": named(self.bbse), "bbse_ci": {c: [round(float(a), 6), round(float(b), 6)]
                                                    for c, (a, b) in zip(self.classes, self.bbse_ci)},
               "em": named(self.em), "em_ci": {c: [round(float(a), 6), round(float(b), 6)]
                                              for c, (a, b) in zip(self.classes, self.em_ci)},
               "confusion_condition_number": self.condition, "prediction_shift_p": self.prediction_shift_p,
               "total_variation_bbse": total_variation(self.bbse, self.source),
               "total_variation_em": total_variation(self.em, self.source)}
        if self.true_target is not None:
            out["true_target_priors"] = named(self.true_target)
            out["abs_error_bbse"] = float(np.abs(self.bbse - self.true_target).max())
            out["abs_error_em"] = float(np.abs(self.em - self.true_target).max())
            out["total_variation_true"] = total_variation(self.true_target, self.source)
        return out


def estimate_priors(heldout_probabilities: np.ndarray, heldout_labels: np.ndarray, target_probabilities: np.ndarray,
                    classes: list[str], *, target_votes: np.ndarray | None = None,
                    training_priors: np.ndarray | None = None, bootstrap: int = 200, seed: int = 0,
                    true_target: np.ndarray | None = None, level: float = 0.95) -> PriorEstimate:
    """BBSE (hard predictions) and EM on a source classifier's outputs, with bootstrap CIs.

    `heldout_*`: the classifier on source rows it did not train on (and their labels);
    `target_probabilities`: the same classifier on the target rows; `target_votes`: its hard
    predictions on them as rows that sum to 1 (several cross-fitted models: the share of
    them voting for each class; default one-hot of the probabilities); `training_priors`:
    the class shares the classifier was trained with (EM's p; default the held-out shares)."""
    k = len(classes)
    hp, hy, tp = np.asarray(heldout_probabilities, float), np.asarray(heldout_labels, int), np.asarray(target_probabilities, float)
    if target_votes is None:
        target_votes = np.eye(k)[tp.argmax(1)]
    tv = np.asarray(target_votes, float)

    def one(hp_, hy_, tp_, tv_):
        p = np.bincount(hy_, minlength=k) / len(hy_)
        c = confusion_joint(hp_.argmax(1), hy_, k)
        b = bbse(c, tv_.mean(0), p)
        e = em_priors(tp_, training_priors if training_priors is not None else p)
        return p, b, e

    p, b, e = one(hp, hy, tp, tv)
    rng = np.random.default_rng(seed)
    boots_b, boots_e = [], []
    for _ in range(bootstrap):
        hi = rng.integers(0, len(hy), len(hy))
        ti = rng.integers(0, len(tp), len(tp))
        _, bb, ee = one(hp[hi], hy[hi], tp[ti], tv[ti])
        boots_b.append(bb.priors)
        boots_e.append(ee)
    alpha = (1 - level) / 2
    if bootstrap:
        ci_b = np.quantile(np.array(boots_b), [alpha, 1 - alpha], axis=0).T
        ci_e = np.quantile(np.array(boots_e), [alpha, 1 - alpha], axis=0).T
    else:
        ci_b = np.stack([b.priors, b.priors], 1)
        ci_e = np.stack([e, e], 1)
    shift_p = prediction_shift_test(np.bincount(hp.argmax(1), minlength=k), tv.sum(0))
    return PriorEstimate(list(classes), p, b.priors, ci_b, e, ci_e, b.condition, shift_p, true_target)


def prediction_shift_test(source_counts: np.ndarray, target_counts: np.ndarray) -> float:
    """p-value of a chi-square test of homogeneity between the classifier's predicted-class
    counts on held-out source rows and on the target (black-box shift detection, Lipton et
    al. 2018; Rabanser et al. 2019). With an invertible confusion matrix, the target priors
    differ from the source's exactly when these distributions differ."""
    from scipy.stats import chi2_contingency  # heavy: imported on first use

    table = np.vstack([source_counts, target_counts]).astype(float)
    table = table[:, table.sum(0) > 0]
    if table.shape[1] < 2:
        return 1.0
    return float(chi2_contingency(table, correction=False)[1])
