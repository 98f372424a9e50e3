"""`exapt distil` (issue 19): the loss against Hinton et al.'s formula, the student as an
ordinary run, distil.json, students of every kind, and one real MiniLM distillation."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import quiet

import exapt
from exapt.cli import main
from exapt.deploy.distil import DistilSettings, distil, load_teacher, make_student
from exapt.deploy.distil_loss import DistilTask, agreement, distil_loss
from exapt.errors import ExaptError
from exapt.run import Run
from exapt.tasks import Task


# ---------------------------------------------------------------- the loss, by hand
def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def _by_hand(s, t, y, labelled, T, A):
    """A * T^2 * KL(p_t || p_s) + (1 - A) * CE on labelled rows; T^2 * KL alone on the others."""
    rows = []
    for si, ti, yi, li in zip(s, t, y, labelled):
        p, q = _softmax(ti / T), _softmax(si / T)
        kl = float(np.sum(p * (np.log(p) - np.log(q))))
        ce = float(-np.log(_softmax(si)[yi]))
        rows.append(A * T * T * kl + (1 - A) * ce if li else T * T * kl)
    return float(np.mean(rows))


@pytest.mark.parametrize("T,A", [(1.0, 0.5), (2.0, 0.5), (4.0, 0.9), (3.0, 0.0), (2.0, 1.0)])
def test_classification_loss_matches_the_formula(T, A):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(7, 3, generator=g) * 2, torch.randn(7, 3, generator=g) * 3
    y = torch.tensor([0, 2, 1, 1, 0, 2, 1])
    labelled = torch.tensor([True, True, False, True, False, True, True])
    got = float(distil_loss(s, t, y, labelled, "classification", T, A))
    want = _by_hand(s.double().numpy(), t.double().numpy(), y.numpy(), labelled.numpy(), T, A)
    assert got == pytest.approx(want, rel=1e-5)


def test_loss_is_zero_soft_part_when_student_is_teacher_and_gradients_flow():
    t = torch.randn(5, 4)
    s = t.clone().requires_grad_(True)
    labelled = torch.zeros(5, dtype=torch.bool)
    loss = distil_loss(s, t, torch.zeros(5, dtype=torch.long), labelled, "classification", 2.0, 0.5)
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6)
    s2 = (t + torch.randn(5, 4)).requires_grad_(True)
    distil_loss(s2, t, torch.zeros(5, dtype=torch.long), labelled, "classification", 2.0, 0.5).backward()
    assert s2.grad is not None and float(s2.grad.abs().sum()) > 0


def test_multilabel_and_regression_losses_match_their_formulas():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    y = (torch.rand(4, 3, generator=g) > 0.5).float()
    labelled = torch.tensor([True, False, True, True])
    T, A = 2.0, 0.3
    sig = lambda x: 1 / (1 + np.exp(-x))
    want = []
    for si, ti, yi, li in zip(s.double().numpy(), t.double().numpy(), y.numpy(), labelled.numpy()):
        p, q = sig(ti / T), sig(si / T)
        kl = float(np.sum(p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))))
        bce = float(np.mean(-(yi * np.log(sig(si)) + (1 - yi) * np.log(1 - sig(si)))))
        want.append(A * T * T * kl + (1 - A) * bce if li else T * T * kl)
    got = float(distil_loss(s, t, y, labelled, "multilabel", T, A))
    assert got == pytest.approx(float(np.mean(want)), rel=1e-5)
    # regression: A * (s - t)^2 + (1 - A) * (s - y)^2 on labelled rows, (s - t)^2 on the others
    s, t, y = torch.tensor([[1.0], [2.0], [0.5]]), torch.tensor([[0.0], [2.5], [1.0]]), torch.tensor([3.0, 1.0, 0.0])
    labelled = torch.tensor([True, False, True])
    want = np.mean([A * 1.0 + (1 - A) * 4.0, 0.25, A * 0.25 + (1 - A) * 0.25])
    assert float(distil_loss(s, t, y, labelled, "regression", 5.0, A)) == pytest.approx(want, rel=1e-6)


def test_distil_task_reads_rows_by_index_and_scores_labelled_rows_only():
    task = Task("classification", ["a", "b"])
    teacher = torch.tensor([[2.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    labels, labelled = torch.tensor([0, 1, 0]), torch.tensor([True, True, False])
    dt = DistilTask(task, teacher, labels, labelled, 2.0, 0.5)
    student = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    idx = torch.tensor([1, 2])
    assert float(dt.loss(student, idx)) == pytest.approx(
        float(distil_loss(student, teacher[idx], labels[idx], labelled[idx], "classification", 2.0, 0.5)))
    m = dt.metrics(student, idx)
    assert m["accuracy"] == 0.0 and m["agreement"] == 0.5  # row 1 is labelled (wrong); row 2 agrees
    assert dt.primary_metric == "accuracy" and dt.higher_is_better
    assert agreement(Task("regression"), teacher[:, :1], teacher[:, :1]) == pytest.approx(1.0)


# ---------------------------------------------------------------- tiny runs
def test_student_of_own_backbone_starts_from_the_fine_tuned_layers(teacher_run, tiny_bert3):
    teacher = load_teacher(teacher_run)
    cfg, student = make_student(teacher, f"{tiny_bert3}@2", DistilSettings())
    assert cfg.model == f"{tiny_bert3}@2" and cfg.strategy == "full" and len(student.backbone.layers) == 2
    t_state, s_state = teacher.model.state_dict(), student.state_dict()
    name = "backbone.model.encoder.layer.1.attention.self.query.weight"
    assert torch.equal(s_state[name], t_state[name]) and torch.equal(s_state["head.weight"], t_state["head.weight"])
    fresh = exapt.backbones.load_backbone(str(tiny_bert3)).state_dict()["model.encoder.layer.1.attention.self.query.weight"]
    assert not torch.equal(s_state[name], fresh)  # fine-tuned, not the base model's


def test_distil_writes_an_ordinary_run_with_distil_json(teacher_run, tiny_bert3, tweets_small, tmp_path):
    out = tmp_path / "student"
    student = distil(teacher_run, f"{tiny_bert3}@1", DistilSettings(epochs=2, unlabelled=str(tweets_small)),
                     out=out, progress=False, log=quiet)
    loaded = Run.load(out)  # rebuilt from config.yaml alone: one layer
    assert len(loaded.model.backbone.layers) == 1 and loaded.config.model.endswith("@1")
    assert loaded.evaluate(str(tweets_small))["n"] == 48
    table = exapt.data.load_data(str(tweets_small))
    assert torch.allclose(loaded.logits(table), student.logits(table), atol=1e-5)
    record = json.loads((out / "distil.json").read_text())
    assert record["teacher"]["run"] == str(teacher_run) and len(record["teacher"]["weights_sha256"]) == 64
    assert 0 <= record["test"]["agreement"] <= 1 and "accuracy" in record["test"]["teacher"]
    assert record["parameters"]["student"] < record["parameters"]["teacher"]
    assert record["speed"]["teacher"]["examples_per_second"] > 0 and record["loss"]["temperature"] == 2.0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_unlabelled"] == 48 and metrics["distilled_from"] == str(teacher_run)
    assert not list(tmp_path.glob(".*partial"))


def test_other_and_scratch_students_and_refusals(teacher_run, tiny_bert, tmp_path):
    teacher = load_teacher(teacher_run)
    cfg, model = make_student(teacher, str(tiny_bert), DistilSettings())
    assert cfg.model == str(tiny_bert) and cfg.pooling == "mean"
    cfg, model = make_student(teacher, f"scratch:{tiny_bert}@1", DistilSettings())
    assert model.backbone.identity()["scratch"] and len(model.backbone.layers) == 1
    with pytest.raises(ExaptError, match="takes image inputs but the teacher"):
        make_student(teacher, "cnn", DistilSettings())
    with pytest.raises(ExaptError, match="keeps fewer"):
        make_student(teacher, f"{teacher.config.model}@3", DistilSettings())
    with pytest.raises(ExaptError, match="--alpha"):
        distil(teacher_run, "cnn", DistilSettings(alpha=1.5), out=tmp_path / "x")
    assert main(["distil", str(teacher_run), "--student", "efficientnet-lite0", "--out", str(tmp_path / "y")]) == 2
    assert not (tmp_path / "y").exists()


# ---------------------------------------------------------------- the real model
def test_minilm_distils_into_its_bottom_three_layers(tweets_small, tweets_test_small, tmp_path):
    teacher = exapt.fit(str(tweets_small), "linear-probe", "minilm-l6", out=tmp_path / "teacher", max_length=32,
                        test=str(tweets_test_small), val_fraction=0, progress=False, log=quiet)
    code = main(["distil", str(teacher.path), "--student", "minilm-l6@3", "--epochs", "1", "--out",
                 str(tmp_path / "student"), "--quiet"])
    assert code == 0
    student = Run.load(tmp_path / "student")
    assert student.model.backbone.describe().startswith("minilm-l6@3 (BertModel, 3 layers")
    record = json.loads((tmp_path / "student" / "distil.json").read_text())
    assert record["parameters"]["ratio"] < 0.8 and record["test"]["n"] == 60
    # started from the teacher's layers and head: it agrees with the teacher far above chance
    assert record["test"]["agreement"] > 0.5
    assert math.isfinite(record["test"]["student"]["accuracy"])


def test_regression_run_on_features_distils_into_a_smaller_mlp(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=80)
    data = tmp_path / "reg.csv"
    data.write_text("f1,f2,f3,y\n" + "".join(f"{a:.4f},{b:.4f},{c:.4f},{t:.4f}\n" for (a, b, c), t in zip(x, y)))
    teacher = exapt.fit(str(data), "full", "mlp:32,32", features="f1,f2,f3", label="y", task="regression", epochs=3,
                        out=tmp_path / "teacher", progress=False, log=quiet)
    student = distil(teacher.path, "mlp:8", DistilSettings(epochs=3, alpha=1.0), out=tmp_path / "student",
                     progress=False, log=quiet)
    loaded = Run.load(tmp_path / "student")
    assert loaded.task.kind == "regression" and loaded.config.model == "mlp:8"
    record = json.loads((tmp_path / "student" / "distil.json").read_text())
    assert record["test"]["primary_metric"] == "rmse" and record["parameters"]["ratio"] < 0.5
    assert "agreement" in record["test"] and student.evaluate(str(data))["n"] == 80
