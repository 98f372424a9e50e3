"""`exapt rank`'s outputs: rank.csv, tau.csv, rank.png (one bar chart per score), rank.md
and rank.json, each written atomically."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..figures import png_bytes
from ..files import atomic_write_bytes, atomic_write_text
from .suggest import suggestion_lines

META = "rank.json"
OUTPUT_FILES = ("rank.csv", "tau.csv", "rank.png", "rank.md", META)


def write_outputs(out: Path, frame: pd.DataFrame, tau: pd.DataFrame | None, meta: dict) -> dict[str, Path]:
    """rank.csv, tau.csv (with validation), rank.png, rank.md, rank.json; each written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"csv": out / "rank.csv", "png": out / "rank.png", "md": out / "rank.md", "json": out / META}
    atomic_write_text(files["csv"], frame.to_csv(index=False))
    if tau is not None:
        files["tau"] = out / "tau.csv"
        atomic_write_text(files["tau"], tau.to_csv(index=False))
    else:
        (out / "tau.csv").unlink(missing_ok=True)   # from an earlier --validate: no longer this table's
    atomic_write_bytes(files["png"], figure_png(frame, meta))
    atomic_write_text(files["md"], markdown(frame, tau, meta))
    clean = json.loads(json.dumps(meta, default=str))
    if tau is not None:
        clean["tau"] = json.loads(tau.to_json(orient="records"))
    atomic_write_text(files["json"], json.dumps(clean, indent=2) + "\n")
    return files


_KIND_COLOURS = {"pretrained": "#3465a4", "classifier": "#75507b", "run": "#4e9a06", "scratch": "#a0a0a0"}


def _mpl(text) -> str:
    return str(text).replace("$", r"\$")


def _short(name: str, width: int = 34) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]


def figure_png(frame: pd.DataFrame, meta: dict) -> bytes:
    """One panel per score (and the test metric, with validation): candidates sorted, best on top."""
    import matplotlib  # heavy: imported on first use

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: imported on first use

    panels = [(s, s) for s in meta["scores"]]
    metric = meta.get("metric", "accuracy")
    if f"test_{metric}" in frame.columns:
        panels.append((f"test_{metric}", f"test {metric} ({meta.get('strategy', '')})"))
    n = len(panels)
    cols = min(n, 3)
    nrows = math.ceil(n / cols)
    height = max(2.2, 0.28 * len(frame) + 1.2)
    with plt.rc_context({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False}):
        fig, axes = plt.subplots(nrows, cols, figsize=(4.4 * cols, height * nrows), squeeze=False)
        for ax, (col, title) in zip(axes.ravel(), panels):
            lower_better = col.startswith("test_") and metric == "rmse"
            s = frame.set_index("candidate")[col].astype(float).dropna()
            s = s.sort_values(ascending=not lower_better)            # barh draws bottom-up: best on top
            kinds = frame.set_index("candidate").loc[s.index, "kind"]
            if len(s):
                lo, hi = float(s.min()), float(s.max())
                span = (hi - lo) or (abs(hi) or 1.0)
                base = lo - 0.15 * span
                ax.barh(range(len(s)), s.to_numpy() - base, left=base,
                        color=[_KIND_COLOURS.get(k, "#3465a4") for k in kinds])
                for i, v in enumerate(s.to_numpy()):
                    ax.text(v, i, f" {v:.3g}", va="center", fontsize=8)
                ax.set_xlim(base, hi + 0.25 * span)
                ax.set_yticks(range(len(s)))
                ax.set_yticklabels([_mpl(_short(c)) for c in s.index])
            else:
                ax.text(0.5, 0.5, "no candidate has this score", ha="center", va="center", transform=ax.transAxes)
                ax.set_yticks([])
            ax.set_title(_mpl(title) + (" (lower is better)" if lower_better else ""))
        for ax in axes.ravel()[n:]:
            ax.axis("off")
        from matplotlib.patches import Patch  # heavy: imported on first use

        kinds = [k for k in _KIND_COLOURS if k in set(frame["kind"])]
        if len(kinds) > 1:
            fig.legend(handles=[Patch(color=_KIND_COLOURS[k], label=k) for k in kinds], loc="lower right",
                       ncol=len(kinds), frameon=False, fontsize=8)
        fig.tight_layout(rect=(0, 0.04 if len(kinds) > 1 else 0, 1, 1))
        return png_bytes(fig)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)) or v is pd.NA:
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return str(v)


def markdown(frame: pd.DataFrame, tau: pd.DataFrame | None, meta: dict) -> str:
    s = meta["settings"]
    lines = ["# exapt rank", "",
             f"Data: `{s['data']}`" + (f", test `{s['test']}`" if s.get("test") else "")
             + f"; {meta['n_train']} scored training examples ({meta['task']}"
             + (f": {', '.join(map(str, meta['classes']))}" if meta.get("classes") else "") + f"); seed {s['seed']}, "
             f"max length {s['max_length']}.", "",
             "Scores are computed on frozen features (pooled hidden state after the candidate's last layer); "
             "higher is better for every score; rank 1 = best.", "",
             "![scores](rank.png)", ""]
    lines += _md_scores(frame, meta["scores"], meta.get("metric", "accuracy"))
    said = suggestion_lines(meta.get("suggestion"))
    if said:
        lines += ["", "**" + said[0][0].upper() + said[0][1:] + ".**"] + [f"- {x.strip()}." for x in said[1:]]
    missing = [x for x in meta["scores"] if frame[x].isna().any()]
    if missing:
        lines += ["", f"n/a: {', '.join(missing)} need a source classifier (a run of a classification fit or a "
                  "...ForSequenceClassification checkpoint, at its last layer); other candidates have none."]
    if tau is not None:
        lines += _md_tau(tau, meta)
    else:
        lines += ["", f"Ranking took {meta['rank_seconds']:.1f} s. `exapt rank --validate --strategy S` also "
                  "fine-tunes each candidate and reports how well each score predicted the accuracy reached."]
    return "\n".join(lines) + "\n"


def _md_scores(frame: pd.DataFrame, scores: list[str], metric: str) -> list[str]:
    """The candidates' table (each score and its rank), then the best candidate by each score."""
    head = ["candidate"] + [f"{x} (rank)" for x in scores]
    validated = f"test_{metric}" in frame.columns
    if validated:
        head.append(f"test {metric} (rank)")
    head.append("scoring s")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in frame.iterrows():
        cells = [f"`{r['candidate']}`"] + [f"{_fmt(r[x])} ({_fmt(r[x + '_rank'])})" for x in scores]
        if validated:
            cells.append(f"{_fmt(r[f'test_{metric}'])} ({_fmt(r[f'test_{metric}_rank'])})")
        cells.append(f"{r['score_seconds']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for x in scores:
        ok = frame[x].notna()
        if ok.any():
            lines.append(f"- best by {x}: `{frame.loc[frame.loc[ok, x].idxmax(), 'candidate']}`")
    return lines


def _md_tau(tau: pd.DataFrame, meta: dict) -> list[str]:
    """How well each score predicted the fine-tuned test metric, and what ranking cost against it."""
    metric = meta.get("metric", "accuracy")
    lines = ["", f"## Scores against fine-tuning ({meta.get('strategy')})", "",
             f"Each candidate fine-tuned with `{meta.get('strategy')}` on the same {meta['n_train']} examples, "
             f"tested on {meta['n_test']} held-out examples. Weighted Kendall tau (Vigna 2015, hyperbolic "
             "weights: the top of the ranking counts most) between each score and the test "
             f"{metric}: 1 = the same order, -1 = reversed.", "",
             "| score | weighted tau | Kendall tau | picks | its test " + metric + " | best |",
             "|---|---|---|---|---|---|"]
    for _, r in tau.iterrows():
        lines.append(f"| {r['score']} | {_fmt(r['weighted_tau'])} | {_fmt(r['kendall_tau'])} | `{r['pick']}` | "
                     f"{_fmt(r[f'pick_test_{metric}'])} | `{r['best']}` ({_fmt(r[f'best_test_{metric}'])}) |")
    ratio = meta.get("rank_to_finetune_ratio")
    lines += ["", f"Ranking took {meta['rank_seconds']:.1f} s; fine-tuning every candidate "
              f"{meta['finetune_seconds']:.1f} s" + (f" (ranking = {ratio:.1%} of it)." if ratio else ".")]
    return lines
