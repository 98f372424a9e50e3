"""FGSM and PGD (l-inf) on an image run, with the checks that expose gradient masking.

Inputs stay in [0, 1] pixel space, the space the data is in: every image backbone
normalises inside itself (efficientnet's (x*255-127)/128, the mlp's standardisation), so
an eps here is a budget on pixels, comparable across backbones. The primitives are the
ones `--penalty adversarial` trains with (penalties/adversarial.py).

A defence can look robust only because its gradients are useless (Athalye et al. 2018);
three cheap checks say when the numbers cannot be trusted:
- eps = 0 gives exactly the clean accuracy (the attack changes nothing by itself);
- robust accuracy does not rise as eps grows (a bigger ball contains the smaller one);
- PGD is never weaker than FGSM at the same eps (it starts where FGSM would go, in effect).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import torch

from ..penalties.adversarial import fgsm, pgd

TOLERANCE = 0.01  # accuracy differences below one example in a hundred are noise from PGD's random start


@dataclass
class ImageAttackResult:
    attack: str
    eps: float
    robust_accuracy: float
    success_rate: float           # of the examples the model got right, the share the attack flipped
    linf: float                   # the largest pixel change made (<= eps)
    mean_linf: float
    queries: int                  # gradient evaluations per example
    adversarial: np.ndarray = field(repr=False, default=None)
    predictions: np.ndarray = field(repr=False, default=None)


def image_forward(run, sample: torch.Tensor):
    """x in [0, 1], shaped as the data ([N, C, H, W]) -> logits; the backbone's own layout
    (the mlp takes pixels flattened) is made inside, so gradients reach the pixels."""
    model, bb = run.model, run.model.backbone
    model.eval()
    shape = np.asarray(bb.prepare_inputs(sample[:1].numpy())[0]).shape if len(sample) else sample.shape[1:]

    def forward(x):
        return model({"x": x.reshape(len(x), *shape)})
    return forward


@torch.no_grad()
def predict(forward, x: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    return torch.cat([forward(x[i:i + batch_size]).argmax(-1) for i in range(0, len(x), batch_size)]).numpy()


def attack_images(forward, x: torch.Tensor, y: torch.Tensor, attack: str, eps: float, steps: int = 10,
                  seed: int = 0, batch_size: int = 128) -> ImageAttackResult:
    """Run one attack at one eps over all examples, batch by batch."""
    generator = torch.Generator().manual_seed(seed)
    clean = predict(forward, x) == y.numpy()
    adv = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        adv.append(fgsm(forward, xb, yb, eps) if attack == "fgsm"
                   else pgd(forward, xb, yb, eps, steps, generator=generator))
    adv = torch.cat(adv) if adv else x.clone()
    pred = predict(forward, adv)
    right = pred == y.numpy()
    change = (adv - x).abs().flatten(1).amax(1) if len(x) else torch.zeros(0)
    return ImageAttackResult(
        attack, float(eps), float(right.mean()) if len(right) else float("nan"),
        float((clean & ~right).sum() / max(clean.sum(), 1)), float(change.max()) if len(change) else 0.0,
        float(change.mean()) if len(change) else 0.0, 0 if eps == 0 else (1 if attack == "fgsm" else steps),
        adv.numpy(), pred)


def masking_checks(clean_accuracy: float, results: list[ImageAttackResult]) -> dict:
    """The three gradient-masking checks over a grid of eps (one list per attack, eps rising)."""
    by = {a: sorted([r for r in results if r.attack == a], key=lambda r: r.eps) for a in ("fgsm", "pgd")}
    zero = [r for r in results if r.eps == 0]
    checks = {"eps0_equals_clean": all(abs(r.robust_accuracy - clean_accuracy) <= 1e-9 for r in zero)}
    checks["falls_with_eps"] = all(b.robust_accuracy <= a.robust_accuracy + TOLERANCE
                                   for rs in by.values() for a, b in itertools.pairwise(rs))
    fgsm_at = {r.eps: r.robust_accuracy for r in by["fgsm"]}
    checks["pgd_not_weaker_than_fgsm"] = all(r.robust_accuracy <= fgsm_at[r.eps] + TOLERANCE
                                             for r in by["pgd"] if r.eps in fgsm_at)
    checks["passed"] = all(checks.values())
    return checks
