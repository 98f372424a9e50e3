"""Penalties: what else is optimised beside the task's loss. One file each, registered by
name; any of them composes with any gradient strategy (`--strategy lora --penalty ewc`).
Every module of this package is imported here, so a new file is found without an import list."""
from ..registry import import_submodules

import_submodules(__name__, __path__)

from .base import PENALTIES, Context, Penalty, PenaltySet, Step, parse_penalties, parse_penalty  # noqa: E402

__all__ = ["PENALTIES", "Context", "Penalty", "PenaltySet", "Step", "parse_penalties", "parse_penalty"]
