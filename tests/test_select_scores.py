"""Transferability scores (exapt.select): each checked against a direct, slow evaluation of
its formula, hand-computed examples, or the scikit-learn/scipy routine it stands in for."""
from __future__ import annotations

import math

import numpy as np
import pytest

from exapt.errors import ExaptError
from exapt.select import (SCORES, SOURCE_SCORES, ScoreInputError, h_score, kendall_tau, knn_accuracy, leep,
                          linear_probe_cv, logme, logme_fit, nce, weighted_kendall_tau)


def blobs(n, d, classes=3, sep=3.0, seed=0):
    """Gaussian class blobs: labels linearly separable from the features when sep is large."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centres = rng.standard_normal((classes, d)) * sep
    return centres[y] + rng.standard_normal((n, d)), y


# ----------------------------------------------------------------------------- LogME
def direct_evidence(f, y, alpha, beta):
    """log p(y | F, alpha, beta) from explicit matrices: the paper's formula, nothing clever."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    sign, logdet = np.linalg.slogdet(a)
    assert sign > 0
    return (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
            - beta / 2 * np.sum((f @ m - y) ** 2) - alpha / 2 * m @ m - logdet / 2)


def gaussian_evidence(f, y, alpha, beta):
    """The same quantity as a marginal likelihood: y ~ N(0, I/beta + F F^T / alpha)."""
    n = len(y)
    cov = np.eye(n) / beta + f @ f.T / alpha
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * (n * np.log(2 * np.pi) + logdet + y @ np.linalg.solve(cov, y))


@pytest.mark.parametrize("n,d", [(120, 15), (25, 60)], ids=["n>d", "n<d"])
def test_logme_matches_direct_evidence(n, d):
    f, y = blobs(n, d, sep=0.7, seed=1)
    r = logme_fit(f, y)
    assert r.evidence.shape == (3,)
    for c in range(3):
        yc = (y == c).astype(float)
        direct = direct_evidence(f, yc, r.alpha[c], r.beta[c])
        assert r.evidence[c] * n == pytest.approx(direct, rel=1e-9, abs=1e-8)
        assert direct == pytest.approx(gaussian_evidence(f, yc, r.alpha[c], r.beta[c]), rel=1e-9)
    assert r.score == pytest.approx(r.evidence.mean()) == logme(f, y)


@pytest.mark.parametrize("n,d", [(120, 15), (25, 60)], ids=["n>d", "n<d"])
def test_logme_regression_matches_direct_evidence(n, d):
    rng = np.random.default_rng(2)
    f = rng.standard_normal((n, d))
    y = np.stack([f @ rng.standard_normal(d) + rng.standard_normal(n), rng.standard_normal(n)], axis=1)
    r = logme_fit(f, y, "regression")
    for j in range(2):
        assert r.evidence[j] * n == pytest.approx(direct_evidence(f, y[:, j], r.alpha[j], r.beta[j]), rel=1e-9)
    assert logme(f, y[:, 0], "regression") == pytest.approx(r.evidence[0])   # (n,) targets work too


def log_gradient(f, y, alpha, beta, h=1e-4):
    """Central differences of the direct evidence in log(alpha) and log(beta)."""
    up, down = math.exp(h), math.exp(-h)
    ga = (direct_evidence(f, y, alpha * up, beta) - direct_evidence(f, y, alpha * down, beta)) / (2 * h)
    gb = (direct_evidence(f, y, alpha, beta * up) - direct_evidence(f, y, alpha, beta * down)) / (2 * h)
    return ga, gb


@pytest.mark.parametrize("n,d,sep", [(120, 15, 0.7), (25, 60, 0.3)], ids=["n>d", "n<d"])
def test_logme_converges_to_a_maximum_of_the_evidence(n, d, sep):
    """The fixed point is where d/dlog(alpha) and d/dlog(beta) of the evidence vanish."""
    f, y = blobs(n, d, sep=sep, seed=3)
    tight = logme_fit(f, y, tol=1e-12, max_iter=10_000)
    assert tight.converged.all()
    for c in range(3):
        yc = (y == c).astype(float)
        a, b = tight.alpha[c], tight.beta[c]
        e0 = direct_evidence(f, yc, a, b)
        for da, db in [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1)]:
            assert direct_evidence(f, yc, a * (1 + 1e-4 * da), b * (1 + 1e-4 * db)) < e0
        ga, gb = log_gradient(f, yc, a, b)
        assert abs(ga) < 1e-6 * n and abs(gb) < 1e-6 * n
    default = logme_fit(f, y)                               # tol=1e-3, at most 11 rounds
    assert default.iterations.max() <= 11
    if n > d:                                               # converges in a few rounds, next to the maximum
        assert default.converged.all()
        np.testing.assert_allclose(default.evidence, tight.evidence, rtol=1e-6)
        for c in range(3):
            ga, gb = log_gradient(f, (y == c).astype(float), default.alpha[c], default.beta[c])
            assert abs(ga) < 1e-2 and abs(gb) < 1e-2
    else:                                                   # n <= d converges slowly; 11 rounds stop short
        assert np.all(default.evidence <= tight.evidence + 1e-12)
        np.testing.assert_allclose(default.evidence, tight.evidence, atol=0.02)


def test_logme_exact_fit_stays_finite():
    """Features that reproduce the target exactly: the evidence grows as beta -> inf; stays finite."""
    f, _ = blobs(40, 5, seed=20)
    exact = logme_fit(f, 2.0 * f[:, 0], "regression", max_iter=1000)
    noisy = logme(f, 2.0 * f[:, 0] + np.random.default_rng(21).standard_normal(40), "regression")
    assert np.isfinite(exact.score) and exact.score > noisy
    wide, y = blobs(10, 50, seed=22)                        # n < d: any labels are fitted exactly
    assert np.isfinite(logme_fit(wide, y, tol=1e-12, max_iter=5000).score)
    with pytest.raises(ValueError, match="target column 1 is all zeros"):
        logme(f, np.stack([f[:, 0], np.zeros(40)], axis=1), "regression")


def test_logme_prefers_informative_features():
    f_good, y = blobs(150, 20, sep=2.0, seed=4)
    f_bad = np.random.default_rng(5).standard_normal((150, 20))
    assert logme(f_good, y) > logme(f_bad, y)
    f_wide, y_wide = blobs(30, 100, sep=2.0, seed=6)
    assert logme(f_wide, y_wide) > logme(np.random.default_rng(7).standard_normal((30, 100)), y_wide)
    rng = np.random.default_rng(8)
    target = f_good @ rng.standard_normal(20) + 0.1 * rng.standard_normal(150)
    assert logme(f_good, target, "regression") > logme(f_bad, target, "regression")


def test_logme_rank_deficient_and_label_encodings():
    f, y = blobs(80, 10, seed=9)
    f_dup = np.hstack([f, f[:, :3]])                 # rank 10 in 13 dimensions
    r = logme_fit(f_dup, y)
    for c in range(3):
        yc = (y == c).astype(float)
        assert r.evidence[c] * 80 == pytest.approx(direct_evidence(f_dup, yc, r.alpha[c], r.beta[c]), rel=1e-6)
    names = np.array(["cat", "dog", "eel"])[y]
    assert logme(f, names) == logme(f, y) == logme(f, y + 10)
    assert logme(f.astype(np.float32), y) == pytest.approx(logme(f, y), rel=1e-5)
    multi = np.stack([(y == 0), (y != 2)], axis=1).astype(int)
    assert np.isfinite(logme(f, multi, "multilabel"))


# ----------------------------------------------------------------------------- LEEP and NCE
def leep_loop(p, y):
    n, z_count = p.shape
    classes = sorted(set(y))
    joint = {(c, z): sum(p[i, z] for i in range(n) if y[i] == c) / n for c in classes for z in range(z_count)}
    marg = {z: sum(joint[c, z] for c in classes) for z in range(z_count)}
    total = 0.0
    for i in range(n):
        total += math.log(sum(joint[y[i], z] / marg[z] * p[i, z] for z in range(z_count) if marg[z] > 0))
    return total / n


def test_leep_hand_example_and_loop():
    # P(y,z) = [[.25, .25], [.5, 0]]; P(y|z=0) = (1/3, 2/3), P(y|z=1) = (1, 0):
    # sample 0 (y=0): .5*1/3 + .5*1 = 2/3; sample 1 (y=1): 1*2/3 = 2/3
    p = np.array([[0.5, 0.5], [1.0, 0.0]])
    assert leep(p, np.array([0, 1])) == pytest.approx(math.log(2 / 3))
    assert leep(np.eye(2), np.array([0, 1])) == pytest.approx(0.0)          # a perfect relabelling
    rng = np.random.default_rng(10)
    logits = rng.standard_normal((40, 6))
    logits[:, 5] = -np.inf                                                  # a source class never predicted
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = rng.integers(0, 3, 40)
    assert leep(p, y) == pytest.approx(leep_loop(p, y), rel=1e-12)
    assert SOURCE_SCORES["leep"](p, y, "classification") == leep(p, y)
    with pytest.raises(ValueError, match="softmax"):
        leep(logits[:, :5], y)


def test_nce_hand_examples():
    y = np.array([0, 1, 0, 1])
    assert nce(np.array([3, 7, 3, 7]), y) == pytest.approx(0.0)             # z determines y
    assert nce(np.array([0, 0, 1, 1]), y) == pytest.approx(-math.log(2))    # independent: -H(Y)
    # z=0 (3/4 of the data): y = (0, 0, 1); z=1: y = 1 always
    h = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert nce(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1])) == pytest.approx(-0.75 * h)
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])     # argmax: 0, 1, 0, 1
    assert nce(probs, y) == SOURCE_SCORES["nce"](probs, y, "classification") == pytest.approx(0.0)


# ----------------------------------------------------------------------------- H-score
def h_score_direct(f, y):
    f = f - f.mean(0)
    g = np.zeros_like(f)
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(0)
    return np.trace(np.linalg.pinv(np.cov(f, rowvar=False), rcond=1e-15) @ np.cov(g, rowvar=False))


def test_h_score_matches_direct_formula():
    from sklearn.covariance import LedoitWolf

    f, y = blobs(90, 12, sep=0.8, seed=11)
    assert h_score(f, y, shrinkage=False) == pytest.approx(h_score_direct(f, y), rel=1e-8)
    lw = LedoitWolf().fit(f)
    g = np.zeros_like(f)
    for c in range(3):
        g[y == c] = f[y == c].mean(0)
    expected = np.trace(np.linalg.inv(lw.covariance_) @ ((1 - lw.shrinkage_) * np.cov(g, rowvar=False)))
    assert h_score(f, y) == pytest.approx(expected, rel=1e-8)
    assert h_score(f, y) > h_score(np.random.default_rng(12).standard_normal((90, 12)), y)


def test_h_score_shrinkage_survives_n_below_d():
    f, y = blobs(20, 200, sep=0.5, seed=13)
    noise = np.random.default_rng(14).standard_normal((20, 200))
    # without shrinkage, n <= d makes every feature set score C - 1 = 2 (the class means lie in
    # the span of the samples): the score saturates and cannot tell good features from noise
    assert h_score(f, y, shrinkage=False) == pytest.approx(2.0, rel=1e-6)
    assert h_score(noise, y, shrinkage=False) == pytest.approx(2.0, rel=1e-6)
    good, bad = h_score(f, y), h_score(noise, y)
    assert np.isfinite(good) and 0 < bad < good < 2 * 20 / 19   # bounded by (C - 1) n/(n - 1)


# ----------------------------------------------------------------------------- kNN and linear probe
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_matches_sklearn_leave_one_out(metric):
    from sklearn.model_selection import LeaveOneOut, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    f, y = blobs(30, 6, classes=2, sep=0.6, seed=14)
    for k in (1, 5):                                        # 2 classes, odd k: no tied votes
        clf = KNeighborsClassifier(n_neighbors=k, metric=metric, algorithm="brute")
        expected = cross_val_score(clf, f, y, cv=LeaveOneOut()).mean()
        assert knn_accuracy(f, y, k=k, metric=metric, chunk_size=16) == pytest.approx(expected)
    f3, y3 = blobs(30, 5, classes=3, sep=0.6, seed=15)
    clf = KNeighborsClassifier(n_neighbors=1, metric=metric, algorithm="brute")
    expected = cross_val_score(clf, f3, y3, cv=LeaveOneOut()).mean()
    assert knn_accuracy(f3, y3, k=1, metric=metric) == pytest.approx(expected)


def test_knn_tied_vote_goes_to_the_nearest():
    # on a line: for sample 0 the neighbours are 1 (class 1, nearest), 2 (class 0), 3 (class 1), 4 (class 0)
    f = np.array([[0.0], [1.0], [2.0], [3.0], [4.0]])
    y = np.array([0, 1, 0, 1, 0])
    # k=2 for sample 0: {1: class 1, 2: class 0} tie -> class 1 (nearest) -> wrong; sklearn would pick class 0
    # sample 4: {3: class 1, 2: class 0} -> class 1, wrong; the middle ones: neighbours both of the other class
    assert knn_accuracy(f, y, k=2, metric="euclidean") == 0.0
    assert knn_accuracy(f, y, k=100, metric="euclidean") == pytest.approx(knn_accuracy(f, y, k=4, metric="euclidean"))


def test_linear_probe_cv():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    f, y = blobs(60, 8, sep=0.5, seed=16)
    expected = cross_val_score(LogisticRegression(max_iter=2000), f, y,
                               cv=StratifiedKFold(5, shuffle=True, random_state=0)).mean()
    assert linear_probe_cv(f, y) == pytest.approx(expected)
    good, _ = blobs(60, 8, sep=3.0, seed=16)
    assert linear_probe_cv(good, y) == 1.0
    # a class with 3 examples: 3 folds instead of 5
    y_small = np.concatenate([np.zeros(10, int), np.ones(3, int)])
    f_small = np.random.default_rng(17).standard_normal((13, 4)) + 4 * y_small[:, None]
    assert linear_probe_cv(f_small, y_small) == 1.0
    with pytest.raises(ValueError, match="at least 2 examples of every class; class\\(es\\) 1 have 1"):
        linear_probe_cv(f_small[:11], y_small[:11])


# ----------------------------------------------------------------------------- rank correlation
def test_kendall_taus():
    from scipy.stats import kendalltau, weightedtau

    acc = [0.91, 0.85, 0.80, 0.70, 0.60]
    assert kendall_tau([5, 4, 3, 2, 1], acc) == pytest.approx(1.0)
    assert weighted_kendall_tau([5, 4, 3, 2, 1], acc) == pytest.approx(1.0)
    assert weighted_kendall_tau([1, 2, 3, 4, 5], acc) == pytest.approx(-1.0)
    s = [0.3, 0.9, 0.1, 0.5, 0.4]
    assert weighted_kendall_tau(s, acc) == pytest.approx(weightedtau(s, acc).statistic)
    assert kendall_tau(s, acc) == pytest.approx(kendalltau(s, acc).statistic)
    # swapping the two best models costs more than swapping the two worst; plain tau cannot tell
    top, bottom = [4, 5, 3, 2, 1], [5, 4, 3, 1, 2]
    assert kendall_tau(top, acc) == kendall_tau(bottom, acc)
    assert weighted_kendall_tau(top, acc) < weighted_kendall_tau(bottom, acc)
    with pytest.raises(ValueError, match="equal length"):
        kendall_tau([1, 2], [1, 2, 3])


# ----------------------------------------------------------------------------- registry and input checks
def test_registry_and_tasks():
    f, y = blobs(40, 5, seed=18)
    assert set(SCORES) == {"logme", "h-score", "knn", "linear-probe-cv"}
    assert set(SOURCE_SCORES) == {"leep", "nce"}
    for name, fn in SCORES.items():
        assert np.isfinite(fn(f, y, "classification")), name
    assert SCORES["logme"](f, y, "classification") == logme(f, y)
    assert SCORES["knn"](f, y, "classification") == knn_accuracy(f, y, k=5, metric="cosine")
    assert np.isfinite(SCORES["logme"](f, f[:, 0] * 2.0, "regression"))
    for name in ("h-score", "knn", "linear-probe-cv"):
        with pytest.raises(ValueError, match=f"score '{name}' does not support task 'regression'"):
            SCORES[name](f, f[:, 0], "regression")
    with pytest.raises(ValueError, match="does not support task 'regression'"):
        SOURCE_SCORES["leep"](np.full((40, 2), 0.5), f[:, 0], "regression")
    with pytest.raises(ValueError, match="unknown task"):
        SCORES["logme"](f, y, "ranking")


@pytest.mark.parametrize("name", ["logme", "h-score", "knn", "linear-probe-cv"])
def test_bad_input(name):
    fn = SCORES[name]
    f, y = blobs(30, 4, seed=19)
    bad = f.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="^features contain NaN or infinite values$"):
        fn(bad, y, "classification")
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="features contain NaN or infinite values"):
        fn(bad, y, "classification")
    with pytest.raises(ValueError, match="labels have 29 rows but features have 30"):
        fn(f, y[:-1], "classification")
    with pytest.raises(ValueError, match="2-D array"):
        fn(f[:, 0], y, "classification")
    with pytest.raises(ValueError, match="at least 2 classes"):
        fn(f, np.zeros(30, int), "classification")
    with pytest.raises(ValueError, match="fractional"):
        fn(f, y + 0.5, "classification")
    with pytest.raises(ScoreInputError) as err:             # an ExaptError: the CLI prints one line
        fn(f, np.zeros(30, int), "classification")
    assert isinstance(err.value, ExaptError)


def test_bad_source_input():
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="at least 2 classes"):
        leep(np.full((4, 3), 1 / 3), np.zeros(4, int))
    with pytest.raises(ValueError, match="labels have 3 rows but features have 4"):
        nce(np.array([0, 1, 0, 1]), y[:3])
    with pytest.raises(ValueError, match="NaN or infinite"):
        leep(np.array([[np.nan, 1.0]] * 4), y)
    with pytest.raises(ValueError, match="non-negative"):
        leep(np.array([[-0.5, 1.5]] * 4), y)
