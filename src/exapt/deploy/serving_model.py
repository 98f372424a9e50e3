"""What `exapt serve` serves: a `Predictor`, over a run folder (PyTorch) or an export folder.

The server only needs four things of a model: check and prepare a request's inputs
(`prepare`, raising an ExaptError in the CLI's wording, which the server answers with 422),
one forward pass over merged inputs (`outputs`: logits and the pooled embedding the drift
monitor watches), turning logits into answers (`answers`), and its identity (`info`).

Several runs of one base model (e.g. LoRA adapters fitted from the same encoder) share one
copy of the base weights: a `SharedBase` keeps one model and each member's own tensors
(its adapter and head), and loads a member's tensors before that member's forward pass.
Tensors of a LoRA run are a few hundred kilobytes, so the switch costs far less than the
pass; members must save the same tensor names and shapes (the same strategy and head).

An export folder (recognised by its export.json) is served by onnxruntime through
`ExportPredictor`: its own input spec, its graph's logits and embedding, and its own
`probabilities` / `decide`, which apply the source run's decision rule as `exapt predict
EXPORT` does. Its drift reference is built as a run's is (monitor.build_reference), from
the export's embeddings of the source run's test split, while that run folder exists.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..errors import ExaptError
from ..run import Run, read_decision
from ..run_folder import RunFolder
from ..tasks import Task
from .predictor import ExportFiles, ExportFolderError, ExportPredictor
from .serve_inputs import SOURCE, feature_inputs, image_inputs, text_inputs


class Predictor(Protocol):
    name: str
    task: str            # classification | multilabel | regression
    labels: list[str]
    input_kind: str      # text | features | image

    def info(self) -> dict: ...
    def prepare(self, inputs: list) -> list: ...
    def outputs(self, items: list) -> dict[str, np.ndarray]: ...
    def answers(self, logits: np.ndarray) -> list[dict]: ...


def answers_from(task: Task, logits: np.ndarray, decision=None) -> list[dict]:
    """Per input: the label and one probability per class, the value (regression), or the
    label set (multi-label), decided exactly as `exapt predict` decides."""
    t = torch.as_tensor(np.asarray(logits, dtype=np.float32))
    decoded = task.decode(t, decision)
    if task.kind == "regression":
        return [{"value": float(v)} for v in decoded]
    probs = np.round(task.probabilities(t, decision), 6)
    rows = []
    for label, p in zip(decoded, probs):
        named = {c: round(float(x), 6) for c, x in zip(task.classes, p)}
        if task.kind == "multilabel":
            rows.append({"labels": [c for c in task.classes if named[c] >= 0.5], "probabilities": named})
        else:
            rows.append({"label": label, "probabilities": named})
    return rows


# ============================================================================ run folders
class SharedBase:
    """One model object serving several runs of the same base model: before a member's
    forward pass the member's own tensors (adapter, head, anything its fit changed) are
    loaded in place; every other tensor (the base weights) is shared."""

    def __init__(self, model):
        self.model = model
        self.active = None
        self.lock = threading.Lock()
        self.layout: dict[str, tuple] | None = None   # name -> shape of the tensors members swap

    def admit(self, tensors: dict) -> bool:
        layout = {k: tuple(v.shape) for k, v in tensors.items()}
        if self.layout is None:
            self.layout = layout
        return layout == self.layout

    def forward(self, member, batch) -> tuple[torch.Tensor, torch.Tensor]:
        with self.lock:
            if self.active is not member:
                self.model.load_state_dict(member.tensors, strict=False)
                self.active = member
            with torch.inference_mode():
                feats = self.model.features(batch)
                return self.model.head(feats).float(), feats.float()


class RunPredictor:
    """A run folder, predicting as `exapt predict` does (same decision rule, same rounding)."""

    def __init__(self, name: str, path: Path, config, task: Task, decision, tensors: dict, meta: dict,
                 base: SharedBase):
        self.name, self.path, self.config, self.task_obj = name, Path(path), config, task
        self.decision, self.tensors, self.meta, self.base = decision, tensors, meta, base
        self.task, self.labels = task.kind, list(task.classes)
        bb = base.model.backbone
        self.input_kind = bb.input_kind
        self.features = list(config.data.features or [])
        self.backbone = bb
        self.folder = RunFolder(path)

    def info(self) -> dict:
        metrics = self.folder.read_metrics()
        return {"name": self.name, "kind": "run", "path": str(self.path), "task": self.task,
                "labels": self.labels, "input_kind": self.input_kind, "base_model": self.config.model,
                "base_model_sha256": self.meta.get("base_model", {}).get("sha256"),
                "strategy": self.config.strategy, "data": str(self.config.data.source),
                "test_metrics": metrics.get("test", {}), "export_parity": None}

    def identity(self) -> dict:
        return {"name": self.name, "run": str(self.path), "strategy": self.config.strategy,
                "base_model": self.config.model}

    def prepare(self, inputs: list) -> list:
        if self.input_kind == "text":
            values = text_inputs(inputs)
        elif self.input_kind == "features":
            values = feature_inputs(inputs, self.features)
        else:
            values = image_inputs(inputs, self.image_shape())
        return self.backbone.prepare_inputs(values)

    def image_shape(self) -> tuple[int, int, int] | None:
        n = self.meta.get("base_model", {}).get("n_inputs")
        if isinstance(n, (list, tuple)) and len(n) == 3:
            return tuple(int(x) for x in n)
        size = self.config.data.image_size
        return (3, int(size), int(size)) if size else None

    def outputs(self, items: list) -> dict[str, np.ndarray]:
        logits, feats = self.base.forward(self, self.backbone.collate(items))
        return {"logits": logits.numpy(), "embedding": feats.numpy()}

    def answers(self, logits: np.ndarray) -> list[dict]:
        return answers_from(self.task_obj, logits, self.decision)


def load_run(path, name: str, shared: list[SharedBase] | None = None) -> RunPredictor:
    """A run folder as a predictor; with `shared`, it joins the first SharedBase whose
    base model and tensor layout it matches (else a new one is appended)."""
    folder = RunFolder(path)
    for base in shared or []:
        member = join(base, folder, name)
        if member is not None:
            return member
    run = Run.load(folder.path)
    tensors, meta = folder.read_weights()
    base = SharedBase(run.model)
    base.admit(tensors)
    base.active = None
    if shared is not None:
        shared.append(base)
    return RunPredictor(name, folder.path, run.config, run.task, run.decision, tensors, meta, base)


def join(base: SharedBase, folder: RunFolder, name: str) -> RunPredictor | None:
    """The run as a member of `base`, or None when it needs a model of its own."""
    if not folder.is_complete():
        return None
    cfg = folder.read_config()
    tensors, meta = folder.read_weights()
    recorded = meta.get("base_model", {})
    current = base.model.backbone.identity()
    if (not recorded.get("sha256") or recorded.get("sha256") != current.get("sha256")
            or recorded.get("scratch") or not base.admit(tensors)):
        return None
    try:
        task = Task.from_json(folder.read_labels())
    except (OSError, ValueError, KeyError) as e:
        raise ExaptError(f"{folder.labels}: unreadable ({str(e).splitlines()[0]})") from None
    return RunPredictor(name, folder.path, cfg, task, read_decision(folder), tensors, meta, base)


# ============================================================================ export folders
def is_export(path) -> bool:
    return ExportFiles(path).is_export()


class GraphKey:
    """The cache key monitor.build_reference asks a predictor's `folder` for: here the
    graph's sha256, so an int8 export's reference is not an fp32 one's."""

    def __init__(self, sha256: str):
        self.sha256 = sha256

    def weights_sha256(self) -> str:
        return self.sha256


class ExportAdapter:
    """An `ExportPredictor` (onnxruntime) behind the server's interface. Requests are
    checked here as for a run, prepared by the export's own input spec (tokenizer, feature
    count, image shape), and answered by the export's `probabilities` / `decide`.

    For the drift reference it offers what monitor.build_reference reads of a run
    predictor: `config` (the source run's, None when that folder is gone: then no
    monitoring), `folder.weights_sha256()` and `backbone.prepare_inputs`."""

    def __init__(self, name: str, path: Path, export: ExportPredictor):
        self.name, self.path, self.export = name, Path(path), export
        self.meta = export.info()
        spec = self.meta["input"]
        self.input_kind, self.shape = spec["kind"], tuple(int(d) for d in spec.get("shape") or ())
        self.task, self.labels = export.task, list(export.labels or [])
        names = list(self.meta.get("data", {}).get("features") or [])
        n = self.shape[0] if self.input_kind == "features" else 0
        self.features = names if len(names) == n else [f"x{i + 1}" for i in range(n)]
        self.pad_id = int(spec.get("pad_id") or 0)
        self.source = Path(self.meta.get("source_run", {}).get("path") or "")
        folder = RunFolder(self.source) if self.source.name else None
        self.config = folder.read_config() if folder is not None and folder.is_complete() else None
        self.folder = GraphKey(self.meta["files"].get(ExportFiles.MODEL, ""))
        self.backbone = self   # build_reference prepares the test split through backbone.prepare_inputs

    def info(self) -> dict:
        src, meta = self.meta.get("source_run", {}), self.meta
        return {"name": self.name, "kind": "export", "path": str(self.path), "task": self.task,
                "labels": self.labels, "input_kind": self.input_kind, "base_model": src.get("model"),
                "base_model_sha256": meta.get("base_model", {}).get("sha256"), "strategy": src.get("strategy"),
                "data": str(self.config.data.source) if self.config is not None else None,
                "test_metrics": src.get("test_metrics", {}), "export_parity": meta.get("parity"),
                "export": {"source_run": src.get("path"), "quantize": meta.get("quantize"),
                           "optimize": meta.get("optimize"), "graph": meta.get("graph"),
                           "forced": meta.get("forced", False), "versions": meta.get("versions")}}

    def identity(self) -> dict:
        return {"name": self.name, "export": str(self.path), "strategy": self.meta.get("source_run", {}).get("strategy"),
                "base_model": self.meta.get("source_run", {}).get("model")}

    def prepare(self, inputs: list) -> list:
        """Checked inputs -> one graph-ready array per input (token ids, a feature row, an image)."""
        if self.input_kind == "text":
            return self.prepare_inputs(text_inputs(inputs))
        if self.input_kind == "features":
            return self.prepare_inputs(feature_inputs(inputs, self.features))
        return list(image_inputs(inputs, self.shape or None))

    def prepare_inputs(self, values) -> list:
        """Texts (tokenised by the export's tokenizer) or arrays, one item per input."""
        if self.input_kind != "text":
            return [np.asarray(v, dtype=np.float32) for v in values]
        try:
            feeds = self.export.prepare(list(values))
        except ValueError as e:   # a sequence letter the model does not know, as the CLI words it
            raise ExaptError(f"{SOURCE}: {e}") from None
        lengths = feeds["attention_mask"].sum(axis=1)
        return [ids[:n] for ids, n in zip(feeds["input_ids"], lengths)]

    def outputs(self, items: list) -> dict[str, np.ndarray]:
        if self.input_kind == "text":
            width = max(len(x) for x in items)
            ids = np.full((len(items), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(items), width), dtype=np.int64)
            for i, row in enumerate(items):
                ids[i, :len(row)], mask[i, :len(row)] = row, 1
            out = self.export.run({"input_ids": ids, "attention_mask": mask})
        else:
            out = self.export.run({"x": np.ascontiguousarray(np.stack(items), dtype=np.float32)})
        return {"logits": np.asarray(out["logits"], np.float32), "embedding": np.asarray(out["embedding"], np.float32)}

    def answers(self, logits: np.ndarray) -> list[dict]:
        """As `exapt predict EXPORT` answers: the export's probabilities and decision rule."""
        probs = self.export.probabilities(logits)
        if self.task == "regression":
            return [{"value": float(v)} for v in probs]
        named = [{c: round(float(x), 6) for c, x in zip(self.labels, row)} for row in probs]
        if self.task == "multilabel":
            return [{"labels": [c for c, x in zip(self.labels, row) if x >= 0.5], "probabilities": n}
                    for row, n in zip(probs, named)]
        return [{"label": self.labels[k], "probabilities": n} for k, n in zip(self.export.decide(logits), named)]


def load_export(path, name: str) -> ExportAdapter:
    try:
        return ExportAdapter(name, Path(path), ExportPredictor.load(path))
    except ExportFolderError as e:
        raise ExaptError(str(e)) from None


def load_predictor(path, name: str = "default", shared: list[SharedBase] | None = None):
    """A run folder or an export folder (preferred when the folder is an export)."""
    p = Path(path)
    if not p.exists():
        raise ExaptError(f"run or export folder not found: {p}")
    if is_export(p):
        return load_export(p, name)
    return load_run(p, name, shared)
