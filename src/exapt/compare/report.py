"""The compare report: one self-contained HTML page and its Markdown twin.

This module holds the numbers both pages show (`_Report`); report_figures.py draws the
figures and report_pages.py renders the two pages.

report.html opens anywhere, offline and years later: no external URL, no JavaScript,
figures as base64 PNG inside the page. report.md carries the same numbers for the
terminal (no images). Both are rewritten after every finished cell, so each is written
to a temporary file in the same folder and moved into place with os.replace: a reader
never sees half a report.

Every string that came from the user (data and model names, strategy specs, the command
line) goes through html.escape in the page; in figures, `$` is escaped so that
matplotlib does not read a name as mathtext.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from . import analysis as A
from . import forgetting_report as F
from .recommendation import recommend
from .report_figures import FIGURE_IDS, colours, mb, short_saved
from .report_pages import render_html, render_markdown

__all__ = ["FIGURE_IDS", "write_report", "write_report_with_recommendation"]


# -- public -------------------------------------------------------------------------
def write_report(out_dir: Path, results: pd.DataFrame, meta: dict) -> dict[str, Path]:
    """Write report.html and report.md into `out_dir` (atomically); return {"html", "md"} paths.

    Works on a partial panel (missing sizes or strategies), on one seed or one strategy,
    without a scratch baseline (the gain and labels-saved parts then say so), and on no
    finished cell at all (a page that says nothing has finished yet).
    """
    return write_report_with_recommendation(out_dir, results, meta)[0]


def write_report_with_recommendation(out_dir: Path, results: pd.DataFrame, meta: dict) -> tuple[dict, dict | None]:
    """`write_report`, also returning the recommendation the report states (None when
    nothing can be ranked), so callers never compute a second, possibly different one."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = _Report(results, meta)
    paths = {"html": out_dir / "report.html", "md": out_dir / "report.md"}
    _atomic_write(paths["html"], render_html(report))
    _atomic_write(paths["md"], render_markdown(report))
    return paths, report.rec


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- the analysis, once -------------------------------------------------------------
class _Report:
    """Runs the analysis once and renders it twice (HTML, Markdown) from the same numbers."""

    def __init__(self, results: pd.DataFrame, meta: dict):
        self.meta = dict(meta or {})
        self.metric = str(self.meta.get("metric") or "accuracy")
        self.higher = bool(self.meta.get("higher_is_better", True))
        self.baseline = "scratch"
        self.label = A.metric_label(self.metric)
        self.problem = f"No cell has finished with a test {self.label} yet: nothing to compare."
        try:
            self.col = A.metric_column(results, self.metric)
        except ValueError as err:
            self.col = None
            if len(results):
                self.problem = f"Nothing to compare: {err}."
        self.results = results if self.col is None else results[results[self.col].notna()]
        if self.col is None or self.results.empty:
            self.results = results.iloc[0:0]
            self.order: list[str] = []
            self.summary = pd.DataFrame(columns=A.SUMMARY_COLUMNS)
            self.gain = pd.DataFrame(columns=A.GAIN_COLUMNS)
            self.saved = pd.DataFrame(columns=A.LABELS_COLUMNS)
            self.forgetting = pd.DataFrame(columns=F.FORGETTING_COLUMNS)
            self.rec = None
            self.sizes: list = []
            return
        self.order = A.strategy_order(self.results, self.meta.get("strategies"))
        rank = {s: i for i, s in enumerate(self.order)}
        self.results = self.results.sort_values("strategy", key=lambda s: s.astype(str).map(rank), kind="stable")
        self.summary = A.summarize(self.results, self.col)
        self.gain = A.transfer_gain(self.results, self.col, self.baseline)
        self.saved = A.labels_saved(self.summary, self.baseline, self.higher)
        self.forgetting = F.forgetting_summary(self.results, self.col)
        self.rec = recommend(self.results, self.col, self.higher, self.baseline)
        self.sizes = sorted(self.summary["n"].unique())
        self.has_baseline = self.baseline in self.order
        self.others = [s for s in self.order if s != self.baseline]
        self.colours = colours(self.order, self.baseline)
        self.size_labels = _size_labels(self.results)
        self.cost = self._cost_table()

    # -- shared pieces --------------------------------------------------------------
    def title(self) -> str:
        data, model = self.meta.get("data"), self.meta.get("model")
        if data and model:
            return f"exapt compare: {data} on {model}"
        return "exapt compare"

    def subtitle(self) -> str:
        parts = [str(self.meta.get("task") or ""), f"primary metric: test {self.label} "
                 f"({'higher' if self.higher else 'lower'} is better)"]
        if self.meta.get("n_test"):
            parts.append(f"{self.meta['n_test']} test examples")
        if self.meta.get("seeds"):
            parts.append(f"{self.meta['seeds']} seed{'s' if int(self.meta['seeds']) != 1 else ''} per size")
        return " · ".join(p for p in parts if p)

    def progress_note(self) -> str | None:
        """A partial panel says how far it got, so nobody mistakes it for the final word."""
        planned = None
        try:
            planned = len(self.meta["strategies"]) * len(self.meta["n_values"]) * int(self.meta["seeds"])
        except (KeyError, TypeError, ValueError):
            pass
        done = len(self.results)
        if self.meta.get("complete") is False or (planned and done < planned):
            of = f" of {planned}" if planned else ""
            return f"Partial results: {done}{of} cells have finished; the report is rewritten as more finish."
        return None

    def left_out_note(self) -> str | None:
        """The default panel's strategies this model cannot run (compare's _unfit_strategies)."""
        left = self.meta.get("left_out") or {}
        if not left:
            return None
        return "Left out of the default panel, since the model cannot run them: " + "; ".join(left.values()) + "."

    def n_text(self, n) -> str:
        return self.size_labels.get(n, A.fmt_n(n))

    def _cost_table(self) -> pd.DataFrame:
        rows = []
        for s in self.order:
            r = self.results[self.results["strategy"].astype(str) == s]

            def col(name, frame=r):
                return pd.to_numeric(frame[name], errors="coerce") if name in frame else pd.Series(dtype=float)

            total = col("total_parameters").replace(0, np.nan)
            rows.append({
                "strategy": s, "cells": len(r),
                "cell_seconds": A.mean_or_nan(col("cell_seconds")),
                "train_seconds": A.mean_or_nan(col("train_seconds")),
                "peak_rss_mb": A.mean_or_nan(col("peak_rss_mb")),
                "trainable_parameters": A.mean_or_nan(col("trainable_parameters")),
                "trainable_fraction": A.mean_or_nan(col("trainable_parameters") / total),
                "epochs_run": A.mean_or_nan(col("epochs_run")),
            })
        return pd.DataFrame(rows)

    def grid(self, strategies, frame: pd.DataFrame, cell) -> tuple[list[str], list[list[str]]]:
        """strategy x n table: `cell(row)` formats the frame's row for (strategy, n); "–" when absent."""
        head = ["strategy"] + [f"n={self.n_text(n)}" for n in self.sizes]
        body = []
        for s in strategies:
            row = [s]
            for n in self.sizes:
                hit = frame[(frame["strategy"] == s) & (frame["n"] == n)]
                row.append("–" if hit.empty else cell(hit.iloc[0]))
            body.append(row)
        return head, body

    def summary_grid(self) -> tuple[list[str], list[list[str]]]:
        """strategy x n: "mean ± std" (and "(k seeds)" where fewer than the panel's seeds)."""
        seeds = self.meta.get("seeds")

        def cell(h) -> str:
            text = A.fmt_metric(h["mean"])
            if np.isfinite(h["std"]):
                text += f" ± {A.fmt_metric(h['std'])}"
            if seeds and int(h["count"]) < int(seeds):
                text += f" ({int(h['count'])} of {int(seeds)} seeds)"
            return text

        return self.grid(self.order, self.summary, cell)

    def gain_grid(self) -> tuple[list[str], list[list[str]]]:
        seeds = self.meta.get("seeds")

        def cell(g) -> str:
            text = A.fmt_signed(g["gain"])
            if np.isfinite(g["std"]):
                text += f" ± {A.fmt_metric(g['std'])}"
            if not seeds or int(g["count"]) < int(seeds):  # say so only when a seed is missing
                text += f" ({int(g['count'])} paired)"
            return text

        return self.grid(self.others, self.gain, cell)

    def saved_grid(self) -> tuple[list[str], list[list[str]]]:
        return self.grid(self.others, self.saved, short_saved)

    def cost_grid(self) -> tuple[list[str], list[list[str]]]:
        head = ["strategy", "cells", "time per cell", "training time", "peak RSS", "trainable parameters",
                "epochs"]
        body = []
        for r in self.cost.itertuples(index=False):
            params = "n/a" if not np.isfinite(r.trainable_parameters) else (
                f"{_si(r.trainable_parameters)} ({A.fmt_fraction(r.trainable_fraction)})")
            body.append([r.strategy, str(r.cells), A.fmt_seconds(r.cell_seconds), A.fmt_seconds(r.train_seconds),
                         mb(r.peak_rss_mb), params,
                         "n/a" if not np.isfinite(r.epochs_run) else f"{r.epochs_run:.1f}"])
        return head, body

    def ranking_grid(self) -> tuple[list[str], list[list[str]]]:
        head = ["rank", "strategy", f"mean {self.label} over sizes", "sizes", "time per cell", "trainable"]
        body = []
        for r in self.rec["table"].itertuples(index=False):
            body.append([str(r.rank), r.strategy, A.fmt_metric(r.score), r.sizes, A.fmt_seconds(r.cell_seconds),
                         A.fmt_fraction(r.trainable_fraction)])
        return head, body

    def settings(self) -> list[tuple[str, str]]:
        keys = ["data", "model", "task", "metric", "higher_is_better", "n_test", "strategies", "n_values",
                "seeds", "exapt_version"]
        keys += [k for k in self.meta if k not in keys and k != "command"]
        out = []
        for k in keys:
            if k not in self.meta:
                continue
            v = self.meta[k]
            out.append((k, ", ".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)))
        return out

    def gain_note(self) -> str:
        if not self.has_baseline:
            return self.no_baseline_text()
        if self.gain.empty:
            return (f"No other strategy has a seed in common with {self.baseline} at the same size yet, so "
                    "there is no paired gain to show.")
        return ""

    def saved_note(self) -> str:
        if not self.has_baseline:
            return self.no_baseline_text()
        if self.saved.empty:
            return f"Only {self.baseline} has results so far, so there are no labels saved to show."
        return ""

    def no_baseline_text(self) -> str:
        return (f"No {self.baseline} run is in this panel, so the gain over training from scratch and the "
                f"labels saved are not measured. Add `{self.baseline}` to the strategies to see them.")


# -- small helpers ------------------------------------------------------------------
def _size_labels(results: pd.DataFrame) -> dict:
    """n -> tick text; a size given as 'all' reads "all (~N)" rather than a bare number."""
    out = {}
    if "n_label" in results.columns:
        for n, lab in zip(pd.to_numeric(results["n"]), results["n_label"].astype(str)):
            if lab.strip().lower() == "all":
                out[n] = f"all (~{A.fmt_n(n)})"
    return out


def _si(value: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.0f}"
