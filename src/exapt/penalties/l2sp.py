"""`l2sp`: L2-SP (Li, Grandvalet & Davoine 2018, "Explicit inductive bias for transfer
learning with convolutional networks", eq. 3):

    Omega(w) = alpha / 2 * ||w_S - w0_S||^2  +  beta / 2 * ||w_Sbar||^2

S: the parameters the start model already had (the pretrained encoder, or the --init
run's), pulled towards their start values w0 rather than towards zero as weight decay
would pull them; Sbar: what is new (the target head, modules a strategy injected), with
plain L2. Only parameters that train this step contribute: a frozen one sits at w0.

The term is added to the loss, as in the paper. Under Adam its pull is rescaled per
parameter like any gradient, so the useful alpha is larger than with SGD; see
docs/forgetting.md for the values measured on MiniLM.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import PENALTIES, Context, Penalty, Step, anchored_names, needs_start, new_names


@PENALTIES.register("l2sp")
@dataclass
class L2SP(Penalty):
    alpha: float = 0.1
    beta: float = 0.01
    name = "l2sp"
    summary = "alpha/2 ||w - w0||^2 over the start weights + beta/2 ||w||^2 over new ones (Li et al. 2018)"

    def __post_init__(self):
        if self.alpha < 0 or self.beta < 0:
            raise ValueError("alpha and beta must be >= 0")

    def check(self, ctx: Context) -> None:
        needs_start(self, ctx)

    def setup(self, ctx: Context) -> None:
        params = dict(ctx.model.named_parameters())
        self._anchored = [(params[n], params[n].detach().clone()) for n in anchored_names(ctx.model)]
        self._new = [params[n] for n in new_names(ctx.model)]

    def __call__(self, model, step: Step) -> torch.Tensor:
        drift = sum(((p - w0) ** 2).sum() for p, w0 in self._anchored if p.requires_grad)
        size = sum((p ** 2).sum() for p in self._new if p.requires_grad)
        return torch.as_tensor(self.alpha / 2 * drift + self.beta / 2 * size)
