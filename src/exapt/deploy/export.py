"""`exapt export RUN`: a run as a self-contained ONNX folder that predicts without torch.

    exapt export runs/tweets-lp-ft-s0                      # -> runs/tweets-lp-ft-s0-onnx
    exapt export runs/tweets-lp-ft-s0 --quantize int8 --optimize

The folder (layout: predictor.ExportFiles) is written into a hidden sibling folder and
renamed into place whole, so a failed or refused export leaves nothing. Before the
rename the shipped folder itself is loaded by `ExportPredictor` and run on the run's
test split (or --check DATA): parity figures against the PyTorch model go into
export.json, and an export that misses the targets (export_parity.py) is refused with
one line saying by how much, unless --force (then export.json marks it).

LoRA / IA3 runs are merged into plain weights first (as `exapt merge` does, in memory).
Runs whose inputs are prepared outside any network (baseline's TF-IDF / k-mer counts,
baseline-cnn's one-hot letters) and --long runs (windows pooled per input) say in one
line that they cannot be exported.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from pathlib import Path

from ..data import fit_splits, load_data, load_table
from ..errors import ExaptError
from ..files import atomic_write_text
from ..run import Run
from ..run_folder import check_can_be_folder
from ..strategies import parse_strategy
from ..version import __version__
from . import export_parity as parity
from .export_int8 import quantize_int8
from .export_onnx import (
    OUTPUTS,
    cpu_instructions,
    example_inputs,
    graph_model,
    optimize_graph,
    write_graph,
)
from .exported_run import table_logits
from .predictor import ExportFiles, ExportFolderError, ExportPredictor, file_sha256

QUANTIZE = ("none", "int8")
MAX_INLINE_BYTES = 1.9e9
NOT_EXPORTABLE = {"classical": "its TF-IDF / k-mer / composition features are computed outside any network",
                  "seqcnn": "its one-hot letter encoding is not part of the network"}


def default_out(run_dir, quantize: str) -> Path:
    return Path(f"{Path(run_dir)}-{'onnx' if quantize == 'none' else quantize}")


def check_target(out: Path, overwrite: bool) -> ExportFiles:
    check_can_be_folder(out)
    target = ExportFiles(out)
    if out.exists() and any(out.iterdir()):
        if not target.is_export():
            raise ExaptError(f"--out {out} is a non-empty folder that is not an export; choose another")
        if not overwrite:
            raise ExaptError(f"{out} already holds an export; choose another --out or pass --overwrite")
    return target


def load_exportable(run_dir) -> Run:
    """The run, loaded (its base model's hash checked), with LoRA / IA3 merged in."""
    if ExportFiles(run_dir).is_export():
        raise ExaptError(f"{run_dir} is an export folder already; give the run folder it came from")
    run = Run.load(run_dir)
    bb = run.model.backbone
    family = bb.identity().get("family")
    if family in NOT_EXPORTABLE:
        raise ExaptError(f"{run_dir}: a {run.config.strategy} run cannot be exported: {NOT_EXPORTABLE[family]}")
    if getattr(bb, "long", None) is not None:
        raise ExaptError(f"{run_dir}: a --long run cannot be exported yet: its windows are pooled outside the graph")
    size = sum(t.numel() * t.element_size() for t in run.model.state_dict().values())
    if size > MAX_INLINE_BYTES:  # protobuf's 2 GB limit: weights would go to an external-data file
        raise ExaptError(f"{run_dir}: a model of {size / 1e9:.1f} GB cannot be exported yet (graphs with "
                         "external weight files are not supported; the limit is 1.9 GB)")
    if parse_strategy(run.config.strategy).mergeable:
        bb.model = bb.model.merge_and_unload()
    return run


def check_table(run: Run, check):
    """(table, what it is): --check DATA, or the run's own test split."""
    d = run.config.data
    if check is not None:
        table = load_data(str(check), text=d.text, label=d.label, features=d.features, require_label=False,
                          image_size=d.image_size)
        where = f"--check {check}"
    else:
        table = fit_splits(d, load_table(d), run.task.kind)[2]
        where = "the run's test split"
    bb = run.model.backbone
    if table.kind != bb.input_kind and table.kind not in bb.also_accepts:
        raise ExaptError(f"{table.source}: this run takes {bb.input_kind} inputs, the data has {table.kind}")
    if len(table) == 0:
        raise ExaptError(f"{table.source}: no rows to check parity on")
    return table, where


def input_spec(run: Run, table) -> dict:
    bb, kind = run.model.backbone, table.kind
    if kind == "text":
        tok = bb.tokenizer
        seq = bb.sequence_input.to_dict() if getattr(bb, "sequence_input", None) else None
        return {"kind": "text", "names": ["input_ids", "attention_mask"], "dtype": "int64",
                "axes": ["batch", "sequence"], "max_length": int(bb.max_length), "pad_id": int(tok.pad_token_id or 0),
                "sequence_input": seq}
    return {"kind": kind, "names": ["x"], "dtype": "float32", "shape": [int(d) for d in table.inputs.shape[1:]],
            "axes": ["batch"] + (["channels", "height", "width"] if kind == "image" else ["features"]),
            **({"range": [0, 1]} if kind == "image" else {})}


def write_info(staging: ExportFiles, info: dict) -> None:
    """export.json with the sha256 of every other file in the folder."""
    info["files"] = {p.name: file_sha256(p) for p in sorted(staging.path.iterdir())
                     if p.is_file() and p.name != ExportFiles.INFO}
    atomic_write_text(staging.info, json.dumps(info, indent=2) + "\n")


def measure(staging: ExportFiles, info: dict, run: Run, table, reference, targets) -> dict:
    write_info(staging, info)
    try:
        logits = table_logits(ExportPredictor.load(staging.path), table)
    except ExportFolderError as e:
        raise ExaptError(str(e)) from None
    return parity.figures(run.task, run.decision, reference, logits, targets)


def identity(run: Run) -> dict:
    cfg = run.config
    return {"path": str(run.path.resolve()), "strategy": cfg.strategy, "model": cfg.model,
            "weights_sha256": run.folder.weights_sha256(), "test_metrics": run.metrics.get("test", {})}


def versions() -> dict:
    import onnx  # heavy: imported on first use
    import onnxruntime  # heavy: imported on first use
    import torch  # heavy: imported on first use

    return {"exapt": __version__, "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
            "torch": torch.__version__, "python": sys.version.split()[0]}


def build(run: Run, table, where: str, staging: ExportFiles, quantize: str, optimize: bool, log) -> dict:
    """Write the folder's files into `staging`; returns export.json's contents (parity included)."""
    bb, d = run.model.backbone, run.config.data
    reference = run.logits(table).numpy()
    targets = run.task.encode(table.labels, table.rows, table.source) if table.labels is not None else None
    info = {"format": "onnx", "source_run": identity(run), "base_model": bb.identity(), "input": input_spec(run, table),
            "outputs": dict(OUTPUTS), "data": {"text": d.text, "label": d.label, "features": d.features,
                                              "image_size": d.image_size},
            "decision": run.decision.to_json() if run.decision else None, "versions": versions(),
            "quantize": {"mode": quantize}, "check": {"data": where}}
    if table.kind == "text":
        atomic_write_text(staging.tokenizer, bb.tokenizer.backend_tokenizer.to_str())
    atomic_write_text(staging.labels, json.dumps(run.task.to_json(), indent=2) + "\n")
    log(f"exporting {bb.describe()} ...")
    info["graph"] = write_graph(graph_model(run.model, table.kind), example_inputs(bb, table.kind, table.inputs),
                                staging.model, getattr(bb, "max_length", None))
    info["optimize"] = {"applied": False}
    if optimize:
        raw = staging.path / "raw.onnx.work"
        os.replace(staging.model, raw)
        info["optimize"] = optimize_graph(raw, staging.model, bb)
        if not info["optimize"]["applied"]:
            os.replace(raw, staging.model)
        raw.unlink(missing_ok=True)
    log(f"checking fp32 parity on {len(table)} rows of {where} ...")
    info["parity"] = {"fp32": measure(staging, info, run, table, reference, targets)}
    fails = parity.failures(info["parity"]["fp32"], "fp32")
    if quantize == "int8":
        fp32 = staging.path / "fp32.onnx.work"
        os.replace(staging.model, fp32)
        isa = cpu_instructions()
        info["quantize"] = {"mode": "int8", "instruction_set": isa, **quantize_int8(fp32, staging.model, isa)}
        fp32.unlink()
        log("checking int8 parity ...")
        info["parity"]["int8"] = measure(staging, info, run, table, reference, targets)
        fails += parity.failures(info["parity"]["int8"], "int8")
    info["parity"]["failures"] = fails
    return info


def export_run(run_dir, out=None, *, quantize: str = "none", optimize: bool = False, check=None, force: bool = False,
               overwrite: bool = False, log=print) -> Path:
    """Export a run; returns the folder written (see the module docstring)."""
    if quantize not in QUANTIZE:
        raise ExaptError(f"--quantize must be one of {', '.join(QUANTIZE)} (got {quantize!r})")
    out = Path(out) if out else default_out(run_dir, quantize)
    target = check_target(out, overwrite)
    run = load_exportable(run_dir)
    table, where = check_table(run, check)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = ExportFiles(out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.partial")
    staging.path.mkdir()
    try:
        info = build(run, table, where, staging, quantize, optimize, log)
        fails = info["parity"]["failures"]
        if fails and not force:
            raise ExaptError(f"export refused: {'; '.join(fails)}, on {len(table)} rows of {where}; "
                             "--force writes it anyway (marked in export.json)")
        info["forced"] = bool(fails)
        write_info(staging, info)
        if target.path.exists():
            shutil.rmtree(target.path)
        os.replace(staging.path, target.path)
    finally:
        shutil.rmtree(staging.path, ignore_errors=True)
    return target.path


def summary(path: Path) -> str:
    info = json.loads(ExportFiles(path).info.read_text())
    p = info["parity"]
    size = sum((path / f).stat().st_size for f in info["files"]) / 1e6
    parts = [f"fp32 max |diff| {p['fp32']['max_abs_logit_diff']:.2g}"]
    if "int8" in p:
        parts.append(f"int8 agreement {100 * p['int8']['agreement']:.1f}%")
    for key in ("int8", "fp32"):
        if key in p and "points_lost" in p[key]:
            parts.append(f"{p[key]['metric']} {p[key]['pytorch']:.2f} -> {p[key]['exported']:.2f}")
            break
    mark = "  (FORCED: misses parity)" if info.get("forced") else ""
    precision = "fp32" if info["quantize"]["mode"] == "none" else info["quantize"]["mode"]
    return f"exported {precision} ONNX ({size:.1f} MB) -> {path}: {', '.join(parts)}{mark}"

