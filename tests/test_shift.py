"""`exapt shift`: each statistic against its paper's formula or a reference, the estimators on
synthetic data with known answers, the random-split control, the report folder, the CLI and
the errors users can cause. Synthetic Gaussians and scikit-learn's digits keep it fast;
one test runs the real MiniLM on real tweets (airline -> self-driving)."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from exapt.cli import main
from exapt.errors import ExaptError
from exapt.shift import diagnose
from exapt.shift.concept import concept_shift
from exapt.estimators.covariate import (delong_ci, delong_components, domain_classifier, median_bandwidth, mmd_test,
                                   weighted_auc_ci)
from exapt.estimators.label_shift import (adjust_posteriors, bbse, confusion_joint, em_priors, estimate_priors,
                                     total_variation)
from exapt.estimators.probes import cross_fitted_probe

from conftest import quiet


# ============================================================================ synthetic data
MEANS = np.array([[0.0, 0.0, 0.0], [2.5, 0.0, 0.0], [0.0, 2.5, 0.0]])


def gaussian_classes(n: int, priors, rng, shift=None) -> tuple[np.ndarray, np.ndarray]:
    """Three unit-variance Gaussian classes in 3-D; `shift` moves every class (covariate shift)."""
    y = rng.choice(len(priors), n, p=priors)
    x = MEANS[y] + rng.standard_normal((n, 3))
    if shift is not None:
        x = x + shift
    return x, y


def write_csv(path, x, y=None):
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    if y is not None:
        frame["label"] = [f"c{v}" for v in y]
    frame.to_csv(path, index=False)
    return path


FEATS = "f0,f1,f2"


# ============================================================================ MMD
def mmd2_direct(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """Gretton et al. 2012, eq. (3), written as its three double sums over i != j."""
    def k(a, b):
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * sigma * sigma))

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd_matches_the_papers_formula():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((14, 3)), rng.standard_normal((11, 3)) + 0.4
    res = mmd_test(x, y, permutations=0, standardise=False, bandwidth=1.3)
    assert res.mmd2 == pytest.approx(mmd2_direct(x, y, 1.3), rel=1e-10, abs=1e-12)
    # the permutation path evaluates relabelled splits with the same formula
    res = mmd_test(x, y, permutations=5, standardise=False, bandwidth=1.3, seed=3)
    perm = np.random.default_rng(3).permutation(25)  # the first permutation mmd_test draws
    pooled = np.vstack([x, y])
    assert res.null[0] == pytest.approx(mmd2_direct(pooled[perm[:14]], pooled[np.sort(perm[14:])], 1.3), rel=1e-9)


def test_median_heuristic_is_the_median_pairwise_distance():
    from scipy.spatial.distance import pdist

    x = np.random.default_rng(1).standard_normal((60, 4))
    assert median_bandwidth(x) == pytest.approx(float(np.median(pdist(x))), rel=1e-6)


def test_mmd_permutation_test_is_calibrated_under_the_null_and_has_power():
    rng = np.random.default_rng(0)
    ps = np.array([mmd_test(rng.standard_normal((30, 3)), rng.standard_normal((30, 3)), permutations=99,
                            seed=i).p_value for i in range(200)])
    # p-values of a valid permutation test are (discretely) uniform under the null
    assert 0.01 <= (ps <= 0.05).mean() <= 0.10
    assert stats.kstest(ps, "uniform").pvalue > 0.01
    shifted = mmd_test(rng.standard_normal((60, 3)), rng.standard_normal((60, 3)) + [1.0, 0, 0], permutations=200)
    assert shifted.p_value < 0.01 and shifted.mmd2 > np.quantile(shifted.null, 0.99)


# ============================================================================ domain classifier, DeLong
def test_delong_components_and_variance_match_the_definitions():
    rng = np.random.default_rng(0)
    pos = np.round(rng.normal(1, 1, 40), 1)   # rounding makes ties, which count 1/2
    neg = np.round(rng.normal(0, 1, 30), 1)
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = delong_components(pos, neg)
    np.testing.assert_allclose(v10, psi.mean(1))
    np.testing.assert_allclose(v01, psi.mean(0))
    auc, lo, hi = delong_ci(pos, neg)
    from sklearn.metrics import roc_auc_score

    assert auc == pytest.approx(roc_auc_score(np.r_[np.ones(40), np.zeros(30)], np.r_[pos, neg]))
    se = math.sqrt(np.var(psi.mean(1), ddof=1) / 40 + np.var(psi.mean(0), ddof=1) / 30)
    assert (hi - lo) / 2 == pytest.approx(1.959964 * se, rel=1e-5)


def test_delong_interval_agrees_with_a_bootstrap():
    rng = np.random.default_rng(2)
    pos, neg = rng.normal(0.8, 1, 300), rng.normal(0, 1, 300)
    auc, lo, hi = delong_ci(pos, neg)
    _, blo, bhi = weighted_auc_ci(np.r_[np.ones(300), np.zeros(300)], np.r_[pos, neg], np.ones(600), bootstrap=600)
    assert (hi - lo) == pytest.approx(bhi - blo, rel=0.2)


def test_domain_classifier_separates_shifted_domains_only():
    rng = np.random.default_rng(0)
    same = [domain_classifier(rng.standard_normal((300, 5)), rng.standard_normal((300, 5)), seed=i)
            for i in range(20)]
    assert abs(np.mean([r.auc for r in same]) - 0.5) < 0.02
    # DeLong treats the out-of-fold scores as fixed; the fold models add a little variance on top
    assert np.mean([r.ci[0] < 0.5 < r.ci[1] for r in same]) >= 0.75
    apart = domain_classifier(rng.standard_normal((500, 5)), rng.standard_normal((500, 5)) + 1.0, seed=0)
    assert apart.auc > 0.9 and apart.ci[0] > 0.85
    fpr, tpr = apart.roc_curve()
    assert fpr[0] == 0 and tpr[-1] == 1


# ============================================================================ label shift
def test_bbse_recovers_priors_exactly_from_population_quantities():
    p = np.array([0.5, 0.3, 0.2])
    conditional = np.array([[0.8, 0.1, 0.2], [0.15, 0.7, 0.1], [0.05, 0.2, 0.7]])   # P(pred = i | y = j)
    q = np.array([0.1, 0.3, 0.6])
    joint = conditional * p                                                        # C[i, j] = P(pred i, y j)
    res = bbse(joint, conditional @ q, p)                                          # mu = sum_j P(i | j) q_j
    np.testing.assert_allclose(res.priors, q, atol=1e-12)
    np.testing.assert_allclose(res.weights, q / p, atol=1e-12)


def test_bbse_clips_negative_weights():
    res = bbse(np.diag([0.5, 0.5]), np.array([1.2, -0.2]), np.array([0.5, 0.5]))
    assert (res.weights >= 0).all() and res.priors == pytest.approx([1.0, 0.0])


def test_em_recovers_priors_from_exact_posteriors():
    rng = np.random.default_rng(0)
    p, q = np.array([1 / 3] * 3), np.array([0.6, 0.3, 0.1])
    x, y = gaussian_classes(20000, q, rng)
    # the exact Bayes posteriors under the source priors
    like = np.exp(-0.5 * ((x[:, None, :] - MEANS[None]) ** 2).sum(-1))
    post = like * p / (like * p).sum(1, keepdims=True)
    est = em_priors(post, p)
    assert np.abs(est - q).max() < 0.02
    # EM's fixed point: the mean adjusted posterior equals the estimate (Saerens et al. eq. 2.10)
    np.testing.assert_allclose(adjust_posteriors(post, p, est).mean(0), est, atol=1e-6)


def test_bbse_and_em_recover_known_target_priors_with_a_cross_fitted_probe():
    rng = np.random.default_rng(0)
    q = np.array([0.6, 0.3, 0.1])
    xs, ys = gaussian_classes(3000, [1 / 3] * 3, rng)
    xt, yt = gaussian_classes(3000, q, rng)
    out = cross_fitted_probe(xs, ys, xt, 3, seed=0)
    assert np.allclose(out.target_votes.sum(1), 1) and np.allclose(out.target_probabilities.sum(1), 1)
    est = estimate_priors(out.heldout_probabilities, out.heldout_labels, out.target_probabilities,
                          ["a", "b", "c"], target_votes=out.target_votes, training_priors=out.training_priors,
                          bootstrap=50, true_target=np.bincount(yt) / len(yt))
    assert np.abs(est.bbse - q).max() < 0.04
    assert np.abs(est.em - q).max() < 0.04
    assert all(lo <= t <= hi for t, (lo, hi) in zip(q, est.bbse_ci))
    assert total_variation(est.bbse, est.source) > 0.2
    d = est.to_dict()
    assert d["abs_error_bbse"] < 0.04 and set(d["bbse"]) == {"a", "b", "c"}


def test_confusion_joint_sums_to_one():
    c = confusion_joint(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    assert c.sum() == pytest.approx(1) and c[1, 2] == pytest.approx(0.25)


# ============================================================================ concept shift
def test_concept_shift_finds_the_class_whose_rule_moved():
    rng = np.random.default_rng(0)
    xs, ys = gaussian_classes(1500, [1 / 3] * 3, rng)
    xt, yt = gaussian_classes(1500, [1 / 3] * 3, rng)
    moved = yt.copy()
    moved[yt == 1] = 2          # on the target, class-1 inputs are called class 2 ...
    moved[yt == 2] = 1          # ... and class-2 inputs class 1: p(y | x) changed, p(x) did not
    out = cross_fitted_probe(xs, ys, xt, 3, seed=0)
    res = concept_shift(xt, moved, out, ["c0", "c1", "c2"], n_per_class=20, seed=0)
    cls, drop = res.worst
    assert cls in ("c1", "c2") and drop > 60
    assert res.accuracy["probe"] > res.accuracy["source"] + 0.4
    same = concept_shift(xt, yt, out, ["c0", "c1", "c2"], n_per_class=20, seed=0)
    assert same.worst[1] < 10
    assert (same.table["n_eval"] > 400).all()


# ============================================================================ diagnose (files)
@pytest.fixture(scope="module")
def domain_files(tmp_path_factory):
    """Source (uniform priors), a covariate-shifted target, a label-shifted target (CSV)."""
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("shift-data")
    xs, ys = gaussian_classes(900, [1 / 3] * 3, rng)
    xc, yc = gaussian_classes(600, [1 / 3] * 3, rng, shift=np.array([0.0, 0.0, 1.5]))
    xl, yl = gaussian_classes(900, [0.7, 0.2, 0.1], rng)
    xu, _ = gaussian_classes(600, [1 / 3] * 3, rng)
    return {"source": write_csv(d / "source.csv", xs, ys), "covariate": write_csv(d / "covariate.csv", xc, yc),
            "label": write_csv(d / "label.csv", xl, yl), "unlabelled": write_csv(d / "unlabelled.csv", xu)}


def run_diagnose(src, tgt=None, **kw):
    kw.setdefault("permutations", 200)
    kw.setdefault("progress", False)
    kw.setdefault("log", quiet)
    return diagnose(str(src), None if tgt is None else str(tgt), features=FEATS, **kw)


def test_covariate_shift_is_flagged_and_written(domain_files, tmp_path):
    out = tmp_path / "rep"
    rep = run_diagnose(domain_files["source"], domain_files["covariate"], out=out)
    assert rep.flags["covariate"] and rep.domain.auc > 0.75 and rep.mmd.p_value < 0.01
    assert not rep.flags["label"] and not rep.flags["concept"]
    assert rep.verdict.startswith(("Moderate covariate shift", "Strong covariate shift"))
    assert sorted(p.name for p in out.iterdir()) == ["class_drop.png", "mmd.png", "priors.png", "projection.png",
                                                     "report.md", "roc.png", "shift.json"]
    meta = json.loads((out / "shift.json").read_text())
    assert meta["verdict"] == rep.verdict and meta["covariate"]["domain_classifier"]["auc"] == rep.domain.auc
    assert meta["settings"]["model"] == "raw"
    md = (out / "report.md").read_text()
    assert rep.verdict in md and "![ROC](roc.png)" in md
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary folders left


def test_pure_label_shift_is_told_apart_from_covariate_shift(domain_files):
    rep = run_diagnose(domain_files["source"], domain_files["label"], write=False)
    assert rep.flags["label"] and rep.flags["label_estimates_reliable"]
    assert np.abs(rep.priors.bbse - [0.7, 0.2, 0.1]).max() < 0.06
    assert rep.residual.auc < 0.6 < rep.domain.auc     # re-weighting the classes explains the difference
    assert re.search(r"(moderate|strong) label shift: target priors estimated as c0 0\.[67]", rep.verdict)
    assert "priors account for the difference" in rep.verdict


def test_random_split_control_says_no_shift(domain_files):
    rep = run_diagnose(domain_files["source"], control=True, write=False)
    assert rep.control and abs(rep.domain.auc - 0.5) <= 0.05 and rep.mmd.p_value > 0.05
    assert rep.flags == {"covariate": False, "label": False, "label_estimates_reliable": True, "concept": False}
    assert rep.verdict.startswith("No covariate shift detected")
    same = run_diagnose(domain_files["source"], domain_files["source"], write=False)   # DATA DATA is the control
    assert same.control and same.domain.auc == rep.domain.auc


def test_unlabelled_target_skips_concept_shift(domain_files):
    rep = run_diagnose(domain_files["source"], domain_files["unlabelled"], write=False)
    assert rep.priors is not None and rep.priors.true_target is None and rep.concept is None
    assert rep.flags["concept"] is None and any("no labels" in n for n in rep.notes)


def test_target_labels_option(domain_files):
    rep = run_diagnose(domain_files["source"], domain_files["covariate"], target_labels=5, write=False)
    assert rep.concept.n_per_class == 5
    assert run_diagnose(domain_files["source"], domain_files["covariate"], target_labels=0, write=False).concept is None


# ============================================================================ CLI, folders, errors
def test_cli_control_on_a_builtin(tmp_path, capsys):
    out = tmp_path / "ctl"
    assert main(["shift", "digits", "--control", "--permutations", "200", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("No covariate shift detected")
    meta = json.loads((out / "shift.json").read_text())
    assert meta["control"] and meta["settings"]["command"].startswith("exapt shift digits --control")
    # an existing report is kept unless --overwrite
    assert main(["shift", "digits", "--control", "--out", str(out)]) == 2
    assert "already holds a shift report" in capsys.readouterr().err
    assert main(["shift", "digits", "digits", "--permutations", "50", "--out", str(out), "--overwrite", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["settings"]["permutations"] == 50


@pytest.mark.parametrize("argv, message", [
    (["shift", "{source}", "{other}"], "are not classes of"),
    (["shift", "{source}", "{covariate}", "--control"], "--control splits SOURCE"),
    (["shift", "{source}"], "needs SOURCE and TARGET"),
    (["shift", "{source}", "{covariate}", "--model", "mlp"], "random weights"),
    (["shift", "{source}", "{covariate}", "--max-per-domain", "3"], "at least 10"),
    (["shift", "digits", "tweets-apple"], "same kind of input"),
    (["shift", "{source}", "{covariate}", "--target-labels", "-1"], "--target-labels"),
])
def test_user_errors_are_one_line_and_leave_nothing(domain_files, tmp_path, capsys, argv, message):
    other = write_csv(tmp_path / "other.csv", np.zeros((20, 3)), np.array([7] * 10 + [8] * 10))
    names = {"source": domain_files["source"], "covariate": domain_files["covariate"], "other": other}
    argv = [a.format(**names) for a in argv]
    if argv[1] == str(domain_files["source"]):
        argv += ["--features", FEATS]
    out = tmp_path / "never"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not out.exists()


def test_refuses_a_foreign_folder(domain_files, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ExaptError, match="not an `exapt shift` report"):
        run_diagnose(domain_files["source"], domain_files["covariate"], out=foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_a_failure_while_writing_leaves_nothing(domain_files, tmp_path, monkeypatch):
    from exapt.shift import report

    def broken(rep):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "figures", broken)
    with pytest.raises(RuntimeError):
        run_diagnose(domain_files["source"], domain_files["covariate"], out=tmp_path / "rep")
    assert list(tmp_path.iterdir()) == []


# ============================================================================ text: tiny BERT, a run, MiniLM
def test_text_domains_with_a_tiny_encoder_and_a_run(tiny_bert, tweets_small, tweets_test_small, probe_run):
    rep = diagnose(str(tweets_small), str(tweets_test_small), str(tiny_bert), permutations=100, write=False,
                   progress=False, log=quiet)
    assert rep.priors is not None and rep.concept is not None and "probe" in rep.source_model
    by_run = diagnose(str(tweets_small), str(tweets_test_small), run=str(probe_run),   # features: the run's model
                      permutations=100, write=False, progress=False, log=quiet)
    assert by_run.model == str(tiny_bert)
    assert "run" in by_run.source_model and "test split" in by_run.source_model
    assert by_run.domain.auc == rep.domain.auc           # the features do not depend on the judge
    assert np.isclose(by_run.priors.bbse.sum(), 1)


@pytest.mark.slow
def test_minilm_flags_airline_to_self_driving(tmp_path):
    rep = diagnose("tweets-airline", "tweets-self-driving", max_per_domain=300, permutations=200,
                   out=tmp_path / "rep", progress=False, log=quiet)
    assert rep.flags["covariate"] and rep.domain.auc > 0.9 and rep.mmd.p_value < 0.01
    # self-driving tweets are mostly neutral: both estimators move the neutral prior up from the source's
    neutral = rep.priors.classes.index("neutral")
    assert rep.priors.true_target[neutral] > 0.8
    assert rep.priors.bbse[neutral] > rep.priors.source[neutral] and rep.priors.em[neutral] > rep.priors.source[neutral]


def test_verdict_thresholds():
    from exapt.shift import report
    from exapt.estimators.covariate import DomainClassifierResult, MMDResult

    def dc(auc, lo, hi):
        return DomainClassifierResult(auc, (lo, hi), 0.95, 5, 100, 100, np.zeros(0), np.zeros(0))

    def mmd(p):
        return MMDResult(0.01, p, 1.0, 999, 100, 100, np.zeros(999))

    flags, text = report.verdict(dc(0.97, 0.96, 0.98), mmd(0.001), None, None)
    assert flags["covariate"] and text.startswith("Strong covariate shift (AUC 0.97 [0.96, 0.98], MMD p <= 0.001)")
    flags, text = report.verdict(dc(0.53, 0.515, 0.545), mmd(0.01), None, None)   # detectable, too small to matter
    assert not flags["covariate"] and text.startswith("A negligible covariate difference")
    flags, text = report.verdict(dc(0.7, 0.65, 0.75), mmd(0.2), None, None)
    assert not flags["covariate"] and "found by the domain classifier only" in text
    assert report.verdict(dc(0.5, 0.48, 0.52), mmd(0.6), None, None)[1].startswith("No covariate shift detected")
