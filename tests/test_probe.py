"""The linear probe against scikit-learn, and the on-disk feature cache.

`fit_linear_head` documents its objective as scikit-learn's: C * sum(loss_i) + ||W||^2/2,
bias unpenalised. So for classification it must land on LogisticRegression(C)'s
solution, and for regression (squared loss on standardised targets),
    sum (y - Xw - b)^2 + ||w||^2 / (2C)   ==   Ridge(alpha = 1 / (2C)).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes, load_digits
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler

from exapt.backbones import load_backbone
from exapt.data import load_data
from exapt.tasks import Task
from exapt.train.features import FeatureCache, encode
from exapt.train.probe import fit_linear_head


def rel_err(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x, y = x[:500], y[:500]          # 500 real images, 10 classes: enough, and fast
    return StandardScaler().fit_transform(x), y


@pytest.mark.parametrize("C", [0.05, 1.0])
def test_classification_probe_matches_logistic_regression(digits, C):
    x, y = digits
    labels = [str(v) for v in y]
    task = Task.from_labels("classification", labels)
    assert task.classes == [str(i) for i in range(10)]  # natural order == sklearn's classes_
    head = torch.nn.Linear(64, 10)
    info = fit_linear_head(head, torch.tensor(x, dtype=torch.float32), task.encode(labels), task, C=C)
    ref = LogisticRegression(C=C, tol=1e-8, max_iter=5000).fit(x, y)

    w, b = head.weight.detach().double().numpy(), head.bias.detach().double().numpy()
    assert rel_err(w, ref.coef_) < 1e-3
    # softmax intercepts are defined up to a shared constant: compare them centred
    assert np.abs((b - b.mean()) - (ref.intercept_ - ref.intercept_.mean())).max() < 1e-2
    logits = x @ w.T + b
    assert (logits.argmax(1) == ref.predict(x)).all()
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert np.abs(probs - ref.predict_proba(x)).max() < 1e-3
    # held-out rows too
    xt, yt = load_digits(return_X_y=True)
    xt = StandardScaler().fit(load_digits().data[:500]).transform(xt[1500:])
    assert ((xt @ w.T + b).argmax(1) == ref.predict(xt)).all()
    # the objective reported is the scaled one: mean loss + ||W||^2 / (2 C n)
    with torch.no_grad():
        lg = torch.tensor(x, dtype=torch.float32) @ head.weight.T + head.bias
        want = torch.nn.functional.cross_entropy(lg, task.encode(labels)).item() + (w ** 2).sum() / (2 * C * len(x))
    assert info["probe_objective"] == pytest.approx(want, rel=1e-4)
    assert 0 < info["probe_iterations"] < 1000


def test_stronger_regularisation_shrinks_the_weights(digits):
    x, y = digits
    labels = [str(v) for v in y]
    task = Task.from_labels("classification", labels)
    norms = []
    for C in (0.01, 0.1, 1.0):
        head = torch.nn.Linear(64, 10)
        fit_linear_head(head, torch.tensor(x, dtype=torch.float32), task.encode(labels), task, C=C)
        norms.append(head.weight.norm().item())
    assert norms[0] < norms[1] < norms[2]


@pytest.mark.parametrize("C", [0.01, 1.0])
def test_regression_probe_matches_ridge(C):
    x, y = load_diabetes(return_X_y=True)
    x = StandardScaler().fit_transform(x)
    task = Task.from_labels("regression", [str(v) for v in y])
    assert task.target_mean == pytest.approx(y.mean()) and task.target_std == pytest.approx(y.std())
    target = task.encode([str(v) for v in y])            # standardised targets
    head = torch.nn.Linear(10, 1)
    fit_linear_head(head, torch.tensor(x, dtype=torch.float32), target, task, C=C)
    ref = Ridge(alpha=1 / (2 * C), tol=1e-12).fit(x, target.numpy().astype(np.float64))
    assert rel_err(head.weight.detach().double().numpy()[0], ref.coef_) < 1e-3
    assert head.bias.item() == pytest.approx(ref.intercept_, abs=1e-4)
    # and back in the original unit, the run's predictions are Ridge's
    pred = task.probabilities(torch.tensor(x, dtype=torch.float32) @ head.weight.detach().T + head.bias.detach())
    assert np.abs(pred - (ref.predict(x) * y.std() + y.mean())).max() < 0.05  # y is in the hundreds


def test_multilabel_probe_matches_one_logistic_regression_per_label(digits):
    x, y = digits
    labels = [[n for n, ok in (("big", d >= 5), ("even", d % 2 == 0), ("prime", d in (2, 3, 5, 7))) if ok]
              or ["none"] for d in y]
    task = Task.from_labels("multilabel", labels)
    assert task.classes == ["big", "even", "none", "prime"]
    target = task.encode(labels)
    C = 0.1
    head = torch.nn.Linear(64, 4)
    fit_linear_head(head, torch.tensor(x, dtype=torch.float32), target, task, C=C)
    ref = np.stack([LogisticRegression(C=C, tol=1e-8, max_iter=5000).fit(x, target[:, j].numpy()).coef_[0]
                    for j in range(4)])
    assert rel_err(head.weight.detach().double().numpy(), ref) < 1e-3


# ------------------------------------------------------------------ feature cache
@pytest.fixture(scope="module")
def tiny_backbone(tiny_bert):
    return load_backbone(str(tiny_bert), max_length=64)


@pytest.fixture(scope="module")
def texts(tweets_small):
    return load_data(str(tweets_small)).inputs


def test_feature_cache_hits_and_identical_tensors(tiny_backbone, texts, tmp_path):
    bb = tiny_backbone
    prepared = bb.prepare_inputs(texts)
    n = len(texts)
    assert n == 48 and len(set(texts)) == 48

    first = FeatureCache(bb, root=tmp_path)
    f1 = first.features(texts, prepared, progress=False)
    assert (first.hits, first.misses) == (0, n)
    assert f1.shape == (n, 32)
    assert torch.allclose(f1, encode(bb, prepared, progress=False), atol=1e-6)  # the cache stores real features

    again = FeatureCache(bb, root=tmp_path)  # a new object: the hits come from disk
    f2 = again.features(texts, prepared, progress=False)
    assert (again.hits, again.misses) == (n, 0)
    assert torch.equal(f1, f2)

    idx = [40, 3, 17, 3, 0]                   # a subset, reordered, with a repeat
    sub = [texts[i] for i in idx]
    f3 = again.features(sub, [prepared[i] for i in idx], progress=False)
    assert (again.hits, again.misses) == (5, 0)
    assert torch.equal(f3, f1[idx])
    assert len(list(first.dir.glob("shard-*.safetensors"))) == 1  # nothing new was written


def test_feature_cache_encodes_only_new_texts_once(tiny_backbone, texts, tmp_path):
    bb = tiny_backbone
    cache = FeatureCache(bb, root=tmp_path)
    cache.features(texts[:20], bb.prepare_inputs(texts[:20]), progress=False)
    mixed = texts[10:30] + [texts[25]]        # 10 seen, 10 new, one new text twice
    out = cache.features(mixed, bb.prepare_inputs(mixed), progress=False)
    assert (cache.hits, cache.misses) == (10, 10)
    assert torch.equal(out[-1], out[15])
    assert torch.allclose(out, encode(bb, bb.prepare_inputs(mixed), progress=False), atol=1e-6)


def test_feature_cache_is_keyed_by_the_encoder_settings(tiny_bert, texts, tmp_path):
    """Another max_length or pooling means other features: they must not be served from the cache."""
    base = load_backbone(str(tiny_bert), max_length=64)
    FeatureCache(base, root=tmp_path).features(texts, base.prepare_inputs(texts), progress=False)
    for other in (load_backbone(str(tiny_bert), max_length=16), load_backbone(str(tiny_bert), pooling="cls")):
        cache = FeatureCache(other, root=tmp_path)
        feats = cache.features(texts, other.prepare_inputs(texts), progress=False)
        assert (cache.hits, cache.misses) == (0, len(texts))
        assert torch.allclose(feats, encode(other, other.prepare_inputs(texts), progress=False), atol=1e-6)


def test_damaged_cache_shard_is_ignored(tiny_backbone, texts, tmp_path):
    bb = tiny_backbone
    cache = FeatureCache(bb, root=tmp_path)
    good = cache.features(texts, bb.prepare_inputs(texts), progress=False)
    (cache.dir / "shard-broken.safetensors").write_bytes(b"not a safetensors file")
    again = FeatureCache(bb, root=tmp_path)
    assert torch.equal(again.features(texts, bb.prepare_inputs(texts), progress=False), good)
    assert again.misses == 0
