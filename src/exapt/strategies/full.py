"""`full`: every weight trains, with a small learning rate, warm-up and decay."""
from dataclasses import dataclass

from ..registry import STRATEGIES
from .base import Strategy


@STRATEGIES.register("full")
@dataclass
class FullFineTune(Strategy):
    summary = "all weights train (small lr, warm-up, linear decay, weight decay, clipping)"
