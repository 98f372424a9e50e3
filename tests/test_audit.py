"""`exapt audit`: LiRA and the loss attack against the papers' equations, and on real runs."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from conftest import quiet

import exapt
from exapt.cli import main
from exapt.trust.audit import audit_run, shadow_masks
from exapt.trust.audit_stats import (clopper_pearson, epsilon_lower_bound, lira_offline, lira_online,
                                     logit_confidence, loss_scores, roc, tpr_at_fpr)


def test_logit_confidence_is_log_p_over_1_minus_p():
    z = np.array([[2.0, 0.0, -1.0], [0.5, 3.0, 0.0]])
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    want = [math.log(p[0, 0] / (1 - p[0, 0])), math.log(p[1, 2] / (1 - p[1, 2]))]
    np.testing.assert_allclose(logit_confidence(z, np.array([0, 2])), want)
    assert logit_confidence(z, np.array([0, 2]))[0] == pytest.approx(2 - math.log(1 + math.exp(-1)))  # by hand
    np.testing.assert_allclose(logit_confidence(np.array([[800.0, 0.0]]), np.array([0])), [800.0])  # no overflow
    np.testing.assert_allclose(loss_scores(z, np.array([0, 2])), np.log([p[0, 0], p[1, 2]]))


def test_lira_online_and_offline_by_hand():
    """One example, 4 shadows: in at phi 2 and 4 (mu 3, s^2 2), out at 0 and 2 (mu 1, s^2 2).
    Online (Carlini et al., Algorithm 1): log N(3; 3, 2) - log N(3; 1, 2) = 0 + (3-1)^2 / (2*2) = 1.
    Offline: log Pr[Z < 3], Z ~ N(1, 2) = log Phi(sqrt 2) = log((1 + erf 1) / 2) = log 0.9213504 = -0.0819149."""
    phis = np.array([[2.0], [4.0], [0.0], [2.0]])
    ins = np.array([[True], [True], [False], [False]])
    assert lira_online(np.array([3.0]), phis, ins, fixed_variance=False)[0] == pytest.approx(1.0)
    assert lira_offline(np.array([3.0]), phis, ins, fixed_variance=False)[0] == pytest.approx(-0.0819149, abs=1e-6)
    # fixed variance pools the residuals of every example: here the same two per side
    two = np.hstack([phis, phis + 10])
    np.testing.assert_allclose(lira_online(np.array([3.0, 13.0]), two, np.hstack([ins, ins]), fixed_variance=True),
                               [1.0, 1.0])


def test_roc_auc_intervals_and_bound():
    c = roc(np.array([3.0, 2.0, 1.0, 2.5]), np.array([True, True, False, False]))
    assert c["auc"] == pytest.approx(0.75)  # member beats non-member in 3 of 4 pairs
    lo, hi = clopper_pearson(0, 10)
    assert lo == 0 and hi == pytest.approx(1 - 0.025 ** 0.1)
    rng = np.random.default_rng(0)
    members = np.arange(4000) < 2000
    chance = roc(rng.random(4000), members)
    assert abs(chance["auc"] - 0.5) < 0.03 and epsilon_lower_bound(chance, 1e-5)["epsilon_lower_bound"] < 0.3
    t = tpr_at_fpr(chance, 0.01)
    assert t["achieved_fpr"] <= 0.01 and t["tpr_interval"][0] <= t["tpr"] <= t["tpr_interval"][1] and t["resolvable"]
    perfect = roc(members.astype(float), members)
    bound = epsilon_lower_bound(perfect, 1e-5)["epsilon_lower_bound"]
    assert 5 < bound < math.log(2000)  # separated: large, but capped by what 2000 trials can show


def test_shadow_masks_are_the_targets_size_and_seeded():
    m = shadow_masks(100, 30, 8, seed=1)
    assert m.shape == (8, 100) and (m.sum(1) == 30).all()
    assert np.array_equal(m, shadow_masks(100, 30, 8, seed=1)) and not np.array_equal(m, shadow_masks(100, 30, 8, 2))


def test_audit_of_a_probe_run_writes_report_and_figure(probe_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(probe_run, run)
    assert main(["audit", str(run), "--shadows", "8"]) == 0
    out = capsys.readouterr().out
    assert "lira-online" in out and "TPR at 0.1% FPR" in out and "epsilon lower bound" in out
    rep = json.loads((run / "audit.json").read_text())
    assert (run / "audit-roc.png").read_bytes()[:4] == b"\x89PNG"
    assert set(rep["results"]) == {"loss", "lira-online"} and rep["shadows"] == 8 and rep["fixed_variance"]
    assert rep["n_members"] == json.loads((run / "metrics.json").read_text())["n_train"]
    assert 0 <= rep["results"]["lira-online"]["auc"] <= 1 and rep["accountant_epsilon"] is None
    offline = audit_run(run, shadows=8, offline=True, log=quiet, progress=False)
    assert "lira-offline" in offline["results"]
    loss = audit_run(run, attack="loss", log=quiet, progress=False)
    assert loss["shadows"] == 0 and set(loss["results"]) == {"loss"}


def test_dp_run_audit_stays_below_the_accountant(tmp_path, tiny_bert, tweets_small):
    """The audited lower bound of an epsilon=1 run must not exceed the accountant's epsilon."""
    run = exapt.fit(str(tweets_small), "linear-probe", str(tiny_bert), out=tmp_path / "dp", privacy="epsilon=1",
                    epochs=8, progress=False, log=quiet)
    rep = audit_run(run.path, shadows=8, log=quiet, progress=False)
    assert rep["accountant_epsilon"] <= 1.0
    for result in rep["results"].values():
        assert result["epsilon_lower_bound"] <= rep["accountant_epsilon"]


def test_encoder_run_shadows_train_the_runs_own_way(tmp_path, capsys):
    rows = "".join(f"{(i % 7) / 7 + (i % 2):.3f},{(i * 3) % 5 / 5:.3f},{'ab'[i % 2]}\n" for i in range(40))
    (tmp_path / "f.csv").write_text("f1,f2,label\n" + rows)
    argv = ["fit", str(tmp_path / "f.csv"), "--features", "f1,f2", "--model", "mlp", "--strategy", "full",
            "--epochs", "2", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    rep = audit_run(tmp_path / "run", shadows=4, log=quiet, progress=False)
    assert rep["shadows"] == 4 and "lira-online" in rep["results"]
    # bad inputs: the run's data gone; a regression run
    (tmp_path / "f.csv").rename(tmp_path / "gone.csv")
    assert main(["audit", str(tmp_path / "run")]) == 2
    assert "data cannot be read" in capsys.readouterr().err
    (tmp_path / "gone.csv").rename(tmp_path / "f.csv")
    assert main([*argv, "--task", "regression", "--label", "f2", "--features", "f1", "--out", str(tmp_path / "reg")]) == 0
    capsys.readouterr()
    assert main(["audit", str(tmp_path / "reg")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "classification" in err[0]


def test_non_members_match_the_members_class_mix():
    """Balanced members against naturally mixed held-out rows would let an attack read the
    class mix instead of membership: non-members are drawn per class to the members' counts."""
    from exapt.trust.audit import matched_non_members

    members = np.array([0] * 10 + [1] * 10 + [2] * 10)
    held_out = np.array([0] * 80 + [1] * 15 + [2] * 5)  # natural mix: class 2 is rare
    labels = np.r_[members, held_out]
    picked = matched_non_members(members, np.arange(30, 130), labels, seed=0)
    counts = np.bincount(labels[picked], minlength=3)
    assert counts.tolist() == [10, 10, 5]  # class 2 has only 5 held-out rows: all of them
    assert len(set(picked)) == len(picked) and picked.min() >= 30
    assert np.array_equal(picked, matched_non_members(members, np.arange(30, 130), labels, seed=0))
    assert not np.array_equal(picked, matched_non_members(members, np.arange(30, 130), labels, seed=1))
