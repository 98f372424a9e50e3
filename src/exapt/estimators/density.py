"""Density ratios w(x) = p_target(x) / p_source(x) from a domain classifier.

Bayes' rule turns a classifier of "which domain is x from" into the ratio:

    w(x) = (n_s / n_t) * P(target | x) / P(source | x)

(Bickel et al. 2007; Sugiyama et al. 2012, ch. 4). The classifier is an L2-regularised
logistic regression on standardised features, and each source row's probability is
*out of fold* (5-fold cross-fitting), so a row never scores itself: in-sample
probabilities would overstate how separable the domains are. The ratios are clipped at
`clip` (a handful of extreme weights otherwise dominate the loss: the variance of
importance weighting grows with the largest weight) and normalised to mean 1 over the
source rows, so the loss keeps its scale.

    weights = density_ratios(source_features, target_features)   # one per source row
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .covariate import domain_classifier
from .probes import logistic_probe


@dataclass
class DensityRatios:
    weights: np.ndarray        # per source row: clipped, mean 1
    raw: np.ndarray            # per source row: before clipping and normalising
    domain_auc: float          # out-of-fold AUC of the domain classifier (0.5: no covariate shift)
    clipped: int               # how many rows hit the clip
    effective_sample_size: float  # (sum w)^2 / sum w^2: how many source rows the weights are worth


def density_ratios(source: np.ndarray, target: np.ndarray, *, clip: float = 10.0, folds: int = 5,
                   C: float = 1.0, seed: int = 0, extra: np.ndarray | None = None
                   ) -> tuple[DensityRatios, np.ndarray | None]:
    """Ratios for the `source` rows; `extra` rows (e.g. source validation rows, not used to
    fit) get ratios from a classifier fitted on all rows, normalised like the source's."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    result = domain_classifier(source, target, folds=folds, C=C, seed=seed)   # out-of-fold P(target | x)
    p, auc = result.probabilities, float(result.auc)
    prior = len(source) / len(target)

    def ratio(prob):
        prob = np.clip(prob, 1e-6, 1 - 1e-6)
        return prior * prob / (1 - prob)

    raw = ratio(p[: len(source)])
    clipped = np.minimum(raw, clip)
    scale = clipped.mean()
    weights = clipped / scale
    extra_weights = None
    if extra is not None and len(extra):
        x = np.concatenate([source, target])
        d = np.concatenate([np.zeros(len(source)), np.ones(len(target))])
        full = logistic_probe(C, seed).fit(x, d)
        extra_weights = np.minimum(ratio(full.predict_proba(np.asarray(extra, np.float64))[:, 1]), clip) / scale
    ess = float(weights.sum() ** 2 / (weights ** 2).sum())
    return DensityRatios(weights, raw, auc, int((raw > clip).sum()), ess), extra_weights
