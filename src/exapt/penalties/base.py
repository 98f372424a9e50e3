"""The Penalty interface: *what else is optimised*, beside the task's loss.

A strategy decides what trains; a penalty adds a term to the loss it trains on. So they
compose freely (`--strategy lora --penalty ewc`), and a new penalty is one file with
one `@PENALTIES.register(name)`:

- `check(ctx)`: refuse what cannot work (no source head, no source data) before the run
  folder exists, with one line that says what to add;
- `setup(ctx)`: the expensive part (a Fisher matrix, recorded source outputs), once,
  after the folder exists and before the first step, on the model as training starts;
- `__call__(model, step)`: the weighted penalty for one batch (a scalar tensor);
- `modules()`: modules of its own that train beside the model (dann's domain
  classifier): the loop optimises and checkpoints them; the saved model leaves them out;
- `before_step(optimizer)`: acts on the weights directly, once per step, after the
  gradients and before the optimiser's update (a decoupled pull, as AdamW decouples
  weight decay); most penalties act through the loss only.

Penalties keep no state that training changes, so a resumed run rebuilds them exactly:
the start weights are rebuilt with the model, the Fisher is read back from the run.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

import torch

from ..errors import ExaptError
from ..registry import PENALTIES, parse_options
from ..train.batches import Step


@dataclass
class Context:
    """Everything a penalty may use. `train` (the prepared training split), `start` and
    `run_dir` are filled in once the run folder exists (setup); check() sees the rest."""
    model: torch.nn.Module
    strategy: object
    task: object
    cfg: object                         # FitConfig
    source: object = None               # SourceData (labelled source examples) or None
    mlm: object = None                  # MLMSource (a self-supervised source) or None
    has_init: bool = False              # started from a run (--init)
    target: object = None               # TargetDomain of --adapt-to (adapt/target.py) or None
    train: object = None                # Split of the target training examples (raw items)
    start: dict | None = None           # start values of every parameter, by name
    run_dir: Path | None = None        # the run folder (RunFolder(run_dir) names its files)
    unlabelled: object = None           # Split of the unlabelled target examples (with --adapt-to)
    start_features: object = None       # StartFeatures: the start encoder's features of a raw split, once
    progress: bool = True
    log: object = print


@dataclass
class Penalty:
    name: ClassVar[str] = ""  # set by @PENALTIES.register(name)
    summary: ClassVar[str] = ""
    # What it cannot do without, checked before anything is built (compare checks a
    # whole panel with it): "init" (a source head), "source" (a run or a corpus),
    # "target" (unlabelled target-domain data, --adapt-to).
    needs: ClassVar[str] = ""

    def check(self, ctx: Context) -> None:
        """Raise ExaptError when this penalty cannot apply to this fit."""

    def setup(self, ctx: Context) -> None:
        """Prepare what __call__ needs; runs once, before the first step."""

    def __call__(self, model, step: Step) -> torch.Tensor:
        raise NotImplementedError

    def modules(self) -> dict[str, torch.nn.Module]:
        """Trainable modules of its own, built in setup(); most penalties have none."""
        return {}

    def before_step(self, optimizer) -> None:
        """Change the weights directly before the optimiser's update; most penalties don't."""

    def spec(self) -> str:
        values = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)]
        return self.name + (":" + ",".join(values) if values else "")

    def refuse(self, why: str) -> None:
        raise ExaptError(f"--penalty {self.name}: {why}")


# -- which parameters have a value to stay near -------------------------------------
def anchored_names(model) -> list[str]:
    """Backbone parameters that existed before any strategy added modules: they have a
    pretrained (or source-run) value, w0, to stay near. Everything else that trains (the
    head, LoRA matrices, adapters, prompts) is new."""
    new = set(getattr(model, "new_parameter_names", ()))
    return [n for n, _ in model.named_parameters() if n.startswith("backbone.") and n not in new]


def new_names(model) -> list[str]:
    """The target head and whatever a strategy injected (L2-SP's beta term)."""
    return list(model.head_parameter_names()) + list(getattr(model, "new_parameter_names", ()))


def needs_start(penalty: Penalty, ctx: Context) -> None:
    """A pull towards the start is a pull towards knowledge only when the start has some."""
    if not getattr(ctx.strategy, "uses_pretrained", True):
        penalty.refuse(f"--strategy {ctx.strategy.name} starts from random weights: there is no "
                       "pretrained knowledge to hold on to")
    if ctx.model.backbone.identity().get("scratch") and not ctx.has_init:
        penalty.refuse(f"--model {ctx.cfg.model} has random weights; start from a trained run with --init RUN")


# -- several at once ----------------------------------------------------------------
class PenaltySet:
    """The penalties of one fit, summed; each one's value is logged per epoch."""

    def __init__(self, penalties: list[Penalty]):
        self.items = list(penalties)

    def __bool__(self) -> bool:
        return bool(self.items)

    def __iter__(self):
        return iter(self.items)

    def check(self, ctx: Context) -> None:
        if self.items and not ctx.strategy.trains_encoder:
            raise ExaptError(f"--penalty {self.items[0].name}: --strategy {ctx.strategy.name} fits its head in "
                             "closed form, without gradient steps for a penalty to act on; use full, lp-ft, "
                             "freeze:k, lora, ...")
        for p in self.items:
            p.check(ctx)

    def setup(self, ctx: Context) -> None:
        for p in self.items:
            p.setup(ctx)

    def modules(self) -> dict[str, torch.nn.Module]:
        """Every penalty's own trainable modules, named `<penalty>.<module>`."""
        return {f"{p.name}.{k}": m for p in self.items for k, m in p.modules().items()}

    def before_step(self, optimizer) -> None:
        for p in self.items:
            p.before_step(optimizer)

    def check_static(self, has_init: bool, has_corpus: bool, has_target: bool = False) -> None:
        """What can be refused from the options alone (compare: before its folder exists)."""
        for p in self.items:
            if p.needs == "target" and not has_target:
                p.refuse("needs unlabelled target-domain data: add --adapt-to TARGET")
            if p.needs == "init" and not has_init:
                p.refuse("needs a source head: start from a run with --init RUN")
            if p.needs == "source" and not (has_init or has_corpus):
                p.refuse("needs the source task: --init RUN, or --source-corpus CORPUS with a masked-LM --model")

    def __call__(self, model, step: Step) -> tuple[torch.Tensor, dict[str, float]]:
        total, parts = None, {}
        for p in self.items:
            value = p(model, step)
            parts[p.name] = parts.get(p.name, 0.0) + float(value.detach())
            total = value if total is None else total + value
        return total, parts


def parse_penalty(spec: str) -> Penalty:
    """`l2sp:0.01` -> L2SP(alpha=0.01); `ewc:weight=1000,samples=128`; `lwf`."""
    name = spec.partition(":")[0].strip()
    return parse_options(PENALTIES.get(name), spec.strip(), "--penalty")


def parse_penalties(specs) -> PenaltySet:
    if isinstance(specs, str):
        specs = [specs]
    penalties = [parse_penalty(s) for s in specs or [] if str(s).strip()]
    names = [p.name for p in penalties]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ExaptError(f"--penalty {twice[0]} is given twice; give it once, with the weight you want")
    return PenaltySet(penalties)
