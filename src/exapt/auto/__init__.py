"""`exapt fit --strategy auto`: rank cheap candidates, fine-tune the promising few, choose on validation."""
from .search import check_budget, fit_auto

__all__ = ["check_budget", "fit_auto"]
