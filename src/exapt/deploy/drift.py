"""`exapt drift RUN requests.jsonl`: the server's drift monitor, offline, over a logged stream.

Each line of the stream is a request as `exapt serve --log-requests FILE --log-inputs`
writes it (`{"inputs": [...], "time": ...}`), or one input as `{"text": ...}` /
`{"input": ...}`. Lines are replayed in order through the run, in windows of `window`
inputs, with the same statistics and alarm rule as the server (deploy/monitor.py). The
report folder holds drift.json, report.md and drift.png (the statistics over time);
it is written into a temporary sibling and renamed, so a failure leaves nothing.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ExaptError
from ..figures import png_bytes
from ..files import atomic_write_bytes, atomic_write_text
from .monitor import DEFAULT_ALPHA, DEFAULT_PATIENCE, DEFAULT_REFERENCE, DEFAULT_WINDOW, DriftMonitor, build_reference
from .serving_model import load_run

CHUNK = 64


@dataclass
class DriftReport:
    data: dict
    path: Path | None

    def summary(self) -> str:
        d = self.data
        lines = [d["verdict"], "", f"  {d['n_inputs']} inputs, {len(d['windows'])} windows of {d['settings']['window']}"
                 f" against {d['reference']}"]
        for w in d["windows"]:
            p = "" if w["mmd_p"] is None else f"MMD p {w['mmd_p']:.3g}  "
            auc = "" if w["auc"] is None else f"AUC {w['auc']:.3f}  "
            cls = "" if w["predicted_p"] is None else f"classes p {w['predicted_p']:.3g}  "
            lines.append(f"  window {w['index']:>3}  {p}{auc}{cls}{'ALARM' if w['alarm'] else ''}")
        if self.path is not None:
            lines += ["", f"-> {self.path}/ (report.md, drift.json, drift.png)"]
        return "\n".join(lines)


def read_stream(path) -> tuple[list, list[float | None]]:
    """Inputs, in order, and each one's time (None where the line has none)."""
    p = Path(path)
    if not p.is_file():
        raise ExaptError(f"{path}: no such request log (JSONL)")
    inputs, times = [], []
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                raise ExaptError(f"{path}: line {n} is not JSON") from None
            if not isinstance(rec, dict):
                raise ExaptError(f"{path}: line {n}: expected a JSON object")
            if "inputs" in rec and isinstance(rec["inputs"], list):
                got = rec["inputs"]
            elif "text" in rec or "input" in rec:
                got = [rec.get("text", rec.get("input"))]
            elif "inputs_sha256" in rec:
                raise ExaptError(f"{path}: line {n} holds hashed inputs only; drift needs the inputs "
                                 "(log them with exapt serve --log-requests FILE --log-inputs)")
            else:
                raise ExaptError(f"{path}: line {n}: no \"inputs\", \"text\" or \"input\" field")
            inputs += got
            times += [rec.get("time")] * len(got)
    if not inputs:
        raise ExaptError(f"{path}: no requests in the file")
    return inputs, times


def check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExaptError(f"--out {out} is a file, not a folder")
    if out.exists() and any(out.iterdir()):
        if not (out / "drift.json").exists():
            raise ExaptError(f"--out {out} holds other files; give a new folder")
        if not overwrite:
            raise ExaptError(f"--out {out} holds a drift report; add --overwrite to replace it")


def drift_report(run, requests, *, window: int = DEFAULT_WINDOW, alpha: float = DEFAULT_ALPHA,
                 patience: int = DEFAULT_PATIENCE, test: str = "mmd", reference_size: int = DEFAULT_REFERENCE,
                 out=None, overwrite: bool = False, seed: int = 0) -> DriftReport:
    if window < 10:
        raise ExaptError("--window: give at least 10 inputs per drift window")
    if not 0 < alpha < 1:
        raise ExaptError("--alpha: give a level between 0 and 1")
    if not Path(run).is_dir():
        raise ExaptError(f"run folder not found: {run}")
    out = Path(out) if out else Path("runs") / f"drift-{Path(run).resolve().name}"
    name = Path(run).name or Path(run).resolve().name
    check_out(out, overwrite)
    inputs, times = read_stream(requests)
    predictor = load_run(run, name)
    if predictor.input_kind == "image":
        raise ExaptError("exapt drift replays text and feature inputs; image streams are monitored by the server")
    alerts: list[str] = []
    monitor = DriftMonitor(build_reference(predictor, reference_size, seed), window=window, alpha=alpha,
                           patience=patience, test=test, seed=seed, log=alerts.append, keep=10 ** 9)
    for start in range(0, len(inputs), CHUNK):
        try:
            items = predictor.prepare(inputs[start:start + CHUNK])
        except ExaptError as e:
            raise ExaptError(f"{requests}: inputs {start + 1}-{start + CHUNK}: {e}") from None
        o = predictor.outputs(items)
        for emb, pred in monitor.add(o["embedding"], o["logits"]):
            monitor.evaluate(emb, pred)
    windows = [w.to_dict() for w in monitor.history]
    for w in windows:   # the time of a window: its last input's, where the log has times
        last = times[min(len(times), (w["index"] + 1) * window) - 1]
        w["time"] = last
    raised = [w["index"] for w in windows if w["alarm"]]
    verdict = (f"DRIFT: alarm from window {raised[0]} ({len(raised)} of {len(windows)} windows in alarm)" if raised
               else f"no drift alarm in {len(windows)} windows" if windows
               else f"fewer than {window} inputs: no complete window")
    data = {"exapt_drift": 1, "run": str(run), "requests": str(requests), "verdict": verdict,
            "n_inputs": len(inputs), "reference": monitor.ref.source, "alerts": alerts, "windows": windows,
            "training_priors": monitor.summary()["training_priors"],
            "settings": {"window": window, "alpha": alpha, "patience": patience, "test": test,
                         "reference_size": reference_size, "seed": seed}}
    write_report(out, data, monitor.ref.classes)
    return DriftReport(data, out)


def figure(data: dict, classes: list[str]) -> bytes:
    import matplotlib  # heavy: imported on first use
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: imported on first use

    w = data["windows"]
    x = [v["index"] for v in w]
    fig, axes = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    stat = "mmd_p" if data["settings"]["test"] == "mmd" else "auc"
    axes[0].plot(x, [v[stat] for v in w], marker="o")
    if stat == "mmd_p":
        axes[0].set_yscale("log")
        axes[0].axhline(data["settings"]["alpha"], color="red", ls="--", label=f"alpha {data['settings']['alpha']:g}")
        axes[0].set_ylabel("MMD p-value")
    else:
        axes[0].axhline(0.55, color="red", ls="--", label="AUC 0.55")
        axes[0].set_ylabel("domain AUC")
    for v in w:
        if v["alarm"]:
            for ax in axes:
                ax.axvspan(v["index"] - 0.5, v["index"] + 0.5, color="red", alpha=0.12, lw=0)
    axes[0].legend(loc="best")
    if classes and w and w[0]["predicted_shares"]:
        bottom = np.zeros(len(w))
        for c in classes:
            share = np.array([v["predicted_shares"][c] for v in w])
            axes[1].bar(x, share, bottom=bottom, label=c)
            bottom += share
        axes[1].set_ylabel("predicted-class share")
        axes[1].legend(loc="upper left", fontsize=8)
    axes[1].set_xlabel(f"window ({data['settings']['window']} inputs each; red: alarm)")
    fig.suptitle(data["verdict"], fontsize=10)
    return png_bytes(fig)


def write_report(out: Path, data: dict, classes: list[str]) -> None:
    tmp = out.with_name(f".{out.name}.tmp-{int(time.time() * 1000)}")
    tmp.mkdir(parents=True)
    try:
        atomic_write_text(tmp / "drift.json", json.dumps(data, indent=1) + "\n")
        if data["windows"]:
            atomic_write_bytes(tmp / "drift.png", figure(data, classes))
        rows = "\n".join(f"| {w['index']} | {w['mmd_p'] if w['mmd_p'] is not None else w['auc']} | "
                         f"{w['predicted_p']} | {w['tv_bbse']} | {'yes' if w['alarm'] else ''} |" for w in data["windows"])
        md = (f"# Drift of {data['requests']} against {data['run']}\n\n**{data['verdict']}**\n\n"
              f"Reference: {data['reference']}. Windows of {data['settings']['window']} inputs; a window is flagged "
              f"when a test's p-value is below {data['settings']['alpha']}; the alarm needs "
              f"{data['settings']['patience']} flagged windows in a row.\n\n"
              + ("![drift over time](drift.png)\n\n" if data["windows"] else "")
              + "| window | input drift (MMD p / AUC) | predicted classes p | BBSE label shift (TV) | alarm |\n"
              "|---|---|---|---|---|\n" + rows + "\n")
        atomic_write_text(tmp / "report.md", md)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
