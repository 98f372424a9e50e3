"""`exapt attack` on images: FGSM and PGD against their definitions, the gradient-masking
checks, the report folder, and the refusals (regression runs, the wrong kind of run)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from exapt.cli import main
from exapt.penalties.adversarial import fgsm, pgd, project
from exapt.trust.attack_images import ImageAttackResult, masking_checks


def _linear(seed=0, d=6, k=3):
    g = torch.Generator().manual_seed(seed)
    w, b = torch.randn(k, d, generator=g), torch.randn(k, generator=g)
    return w, b, (lambda x: x @ w.T + b)


def test_fgsm_is_x_plus_eps_sign_of_the_gradient():
    """For logits Wx + b and cross-entropy, dL/dx = W^T (softmax(Wx + b) - onehot(y)): by hand."""
    w, b, forward = _linear()
    x = torch.rand(5, 6, generator=torch.Generator().manual_seed(1)) * 0.6 + 0.2
    y = torch.tensor([0, 1, 2, 0, 1])
    p = torch.softmax(x @ w.T + b, -1)
    grad = (p - torch.nn.functional.one_hot(y, 3).float()) @ w
    expected = (x + 0.1 * grad.sign()).clamp(0, 1)
    torch.testing.assert_close(fgsm(forward, x, y, 0.1), expected)
    assert torch.equal(fgsm(forward, x, y, 0.0), x)
    # pixels stay in [0, 1] even when the step would leave it
    assert fgsm(forward, torch.ones(5, 6), y, 0.5).max() <= 1 and fgsm(forward, torch.zeros(5, 6), y, 0.5).min() >= 0


def test_project_onto_the_linf_ball_and_the_pixel_range_by_hand():
    x = torch.tensor([[0.5, 0.05, 0.98]])
    moved = torch.tensor([[0.9, -0.3, 1.2]])
    assert torch.allclose(project(moved, x, 0.1), torch.tensor([[0.6, 0.0, 1.0]]))
    assert torch.equal(project(x, x, 0.1), x)


def test_pgd_stays_in_the_ball_and_is_fgsm_after_one_full_step_without_random_start():
    _, _, forward = _linear(2, d=10)
    x = torch.rand(8, 10, generator=torch.Generator().manual_seed(3))
    y = torch.arange(8) % 3
    for eps in (0.03, 0.2):
        adv = pgd(forward, x, y, eps, steps=7, generator=torch.Generator().manual_seed(0))
        assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    torch.testing.assert_close(pgd(forward, x, y, 0.1, steps=1, alpha=0.1, random_start=False), fgsm(forward, x, y, 0.1))
    loss = torch.nn.functional.cross_entropy
    assert loss(forward(pgd(forward, x, y, 0.1, steps=20)), y) > loss(forward(x), y)


def _r(attack, eps, acc):
    return ImageAttackResult(attack, eps, acc, 0.0, eps, eps, 1)


def test_masking_checks_pass_and_fail():
    good = [_r("fgsm", 0, 0.9), _r("fgsm", 0.1, 0.5), _r("pgd", 0, 0.9), _r("pgd", 0.1, 0.3)]
    assert masking_checks(0.9, good)["passed"]
    c = masking_checks(0.9, [_r("fgsm", 0, 0.8)])
    assert not c["eps0_equals_clean"] and not c["passed"]
    assert not masking_checks(0.9, [_r("fgsm", 0.1, 0.4), _r("fgsm", 0.2, 0.6)])["falls_with_eps"]
    assert not masking_checks(0.9, [_r("fgsm", 0.1, 0.4), _r("pgd", 0.1, 0.6)])["pgd_not_weaker_than_fgsm"]


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("img") / "run"
    assert main(["fit", "optdigits", "--model", "cnn:8,16", "--strategy", "full", "--lr", "3e-3", "--epochs", "3",
                 "--n-per-class", "20", "--max-test", "50", "--out", str(out), "--quiet"]) == 0
    return out


def test_pgd_attack_report_on_a_cnn(image_run, tmp_path, capsys):
    out = tmp_path / "att"
    assert main(["attack", str(image_run), "optdigits", "--attack", "pgd", "--budget", "0,0.1,0.3",
                 "--max-examples", "60", "--steps", "5", "--out", str(out)]) == 0
    rep = json.loads((out / "attack.json").read_text())
    res = {(r["attack"], r["eps"]): r for r in rep["results"]}
    assert set(res) == {(a, e) for a in ("fgsm", "pgd") for e in (0.0, 0.1, 0.3)}
    assert res["pgd", 0.0]["robust_accuracy"] == rep["clean_accuracy"] and rep["checks"]["eps0_equals_clean"]
    assert res["pgd", 0.3]["robust_accuracy"] < rep["clean_accuracy"]
    assert all(r["linf"] <= r["eps"] + 1e-6 for r in rep["results"])
    saved = np.load(out / "adversarial.npz")
    assert saved["x"].shape == saved["adversarial_eps0.3"].shape == (60, 1, 8, 8)
    assert np.abs(saved["adversarial_eps0.3"] - saved["x"]).max() <= 0.3 + 1e-6
    assert "Gradient-masking checks" in (out / "report.md").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the temporary was renamed
    assert main(["attack", str(image_run), "optdigits", "--attack", "fgsm", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_attacks_refuse_what_they_cannot_attack(image_run, tmp_path, capsys):
    assert main(["attack", str(image_run), "optdigits", "--attack", "charswap", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "attacks text runs" in err[0] and "fgsm or pgd" in err[0]
    rows = "".join(f"{i % 7 / 7:.3f},{(i * 3) % 5 / 5:.3f},{i / 10:.2f}\n" for i in range(40))
    (tmp_path / "reg.csv").write_text("f1,f2,y\n" + rows)
    reg = tmp_path / "reg"
    assert main(["fit", str(tmp_path / "reg.csv"), "--features", "f1,f2", "--label", "y", "--task", "regression",
                 "--model", "mlp", "--strategy", "full", "--epochs", "1", "--out", str(reg), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["attack", str(reg), str(tmp_path / "reg.csv"), "--attack", "pgd", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "regression run" in err[0]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
