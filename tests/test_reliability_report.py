"""compare's reliability figure and table (issue 22): the best cell of each strategy, its
bins as the run saved them, and an ECE equal to decision.py's."""
from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd

from exapt.compare import reliability_report as R
from exapt.compare.class_report import row_columns
from exapt.compare.report import FIGURE_IDS, write_report
from exapt.decision import calibration_report, expected_calibration_error


def _probs(seed: int, sharp: float):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(300, 3)) * sharp
    truth = rng.integers(0, 3, 300)
    logits[np.arange(300), truth] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probs, truth


def _frame() -> tuple[pd.DataFrame, dict]:
    rows, eces = [], {}
    for strategy, sharp in (("scratch", 0.5), ("linear-probe", 1.0), ("lp-ft", 3.0)):
        for n, seed, acc in ((8, 0, 0.5), (64, 0, 0.7), (64, 1, 0.65)):
            probs, truth = _probs(seed * 10 + n, sharp)
            metrics = {"calibration": calibration_report(probs, truth)}
            rows.append({"cell": f"{strategy}-{n}-{seed}", "strategy": strategy, "n": n, "seed": seed, "n_train": n,
                         "test_accuracy": acc + (0.05 if strategy == "lp-ft" else 0), "trainable_parameters": 10,
                         "total_parameters": 100, "train_seconds": 1.0, "cell_seconds": 2.0, "peak_rss_mb": 100.0,
                         "epochs_run": 3, **row_columns(metrics)})
            if (n, seed) == (64, 0):  # each strategy's best cell
                eces[strategy] = expected_calibration_error(probs, truth)
    return pd.DataFrame(rows), eces


def _meta() -> dict:
    return {"data": "tweets", "model": "minilm-l6", "task": "classification", "metric": "accuracy",
            "higher_is_better": True, "n_test": 300, "strategies": ["scratch", "linear-probe", "lp-ft"],
            "n_values": [8, 64], "seeds": 2, "command": "exapt compare tweets", "exapt_version": "0"}


def test_row_columns_carry_the_bins_a_run_saved():
    probs, truth = _probs(0, 1.0)
    cols = row_columns({"calibration": calibration_report(probs, truth)})
    assert cols["test_ece"] == expected_calibration_error(probs, truth) and R.COLUMN in cols
    assert R.COLUMN not in row_columns({})


def test_report_shows_each_strategys_best_cell_reliability(tmp_path):
    frame, eces = _frame()
    paths = write_report(tmp_path, frame, _meta())
    page = paths["html"].read_text()
    found = dict(re.findall(r'<figure class="exapt-figure" id="([^"]+)"><img src="data:image/png;base64,([^"]*)"', page))
    assert list(found) == [*FIGURE_IDS, R.FIGURE_ID]
    assert base64.b64decode(found[R.FIGURE_ID]).startswith(b"\x89PNG")
    md = paths["md"].read_text()
    assert "## Reliability of each strategy's best cell" in md
    for strategy, value in eces.items():
        line = next(x for x in md.splitlines() if x.startswith(f"| {strategy} | n=64, seed 0"))
        assert f"| {value:.3f} |" in line
    # the sharpest model is the worst calibrated here
    assert eces["lp-ft"] > eces["scratch"]


def test_a_panel_without_bins_renders_as_before(tmp_path):
    frame, _ = _frame()
    paths = write_report(tmp_path, frame.drop(columns=[R.COLUMN]), _meta())
    assert R.FIGURE_ID not in paths["html"].read_text()
    assert "Reliability" not in paths["md"].read_text()
