"""Knowledge distillation's loss (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge
in a Neural Network"), and the task the training loop sees while a student learns.

On a labelled row, with teacher logits t, student logits s, temperature T and weight A:

    loss = A * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - A) * CE(s, label)

and on an unlabelled row the first term alone (T^2 * KL): the T^2 keeps the soft term's
gradients on the scale of the hard one's as T changes (the paper's section 2).
Multi-label heads use the same with one Bernoulli per label; a regression head learns
the teacher's outputs with MSE (A * MSE(s, t) + (1 - A) * MSE(s, y) on labelled rows).

The loop (exapt.train.loop) is reused as is: `DistilTask` stands where a `Task` stands,
and each row's *target* is its index into a table holding the teacher's logits (computed
once, before training), the label and whether there is one.
"""
from __future__ import annotations

import os
import time

import torch
from torch.nn import functional as F

from ..tasks import Task
from ..train.batches import eval_batches
from ..train.loop import Split, device_batch


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, kind: str, temperature: float) -> torch.Tensor:
    """Per-row KL(teacher_T || student_T): over classes (softmax) or summed over labels
    (one Bernoulli per label, multi-label)."""
    s, t = student.float() / temperature, teacher.float() / temperature
    if kind == "multilabel":
        p = torch.sigmoid(t)
        log_q1, log_q0 = F.logsigmoid(s), F.logsigmoid(-s)
        log_p1, log_p0 = F.logsigmoid(t), F.logsigmoid(-t)
        return (p * (log_p1 - log_q1) + (1 - p) * (log_p0 - log_q0)).sum(-1)
    log_p, log_q = F.log_softmax(t, -1), F.log_softmax(s, -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def distil_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, labelled: torch.Tensor,
                kind: str, temperature: float, alpha: float) -> torch.Tensor:
    """The batch mean of the per-row losses above; `labelled` is a bool per row."""
    weight = torch.where(labelled, torch.full_like(labelled, alpha, dtype=torch.float32),
                         torch.ones_like(labelled, dtype=torch.float32))
    if kind == "regression":
        s, t, y = student.float().squeeze(-1), teacher.float().squeeze(-1), labels.float()
        soft, hard = (s - t) ** 2, (s - y) ** 2
    else:
        soft = temperature ** 2 * soft_kl(student, teacher, kind, temperature)
        if kind == "multilabel":
            hard = F.binary_cross_entropy_with_logits(student.float(), labels.float(), reduction="none").mean(-1)
        else:
            hard = F.cross_entropy(student.float(), labels.long(), reduction="none")
    hard = torch.where(labelled, hard, torch.zeros_like(hard))
    return (weight * soft + (1 - alpha) * hard * labelled.float()).mean()


class DistilTask:
    """What the training loop asks of a task (loss, metrics, the metric that picks the
    epoch), for a student: targets are row indices into the teacher's cached outputs."""

    def __init__(self, task: Task, teacher_logits: torch.Tensor, labels: torch.Tensor, labelled: torch.Tensor,
                 temperature: float, alpha: float):
        self.task, self.teacher, self.labels, self.labelled = task, teacher_logits, labels, labelled
        self.temperature, self.alpha = temperature, alpha
        self.kind = task.kind

    primary_metric = property(lambda self: self.task.primary_metric)
    higher_is_better = property(lambda self: self.task.higher_is_better)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, weight=None) -> torch.Tensor:
        # the loop passes per-row weights only for --synthetic rows, which a distillation never has
        assert weight is None, "distillation rows carry no loss weights"
        idx = targets.long().cpu()
        dev = logits.device
        return distil_loss(logits, self.teacher[idx].to(dev), self.labels[idx].to(dev), self.labelled[idx].to(dev),
                           self.kind, self.temperature, self.alpha)

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """The task's metrics on the labelled rows, and agreement with the teacher on all."""
        idx = targets.long().cpu()
        mask = self.labelled[idx]
        out = self.task.metrics(logits[mask], self.labels[idx][mask]) if bool(mask.any()) else {}
        out["agreement"] = agreement(self.task, logits, self.teacher[idx])
        return out


def agreement(task: Task, student: torch.Tensor, teacher: torch.Tensor) -> float:
    """Share of rows whose decision matches the teacher's (multi-label: of label decisions);
    regression: R^2 of the student's outputs as a prediction of the teacher's."""
    if task.kind == "classification":
        return float((student.argmax(-1) == teacher.argmax(-1)).float().mean())
    if task.kind == "multilabel":
        return float(((student > 0) == (teacher > 0)).float().mean())
    s, t = student.float().squeeze(-1), teacher.float().squeeze(-1)
    return float(1 - ((s - t) ** 2).sum() / ((t - t.mean()) ** 2).sum().clamp(min=1e-12))


@torch.inference_mode()
def examples_per_second(model, split: Split, batch_size: int = 32, max_rows: int = 256, repeats: int = 2) -> dict:
    """Forward passes of the first `max_rows` rows in batches of `batch_size` (the model
    in eval mode, on CPU, after one warm-up batch); the best of `repeats` passes, with the
    load average, so a figure taken on a busy machine says so."""
    was = model.training
    model.eval()
    rows = Split(split.items[:max_rows], split.targets[:max_rows], split.lengths[:max_rows])
    batches = list(eval_batches(rows.lengths, batch_size))
    model(device_batch(model, rows, batches[0], "cpu")[0])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for idx in batches:
            model(device_batch(model, rows, idx, "cpu")[0])
        best = min(best, time.perf_counter() - start)
    model.train(was)
    return {"examples_per_second": round(len(rows.items) / best, 2), "rows": len(rows.items),
            "batch_size": batch_size, "torch_threads": torch.get_num_threads(),
            "load_average_1min": round(os.getloadavg()[0], 2)}


def parameter_count(model) -> int:
    """Parameters that compute the task (a source head, kept only to measure forgetting, is not)."""
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("source_head."))
