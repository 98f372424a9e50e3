"""A compare panel: which cells (strategy x labelled-set size x seed) to run, in what order.

Each cell is an ordinary `fit` configuration, so a cell run by `compare` and the same
cell run by `exapt fit` are the same experiment. Cheap cells (no gradient through the
encoder) go first so that early results appear early; the rest go smallest n first.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass

from ..config import FitConfig, PrivacySpec
from ..errors import ExaptError
from ..penalties import PENALTIES, parse_penalties
from ..strategies import model_for, parse_strategy
from ..train.privacy import check_private
from .defaults import DEFAULT_SIZES, DEFAULT_STRATEGIES  # noqa: F401  (re-exported)

ALL = "all"
# Data paths may name pre-made training files, one per size and seed, e.g.
# "splits/train_n{n}_s{seed}.csv": then nothing is sampled and each cell reads its file.
PLACEHOLDERS = ("{n}", "{seed}")


@dataclass(frozen=True)
class Cell:
    strategy: str      # the spec as the user wrote it, e.g. "freeze:4" or "full+ewc:1e4"
    n: int | str       # labelled examples per class, or "all"
    seed: int
    cfg: FitConfig

    @property
    def name(self) -> str:
        strategy, penalties = split_label(self.strategy)
        privacy = privacy_of(self.strategy)
        slug = "_".join(_slug(part) for part in [strategy, *penalties, *([f"dp{privacy}"] if privacy else [])])
        return f"{slug}-n{self.n}-s{self.seed}"


def _slug(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "", spec.replace(":", "-").replace("=", ""))


def split_label(label: str) -> tuple[str, list[str]]:
    """`full+ewc:1e4+lwf` -> ("full", ["ewc:1e4", "lwf"]): a panel entry is a strategy with
    penalties joined by `+`. A `+` inside the strategy's options (lora's
    `targets=query+value`) stays there: only a registered penalty's name starts a penalty."""
    parts = label.partition(PRIVACY_MARK)[0].split("+")  # `@dp=E` is the privacy, not the strategy's
    strategy, penalties = parts[0], []
    for part in parts[1:]:
        if part.partition(":")[0].strip() in PENALTIES.names():
            penalties.append(part.strip())
        elif penalties:
            penalties[-1] += "+" + part
        else:
            strategy += "+" + part
    return strategy.strip(), penalties


PRIVACY_MARK = "@dp="  # `lora@dp=8`: a panel entry trained with --privacy epsilon=8


def privacy_of(label: str) -> str | None:
    """The epsilon of a `STRATEGY@dp=E` panel entry, or None."""
    return label.partition(PRIVACY_MARK)[2] or None


def with_privacy(strategies: list[str], privacy: str | None) -> list[str]:
    """`compare --privacy none,8,1`: every strategy once per budget (`none`: not private),
    as `lora`, `lora@dp=8`, `lora@dp=1`: privacy becomes a panel dimension."""
    if not privacy:
        return strategies
    budgets = [b.strip() for b in str(privacy).split(",") if b.strip()]
    for b in budgets:
        if b.lower() not in ("none", "inf"):
            PrivacySpec.parse(f"epsilon={b}")  # epsilon <= 0, nan, words: one line, before anything runs
            for s in strategies:
                check_private(FitConfig(privacy=f"epsilon={b}"), parse_strategy(split_label(s)[0]), split_label(s)[1])
    return [s if b.lower() in ("none", "inf") else f"{s}{PRIVACY_MARK}{b}" for s in strategies for b in budgets]


def parse_sizes(text: str | list) -> list[int | str]:
    """`8,16,32,64,all` -> [8, 16, 32, 64, 'all'] (sorted, duplicates dropped)."""
    items = text if isinstance(text, (list, tuple)) else [t for t in str(text).split(",") if t.strip()]
    sizes: list[int | str] = []
    for item in items:
        item = str(item).strip().lower()
        if item == ALL:
            sizes.append(ALL)
            continue
        try:
            value = int(item)
        except ValueError:
            raise ExaptError(f"--n-per-class {text!r}: {item!r} is not a whole number or 'all'") from None
        if value < 1:
            raise ExaptError(f"--n-per-class {text!r}: sizes must be >= 1 (got {value})")
        sizes.append(value)
    if not sizes:
        raise ExaptError("--n-per-class needs at least one size")
    numbers = sorted({s for s in sizes if s != ALL})
    return numbers + ([ALL] if ALL in sizes else [])


def parse_strategies(text: str | list) -> list[str]:
    items = text if isinstance(text, (list, tuple)) else split_strategy_list(str(text))
    if not items:
        raise ExaptError("--strategies needs at least one strategy")

    out = []
    for item in items:
        strategy, penalties = split_label(item)
        parse_strategy(strategy)  # unknown names and bad options fail here, before anything runs
        parse_penalties(penalties)
        if item not in out:
            out.append(item)
    return out


def split_strategy_list(text: str) -> list[str]:
    """`lp-ft,lp-ft:names=2,wise=0.5,full` -> ['lp-ft', 'lp-ft:names=2,wise=0.5', 'full']: the
    commas separate strategies, but a `key=value` piece (no strategy name is spelled with
    '=') continues the options of the strategy before it."""
    items: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if items and ":" in items[-1] and "=" in piece and ":" not in piece.split("=", 1)[0]:
            items[-1] += "," + piece
        else:
            items.append(piece)
    return items


def uses_file_pattern(source: str) -> bool:
    return any(p in source for p in PLACEHOLDERS)


def build_cells(base: FitConfig, strategies: list[str], sizes: list, seeds: int) -> list[Cell]:
    """Every (strategy, n, seed) as a FitConfig, ordered cheap first."""
    if seeds < 1:
        raise ExaptError(f"--seeds must be >= 1 (got {seeds})")
    pattern = uses_file_pattern(base.data.source)
    if pattern and ALL in sizes:
        raise ExaptError("--n-per-class 'all' cannot fill the {n} placeholder of a file pattern; give sizes")
    cells = []
    for strategy in strategies:
        for n in sizes:
            for seed in range(seeds):
                cfg = copy.deepcopy(base)
                cfg.strategy, cfg.penalties = split_label(strategy)
                if privacy_of(strategy):
                    cfg.privacy = f"epsilon={privacy_of(strategy)}"
                cfg.model = model_for(parse_strategy(cfg.strategy), cfg.model)  # the baseline's own
                cfg.data.seed = cfg.train.seed = seed
                if pattern:
                    cfg.data.source = base.data.source.replace("{n}", str(n)).replace("{seed}", str(seed))
                    cfg.data.n_per_class = None
                else:
                    cfg.data.n_per_class = None if n == ALL else int(n)
                cells.append(Cell(strategy, n, seed, cfg))
    order = {s: i for i, s in enumerate(strategies)}

    def cost(cell: Cell):
        gradient = parse_strategy(cell.cfg.strategy).trains_encoder
        size = float("inf") if cell.n == ALL else cell.n
        return (gradient, size, cell.seed, order[cell.strategy])

    return sorted(cells, key=cost)
