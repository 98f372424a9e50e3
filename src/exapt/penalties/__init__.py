"""Penalties: what else is optimised beside the task's loss. One file each, registered by
name; any of them composes with any gradient strategy (`--strategy lora --penalty ewc`)."""
from . import alignment, dann, ewc, hierarchy, l2sp, lwf, pair_align, reweight, source_head  # noqa: F401
from .base import PENALTIES, Context, Penalty, PenaltySet, Step, parse_penalties, parse_penalty

__all__ = ["PENALTIES", "Context", "Penalty", "PenaltySet", "Step", "parse_penalties", "parse_penalty"]
