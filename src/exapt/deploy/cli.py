"""`exapt export`: the subcommand's arguments and what it prints.

Wired into `exapt.cli` like `shift`: ``add_parser(sub)`` in `build_parser` and
``"export": run`` in its COMMANDS table. `load_for_use` is how `exapt evaluate` and
`exapt predict` take an export folder where they take a run.
"""
from __future__ import annotations

from ..run import Run
from .export import QUANTIZE, export_run, summary
from .exported_run import ExportedRun, is_export


def add_parser(sub):
    e = sub.add_parser(
        "export", help="a run as a self-contained ONNX folder (fp32 or int8) that predicts without torch",
        description="Writes model.onnx (backbone + head, dynamic batch and sequence axes), tokenizer.json, "
                    "labels.json and export.json (identity, input spec, parity figures, versions). Parity with the "
                    "PyTorch run is checked on its test split (or --check DATA): fp32 logits within 1e-4, int8 "
                    "decisions agreeing on >= 99% and <= 1 point of accuracy lost; else the export is refused.")
    e.add_argument("run", help="a finished `exapt fit` run folder (lora/ia3 runs are merged first)")
    e.add_argument("--format", default="onnx", choices=["onnx"], help="only onnx (default)")
    e.add_argument("--quantize", default="none", choices=list(QUANTIZE),
                   help="int8: onnxruntime dynamic quantization, per channel; reduce_range where the CPU lacks VNNI")
    e.add_argument("--optimize", action="store_true",
                   help="onnxruntime's transformer graph optimiser first (fused attention, LayerNorm, GELU)")
    e.add_argument("--check", metavar="DATA", help="data to check parity on (default: the run's test split)")
    e.add_argument("--force", action="store_true", help="write an export that misses parity (marked in export.json)")
    e.add_argument("--out", help="export folder (default: RUN-onnx, or RUN-int8)")
    e.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    e.add_argument("--quiet", action="store_true")
    return e


def run(a) -> None:
    log = (lambda *_: None) if a.quiet else print
    path = export_run(a.run, a.out, quantize=a.quantize, optimize=a.optimize, check=a.check, force=a.force,
                      overwrite=a.overwrite, log=log)
    print(summary(path))


def load_for_use(path):
    """A run folder, or an export folder (its export.json says so), for evaluate / predict."""
    return ExportedRun.load(path) if is_export(path) else Run.load(path)
