"""Strategies: what trains. One file each, registered by name."""
from ..registry import STRATEGIES
from . import freeze, full, gradual_unfreeze, layerwise_lr, linear_probe, lp_ft, scratch  # noqa: F401 (registration)
from .base import Strategy, parse_strategy

__all__ = ["STRATEGIES", "Strategy", "parse_strategy"]
