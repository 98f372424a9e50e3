"""`exapt merge RUN`: fold LoRA / IA3 updates into the base weights.

The merged run is an ordinary run of plain weights (strategy `full` as far as loading
is concerned): no PEFT at inference, the same logits (within float rounding; the test
holds it to 1e-5). Its weights file keeps only the tensors that the merge changed.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch

from .backbones import load_backbone
from .errors import ExaptError
from .run import Run, save_weights
from .run_folder import RunFolder, publish_run
from .strategies import parse_strategy


def merge_run(run_dir, out=None, overwrite: bool = False) -> Run:
    run = Run.load(run_dir)
    strategy = parse_strategy(run.config.strategy)
    if not strategy.mergeable:
        raise ExaptError(f"{run_dir}: strategy {strategy.spec()} has nothing to merge (lora and ia3 do)")
    out = Path(out) if out else Path(f"{Path(run_dir)}-merged")
    RunFolder(out).check_new(overwrite)
    bb = run.model.backbone
    bb.model = bb.model.merge_and_unload()
    cfg = dataclasses.replace(run.config, strategy="full")
    base = load_backbone(cfg.model, pooling=cfg.pooling, max_length=cfg.max_length, seed=cfg.data.seed).state_dict()
    changed = {f"backbone.{n}" for n, v in bb.state_dict().items() if n in base and not torch.equal(v, base[n])}
    metrics = {**run.metrics, "merged_from": str(run_dir), "merged_strategy": strategy.spec(),
               "merged_tensors": len(changed)}

    def write(folder: RunFolder) -> None:
        folder.write_config(cfg)
        shutil.copy(run.folder.labels, folder.labels)
        shutil.copy(run.folder.history, folder.history)
        save_weights(run.model, folder, changed)
        folder.mark_complete(metrics)

    return Run.load(publish_run(out, overwrite, write).path)
