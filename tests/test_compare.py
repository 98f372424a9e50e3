"""`exapt compare` on the tiny model: the panel's cells, what they share, resuming after an
interruption, refusing to mix settings, MLflow tracking, pre-made split files, bad input."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

import exapt
from exapt.cli import main
from exapt.compare.panel import build_cells, parse_sizes, parse_strategies
from exapt.config import FitConfig
from exapt.errors import ExaptError



def quiet(*_args, **_kwargs) -> None:
    pass


def _compare(data, model, out, **kw):
    options = dict(strategies="linear-probe,full,scratch", n_per_class="4,8", seeds=2, epochs=2,
                   max_length=32, progress=False, log=quiet)
    options.update(kw)
    return exapt.compare(str(data), str(model), out=out, **options)


@pytest.fixture(scope="module")
def panel(tmp_path_factory, tiny_bert, tweets_small, tweets_test_small):
    out = tmp_path_factory.mktemp("compare") / "panel"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXAPT_CACHE", str(tmp_path_factory.getbasetemp() / "exapt-cache"))
        result = _compare(tweets_small, tiny_bert, out, test=str(tweets_test_small))
    return out, result


def test_panel_results_table_has_one_row_per_cell(panel):
    out, result = panel
    frame = pd.read_csv(out / "results.csv")
    assert len(frame) == 3 * 2 * 2
    assert set(frame["strategy"]) == {"linear-probe", "full", "scratch"}
    assert sorted(frame["n"].unique()) == [4, 8]
    assert (frame["n_train"] + frame["n_val"] == frame["n"] * 3).all()
    for column in ("test_accuracy", "test_macro_f1", "trainable_parameters", "train_seconds", "cell_seconds",
                   "peak_rss_mb"):
        assert frame[column].notna().all(), column
    assert (frame["peak_rss_mb"] > 50).all()
    probe = frame[frame.strategy == "linear-probe"]
    assert (probe["trainable_parameters"] < frame[frame.strategy == "full"]["trainable_parameters"].min()).all()
    assert result.results.shape[0] == 12 and result.meta["metric"] == "accuracy"
    assert result.recommendation["strategy"] in {"linear-probe", "full", "scratch"}


def test_cells_keep_metrics_not_weights(panel):
    out, _ = panel
    for folder in (out / "runs").iterdir():
        assert (folder / "cell.json").exists() and (folder / "metrics.json").exists()
        assert not (folder / "weights.safetensors").exists()


def test_reports_written(panel):
    out, result = panel
    assert (out / "report.html").stat().st_size > 10_000
    md = (out / "report.md").read_text()
    assert "linear-probe" in md and "scratch" in md


def test_every_cell_tracked_in_mlflow(panel):
    out, _ = panel
    db = sqlite3.connect(out / "mlflow.db")
    runs = db.execute("select run_uuid, name from runs").fetchall()
    assert len(runs) == 12
    accuracy = db.execute("select count(*) from metrics where key = 'test_accuracy'").fetchone()[0]
    assert accuracy == 12
    params = dict(db.execute("select key, value from params where run_uuid = ?", (runs[0][0],)).fetchall())
    assert params["strategy"] in {"linear-probe", "full", "scratch"} and params["max_length"] == "32"
    # the run folder travels as artifacts
    artifacts = list((out / "mlartifacts").rglob("metrics.json"))
    assert len(artifacts) == 12


def test_a_cell_is_the_same_experiment_as_fit(panel, tiny_bert, tweets_small, tweets_test_small, tmp_path):
    out, _ = panel
    cfg = FitConfig.load(out / "runs" / "full-n8-s1" / "config.yaml")
    assert cfg.strategy == "full" and cfg.data.n_per_class == 8 and cfg.data.seed == 1 == cfg.train.seed
    alone = exapt.fit(str(tweets_small), "full", str(tiny_bert), n_per_class=8, seed=1, epochs=2, max_length=32,
                      test=str(tweets_test_small), out=tmp_path / "alone", progress=False, log=quiet)
    cell = json.loads((out / "runs" / "full-n8-s1" / "metrics.json").read_text())
    assert alone.metrics["test"]["accuracy"] == pytest.approx(cell["test"]["accuracy"], abs=1e-9)
    assert alone.metrics["test"]["auroc"] == pytest.approx(cell["test"]["auroc"], abs=1e-6)


def test_rerun_computes_nothing_and_interrupted_panel_computes_only_the_rest(
        tmp_path, tiny_bert, tweets_small, tweets_test_small, monkeypatch):
    import importlib

    fit_module = importlib.import_module("exapt.compare.runner")  # where the panel calls fit_config

    calls = []
    real = fit_module.fit_config

    def counting(cfg, *a, **kw):
        calls.append(cfg.strategy)
        if len(calls) == 3 and not counting.let_through:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the third cell
        return real(cfg, *a, **kw)

    counting.let_through = False
    monkeypatch.setattr(fit_module, "fit_config", counting)
    out = tmp_path / "cmp"
    kw = dict(strategies="linear-probe,full", n_per_class="4", seeds=2, test=str(tweets_test_small))
    with pytest.raises(KeyboardInterrupt):
        _compare(tweets_small, tiny_bert, out, **kw)
    partial = pd.read_csv(out / "results.csv")
    assert len(partial) == 2  # the finished cells are on disk, with a partial report
    assert (out / "report.html").exists()
    counting.let_through = True
    calls.clear()
    result = _compare(tweets_small, tiny_bert, out, **kw)
    assert len(calls) == 2 and len(result.results) == 4
    calls.clear()
    _compare(tweets_small, tiny_bert, out, **kw)
    assert calls == []
    # widening the panel runs only the new cells
    _compare(tweets_small, tiny_bert, out, **dict(kw, n_per_class="4,6"))
    assert len(calls) == 4


def test_other_settings_are_never_mixed_in(tmp_path, tiny_bert, tweets_small, tweets_test_small):
    out = tmp_path / "cmp"
    kw = dict(strategies="linear-probe", n_per_class="4", seeds=1, test=str(tweets_test_small), tracking=False)
    _compare(tweets_small, tiny_bert, out, **kw)
    with pytest.raises(ExaptError, match="other settings.*max_length: 32 -> 48"):
        _compare(tweets_small, tiny_bert, out, **dict(kw, max_length=48))
    result = _compare(tweets_small, tiny_bert, out, overwrite=True, **dict(kw, max_length=48))
    assert FitConfig.load(out / "runs" / "linear-probe-n4-s0" / "config.yaml").max_length == 48
    assert len(result.results) == 1


def test_a_folder_made_before_a_settings_section_existed_is_resumed(tmp_path, tiny_bert, tweets_small,
                                                                    tweets_test_small, monkeypatch):
    """Sections added later (adapt, source) at their defaults leave the settings as they were:
    a compare folder made by an older exapt resumes instead of being refused."""
    import yaml

    out = tmp_path / "cmp"
    kw = dict(strategies="linear-probe", n_per_class="4", seeds=1, test=str(tweets_test_small), tracking=False)
    _compare(tweets_small, tiny_bert, out, **kw)
    marker = yaml.safe_load((out / "compare.yaml").read_text())
    assert "adapt" not in marker["settings"] and "source" not in marker["settings"]
    # as an older exapt wrote it: without an option added since (data.image_size)
    del marker["settings"]["data"]["image_size"]
    (out / "compare.yaml").write_text(yaml.safe_dump(marker, sort_keys=False))
    calls = []
    import importlib

    monkeypatch.setattr(importlib.import_module("exapt.compare.runner"), "fit_config", lambda *a, **k: calls.append(a))
    _compare(tweets_small, tiny_bert, out, **kw)
    assert calls == []


def test_premade_split_files(tmp_path, tiny_bert, tweets_small, tweets_test_small):
    pool = pd.read_csv(tweets_small)
    for seed in range(2):
        for n in (4, 8):
            pool.groupby("label").sample(n, random_state=seed).to_csv(tmp_path / f"train_n{n}_s{seed}.csv", index=False)
    result = _compare(tmp_path / "train_n{n}_s{seed}.csv", tiny_bert, tmp_path / "cmp", strategies="linear-probe",
                      seeds=2, test=str(tweets_test_small), val_fraction=0, tracking=False)
    frame = result.results
    assert len(frame) == 4 and (frame["n_train"] == frame["n"] * 3).all()
    cfg = FitConfig.load(tmp_path / "cmp" / "runs" / "linear-probe-n8-s1" / "config.yaml")
    assert cfg.data.source.endswith("train_n8_s1.csv") and cfg.data.n_per_class is None


@pytest.mark.parametrize("kw, message", [
    (dict(strategies="linear-probe,nonsense"), "nonsense"),
    (dict(n_per_class="4,x"), "not a whole number"),
    (dict(n_per_class="40"), "40"),
    (dict(seeds=0), "--seeds"),
    (dict(max_length=2), "--max-length"),
])
def test_bad_options_fail_before_anything_is_written(tmp_path, tiny_bert, tweets_small, kw, message):
    out = tmp_path / "cmp"
    with pytest.raises(ExaptError, match=message):
        _compare(tweets_small, tiny_bert, out, tracking=False, **kw)
    assert not out.exists()


def test_a_strategy_with_several_options_stays_one_panel_entry():
    assert parse_strategies("lp-ft,lp-ft:names=2,wise=0.5,freeze:4,full+ewc:weight=10,full") == [
        "lp-ft", "lp-ft:names=2,wise=0.5", "freeze:4", "full+ewc:weight=10", "full"]
    assert parse_strategies("lora:r=4,alpha=8,lp-ft:C=0.5") == ["lora:r=4,alpha=8", "lp-ft:C=0.5"]
    with pytest.raises(ExaptError, match="wise"):
        parse_strategies("full,wise=0.5")  # an option with no strategy before it to belong to


def test_refuses_a_folder_that_is_not_a_compare(tmp_path, tiny_bert, tweets_small):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(ExaptError, match="not a compare"):
        _compare(tweets_small, tiny_bert, tmp_path / "mine", tracking=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


def test_panel_order_cheap_cells_first(tiny_bert):
    cells = build_cells(FitConfig(model=str(tiny_bert)), parse_strategies("scratch,linear-probe,lp-ft"),
                        parse_sizes("32,8"), seeds=2)
    names = [c.name for c in cells]
    assert names[:4] == ["linear-probe-n8-s0", "linear-probe-n8-s1", "linear-probe-n32-s0", "linear-probe-n32-s1"]
    assert names[4:6] == ["scratch-n8-s0", "lp-ft-n8-s0"]
    assert parse_sizes("64,all,8,8") == [8, 64, "all"]


def test_cli_compare(tmp_path, capsys, tiny_bert, tweets_small, tweets_test_small):
    out = tmp_path / "cmp"
    code = main(["compare", str(tweets_small), "--model", str(tiny_bert), "--strategies", "linear-probe",
                 "--n-per-class", "4", "--seeds", "1", "--test", str(tweets_test_small), "--out", str(out),
                 "--no-tracking"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "report:" in captured.out and str(out / "report.html") in captured.out
    assert not (out / "mlflow.db").exists()
    code = main(["compare", str(tweets_small), "--model", str(tiny_bert), "--strategies", "bogus", "--out",
                 str(tmp_path / "x")])
    assert code == 2 and "bogus" in capsys.readouterr().err


def test_bad_tracking_uri_is_one_clear_error(tmp_path, tiny_bert, tweets_small):
    with pytest.raises(ExaptError, match="--tracking-uri"):
        _compare(tweets_small, tiny_bert, tmp_path / "cmp", strategies="linear-probe", n_per_class="4", seeds=1,
                 tracking_uri="nosuchscheme://nowhere")
    assert not (tmp_path / "cmp").exists()


def test_all_sits_on_the_size_axis(tmp_path, tiny_bert, tweets_small, tweets_test_small):
    result = _compare(tweets_small, tiny_bert, tmp_path / "cmp", strategies="linear-probe", n_per_class="4,all",
                      seeds=1, test=str(tweets_test_small), tracking=False)
    frame = result.results.set_index("n_label")
    assert frame.loc["all", "n"] == 16 and frame.loc["all", "n_train"] + frame.loc["all", "n_val"] == 48
    assert (tmp_path / "cmp" / "runs" / "linear-probe-nall-s0" / "cell.json").exists()


def test_the_default_panel_leaves_out_what_the_model_cannot_run(tmp_path):
    """digits with the 2-block mlp: freeze:4 would leave only the head, LoRA needs a
    transformer; the default panel runs the rest and its report says why they are missing."""
    out = tmp_path / "cmp"
    said = []
    result = exapt.compare("digits", "mlp", out=out, n_per_class="8", seeds=1, epochs=2, progress=False,
                           tracking=False, log=said.append)
    ran = set(pd.read_csv(out / "results.csv")["strategy"])
    assert ran == {"scratch", "baseline", "linear-probe", "full", "lp-ft"}
    assert set(result.meta["left_out"]) == {"freeze:4", "lora"}
    assert any("freeze:4 left out" in line and "2 blocks" in line for line in said)
    report = (out / "report.md").read_text()
    assert "Left out of the default panel" in report and "Hugging Face backbone" in report


def test_a_listed_strategy_the_model_cannot_run_stops_before_anything_runs(tmp_path):
    out = tmp_path / "cmp"
    with pytest.raises(ExaptError, match="--strategy lora needs"):
        exapt.compare("digits", "mlp", strategies="linear-probe,lora", out=out, n_per_class="8", seeds=1,
                      epochs=2, progress=False, tracking=False, log=quiet)
    assert not out.exists()
