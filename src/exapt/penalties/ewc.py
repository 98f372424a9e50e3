"""`ewc`: Elastic Weight Consolidation (Kirkpatrick et al. 2017, eq. 3):

    Omega(theta) = lambda / 2 * sum_i F_i * (theta_i - theta*_i)^2

theta*: the start weights (what the source task was learnt into); F: the diagonal of
the Fisher information of the source task at theta*, so weights that the source task
depends on are held firmly and the others are free. F is estimated once per (start
model, source data) from the source: see fisher.py. It is saved with the run
(`fisher.safetensors`) and in the cache, and reused: by `--resume`, and by every other
fit from the same start on the same source.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import PENALTIES, Context, Penalty, Step, anchored_names, needs_start
from .fisher import load_or_estimate


@PENALTIES.register("ewc")
@dataclass
class EWC(Penalty):
    weight: float = 1e4
    samples: int = 256
    needs = "source"
    summary = "Fisher-weighted pull towards the start weights (Kirkpatrick et al. 2017)"

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError("weight must be >= 0")
        if self.samples < 1:
            raise ValueError("samples must be >= 1")

    def check(self, ctx: Context) -> None:
        needs_start(self, ctx)
        if ctx.source is None and ctx.mlm is None:
            self.refuse("needs the source task to weigh the weights by: --init RUN (a labelled source run), "
                        "or --source-corpus CORPUS with a masked-LM --model (made by exapt pretrain)")

    def setup(self, ctx: Context) -> None:
        names = anchored_names(ctx.model)
        fisher = load_or_estimate(ctx, names, self.samples)
        params = dict(ctx.model.named_parameters())
        self._terms = [(params[n], params[n].detach().clone(), fisher[n]) for n in names]
        self.fisher_ = fisher

    def __call__(self, model, step: Step) -> torch.Tensor:
        total = sum((f * (p - w0) ** 2).sum() for p, w0, f in self._terms if p.requires_grad)
        return torch.as_tensor(self.weight / 2 * total)
