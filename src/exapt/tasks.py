"""What is predicted: each task owns its label encoding, head, loss and metrics.

- `classification`: one label per row; softmax head, cross-entropy; accuracy, macro-F1, AUROC.
- `multilabel`: several labels per row written `a|b|c`; sigmoid head, BCE; micro/macro-F1, AUROC.
- `regression`: one number per row; targets are standardised with the training mean/std
  (stored with the run) so one learning rate suits any unit; RMSE, MAE, R².
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .errors import ExaptError

MULTILABEL_SEP = "|"
TASK_KINDS = ("classification", "multilabel", "regression")


# The one metric each kind of task is judged by: early stopping picks the epoch by it, and
# compare's report and recommendation rank strategies by it. Multi-label: micro-F1, which
# pools every (row, label) decision, so a label seen twice in a small validation set
# cannot swing the choice the way it swings macro-F1 (both are reported).
PRIMARY_METRIC = {"classification": "accuracy", "multilabel": "micro_f1", "regression": "rmse"}


def primary_metric(kind: str) -> str:
    return PRIMARY_METRIC[kind]


def higher_is_better(kind: str) -> bool:
    return kind != "regression"


def infer_task_kind(labels: list) -> str:
    """`auto`: `a|b` labels are multi-label; many distinct numbers are regression."""
    if any(isinstance(v, (list, tuple)) for v in labels):
        return "multilabel"
    texts = [str(v) for v in labels]
    if any(MULTILABEL_SEP in t for t in texts):
        return "multilabel"
    try:
        values = np.array([float(t) for t in texts])
    except ValueError:
        return "classification"
    distinct = len(np.unique(values))
    integers = np.all(values == np.round(values))
    if integers and distinct <= max(20, int(0.05 * len(values))):
        return "classification"
    return "regression"


@dataclass
class Task:
    kind: str
    classes: list[str] = field(default_factory=list)
    target_mean: float = 0.0  # regression only
    target_std: float = 1.0

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_labels(cls, kind: str, labels: list, source: str = "data") -> "Task":
        if kind == "auto":
            kind = infer_task_kind(labels)
        if kind not in TASK_KINDS:
            raise ExaptError(f"--task must be one of auto, {', '.join(TASK_KINDS)} (got {kind!r})")
        if kind == "regression":
            values = _as_floats(labels, None, source)
            std = float(values.std()) or 1.0
            return cls(kind, [], float(values.mean()), std)
        if kind == "multilabel":
            classes = sorted({c for v in labels for c in _split_multi(v)})
        else:
            classes = sorted({str(v) for v in labels}, key=natural_key)
        if len(classes) < 2:
            raise ExaptError(
                f"{source}: the label column has a single class ({classes[0] if classes else 'none'}); "
                "classification needs at least two"
            )
        return cls(kind, classes)

    def to_json(self) -> dict:
        out = {"task": self.kind}
        if self.kind == "regression":
            out.update(target_mean=self.target_mean, target_std=self.target_std)
        else:
            out["classes"] = self.classes
        return out

    @classmethod
    def from_json(cls, d: dict) -> "Task":
        return cls(d["task"], d.get("classes", []), d.get("target_mean", 0.0), d.get("target_std", 1.0))

    # ---- labels <-> tensors ---------------------------------------------------------
    @property
    def n_outputs(self) -> int:
        return 1 if self.kind == "regression" else len(self.classes)

    def encode(self, labels: list, rows=None, source: str = "data") -> torch.Tensor:
        """Raw labels -> targets. A label the task never saw names its row."""
        if self.kind == "regression":
            values = _as_floats(labels, rows, source)
            return torch.tensor((values - self.target_mean) / self.target_std, dtype=torch.float32)
        index = {c: i for i, c in enumerate(self.classes)}
        if self.kind == "classification":
            out = []
            for i, v in enumerate(labels):
                key = str(v)
                if key not in index:
                    raise ExaptError(_unknown_label(source, rows, i, key, self.classes))
                out.append(index[key])
            return torch.tensor(out, dtype=torch.long)
        out = torch.zeros(len(labels), len(self.classes))
        for i, v in enumerate(labels):
            for c in _split_multi(v):
                if c not in index:
                    raise ExaptError(_unknown_label(source, rows, i, c, self.classes))
                out[i, index[c]] = 1.0
        return out

    def make_head(self, feature_dim: int) -> nn.Linear:
        return nn.Linear(feature_dim, self.n_outputs)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, weight=None) -> torch.Tensor:
        if self.kind == "classification":
            return nn.functional.cross_entropy(logits, targets)
        if self.kind == "multilabel":
            return nn.functional.binary_cross_entropy_with_logits(logits, targets)
        return nn.functional.mse_loss(logits.squeeze(-1), targets)

    # ---- outputs --------------------------------------------------------------------
    def probabilities(self, logits: torch.Tensor) -> np.ndarray:
        if self.kind == "classification":
            return torch.softmax(logits.float(), -1).numpy()
        if self.kind == "multilabel":
            return torch.sigmoid(logits.float()).numpy()
        return (logits.float().squeeze(-1) * self.target_std + self.target_mean).numpy()

    def decode(self, logits: torch.Tensor) -> list:
        out = self.probabilities(logits)
        if self.kind == "classification":
            return [self.classes[i] for i in out.argmax(1)]
        if self.kind == "multilabel":
            return [MULTILABEL_SEP.join(c for c, p in zip(self.classes, row) if p >= 0.5) for row in out]
        return [float(v) for v in out]

    @property
    def primary_metric(self) -> str:
        return primary_metric(self.kind)

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.kind)

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        from sklearn import metrics as m  # heavy: imported on first use

        probs = self.probabilities(logits)
        t = targets.numpy()
        if self.kind == "regression":
            truth = t * self.target_std + self.target_mean
            return {
                "rmse": float(math.sqrt(m.mean_squared_error(truth, probs))),
                "mae": float(m.mean_absolute_error(truth, probs)),
                "r2": float(m.r2_score(truth, probs)) if len(truth) > 1 else float("nan"),
            }
        if self.kind == "classification":
            pred = probs.argmax(1)
            out = {
                "accuracy": float(m.accuracy_score(t, pred)),
                "macro_f1": float(m.f1_score(t, pred, average="macro", labels=range(len(self.classes)), zero_division=0)),
            }
            present = np.unique(t)
            if len(present) == len(self.classes) and len(self.classes) > 1:
                scores = probs[:, 1] if len(self.classes) == 2 else probs
                out["auroc"] = float(m.roc_auc_score(t, scores, multi_class="ovr"))
            return out
        pred = (probs >= 0.5).astype(int)
        out = {
            "micro_f1": float(m.f1_score(t, pred, average="micro", zero_division=0)),
            "macro_f1": float(m.f1_score(t, pred, average="macro", zero_division=0)),
        }
        keep = (t.min(0) != t.max(0))  # AUROC needs both outcomes for a label
        if keep.any():
            out["auroc"] = float(m.roc_auc_score(t[:, keep], probs[:, keep], average="macro"))
        return out


def _split_multi(value) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(p).strip() for p in value if str(p).strip()]
    return [p.strip() for p in str(value).split(MULTILABEL_SEP) if p.strip()]


def natural_key(s: str):
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)


def _as_floats(labels, rows, source) -> np.ndarray:
    out = np.empty(len(labels), dtype=np.float64)
    for i, v in enumerate(labels):
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            out[i] = np.nan
        if not np.isfinite(out[i]):
            row = rows[i] if rows is not None else i + 1
            raise ExaptError(f"{source}: row {row}: regression label {v!r} is not a finite number")
    return out


def _unknown_label(source, rows, i, label, classes) -> str:
    row = rows[i] if rows is not None else i + 1
    return (
        f"{source}: row {row}: label {label!r} was never seen in training "
        f"(known: {', '.join(classes[:20])}{', ...' if len(classes) > 20 else ''})"
    )
