"""Task: label encoding/decoding, losses' targets, metrics against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from exapt.errors import ExaptError
from exapt.tasks import Task, infer_task_kind


def one_line_error(fn, *parts):
    with pytest.raises(ExaptError) as ei:
        fn()
    msg = str(ei.value)
    assert "\n" not in msg
    for p in parts:
        assert p in msg, f"{p!r} not in {msg!r}"
    return msg


# ------------------------------------------------------------------ infer_task_kind
@pytest.mark.parametrize("labels, kind", [
    (["negative", "positive", "neutral"], "classification"),
    (["1", "2", "3", "2", "1"], "classification"),                 # star ratings are classes
    (["0", "1"] * 50, "classification"),
    ([str(i) for i in range(20)] * 2, "classification"),           # 20 distinct integers: still classes
    ([str(i) for i in range(21)], "regression"),                   # 21 distinct integers in 21 rows
    ([str(i) for i in range(30)] * 20, "classification"),          # 30 distinct <= 5% of 600 rows
    (["0.5", "1.25", "3.0"], "regression"),                        # non-integers
    (["1.0", "2.0", "1.0"], "classification"),                     # integral floats, few values
    (["a|b", "b"], "multilabel"),
    (["a", "b|c"], "multilabel"),
    ([["a", "b"], ["c"]], "multilabel"),                           # list cells (JSON/Parquet)
    (["x", ["y"]], "multilabel"),
])
def test_infer_task_kind(labels, kind):
    assert infer_task_kind(labels) == kind


# ------------------------------------------------------------------ classification
def test_classification_encode_decode_round_trip():
    t = Task.from_labels("auto", ["pos", "neg", "neu", "neg"])
    assert (t.kind, t.classes, t.n_outputs) == ("classification", ["neg", "neu", "pos"], 3)
    y = t.encode(["neu", "pos", "neg"])
    assert y.dtype == torch.long and y.tolist() == [1, 2, 0]
    logits = torch.tensor([[0.0, 3.0, 1.0], [0.0, 0.0, 5.0], [9.0, 0.0, 0.0]])
    assert t.decode(logits) == ["neu", "pos", "neg"]
    p = t.probabilities(logits)
    assert p.shape == (3, 3) and np.allclose(p.sum(1), 1)
    assert p[0, 1] == pytest.approx(math.exp(3) / (1 + math.exp(3) + math.exp(1)), rel=1e-6)
    assert t.make_head(32).out_features == 3


def test_numeric_classes_sort_naturally():
    t = Task.from_labels("classification", ["10", "2", "1", "2"])
    assert t.classes == ["1", "2", "10"]
    assert t.encode(["10", "1"]).tolist() == [2, 0]


def test_unknown_label_names_row_label_and_source():
    t = Task.from_labels("classification", ["a", "b"])
    one_line_error(lambda: t.encode(["a", "b", "c"], rows=np.array([4, 9, 12]), source="test.csv"),
                   "test.csv", "row 12", "'c'", "never seen in training", "known: a, b")
    # without row numbers the row is the 1-based position
    one_line_error(lambda: t.encode(["zzz"]), "row 1", "'zzz'")


def test_single_class_is_an_error():
    one_line_error(lambda: Task.from_labels("auto", ["spam"] * 5, "mail.csv"), "mail.csv", "single class", "spam")
    one_line_error(lambda: Task.from_labels("multilabel", ["a", "a|a"], "m.csv"), "m.csv", "single class")


def test_unknown_task_kind():
    one_line_error(lambda: Task.from_labels("ranking", ["a", "b"]), "--task", "ranking")


def test_classification_metrics_by_hand():
    t = Task.from_labels("classification", ["a", "b", "c"])
    #          truth: a  a  b  b  c  c ; predicted: a  b  b  b  a  c
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = torch.tensor([[3., 0, 0], [0, 2, 1], [0, 3, 0], [1, 2, 0], [2, 1, 0], [0, 0, 4]])
    m = t.metrics(logits, y)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per class: a P=1/2 R=1/2 F=1/2; b P=2/3 R=1 F=0.8; c P=1 R=1/2 F=2/3
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    probs = torch.softmax(logits, -1).numpy()
    assert m["auroc"] == pytest.approx(roc_auc_score(y.numpy(), probs, multi_class="ovr"))
    # the loss is cross-entropy on those logits
    assert t.loss(logits, y).item() == pytest.approx(-np.log(probs[np.arange(6), y.numpy()]).mean(), rel=1e-6)


def test_binary_auroc_by_hand_and_missing_class():
    t = Task.from_labels("classification", ["no", "yes"])
    y = torch.tensor([0, 0, 1, 1])
    logits = torch.tensor([[0., 1.0], [0., 3.0], [0., 2.0], [0., 4.0]])  # scores 1,3 | 2,4
    m = t.metrics(logits, y)
    assert m["accuracy"] == 0.5
    assert m["auroc"] == pytest.approx(3 / 4)  # pairs (pos>neg): 2>1, 4>1, 4>3 of 4
    # a class missing from the truth: no AUROC, and macro-F1 still counts every class
    m = Task.from_labels("classification", ["a", "b", "c"]).metrics(torch.eye(3)[[0, 0]], torch.tensor([0, 0]))
    assert "auroc" not in m and m["accuracy"] == 1.0
    assert m["macro_f1"] == pytest.approx(1 / 3)


# ------------------------------------------------------------------ multilabel
def test_multilabel_pipe_strings_and_list_cells():
    t = Task.from_labels("auto", ["sports|news", "news", ["tech", "news"], " tech | sports "])
    assert (t.kind, t.classes) == ("multilabel", ["news", "sports", "tech"])
    y = t.encode(["news|tech", ["sports"], "sports | news | tech"])
    assert y.dtype == torch.float32
    assert y.tolist() == [[1, 0, 1], [0, 1, 0], [1, 1, 1]]
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, -3.0, -3.0], [-1.0, 4.0, 0.0]])
    assert t.decode(logits) == ["news|tech", "", "sports|tech"]  # sigmoid(0) = 0.5 counts
    one_line_error(lambda: t.encode(["news|cooking"], rows=[7], source="x.jsonl"), "x.jsonl", "row 7", "'cooking'")


def test_multilabel_metrics_by_hand():
    t = Task("multilabel", ["a", "b", "c"])
    y = torch.tensor([[1., 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])  # c never present
    logits = torch.tensor([[2., -2, 1], [3, -1, -5], [-1, 1, -5], [-2, -2, -5]])
    # predictions: [1,0,1] [1,0,0] [0,1,0] [0,0,0]  -> TP 3, FP 1, FN 1
    m = t.metrics(logits, y)
    assert m["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    # per label F1: a 1.0, b 2*1/(2+0+1)=2/3, c 0 (one FP, no positives)
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    probs = torch.sigmoid(logits).numpy()
    want = (roc_auc_score(y[:, 0], probs[:, 0]) + roc_auc_score(y[:, 1], probs[:, 1])) / 2  # c skipped
    assert m["auroc"] == pytest.approx(want)
    assert t.primary_metric == "micro_f1" and t.higher_is_better


# ------------------------------------------------------------------ regression
def test_regression_standardises_and_restores_units():
    labels = ["10", "20", "30", "40"]
    t = Task.from_labels("auto", labels)
    assert t.kind == "classification"                               # 4 distinct integers: classes by the rule...
    t = Task.from_labels("regression", labels)                     # ...so ask for regression
    assert t.target_mean == 25.0 and t.target_std == pytest.approx(math.sqrt(125))
    z = t.encode(labels)
    assert z.dtype == torch.float32 and z.mean().item() == pytest.approx(0, abs=1e-6)
    assert z.tolist() == pytest.approx([(v - 25) / math.sqrt(125) for v in (10, 20, 30, 40)])
    assert t.decode(z.unsqueeze(-1)) == pytest.approx([10.0, 20.0, 30.0, 40.0])
    assert t.n_outputs == 1 and t.primary_metric == "rmse" and not t.higher_is_better
    assert Task.from_json(t.to_json()) == t


def test_regression_metrics_by_hand():
    t = Task("regression", [], target_mean=10.0, target_std=2.0)
    truth = np.array([8.0, 10.0, 12.0, 14.0])
    pred = np.array([9.0, 10.0, 11.0, 16.0])                      # errors -1 0 1 -2 ... signs irrelevant
    m = t.metrics(torch.tensor((pred - 10) / 2).unsqueeze(-1).float(), torch.tensor((truth - 10) / 2).float())
    err = pred - truth                                             # 1, 0, -1, 2
    assert m["rmse"] == pytest.approx(math.sqrt((1 + 0 + 1 + 4) / 4), rel=1e-6)
    assert m["mae"] == pytest.approx(1.0, rel=1e-6)
    ss_tot = ((truth - truth.mean()) ** 2).sum()                  # 9+1+1+9 = 20
    assert m["r2"] == pytest.approx(1 - (err ** 2).sum() / ss_tot, rel=1e-6)  # 1 - 6/20 = 0.7
    assert m["r2"] == pytest.approx(0.7, rel=1e-6)


def test_regression_bad_label_names_row():
    one_line_error(lambda: Task.from_labels("regression", ["1.5", "2", "abc"], "y.csv"), "y.csv", "row 3", "'abc'")
    t = Task.from_labels("regression", ["1", "2"])
    one_line_error(lambda: t.encode(["1", "inf"], rows=[5, 6], source="z.csv"), "z.csv", "row 6", "'inf'")


def test_constant_regression_target_does_not_divide_by_zero():
    t = Task.from_labels("regression", ["3.5", "3.5", "3.5"])
    assert t.target_std == 1.0
    assert t.encode(["3.5", "4.5"]).tolist() == [0.0, 1.0]
