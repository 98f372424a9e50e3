"""The compare report: one self-contained HTML page and its Markdown twin.

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

import base64
import html
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from . import analysis as A
from . import forgetting_report as F
from .recommendation import recommend
from ..figures import png_bytes

FIGURE_IDS = ("fig-learning-curve", "fig-gain", "fig-labels-saved", "fig-cost")
DPI = 110
SCRATCH_COLOUR = "#4d4d4d"
HATCH = {"more than": "///", "at most": "..."}
STYLE = {
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.6, "figure.facecolor": "white",
}
CSS = """
:root { color-scheme: light; }
body { margin: 0; background: #f6f7f9; color: #1d2330;
  font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1040px; margin: 0 auto; padding: 28px 28px 60px; background: #fff; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.25em; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #e3e6ea; }
h3 { font-size: 1.05em; margin: 24px 0 8px; }
.sub { color: #5a6272; margin: 0 0 18px; }
.recommendation { background: #eef6ee; border-left: 4px solid #2e7d32; padding: 12px 16px; margin: 10px 0; }
.caution { color: #8a4b00; }
.note { background: #fff8e6; border-left: 4px solid #e0a100; padding: 10px 14px; }
figure.exapt-figure { margin: 18px 0 28px; }
figure.exapt-figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { color: #4a5262; font-size: 0.92em; margin-top: 6px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.92em; }
th, td { border: 1px solid #dde1e6; padding: 4px 9px; text-align: right; white-space: nowrap; }
th.text, td.text { text-align: left; }
thead th { background: #f0f2f5; }
tbody tr:nth-child(even) { background: #fafbfc; }
.settings th, .settings td { white-space: normal; text-align: left; }
pre { background: #f0f2f5; padding: 10px 14px; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
"""


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
    _atomic_write(paths["html"], report.html())
    _atomic_write(paths["md"], report.markdown())
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
        self.colours = _colours(self.order, self.baseline)
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

    def _grid(self, strategies, frame: pd.DataFrame, cell) -> tuple[list[str], list[list[str]]]:
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

        return self._grid(self.order, self.summary, cell)

    def gain_grid(self) -> tuple[list[str], list[list[str]]]:
        seeds = self.meta.get("seeds")

        def cell(g) -> str:
            text = A.fmt_signed(g["gain"])
            if np.isfinite(g["std"]):
                text += f" ± {A.fmt_metric(g['std'])}"
            if not seeds or int(g["count"]) < int(seeds):  # say so only when a seed is missing
                text += f" ({int(g['count'])} paired)"
            return text

        return self._grid(self.others, self.gain, cell)

    def saved_grid(self) -> tuple[list[str], list[list[str]]]:
        return self._grid(self.others, self.saved, _short_saved)

    def cost_grid(self) -> tuple[list[str], list[list[str]]]:
        head = ["strategy", "cells", "time per cell", "training time", "peak RSS", "trainable parameters",
                "epochs"]
        body = []
        for r in self.cost.itertuples(index=False):
            params = "n/a" if not np.isfinite(r.trainable_parameters) else (
                f"{_si(r.trainable_parameters)} ({A.fmt_fraction(r.trainable_fraction)})")
            body.append([r.strategy, str(r.cells), A.fmt_seconds(r.cell_seconds), A.fmt_seconds(r.train_seconds),
                         _mb(r.peak_rss_mb), params,
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

    def no_baseline_text(self) -> str:
        return (f"No {self.baseline} run is in this panel, so the gain over training from scratch and the "
                f"labels saved are not measured. Add `{self.baseline}` to the strategies to see them.")

    # -- figures --------------------------------------------------------------------
    def figures(self) -> list[tuple[str, str | None, str, str]]:
        """[(id, base64 PNG or None, caption, note when there is no figure)] in page order."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = []
        better = "higher" if self.higher else "lower"
        with plt.rc_context(STYLE):
            out.append((FIGURE_IDS[0], _png(plt, self._fig_learning_curve(plt)),
                        f"Test {self.label} against labelled examples per class (log scale, ticks at the "
                        f"measured sizes; {better} is better). Line: mean over seeds; band: min to max over "
                        "seeds; dots: single seeds.", ""))
            gain_note = self._gain_note()
            out.append((FIGURE_IDS[1], None if gain_note else _png(plt, self._fig_gain(plt)),
                        f"Change in test {self.label} over {self.baseline} at the same size, paired by seed: "
                        f"mean ± std of the per-seed differences. {'Above' if self.higher else 'Below'} zero "
                        f"means better than {self.baseline}.", gain_note))
            saved_note = self._saved_note()
            out.append((FIGURE_IDS[2], None if saved_note else _png(plt, self._fig_labels_saved(plt)),
                        f"Labelled examples per class that {self.baseline} would need to match each strategy's "
                        f"mean {self.label}, read off {self.baseline}'s curve (interpolated in log n between "
                        "measured sizes). The dashed mark is the strategy's own n: a bar above it means labels "
                        f"saved. Hatched: beyond the measured sizes ({self.baseline} did not get there, or "
                        "already did at its smallest size).", saved_note))
            out.append((FIGURE_IDS[3], _png(plt, self._fig_cost(plt)),
                        "Mean wall time per cell and mean peak memory (RSS) per strategy; the label on each "
                        "time bar gives the share of parameters trained.", ""))
            if F.has_source(self):
                out.append((F.FIGURE_ID, _png(plt, F.figure(self, plt)), F.caption(self), ""))
        return out

    def _gain_note(self) -> str:
        if not self.has_baseline:
            return self.no_baseline_text()
        if self.gain.empty:
            return (f"No other strategy has a seed in common with {self.baseline} at the same size yet, so "
                    "there is no paired gain to show.")
        return ""

    def _saved_note(self) -> str:
        if not self.has_baseline:
            return self.no_baseline_text()
        if self.saved.empty:
            return f"Only {self.baseline} has results so far, so there are no labels saved to show."
        return ""

    def _x_axis(self, ax, sizes) -> None:
        from matplotlib.ticker import NullLocator

        ax.set_xscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([self.n_text(n) for n in sizes])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlim(min(sizes) / 1.35, max(sizes) * 1.35)
        ax.set_xlabel("labelled examples per class (n)")

    def _offsets(self, names) -> dict[str, float]:
        """Small multiplicative x offsets so that points and error bars of strategies do not overlap."""
        k = len(names)
        return {s: math.exp(0.035 * (i - (k - 1) / 2)) for i, s in enumerate(names)}

    def _fig_learning_curve(self, plt):
        fig, ax = plt.subplots(figsize=(8.6, 4.8))
        shift = self._offsets(self.order)
        for s in self.order:
            rows = self.summary[self.summary["strategy"] == s].sort_values("n")
            x = rows["n"].to_numpy(float) * shift[s]
            c = self.colours[s]
            dashed = "--" if s == self.baseline else "-"
            ax.plot(x, rows["mean"], dashed, marker="o", ms=5, lw=2, color=c, label=_mpl(s), zorder=3)
            if len(rows) > 1:
                ax.fill_between(x, rows["min"], rows["max"], color=c, alpha=0.13, lw=0, zorder=1)
            pts = self.results[self.results["strategy"].astype(str) == s]
            ax.scatter(pd.to_numeric(pts["n"]).to_numpy(float) * shift[s], pts[self.col], s=14, color=c,
                       alpha=0.55, edgecolors="none", zorder=2)
        self._x_axis(ax, self.sizes)
        ax.set_ylabel(f"test {self.label}" + ("" if self.higher else " (lower is better)"))
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="strategy")
        return fig

    def _fig_gain(self, plt):
        fig, ax = plt.subplots(figsize=(8.6, 4.4))
        names = [s for s in self.others if s in set(self.gain["strategy"])]
        shift = self._offsets(names)
        for s in names:
            rows = self.gain[self.gain["strategy"] == s].sort_values("n")
            x = rows["n"].to_numpy(float) * shift[s]
            ax.errorbar(x, rows["gain"], yerr=rows["std"].fillna(0).to_numpy(float), marker="o", ms=5, lw=1.8,
                        capsize=3, color=self.colours[s], label=_mpl(s))
        ax.axhline(0, color="black", lw=1, zorder=0)
        self._x_axis(ax, sorted(self.gain["n"].unique()))
        ax.set_ylabel(f"{self.label}: strategy − {_mpl(self.baseline)}\n(paired by seed)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="strategy")
        return fig

    def _fig_labels_saved(self, plt):
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
        from matplotlib.ticker import NullLocator

        names = [s for s in self.others if s in set(self.saved["strategy"])]
        sizes = sorted(self.saved["n"].unique())
        base_sizes = sorted(self.summary.loc[self.summary["strategy"] == self.baseline, "n"])
        fig, ax = plt.subplots(figsize=(min(11.0, max(6.5, 3.2 + 0.42 * len(names) * len(sizes))), 4.8))
        width = 0.8 / max(len(names), 1)
        low = min(base_sizes + sizes) / 2.2
        top = max(self.saved["baseline_n_needed"].max(), max(sizes)) * 2.6
        for j, s in enumerate(names):
            for i, n in enumerate(sizes):
                hit = self.saved[(self.saved["strategy"] == s) & (self.saved["n"] == n)]
                if hit.empty:
                    continue
                r = hit.iloc[0]
                x = i - 0.4 + width * (j + 0.5)
                exact = r["relation"] == "="
                hatch = None if exact else HATCH[r["relation"]]
                ax.bar(x, r["baseline_n_needed"] - low, bottom=low, width=width * 0.92, color=self.colours[s],
                       alpha=0.9 if exact else 0.45, hatch=hatch, edgecolor="white" if exact else self.colours[s],
                       lw=0.8)
                text = _short_saved(r).replace(" (", "\n(")
                ax.text(x, r["baseline_n_needed"] * 1.08, text, ha="center", va="bottom", fontsize=7.5)
        for i, n in enumerate(sizes):
            ax.plot([i - 0.42, i + 0.42], [n, n], "--", color="black", lw=1.1, zorder=4)
        ax.set_yscale("log")
        ax.set_ylim(low, top)
        ticks = sorted(set(base_sizes))
        ax.set_yticks(ticks)
        ax.set_yticklabels([self.n_text(n) for n in ticks])
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_xticks(range(len(sizes)))
        ax.set_xticklabels([f"strategy at n={self.n_text(n)}" for n in sizes])
        ax.set_xlim(-0.6, len(sizes) - 0.4)
        ax.grid(axis="x", visible=False)
        ax.set_ylabel(f"{_mpl(self.baseline)} labels per class needed")
        handles = [Patch(color=self.colours[s], label=_mpl(s)) for s in names]
        handles += [Line2D([], [], ls="--", color="black", label="the strategy's own n (no saving)"),
                    Patch(facecolor="white", edgecolor="grey", hatch=HATCH["more than"],
                          label=f"more than the largest n ({_mpl(self.baseline)} never got there)"),
                    Patch(facecolor="white", edgecolor="grey", hatch=HATCH["at most"],
                          label="at most the smallest n measured")]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return fig

    def _fig_cost(self, plt):
        names = list(self.cost["strategy"])
        fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 0.55 * len(names) + 1.6), sharey=True)
        y = np.arange(len(names))
        colours = [self.colours[s] for s in names]
        secs = self.cost["cell_seconds"].to_numpy(float)
        mem = self.cost["peak_rss_mb"].to_numpy(float)
        for ax, values, title, fmt in ((left, secs, "mean time per cell (s)", A.fmt_seconds),
                                       (right, mem, "mean peak RSS (MB)", _mb)):
            shown = np.where(np.isfinite(values), values, 0.0)
            ax.barh(y, shown, color=colours, height=0.62)
            span = float(np.nanmax(shown)) if np.any(shown > 0) else 1.0
            ax.set_xlim(0, span * 1.6)
            for yi, v, s in zip(y, values, names):
                text = fmt(v) if np.isfinite(v) else "not measured"
                if ax is left:
                    frac = self.cost.loc[self.cost["strategy"] == s, "trainable_fraction"].iloc[0]
                    if np.isfinite(frac):
                        text += f" · {A.fmt_fraction(frac)} trainable"
                ax.text((v if np.isfinite(v) else 0) + span * 0.02, yi, text, va="center", fontsize=8.5)
            ax.set_title(title, loc="left")
            ax.grid(axis="y", visible=False)
            if not np.any(np.isfinite(values)):
                ax.set_xticks([])
        left.set_yticks(y)
        left.set_yticklabels([_mpl(s) for s in names])
        left.invert_yaxis()
        fig.tight_layout()
        return fig

    # -- HTML -----------------------------------------------------------------------
    def html(self) -> str:
        e = html.escape
        parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                 '<meta name="viewport" content="width=device-width, initial-scale=1">',
                 f"<title>{e(self.title())}</title>", f"<style>{CSS}</style>", "</head>", "<body>", "<main>",
                 f"<h1>{e(self.title())}</h1>", f'<p class="sub">{e(self.subtitle())}</p>']
        note = self.progress_note()
        if note:
            parts.append(f'<p class="note">{e(note)}</p>')
        if self.rec is None:
            parts.append(f'<p class="note">{e(self.problem)}</p>')
        else:
            parts += ['<section id="recommendation">', "<h2>Recommendation</h2>",
                      f'<p class="recommendation"><strong>Use {e(self.rec["strategy"])}.</strong> '
                      + " ".join(_html_reason(r) for r in self.rec["reasons"]) + "</p>", "</section>"]
            parts += ['<section id="figures">', "<h2>Figures</h2>"]
            for fid, png, caption, fig_note in self.figures():
                if png is None:
                    parts.append(f'<p class="note" id="{fid}-note">{e(fig_note)}</p>')
                else:
                    parts.append(f'<figure class="exapt-figure" id="{fid}">'
                                 f'<img src="data:image/png;base64,{png}" alt="{e(caption)}">'
                                 f"<figcaption>{e(caption)}</figcaption></figure>")
            parts.append("</section>")
            parts += ['<section id="tables">', "<h2>Tables</h2>",
                      f"<h3>Test {e(self.label)}: mean ± std over seeds</h3>", _html_table(*self.summary_grid()),
                      f"<h3>Gain over {e(self.baseline)} (paired by seed)</h3>"]
            if self.has_baseline and not self.gain.empty:
                parts.append(_html_table(*self.gain_grid()))
            else:
                parts.append(f'<p class="note">{e(self._gain_note())}</p>')
            parts.append(f"<h3>Labels saved: what {e(self.baseline)} would need to match</h3>")
            if self.has_baseline and not self.saved.empty:
                parts.append(_html_table(*self.saved_grid()))
            else:
                parts.append(f'<p class="note">{e(self._saved_note())}</p>')
            if F.has_source(self):
                parts += [f"<h3>{e(F.heading(self))}</h3>", _html_table(*F.grid(self))]
            parts += ["<h3>Time and memory</h3>", _html_table(*self.cost_grid()),
                      "<h3>Ranking</h3>", _html_table(*self.ranking_grid(), left=2), "</section>"]
        parts += ['<section id="settings">', "<h2>Settings</h2>", '<table class="settings"><tbody>']
        parts += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in self.settings()]
        parts += ["</tbody></table>", "</section>", '<section id="reproduce">', "<h2>How to reproduce</h2>"]
        command = self.meta.get("command")
        if command:
            parts.append(f"<pre><code>{e(str(command))}</code></pre>")
        else:
            parts.append("<p>The command line was not recorded.</p>")
        parts += ["</section>", "</main>", "</body>", "</html>", ""]
        return "\n".join(parts)

    # -- Markdown -------------------------------------------------------------------
    def markdown(self) -> str:
        lines = [f"# {_md(self.title())}", "", _md(self.subtitle()), ""]
        note = self.progress_note()
        if note:
            lines += [f"> {_md(note)}", ""]
        if self.rec is None:
            lines += [_md(self.problem), ""]
        else:
            lines += ["## Recommendation", "",
                      f"**Use {_md(self.rec['strategy'])}.** " + " ".join(_md(r) for r in self.rec["reasons"]), "",
                      f"## Test {self.label} (mean ± std over seeds)", "", _md_table(*self.summary_grid()), "",
                      f"## Gain over {_md(self.baseline)} (paired by seed)", ""]
            if self.has_baseline and not self.gain.empty:
                lines += [_md_table(*self.gain_grid()), ""]
            else:
                lines += [_md(self._gain_note()), ""]
            lines += [f"## Labels saved: what {_md(self.baseline)} would need to match", ""]
            if self.has_baseline and not self.saved.empty:
                lines += [_md_table(*self.saved_grid()), ""]
            else:
                lines += [_md(self._saved_note()), ""]
            if F.has_source(self):
                lines += [f"## {_md(F.heading(self))}", "", _md_table(*F.grid(self)), ""]
            lines += ["## Time and memory", "", _md_table(*self.cost_grid()), "",
                      "## Ranking", "", _md_table(*self.ranking_grid(), left=2), ""]
        lines += ["## Settings", ""] + [f"- {_md(k)}: {_md(v)}" for k, v in self.settings()] + [""]
        lines += ["## How to reproduce", ""]
        command = self.meta.get("command")
        if command:
            fence = "~~~~" if "```" in str(command) else "```"
            lines += [fence, str(command), fence, ""]
        else:
            lines += ["The command line was not recorded.", ""]
        return "\n".join(lines)


# -- small helpers ------------------------------------------------------------------
def _colours(order: list[str], baseline: str) -> dict[str, str]:
    """One colour per strategy for every figure; the baseline is always grey."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    palette = [to_hex(c) for i, c in enumerate(colormaps["tab10"].colors) if i != 7]  # 7 is grey
    palette += [to_hex(c) for c in colormaps["Dark2"].colors]
    out, i = {}, 0
    for s in order:
        if s == baseline:
            out[s] = SCRATCH_COLOUR
        else:
            out[s] = palette[i % len(palette)]
            i += 1
    return out


def _size_labels(results: pd.DataFrame) -> dict:
    """n -> tick text; a size given as 'all' reads "all (~N)" rather than a bare number."""
    out = {}
    if "n_label" in results.columns:
        for n, lab in zip(pd.to_numeric(results["n"]), results["n_label"].astype(str)):
            if lab.strip().lower() == "all":
                out[n] = f"all (~{A.fmt_n(n)})"
    return out


def _short_saved(row) -> str:
    if row["relation"] == "more than":
        return f"> {A.fmt_n(row['baseline_n_needed'])}"
    if row["relation"] == "at most":
        return f"≤ {A.fmt_n(row['baseline_n_needed'])}"
    return f"~{A.fmt_n(row['baseline_n_needed'])} ({row['ratio']:.1f}x)"


def _png(plt, fig) -> str:
    return base64.b64encode(png_bytes(fig, dpi=DPI, tight=True)).decode("ascii")


def _mpl(text) -> str:
    """Plain text for matplotlib: a `$` would start mathtext."""
    return str(text).replace("$", r"\$")


def _mb(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:,.0f} MB"


def _si(value: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.0f}"


def _html_reason(reason: str) -> str:
    text = html.escape(reason)
    return f'<span class="caution">{text}</span>' if reason.startswith("Caution") else text


def _html_table(head: list[str], body: list[list[str]], left: int = 1) -> str:
    """Text columns (the first `left`) align left, numbers right."""
    e = html.escape

    def cell(tag, i, c):
        return f'<{tag} class="text">{e(str(c))}</{tag}>' if i < left else f"<{tag}>{e(str(c))}</{tag}>"

    rows = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(r)) + "</tr>" for r in body)
    return ("<table><thead><tr>" + "".join(cell("th", i, h) for i, h in enumerate(head)) + "</tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def _md(text) -> str:
    """One line of Markdown: table pipes escaped, newlines flattened."""
    return str(text).replace("|", r"\|").replace("\r", " ").replace("\n", " ")


def _md_table(head: list[str], body: list[list[str]], left: int = 1) -> str:
    lines = ["| " + " | ".join(_md(h) for h in head) + " |",
             "|" + "|".join(["---"] * left + ["---:"] * (len(head) - left)) + "|"]
    lines += ["| " + " | ".join(_md(c) for c in r) + " |" for r in body]
    return "\n".join(lines)
