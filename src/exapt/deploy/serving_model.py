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

An export folder (recognised by its export.json) is served through
`exapt.deploy.predictor.ExportPredictor`, looked up when such a folder is given, so this
module works whether or not that exporter is installed.
"""
from __future__ import annotations

import base64
import binascii
import importlib
import importlib.util
import io
import threading
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch

from ..data.columns import select_columns
from ..data.images import as_images, resize_images
from ..errors import ExaptError
from ..run import Run, read_decision
from ..run_folder import RunFolder
from ..tasks import Task

EXPORT_MARKER = "export.json"
EXPORT_MODULE = "exapt.deploy.predictor"
SOURCE = "request"  # how a request's inputs are named in error messages ("request: row 2, ...")


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


# ============================================================================ request inputs
def text_inputs(inputs: list) -> list[str]:
    for i, v in enumerate(inputs, start=1):
        if not isinstance(v, str):  # a number would pass as its decimal text: the caller meant something else
            raise ExaptError(f"{SOURCE}: row {i}, column 'text': expected text, got a {_json_type(v)}")
    return select_columns(pd.DataFrame({"text": inputs}), source=SOURCE, text="text", label=None,
                          require_label=False).inputs


def feature_inputs(inputs: list, names: list[str]) -> np.ndarray:
    rows = []
    for i, v in enumerate(inputs, start=1):
        if isinstance(v, dict):
            unknown = sorted(set(v) - set(names))
            if unknown:
                raise ExaptError(f"{SOURCE}: row {i}: unknown feature {unknown[0]!r} (the run takes {', '.join(names[:10])})")
            v = [v.get(n) for n in names]
        if not isinstance(v, list):
            raise ExaptError(f"{SOURCE}: row {i}: expected a list of {len(names)} numbers, got a {_json_type(v)}")
        if len(v) != len(names):
            raise ExaptError(f"{SOURCE}: row {i} has {len(v)} values; the run takes {len(names)} features "
                             f"({', '.join(names[:10])}{', ...' if len(names) > 10 else ''})")
        if any(isinstance(x, (list, dict, bool)) for x in v):
            raise ExaptError(f"{SOURCE}: row {i}: features must be numbers")
        rows.append(v)
    df = pd.DataFrame(rows, columns=names, dtype=object)
    return select_columns(df, source=SOURCE, features=list(names), label=None, require_label=False).inputs


def image_inputs(inputs: list, shape: tuple[int, int, int] | None) -> np.ndarray:
    """Base64 PNG/JPEG strings -> float32 [N, C, H, W] in [0, 1], in the run's channels and size."""
    from PIL import Image  # heavy: imported on first use

    mode = "L" if shape is not None and shape[0] == 1 else "RGB"
    arrays = []
    for i, v in enumerate(inputs, start=1):
        if not isinstance(v, str) or not v.strip():
            raise ExaptError(f"{SOURCE}: row {i}: expected an image as a base64 PNG or JPEG string")
        try:
            raw = base64.b64decode(v.split(",", 1)[-1] if v.startswith("data:") else v, validate=True)
            with Image.open(io.BytesIO(raw)) as im:
                if im.format not in ("PNG", "JPEG"):
                    raise ValueError(f"{im.format} is not PNG or JPEG")
                im = im.convert(mode)
                if shape is not None and im.size != (shape[2], shape[1]):
                    im = im.resize((shape[2], shape[1]), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except (binascii.Error, ValueError, OSError, Image.DecompressionBombError) as e:
            raise ExaptError(f"{SOURCE}: row {i}: not a readable image ({str(e).splitlines()[0][:120]})") from None
        arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    sizes = {a.shape for a in arrays}
    if len(sizes) > 1:
        raise ExaptError(f"{SOURCE}: images differ in size ({', '.join(str(s[1:]) for s in sorted(sizes))}); "
                         "send images of one size")
    return as_images(np.stack(arrays), SOURCE, "inputs")


def _json_type(v) -> str:
    return {dict: "JSON object", list: "list", type(None): "null", bool: "boolean", int: "number",
            float: "number", str: "string"}.get(type(v), type(v).__name__)


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
    return (Path(path) / EXPORT_MARKER).is_file()


def export_available() -> bool:
    return importlib.util.find_spec(EXPORT_MODULE) is not None


class ExportAdapter:
    """An `ExportPredictor` (onnxruntime) behind the same interface: inputs are checked
    here as for a run, the forward pass is the export's, answers are decided from its
    logits (argmax / sigmoid 0.5 / the value, as its task says)."""

    def __init__(self, name: str, path: Path, export):
        self.name, self.path, self.export = name, Path(path), export
        self.task, self.labels = export.task, list(export.labels)
        info = export.info()
        self.input_kind = info.get("input_kind", "text")
        self.features = info.get("features") or []
        self.task_obj = Task(self.task, self.labels) if self.task != "regression" else Task.from_json(
            info.get("labels_json", {"task": "regression", "mean": 0.0, "std": 1.0}))

    def info(self) -> dict:
        info = dict(self.export.info())
        return {"name": self.name, "kind": "export", "path": str(self.path), "task": self.task,
                "labels": self.labels, "input_kind": self.input_kind, "base_model": info.get("base_model"),
                "strategy": info.get("strategy"), "test_metrics": info.get("test_metrics", {}),
                "export_parity": info.get("parity"), "export": info}

    def identity(self) -> dict:
        return {"name": self.name, "export": str(self.path)}

    def prepare(self, inputs: list) -> list:
        if self.input_kind == "text":
            return text_inputs(inputs)
        if self.input_kind == "features":
            return list(feature_inputs(inputs, self.features))
        return list(image_inputs(inputs, None))

    def outputs(self, items: list) -> dict[str, np.ndarray]:
        out = self.export.outputs(items if self.input_kind == "text" else np.stack(items))
        return {"logits": np.asarray(out["logits"], np.float32), "embedding": np.asarray(out["embedding"], np.float32)}

    def answers(self, logits: np.ndarray) -> list[dict]:
        return answers_from(self.task_obj, logits)


def load_export(path, name: str) -> ExportAdapter:
    """The export folder through exapt.deploy.predictor, imported only now (it ships with
    `exapt export`; without it an export folder cannot be served)."""
    if not export_available():
        raise ExaptError(f"{path} is an export folder, but this exapt cannot run exports ({EXPORT_MODULE} is "
                         "missing); serve the run folder it was exported from instead")
    module = importlib.import_module(EXPORT_MODULE)
    return ExportAdapter(name, Path(path), module.ExportPredictor.load(path))


def load_predictor(path, name: str = "default", shared: list[SharedBase] | None = None):
    """A run folder or an export folder (preferred when the folder is an export)."""
    p = Path(path)
    if not p.exists():
        raise ExaptError(f"run or export folder not found: {p}")
    if is_export(p):
        return load_export(p, name)
    return load_run(p, name, shared)
