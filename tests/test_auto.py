"""`exapt fit --strategy auto` (docs/auto.md): the plan's rules, the search on a tiny model,
the budget, choosing on validation only, and one real-model search on MiniLM."""
from __future__ import annotations

import pandas as pd
import pytest

from conftest import quiet
from exapt.auto import fit_auto
from exapt.auto.plan import Candidate, Clock, choose, fine_tunes, lr_grid, reason, worth_launching
from exapt.config import FitConfig
from exapt.run import Run
from exapt.run_folder import RunFolder


# -- the plan (no training) ----------------------------------------------------------------
def test_lr_grid_is_around_the_default_default_first_and_the_users_rate_alone():
    assert lr_grid(2e-5, None) == pytest.approx([2e-5, 2e-5 / 3, 6e-5])
    assert lr_grid(2e-5, 1e-4) == [1e-4]


def test_a_fit_is_launched_while_half_its_predicted_time_is_left():
    assert worth_launching(100.0, None)          # no budget
    assert worth_launching(100.0, 50.0)          # its time limit stops it at the budget
    assert not worth_launching(100.0, 49.0)
    assert worth_launching(None, 1.0)            # no basis for a prediction: any budget left
    assert not worth_launching(None, 0.0) and not worth_launching(1.0, -3.0)


def test_fine_tunes_follow_the_cheap_scores_and_the_input_kind():
    strategies = lambda cheap, kind="text", higher=True: [s for s, _ in fine_tunes(cheap, kind, higher)]
    assert strategies({"baseline": 0.5, "linear-probe": 0.6}) == ["lp-ft"]
    # frozen features worse than the classical ones: full first, then lp-ft
    assert strategies({"baseline": 0.7, "linear-probe": 0.6}) == ["full", "lp-ft"]
    assert strategies({"baseline": 1.0, "linear-probe": 2.0}, higher=False) == ["full", "lp-ft"]  # rmse
    # a tie (common on a small validation split) is no evidence against lp-ft
    assert strategies({"baseline": 0.6, "linear-probe": 0.6}) == ["lp-ft"]
    # nor is a lead within one standard error of the validation score
    within = [s for s, _ in fine_tunes({"baseline": 0.7, "linear-probe": 0.6}, "text", True, band=0.158)]
    assert within == ["lp-ft"]
    # no pretrained model takes the data: nothing to fine-tune, but sequences get the CNN
    assert strategies({"baseline": 0.6, "linear-probe": None}) == []
    assert strategies({"baseline": 0.6, "linear-probe": None}, kind="dna") == ["baseline-cnn"]
    assert strategies({"baseline": 0.5, "linear-probe": 0.7}, kind="protein") == ["lp-ft", "baseline-cnn"]


def test_choose_takes_the_best_validation_score_and_a_tie_goes_to_the_cheaper():
    a, b, c = Candidate("baseline", "cheap"), Candidate("linear-probe", "cheap"), Candidate("lp-ft", "fine-tune", 2e-5)
    a.score, b.score, c.score = 0.7, 0.8, 0.8
    assert choose([a, b, c], higher=True) is b
    assert choose([a, b, c], higher=False) is a
    c.score = float("nan")
    assert choose([a, b, c], higher=True) is b
    text = reason(b, [a, b, c], "accuracy", True)
    assert "linear-probe" in text and "0.8000" in text and "baseline (0.7000)" in text
    assert choose([Candidate("full", "fine-tune")], True) is None  # nothing ran


def test_within_one_standard_error_the_prior_order_decides():
    from exapt.auto.plan import noise_band

    assert noise_band(10, bounded=True) == pytest.approx(0.5 / 10 ** 0.5)
    assert noise_band(10, bounded=False) == 0.0      # RMSE: no band
    base, probe, ft = Candidate("baseline", "cheap"), Candidate("linear-probe", "cheap"), Candidate("lp-ft", "fine-tune")
    base.score, probe.score, ft.score = 0.40, 0.37, 0.28
    band = noise_band(10, bounded=True)                 # 0.158: all three are within it
    assert choose([base, probe, ft], True) is base      # no band: the best score
    assert choose([base, probe, ft], True, band) is ft  # lp-ft ranks first among them
    text = reason(ft, [base, probe, ft], "macro_f1", True, band)
    assert "within one standard error (0.158" in text and "baseline (0.4000)" in text
    ft.score = 0.20                                     # a clear lead wins whatever its rank
    assert choose([base, probe, ft], True, band) is probe
    base.score = 1.0
    assert choose([base, probe, ft], True, band) is base


def test_a_tie_goes_to_the_higher_validation_auroc_then_to_the_cheaper():
    probe, ft = Candidate("linear-probe", "cheap"), Candidate("lp-ft", "fine-tune", 2e-5)
    probe.score = ft.score = 0.7
    probe.val, ft.val = {"accuracy": 0.7, "auroc": 0.81}, {"accuracy": 0.7, "auroc": 0.86}
    assert choose([probe, ft], higher=True) is ft
    assert "broken by validation auroc: 0.8600 against 0.8100" in reason(ft, [probe, ft], "accuracy", True)
    ft.val["auroc"] = 0.81
    assert choose([probe, ft], higher=True) is probe
    assert "the cheaper one is kept" in reason(probe, [probe, ft], "accuracy", True)
    ft.val = {}                                     # no AUROC (regression): the cheaper
    assert choose([probe, ft], higher=True) is probe


def test_clock_predicts_from_the_probe_then_from_what_ran():
    sizes = {"train": 100, "val": 20, "test": 50}
    clock = Clock()
    assert clock.estimate("lp-ft", 5, sizes, own_model=False) is None  # no basis yet
    clock.per_item, clock.overhead = 0.01, 2.0
    # 5 epochs x (3 x 100 train + 20 val) + 50 test + 20 val passes, 0.01 s each, + 2 s
    assert clock.estimate("lp-ft", 5, sizes, own_model=False) == pytest.approx(2.0 + 1670 * 0.01)
    assert clock.estimate("baseline-cnn", 5, sizes, own_model=True) is None  # a model of its own
    clock.learn("lp-ft", 5, sizes, 37.4, own_model=False)  # twice the prediction
    assert clock.estimate("lp-ft", 10, sizes, own_model=False) == pytest.approx(74.8)  # measured, scaled by epochs
    assert clock.estimate("full", 5, sizes, own_model=False) == pytest.approx(37.4)   # the measured ratio
    clock.learn("baseline-cnn", 4, sizes, 8.0, own_model=True)
    assert clock.estimate("baseline-cnn", 2, sizes, own_model=True) == pytest.approx(4.0)


# -- the time limit auto gives each fit ---------------------------------------------------
def test_a_time_limit_stops_training_after_the_epoch_that_passes_it(tmp_path, tiny_bert, tweets_small):
    import exapt

    kw = dict(epochs=3, max_length=32, progress=False, log=quiet)
    limited = exapt.fit(str(tweets_small), "full", str(tiny_bert), out=tmp_path / "a", time_limit=1e-6, **kw)
    m = limited.metrics
    assert m["epochs_run"] == 1 and m["stopped_by_time_limit_after_epoch"] == 1
    free = exapt.fit(str(tweets_small), "full", str(tiny_bert), out=tmp_path / "b", time_limit=1e6, **kw).metrics
    assert free["epochs_run"] == 3 and "stopped_by_time_limit_after_epoch" not in free


# -- the search on a tiny model ----------------------------------------------------------
def _cfg(data, model, **options) -> FitConfig:
    return FitConfig.from_options(str(data), model=str(model), epochs=1, max_length=32, **options)


def test_auto_writes_an_ordinary_run_that_says_what_was_tried(tmp_path, tiny_bert, tweets_small):
    out = tmp_path / "auto"
    (tmp_path / ".auto.auto-0badc0de").mkdir()  # what a search killed by a signal leaves: cleared
    run = fit_auto(_cfg(tweets_small, tiny_bert), out, progress=False, log=quiet)
    assert isinstance(run, Run) and Run.load(out).config.strategy == run.config.strategy != "auto"
    auto = run.metrics["auto"]
    tried = [c["candidate"] for c in auto["candidates"]]
    assert tried[:2] == ["baseline", "linear-probe"]
    ran = [c for c in auto["candidates"] if c["status"] == "ran"]
    assert all(c["val_score"] is not None and c["seconds"] > 0 for c in ran)
    best = max(c["val_score"] for c in ran)
    winner = next(c for c in ran if c["candidate"] == auto["winner"])
    assert winner["val_score"] == best and auto["metric"] == "accuracy"
    assert run.config.strategy == winner["strategy"]
    if winner["lr"] is not None:  # an encoder-trained winner keeps the rate it won with
        assert run.config.train.lr == pytest.approx(winner["lr"])
    stages = [(c["strategy"], c["stage"]) for c in auto["candidates"]]
    tuned = [s for s, stage in stages if stage == "fine-tune"]
    assert len(set(tuned)) == len(tuned)  # each fine-tune once at its default rate, then the best at two more
    others = [s for s, stage in stages if stage == "lr"]
    assert others == [] if not tuned else len(others) == 2 and others[0] == others[1] in tuned
    assert run.evaluate(tweets_small)["n"] == 48
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto"]  # the candidates' folder is gone


def test_auto_never_reads_the_test_labels(tmp_path, tiny_bert, tweets_small, tweets_test_small):
    """The same search with the test labels scrambled makes the same choice, by the same scores."""
    scrambled = tmp_path / "scrambled.csv"
    df = pd.read_csv(tweets_test_small)
    df["label"] = df["label"].sample(frac=1.0, random_state=1).to_numpy()
    df.to_csv(scrambled, index=False)
    records = []
    for name, test in (("a", tweets_test_small), ("b", scrambled)):
        cfg = _cfg(tweets_small, tiny_bert, test=str(test), test_fraction=0)
        # a tiny budget keeps it to the cheap ranking: the scoring is the same for every candidate
        records.append(fit_auto(cfg, tmp_path / name, budget_minutes=1e-4, progress=False, log=quiet).metrics["auto"])
    assert records[0]["winner"] == records[1]["winner"]
    assert [c["val_score"] for c in records[0]["candidates"]] == [c["val_score"] for c in records[1]["candidates"]]


def test_budget_stops_launching_what_cannot_fit(tmp_path, tiny_bert, tweets_small):
    run = fit_auto(_cfg(tweets_small, tiny_bert), tmp_path / "auto", budget_minutes=1e-4, progress=False, log=quiet)
    auto = run.metrics["auto"]
    assert auto["budget_seconds"] == pytest.approx(0.006)
    cheap = [c for c in auto["candidates"] if c["stage"] == "cheap"]
    rest = [c for c in auto["candidates"] if c["stage"] != "cheap"]
    assert [c["status"] for c in cheap] == ["ran", "ran"]  # the cheap ranking always runs
    assert rest and all(c["status"] == "over budget" for c in rest)
    assert auto["strategy"] in ("baseline", "linear-probe")


def test_auto_refuses_an_existing_run_before_any_work(tmp_path, tiny_bert, tweets_small, probe_run):
    from exapt.errors import ExaptError

    with pytest.raises(ExaptError, match="already holds a complete run"):
        fit_auto(_cfg(tweets_small, tiny_bert), probe_run, progress=False, log=quiet)
    with pytest.raises(ExaptError, match="--budget-minutes must be"):
        fit_auto(_cfg(tweets_small, tiny_bert), tmp_path / "x", budget_minutes=0, progress=False, log=quiet)
    assert not (tmp_path / "x").exists()


# -- the real model ------------------------------------------------------------------------
def test_auto_on_minilm_and_real_tweets(tmp_path, tweets_small, tweets_test_small):
    """MiniLM on 48 real tweets: both cheap candidates score, lp-ft is fine-tuned, the winner is published."""
    # --lr: the user's rate alone, so one fit per fine-tune (the grid is tested above)
    cfg = FitConfig.from_options(str(tweets_small), model="minilm-l6", epochs=1, max_length=32, lr=3e-5,
                                 test=str(tweets_test_small), test_fraction=0)
    run = fit_auto(cfg, tmp_path / "auto", progress=False, log=quiet)
    auto = run.metrics["auto"]
    scores = {c["candidate"]: c["val_score"] for c in auto["candidates"]}
    assert scores["linear-probe"] is not None and scores["baseline"] is not None
    tuned = [c for c in auto["candidates"] if c["strategy"] == "lp-ft"]
    assert [(c["lr"], c["stage"], c["status"]) for c in tuned] == [(3e-5, "fine-tune", "ran")]
    assert RunFolder(run.path).is_complete() and run.metrics["test"]["accuracy"] > 0.4
    assert auto["chosen_on"].startswith("validation")
