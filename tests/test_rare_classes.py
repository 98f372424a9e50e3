"""Rare classes: class-weighted and focal losses, decision rules and calibration tuned on
validation, per-class scores (docs/rare-classes.md)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_fscore_support
from sklearn.preprocessing import StandardScaler

import exapt
from exapt.config import ClassesConfig, FitConfig
from exapt.data import fit_splits, load_data
from exapt.decision import (
    DecisionRule,
    expected_calibration_error,
    fit_rule,
    fit_temperature,
    per_class_scores,
    reach_recall,
    tune_offsets,
    weighted_macro_f1,
)
from exapt.errors import ExaptError
from exapt.run import Run
from exapt.run_folder import RunFolder
from exapt.tasks import Task, focal_loss, imbalanced, ranking_metric
from exapt.train.probe import fit_linear_head


def quiet(*_args, **_kwargs) -> None:
    pass


# -- the losses ---------------------------------------------------------------------------
def test_focal_loss_is_the_papers_formula():
    """FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t) (Lin et al. 2017, eq. 5), averaged over
    rows, computed here by hand in float64."""
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(50, 4, generator=g, dtype=torch.float64), torch.randint(0, 4, (50,), generator=g)
    alpha = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    for gamma in (0.0, 0.5, 2.0, 5.0):
        want = 0.0
        for row, t in zip(logits.numpy(), targets.numpy()):
            p = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
            want += -alpha[t].item() * (1 - p[t]) ** gamma * math.log(p[t])
        assert focal_loss(logits, targets, alpha, gamma).item() == pytest.approx(want / 50, rel=1e-12)
    # gamma 0 without weights is cross-entropy; with weights, the per-row weighted mean
    assert focal_loss(logits, targets).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, targets).item(), rel=1e-12)
    per_row = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    assert focal_loss(logits, targets, alpha).item() == pytest.approx((alpha[targets] * per_row).mean().item())


def test_default_loss_is_plain_cross_entropy_to_the_last_bit():
    task = Task.from_labels("classification", ["a", "b", "c"] * 4)
    task.set_loss(None, "cross-entropy", torch.tensor([0, 1, 2] * 4))
    assert task.class_weights is None and task.focal_gamma is None
    logits, targets = torch.randn(12, 3), torch.tensor([0, 1, 2] * 4)
    assert torch.equal(task.loss(logits, targets), torch.nn.functional.cross_entropy(logits, targets))


def test_balanced_weights_are_scikit_learns_and_named_weights_default_to_one():
    task = Task.from_labels("classification", ["a", "b", "c"])
    targets = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    task.set_loss("balanced", "focal:1.5", targets)
    assert task.class_weights.tolist() == pytest.approx([10 / 18, 10 / 9, 10 / 3])
    assert task.focal_gamma == 1.5
    task.set_loss("c=3,a=0.5", "cross-entropy", targets)
    assert task.class_weights.tolist() == [0.5, 1.0, 3.0] and task.focal_gamma is None
    with pytest.raises(ExaptError, match="unknown class 'd'"):
        task.set_loss("d=2", "cross-entropy", targets)
    with pytest.raises(ExaptError, match="classification"):
        Task.from_labels("regression", ["1.5", "2.5", "3.1"]).set_loss("balanced", "cross-entropy", targets)


def test_probe_with_balanced_weights_matches_logistic_regression():
    """The probe's objective with class weights is scikit-learn's class_weight='balanced'."""
    x, y = load_digits(return_X_y=True)
    keep = np.concatenate([np.where(y == c)[0][: 150 if c < 2 else 15] for c in range(4)])  # 2 rare classes
    x, y = StandardScaler().fit_transform(x[keep]), y[keep]
    labels = [str(v) for v in y]
    task = Task.from_labels("classification", labels)
    targets = task.encode(labels)
    task.set_loss("balanced", "cross-entropy", targets)
    head = torch.nn.Linear(64, 4)
    fit_linear_head(head, torch.tensor(x, dtype=torch.float32), targets, task, C=0.1)
    ref = LogisticRegression(C=0.1, class_weight="balanced", tol=1e-8, max_iter=5000).fit(x, y)
    w = head.weight.detach().double().numpy()
    assert np.linalg.norm(w - ref.coef_) / np.linalg.norm(ref.coef_) < 1e-3
    plain = LogisticRegression(C=0.1, tol=1e-8, max_iter=5000).fit(x, y)
    assert np.linalg.norm(plain.coef_ - ref.coef_) / np.linalg.norm(ref.coef_) > 0.05  # the weights did act


# -- decision rules and calibration ---------------------------------------------------------
def _imbalanced_scores(n=3000, seed=0):
    """Three classes at 80/15/5% whose logits carry a uniform prior (as a model trained on
    a balanced sample does)."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(3, size=n, p=[0.8, 0.15, 0.05])
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[truth]
    return torch.tensor(logits, dtype=torch.float32), truth


def test_temperature_scaling_recovers_an_over_confident_models_temperature():
    rng = np.random.default_rng(1)
    true_logits = rng.normal(size=(4000, 3)) * 2
    p = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    truth = np.array([rng.choice(3, p=row) for row in p])
    over = torch.tensor(true_logits * 3.0)  # three times too confident
    t = fit_temperature(over, truth, np.zeros(3), np.ones(len(truth)))
    assert t == pytest.approx(3.0, rel=0.1)
    raw = torch.softmax(over, -1).numpy()
    fixed = torch.softmax(over / t, -1).numpy()
    assert expected_calibration_error(fixed, truth) < 0.03 < expected_calibration_error(raw, truth)


def test_expected_calibration_error_by_hand():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    truth = np.array([0, 1, 0, 1])
    # bins (15 wide): 0.9 -> accuracy 1/2, gap 0.4 over 2 rows; 0.6 -> gap 0.4; 0.7 -> gap 0.3
    assert expected_calibration_error(probs, truth) == pytest.approx((2 * 0.4 + 0.4 + 0.3) / 4)


def test_offsets_raise_macro_f1_and_target_recall_is_reached():
    logits, truth = _imbalanced_scores()
    scores = logits.double().numpy()
    w = np.ones(len(truth))
    offsets = tune_offsets(scores, truth, w)
    assert weighted_macro_f1(scores, offsets, truth, w) > weighted_macro_f1(scores, np.zeros(3), truth, w) + 0.02
    raised = reach_recall(scores, np.zeros(3), truth, 2, 0.9)
    assert ((scores[truth == 2] + raised).argmax(1) == 2).mean() >= 0.9
    lower = raised.copy()
    lower[2] -= 0.25  # the smallest grid step that reaches it
    assert ((scores[truth == 2] + lower).argmax(1) == 2).mean() < 0.9


def test_rule_from_a_balanced_validation_split_shifts_to_the_datas_frequencies():
    logits, truth = _imbalanced_scores()
    val = np.concatenate([np.where(truth == c)[0][:60] for c in range(3)])  # balanced, like --n-per-class
    counts = np.bincount(truth, minlength=3)
    rule = fit_rule("calibrated", {}, logits[val], truth[val], ["a", "b", "c"], counts, [60, 60, 60])
    assert rule.shift[0] > 0 > rule.shift[2] and rule.offsets == [0.0, 0.0, 0.0]
    assert (rule.decide(logits) == truth).mean() > (logits.argmax(1).numpy() == truth).mean() + 0.05
    again = DecisionRule.from_json(json.loads(json.dumps(rule.to_json())))
    assert np.array_equal(again.decide(logits), rule.decide(logits))


def test_target_recall_alone_moves_only_that_class():
    logits, truth = _imbalanced_scores()
    counts = np.bincount(truth, minlength=3)
    rule = fit_rule("argmax", {"c": 0.9}, logits[:1500], truth[:1500], ["a", "b", "c"], counts, counts)
    assert rule.rule == "target-recall" and rule.offsets[:2] == [0.0, 0.0] and rule.offsets[2] > 0
    rare = truth[:1500] == 2
    assert (rule.decide(logits[:1500])[rare] == 2).mean() >= 0.9


def test_per_class_scores_match_scikit_learn():
    logits, truth = _imbalanced_scores(500)
    pred = logits.argmax(1).numpy()
    mine = per_class_scores(pred, truth, ["a", "b", "c"])
    p, r, f, s = precision_recall_fscore_support(truth, pred, labels=[0, 1, 2], zero_division=0)
    for i, c in enumerate("abc"):
        assert mine[c] == pytest.approx({"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]})


def test_imbalance_rule_switches_the_ranking_metric_to_macro_f1():
    assert imbalanced([4137, 451, 108]) and not imbalanced([100, 100, 60]) and imbalanced([100, 100, 30])
    assert ranking_metric("classification", [4137, 451, 108]) == "macro_f1"
    assert ranking_metric("classification", [50, 50]) == "accuracy" == ranking_metric("classification")
    assert ranking_metric("multilabel", [100, 1]) == "micro_f1"


def test_config_keeps_the_defaults_and_checks_the_specs():
    assert ClassesConfig() == FitConfig().classes and not ClassesConfig().tunes_rule
    cfg = FitConfig.from_options("tweets", class_weight="balanced", loss="focal:2", target_recall="negative=0.8")
    assert cfg.classes.tunes_rule and cfg.classes.target_recall_values() == {"negative": 0.8}
    assert FitConfig.from_dict({"data": {"source": "x.csv"}}).classes == ClassesConfig()  # runs made before it
    for bad in (dict(loss="focal:-0.5"), dict(loss="dice"), dict(class_weight="a=0"), dict(target_recall="a=1.01"),
                dict(decision="threshold")):
        with pytest.raises(ExaptError):
            FitConfig.from_options("tweets", **bad)


# -- on real data ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rule_run(tmp_path_factory, tiny_bert):
    out = tmp_path_factory.mktemp("rare") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXAPT_CACHE", str(tmp_path_factory.getbasetemp() / "exapt-cache"))
        run = exapt.fit("tweets-self-driving", "linear-probe", str(tiny_bert), out=out, progress=False, log=quiet,
                        n_per_class=16, max_test=300, class_weight="balanced", decision="macro-f1",
                        target_recall="negative=0.75")
    return run


def test_the_rule_is_saved_and_applied_by_evaluate_and_predict(rule_run):
    folder = RunFolder(rule_run.path)
    saved = folder.read_decision()
    assert saved["rule"] == "macro-f1" and saved["target_recall"] == {"negative": 0.75}
    m = folder.read_metrics()
    assert m["calibration"]["ece_after"] == m["calibration"]["ece"]
    assert set(m["per_class"]["test"]) == {"negative", "neutral", "positive"}
    assert m["decision"]["test_argmax"] != m["test"]
    loaded = Run.load(rule_run.path)
    assert loaded.decision == rule_run.decision
    cfg = loaded.config
    test = fit_splits(cfg.data, load_data("tweets-self-driving"), "classification")[2]
    evaluated = loaded.evaluate(test)
    assert evaluated["accuracy"] == pytest.approx(m["test"]["accuracy"], abs=1e-9)
    assert evaluated["macro_f1"] == pytest.approx(m["test"]["macro_f1"], abs=1e-9)
    frame = loaded.predict(test)
    logits = loaded.logits(test)
    assert list(frame["prediction"]) == [loaded.task.classes[i] for i in loaded.decision.decide(logits)]
    assert np.allclose(frame[[f"p_{c}" for c in loaded.task.classes]].to_numpy(),
                       torch.softmax(loaded.decision.calibrated(logits), -1).numpy(), atol=1e-6)


def test_a_default_run_has_no_rule_but_reports_every_class(probe_run):
    folder = RunFolder(probe_run)
    assert folder.read_decision() is None and Run.load(probe_run).decision is None
    m = folder.read_metrics()
    assert "decision" not in m and 0 <= m["calibration"]["ece"] <= 1
    assert sum(v["support"] for v in m["per_class"]["test"].values()) == m["n_test"]


def test_gradient_strategies_train_with_the_weighted_focal_loss(tmp_path, tiny_bert, monkeypatch):
    """The loop takes the task's loss: a focal, class-weighted `full` fit trains, and its
    first epoch's loss differs from plain cross-entropy's on the same seed."""
    losses = {}
    for name, options in (("plain", {}), ("focal", dict(class_weight="negative=5", loss="focal:2"))):
        run = exapt.fit("tweets-self-driving", "full", str(tiny_bert), out=tmp_path / name, progress=False, log=quiet,
                        n_per_class=8, max_test=50, epochs=1, **options)
        losses[name] = run.history[0]["train_loss"]
    assert math.isfinite(losses["focal"]) and losses["focal"] != pytest.approx(losses["plain"], rel=1e-3)


def test_compare_ranks_an_imbalanced_task_by_macro_f1_and_shows_each_class(tmp_path, tiny_bert):
    comparison = exapt.compare("tweets-self-driving", strategies="linear-probe", n_per_class="8", seeds=1,
                               model=str(tiny_bert), out=tmp_path / "cmp", max_test=200, tracking=False,
                               progress=False, log=quiet)
    assert comparison.meta["metric"] == "macro_f1" and "imbalanced" in comparison.meta["metric_note"]
    text = (tmp_path / "cmp" / "report.md").read_text()
    assert "ranked by macro-F1, not accuracy" in text
    assert "## Per class at 8 per class" in text and "negative (" in text and "ECE" in text
    row = comparison.results.iloc[0]
    assert 0 <= row["class_negative_recall"] <= 1 and row["class_neutral_support"] > row["class_negative_support"]
