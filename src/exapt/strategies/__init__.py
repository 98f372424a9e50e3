"""Strategies: what trains. One file each, registered by name; every module of this
package is imported here, so a new file is found without an import list."""
from ..registry import STRATEGIES, import_submodules
from .base import Strategy, model_for, parse_strategy

import_submodules(__name__, __path__)

__all__ = ["STRATEGIES", "Strategy", "model_for", "parse_strategy"]
