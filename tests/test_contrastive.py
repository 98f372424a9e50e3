"""The contrastive stage of `lp-ft:pairs=N` (SetFit's body tuning): pair sampling, the
loss against its definition, and what a fit with it does."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import exapt
from exapt.backbones import load_backbone
from exapt.train.contrastive import contrastive_pairs, contrastive_tuning, cosine_pair_loss

from conftest import quiet
from test_bad_input import expect_error


def test_pairs_alternate_same_and_other_class_partners():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    first, second, target = contrastive_pairs(labels, 500, seed=3)
    assert len(first) == len(second) == len(target) == 500
    same = labels[first] == labels[second]
    assert (same == (target == 1)).all()            # target 1 exactly when the classes agree
    assert (first[target == 1] != second[target == 1]).all()  # never an example with itself
    assert 0.45 < target.mean() < 0.55               # one positive and one negative per example
    counts = np.bincount(first, minlength=len(labels))
    assert counts.max() - counts.min() <= 2 * 2      # every example serves about equally often
    again = contrastive_pairs(labels, 500, seed=3)
    assert all((x == y).all() for x, y in zip((first, second, target), again))


def test_a_class_of_one_gets_negative_pairs_only():
    labels = np.array([0, 1, 1, 1])
    first, second, target = contrastive_pairs(labels, 60, seed=0)
    assert (target[first == 0] == 0).all() and (labels[second[first == 0]] != 0).all()


def test_the_loss_is_sentence_transformers_cosine_similarity_loss():
    """CosineSimilarityLoss: MSE between cos(u, v) and the label (sentence-transformers)."""
    from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss

    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    y = torch.tensor([1.0, 0, 1, 0, 0, 1, 1, 0])
    by_hand = np.mean([(float(u[i] @ v[i] / (u[i].norm() * v[i].norm())) - float(y[i])) ** 2 for i in range(8)])
    assert cosine_pair_loss(u, v, y).item() == pytest.approx(by_hand, rel=1e-5)

    class Encoded(torch.nn.Module):  # the library's loss on the same embeddings
        def forward(self, features):
            return {"sentence_embedding": features["x"]}

    ref = CosineSimilarityLoss(Encoded())
    assert cosine_pair_loss(u, v, y).item() == pytest.approx(ref([{"x": u}, {"x": v}], y).item(), rel=1e-5)


def test_tuning_pulls_same_class_features_together(tiny_bert, tweets_small):
    frame = pd.read_csv(tweets_small)
    labels = pd.factorize(frame["label"])[0]
    bb = load_backbone(str(tiny_bert), max_length=32)
    items = bb.prepare_inputs(list(frame["text"]))
    first, second, target = contrastive_pairs(labels, 400, seed=0)

    def pair_loss():
        with torch.no_grad():
            bb.eval()
            f = bb(bb.collate(items))
            return cosine_pair_loss(f[first], f[second], torch.from_numpy(target)).item()

    class Holder(torch.nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone

    before = pair_loss()
    info = contrastive_tuning(Holder(bb), items, labels, 400, lr=1e-3, seed=0, progress=False, log=quiet)
    assert info["contrastive_steps"] == 25 and pair_loss() < 0.7 * before


def test_a_fit_with_pairs_tunes_before_probing_and_does_not_use_the_feature_cache(tmp_path, tiny_bert, tweets_small,
                                                                                   monkeypatch):
    import importlib

    fit_module = importlib.import_module("exapt.fit")

    def no_cache(*a, **k):
        raise AssertionError("the feature cache holds the untuned encoder's features")

    monkeypatch.setattr(fit_module, "FeatureCache", no_cache)
    run = exapt.fit(str(tweets_small), "lp-ft:pairs=64", str(tiny_bert), epochs=1, max_length=16, val_fraction=0,
                    out=tmp_path / "run", progress=False, log=quiet)
    m = run.metrics
    assert m["contrastive_pairs"] == 64 and m["contrastive_steps"] == 4 and "probe_objective" in m
    assert "pairs=64" in m["strategy"].split(",")


@pytest.mark.parametrize("args, message", [
    (["--strategy", "lp-ft:pairs=-1"], "pairs must be >= 0"),
    (["--strategy", "lp-ft:pairs=many"], "pairs must be a int"),
])
def test_bad_pairs(tmp_path, capsys, tiny_bert, tweets_small, args, message):
    out = tmp_path / "run"
    expect_error(capsys, ["fit", tweets_small, "--model", tiny_bert, "--out", out, *args], message, out=out)


def test_pairs_need_single_label_classification(tmp_path, capsys, tiny_bert):
    data = tmp_path / "scores.csv"
    pd.DataFrame({"text": [f"tweet number {i}" for i in range(30)], "label": [i * 0.37 for i in range(30)]}).to_csv(
        data, index=False)
    out = tmp_path / "run"
    expect_error(capsys, ["fit", data, "--model", tiny_bert, "--strategy", "lp-ft:pairs=10", "--out", out],
                 "need single-label classification; this task is regression", out=out)
