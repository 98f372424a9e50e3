"""`linear-probe:names=R` / `lp-ft:names=R`: the class names join the training split as
text examples, R copies each, and nowhere else."""
from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest

import exapt
from exapt.data import Table
from exapt.data.class_names import NAME_ROW, class_name_table

from conftest import quiet
from test_bad_input import expect_error


def test_the_names_table_holds_each_class_name_labelled_as_itself():
    train = Table(["good day", "awful"], ["positive", "negative"], "text", "x.csv", np.array([2, 3]))
    names = class_name_table(train, ["negative", "positive"], 2, "linear-probe:names=2")
    assert names.inputs == ["negative", "positive", "negative", "positive"] and names.labels == names.inputs
    assert names.rows.tolist() == [NAME_ROW] * 4 and names.kind == "text"
    assert train.inputs == ["good day", "awful"]  # the training split itself is untouched


def test_a_probe_with_names_trains_on_them_and_counts_them_apart(tmp_path, tiny_bert, tweets_small, monkeypatch):
    fit_module = importlib.import_module("exapt.strategies.base")  # where a strategy fits its probe
    seen = []
    real = fit_module.fit_linear_head

    def spy(head, features, targets, task, **kw):
        seen.append((len(features), targets.tolist()))
        return real(head, features, targets, task, **kw)

    monkeypatch.setattr(fit_module, "fit_linear_head", spy)
    plain = exapt.fit(str(tweets_small), "linear-probe", str(tiny_bert), max_length=16, val_fraction=0,
                      out=tmp_path / "plain", progress=False, log=quiet)
    run = exapt.fit(str(tweets_small), "linear-probe:names=2", str(tiny_bert), max_length=16, val_fraction=0,
                    out=tmp_path / "run", progress=False, log=quiet)
    n_train = plain.metrics["n_train"]
    assert "n_class_name_examples" not in plain.metrics and seen[0][0] == n_train
    m = run.metrics
    assert m["n_train"] == n_train and m["n_class_name_examples"] == 6 and m["n_test"] == plain.metrics["n_test"]
    n, targets = seen[1]
    assert n == n_train + 6
    classes = run.task.classes
    assert [classes[t] for t in targets[-6:]] == classes * 2  # the names, labelled as themselves


def test_lp_ft_names_reach_the_probe_but_not_the_fine_tuning_stage(tmp_path, tiny_bert, tweets_small, monkeypatch):
    fit_module = importlib.import_module("exapt.fit")
    probe_module = importlib.import_module("exapt.strategies.base")  # where a strategy fits its probe
    probe_sizes, train_sizes = [], []
    real_probe, real_train = probe_module.fit_linear_head, fit_module.train

    def probe_spy(head, features, *a, **kw):
        probe_sizes.append(len(features))
        return real_probe(head, features, *a, **kw)

    def train_spy(model, strategy, task, train_split, *a, **kw):
        train_sizes.append(len(train_split.items))
        return real_train(model, strategy, task, train_split, *a, **kw)

    monkeypatch.setattr(probe_module, "fit_linear_head", probe_spy)
    monkeypatch.setattr(fit_module, "train", train_spy)
    run = exapt.fit(str(tweets_small), "lp-ft:names=1", str(tiny_bert), epochs=1, max_length=16, val_fraction=0,
                    out=tmp_path / "run", progress=False, log=quiet)
    n_train = run.metrics["n_train"]
    assert probe_sizes == [n_train + 3] and train_sizes == [n_train]


def test_names_refused_for_features_numbers_and_regression(tmp_path, capsys, tiny_bert):
    out = tmp_path / "run"
    expect_error(capsys, ["fit", "digits", "--model", "mlp", "--strategy", "linear-probe:names=1", "--out", out],
                 "names= adds the class names as text examples", "features inputs", out=out)
    numbers = tmp_path / "numbers.csv"
    pd.DataFrame({"text": [f"tweet number {i}" for i in range(30)], "label": [i % 2 for i in range(30)]}).to_csv(
        numbers, index=False)
    expect_error(capsys, ["fit", numbers, "--model", tiny_bert, "--strategy", "lp-ft:names=2", "--out", out],
                 "the class names (0, 1) are numbers", out=out)
    scores = tmp_path / "scores.csv"
    pd.DataFrame({"text": [f"tweet number {i}" for i in range(30)], "label": [i * 0.37 for i in range(30)]}).to_csv(
        scores, index=False)
    expect_error(capsys, ["fit", scores, "--model", tiny_bert, "--strategy", "linear-probe:names=2", "--out", out],
                 "names= needs single-label classification; this task is regression", out=out)
    expect_error(capsys, ["fit", scores, "--model", tiny_bert, "--strategy", "lp-ft:names=-1", "--out", out],
                 "names must be >= 0", out=out)
