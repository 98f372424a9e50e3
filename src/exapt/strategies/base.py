"""The Strategy interface: *what trains*.

A strategy is a dataclass that is its own config. Everything it decides is expressed
through three small methods over the backbone's ordered blocks (input side first):

- `first_trainable(n_blocks, epoch)`: blocks before this index are frozen this epoch
  (n_blocks means "head only");
- `lr_scale(block, n_blocks)`: multiplies the learning rate of a block's parameters;
- `fits_probe_first`: fit the head on frozen features before any gradient step (LP-FT).

The base class turns those into `requires_grad` flags and AdamW parameter groups, so a
new strategy is usually a dozen lines in one file plus `@STRATEGIES.register(name)`
(which sets `name`; the package finds the file by itself).

What a strategy needs around training it declares here too, so `fit` asks and never
tests a strategy's name or options: `check_task` (refuse a task kind its options cannot
serve), `extra_probe_examples` (more examples for the probe: class names),
`before_training` (a stage of its own on the encoder: contrastive pairs), `probe_C` and
`probe_features_cacheable`, `fit_probe` (how the probe is fitted), `own_model` (a model
of its own: the baseline's classical features).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from torch import nn

from ..errors import ExaptError, StrategyDoesNotFit
from ..registry import STRATEGIES, parse_options
from ..train.probe import fit_linear_head


@dataclass
class Strategy:
    name: ClassVar[str] = ""  # set by @STRATEGIES.register(name)
    summary: ClassVar[str] = ""
    default_lr: ClassVar[float] = 5e-5
    # A new, random head needs bigger steps than pretrained weights; a head that is
    # already fitted (LP-FT) does not: None means "train it at the encoder's lr".
    default_head_lr: ClassVar[float | None] = 3e-3
    uses_pretrained: ClassVar[bool] = True   # False: the backbone is the scratch twin
    trains_encoder: ClassVar[bool] = True    # False: no gradient loop, head fitted on cached features
    fits_probe_first: ClassVar[bool] = False
    changes_over_epochs: ClassVar[bool] = False  # True: freezing changes between epochs
    checkpoints_activations: ClassVar[bool] = False  # default of train.activation_checkpointing
    mergeable: ClassVar[bool] = False  # its new weights fold into the encoder (`exapt merge`)
    # False: a run's encoder carries modules outside its layers (adapters, virtual tokens),
    # so it cannot be ranked or fine-tuned as a source model
    plain_encoder: ClassVar[bool] = True

    @property
    def reserved_positions(self) -> int:
        """Positions of the encoder its own tokens take (prompt tuning's virtual tokens):
        the default --max-length leaves them free."""
        return 0

    # -- what a strategy needs before and around training ---------------------------
    def check_task(self, kind: str, spec: str) -> None:
        """Raise ExaptError when this strategy, with its options, cannot serve a task of
        this kind; `spec` is the --strategy as the user wrote it. Every kind by default."""

    def check_backbone(self, backbone, spec: str, model: str) -> None:
        """Raise StrategyDoesNotFit when this strategy cannot run on `backbone` (the
        --model named `model`), before anything is added to it or trained."""
        n_blocks = len(backbone.blocks())
        if self.trains_encoder and self.first_trainable(n_blocks, 0) >= n_blocks:
            raise StrategyDoesNotFit(f"--strategy {spec}: {model} has {n_blocks} blocks, so this leaves only the "
                                     "head to train; use linear-probe, or freeze fewer blocks")

    @property
    def fits_probe(self) -> bool:
        """A linear head is fitted in closed form on frozen features (alone, or first)."""
        return not self.trains_encoder or self.fits_probe_first

    @property
    def probe_C(self) -> float:
        """The probe's inverse L2 regularisation (scikit-learn's C)."""
        return 1.0

    @property
    def probe_features_cacheable(self) -> bool:
        """False when `before_training` changes the encoder: the on-disk feature cache
        holds the untuned encoder's features."""
        return True

    def own_model(self) -> str | None:
        """The model this strategy always fits, whatever --model says (the baseline's
        classical features), or None: --model's. `model_for` is the one rule reading it."""
        return None

    def fit_probe(self, head: nn.Module, features, targets, task, sample_weight=None) -> dict:
        """Fit the linear head on frozen features; returns what metrics.json reports of it.
        The baseline overrides it to choose C by cross-validation first. `sample_weight`: a
        loss weight per row (synthetic rows, docs/augment.md), or None."""
        return fit_linear_head(head, features, targets, task, C=self.probe_C, sample_weight=sample_weight)

    def extra_probe_examples(self, train, classes: list, spec: str):
        """A Table of examples the probe fits on beside the training split (never the
        gradient stage), or None; `train` is the training split's Table."""
        return None

    def before_training(self, model: nn.Module, items: list, labels, lr: float, seed: int,
                        progress: bool = True, log=print) -> dict:
        """A stage of its own on the encoder before the head is fitted or trained, on the
        prepared training `items` and their class ids; returns what it reports for
        metrics.json. Most strategies have none."""
        return {}

    # -- what a strategy decides ----------------------------------------------------
    def inject(self, model: nn.Module) -> None:
        """Add new modules to the model (adapters, LoRA, prompts); most strategies add none."""

    def first_trainable(self, n_blocks: int, epoch: int) -> int:
        return 0

    def export(self, model: nn.Module, folder) -> None:
        """Extra files a run carries for other tools (the PEFT adapter folder); most write none."""

    def lr_scale(self, block: int, n_blocks: int) -> float:
        return 1.0

    @property
    def needs_start_weights(self) -> bool:
        """True: fit keeps the weights as they were before the first gradient step and
        hands them to `after_training` (WiSE-FT mixes them back in)."""
        return False

    def after_training(self, model: nn.Module, start: dict) -> None:
        """Change the trained model using the weights it started from; most strategies don't."""

    # -- derived behaviour (shared) -------------------------------------------------
    def block_names(self, model: nn.Module) -> list[list[str]]:
        """Parameter names per block; parameters outside every block join the top one
        (except the source head of a model started from a run: it never trains)."""
        blocks = model.block_parameter_names()
        seen = {n for b in blocks for n in b} | set(model.head_parameter_names())
        seen |= set(getattr(model, "source_head_parameter_names", list)())
        orphans = [n for n, _ in model.named_parameters() if n not in seen]
        if orphans and blocks:
            blocks[-1] = blocks[-1] + orphans
        return blocks

    def trainable_names(self, model: nn.Module, epoch: int) -> set[str]:
        blocks = self.block_names(model)
        start = self.first_trainable(len(blocks), epoch)
        names = {n for b in blocks[start:] for n in b}
        return names | set(model.head_parameter_names())

    def apply(self, model: nn.Module, epoch: int) -> None:
        """Set requires_grad for this epoch; frozen blocks run in eval mode (no dropout)."""
        keep = self.trainable_names(model, epoch)
        for n, p in model.named_parameters():
            p.requires_grad_(n in keep)

    def frozen_modules(self, model: nn.Module, epoch: int) -> list[nn.Module]:
        blocks = model.blocks()
        return [m for _, m in blocks[: self.first_trainable(len(blocks), epoch)]]

    def cacheable_prefix(self, model: nn.Module) -> int:
        """k such that blocks[:k] stay frozen for the whole run (0: nothing to cache)."""
        if self.changes_over_epochs or not self.trains_encoder:
            return 0
        return self.first_trainable(len(model.blocks()), 0)

    def param_groups(self, model: nn.Module, lr: float, head_lr: float, weight_decay: float) -> list[dict]:
        """AdamW groups carrying `lr_scale`; every parameter that may ever train is in one."""
        params = dict(model.named_parameters())
        blocks = self.block_names(model)
        groups = []
        for i, names in enumerate(blocks):
            if not self.changes_over_epochs and i < self.first_trainable(len(blocks), 0):
                continue  # frozen for the whole run: keep it out of the optimiser
            scale = self.lr_scale(i, len(blocks))
            decay = [params[n] for n in names if params[n].ndim > 1]
            no_decay = [params[n] for n in names if params[n].ndim <= 1]
            for ps, wd in ((decay, weight_decay), (no_decay, 0.0)):
                if ps:
                    groups.append({"params": ps, "lr": lr * scale, "lr_scale": scale, "weight_decay": wd})
        head = [params[n] for n in model.head_parameter_names()]
        groups.append({"params": head, "lr": head_lr, "lr_scale": head_lr / lr, "weight_decay": 0.0})
        return groups

    def learning_rates(self, train) -> tuple[float, float]:
        """(encoder lr, head lr) for a fit with these `train` options: the user's, else this
        strategy's defaults. The one place the default learning rates are decided (the
        loop, a contrastive stage and L2-SP's scaling all ask here)."""
        lr = train.lr or self.default_lr
        return lr, train.head_lr or self.default_head_lr or lr

    # -- config ---------------------------------------------------------------------
    def spec(self) -> str:
        """`lora:r=8,alpha=16.0,...`: every option, named, so `parse_strategy(spec)` gives it back."""
        values = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)]
        return self.name + (":" + ",".join(values) if values else "")


def model_for(strategy: Strategy, model: str | None) -> str | None:
    """The model a fit of `strategy` uses: the strategy's own (the baseline's features), else
    `model`. fit, compare's cells and rank all resolve it here."""
    return strategy.own_model() or model


def single_label_only(spec: str, kind: str, what: str) -> None:
    """Refuse an option that needs one class per example: `what` says which (it reads
    "<what> single-label classification")."""
    if kind != "classification":
        raise ExaptError(f"--strategy {spec}: {what} single-label classification; this task is {kind}")


def parse_strategy(spec: str) -> Strategy:
    """`freeze:4` -> FreezeFirstK(k=4); `lora:r=16,targets=query+value` -> LoRA(r=16, ...).

    Options follow the colon, comma-separated: positional (in field order) or key=value.
    """
    name = spec.partition(":")[0]
    return parse_options(STRATEGIES.get(name.strip()), spec, "--strategy")
