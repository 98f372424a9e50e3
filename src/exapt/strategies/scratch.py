"""`scratch`: the same architecture with random weights, all trained: the baseline that
every transfer result is measured against. It gets its own, larger learning rate."""
from dataclasses import dataclass

from ..registry import STRATEGIES
from .base import Strategy


@STRATEGIES.register("scratch")
@dataclass
class Scratch(Strategy):
    summary = "same architecture, random init, all weights train (the baseline)"
    default_lr = 3e-4
    uses_pretrained = False
