"""Compare analysis and report on hand-made results tables (no training, no model).

The expected numbers are worked out by hand here (log-n interpolation, paired seed
differences), so a change in the analysis that moves a number shows up as a failure,
not as a silently different report.
"""
from __future__ import annotations

import base64
import math
import re

import numpy as np
import pandas as pd
import pytest

from exapt.compare.analysis import labels_saved, summarize, transfer_gain
from exapt.compare.recommendation import recommend
from exapt.compare.report import FIGURE_IDS, write_report

SIZES = (8, 16, 64)
SCRATCH = (0.40, 0.50, 0.60)


def cells(curves: dict, sizes=SIZES, seeds=(0,), metric="test_accuracy", offsets=None, cost=None,
          trainable=None) -> pd.DataFrame:
    """One row per (strategy, n, seed); `offsets[seed]` is added to every value of that seed."""
    rows = []
    for strategy, values in curves.items():
        for n, value in zip(sizes, values):
            if value is None:
                continue
            for seed in seeds:
                v = value + (offsets or {}).get(seed, 0.0)
                rows.append({
                    "cell": f"{strategy}-n{n}-s{seed}", "strategy": strategy, "n": n, "seed": seed,
                    "n_train": 2 * n, metric: v, "trainable_parameters": (trainable or {}).get(strategy, 1000),
                    "total_parameters": 1000, "train_seconds": 1.0,
                    "cell_seconds": (cost or {}).get(strategy, 10.0), "peak_rss_mb": 500.0, "epochs_run": 3,
                })
    return pd.DataFrame(rows)


def meta(**extra) -> dict:
    base = {"data": "tweets", "model": "minilm-l6", "task": "classification", "metric": "accuracy",
            "higher_is_better": True, "n_test": 200, "strategies": ["scratch", "linear-probe", "lp-ft"],
            "n_values": list(SIZES), "seeds": 3, "command": "exapt compare tweets --seeds 3",
            "exapt_version": "0.1.0"}
    return {**base, **extra}


# -- summarize ----------------------------------------------------------------------
def test_summarize_mean_std_count_min_max():
    frame = cells({"lp-ft": (0.5, 0.6, 0.7)}, seeds=(0, 1, 2), offsets={0: -0.01, 1: 0.0, 2: 0.01})
    s = summarize(frame, "accuracy")
    assert list(s.columns) == ["strategy", "n", "mean", "std", "count", "min", "max"]
    row = s[s["n"] == 16].iloc[0]
    assert row["mean"] == pytest.approx(0.6)
    assert row["std"] == pytest.approx(0.01)  # ddof=1 over -0.01, 0, +0.01
    assert (row["count"], row["min"], row["max"]) == (3, pytest.approx(0.59), pytest.approx(0.61))


def test_summarize_one_seed_has_nan_std_and_drops_missing_values():
    frame = cells({"lp-ft": (0.5, 0.6, None)})
    frame.loc[frame["n"] == 16, "test_accuracy"] = np.nan  # a cell without the metric counts for nothing
    s = summarize(frame, "test_accuracy")
    assert list(s["n"]) == [8]
    assert math.isnan(s["std"].iloc[0]) and s["count"].iloc[0] == 1


# -- labels saved -------------------------------------------------------------------
def saved_for(value: float, n: int = 8, scratch=SCRATCH, higher=True) -> pd.Series:
    frame = pd.concat([cells({"scratch": scratch}), cells({"lp-ft": (value,)}, sizes=(n,))])
    table = labels_saved(summarize(frame, "accuracy"), higher_is_better=higher)
    assert list(table["strategy"]) == ["lp-ft"]
    return table.iloc[0]


def test_labels_saved_interpolates_in_log_n():
    row = saved_for(0.575)  # between scratch at 16 (0.50) and 64 (0.60), 3/4 of the way
    expected = math.exp(math.log(16) + 0.75 * (math.log(64) - math.log(16)))  # = 16 * 4**0.75 ~ 45.25
    assert row["relation"] == "="
    assert row["baseline_n_needed"] == pytest.approx(expected)
    assert row["saved_per_class"] == pytest.approx(expected - 8)
    assert row["text"] == f"scratch needs ~{expected:.0f} per class ({expected / 8:.1f}x)"

    row = saved_for(0.55)  # halfway between 16 and 64 in log n: the geometric mean, 32
    assert row["baseline_n_needed"] == pytest.approx(32.0)
    assert row["text"] == "scratch needs ~32 per class (4.0x)"


def test_labels_saved_more_than_the_largest_size():
    row = saved_for(0.65)
    assert (row["relation"], row["baseline_n_needed"]) == ("more than", 64)
    assert math.isnan(row["saved_per_class"])
    assert row["text"] == "scratch needs more than 64 per class (the most measured)"


def test_labels_saved_at_most_the_smallest_size():
    for value in (0.40, 0.35):  # at, and below, scratch's value at n=8
        row = saved_for(value, n=16)
        assert (row["relation"], row["baseline_n_needed"]) == ("at most", 8)
        assert math.isnan(row["saved_per_class"])
        assert "at most 8" in row["text"]


def test_labels_saved_takes_the_first_crossing_of_a_dipping_curve():
    row = saved_for(0.55, scratch=(0.40, 0.60, 0.50))
    assert row["baseline_n_needed"] == pytest.approx(math.exp(math.log(8) + 0.75 * math.log(2)))


def test_labels_saved_lower_is_better():
    row = saved_for(2.25, scratch=(3.0, 2.5, 2.0), higher=False)
    assert row["relation"] == "="
    assert row["baseline_n_needed"] == pytest.approx(32.0)
    assert saved_for(1.5, scratch=(3.0, 2.5, 2.0), higher=False)["relation"] == "more than"
    assert saved_for(3.5, scratch=(3.0, 2.5, 2.0), higher=False)["relation"] == "at most"


def test_labels_saved_without_baseline_is_empty():
    table = labels_saved(summarize(cells({"lp-ft": (0.5, 0.6, 0.7)}), "accuracy"))
    assert table.empty and "baseline_n_needed" in table.columns


# -- transfer gain ------------------------------------------------------------------
def test_transfer_gain_is_paired_by_seed():
    scratch = pd.DataFrame({"strategy": "scratch", "n": 8, "seed": [0, 1, 2], "test_accuracy": [0.40, 0.50, 0.60]})
    lp = pd.DataFrame({"strategy": "lp-ft", "n": 8, "seed": [0, 1, 3], "test_accuracy": [0.45, 0.58, 0.99]})
    gain = transfer_gain(pd.concat([scratch, lp]), "accuracy")
    row = gain.iloc[0]
    # seeds 0 and 1 pair up (+0.05, +0.08); seed 2 (scratch only) and 3 (lp-ft only) do not count.
    assert (row["strategy"], row["n"], row["count"]) == ("lp-ft", 8, 2)
    assert row["gain"] == pytest.approx(0.065)
    assert row["std"] == pytest.approx(np.std([0.05, 0.08], ddof=1))


def test_transfer_gain_without_scratch_is_empty():
    gain = transfer_gain(cells({"lp-ft": (0.5, 0.6, 0.7)}), "accuracy")
    assert gain.empty and list(gain.columns) == ["strategy", "n", "gain", "std", "count"]


# -- recommend ----------------------------------------------------------------------
def test_recommend_picks_the_best_and_cites_numbers():
    frame = cells({"scratch": SCRATCH, "linear-probe": (0.55, 0.58, 0.62), "lp-ft": (0.58, 0.63, 0.70)},
                  seeds=(0, 1, 2), offsets={0: -0.005, 1: 0.0, 2: 0.005})
    rec = recommend(frame, "accuracy", True)
    assert rec["strategy"] == "lp-ft" and rec["runner_up"] == "linear-probe"
    assert list(rec["table"]["strategy"]) == ["lp-ft", "linear-probe", "scratch"]
    text = " ".join(rec["reasons"])
    assert "0.637 vs 0.583" in text  # mean over n = 8, 16, 64
    assert "9 of 9 paired" in text
    assert "+0.180 at n=8" in text and "+0.100 at n=64" in text
    assert "Caution" not in text


def test_recommend_names_the_sizes_where_another_strategy_leads():
    # lp-ft wins on the mean over sizes (0.637 vs 0.627) but linear-probe leads at n=8.
    frame = cells({"scratch": SCRATCH, "linear-probe": (0.60, 0.61, 0.67), "lp-ft": (0.58, 0.63, 0.70)},
                  seeds=(0, 1))
    rec = recommend(frame, "accuracy", True)
    assert rec["strategy"] == "lp-ft" and rec["per_size"] == {8: "linear-probe", 16: "lp-ft", 64: "lp-ft"}
    size_reasons = [r for r in rec["reasons"] if "not the best at every size" in r]
    assert len(size_reasons) == 1 and "n=8: linear-probe (0.600 vs 0.580)" in size_reasons[0]
    assert "n=16" not in size_reasons[0]
    # When the pick leads everywhere, no such sentence; for an error, lowest wins per size.
    frame = cells({"scratch": SCRATCH, "lp-ft": (0.58, 0.63, 0.70)}, seeds=(0, 1))
    assert not any("not the best at every size" in r for r in recommend(frame, "accuracy", True)["reasons"])
    frame = cells({"full": (2.6, 2.2, 1.9), "lora": (2.5, 2.3, 2.0)}, metric="test_rmse", seeds=(0, 1))
    assert recommend(frame, "rmse", False)["per_size"] == {8: "lora", 16: "full", 64: "full"}


def test_recommend_tie_goes_to_the_cheaper_strategy():
    frame = cells({"full": (0.601, 0.701, 0.801), "lora": (0.600, 0.700, 0.800)}, seeds=(0, 1),
                  cost={"full": 60.0, "lora": 12.0}, trainable={"full": 1000, "lora": 5})
    rec = recommend(frame, "accuracy", True)
    assert rec["strategy"] == "lora"
    assert "cheaper" in rec["reasons"][0] and "12.0 s vs 60.0 s" in rec["reasons"][0]
    # A time difference under 10% is noise: the tie then goes to the higher score.
    close_cost = cells({"full": (0.601, 0.701, 0.801), "lora": (0.600, 0.700, 0.800)}, seeds=(0, 1),
                       cost={"full": 60.0, "lora": 55.0})
    rec = recommend(close_cost, "accuracy", True)
    assert rec["strategy"] == "full" and "highest mean accuracy" in rec["reasons"][0]
    # Outside the tolerance, the better score wins whatever it costs.
    frame.loc[frame["strategy"] == "full", "test_accuracy"] += 0.01
    assert recommend(frame, "accuracy", True)["strategy"] == "full"


def test_recommend_one_seed_and_one_strategy_do_not_crash():
    rec = recommend(cells({"scratch": SCRATCH, "lp-ft": (0.6, 0.65, 0.7)}), "accuracy", True)
    assert rec["strategy"] == "lp-ft"
    assert any("only one seed" in r for r in rec["reasons"])
    rec = recommend(cells({"lp-ft": (0.6, 0.65, 0.7)}), "accuracy", True)
    assert rec["strategy"] == "lp-ft" and rec["runner_up"] is None
    assert any("Only one strategy" in r for r in rec["reasons"])
    assert any("No scratch run" in r for r in rec["reasons"])


def test_recommend_ranks_on_the_sizes_every_strategy_finished():
    # Over all sizes "a" would win (0.667 vs 0.65); on the common sizes 8 and 16, "b" does.
    frame = cells({"a": (0.5, 0.6, 0.9), "b": (0.6, 0.7, None)})
    rec = recommend(frame, "accuracy", True)
    assert rec["strategy"] == "b" and rec["sizes"] == [8, 16]
    assert any("missing: a" not in r and "missing: b at n=64" in r for r in rec["reasons"])


def test_recommend_lower_is_better_and_seed_noise_caution():
    frame = cells({"scratch": (3.0, 2.5, 2.0), "full": (2.6, 2.2, 1.9), "lora": (2.61, 2.21, 1.91)},
                  metric="test_rmse", seeds=(0, 1, 2), offsets={0: -0.1, 1: 0.1, 2: 0.0},
                  cost={"full": 5.0, "lora": 50.0})
    rec = recommend(frame, "rmse", False)
    assert rec["strategy"] == "full"
    text = " ".join(rec["reasons"])
    assert "lowest mean RMSE" in text
    assert "within seed noise" in text
    assert "−0.400 at n=8" in text  # full minus scratch, paired: an improvement for an error


def test_recommend_without_results_raises_value_error():
    empty = cells({"lp-ft": (0.5,)}).iloc[0:0]
    with pytest.raises(ValueError):
        recommend(empty, "accuracy", True)
    with pytest.raises(ValueError, match="rmse"):
        recommend(cells({"lp-ft": (0.5,)}), "rmse", False)


# -- write_report -------------------------------------------------------------------
EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    frame = cells({"scratch": SCRATCH, "linear-probe": (0.55, 0.58, 0.62), "lp-ft": (0.58, 0.63, 0.70),
                   f"x{EVIL}$y": (0.5, 0.66, 0.71)},
                  seeds=(0, 1, 2), offsets={0: -0.01, 1: 0.0, 2: 0.012})
    out = tmp_path_factory.mktemp("report")
    paths = write_report(out, frame, meta(data=f"tweets{EVIL}", command=f"exapt compare '{EVIL}'"))
    return out, paths


def figures(page: str) -> dict[str, bytes]:
    found = re.findall(r'<figure class="exapt-figure" id="([^"]+)"><img src="data:image/png;base64,([^"]*)"', page)
    return {fid: base64.b64decode(data) for fid, data in found}


def test_write_report_writes_both_files_with_four_figures(full_report):
    import matplotlib.pyplot as plt

    out, paths = full_report
    assert paths == {"html": out / "report.html", "md": out / "report.md"}
    page = paths["html"].read_text()
    assert page.count("<figure") == 4
    figs = figures(page)
    assert list(figs) == list(FIGURE_IDS)
    for png in figs.values():
        assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.md"]  # no temp file left
    assert plt.get_fignums() == []  # every figure closed


def test_report_is_self_contained_and_escaped(full_report):
    page = full_report[1]["html"].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Use lp-ft." in page


def test_report_markdown_has_the_tables(full_report):
    md = full_report[1]["md"].read_text()
    assert md.startswith("# exapt compare: tweets")
    assert "**Use lp-ft.**" in md
    assert "| strategy | n=8 | n=16 | n=64 |" in md
    assert "| lp-ft | 0.581 ± 0.011 | 0.631 ± 0.011 | 0.701 ± 0.011 |" in md
    assert "| lp-ft | +0.180 ± 0.000 | +0.130 ± 0.000 | +0.100 ± 0.000 |" in md
    assert "~32 (4.0x)" in md  # linear-probe at n=8 reaches 0.55: scratch needs 32 (see above)
    assert "exapt compare '" in md and "data: tweets" in md


def test_report_without_scratch_replaces_gain_figures_by_notes(tmp_path):
    frame = cells({"linear-probe": (0.55, 0.58, 0.62), "lp-ft": (0.58, 0.63, 0.70)})
    paths = write_report(tmp_path, frame, meta(strategies=["linear-probe", "lp-ft"], seeds=1))
    page = paths["html"].read_text()
    assert set(figures(page)) == {"fig-learning-curve", "fig-cost"}
    assert page.count("<img") == 2
    assert 'id="fig-gain-note"' in page and 'id="fig-labels-saved-note"' in page
    assert "No scratch run is in this panel" in paths["md"].read_text()


def test_report_regression_partial_panel(tmp_path):
    frame = cells({"scratch": (3.0, 2.5, 2.0), "full": (2.6, None, 1.9)}, metric="test_rmse", seeds=(0, 1))
    frame = frame[frame["cell"] != "full-n64-s1"]  # one seed missing: its gain counts one pair
    paths = write_report(tmp_path, frame, meta(task="regression", metric="rmse", higher_is_better=False,
                                               strategies=["scratch", "full"], seeds=2, complete=False))
    page = paths["html"].read_text()
    assert len(figures(page)) == 4
    assert "Partial results: 9 of 12 cells" in page
    assert "| full | −0.400 ± 0.000 | – | −0.100 (1 paired) |" in paths["md"].read_text()
    assert "lower is better" in page


def test_report_with_no_finished_cell(tmp_path):
    frame = cells({"lp-ft": (0.5,)}).iloc[0:0]
    paths = write_report(tmp_path, frame, meta(complete=False))
    assert "No cell has finished" in paths["html"].read_text()
    assert "No cell has finished" in paths["md"].read_text()
    paths = write_report(tmp_path, cells({"lp-ft": (0.5,)}), meta(metric="rmse"))  # no test_rmse column
    assert "Nothing to compare: results have no column for metric 'rmse'" in paths["md"].read_text()
