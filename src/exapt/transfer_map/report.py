"""The transfer map's outputs: transfer-map.csv (one row per source x target x seed),
transfer-map.png (a heat map of mean accuracy, sources down, targets across) and
transfer-map.md (the table, the gap to in-domain, and which sources transfer best to
each target). Each file is written atomically; a partial map is written as partial.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..figures import png_bytes
from ..files import atomic_write_bytes, atomic_write_text


def write_outputs(out: Path, results: pd.DataFrame, meta: dict) -> tuple[dict, pd.DataFrame]:
    """Write the three files; returns them and the mean accuracy matrix."""
    names = meta["domains"]
    mean, sd = summary(results, names)
    files = {"csv": out / "transfer-map.csv", "png": out / "transfer-map.png", "md": out / "transfer-map.md"}
    atomic_write_text(files["csv"], results.to_csv(index=False))
    atomic_write_bytes(files["png"], heatmap_png(mean, sd, meta))
    atomic_write_text(files["md"], markdown(mean, sd, results, meta))
    return files, mean


def summary(results: pd.DataFrame, names: list[str], metric: str = "accuracy") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean and standard deviation of a metric over seeds; rows source, columns target."""
    empty = pd.DataFrame(float("nan"), index=names, columns=names)
    if not len(results) or metric not in results:
        return empty, empty.copy()
    grouped = results.groupby(["source", "target"])[metric]
    mean = grouped.mean().unstack().reindex(index=names, columns=names)
    sd = grouped.std(ddof=1).unstack().reindex(index=names, columns=names)
    mean.index.name = sd.index.name = "source"
    mean.columns.name = sd.columns.name = "target"
    return mean, sd


def _mpl(text) -> str:
    return str(text).replace("$", r"\$")


def heatmap_png(mean: pd.DataFrame, sd: pd.DataFrame, meta: dict) -> bytes:
    import matplotlib  # heavy: imported on first use

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: imported on first use
    from matplotlib.patches import Rectangle  # heavy: imported on first use

    k = len(mean)
    values = mean.to_numpy(dtype=float)
    with plt.rc_context({"font.size": 9}):
        fig, ax = plt.subplots(figsize=(1.5 * k + 2.6, 1.15 * k + 1.6))
        finite = values[~np.isnan(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=lo, vmax=max(hi, lo + 0.01))
        for i in range(k):
            for j in range(k):
                v = values[i, j]
                if math.isnan(v):
                    ax.text(j, i, "n/a", ha="center", va="center", color="grey")
                    continue
                label = f"{v:.3f}"
                s = sd.iat[i, j]
                if meta.get("seeds", 1) > 1 and not math.isnan(s):
                    label += f"\n±{s:.3f}"
                shade = float(image.norm(v))
                ax.text(j, i, label, ha="center", va="center", fontsize=9,
                        color="black" if shade > 0.55 else "white", fontweight="bold" if i == j else "normal")
            ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.5))
        ax.set_xticks(range(k))
        ax.set_xticklabels([_mpl(c) for c in mean.columns], rotation=25, ha="right")
        ax.set_yticks(range(k))
        ax.set_yticklabels([_mpl(r) for r in mean.index])
        ax.set_xlabel("tested on (target)")
        ax.set_ylabel("trained on (source)")
        seeds = meta.get("seeds", 1)
        ax.set_title(_mpl("mean test accuracy" + ("" if meta.get("complete", True) else " (partial map)")
                          + f"\n{meta['strategy']} on {meta['model']}, {meta['n_per_class']} per class, "
                          f"{seeds} seed{'s' if seeds > 1 else ''}"), fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        return png_bytes(fig)


def _fmt(v, sd=None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    text = f"{v:.{digits}f}"
    if sd is not None and not (isinstance(sd, float) and math.isnan(sd)):
        text += f" ± {sd:.{digits}f}"
    return text


def best_sources(mean: pd.DataFrame, meta: dict) -> list[str]:
    """One sentence per target: the other sources from best to worst, against in-domain."""
    lines = []
    for target in mean.columns:
        own = mean.at[target, target]
        others = mean[target].drop(target).dropna().sort_values(ascending=False)
        if others.empty or math.isnan(own):
            continue
        majority = meta.get("majority", {}).get(target)
        head = f"**{target}** (in-domain {own:.3f}"
        head += f", majority label {majority:.3f})" if majority is not None else ")"
        best, acc = others.index[0], others.iloc[0]
        share = f" ({acc / own:.0%} of it)" if own > 0 else ""
        verdict = f"{best} transfers best: {acc:.3f}, {acc - own:+.3f} against in-domain{share}"
        if majority is not None and acc <= majority:
            verdict += ", yet no better than always answering the majority label"
        rest = "; ".join(f"{s} {a:.3f} ({a - own:+.3f})" for s, a in others.iloc[1:].items())
        lines.append(f"- {head}: {verdict}" + (f". Then: {rest}." if rest else "."))
    return lines


def markdown(mean: pd.DataFrame, sd: pd.DataFrame, results: pd.DataFrame, meta: dict) -> str:
    names = list(mean.columns)
    n_test = meta.get("n_test", {})
    seeds = meta.get("seeds", 1)
    n_train = results["n_train"].iloc[0] if len(results) else None
    n_val = results["n_val"].iloc[0] if len(results) else None
    split = f" ({n_train} train + {n_val} validation, all classes together)" if n_train is not None else ""
    lines = ["# Transfer map", "", f"`{meta['command']}`", "",
             f"`{meta['strategy']}` on `{meta['model']}`, fitted on {meta['n_per_class']} labelled examples per "
             f"class of each source domain{split}, {seeds} seed{'s' if seeds > 1 else ''}, max length "
             f"{meta.get('max_length')}. Every fit is scored on the held-out test split of every domain: the "
             "same split for every seed, never overlapping what any fit trained on.", ""]
    if not meta.get("complete", True):
        lines += ["**Partial map**: some fits have not run yet; run the same command again to finish it.", ""]
    header = "| trained on \\ tested on | " + " | ".join(f"{t} (n={n_test.get(t, '?')})" for t in names) + " |"
    rule = "|---|" + "---|" * len(names)
    lines += [f"## Mean test accuracy{' (± sd over seeds)' if seeds > 1 else ''}", "",
              "The diagonal (bold) is in-domain.", "", header, rule]
    for s in names:
        cells = [_fmt(mean.at[s, t], sd.at[s, t] if seeds > 1 else None) for t in names]
        cells = [f"**{c}**" if t == s and c != "n/a" else c for c, t in zip(cells, names)]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    majority = meta.get("majority", {})
    lines.append("| *majority label* | " + " | ".join(_fmt(majority.get(t)) for t in names) + " |")
    lines += ["", "Each source trains on the same number of examples of every label, so a target whose labels "
              "are skewed rewards the sources that lean towards its majority label, and its in-domain cell is "
              "no ceiling: read accuracy beside the majority-label row and the macro-F1 below."]
    f1, _ = summary(results, names, "macro_f1")
    lines += ["", "## Mean macro-F1", "", header, rule]
    for s in names:
        cells = [_fmt(f1.at[s, t]) for t in names]
        lines.append(f"| {s} | " + " | ".join(f"**{c}**" if t == s and c != "n/a" else c
                                               for c, t in zip(cells, names)) + " |")
    lines += ["", "## Against in-domain", "",
              "Accuracy minus the target's in-domain accuracy (its diagonal cell):", "", header, rule]
    for s in names:
        cells = []
        for t in names:
            v, own = mean.at[s, t], mean.at[t, t]
            cells.append("in-domain" if s == t and not math.isnan(v) else
                         ("n/a" if math.isnan(v) or math.isnan(own) else f"{v - own:+.3f}"))
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    sentences = best_sources(mean, meta)
    if sentences:
        lines += ["", "## Which sources transfer best", "", *sentences]
    lines += ["", "Per seed, with macro-F1 and AUROC: `transfer-map.csv`. Heat map: `transfer-map.png`.", ""]
    return "\n".join(lines)
