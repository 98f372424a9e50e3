"""`lwf`: Learning without Forgetting (Li & Hoiem 2016, eq. 2), which needs no source
labels, only the source head:

    Omega = weight * mean_x [ - sum_j y'_j(x) * log yhat'_j(x) ]
    y'    = softmax(z0(x) / T),  yhat' = softmax(z(x) / T)

z0: the source head's logits on the *target* training inputs, recorded once from the
start model before the first step; z: the same head on the current encoder's features
of the same inputs. T = 2 as in the paper. The paper also fine-tunes the old head; here
it stays fixed, so the encoder alone keeps the old outputs (and "source accuracy after"
scores exactly that encoder).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..train.loop import predict_logits
from .base import PENALTIES, Context, Penalty, Step


@PENALTIES.register("lwf")
@dataclass
class LwF(Penalty):
    weight: float = 1.0
    temperature: float = 2.0
    needs = "init"
    summary = "distil the source head's outputs on the target inputs (Li & Hoiem 2016)"

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError("weight must be >= 0")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")

    def check(self, ctx: Context) -> None:
        if getattr(ctx.model, "source_head", None) is None:
            self.refuse("needs a source head to distil: start from a run with --init RUN")
        if ctx.source is not None and ctx.source.task.kind != "classification":
            self.refuse(f"distils class probabilities; the source task is {ctx.source.task.kind}")

    def setup(self, ctx: Context) -> None:
        logits = predict_logits(ctx.model, ctx.train, forward=ctx.model.source_logits)
        self._recorded = torch.softmax(logits / self.temperature, -1)

    def __call__(self, model, step: Step) -> torch.Tensor:
        z = model.source_head(step.features)
        target = self._recorded[torch.as_tensor(step.idx)]
        return self.weight * -(target * torch.log_softmax(z / self.temperature, -1)).sum(-1).mean()
