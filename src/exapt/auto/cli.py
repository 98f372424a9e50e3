"""`exapt fit --strategy auto [--budget-minutes M]`: the option it adds to `fit` and the call
`exapt.cli` makes when it is asked for (fit.py stays below this package and knows nothing of it)."""
from __future__ import annotations

from ..config import FitConfig
from ..errors import ExaptError
from .search import check_budget, fit_auto

AUTO = "auto"


def add_options(f) -> None:
    f.add_argument("--budget-minutes", type=float, metavar="M",
                   help="with --strategy auto: stop launching candidates when the next one would not fit in "
                        "M minutes (default: no limit)")


def wanted(a) -> bool:
    """Whether this `exapt fit` call is an auto search (or misuses its option)."""
    return a.strategy == AUTO or getattr(a, "budget_minutes", None) is not None


def fit(cfg: FitConfig, a, log) -> None:
    if a.strategy != AUTO:
        raise ExaptError(f"--budget-minutes is for --strategy auto (got --strategy {a.strategy})")
    if cfg.init or cfg.penalties or cfg.adapt.data:
        raise ExaptError("--strategy auto searches plain fits; drop --init, --penalty and --adapt-to, "
                         "or name a strategy")
    check_budget(a.budget_minutes)
    fit_auto(cfg, a.out, overwrite=a.overwrite, budget_minutes=a.budget_minutes, progress=not a.quiet, log=log)
