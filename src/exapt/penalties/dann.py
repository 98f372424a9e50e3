"""`dann`: domain-adversarial training (Ganin et al. 2016, JMLR 17, sec. 4-5).

A domain classifier learns to tell source features (label 0) from target features
(label 1); between it and the encoder sits a gradient reversal layer, identity going
forward and multiplying the gradient by -lambda going back. So the classifier minimises
the domain loss while the encoder *maximises* it: it learns features the classifier
cannot separate, i.e. features whose distribution is the same in both domains, while the
task loss keeps them predictive on the source.

lambda follows the paper's schedule, lambda_p = 2 / (1 + exp(-gamma * p)) - 1 with
gamma = 10 and p the fraction of training done (0 -> 1): the encoder ignores the still
random classifier at first. The domain classifier's parameters are the penalty's own:
they train with the head's learning rate, are checkpointed with the run (exact resume)
and are not part of the saved model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .alignment import UsesTargetDomain
from .base import PENALTIES, Context, Step


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    return _ReverseGradient.apply(x, scale)


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


@PENALTIES.register("dann")
@dataclass
class DANN(UsesTargetDomain):
    weight: float = 1.0
    hidden: int = 256
    gamma: float = 10.0
    summary = "domain-adversarial features via gradient reversal (Ganin et al. 2016); needs --adapt-to"

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError("weight must be >= 0")
        if self.hidden < 1:
            raise ValueError("hidden must be >= 1")

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        cfg = ctx.cfg.train
        n = len(ctx.train.items)
        self._steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
        self._total = self._steps_per_epoch * cfg.resolved_epochs(n)
        d = ctx.model.backbone.feature_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.discriminator = nn.Sequential(nn.Linear(d, self.hidden), nn.ReLU(), nn.Linear(self.hidden, self.hidden),
                                               nn.ReLU(), nn.Linear(self.hidden, 1))
        self.discriminator.to(next(ctx.model.parameters()).device)

    def modules(self) -> dict[str, nn.Module]:
        return {"discriminator": self.discriminator}

    def __call__(self, model, step: Step) -> torch.Tensor:
        progress = (step.epoch * self._steps_per_epoch + step.batch) / self._total
        scale = dann_lambda(min(progress, 1.0), self.gamma)
        feats = torch.cat([step.features, self.target_features(model, step)])
        domain = torch.cat([torch.zeros(len(step.idx)), torch.ones(len(feats) - len(step.idx))]).to(feats.device)
        logits = self.discriminator(reverse_gradient(feats, scale)).squeeze(-1)
        return self.weight * nn.functional.binary_cross_entropy_with_logits(logits, domain)
