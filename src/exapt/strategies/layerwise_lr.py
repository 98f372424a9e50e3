"""`layerwise-lr:decay`: the top block trains at lr, each block below at decay x the
one above (Howard & Ruder 2018; the layer decay of BEiT/timm). The head trains at head lr."""
from dataclasses import dataclass

from ..registry import STRATEGIES
from .base import Strategy


@STRATEGIES.register("layerwise-lr")
@dataclass
class LayerwiseLR(Strategy):
    decay: float = 0.8
    summary = "all weights train; learning rate decays geometrically towards the input"
    default_lr = 1e-4

    def __post_init__(self):
        if not 0 < self.decay <= 1:
            raise ValueError("decay must be in (0, 1]")

    def lr_scale(self, block, n_blocks):
        return self.decay ** (n_blocks - 1 - block)
