"""`exapt interpolate`: WiSE-FT between a run's start and end, checked on the tiny BERT.

alpha = 1 is the run itself; alpha = 0 is where it started (for lp-ft: exactly the linear
probe); in between every parameter is (1 - alpha) start + alpha end; the pick is the best
validation score; source scores at the ends are the run's own "before" and "after".
"""
from __future__ import annotations

import json

import pytest
import torch

import exapt
from exapt.backbones import load_backbone
from exapt.cli import main
from exapt.errors import ExaptError
from exapt.interpolate import interpolate, parse_alphas
from exapt.files import load_tensors

from conftest import TWEETS


def quiet(*_a, **_k):
    pass


@pytest.fixture(scope="module")
def lpft_run(tmp_path_factory, tiny_bert, tweets_small):
    out = tmp_path_factory.mktemp("lpft") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXAPT_CACHE", str(tmp_path_factory.getbasetemp() / "exapt-cache"))
        exapt.fit(str(tweets_small), "lp-ft", str(tiny_bert), out=out, epochs=2, max_length=32, lr=1e-3,
                  progress=False, log=quiet)
    return out


def test_ends_are_the_run_and_its_start(lpft_run, tiny_bert, tweets_small, tmp_path):
    result = interpolate(lpft_run, "0:1:0.5", out=tmp_path / "i", progress=False, log=quiet)
    table = result.table.set_index("alpha")
    run = exapt.load_run(lpft_run)
    for k, v in run.metrics["test"].items():
        assert table.loc[1.0, f"test_{k}"] == pytest.approx(v, abs=1e-6)
    probe = exapt.fit(str(tweets_small), "linear-probe", str(tiny_bert), out=tmp_path / "probe", max_length=32,
                      progress=False, log=quiet)
    for k, v in probe.metrics["test"].items():  # lp-ft starts from exactly this probe
        assert table.loc[0.0, f"test_{k}"] == pytest.approx(v, abs=1e-5)
    assert {"csv", "json", "png"} <= set(result.files) and all(p.exists() for p in result.files.values())


def test_every_parameter_is_the_weighted_mix(lpft_run, tiny_bert, tmp_path):
    interpolate(lpft_run, "0.3", save=tmp_path / "mixed", out=tmp_path / "i", progress=False, log=quiet)
    end = load_tensors(lpft_run / "weights.safetensors")[0]
    mixed = load_tensors(tmp_path / "mixed" / "weights.safetensors")[0]
    base = {f"backbone.{n}": t for n, t in load_backbone(str(tiny_bert), max_length=32).state_dict().items()}
    name = "backbone.model.encoder.layer.1.output.dense.weight"
    torch.testing.assert_close(mixed[name], 0.7 * base[name] + 0.3 * end[name])
    head0 = load_tensors(lpft_run / "start.safetensors")[0]["head.weight"]
    torch.testing.assert_close(mixed["head.weight"], 0.7 * head0 + 0.3 * end["head.weight"])
    saved = exapt.load_run(tmp_path / "mixed")
    assert saved.metrics["interpolated"]["alpha"] == 0.3


def test_alpha_is_picked_on_validation(lpft_run, tmp_path):
    result = interpolate(lpft_run, "0,0.25,0.5,0.75,1", out=tmp_path / "i", progress=False, log=quiet)
    t = result.table
    best = t.sort_values(["val_accuracy", "val_loss"], ascending=[False, True]).iloc[0]
    assert result.pick["alpha"] == best["alpha"]
    assert json.loads(result.files["json"].read_text())["pick"]["alpha"] == best["alpha"]


def test_a_run_from_a_source_is_scored_on_the_source_too(tmp_path, tiny_bert, tweets_small):
    src = exapt.fit(str(tweets_small), "full", str(tiny_bert), out=tmp_path / "src", epochs=2, max_length=32, lr=1e-3,
                    progress=False, log=quiet)
    run = exapt.fit(str(TWEETS / "train_n16_s1.csv"), "full", init=str(src.path), out=tmp_path / "t", epochs=2,
                    max_length=32, lr=1e-3, progress=False, log=quiet)
    t = interpolate(run.path, "0,1", out=tmp_path / "i", progress=False, log=quiet).table.set_index("alpha")
    s = run.metrics["source"]
    assert t.loc[0.0, "source_accuracy"] == pytest.approx(s["before"]["accuracy"])
    assert t.loc[1.0, "source_accuracy"] == pytest.approx(s["after"]["accuracy"])
    assert t.loc[1.0, "test_accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])


def test_parse_alphas():
    assert parse_alphas("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_alphas("0:1:0.1")[-1] == 1.0 and len(parse_alphas("0:1:0.1")) == 11
    assert parse_alphas("1,0.5") == [0.5, 1.0]
    for bad in ("2", "a", "1:0:0.1", "0:1:0"):
        with pytest.raises(ExaptError, match="--alphas"):
            parse_alphas(bad)


def test_cli(lpft_run, probe_run, tmp_path, capsys):
    assert main(["interpolate", str(lpft_run), "--alphas", "0:1:0.5", "--out", str(tmp_path / "i")]) == 0
    out = capsys.readouterr().out
    assert "picked on validation" in out and (tmp_path / "i" / "interpolation.png").exists()
    assert main(["interpolate", str(probe_run), "--out", str(tmp_path / "j")]) == 2
    err = capsys.readouterr().err
    assert "start.safetensors" in err and err.count("\n") == 1
