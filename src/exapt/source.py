"""The source side of a fit: the run it starts from and the source data it should keep.

`fit TARGET --init RUN` starts from RUN's weights. RUN's head becomes the new model's
*source head*, kept beside the new target head and never trained, so the source task can
still be scored after fine-tuning: "source accuracy before" is the encoder as RUN left it,
"after" is the fine-tuned encoder under the same head. The difference is what was forgotten.

- `load_init`: RUN, checked (complete, plain weights). Its changed backbone tensors stay
  in the new run's weights file, so the new run loads from its own folder alone.
- `load_source_data`: labelled source examples, split exactly as RUN split its data (same
  seed, same sizes), so the "before" score is RUN's own test score (or `--source-data
  FILE` with RUN's columns). The training part feeds ewc's Fisher and source-head's loss.
- `source_metrics`: the source head's metrics on the held-out source examples.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import FitConfig
from .data import fit_splits, load_table
from .errors import ExaptError
from .run_folder import RunFolder
from .tasks import Task
from .train.loop import Split, predict_logits


@dataclass
class InitRun:
    path: Path
    config: FitConfig
    task: Task                          # the source task (RUN's own task)
    state: dict[str, torch.Tensor]      # backbone.* tensors RUN changed (and its input statistics)
    head: dict[str, torch.Tensor]       # RUN's head, named as the new model's source_head.*
    base: dict                          # RUN's base model identity (name, sha256, n_inputs)
    sha256: str                         # of RUN's weights file: what the new run was started from


def load_init(spec: str) -> InitRun:
    """Read RUN's config, labels and weights (no model is built here)."""
    folder = RunFolder(Path(spec).expanduser())
    if not folder.is_run():
        raise ExaptError(f"--init {spec}: not a run folder (no {folder.CONFIG}); give the folder of an earlier "
                         "`exapt fit`")
    if not folder.is_complete():
        raise ExaptError(f"--init {spec}: not a complete run (no {folder.METRICS} or {folder.WEIGHTS}); "
                         "finish it with `exapt fit --resume` first")
    cfg = folder.read_config()
    try:
        task = Task.from_json(folder.read_labels())
        tensors, meta = folder.read_weights()
    except Exception as e:  # json, safetensors and OS errors alike: the folder is damaged
        raise ExaptError(f"--init {spec}: unreadable run ({str(e).splitlines()[0][:200]})") from None
    state = {n: t for n, t in tensors.items() if n.startswith("backbone.")}
    head = {"source_head." + n[len("head."):]: t for n, t in tensors.items() if n.startswith("head.")}
    if not head:
        raise ExaptError(f"--init {spec}: the run has no head in {folder.WEIGHTS}")
    return InitRun(folder.path, cfg, task, state, head, meta.get("base_model", {}), folder.weights_sha256())


def check_init_base(init: InitRun, model) -> None:
    """RUN must have been trained on the base weights the new fit loads."""
    recorded, current = init.base.get("sha256"), model.backbone.identity().get("sha256")
    if recorded and current and recorded != current:
        raise ExaptError(f"--init {init.path}: it was trained on other base weights than --model "
                         f"{init.config.model} has now (sha256 {recorded[:12]}... vs {current[:12]}...)")


def init_model_name(cfg: FitConfig, init: InitRun | None) -> str:
    """--model defaults to RUN's model; naming another one is a mistake, not a wish."""
    if init is None:
        return cfg.model or "minilm-l6"
    if cfg.model and cfg.model != init.config.model:
        raise ExaptError(f"--init {init.path} was trained on --model {init.config.model}; drop --model "
                         f"(it is taken from the run) or give that one")
    return init.config.model


@dataclass
class SourceData:
    """Labelled source examples: `train` for penalties, `test` for forgetting."""
    task: Task
    name: str
    train: object          # Table
    test: object           # Table
    train_targets: torch.Tensor
    test_targets: torch.Tensor


def load_source_data(cfg: FitConfig, init: InitRun | None, loader) -> SourceData | None:
    """RUN's data split as RUN split it, or --source-data FILE (RUN's columns unless given)."""
    s = cfg.source
    if init is None:
        if s.data:
            raise ExaptError("--source-data needs --init RUN: the source examples are scored with RUN's head")
        return None
    icfg = copy.deepcopy(init.config)
    d = icfg.data
    if s.data:
        d.source, d.test, d.n_per_class = s.data, None, None
    for field in ("text", "label", "features"):
        if getattr(s, field) is not None:
            setattr(d, field, getattr(s, field))
    table = load_table(d, loader)
    train, _, test = fit_splits(d, table, init.task.kind, loader)
    if len(test) > s.max_test:
        test = test.subset(np.sort(np.random.default_rng(d.seed).choice(len(test), s.max_test, replace=False)))
    where = f"source data {table.source}"
    return SourceData(init.task, str(d.source), train, test,
                      init.task.encode(train.labels, train.rows, f"{where} (training part)"),
                      init.task.encode(test.labels, test.rows, f"{where} (held-out part)"))


def prepared_split(backbone, table, targets) -> Split:
    items = backbone.prepare_inputs(table.inputs)
    return Split(items, targets, [backbone.item_length(x) for x in items])


def source_metrics(model, data: SourceData, split: Split | None = None) -> dict[str, float]:
    """The source head's metrics on the held-out source examples (model left as it was)."""
    split = split or prepared_split(model.backbone, data.test, data.test_targets)
    logits = predict_logits(model, split, forward=model.source_logits)
    return data.task.metrics(logits, split.targets)
