"""End to end on the real all-MiniLM-L6-v2 and real tweets (slow-ish: ~15 s)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import yaml
from sklearn.linear_model import LogisticRegression

import exapt
from exapt.data import load_data
from exapt.files import load_tensors
from exapt.train.features import encode

from conftest import TWEETS

pytestmark = pytest.mark.slow

TRAIN = TWEETS / "train_n16_s0.csv"   # 16 labelled tweets per class
P_COLS = ["p_negative", "p_neutral", "p_positive"]


def quiet(*_a, **_k):
    pass


@pytest.fixture(scope="module", autouse=True)
def _needs_data():
    if not TRAIN.exists():
        pytest.skip(f"{TRAIN} missing")


def test_linear_probe_beats_chance_and_matches_sklearn(minilm_dir, tweets_test_small, tmp_path):
    run = exapt.fit(str(TRAIN), "linear-probe", "minilm-l6", test=str(tweets_test_small), val_fraction=0,
                    out=tmp_path / "probe", progress=False, log=quiet)
    m = run.metrics
    assert (m["n_train"], m["n_val"], m["n_test"]) == (48, 0, 60)
    # Measured: accuracy 0.50, AUROC 0.71 (0.47-0.52 for C from 0.1 to 100; 0.49 on all
    # 1,500 test tweets). Chance is 1/3 and 0.5.
    assert m["test"]["accuracy"] >= 0.45
    assert m["test"]["auroc"] >= 0.65
    assert m["trainable_parameters"] == 384 * 3 + 3

    # The same features through scikit-learn's LogisticRegression(C=1) predict the same labels.
    bb = run.model.backbone
    assert bb.pooling == "mean" and bb.normalize  # read from the sentence-transformers folder
    train, test = load_data(str(TRAIN)), load_data(str(tweets_test_small))
    x_train = encode(bb, bb.prepare_inputs(train.inputs), progress=False).double().numpy()
    x_test = encode(bb, bb.prepare_inputs(test.inputs), progress=False).double().numpy()
    assert np.allclose(np.linalg.norm(x_test, axis=1), 1, atol=1e-5)
    ref = LogisticRegression(C=1.0, tol=1e-8, max_iter=5000).fit(x_train, train.labels)
    ours = run.predict(str(tweets_test_small))
    agree = np.mean(ours["prediction"].to_numpy() == ref.predict(x_test))
    assert agree >= 59 / 60                       # measured: 60/60
    assert np.abs(ours[P_COLS].to_numpy() - ref.predict_proba(x_test)).max() < 1e-3  # measured: 2e-5
    w = run.model.head.weight.detach().double().numpy()
    assert np.linalg.norm(w - ref.coef_) / np.linalg.norm(ref.coef_) < 1e-3          # measured: 5e-5


def test_short_full_fine_tune_saves_and_loads(minilm_dir, tweets_test_small, tmp_path):
    out = tmp_path / "full"
    run = exapt.fit(str(TRAIN), "full", "minilm-l6", epochs=1, max_length=32, batch_size=16,
                    test=str(tweets_test_small), out=out, progress=False, log=quiet)
    assert yaml.safe_load((out / "config.yaml").read_text())["max_length"] == 32
    assert run.metrics["epochs_run"] == 1 and 0 <= run.metrics["test"]["accuracy"] <= 1
    assert run.metrics["trainable_parameters"] == run.metrics["total_parameters"] > 22_000_000

    tensors, meta = load_tensors(out / "weights.safetensors")
    assert set(tensors) == {n for n, _ in run.model.named_parameters()}
    base = meta["base_model"]
    assert base["max_length"] == 32 and base["model"] == "minilm-l6"
    assert base["sha256"] == hashlib.sha256((minilm_dir / "model.safetensors").read_bytes()).hexdigest()

    loaded = exapt.load_run(out)
    assert loaded.model.backbone.max_length == 32
    a, b = run.predict(str(tweets_test_small)), loaded.predict(str(tweets_test_small))
    assert list(a["prediction"]) == list(b["prediction"])
    assert np.abs(a[P_COLS].to_numpy() - b[P_COLS].to_numpy()).max() < 1e-6
    table = load_data(str(tweets_test_small))
    assert torch.allclose(run.logits(table), loaded.logits(table), atol=1e-6)
    assert loaded.evaluate(str(tweets_test_small))["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])


def test_short_lora_fine_tune_saves_and_loads(minilm_dir, tweets_test_small, tmp_path):
    """LoRA (r=8 on query and value) on the real MiniLM: under 1% of the weights train,
    the run holds only those + the head (and PEFT's adapter folder), and reloads exactly."""
    out = tmp_path / "lora"
    run = exapt.fit(str(TRAIN), "lora", "minilm-l6", epochs=1, max_length=32, batch_size=16,
                    test=str(tweets_test_small), out=out, progress=False, log=quiet)
    m = run.metrics
    assert m["epochs_run"] == 1 and 0 <= m["test"]["accuracy"] <= 1
    # 6 layers x (query, value) x r 8 x (384 in + 384 out) + the 3-way head
    lora = 6 * 2 * 8 * (384 + 384)
    assert m["trainable_parameters"] == lora + 384 * 3 + 3
    assert m["trainable_fraction"] < 0.01 and m["total_parameters"] > 22_000_000

    tensors, meta = load_tensors(out / "weights.safetensors")
    assert len(tensors) == 6 * 2 * 2 + 2 and all("lora_" in n or n.startswith("head.") for n in tensors)
    assert meta["base_model"]["max_length"] == 32
    assert (out / "adapter" / "adapter_config.json").exists()

    loaded = exapt.load_run(out)
    a, b = run.predict(str(tweets_test_small)), loaded.predict(str(tweets_test_small))
    assert list(a["prediction"]) == list(b["prediction"])
    assert np.abs(a[P_COLS].to_numpy() - b[P_COLS].to_numpy()).max() < 1e-6
    table = load_data(str(tweets_test_small))
    assert torch.allclose(run.logits(table), loaded.logits(table), atol=1e-6)
