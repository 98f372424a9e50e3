"""`fit --init RUN`: starting from a source run, keeping its head, measuring forgetting.

On the tiny BERT: the source head is the source run's own; "source before" is exactly the
source run's own test score (same split, same encoder); the new run loads from its own
folder even with the source run gone (also when frozen blocks or LoRA leave the source's
tensors untouched); refusals come before any folder; a resumed fit with penalties ends
where an uninterrupted one does; compare gains the forgetting column and figure.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import exapt
from exapt.cli import main
from exapt.errors import ExaptError
from exapt.files import load_tensors

from conftest import TWEETS, interrupt_at

TARGET = TWEETS / "train_n16_s1.csv"


def quiet(*_a, **_k):
    pass


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, tiny_bert, tweets_small):
    out = tmp_path_factory.mktemp("source") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXAPT_CACHE", str(tmp_path_factory.getbasetemp() / "exapt-cache"))
        exapt.fit(str(tweets_small), "full", str(tiny_bert), out=out, epochs=2, max_length=32, lr=1e-3,
                  progress=False, log=quiet)
    return out


def fit_from(source, out, strategy="full", **kw):
    options = dict(epochs=2, max_length=32, lr=1e-3, progress=False, log=quiet)
    options.update(kw)
    return exapt.fit(str(TARGET), strategy, init=str(source), out=out, **options)


def test_source_head_is_kept_and_source_before_is_the_source_runs_own_test_score(tmp_path, source_run):
    src = exapt.load_run(source_run)
    run = fit_from(source_run, tmp_path / "t")
    m = run.metrics
    assert torch.equal(run.model.source_head.weight, src.model.head.weight)
    assert torch.equal(run.model.source_head.bias, src.model.head.bias)
    assert m["source"]["n"] == src.metrics["n_test"]
    for k, v in src.metrics["test"].items():  # same held-out split, same encoder, same head
        assert m["source"]["before"][k] == pytest.approx(v, abs=1e-6)
    assert m["source"]["forgetting"] == pytest.approx(m["source"]["before"]["accuracy"] - m["source"]["after"]["accuracy"])
    assert m["init"] == str(source_run)
    labels = json.loads((run.path / "labels.json").read_text())
    assert labels["source"]["classes"] == src.task.classes and len(labels["source"]["weights_sha256"]) == 64
    cfg = yaml.safe_load((run.path / "config.yaml").read_text())
    assert cfg["model"] == src.config.model and cfg["init"] == str(source_run)  # --model taken from the run
    assert (run.path / "start.safetensors").exists()


@pytest.mark.parametrize("strategy", ["full", "freeze:2", "lora"])
def test_a_run_started_from_another_loads_from_its_own_folder(tmp_path, source_run, tweets_test_small, strategy):
    source = tmp_path / "source"
    shutil.copytree(source_run, source)
    run = fit_from(source, tmp_path / "t", strategy)
    expected = run.predict(str(tweets_test_small))
    src_weights = load_tensors(source / "weights.safetensors")[0]
    shutil.rmtree(source)  # the new run must not need it
    loaded = exapt.load_run(tmp_path / "t")
    pd.testing.assert_frame_equal(loaded.predict(str(tweets_test_small)), expected)
    # blocks this strategy never trained still carry the source run's values, not the base model's
    emb = "backbone.model.embeddings.word_embeddings.weight"
    state = loaded.model.state_dict()
    name = next(n for n in state if n.endswith("embeddings.word_embeddings.weight"))
    if strategy != "full":
        assert torch.equal(state[name], src_weights[emb])
    assert torch.equal(loaded.model.source_head.weight, src_weights["head.weight"])


def test_linear_probe_from_a_run_forgets_nothing(tmp_path, source_run):
    run = fit_from(source_run, tmp_path / "p", "linear-probe")
    s = run.metrics["source"]
    assert s["before"] == s["after"] and s["forgetting"] == 0


def test_refusals_come_before_any_folder(tmp_path, source_run, tiny_bert, tweets_small, capsys):
    def fails(args, message):
        out = tmp_path / "out"
        code = main(["fit", str(TARGET), "--out", str(out), "--quiet", *args])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, err
        assert not out.exists()

    fails(["--init", str(tmp_path / "nowhere")], "not a run folder")
    half = tmp_path / "half"
    shutil.copytree(source_run, half)
    (half / "metrics.json").unlink()
    fails(["--init", str(half)], "not a complete run")
    fails(["--init", str(source_run), "--model", "minilm-l6"], "drop --model")
    fails(["--init", str(source_run), "--strategy", "scratch"], "starts from random weights")
    fails(["--source-data", str(tweets_small), "--model", str(tiny_bert)], "--source-data needs --init RUN")
    lora = tmp_path / "lora"
    exapt.fit(str(tweets_small), "lora", str(tiny_bert), out=lora, epochs=1, max_length=32, progress=False, log=quiet)
    fails(["--init", str(lora), "--strategy", "full"], "exapt merge")


def test_resume_with_penalties_ends_where_an_uninterrupted_fit_does(tmp_path, source_run, monkeypatch, capsys):
    args = ["fit", str(TARGET), "--init", str(source_run), "--strategy", "full", "--epochs", "3", "--max-length", "32",
            "--lr", "1e-3", "--penalty", "source-head:0.5", "--penalty", "lwf", "--penalty", "ewc:weight=100,samples=4",
            "--quiet"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    interrupt_at(monkeypatch, "full", 2)
    assert main([*args, "--out", str(tmp_path / "cut")]) == 130
    monkeypatch.undo()
    assert main(["fit", "--resume", str(tmp_path / "cut"), "--quiet"]) == 0
    a = load_tensors(tmp_path / "whole" / "weights.safetensors")[0]
    b = load_tensors(tmp_path / "cut" / "weights.safetensors")[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("whole", "cut"))
    assert ma["source"] == mb["source"] and ma["test"] == mb["test"]


def test_mlp_from_a_run_keeps_the_source_input_statistics(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    cols = [f"x{i}" for i in range(64)]
    frame = pd.DataFrame(d.data, columns=cols)
    first = frame[d.target < 5].assign(label=d.target[d.target < 5])
    second = frame[d.target >= 5].assign(label=d.target[d.target >= 5] % 2)
    first.to_csv(tmp_path / "a.csv", index=False)
    second.to_csv(tmp_path / "b.csv", index=False)
    kw = dict(features=",".join(cols), epochs=2, progress=False, log=quiet)
    src = exapt.fit(str(tmp_path / "a.csv"), "full", "mlp:32", out=tmp_path / "src", n_per_class=10, **kw)
    run = exapt.fit(str(tmp_path / "b.csv"), "full", init=str(tmp_path / "src"), out=tmp_path / "t", **kw)
    assert torch.equal(run.model.backbone.mean, src.model.backbone.mean)
    assert run.metrics["source"]["before"]["accuracy"] == pytest.approx(src.metrics["test"]["accuracy"])


def test_compare_from_a_run_has_a_forgetting_column_and_figure(tmp_path, source_run, tweets_test_small):
    out = tmp_path / "cmp"
    result = exapt.compare(str(TARGET), strategies="full,full+l2sp:100", n_per_class="4", seeds=1, epochs=1,
                           max_length=32, out=out, init=str(source_run), tracking=False, progress=False, log=quiet)
    frame = pd.read_csv(out / "results.csv")
    for col in ("forgetting", "source_accuracy_before", "source_accuracy_after"):
        assert frame[col].notna().all(), col
    assert set(frame["strategy"]) == {"full", "full+l2sp:100"}
    assert (out / "runs" / "full_l2sp-100-n4-s0" / "metrics.json").exists()
    cfg = yaml.safe_load((out / "runs" / "full_l2sp-100-n4-s0" / "config.yaml").read_text())
    assert cfg["strategy"] == "full" and cfg["penalties"] == ["l2sp:100"]
    html = (out / "report.html").read_text()
    assert 'id="fig-tradeoff"' in html and "Forgetting" in (out / "report.md").read_text()
    assert np.isclose(frame["source_accuracy_before"], frame["source_accuracy_before"].iloc[0]).all()
    # run again: nothing recomputed (the cells' configs equal the panel's)
    again = exapt.compare(str(TARGET), strategies="full,full+l2sp:100", n_per_class="4", seeds=1, epochs=1,
                          max_length=32, out=out, init=str(source_run), tracking=False, progress=False, log=quiet)
    assert (again.results["cell_seconds"] == result.results["cell_seconds"]).all()
    with pytest.raises(ExaptError, match="needs a source head"):
        exapt.compare(str(TARGET), strategies="full+lwf", n_per_class="4", seeds=1, out=tmp_path / "no",
                      tracking=False, progress=False, log=quiet)
    assert not (tmp_path / "no").exists()


def test_cli_penalties_lists_every_penalty(capsys):
    assert main(["penalties"]) == 0
    out = capsys.readouterr().out
    for name in ("l2sp", "ewc", "source-head", "lwf", "hierarchy"):
        assert name in out


@pytest.mark.slow
def test_real_minilm_from_an_airline_probe_with_ewc(tmp_path, tweets_test_small):
    """The real MiniLM and real tweets, lean (32 tokens, 16 per class, 1 epoch, few test rows)."""
    src = exapt.fit("tweets-airline", "linear-probe", "minilm-l6", n_per_class=16, max_length=32, max_test=60,
                    out=tmp_path / "airline", progress=False, log=quiet)
    run = exapt.fit("tweets-apple", "full", init=str(src.path), penalties=["ewc:weight=1e4,samples=6"],
                    n_per_class=16, max_length=32, max_test=60, epochs=1, out=tmp_path / "apple",
                    progress=False, log=quiet)
    s = run.metrics["source"]
    assert s["n"] == 60 and s["before"]["accuracy"] == pytest.approx(src.metrics["test"]["accuracy"], abs=1e-6)
    assert s["before"]["accuracy"] > 0.45  # the airline probe works (chance: 0.33)
    assert run.metrics["model"] == "minilm-l6" and (run.path / "fisher.safetensors").exists()
    fisher = load_tensors(run.path / "fisher.safetensors")[0]
    assert sum(float(f.sum()) for f in fisher.values()) > 0
