"""`fit --privacy`: DP-SGD with Opacus (train/privacy.py) on tiny models, one real MiniLM probe."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import interrupt_at, quiet

import exapt
from exapt.cli import main
from exapt.config import PrivacySpec
from exapt.errors import ExaptError
from exapt.train.privacy import PrivatePlan, frozen_for_privacy, noise_for

FAST = dict(progress=False, log=quiet, epochs=2, batch_size=8)


def _metrics(run) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_spec_parses_and_refuses():
    assert PrivacySpec.parse("epsilon=8") == PrivacySpec(8.0, None, 1.0)
    assert PrivacySpec.parse("8,delta=1e-5,clip=0.5") == PrivacySpec(8.0, 1e-5, 0.5)
    assert PrivacySpec.parse("none") is None and PrivacySpec.parse(None) is None
    for bad, said in [("epsilon=0", "> 0"), ("epsilon=-2", "> 0"), ("epsilon=inf", "> 0"), ("delta=1e-5", "give epsilon"),
                      ("epsilon=8,delta=1", "delta"), ("epsilon=8,clip=-1", "clip"), ("epsilon=x", "number"),
                      ("epsilon=8,sigma=1", "unknown key")]:
        with pytest.raises(ExaptError, match=said):
            PrivacySpec.parse(bad)


def test_plan_noise_reaches_the_target_epsilon_and_poisson_batches_vary():
    plan = PrivatePlan(PrivacySpec(3.0), n=200, batch_size=20, epochs=5)
    assert plan.delta == pytest.approx(1 / 2000) and plan.sample_rate == pytest.approx(0.1)
    assert plan.steps_per_epoch == 10
    for _ in range(50):
        plan.count_step()
    assert plan.history == [(plan.noise_multiplier, 0.1, 50)]
    spent = plan.record()["epsilon"]
    assert 2.9 <= spent <= 3.0  # Opacus' search stops within its tolerance below the target
    a, b = plan.batches(seed=0, epoch=1), plan.batches(seed=0, epoch=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # replayable for resume
    sizes = [len(x) for e in range(20) for x in plan.batches(0, e)]
    assert len(set(sizes)) > 5 and abs(np.mean(sizes) - 20) < 2  # Poisson: variable, mean q*n
    tiny = PrivatePlan(PrivacySpec(1.0), n=40, batch_size=1, epochs=1)
    assert any(len(x) == 0 for e in range(5) for x in tiny.batches(0, e))  # empty batches happen


@pytest.mark.parametrize("strategy", ["full", "lora", "bitfit", "adapter"])
def test_private_fit_records_the_guarantee_and_freezes_embeddings(tmp_path, tiny_bert, tweets_small, strategy):
    run = exapt.fit(str(tweets_small), strategy, str(tiny_bert), out=tmp_path / "r", privacy="epsilon=4", **FAST)
    p = _metrics(run.path)["privacy"]
    assert p["accountant"] == "rdp" and p["sampling"] == "poisson" and p["target_epsilon"] == 4
    assert 0 < p["epsilon"] <= 4.0 and p["noise_multiplier"] > 0.3 and p["clip"] == 1.0
    assert p["delta"] == pytest.approx(1 / (10 * p["n_private_rows"])) and p["steps"] == 2 * round(1 / p["sample_rate"])
    base = exapt.fit(str(tweets_small), "linear-probe", str(tiny_bert), out=tmp_path / "b", progress=False, log=quiet)
    frozen = frozen_for_privacy(run.model)
    assert any("word_embeddings" in n for n in frozen) and any("position_embeddings" in n for n in frozen)
    after, before = dict(run.model.named_parameters()), dict(base.model.named_parameters())
    for name in frozen & set(before):  # opacus#841 and the word table: never trained privately
        torch.testing.assert_close(after[name], before[name])
    if strategy == "full":  # the rest of the encoder did train
        name = next(n for n in after if "encoder.layer.0" in n and n.endswith("weight"))
        assert not torch.equal(after[name], before[name])


def test_private_linear_probe_is_a_dp_sgd_head(tmp_path, tiny_bert, tweets_small):
    run = exapt.fit(str(tweets_small), "linear-probe", str(tiny_bert), out=tmp_path / "r", privacy="epsilon=2",
                    progress=False, log=quiet)
    m = _metrics(run.path)
    assert m["privacy"]["epsilon"] <= 2.0 and m["probe_epochs"] == 30 and "probe_iterations" not in m
    assert m["privacy"]["steps"] == 30 * round(1 / m["privacy"]["sample_rate"])


def test_private_resume_counts_the_steps_before_it(tmp_path, tiny_bert_dropout, tweets_small, monkeypatch):
    opts = dict(progress=False, log=quiet, epochs=3, batch_size=8, privacy="epsilon=4")
    ref = exapt.fit(str(tweets_small), "lora", str(tiny_bert_dropout), out=tmp_path / "ref", **opts)
    mp = pytest.MonkeyPatch()
    interrupt_at(mp, "lora", 2)
    with pytest.raises(KeyboardInterrupt):
        exapt.fit(str(tweets_small), "lora", str(tiny_bert_dropout), out=tmp_path / "cut", **opts)
    mp.undo()
    resumed = exapt.resume(tmp_path / "cut", progress=False, log=quiet)
    a, b = _metrics(ref.path), _metrics(resumed.path)
    assert a["privacy"] == b["privacy"]  # same steps, same epsilon: the accountant was in the checkpoint
    assert a["test"] == pytest.approx(b["test"])
    for (n, x), (_, y) in zip(ref.model.named_parameters(), resumed.model.named_parameters()):
        torch.testing.assert_close(x, y, msg=n)


def test_private_image_run_keeps_batchnorm_frozen(tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    rng = np.random.default_rng(0)
    x = rng.random((40, 1, 16, 16), dtype=np.float32)
    y = np.array(["a", "b"] * 20)
    x[y == "a", :, :8] += 0.5
    np.savez(tmp_path / "img.npz", x=np.clip(x, 0, 1), y=y)
    run = exapt.fit(str(tmp_path / "img.npz"), "full", "efficientnet-lite0:32", out=tmp_path / "r",
                    privacy="epsilon=8", progress=False, log=quiet, epochs=1, batch_size=8)
    assert _metrics(run.path)["privacy"]["epsilon"] <= 8
    bn = [n for n in frozen_for_privacy(run.model) if "bn" in n.lower() or "norm" in n.lower()]
    assert bn  # BatchNorm scale/shift frozen, statistics ImageNet's


def test_cli_refuses_what_cannot_be_private(tmp_path, tweets_small, capsys):
    for argv, said in [(["--privacy", "epsilon=0"], "epsilon must be a finite number > 0"),
                       (["--strategy", "lp-ft", "--privacy", "8"], "cannot make that strategy private"),
                       (["--strategy", "full", "--privacy", "8", "--penalty", "l2sp"], "--penalty")]:
        assert main(["fit", str(tweets_small), "--out", str(tmp_path / "x"), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0]
        assert not (tmp_path / "x").exists()


def test_real_minilm_private_probe(tmp_path):
    """The bundled MiniLM on 96 real tweets (32 per class): a DP probe at epsilon 8 trains
    and stays within its budget; its accuracy is above chance (1/3)."""
    run = exapt.fit("tweets", "linear-probe", "minilm-l6", out=tmp_path / "r", privacy="epsilon=8", n_per_class=32,
                    max_test=150, progress=False, log=quiet)
    m = _metrics(run.path)
    assert m["privacy"]["epsilon"] <= 8 and m["privacy"]["noise_multiplier"] > 0
    assert m["test"]["accuracy"] > 0.45


def test_compare_privacy_is_a_panel_dimension(tmp_path, tiny_bert, tweets_small):
    from exapt.compare.panel import privacy_of, split_label, with_privacy

    assert with_privacy(["linear-probe", "lora"], "none,8") == ["linear-probe", "linear-probe@dp=8", "lora", "lora@dp=8"]
    with pytest.raises(ExaptError, match="--penalty"):
        with_privacy(["lora+l2sp"], "none,8")
    assert split_label("lora+l2sp@dp=8") == ("lora", ["l2sp"]) and privacy_of("lora@dp=8") == "8"
    out = tmp_path / "cmp"
    assert main(["compare", str(tweets_small), "--model", str(tiny_bert), "--strategies", "linear-probe",
                 "--privacy", "none,4", "--n-per-class", "8", "--seeds", "1", "--out", str(out), "--no-tracking",
                 "--quiet"]) == 0
    text = (out / "results.csv").read_text()
    assert "linear-probe@dp=4" in text and "linear-probe," in text


def test_the_accountants_largest_alpha_warning_is_silenced_because_it_changes_nothing():
    """Opacus warns during its noise search at a quarter-of-the-rows sampling rate; orders
    up to 1024 give the same noise multiplier, so the warning told users nothing."""
    import warnings

    from opacus.accountants.utils import get_noise_multiplier

    noise_for.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sigma = noise_for(8.0, 1.6e-4, 0.25, 120)
    assert not [w for w in caught if "largest alpha" in str(w.message)]
    wide = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [96, 128, 256, 512, 1024]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wider = get_noise_multiplier(target_epsilon=8.0, target_delta=1.6e-4, sample_rate=0.25, steps=120,
                                     accountant="rdp", alphas=wide)
    assert sigma == pytest.approx(wider, rel=1e-3)
