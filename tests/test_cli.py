"""The `exapt` command end to end on the tiny model: fit -> evaluate -> predict, the run
folder it leaves, the listing commands, resume, and a numeric-features run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import exapt
from exapt.cli import main
from exapt.registry import STRATEGIES
from exapt.strategies import parse_strategy

from conftest import interrupt_at

CLASSES = ["negative", "neutral", "positive"]


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.out + cap.err
    return code, cap.out, cap.err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, tiny_bert, tweets_small, tweets_test_small) -> Path:
    """`exapt fit` with a separate --test file, a --set override and 2 epochs of `full`."""
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main(["fit", str(tweets_small), "--model", str(tiny_bert), "--strategy", "full", "--epochs", "2",
                 "--test", str(tweets_test_small), "--set", "train.head_lr=0.01", "--set", "train.warmup=0", "--out", str(out), "--quiet"])
    assert code == 0
    return out


# ------------------------------------------------------------------- fit: the run folder
def test_run_folder_contents(cli_run, tiny_bert):
    names = {p.name for p in cli_run.iterdir()}
    assert {"config.yaml", "labels.json", "metrics.json", "history.jsonl", "weights.safetensors"} <= names
    assert not any(n.endswith(".tmp") for n in names)
    assert "checkpoint.safetensors" not in names  # optimiser state is gone once complete

    cfg = yaml.safe_load((cli_run / "config.yaml").read_text())
    assert cfg["train"]["head_lr"] == 0.01          # the --set overrides landed
    assert cfg["train"]["warmup"] == 0
    assert cfg["train"]["epochs"] == 2 and cfg["strategy"] == "full" and cfg["model"] == str(tiny_bert)
    assert json.loads((cli_run / "labels.json").read_text()) == {"task": "classification", "classes": CLASSES}

    history = [json.loads(x) for x in (cli_run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(np.isfinite(h["train_loss"]) and 0 < h["train_loss"] < 5 for h in history)
    assert history[-1]["lr"] == 0.0                # linear decay ends at zero
    # no warm-up (--set), 3 steps per epoch of 6: the encoder lr (full's 5e-5) is halfway down after epoch 1
    assert history[0]["lr"] == pytest.approx(5e-5 * 0.5, rel=1e-6)

    m = json.loads((cli_run / "metrics.json").read_text())
    total = sum(p.numel() for p in exapt.load_run(cli_run).model.parameters())
    assert m["total_parameters"] == total == 1_010_403  # (30522 + 512 + 2)x32 embeddings + 2 layers + 3-way head
    assert m["trainable_parameters"] == total         # full: everything trains
    assert (m["n_train"], m["n_val"], m["n_test"]) == (38, 10, 60)  # 48 tweets, 20% val; --test file
    assert m["epochs_run"] == 2 and m["strategy"] == "full"
    assert set(m["test"]) == {"accuracy", "macro_f1", "auroc"} and 0 <= m["test"]["accuracy"] <= 1
    assert set(m["val"]) == {"accuracy", "macro_f1", "auroc", "loss"}


def test_linear_probe_counts_only_the_head(probe_run):
    m = json.loads((probe_run / "metrics.json").read_text())
    assert m["trainable_parameters"] == 32 * 3 + 3
    assert m["total_parameters"] == 1_010_403
    assert m["epochs_run"] == 0 and m["probe_iterations"] > 0


# ------------------------------------------------------------------- evaluate / predict
def test_evaluate_json(cli_run, tweets_test_small, capsys):
    code, out, err = cli(capsys, "evaluate", cli_run, tweets_test_small, "--json")
    assert code == 0 and err == ""
    metrics = json.loads(out)
    assert metrics["n"] == 60
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["macro_f1"] <= 1 and 0 <= metrics["auroc"] <= 1
    # the saved run reproduces the test metrics that fit reported on the same file
    fitted = json.loads((cli_run / "metrics.json").read_text())["test"]
    assert {k: metrics[k] for k in fitted} == pytest.approx(fitted, abs=1e-6)
    # and the plain output shows the same numbers
    code, out, _ = cli(capsys, "evaluate", cli_run, tweets_test_small)
    assert code == 0
    table = dict(line.split() for line in out.strip().splitlines())
    assert float(table["accuracy"]) == pytest.approx(metrics["accuracy"], abs=1e-4)
    assert table["n"] == "60"


def test_predict_csv(cli_run, tweets_test_small, tmp_path, capsys):
    preds = tmp_path / "preds.csv"
    code, out, _ = cli(capsys, "predict", cli_run, tweets_test_small, "-o", preds)
    assert code == 0 and f"60 predictions -> {preds}" in out
    df = pd.read_csv(preds, keep_default_na=False)
    assert list(df.columns) == ["row", "text", "prediction", "p_negative", "p_neutral", "p_positive"]
    assert len(df) == 60 and df["row"].tolist() == list(range(1, 61))
    assert df["text"].tolist() == pd.read_csv(tweets_test_small)["text"].tolist()
    p = df[["p_negative", "p_neutral", "p_positive"]].to_numpy()
    assert ((p >= 0) & (p <= 1)).all()
    assert np.abs(p.sum(1) - 1).max() < 1e-5
    assert df["prediction"].tolist() == [CLASSES[i] for i in p.argmax(1)]
    # the same numbers as the Python API
    api = exapt.load_run(cli_run).predict(str(tweets_test_small))
    assert np.abs(api[["p_negative", "p_neutral", "p_positive"]].to_numpy() - p).max() < 1e-6
    # accuracy from the CSV equals evaluate's
    truth = pd.read_csv(tweets_test_small)["label"].tolist()
    acc = np.mean([a == b for a, b in zip(df["prediction"], truth)])
    assert acc == pytest.approx(exapt.load_run(cli_run).evaluate(str(tweets_test_small))["accuracy"])

    before = preds.read_bytes()
    code, _, _ = cli(capsys, "predict", cli_run, tweets_test_small, "-o", preds, "--overwrite")
    assert code == 0 and preds.read_bytes() == before  # deterministic


def test_predict_unlabelled_file(cli_run, tmp_path, capsys):
    data = tmp_path / "new.csv"
    pd.DataFrame({"text": ["@united lost my bag again", "thanks for the upgrade!", "NA"]}).to_csv(data, index=False)
    code, _, _ = cli(capsys, "predict", cli_run, data, "-o", tmp_path / "p.csv")
    assert code == 0
    df = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert len(df) == 3 and set(df["prediction"]) <= set(CLASSES)
    assert df["text"].tolist()[2] == "NA"  # a tweet that reads NA stays a tweet


# ------------------------------------------------------------------- listing commands
def test_models_lists_minilm(capsys):
    code, out, _ = cli(capsys, "models")
    assert code == 0
    line = next(x for x in out.splitlines() if x.split()[0] == "minilm-l6")
    assert "not installed" not in line and "MiniLM" in line
    assert {x.split()[0] for x in out.splitlines()} >= {"minilm-l6", "mlp[:H1,H2,...]", "PATH", "scratch:NAME"}


def test_strategies_lists_every_registered_name(capsys):
    code, out, _ = cli(capsys, "strategies")
    assert code == 0
    rows = [x.split(None, 1) for x in out.strip().splitlines()]
    assert [r[0] for r in rows] == STRATEGIES.names()
    assert len(STRATEGIES.names()) >= 7
    for name, summary in rows:
        assert summary == type(parse_strategy(name)).summary


def test_console_script_entry_point():
    exe = Path(sys.executable).parent / "exapt"
    assert exe.exists(), f"console script not installed at {exe}"
    res = subprocess.run([str(exe), "strategies"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert [x.split()[0] for x in res.stdout.strip().splitlines()] == STRATEGIES.names()
    bad = subprocess.run([str(exe), "fit", "/nonexistent/data.csv"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.startswith("exapt: error: data file not found: /nonexistent/data.csv")
    assert "Traceback" not in bad.stderr


# ------------------------------------------------------------------- resume / overwrite / default out
def test_resume_of_a_complete_run_is_a_no_op(probe_run, capsys):
    before = snapshot(probe_run)
    code, out, err = cli(capsys, "fit", "--resume", probe_run)
    assert code == 0 and err == ""
    assert "already complete" in out
    assert snapshot(probe_run) == before


def test_ctrl_c_exits_130_then_resume_completes(tiny_bert, tweets_small, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    interrupt_at(monkeypatch, "full", 1)
    code, _, err = cli(capsys, "fit", tweets_small, "--model", tiny_bert, "--strategy", "full", "--epochs", "2",
                       "--out", out, "--quiet")
    assert code == 130
    assert "--resume" in err and err.count("\n") == 1
    assert (out / "checkpoint.safetensors").exists() and not (out / "metrics.json").exists()
    monkeypatch.undo()

    code, _, err = cli(capsys, "fit", "--resume", out, "--quiet")
    assert code == 0, err
    assert [json.loads(x)["epoch"] for x in (out / "history.jsonl").read_text().splitlines()] == [1, 2]
    assert exapt.load_run(out).metrics["epochs_run"] == 2


def test_overwrite_replaces_a_complete_run(probe_run, tiny_bert, tweets_small, tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(probe_run, out)
    (out / "stale.txt").write_text("from the old run")
    code, _, err = cli(capsys, "fit", tweets_small, "--model", tiny_bert, "--strategy", "freeze:1", "--epochs", "1",
                       "--out", out, "--overwrite", "--quiet")
    assert code == 0, err
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "metrics.json").read_text())["strategy"] == "freeze:k=1"


def test_default_out_folder_is_numbered(tiny_bert, tweets_small, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        code, _, err = cli(capsys, "fit", tweets_small, "--model", tiny_bert, "--quiet")
        assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "train_n16_s0-linear-probe-s0", "train_n16_s0-linear-probe-s0-2"]


# ------------------------------------------------------------------- numeric features
@pytest.fixture(scope="module")
def digits_csvs(tmp_path_factory):
    from sklearn.datasets import load_digits

    d = load_digits()
    folder = tmp_path_factory.mktemp("digits")
    cols = [f"px{i}" for i in range(64)]

    def write(name, rows):
        df = pd.DataFrame(d.data[rows].astype(int), columns=cols)
        df["label"] = d.target[rows]
        df.to_csv(folder / name, index=False)
        return folder / name

    return write("train.csv", slice(0, 300)), write("test.csv", slice(1500, 1797)), cols


def test_numeric_features_with_mlp(digits_csvs, tmp_path, capsys):
    train, test, cols = digits_csvs
    out = tmp_path / "digits-run"
    code, _, err = cli(capsys, "fit", train, "--features", ",".join(cols), "--model", "mlp", "--strategy", "full",
                       "--epochs", "3", "--out", out, "--quiet")
    assert code == 0, err
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["data"]["features"] == cols and cfg["data"]["text"] is None
    m = json.loads((out / "metrics.json").read_text())
    assert m["model"] == "mlp:256,256"
    assert m["n_test"] == 60 and m["test"]["accuracy"] >= 0.6  # 10 classes: chance is 0.1; gets ~0.88

    code, stdout, err = cli(capsys, "evaluate", out, test, "--json")
    assert code == 0, err
    held_out = json.loads(stdout)
    assert held_out["n"] == 297 and held_out["accuracy"] >= 0.6

    code, _, err = cli(capsys, "predict", out, test, "-o", tmp_path / "p.csv")
    assert code == 0, err
    p = pd.read_csv(tmp_path / "p.csv")
    assert "text" not in p.columns and len(p) == 297
    assert list(p.columns[-10:]) == [f"p_{i}" for i in range(10)]
    truth = pd.read_csv(test)["label"].to_numpy()
    assert np.mean(p["prediction"].to_numpy() == truth) == pytest.approx(held_out["accuracy"])


# ------------------------------------------------------------------- regression and multi-label runs
@pytest.fixture(scope="module")
def scored_tweets(tmp_path_factory, tweets_small):
    df = pd.read_csv(tweets_small)
    rng = np.random.default_rng(0)
    df["score"] = [f"{v:.3f}" for v in rng.normal(3, 2, len(df))]                  # a regression target
    df["tags"] = [rng.choice(["a", "b", "c", "a|b", "b|c", "a|c"]) for _ in range(len(df))]  # multi-label
    path = tmp_path_factory.mktemp("scored") / "scored.csv"
    df.to_csv(path, index=False)
    return path


def test_regression_run_from_the_cli(scored_tweets, tiny_bert, tmp_path, capsys):
    out = tmp_path / "reg"
    code, _, err = cli(capsys, "fit", scored_tweets, "--label", "score", "--model", tiny_bert, "--strategy", "lp-ft",
                       "--epochs", "1", "--out", out, "--quiet")
    assert code == 0, err
    labels = json.loads((out / "labels.json").read_text())
    assert labels["task"] == "regression" and labels["target_std"] > 0
    code, stdout, _ = cli(capsys, "evaluate", out, scored_tweets, "--json")
    metrics = json.loads(stdout)
    assert set(metrics) == {"rmse", "mae", "r2", "n"} and metrics["n"] == 48
    code, _, _ = cli(capsys, "predict", out, scored_tweets, "-o", tmp_path / "p.csv")
    p = pd.read_csv(tmp_path / "p.csv")
    assert list(p.columns) == ["row", "text", "prediction"]
    err = p["prediction"].to_numpy() - pd.read_csv(scored_tweets)["score"].to_numpy()
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean(err ** 2)), rel=1e-5)
    assert metrics["mae"] == pytest.approx(np.mean(np.abs(err)), rel=1e-5)


def test_multilabel_run_from_the_cli(scored_tweets, tiny_bert, tmp_path, capsys):
    from sklearn.metrics import f1_score

    out = tmp_path / "multi"
    code, _, err = cli(capsys, "fit", scored_tweets, "--label", "tags", "--model", tiny_bert, "--strategy", "full",
                       "--epochs", "1", "--out", out, "--quiet")
    assert code == 0, err
    assert json.loads((out / "labels.json").read_text()) == {"task": "multilabel", "classes": ["a", "b", "c"]}
    code, stdout, _ = cli(capsys, "evaluate", out, scored_tweets, "--json")
    metrics = json.loads(stdout)
    code, _, _ = cli(capsys, "predict", out, scored_tweets, "-o", tmp_path / "p.csv")
    p = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    probs = p[["p_a", "p_b", "p_c"]].to_numpy()
    assert p["prediction"].tolist() == ["|".join(c for c, x in zip("abc", row) if x >= 0.5) for row in probs]
    truth = pd.read_csv(scored_tweets)["tags"].tolist()
    y = np.array([[c in t.split("|") for c in "abc"] for t in truth], dtype=int)
    assert metrics["micro_f1"] == pytest.approx(f1_score(y, (probs >= 0.5).astype(int), average="micro"), abs=1e-6)
