"""Parity of an exported graph with the run's PyTorch model, measured, never assumed.

On the run's test split (or `--check DATA`):
- fp32: the largest absolute difference of any logit, at most `FP32_TOLERANCE`;
- int8: the decisions agree with PyTorch fp32 on at least `MIN_AGREEMENT` of the rows
  and the task's quality measure loses at most `MAX_POINTS_LOST` points.

Decisions are the run's own: argmax or its decision rule (single-label), each label at
p >= 0.5 (multi-label, counted per row and label), and for regression a value within
`REGRESSION_BAND` target standard deviations of PyTorch's. Quality is accuracy,
micro-F1, or for regression the RMSE in percent of the target's standard deviation.
"""
from __future__ import annotations

import numpy as np
import torch

FP32_TOLERANCE = 1e-4
MIN_AGREEMENT = 0.99
MAX_POINTS_LOST = 1.0
REGRESSION_BAND = 0.1


def decisions(task, rule, logits: np.ndarray) -> np.ndarray:
    z = torch.from_numpy(np.asarray(logits, dtype=np.float32))
    if task.kind == "classification":
        return task.predicted(z, rule)
    probs = task.probabilities(z)
    return probs >= 0.5 if task.kind == "multilabel" else probs


def agreement(task, rule, reference: np.ndarray, exported: np.ndarray) -> float:
    a, b = decisions(task, rule, reference), decisions(task, rule, exported)
    if task.kind == "regression":
        return float(np.mean(np.abs(a - b) <= REGRESSION_BAND * task.target_std))
    return float(np.mean(a == b))


def quality(task, rule, logits: np.ndarray, targets) -> tuple[str, float] | None:
    """(name, value in points: higher is better) or None without labels."""
    if targets is None:
        return None
    m = task.metrics(torch.from_numpy(np.asarray(logits, dtype=np.float32)), targets, rule)
    if task.kind == "classification":
        return "accuracy", 100 * m["accuracy"]
    if task.kind == "multilabel":
        return "micro_f1", 100 * m["micro_f1"]
    return "rmse_percent_of_std", -100 * m["rmse"] / (task.target_std or 1.0)


def figures(task, rule, reference: np.ndarray, exported: np.ndarray, targets) -> dict:
    out = {"rows": len(reference), "max_abs_logit_diff": float(np.abs(reference - exported).max()),
           "agreement": agreement(task, rule, reference, exported)}
    ref, got = quality(task, rule, reference, targets), quality(task, rule, exported, targets)
    if ref is not None:
        out.update(metric=ref[0], pytorch=round(abs(ref[1]), 4), exported=round(abs(got[1]), 4),
                   points_lost=round(ref[1] - got[1], 4))
    return out


def failures(fig: dict, precision: str) -> list[str]:
    """What misses the targets, one phrase each (empty: it passes)."""
    if precision == "fp32":
        d = fig["max_abs_logit_diff"]
        if d <= FP32_TOLERANCE:
            return []
        return [(f"fp32 logits differ from PyTorch's by up to {d:.2g} (limit {FP32_TOLERANCE:g}: "
                 f"{d / FP32_TOLERANCE:.1f}x over)")]
    out = []
    if fig["agreement"] < MIN_AGREEMENT:
        out.append(f"int8 agrees with PyTorch fp32 on {100 * fig['agreement']:.1f}% of decisions "
                   f"(needs >= {100 * MIN_AGREEMENT:g}%: {100 * (MIN_AGREEMENT - fig['agreement']):.1f} points short)")
    if fig.get("points_lost", 0.0) > MAX_POINTS_LOST:
        out.append(f"int8 loses {fig['points_lost']:.2f} points of {fig['metric']} "
                   f"(limit {MAX_POINTS_LOST:g}: {fig['points_lost'] - MAX_POINTS_LOST:.2f} over)")
    return out
