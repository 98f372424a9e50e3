"""`freeze:k`: the first k blocks (embeddings = block 0) stay frozen.

Frozen blocks run in eval mode, so their output is deterministic: the training loop
computes it once and each epoch runs only the trainable top.
"""
from dataclasses import dataclass

from ..registry import STRATEGIES
from .base import Strategy


@STRATEGIES.register("freeze")
@dataclass
class FreezeFirstK(Strategy):
    k: int = 4
    summary = "first k blocks frozen (their outputs cached), the rest fine-tuned"

    def __post_init__(self):
        if self.k < 0:
            raise ValueError("k must be >= 0")

    def first_trainable(self, n_blocks, epoch):
        return min(self.k, n_blocks)
