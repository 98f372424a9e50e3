"""A contrastive stage before the head (SetFit's body tuning, Tunstall et al. 2022).

With a handful of labels per class, a head learns little from each example, while
*pairs* of examples are many: n examples give ~n^2 same-class / other-class pairs. The
encoder is first tuned so that the cosine similarity of two examples' features is 1 for
the same class and 0 for different classes (sentence-transformers' CosineSimilarityLoss:
the mean squared error between the cosine and that target); the head is then fitted on
the tuned features. `lp-ft:pairs=N` runs this stage before its linear probe.

Pairs are drawn the way SetFit draws them: each example in turn, once with a partner of
its own class and once with a partner of another class, over a fresh random order per
round, until `total` pairs.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import ExaptError
from .optim import fused_adamw, linear_warmup_decay


def contrastive_pairs(labels, total: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first, second, target) index arrays of `total` pairs; target 1.0 = same class."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise ExaptError("contrastive pairs need examples of at least two classes")
    rng = np.random.default_rng(seed)
    members = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    first, second, target = [], [], []
    while len(first) < total:
        for i in rng.permutation(len(labels)):
            same = members[labels[i]]
            if len(same) > 1:  # a class of one has no positive partner
                j = same[rng.integers(len(same) - 1)]
                j = same[-1] if j == i else j  # any member but i, uniformly
                first.append(i), second.append(j), target.append(1.0)
            others = np.flatnonzero(labels != labels[i])
            first.append(i), second.append(others[rng.integers(len(others))]), target.append(0.0)
            if len(first) >= total:
                break
    return np.array(first[:total]), np.array(second[:total]), np.array(target[:total], dtype=np.float32)


def cosine_pair_loss(a: torch.Tensor, b: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' CosineSimilarityLoss: mean (cos(a, b) - target)^2."""
    return F.mse_loss(F.cosine_similarity(a, b, dim=-1), target)


def contrastive_tuning(model, items: list, labels, total: int, lr: float, seed: int, batch_size: int = 16,
                       warmup: float = 0.1, weight_decay: float = 0.01, progress: bool = True, log=print) -> dict:
    """Tune model.backbone on `total` pairs of `items` (prepared training inputs) with
    AdamW, linear warm-up and decay; one pass over the pairs, `batch_size` pairs a step."""
    first, second, target = contrastive_pairs(np.asarray(labels), total, seed)
    bb = model.backbone
    torch.manual_seed(seed)
    was = {n: p.requires_grad for n, p in bb.named_parameters()}
    for p in bb.parameters():
        p.requires_grad_(True)
    decay = [p for p in bb.parameters() if p.ndim > 1]
    no_decay = [p for p in bb.parameters() if p.ndim <= 1]
    optimizer = fused_adamw([{"params": decay, "weight_decay": weight_decay, "lr": lr},
                        {"params": no_decay, "weight_decay": 0.0, "lr": lr}])
    steps = math.ceil(total / batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(steps, warmup))
    bb.train()
    losses = []
    bar = tqdm(range(steps), desc="contrastive pairs", leave=False, disable=not progress)
    for s in bar:
        part = slice(s * batch_size, (s + 1) * batch_size)
        a, b = first[part], second[part]
        batch = bb.collate([items[i] for i in np.concatenate([a, b])])
        feats = bb(batch)
        loss = cosine_pair_loss(feats[:len(a)], feats[len(a):], torch.from_numpy(target[part]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(bb.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    bar.close()
    bb.eval()
    for n, p in bb.named_parameters():
        p.requires_grad_(was[n])
    first_loss, last_loss = float(np.mean(losses[:10])), float(np.mean(losses[-10:]))
    log(f"contrastive stage: {total} pairs, {steps} steps, pair loss {first_loss:.4f} -> {last_loss:.4f}")
    return {"contrastive_pairs": total, "contrastive_steps": steps,
            "contrastive_loss_first": round(first_loss, 5), "contrastive_loss_last": round(last_loss, 5)}
