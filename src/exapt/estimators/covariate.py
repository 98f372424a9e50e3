"""Covariate shift: can the inputs alone tell the two domains apart?

Two complementary tests on the same features:

- a *domain classifier*: a regularised logistic regression on standardised features
  predicts "target?" for every row out of fold (cross-validation), and the AUC of those
  out-of-fold probabilities says how separable the domains are (0.5: not at all, 1:
  perfectly). Its confidence interval is DeLong's (DeLong et al. 1988), computed with
  midranks in O(n log n) (Sun & Xu 2014).
- the *maximum mean discrepancy* (Gretton et al. 2012) with a Gaussian kernel whose
  bandwidth is the median pairwise distance, as the unbiased statistic MMD^2_u, and a
  permutation test of "both samples come from one distribution": the p-value is the
  share of random relabellings of the pooled sample whose MMD^2_u reaches the observed one.

The AUC measures *how much* the domains differ (an effect size that is comparable across
data sets); the MMD p-value says whether a difference is *there at all*.

    from exapt.estimators.covariate import domain_classifier, mmd_test
    dc = domain_classifier(source_features, target_features, seed=0)
    print(dc.auc, dc.ci)                     # e.g. 0.97 (0.96, 0.98)
    mmd = mmd_test(source_features, target_features, permutations=1000, seed=0)
    print(mmd.mmd2, mmd.p_value)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata

from .probes import logistic_probe

DEFAULT_FOLDS = 5
DEFAULT_C = 0.1               # inverse L2 strength on standardised features
DEFAULT_PERMUTATIONS = 1000   # smallest reachable p-value: 1/1001
DEFAULT_MMD_MAX = 2000        # rows per side that enter the kernel matrix
_PERMUTATION_CHUNK = 100      # permutations evaluated per matrix product


# ============================================================================ domain classifier
@dataclass
class DomainClassifierResult:
    auc: float
    ci: tuple[float, float]
    level: float
    folds: int
    n_source: int
    n_target: int
    probabilities: np.ndarray = field(repr=False)   # out-of-fold P(target), sources first
    is_target: np.ndarray = field(repr=False)
    ci_method: str = "DeLong"

    def roc_curve(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.metrics import roc_curve  # heavy: imported on first use

        fpr, tpr, _ = roc_curve(self.is_target, self.probabilities)
        return fpr, tpr

    def to_dict(self) -> dict:
        return {"auc": self.auc, "ci": list(self.ci), "level": self.level, "folds": self.folds,
                "n_source": self.n_source, "n_target": self.n_target, "ci_method": self.ci_method,
                "classifier": "logistic regression (L2) on standardised features, out-of-fold"}


def _check_pair(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    source, target = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if source.ndim != 2 or target.ndim != 2 or source.shape[1] != target.shape[1]:
        raise ValueError(f"features must be two matrices with the same columns (got {source.shape}, {target.shape})")
    if len(source) < 2 or len(target) < 2:
        raise ValueError("each domain needs at least two rows")
    return source, target


def domain_classifier(source, target, *, folds: int = DEFAULT_FOLDS, C: float = DEFAULT_C, seed: int = 0,
                      level: float = 0.95, source_weights=None, bootstrap: int = 200) -> DomainClassifierResult:
    """Out-of-fold P(target | x) from an L2 logistic regression, its AUC and DeLong CI.

    Standardisation is fitted inside each fold (on that fold's training rows only), so
    no statistic of a held-out row leaks into the model that scores it.

    `source_weights` (one per source row) re-weights the source in training and in the
    AUC, e.g. by q(y)/p(y) to ask whether a change of class priors alone explains the
    difference; the CI is then a percentile bootstrap over rows (DeLong's is unweighted)."""
    from sklearn.model_selection import StratifiedKFold  # heavy: imported on first use


    source, target = _check_pair(source, target)
    x = np.vstack([source, target])
    y = np.r_[np.zeros(len(source), dtype=int), np.ones(len(target), dtype=int)]
    folds = max(2, min(folds, len(source), len(target)))
    w = np.ones(len(x))
    if source_weights is not None:
        sw = np.asarray(source_weights, float)
        w[:len(source)] = sw * len(sw) / max(sw.sum(), 1e-300)   # the source keeps its total weight
    prob = np.empty(len(x))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        model = logistic_probe(C, seed)
        model.fit(x[train], y[train], logisticregression__sample_weight=w[train])
        prob[test] = model.predict_proba(x[test])[:, 1]
    if source_weights is None:
        auc, lo, hi = delong_ci(prob[y == 1], prob[y == 0], level)
    else:
        auc, lo, hi = weighted_auc_ci(y, prob, w, level, bootstrap, seed)
    return DomainClassifierResult(auc, (lo, hi), level, folds, len(source), len(target), prob, y,
                                  "DeLong" if source_weights is None else "weighted, bootstrap")


def weighted_auc_ci(y, scores, weights, level: float = 0.95, bootstrap: int = 200,
                    seed: int = 0) -> tuple[float, float, float]:
    """Weighted AUC and a percentile bootstrap CI (rows resampled within each class)."""
    from sklearn.metrics import roc_auc_score  # heavy: imported on first use

    y, scores, weights = np.asarray(y), np.asarray(scores, float), np.asarray(weights, float)
    auc = float(roc_auc_score(y, scores, sample_weight=weights))
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    boots = []
    for _ in range(bootstrap):
        idx = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        if weights[idx][y[idx] == 0].sum() > 0:
            boots.append(roc_auc_score(y[idx], scores[idx], sample_weight=weights[idx]))
    if not boots:
        return auc, auc, auc
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return auc, float(lo), float(hi)


def delong_components(positive, negative) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components: V10_i = P(positive_i > a random negative) and
    V01_j = P(negative_j < a random positive), ties counting 1/2, from midranks."""
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    m, n = len(positive), len(negative)
    pooled = rankdata(np.r_[positive, negative])        # midranks handle ties
    v10 = (pooled[:m] - rankdata(positive)) / n
    v01 = 1.0 - (pooled[m:] - rankdata(negative)) / m
    return v10, v01


def delong_ci(positive, negative, level: float = 0.95) -> tuple[float, float, float]:
    """(AUC, lower, upper): AUC = mean(V10), Var = S10/m + S01/n (DeLong et al. 1988)."""
    v10, v01 = delong_components(positive, negative)
    m, n = len(v10), len(v01)
    auc = float(v10.mean())
    var = (v10.var(ddof=1) if m > 1 else 0.0) / m + (v01.var(ddof=1) if n > 1 else 0.0) / n
    half = float(ndtri(0.5 + level / 2) * np.sqrt(max(var, 0.0)))
    return auc, max(0.0, auc - half), min(1.0, auc + half)


# ============================================================================ MMD
@dataclass
class MMDResult:
    mmd2: float               # unbiased MMD^2 of the observed split
    p_value: float
    bandwidth: float          # sigma of k(x, y) = exp(-||x - y||^2 / (2 sigma^2))
    permutations: int
    n_source: int
    n_target: int
    null: np.ndarray = field(repr=False)   # MMD^2_u of each permutation

    def to_dict(self) -> dict:
        return {"mmd2": self.mmd2, "p_value": self.p_value, "bandwidth": self.bandwidth,
                "permutations": self.permutations, "n_source": self.n_source, "n_target": self.n_target,
                "kernel": "gaussian, median-heuristic bandwidth, on standardised features",
                "null_mean": float(self.null.mean()) if len(self.null) else None,
                "null_q99": float(np.quantile(self.null, 0.99)) if len(self.null) else None}


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def median_bandwidth(pooled: np.ndarray, max_rows: int = 1000, seed: int = 0) -> float:
    """The median heuristic: sigma = median distance between distinct pooled points
    (on at most `max_rows` rows: the median settles long before the full matrix)."""
    if len(pooled) > max_rows:
        pooled = pooled[np.random.default_rng(seed).choice(len(pooled), max_rows, replace=False)]
    d2 = squared_distances(pooled, pooled)[np.triu_indices(len(pooled), k=1)]
    sigma = float(np.sqrt(np.median(d2)))
    if not sigma > 0:  # more than half the pairs coincide: fall back to the mean distance
        sigma = float(np.sqrt(d2.mean())) or 1.0
    return sigma


def gaussian_kernel(a: np.ndarray, b: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-squared_distances(a, b) / (2.0 * sigma * sigma))


def mmd2_unbiased(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    """Gretton et al. 2012, Lemma 6: the within-sample sums leave out i == j."""
    m, n = len(kxx), len(kyy)
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * kxy.mean())


def _mmd2_of_assignments(k: np.ndarray, row_sums: np.ndarray, total: float, z: np.ndarray, m: int) -> np.ndarray:
    """MMD^2_u of each column of `z` (0/1, m ones: the rows that play 'source'), from the
    pooled kernel matrix: with s = z'Kz and r = K1, sum_XX = s - m, sum_YY = T - 2 z'r + s - n,
    sum_XY = z'r - s (k(x, x) = 1 for the Gaussian kernel)."""
    n = len(k) - m
    s = np.einsum("ij,ij->j", z, k @ z)
    zr = z.T @ row_sums
    xx = (s - m) / (m * (m - 1))
    yy = (total - 2.0 * zr + s - n) / (n * (n - 1))
    xy = (zr - s) / (m * n)
    return xx + yy - 2.0 * xy


def standardise_pooled(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both domains scaled by the pooled mean and standard deviation of each column, so
    no column dominates the kernel by its units; constant columns stay at 0."""
    pooled = np.vstack([source, target])
    mean, std = pooled.mean(0), pooled.std(0)
    std[std == 0] = 1.0
    return (source - mean) / std, (target - mean) / std


def mmd_test(source, target, *, permutations: int = DEFAULT_PERMUTATIONS, max_rows: int = DEFAULT_MMD_MAX,
             seed: int = 0, standardise: bool = True, bandwidth: float | None = None) -> MMDResult:
    """Unbiased MMD^2 and its permutation-test p-value, (1 + #{null >= observed}) / (1 + P).

    Each side is subsampled to `max_rows` rows; the pooled kernel matrix is computed once
    and every permutation costs one matrix-vector product, so 1,000 permutations of
    2 x 2,000 rows take seconds."""
    source, target = _check_pair(source, target)
    rng = np.random.default_rng(seed)
    if len(source) > max_rows:
        source = source[rng.choice(len(source), max_rows, replace=False)]
    if len(target) > max_rows:
        target = target[rng.choice(len(target), max_rows, replace=False)]
    if standardise:
        source, target = standardise_pooled(source, target)
    pooled = np.vstack([source, target])
    m = len(source)
    sigma = float(bandwidth) if bandwidth else median_bandwidth(pooled, seed=seed)
    k = gaussian_kernel(pooled, pooled, sigma)
    row_sums, total = k.sum(1), float(k.sum())
    observed = np.zeros((len(pooled), 1))
    observed[:m] = 1.0
    mmd2 = float(_mmd2_of_assignments(k, row_sums, total, observed, m)[0])
    null = []
    for start in range(0, permutations, _PERMUTATION_CHUNK):
        count = min(_PERMUTATION_CHUNK, permutations - start)
        z = np.zeros((len(pooled), count))
        for j in range(count):
            z[rng.permutation(len(pooled))[:m], j] = 1.0
        null.append(_mmd2_of_assignments(k, row_sums, total, z, m))
    null = np.concatenate(null) if null else np.zeros(0)
    p = (1.0 + float((null >= mmd2).sum())) / (1.0 + len(null))
    return MMDResult(mmd2, p, sigma, permutations, m, len(target), null)
