"""`bitfit`: only the bias terms of the encoder train, plus the head (Ben Zaken et al.
2022). No library needed: it is a choice of which existing parameters train."""
from dataclasses import dataclass

from ..registry import STRATEGIES
from .new_modules import NewModuleStrategy


@STRATEGIES.register("bitfit")
@dataclass
class BitFit(NewModuleStrategy):
    layer_decay: float = 1.0
    summary = "only the encoder's bias terms (and the head) train"
    default_lr = 1e-3

    def block_decay(self) -> float:
        return self.layer_decay

    def is_new(self, name: str) -> bool:
        return name.startswith("backbone.") and name.endswith(".bias")
