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

from .checks import parse_class_weight, parse_loss
from .decision import calibration_report, per_class_scores
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


# When the classes are imbalanced (the smallest below this fraction of a uniform share,
# 1/k), accuracy rewards ignoring the rare ones: compare then ranks single-label
# classification by macro-F1 instead, and says so.
IMBALANCE_SHARE = 0.5


def imbalanced(counts) -> bool:
    counts = [c for c in counts]
    total = sum(counts)
    return len(counts) > 1 and total > 0 and min(counts) / total < IMBALANCE_SHARE / len(counts)


def ranking_metric(kind: str, counts=None) -> str:
    """The metric compare ranks by: the task's primary metric, or macro-F1 for single-label
    classification with imbalanced class counts."""
    if kind == "classification" and counts is not None and imbalanced(counts):
        return "macro_f1"
    return primary_metric(kind)


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
    # the training loss (classification): per-class weights and the focal term's gamma;
    # set by `set_loss` for a fit, never saved (a loaded run only predicts)
    class_weights: torch.Tensor | None = field(default=None, repr=False)
    focal_gamma: float | None = None

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

    def set_loss(self, class_weight: str | None, loss: str, train_targets: torch.Tensor) -> None:
        """--class-weight and --loss: `balanced` weighs class c by n / (k * n_c) over the
        training split (scikit-learn's rule); `CLASS=W` names classes (others keep 1)."""
        spec, gamma = parse_class_weight(class_weight), parse_loss(loss)
        if spec is None and gamma is None:
            return
        if self.kind != "classification":
            raise ExaptError(f"--class-weight and --loss focal need a single-label classification task (this is {self.kind})")
        if spec == "balanced":
            counts = torch.bincount(train_targets, minlength=len(self.classes)).double()
            weights = len(train_targets) / (len(self.classes) * counts.clamp(min=1))
        elif spec:
            unknown = sorted(set(spec) - set(self.classes))
            if unknown:
                raise ExaptError(f"--class-weight: unknown class {unknown[0]!r} (classes: {', '.join(self.classes[:20])})")
            weights = torch.tensor([spec.get(c, 1.0) for c in self.classes], dtype=torch.float64)
        self.class_weights = weights.float() if spec else None
        self.focal_gamma = gamma

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, weight=None) -> torch.Tensor:
        """The mean loss over rows; `weight` (one per row, e.g. ALPHA for synthetic rows):
        the mean of w_i * loss_i, so a row of weight ALPHA counts ALPHA times (scikit-learn's
        sample_weight in the probe's objective, train/probe.py)."""
        if weight is not None:
            return (self.row_losses(logits, targets) * weight.to(logits.device, logits.dtype)).mean()
        if self.kind == "classification":
            if self.class_weights is not None or self.focal_gamma is not None:
                return focal_loss(logits, targets, self.class_weights, self.focal_gamma or 0.0)
            return nn.functional.cross_entropy(logits, targets)
        if self.kind == "multilabel":
            return nn.functional.binary_cross_entropy_with_logits(logits, targets)
        return nn.functional.mse_loss(logits.squeeze(-1), targets)

    def row_losses(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each row's loss (what `loss` averages)."""
        if self.kind == "classification":
            return focal_loss(logits, targets, self.class_weights, self.focal_gamma or 0.0, reduce=False)
        if self.kind == "multilabel":
            return nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(-1)
        return nn.functional.mse_loss(logits.squeeze(-1), targets, reduction="none")

    # ---- outputs --------------------------------------------------------------------
    def probabilities(self, logits: torch.Tensor, rule=None) -> np.ndarray:
        """`rule`: a run's DecisionRule (decision.py): its calibrated probabilities."""
        if self.kind == "classification":
            return torch.softmax(rule.calibrated(logits) if rule else logits.float(), -1).numpy()
        if self.kind == "multilabel":
            return torch.sigmoid(logits.float()).numpy()
        return (logits.float().squeeze(-1) * self.target_std + self.target_mean).numpy()

    def predicted(self, logits: torch.Tensor, rule=None) -> np.ndarray:
        """Single-label class indices: the argmax, or the rule's decision."""
        return rule.decide(logits) if rule else self.probabilities(logits).argmax(1)

    def decode(self, logits: torch.Tensor, rule=None) -> list:
        out = self.probabilities(logits)
        if self.kind == "classification":
            return [self.classes[i] for i in self.predicted(logits, rule)]
        if self.kind == "multilabel":
            return [MULTILABEL_SEP.join(c for c, p in zip(self.classes, row) if p >= 0.5) for row in out]
        return [float(v) for v in out]

    @property
    def primary_metric(self) -> str:
        return primary_metric(self.kind)

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.kind)

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor, rule=None) -> dict[str, float]:
        from sklearn import metrics as m  # heavy: imported on first use

        probs = self.probabilities(logits, rule)
        t = targets.numpy()
        if self.kind == "regression":
            truth = t * self.target_std + self.target_mean
            return {
                "rmse": float(math.sqrt(m.mean_squared_error(truth, probs))),
                "mae": float(m.mean_absolute_error(truth, probs)),
                "r2": float(m.r2_score(truth, probs)) if len(truth) > 1 else float("nan"),
            }
        if self.kind == "classification":
            pred = self.predicted(logits, rule)
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

    def class_report(self, logits: torch.Tensor, targets: torch.Tensor, rule=None) -> dict:
        """Single-label classification: per-class precision / recall / F1 and calibration
        (ECE + the reliability table) of the probabilities as given (rule applied)."""
        if self.kind != "classification":
            return {}
        truth = targets.numpy()
        return {"per_class": per_class_scores(self.predicted(logits, rule), truth, self.classes),
                "calibration": calibration_report(self.probabilities(logits, rule), truth)}


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None,
               gamma: float = 0.0, reduce: bool = True) -> torch.Tensor:
    """Mean over rows of -w_y (1 - p_y)^gamma log p_y (Lin et al. 2017, eq. 5, with the
    class weight as alpha). gamma = 0 is class-weighted cross-entropy. The mean is over
    rows, not over the weights' sum, so the probe's objective is scikit-learn's
    class-weighted one (C * sum_i w_i loss_i)."""
    logp = torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1)
    per_row = -logp if gamma == 0 else -((1 - logp.exp()).clamp(min=0) ** gamma) * logp
    if weights is not None:
        per_row = per_row * weights.to(logits.device, per_row.dtype)[targets]
    return per_row.mean() if reduce else per_row


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
