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


@PENALTIES.register("l2sp-decoupled")
@dataclass
class L2SPDecoupled(Penalty):
    """L2-SP's pull towards the start, decoupled from the gradient as AdamW decouples
    weight decay (Loshchilov & Hutter 2019): before each update, every anchored weight
    moves straight towards its start value,

        w <- w - lr * alpha * (w - w0)

    with lr its parameter group's learning rate at that step. Added to the loss instead
    (`l2sp`), the pull is divided by Adam's running gradient scale like any gradient:
    weights the target's gradient moves hard are barely held, weights it leaves alone are
    pinned; decoupled, every weight is shrunk towards w0 in the same proportion, the
    shape of WiSE-FT's interpolation, during training. With w0 = 0 it is AdamW's own
    weight decay, which the tests check. New parameters are left to the optimiser's
    weight decay. alpha is in AdamW's units: alpha * (sum of the learning rates over the
    run) is the share of the drift taken back, so with full's 5e-5 over ~120 steps the
    useful alpha is in the hundreds (docs/forgetting.md)."""
    alpha: float = 300.0
    summary = "before each step w <- w - lr*alpha*(w - w0): L2-SP decoupled from Adam's scaling, as AdamW's decay"

    def __post_init__(self):
        if self.alpha < 0:
            raise ValueError("alpha must be >= 0")

    def check(self, ctx: Context) -> None:
        needs_start(self, ctx)
        lr = ctx.strategy.learning_rates(ctx.cfg.train)[0]
        if lr * self.alpha >= 1:
            self.refuse(f"lr x alpha = {lr:g} x {self.alpha:g} >= 1 would pull past the start weights; "
                        "lower alpha (useful values are in the hundreds at lr 5e-5)")

    def setup(self, ctx: Context) -> None:
        params = dict(ctx.model.named_parameters())
        self._start = {id(params[n]): params[n].detach().clone() for n in anchored_names(ctx.model)}

    def __call__(self, model, step: Step) -> torch.Tensor:
        return torch.zeros(())  # it acts in before_step, not through the loss

    @torch.no_grad()
    def before_step(self, optimizer) -> None:
        for group in optimizer.param_groups:
            rate = group["lr"] * self.alpha
            for p in group["params"]:
                w0 = self._start.get(id(p))
                if w0 is not None and p.requires_grad:
                    if w0.device != p.device:
                        w0 = self._start[id(p)] = w0.to(p.device)
                    p.sub_(min(rate, 1.0) * (p - w0))
