"""Strategies: what trains. One file each, registered by name."""
from ..registry import STRATEGIES
from . import (adapter, bitfit, freeze, full, gradual_unfreeze, ia3, layerwise_lr, linear_probe,  # noqa: F401
               lora, lp_ft, prefix, prompt, scratch)
from .base import Strategy, parse_strategy

__all__ = ["STRATEGIES", "Strategy", "parse_strategy"]
