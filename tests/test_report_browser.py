"""The compare report as a reader sees it: opened in headless Chromium, figures drawn.

Parsing the HTML proves the images are there; only a browser proves they decode, lay
out visibly and are not blank, and that the page asks for nothing from the network.
Chromium comes from Debian (/usr/bin/chromium), not from Playwright's download, so the
test runs offline; a missing browser is a failed setup, not a reason to skip.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from exapt.compare.report import FIGURE_IDS, write_report

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def _results() -> pd.DataFrame:
    rows = []
    curves = {"scratch": (0.40, 0.50, 0.60), "linear-probe": (0.55, 0.58, 0.62), "lp-ft": (0.58, 0.63, 0.70),
              "lora": (0.57, 0.64, 0.69)}
    for strategy, values in curves.items():
        for n, value in zip((8, 16, 64), values):
            for seed, offset in enumerate((-0.01, 0.0, 0.012)):
                rows.append({"cell": f"{strategy}-n{n}-s{seed}", "strategy": strategy, "n": n, "seed": seed,
                             "n_train": 2 * n, "test_accuracy": value + offset, "test_macro_f1": value - 0.02,
                             "trainable_parameters": 5 if strategy == "lora" else 1000, "total_parameters": 1000,
                             "train_seconds": 1.0, "cell_seconds": 4.0 + n / 8, "peak_rss_mb": 450.0,
                             "epochs_run": 3})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    meta = {"data": "tweets", "model": "minilm-l6", "task": "classification", "metric": "accuracy",
            "higher_is_better": True, "n_test": 200, "strategies": ["scratch", "linear-probe", "lp-ft", "lora"],
            "n_values": [8, 16, 64], "seeds": 3, "command": "exapt compare tweets", "exapt_version": "0.1.0"}
    return write_report(tmp_path_factory.mktemp("browser"), _results(), meta)["html"]


def _pixels(png: bytes) -> np.ndarray:
    import matplotlib.image as mpimg

    return mpimg.imread(io.BytesIO(png), format="png")[..., :3].astype(float)


def _assert_not_blank(png: bytes, what: str) -> None:
    """Clearly varying pixels, and more than 1% of them unlike the background (top-left corner)."""
    px = _pixels(png)
    assert px.std() > 0.02, f"{what} looks blank (pixel std {px.std():.4f})"
    differs = np.abs(px - px[0, 0]).max(axis=-1) > 0.05
    assert differs.mean() > 0.01, f"{what} is {100 * (1 - differs.mean()):.1f}% background"


def test_report_figures_render_in_chromium(report):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: run `make test` (it installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    outside = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda r: outside.append(r.url)
                    if not r.url.startswith(("file:", "data:")) else None)
            page.goto(report.resolve().as_uri(), wait_until="load")
            images = page.locator("figure.exapt-figure img")
            assert images.count() == len(FIGURE_IDS)
            for i in range(images.count()):
                img = images.nth(i)
                fid = img.evaluate("e => e.closest('figure').id")
                assert img.evaluate("e => e.complete && e.naturalWidth") > 0, f"{fid} did not load"
                img.scroll_into_view_if_needed()
                assert img.is_visible(), f"{fid} is not visible"
                box = img.bounding_box()
                assert box and box["width"] > 200 and box["height"] > 100, f"{fid} is laid out at {box}"
                _assert_not_blank(img.screenshot(), fid)
            _assert_not_blank(page.screenshot(full_page=True), "the full page")
        finally:
            browser.close()
    assert outside == [], f"the report fetched {outside}"
