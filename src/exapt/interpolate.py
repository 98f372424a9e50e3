"""`exapt interpolate RUN --alphas 0:1:0.1`: WiSE-FT along the line between where a run
started and where fine-tuning took it (Wortsman et al. 2022, "Robust fine-tuning of
zero-shot models"):

    theta(alpha) = (1 - alpha) * theta_start + alpha * theta_fine-tuned

Every alpha is scored on the target's validation and test splits (the run's own, rebuilt
from its config) and, for a run with a source, on the source (the source head's metrics,
or the held-out masked-LM loss): the whole trade-off between learning the target and
keeping the source, one model per point. alpha is picked on validation alone (best
primary metric, then lowest loss, as early stopping does), never on test.

theta_start is rebuilt, not stored: the base model (+ the --init run's weights, checked
against the hash the run recorded) + the head as training started (`start.safetensors`,
written by fit: the probe's head for lp-ft, the seeded new head otherwise). Parameters
are mixed; buffers (input statistics) are the fine-tuned run's. Writes, in --out
(default RUN/interpolation/): interpolation.csv, interpolation.json (the pick) and
interpolation.png; `--save DIR` also writes the picked model as a run folder.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .data import fit_splits, load_data, load_table
from .errors import ExaptError
from .files import atomic_write_text
from .mlm_source import load_mlm_source
from .run import Run, build_model, save_weights
from .run_folder import RunFolder, publish_run
from .source import load_init, load_source_data, prepared_split, source_metrics
from .strategies import parse_strategy
from .tasks import Task
from .train.loop import predict_logits


def parse_alphas(text) -> list[float]:
    """`0:1:0.1` (start:stop:step, both ends included) or `0,0.5,0.9,1`."""
    if isinstance(text, (list, tuple)):
        values = [float(v) for v in text]
    else:
        text = str(text).strip()
        try:
            if ":" in text:
                lo, hi, step = (float(v) for v in text.split(":"))
                if step <= 0 or hi < lo:
                    raise ValueError
                count = int(math.floor((hi - lo) / step + 1e-9)) + 1
                values = [round(lo + i * step, 10) for i in range(count)]
            else:
                values = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise ExaptError(f"--alphas {text!r}: write start:stop:step (0:1:0.1) or a list (0,0.5,1)") from None
    if not values or any(not (0 <= v <= 1) for v in values):
        raise ExaptError(f"--alphas {text!r}: every alpha must be in [0, 1] (0: the start, 1: the fine-tuned run)")
    return sorted(set(values))


@dataclass
class Interpolation:
    run: Path
    table: pd.DataFrame
    pick: dict | None
    files: dict = field(default_factory=dict)


def interpolate(run_dir, alphas="0:1:0.1", out=None, save=None, overwrite: bool = False,
                progress: bool = True, log=print) -> Interpolation:
    values = parse_alphas(alphas)
    run = Run.load(run_dir)
    out = Path(out) if out else run.path / "interpolation"
    if save is not None:
        RunFolder(save).check_new(overwrite, flag="--save")
    start, source, mlm, splits = _prepare(run)
    model = run.model
    end = {n: p.detach().clone() for n, p in model.named_parameters()}
    begin = dict(start.named_parameters())
    mixed = [n for n in end if n in begin and not torch.equal(begin[n], end[n])]
    log(f"{run.path}: {len(mixed)} tensors differ between start and end; {len(values)} alphas")
    rows = []
    for alpha in tqdm(values, desc="interpolate", unit="alpha", disable=not progress):
        _mix(model, begin, end, mixed, alpha)
        rows.append({"alpha": alpha, **_scores(run, splits, source, mlm)})
    frame = pd.DataFrame(rows)
    pick = _pick(frame, run.task)
    if pick is not None and save is not None:
        _mix(model, begin, end, mixed, pick["alpha"])
        _save_run(run, Path(save), pick, overwrite)
    _mix(model, begin, end, mixed, 1.0)  # the run's model as loaded, whatever happened above
    files = _write(out, frame, pick, run)
    for line in summary_lines(frame, pick, run.task.primary_metric):
        log(line)
    return Interpolation(run.path, frame, pick, files)


def _prepare(run):
    """The start model, the source side and the target's validation/test splits."""
    cfg = run.config
    if not run.folder.start.exists():
        raise ExaptError(f"{run.path}: no {run.folder.START}, so its starting point is unknown (a linear probe never "
                         "leaves it; runs made before exapt recorded it need to be fitted again)")
    labels = run.folder.read_labels()
    init = source_task = None
    if cfg.init:
        init = load_init(cfg.init)
        recorded = (labels.get("source") or {}).get("weights_sha256")
        if recorded and recorded != init.sha256:
            raise ExaptError(f"{run.path} started from {cfg.init}, whose weights have changed since; "
                             "its starting point cannot be rebuilt")
        source_task = Task.from_json(labels["source"])
    n_inputs = getattr(run.model.backbone, "n_inputs", None)
    state = {**init.state, **init.head} if init else None
    start = build_model(cfg, run.task, n_inputs, parse_strategy(cfg.strategy), source_task, state)
    head = run.folder.read_start()
    with torch.no_grad():
        params = dict(start.named_parameters())
        for n, t in head.items():
            params[n].copy_(t)
    start.eval()
    table = load_table(cfg.data)
    _, val, test = fit_splits(cfg.data, table, run.task.kind)
    splits = {}
    for name, t in (("val", val), ("test", test)):
        if len(t):
            splits[name] = prepared_split(run.model.backbone, t, run.task.encode(t.labels, t.rows, t.source))
    source = load_source_data(cfg, init, load_data) if init else None
    if source is not None:
        source = (source, prepared_split(run.model.backbone, source.test, source.test_targets))
    return start, source, load_mlm_source(cfg, run.model), splits


@torch.no_grad()
def _mix(model, begin: dict, end: dict, names: list[str], alpha: float) -> None:
    params = dict(model.named_parameters())
    for n in names:
        params[n].copy_(begin[n] * (1 - alpha) + end[n] * alpha)


def _scores(run, splits: dict, source, mlm) -> dict:
    row = {}
    for name, split in splits.items():
        logits = predict_logits(run.model, split)
        row.update({f"{name}_{k}": v for k, v in run.task.metrics(logits, split.targets).items()})
        row[f"{name}_loss"] = float(run.task.loss(logits, split.targets))
    if source is not None:
        data, split = source
        row.update({f"source_{k}": v for k, v in source_metrics(run.model, data, split).items()})
    if mlm is not None:
        scored = mlm.evaluate(run.model)
        row.update(source_mlm_loss=scored["loss"], source_mlm_accuracy=scored["accuracy"])
    return row


def _pick(frame: pd.DataFrame, task) -> dict | None:
    """Best validation primary metric, then lowest validation loss; None without validation."""
    metric = f"val_{task.primary_metric}"
    if metric not in frame:
        return None
    sign = 1 if task.higher_is_better else -1
    order = sorted(frame.index, key=lambda i: (-sign * frame.at[i, metric], frame.at[i, "val_loss"]))
    return {k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in frame.loc[order[0]].items()}


def summary_lines(frame: pd.DataFrame, pick: dict | None, metric: str) -> list[str]:
    cols = [c for c in (f"val_{metric}", f"test_{metric}", "source_accuracy", "source_rmse", "source_micro_f1",
                        "source_mlm_loss") if c in frame]
    lines = ["alpha  " + "  ".join(f"{c:>16}" for c in cols)]
    for r in frame.itertuples(index=False):
        mark = " <- picked on validation" if pick is not None and r.alpha == pick["alpha"] else ""
        lines.append(f"{r.alpha:5.2f}  " + "  ".join(f"{getattr(r, c):16.4f}" for c in cols) + mark)
    if pick is None:
        lines.append("no validation split (--val-fraction 0): alpha is not picked")
    return lines


def _write(out: Path, frame: pd.DataFrame, pick: dict | None, run) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    files = {"csv": out / "interpolation.csv", "json": out / "interpolation.json", "png": out / "interpolation.png"}
    atomic_write_text(files["csv"], frame.to_csv(index=False))
    atomic_write_text(files["json"], json.dumps({"run": str(run.path), "pick": pick,
                                                 "metric": run.task.primary_metric}, indent=2) + "\n")
    _plot(frame, pick, run.task.primary_metric, files["png"])
    return files


def _plot(frame: pd.DataFrame, pick: dict | None, metric: str, path: Path) -> None:
    import matplotlib  # heavy: imported on first use
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: imported on first use

    source_col = next((c for c in ("source_accuracy", "source_rmse", "source_micro_f1", "source_mlm_loss")
                       if c in frame), None)
    fig, axes = plt.subplots(1, 2 if source_col else 1, figsize=(10 if source_col else 5.5, 3.8), squeeze=False)
    ax = axes[0][0]
    for col, label in ((f"test_{metric}", f"target test {metric}"), (f"val_{metric}", f"target val {metric}"),
                       (source_col, source_col.replace("_", " ") if source_col else None)):
        if col and col in frame:
            ax.plot(frame["alpha"], frame[col], marker="o", ms=3, label=label)
    if pick is not None:
        ax.axvline(pick["alpha"], color="grey", ls="--", lw=1, label=f"picked alpha = {pick['alpha']:g}")
    ax.set_xlabel("alpha (0: start, 1: fine-tuned)")
    ax.legend(frameon=False, fontsize=8)
    if source_col:
        ax = axes[0][1]
        ax.plot(frame[source_col], frame[f"test_{metric}"], marker="o", ms=3)
        for r in frame.itertuples(index=False):
            ax.annotate(f"{r.alpha:g}", (getattr(r, source_col), getattr(r, f"test_{metric}")), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(source_col.replace("_", " ") + " (source)")
        ax.set_ylabel(f"target test {metric}")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def _save_run(run, out: Path, pick: dict, overwrite: bool) -> None:
    """The picked model as an ordinary run folder (same config; weights at that alpha)."""
    trained = set(run.folder.read_weights()[0])
    metrics = {**run.metrics, "test": {k[5:]: v for k, v in pick.items() if k.startswith("test_") and k != "test_loss"},
               "interpolated": {"from": str(run.path), "alpha": pick["alpha"]}}

    def write(folder: RunFolder) -> None:
        for source, copy in ((run.folder.config, folder.config), (run.folder.labels, folder.labels),
                             (run.folder.history, folder.history)):
            if source.exists():
                shutil.copy(source, copy)
        save_weights(run.model, folder, trained)
        folder.mark_complete(metrics)

    publish_run(out, overwrite, write)


# -- command line --------------------------------------------------------------------
def add_parser(sub) -> None:
    p = sub.add_parser("interpolate", help="WiSE-FT: score the weight mix of a run's start and end, pick alpha "
                                           "on validation")
    p.add_argument("run", help="a run folder made by exapt fit with a gradient strategy")
    p.add_argument("--alphas", default="0:1:0.1", help="start:stop:step or a list (default: 0:1:0.1)")
    p.add_argument("--out", help="folder for interpolation.csv/.json/.png (default: RUN/interpolation)")
    p.add_argument("--save", metavar="DIR", help="also write the model at the picked alpha as a run folder")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --save")
    p.add_argument("--quiet", action="store_true")


def run(a: argparse.Namespace) -> None:
    result = interpolate(a.run, a.alphas, out=a.out, save=a.save, overwrite=a.overwrite, progress=not a.quiet,
                         log=(lambda *_: None) if a.quiet else print)
    print(f"wrote {result.files['csv']}, {result.files['png']}" + (f"; picked model -> {a.save}" if a.save and
                                                                      result.pick else ""))
