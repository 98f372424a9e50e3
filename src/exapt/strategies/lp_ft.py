"""`lp-ft`: fit a linear probe first, then fine-tune everything starting from that head
(Kumar et al. 2022): a good head from step one keeps the features from being distorted."""
from dataclasses import dataclass

from ..registry import STRATEGIES
from .base import Strategy


@STRATEGIES.register("lp-ft")
@dataclass
class LinearProbeThenFineTune(Strategy):
    C: float = 1.0
    name = "lp-ft"
    summary = "linear probe first, then full fine-tuning from that head"
    fits_probe_first = True

    def __post_init__(self):
        if self.C <= 0:
            raise ValueError("C must be > 0")
