"""`adversarial`: adversarial fine-tuning, the loss on perturbed inputs added to the clean loss.

    Omega = weight * L(f(x + delta), y)

Images (inputs in [0, 1]; a backbone normalises inside itself): delta is an l-inf
attack of radius eps, FGSM (Goodfellow et al. 2015, eq. 3: delta = eps * sign(grad_x L))
when `steps` is 0, else PGD (Madry et al. 2018: a random start in the eps-ball, then
`steps` signed-gradient steps of size `alpha`, each projected back onto the ball and
onto [0, 1]). Added to the clean loss with weight 1 this is Goodfellow's 50/50 mix.

Text: the inputs are discrete, so the perturbation acts on the input embeddings (FGM,
Miyato et al. 2017, eq. 6): r = eps' * g / ||g||_2, g the gradient of the loss with
respect to the word embeddings of one example (its whole sequence, one norm). eps is
per token, eps' = eps * sqrt(tokens), so that a long and a short input are perturbed
alike (the root-mean-square change per token is eps; MiniLM's word embeddings have
norm ~1.1, so the default 0.1 moves each by ~9%).

The attack primitives (`fgsm`, `pgd`, `embedding_features`) live here, below the
commands, so `exapt attack` (trust/attack_images.py) uses the same code it trains with.
Gradients for the perturbation are taken with `torch.autograd.grad` on the input only,
so they never reach the weights' `.grad`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..backbones.base import pool
from ..train.batches import Step
from .base import PENALTIES, Context, Penalty

# -- the attacks, on any differentiable `forward(x) -> logits` -------------------------
def input_gradient(forward, x: torch.Tensor, y: torch.Tensor, loss=nn.functional.cross_entropy) -> torch.Tensor:
    """d loss(forward(x), y) / dx, summed over the batch (each example's gradient is its own)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        value = loss(forward(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(value, x)
    return grad


def fgsm(forward, x: torch.Tensor, y: torch.Tensor, eps: float, loss=nn.functional.cross_entropy) -> torch.Tensor:
    """x + eps * sign(grad_x loss), clipped to the valid pixel range [0, 1]."""
    if eps == 0:
        return x.detach().clone()
    return (x + eps * input_gradient(forward, x, y, loss).sign()).clamp(0, 1).detach()


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Onto the l-inf ball of radius eps around x, then onto [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)


def pgd(forward, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 10, alpha: float | None = None,
        random_start: bool = True, generator: torch.Generator | None = None,
        loss=nn.functional.cross_entropy) -> torch.Tensor:
    """l-inf PGD (Madry et al. 2018): uniform random start in the ball, `steps` steps of
    alpha * sign(grad) (default alpha: 2.5 eps / steps, Madry's choice), projected each time."""
    if eps == 0:
        return x.detach().clone()
    alpha = 2.5 * eps / steps if alpha is None else alpha
    x = x.detach()
    x_adv = x.clone()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1
        x_adv = project(x + eps * noise.to(x.device), x, eps)
    for _ in range(steps):
        x_adv = project(x_adv + alpha * input_gradient(forward, x_adv, y, loss).sign(), x, eps)
    return x_adv.detach()


# -- text: the encoder run from input embeddings -----------------------------------------
def word_embeddings(backbone) -> nn.Embedding:
    """The input (word-piece) embedding table of a Hugging Face backbone."""
    return backbone.model.get_input_embeddings()


def embedding_features(backbone, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What `backbone(batch)` returns, from word embeddings instead of token ids (the
    model adds position and token-type embeddings itself)."""
    hidden = backbone.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    extra = hidden.shape[1] - mask.shape[1]
    if extra > 0:  # soft-prompt positions prepended by prompt tuning
        hidden = hidden[:, extra:]
    return pool(hidden, mask, backbone.pooling, backbone.normalize)


def fgm(forward, embeds: torch.Tensor, y: torch.Tensor, eps, loss=nn.functional.cross_entropy) -> torch.Tensor:
    """embeds + eps * g / ||g||_2, one l2 norm per example over its whole sequence (Miyato
    et al. 2017); `eps`: a number, or one per example."""
    g = input_gradient(forward, embeds, y, loss)
    shape = (-1, *([1] * (g.dim() - 1)))
    norm = g.flatten(1).norm(dim=1).clamp(min=1e-12).view(shape)
    return (embeds + torch.as_tensor(eps, dtype=g.dtype).reshape(-1).view(shape) * g / norm).detach()


@PENALTIES.register("adversarial")
@dataclass
class Adversarial(Penalty):
    eps: float = 0.1           # images: l-inf on pixels in [0, 1]; text: l2 per token of the word embeddings
    steps: int = 0             # images: 0 = FGSM, else PGD steps; text: always one FGM step
    weight: float = 1.0
    summary = "loss on adversarial inputs: FGSM/PGD pixels for images, FGM on word embeddings for text"

    def __post_init__(self):
        if self.eps < 0:
            raise ValueError("eps must be >= 0")
        if self.steps < 0:
            raise ValueError("steps must be >= 0")
        if self.weight < 0:
            raise ValueError("weight must be >= 0")

    def check(self, ctx: Context) -> None:
        bb = ctx.model.backbone
        if bb.input_kind not in ("image", "text") or getattr(ctx.task, "kind", "") != "classification":
            self.refuse(f"attacks image or text classifiers; this run is {bb.input_kind} "
                        f"{getattr(ctx.task, 'kind', '')}")
        if bb.input_kind == "text" and (bb.long is not None or not hasattr(bb, "model")):
            self.refuse("text needs a Hugging Face encoder over one window per input (no --long)")

    def setup(self, ctx: Context) -> None:
        self._task, self._train = ctx.task, ctx.train
        self._kind = ctx.model.backbone.input_kind
        self._generator = torch.Generator().manual_seed(ctx.cfg.train.seed)

    def __call__(self, model, step: Step) -> torch.Tensor:
        bb = model.backbone
        batch = bb.collate([self._train.items[i] for i in step.idx])
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        y = self._train.targets[torch.as_tensor(step.idx)].to(device)
        if self._kind == "image":
            def forward(x):
                return model.head(bb({**batch, "x": x}))
            x = batch["x"]
            x_adv = (pgd(forward, x, y, self.eps, self.steps, generator=self._generator) if self.steps
                     else fgsm(forward, x, y, self.eps))
            return self.weight * self._task.loss(forward(x_adv), y)
        mask = batch["attention_mask"]

        def forward(e):
            return model.head(embedding_features(bb, e, mask))
        embeds = word_embeddings(bb)(batch["input_ids"])
        eps = self.eps * mask.sum(1).float().sqrt()
        r = fgm(forward, embeds.detach(), y, eps) - embeds.detach()
        return self.weight * self._task.loss(forward(embeds + r), y)  # the table learns from it too
