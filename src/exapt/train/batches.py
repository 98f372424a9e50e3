"""Batches: length-grouped for text (less padding), deterministic per (seed, epoch).

Items are sorted by length inside windows of 50 batches, cut into batches, and the
batch order is shuffled: similar lengths share a batch (dynamic padding stays short)
while every epoch still sees a different order. An epoch's order depends only on
(seed, epoch), which is what lets a resumed run replay exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

WINDOW_BATCHES = 50


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, group_by_length: bool = True) -> list[np.ndarray]:
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    batches = []
    window = batch_size * WINDOW_BATCHES
    for start in range(0, len(order), window):
        chunk = order[start: start + window]
        if group_by_length:
            chunk = chunk[np.argsort([lengths[i] for i in chunk], kind="stable")]
        batches += [chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def eval_batches(lengths: list[int], batch_size: int) -> list[np.ndarray]:
    """Sorted by length (fastest with dynamic padding); callers restore the order."""
    order = np.argsort(lengths, kind="stable")
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


@dataclass
class Step:
    """One training batch, as a penalty sees it."""
    idx: np.ndarray            # its rows in the training split
    features: torch.Tensor     # the encoder's output for them (what the target head reads)
    epoch: int
    batch: int                 # the batch's number within the epoch
