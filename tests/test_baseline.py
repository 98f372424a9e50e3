"""The `baseline` strategy and its `classical` features: honest classical models, checked
against scikit-learn, on real data (tweets, promoter DNA), saved and reloaded like any run."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import exapt
from exapt.backbones import load_backbone
from exapt.backbones.classical import composition, detect_mode, kmer_counts, ngram_ids
from exapt.cli import main
from exapt.compare.panel import build_cells
from exapt.config import FitConfig
from exapt.data import load_data
from exapt.strategies import model_for, parse_strategy
from exapt.strategies.baseline import C_GRID, choose_C, fold_indices
from exapt.tasks import Task

DEB_ROOT = Path(os.environ.get("EXAPT_DEBIAN_ROOT", Path(__file__).resolve().parents[1] / ".cache" / "debian"))


def quiet(*_a, **_k):
    pass


def fitted_features(texts, labels=None):
    bb = load_backbone("classical")
    bb.fit_input_stats(texts)
    return bb, bb(bb.collate(bb.prepare_inputs(texts)))


# ---------------------------------------------------------------- the features, by hand and by sklearn

def test_kmer_and_composition_by_hand():
    # ACGT with k = 2: AC (0*4+1), CG (1*4+2), GT (2*4+3), each 1/3 of the 3 windows
    assert dict(kmer_counts("ACGT", 2, 2)) == pytest.approx({1: 1 / 3, 6: 1 / 3, 11: 1 / 3})
    # k = 1 then k = 2 slots follow each other: AN -> A once of 2 windows; the pair with N is skipped
    assert dict(kmer_counts("AN", 1, 2)) == pytest.approx({0: 0.5})
    # AAC: A 2/3, C 1/3; dipeptides AA, AC each 1/2 (A = 0, C = 1 in ACDEF...)
    assert dict(composition("AAC")) == pytest.approx({0: 2 / 3, 1: 1 / 3, 20: 0.5, 21: 0.5})


def test_input_kind_is_read_from_the_training_split():
    assert detect_mode(["ACGTTGCA", "ttgacaNN"]) == "dna"
    assert detect_mode(["ACGT" * 10 + "RS"]) == "dna"     # ambiguity codes are rare (under 5%)
    assert detect_mode(["GLFDIVKKVVGALGSL", "KWKLFKKIEK"]) == "protein"
    assert detect_mode(["great flight", "ACGT"]) == "text"


def test_tfidf_matches_scikit_learn(tweets_small):
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = list(load_data(str(tweets_small)).inputs)
    _, ours = fitted_features(texts)
    theirs = TfidfVectorizer(ngram_range=(1, 2)).fit_transform(texts).toarray()
    assert ours.shape[1] == 16384 and theirs.shape[1] < 16384   # every n-gram has a slot of its own
    for a, b in zip(ours.numpy(), theirs):   # the same values, in another column order
        np.testing.assert_allclose(np.sort(a[a > 0]), np.sort(b[b > 0]), rtol=1e-5)


def test_C_chosen_by_cv_matches_grid_search():
    """On the antimicrobial-peptide compositions (412 peptides): the same folds, the same
    held-out accuracy per C as scikit-learn's GridSearchCV, the same C."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    table = load_data("amp-tm")
    task = Task.from_labels("auto", table.labels, "amp-tm")
    y = task.encode(table.labels)
    bb, x = fitted_features(list(table.inputs))
    assert bb.kind == "protein"
    x = x[:, (x != 0).any(0)]
    head = task.make_head(x.shape[1])
    before = head.weight.detach().clone()
    C, scores, folds = choose_C(head, x, y, task, 5)
    pairs = fold_indices(y, task, 5)
    grid = GridSearchCV(LogisticRegression(max_iter=10000, tol=1e-8), {"C": list(C_GRID)}, cv=pairs,
                        scoring="accuracy").fit(x.numpy(), y.numpy())
    means = grid.cv_results_["mean_test_score"]
    # the same accuracy to within one held-out example of one fold, from C = 0.01 on; at
    # C = 0.001 the model is almost constant and each solver's stopping rule decides near-ties
    one = 1 / min(len(held) for _, held in pairs) / len(pairs)
    np.testing.assert_allclose([scores[c] for c in C_GRID[1:]], means[1:], atol=one + 1e-9)
    tied = [c for c, m in zip(C_GRID, means) if m >= means.max() - 1e-12]
    assert folds == 5 and C == min(tied, key=lambda c: (abs(np.log10(c)), -c))   # a tie: the C nearest 1
    assert torch.equal(head.weight, before)   # the given head is only copied


def test_too_few_examples_to_cross_validate_keep_C_1():
    task = Task.from_labels("auto", ["a", "b", "b"], "tiny")
    y = task.encode(["a", "b", "b"])
    C, scores, folds = choose_C(task.make_head(2), torch.randn(3, 2), y, task, 5)
    assert (C, scores, folds) == (1.0, {}, 0)


# ---------------------------------------------------------------- fit, save, reload

def test_baseline_on_tweets_fits_saves_and_reloads(tweets_small, tweets_test_small, tmp_path):
    out = tmp_path / "run"
    run = exapt.fit(str(tweets_small), "baseline", "minilm-l6", test=str(tweets_test_small), out=out,
                    progress=False, log=quiet)
    m = run.metrics
    assert m["model"] == "classical" and m["strategy"].startswith("baseline:")
    assert yaml.safe_load((out / "config.yaml").read_text())["model"] == "classical"   # not --model's
    assert m["probe_C"] in C_GRID and m["probe_cv_folds"] == 5 and len(m["probe_cv_scores"]) == len(C_GRID)
    assert m["probe_cv_scores"][f"{m['probe_C']:g}"] == max(m["probe_cv_scores"].values())
    assert m["test"]["accuracy"] > 0.45   # 60 balanced test tweets: chance is 1/3
    assert m["epochs_run"] == 0 and m["trainable_parameters"] == m["total_parameters"]
    loaded = exapt.load_run(out)
    for name, value in run.model.state_dict().items():   # vocabulary, IDF and head all saved
        assert torch.equal(loaded.model.state_dict()[name], value), name
    a, b = run.predict(str(tweets_test_small)), loaded.predict(str(tweets_test_small))
    assert list(a["prediction"]) == list(b["prediction"])
    assert loaded.evaluate(str(tweets_test_small))["accuracy"] == pytest.approx(m["test"]["accuracy"])


@pytest.fixture
def debian(monkeypatch):
    if not (DEB_ROOT / "usr/lib/R/site-library").is_dir():
        pytest.skip(f"unpacked Debian R packages not found at {DEB_ROOT}")
    monkeypatch.setenv("EXAPT_DEBIAN_ROOT", str(DEB_ROOT))


def test_baseline_on_promoter_dna(debian, tmp_path):
    run = exapt.fit("promoters", "baseline:k=3-5", out=tmp_path / "run", progress=False, log=quiet)
    assert run.model.backbone.kind == "dna" and run.metrics["model"] == "classical:3-5"
    assert run.metrics["test"]["accuracy"] >= 0.8   # k-mer logistic regression: 0.95 on this split
    loaded = exapt.load_run(tmp_path / "run")
    assert loaded.model.backbone.kind == "dna"
    whole = load_data("promoters")
    assert torch.equal(loaded.logits(whole), run.logits(whole))


def test_baseline_on_numeric_features_is_standardised(tmp_path):
    run = exapt.fit("mnist-8x8", "baseline:folds=3", n_per_class=16, out=tmp_path / "run", progress=False,
                    log=quiet)
    assert run.model.backbone.kind == "values" and run.model.backbone.feature_dim == 64
    assert run.metrics["test"]["accuracy"] > 0.7 and run.metrics["probe_cv_folds"] == 3


# ---------------------------------------------------------------- one rule for the model; bad options

def test_the_strategy_names_its_model_for_fit_and_compare_alike():
    assert model_for(parse_strategy("baseline"), "minilm-l6") == "classical"
    assert model_for(parse_strategy("baseline:k=4"), None) == "classical:4"
    assert model_for(parse_strategy("linear-probe"), "minilm-l6") == "minilm-l6"
    cells = build_cells(FitConfig(model="minilm-l6"), ["linear-probe", "baseline"], [8], 1)
    assert {c.strategy: c.cfg.model for c in cells} == {"linear-probe": "minilm-l6", "baseline": "classical"}


@pytest.mark.parametrize("spec, part", [
    ("baseline:k=9", "k must be K or KMIN-KMAX"),
    ("baseline:k=5-3", "1 <= KMIN <= KMAX <= 6"),
    ("baseline:folds=1", "folds must be >= 2"),
])
def test_bad_baseline_options_exit_2_with_one_line(capsys, tweets_small, tmp_path, spec, part):
    out = tmp_path / "run"
    code = main(["fit", str(tweets_small), "--strategy", spec, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("exapt: error: ") and part in err, err
    assert not out.exists()


def test_bad_classical_model_name_exit_2(capsys, tweets_small, tmp_path):
    code = main(["fit", str(tweets_small), "--model", "classical:0-3", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "classical:KMIN-KMAX" in err, err


# ---------------------------------------------------------------- compare's sentence about the baseline

def panel_results(baseline_accuracy: float):
    import pandas as pd

    rows = []
    for n in (8, 16):
        for seed, wobble in enumerate((0.0, 0.02, -0.02)):
            for strategy, acc in (("scratch", 0.40), ("linear-probe", 0.60), ("lp-ft", 0.65),
                                  ("baseline", baseline_accuracy)):
                lift = wobble * (strategy == "lp-ft")
                rows.append({"strategy": strategy, "n": n, "seed": seed, "test_accuracy": acc + lift,
                             "cell_seconds": 1.0})
    return pd.DataFrame(rows)


def test_the_recommendation_says_where_the_classical_baseline_stands():
    from exapt.compare.recommendation import recommend

    rec = recommend(panel_results(0.55), "accuracy", True)
    c = rec["classical"]
    assert rec["strategy"] == "lp-ft" and c["transfer"] == "lp-ft" and c["baseline"] == "baseline"
    assert c["difference"] == pytest.approx(0.10) and c["seed_sd"] == pytest.approx(0.02) and c["seeds"] == 3
    assert "the best transfer, lp-ft, is ahead by +10.0 points of accuracy" in c["sentence"]
    assert "seed spread sd 2.0 points over 3 seeds" in c["sentence"] and c["sentence"] in rec["reasons"]


def test_a_winning_baseline_is_recommended_and_said_so():
    from exapt.compare.recommendation import recommend

    rec = recommend(panel_results(0.70), "accuracy", True)
    assert rec["strategy"] == "baseline" and rec["classical"]["baseline_wins"]
    assert "The classical baseline (baseline) is ahead of the best transfer, lp-ft, by +5.0 points" in \
        rec["classical"]["sentence"]
    assert "use baseline" in rec["classical"]["sentence"]


def test_a_panel_without_a_baseline_says_so():
    from exapt.compare.recommendation import recommend

    frame = panel_results(0.55)
    rec = recommend(frame[frame["strategy"] != "baseline"], "accuracy", True)
    assert rec["classical"]["baseline"] is None
    assert any(r.startswith("No classical baseline is in the panel") for r in rec["reasons"])
    only_scratch = recommend(frame[frame["strategy"].isin(["scratch", "baseline"])], "accuracy", True)
    assert only_scratch["classical"] is None   # no transfer to set against it


def test_every_compare_report_with_the_default_panel_carries_the_baseline(tiny_bert, tweets_small, tmp_path):
    from exapt.compare.defaults import DEFAULT_STRATEGIES

    assert "baseline" in DEFAULT_STRATEGIES
    result = exapt.compare(str(tweets_small), str(tiny_bert), strategies="baseline,linear-probe", n_per_class="4",
                           seeds=2, out=tmp_path / "cmp", epochs=1, tracking=False, progress=False, log=quiet)
    assert set(result.results["strategy"]) == {"baseline", "linear-probe"}
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert result.recommendation["classical"]["sentence"] in report
    cell = yaml.safe_load((tmp_path / "cmp" / "runs" / "baseline-n4-s0" / "config.yaml").read_text())
    assert cell["model"] == "classical"


# ---------------------------------------------------------------- rank: the baseline as a candidate

def test_rank_scores_the_baseline_as_a_candidate_and_validates_it_as_itself(tiny_bert, tweets_small,
                                                                            tweets_test_small, tmp_path):
    from exapt.select.rank import rank
    from exapt.select.scores import linear_probe_cv

    table = rank(str(tweets_small), f"{tiny_bert},baseline", scores="logme,linear-probe-cv", validate=True,
                 test=str(tweets_test_small), epochs=1, progress=False, log=quiet)
    row = table.set_index("candidate").loc["baseline"]
    assert row["kind"] == "classical" and row["layer"] == 1 and 0 < row["dim"] <= 16384
    # the same definition as every other row: scikit-learn's C=1 probe, 5 stratified folds, on its features
    data = load_data(str(tweets_small))
    _, x = fitted_features(list(data.inputs))
    y = Task.from_labels("auto", data.labels, "tweets").encode(data.labels)
    assert row["linear-probe-cv"] == pytest.approx(linear_probe_cv(x[:, (x != 0).any(0)].numpy(), y.numpy()))
    # --validate fits the baseline itself (C by CV on the scored examples), not --strategy's probe
    direct = exapt.fit(str(tweets_small), "baseline", test=str(tweets_test_small), val_fraction=0, progress=False,
                       log=quiet, out=tmp_path / "direct")
    assert row["test_accuracy"] == pytest.approx(direct.metrics["test"]["accuracy"])


def test_rank_refuses_a_strategy_without_features_of_its_own(capsys, tweets_small):
    code = main(["rank", str(tweets_small), "--models", "linear-probe,baseline"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "'linear-probe': no such alias" in err, err


# ---------------------------------------------------------------- baseline-cnn: a 1-D CNN from scratch

def test_seqcnn_features_do_not_depend_on_the_batch():
    bb = load_backbone("seqcnn").eval()
    short, long = "ACGTTGCAAC", "ACGT" * 20
    alone = bb(bb.collate(bb.prepare_inputs([short])))
    batched = bb(bb.collate(bb.prepare_inputs([short, long])))
    assert alone.shape == (1, 128)
    torch.testing.assert_close(alone[0], batched[0])


def test_baseline_cnn_on_promoter_dna_fits_saves_and_reloads(debian, tmp_path):
    from exapt.compare.classical import is_classical, is_transfer

    run = exapt.fit("promoters", "baseline-cnn", n_per_class=16, max_length=64, out=tmp_path / "run",
                    progress=False, log=quiet)
    m = run.metrics
    assert m["model"] == "seqcnn" and m["epochs_run"] >= 1 and m["trainable_fraction"] == 1.0
    assert m["test"]["accuracy"] > 0.7    # 0.857 on this split; chance is 0.5
    loaded = exapt.load_run(tmp_path / "run")
    whole = load_data("promoters")
    torch.testing.assert_close(loaded.logits(whole), run.logits(whole))
    assert is_classical("baseline-cnn") and not is_transfer("baseline-cnn") and is_transfer("lp-ft")


def test_bad_baseline_cnn_options_exit_2(capsys, tweets_small, tmp_path):
    code = main(["fit", str(tweets_small), "--strategy", "baseline-cnn:filters=0", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "filters must be whole numbers >= 1" in err, err
