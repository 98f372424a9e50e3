"""`gradual-unfreeze`: the head and top block train first; one more block joins each
epoch (ULMFiT, Howard & Ruder 2018). The epoch alone fixes what is frozen, so a resumed
run continues exactly (the epoch is in the checkpoint)."""
from dataclasses import dataclass

from ..registry import STRATEGIES
from .base import Strategy


@STRATEGIES.register("gradual-unfreeze")
@dataclass
class GradualUnfreeze(Strategy):
    blocks_per_epoch: int = 1
    summary = "top block first, one more block unfrozen each epoch"
    changes_over_epochs = True

    def __post_init__(self):
        if self.blocks_per_epoch < 1:
            raise ValueError("blocks_per_epoch must be >= 1")

    def first_trainable(self, n_blocks, epoch):
        return max(n_blocks - self.blocks_per_epoch * (epoch + 1), 0)
