"""A run is a folder (its layout: run_folder.py); `Run` loads, evaluates and predicts
from that folder alone.

Loading checks the base model's weights hash: a run is never silently applied to a
different base model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .backbones import load_backbone, model_max_length
from .config import FitConfig
from .data import load_data
from .decision import DecisionRule
from .errors import ExaptError
from .model import TransferModel
from .run_folder import RunFolder
from .strategies import parse_strategy
from .tasks import Task
from .train.loop import Split, predict_logits


def build_model(cfg: FitConfig, task: Task, n_inputs: int | None, strategy, source_task: Task | None = None,
                start: dict | None = None) -> TransferModel:
    """Backbone (pretrained, or its scratch twin) + head (+ the source head of a run started
    from another, and `start`: that run's tensors), with the strategy's new modules.

    Records on the model which parameters the strategy added (`new_parameter_names`:
    penalties treat them as new) and which tensors came from `start` (`init_tensor_names`:
    they differ from the base model, so the run's weights file keeps them)."""
    # a config not yet resolved (None) gets the model's own length, with room for the strategy's tokens
    max_length = cfg.max_length or model_max_length(cfg.model, strategy.reserved_positions)
    backbone = load_backbone(cfg.model, n_inputs=n_inputs, pooling=cfg.pooling, max_length=max_length,
                             seed=cfg.data.seed, scratch=not strategy.uses_pretrained, long=cfg.long)
    torch.manual_seed(cfg.data.seed)
    head = task.make_head(backbone.feature_dim)
    source_head = source_task.make_head(backbone.feature_dim) if source_task is not None else None
    model = TransferModel(backbone, head, source_head)
    if start:
        foreign = sorted(set(start) - set(model.state_dict()))
        if foreign:  # e.g. a LoRA run's names: its modules would not fit another strategy's
            raise ExaptError(f"--init: the run's weights are not plain weights of --model {cfg.model} (e.g. "
                             f"{foreign[0]}); a lora/ia3 run can be folded in first with `exapt merge RUN`")
        try:
            model.load_state_dict(start, strict=False)
        except RuntimeError as e:
            raise ExaptError(f"--init: the run's weights do not fit --model {cfg.model} with this data "
                             f"({str(e).splitlines()[-1].strip()[:200]})") from None
    tensors = model.state_dict(keep_vars=True)
    from_start = {id(tensors[n]) for n in (start or {}) if n in tensors}
    before = {id(p) for p in model.parameters()}
    strategy.inject(model)
    model.new_parameter_names = [n for n, p in model.named_parameters()
                                 if id(p) not in before and not n.startswith("head.")]
    model.init_tensor_names = {n for n, t in model.state_dict(keep_vars=True).items() if id(t) in from_start}
    return model


def save_weights(model: TransferModel, folder: RunFolder, trained: set[str]) -> None:
    """Head (and source head) + every backbone tensor that training could change or that
    came from an --init run (+ input statistics)."""
    identity = model.backbone.identity()
    state = model.state_dict()
    started = getattr(model, "init_tensor_names", set())
    keep = {n: v for n, v in state.items()
            if n in trained or n in started or n.startswith(("head.", "source_head.")) or identity.get("scratch")
            or n.startswith("backbone.mean") or n.startswith("backbone.std")}
    folder.write_weights(keep, identity)


class Run:
    def __init__(self, path: Path, config: FitConfig, task: Task, model: TransferModel,
                 decision: DecisionRule | None = None):
        self.path, self.config, self.task, self.model = Path(path), config, task, model
        self.folder = RunFolder(self.path)
        self.decision = decision  # the rule tuned on validation (decision.json), or None: argmax

    @property
    def metrics(self) -> dict:
        return self.folder.read_metrics()

    @property
    def history(self) -> list[dict]:
        return self.folder.read_history()

    def __repr__(self) -> str:
        m = self.metrics.get("test", {})
        shown = ", ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float))
        return f"Run({str(self.path)!r}, strategy={self.config.strategy!r}, {shown})"

    # -- loading ----------------------------------------------------------------------
    @classmethod
    def load(cls, path) -> "Run":
        folder = RunFolder(path)
        path = folder.path
        if path.exists() and not path.is_dir():
            raise ExaptError(f"{path} is a file, not a run folder; give the folder that `exapt fit --out` wrote")
        if not path.is_dir():
            raise ExaptError(f"run folder not found: {path}")
        if not folder.is_complete():
            raise ExaptError(f"{path} is not a complete run (no {folder.METRICS}/{folder.WEIGHTS}); "
                             "an interrupted fit continues with `exapt fit --resume RUN`")
        cfg = folder.read_config()
        try:
            labels = folder.read_labels()
            task = Task.from_json(labels)
            source_task = Task.from_json(labels["source"]) if labels.get("source") else None
        except (OSError, ValueError, KeyError) as e:
            raise ExaptError(f"{folder.labels}: unreadable ({str(e).splitlines()[0]})") from None
        try:
            tensors, meta = folder.read_weights()
        except Exception as e:  # safetensors raises its own error types for damaged files
            raise ExaptError(f"{folder.weights}: unreadable ({str(e).splitlines()[0][:200]})") from None
        recorded = meta.get("base_model", {})
        model = build_model(cfg, task, recorded.get("n_inputs"), parse_strategy(cfg.strategy), source_task)
        folder.check_base_model(recorded, model.backbone.identity())
        missing = set(tensors) - set(model.state_dict())
        if missing:
            raise ExaptError(f"{path}/{folder.WEIGHTS}: tensors {sorted(missing)[:3]} do not fit model {cfg.model!r}")
        try:
            model.load_state_dict(tensors, strict=False)
        except RuntimeError as e:
            raise ExaptError(f"{path}: the saved weights do not fit labels.json/config.yaml "
                             f"({str(e).splitlines()[-1].strip()[:200]})") from None
        model.eval()
        return cls(path, cfg, task, model, read_decision(folder))

    # -- using it ---------------------------------------------------------------------
    def _load_table(self, data, require_label: bool):
        d = self.config.data
        return load_data(str(data), text=d.text, label=d.label, features=d.features, require_label=require_label,
                         image_size=d.image_size)

    def logits(self, table, batch_size: int = 64) -> torch.Tensor:
        bb = self.model.backbone
        if table.kind != bb.input_kind and table.kind not in getattr(bb, "also_accepts", ()):
            raise ExaptError(f"{table.source}: this run takes {bb.input_kind} inputs, the data has {table.kind}")
        items = bb.prepare_inputs(table.inputs)
        split = Split(items, torch.zeros(len(items)), [bb.item_length(x) for x in items])
        return predict_logits(self.model, split, batch_size)

    def evaluate(self, data, batch_size: int = 64) -> dict[str, float]:
        """Metrics on labelled data (a path, a built-in name or a loaded Table)."""
        table = data if hasattr(data, "inputs") else self._load_table(data, require_label=True)
        targets = self.task.encode(table.labels, table.rows, table.source)
        metrics = self.task.metrics(self.logits(table, batch_size), targets, self.decision)
        metrics["n"] = len(table)
        return metrics

    def predict(self, data, batch_size: int = 64) -> pd.DataFrame:
        """One row per input: the prediction and, for classification, each class's probability."""
        table = data if hasattr(data, "inputs") else self._load_table(data, require_label=False)
        return prediction_frame(table, self.logits(table, batch_size), self.task, self.decision)


def prediction_frame(table, logits, task: Task, decision) -> pd.DataFrame:
    """`predict`'s columns, whoever computed the logits (a run, or an ONNX export of it):
    row (file, text), prediction, and for classification p_CLASS per class."""
    out = pd.DataFrame({"row": table.rows})
    if table.names is not None:
        out["file"] = table.names
    if table.kind == "text":
        out["text"] = table.inputs
    out["prediction"] = task.decode(logits, decision)
    if task.kind != "regression":
        probs = task.probabilities(logits, decision)
        for j, c in enumerate(task.classes):
            out[f"p_{c}"] = np.round(probs[:, j], 6)
    return out


def read_decision(folder: RunFolder) -> DecisionRule | None:
    try:
        saved = folder.read_decision()
        return DecisionRule.from_json(saved) if saved is not None else None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ExaptError(f"{folder.decision}: unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def write_outputs(folder: RunFolder, model, trained: set[str], metrics: dict, history: list[dict]) -> None:
    """Final artifacts; metrics.json goes last so a half-written run never looks complete."""
    save_weights(model, folder, trained)
    folder.write_history(history)
    folder.mark_complete(metrics)
