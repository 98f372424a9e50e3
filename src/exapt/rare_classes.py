"""A fit's rare-class steps (docs/rare-classes.md): the loss's class weights / focal term
before training, the decision rule fitted on validation after it, and what metrics.json
says of each class and of calibration.

The defaults (cross-entropy, argmax) change nothing a fit computes: no rule is fitted and
the test metrics are those of the argmax; only the per-class table and the calibration
error of the test predictions are added to metrics.json.
"""
from __future__ import annotations

from collections import Counter

import torch

from .config import FitConfig
from .decision import DecisionRule, expected_calibration_error, fit_rule
from .errors import ExaptError
from .tasks import Task
from .train.loop import predict_logits


def prepare_classes(cfg: FitConfig, task: Task, table, tables: dict, targets: dict) -> list[int] | None:
    """Check the options against the task and set its training loss; returns the class
    counts of the labelled rows outside the test set (what the decision rule takes as
    the data's class frequencies), or None when no rule is asked for."""
    c = cfg.classes
    task.set_loss(c.class_weight, c.loss, targets["train"])
    if not c.tunes_rule:
        return None
    flag = "--target-recall" if c.target_recall and c.decision == "argmax" else f"--decision {c.decision}"
    if task.kind != "classification":
        raise ExaptError(f"{flag} needs a single-label classification task (this is {task.kind})")
    unknown = sorted(set(c.target_recall_values()) - set(task.classes))
    if unknown:
        raise ExaptError(f"--target-recall: unknown class {unknown[0]!r} (classes: {', '.join(task.classes[:20])})")
    if not len(tables["val"]):
        raise ExaptError(f"{flag} is tuned on the validation split; give --val-fraction > 0")
    counts = Counter(str(v) for v in table.labels)
    if not cfg.data.test:  # the test rows were split off this table: their labels are not used
        counts.subtract(str(v) for v in tables["test"].labels)
    return [max(0, counts[name]) for name in task.classes]


def fit_decision(cfg: FitConfig, task: Task, model, val_split, train_targets: torch.Tensor,
                 data_counts: list[int] | None) -> DecisionRule | None:
    """The rule from the validation split's logits alone (None: argmax)."""
    if data_counts is None:
        return None
    trained = torch.bincount(train_targets, minlength=len(task.classes)).double()
    if task.class_weights is not None:  # the loss saw each class in proportion to n_c * w_c
        trained = trained * task.class_weights.double()
    logits = predict_logits(model, val_split)
    return fit_rule(cfg.classes.decision, cfg.classes.target_recall_values(), logits, val_split.targets.numpy(),
                    task.classes, data_counts, trained.numpy())


def class_metrics(task: Task, rule: DecisionRule | None, test_logits: torch.Tensor, test_targets: torch.Tensor) -> dict:
    """metrics.json's per-class table and calibration (of what the run predicts), and,
    with a rule, the argmax's test metrics and ECE before the rule for comparison."""
    report = task.class_report(test_logits, test_targets, rule)
    if not report:
        return {}
    out = {"per_class": {"test": report["per_class"]}, "calibration": report["calibration"]}
    if rule is not None:
        raw = task.probabilities(test_logits)
        out["calibration"] = {"ece_before": expected_calibration_error(raw, test_targets.numpy()),
                              "ece_after": report["calibration"]["ece"], "temperature": rule.temperature,
                              **report["calibration"]}
        out["decision"] = {**rule.to_json(), "test_argmax": task.metrics(test_logits, test_targets),
                           "test_per_class_argmax": task.class_report(test_logits, test_targets)["per_class"]}
    return out


def summary_line(metrics: dict) -> str | None:
    """One line for fit's log: the rule's effect on the test set."""
    rule = metrics.get("decision")
    if rule is None:
        return None
    before, after, cal = rule["test_argmax"], metrics["test"], metrics["calibration"]
    return (f"decision rule {rule['rule']} (tuned on validation): macro-F1 {before['macro_f1']:.4f} -> "
            f"{after['macro_f1']:.4f}, accuracy {before['accuracy']:.4f} -> {after['accuracy']:.4f}; "
            f"temperature {rule['temperature']:.3g}, ECE {cal['ece_before']:.4f} -> {cal['ece_after']:.4f}")

