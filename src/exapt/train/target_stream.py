"""Unlabelled target batches drawn beside the source batches of the training loop.

Batch b of epoch e takes the sample seeded by (seed, e, b), so a resumed run draws the
very same target batches as an uninterrupted one, and two penalties of one fit (coral
and dann, say) see the same target examples at each step.
"""
from __future__ import annotations

import numpy as np
import torch

from .loop import device_batch


def target_indices(n_target: int, size: int, seed: int, epoch: int, batch: int) -> np.ndarray:
    rng = np.random.default_rng([seed, epoch, batch, 0x7A6])
    return np.sort(rng.choice(n_target, size=min(size, n_target), replace=False))


def target_features(model, split, size: int, seed: int, epoch: int, batch: int) -> torch.Tensor:
    """The encoder's features (with gradients) of one target batch of `size` examples."""
    idx = target_indices(len(split.items), size, seed, epoch, batch)
    device = next(model.parameters()).device
    inputs, _ = device_batch(model, split, idx, device)
    return model.features(inputs)
