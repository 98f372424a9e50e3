"""The configuration of one `fit`: a typed dataclass, written to `config.yaml`.

Everything needed to rebuild, resume or reproduce a run is here; nothing is read from
globals. `--set key=value` overrides are parsed against the field types.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .errors import ExaptError


@dataclass
class TrainConfig:
    epochs: int | None = None      # None: enough epochs for `min_steps` optimiser steps
    min_steps: int = 120
    max_epochs: int = 40
    batch_size: int = 16
    lr: float | None = None        # None: the strategy's default
    head_lr: float | None = None   # None: the strategy's default (3e-3 for a new head)
    weight_decay: float = 0.01
    warmup: float = 0.1
    clip: float = 1.0
    patience: int = 5              # epochs without validation gain before stopping; 0: off
    seed: int = 0
    cache_prefix: bool = True
    # Recompute activations in the backward pass instead of keeping them. None: on for
    # strategies that train new modules only (lora, adapters...), whose memory is then
    # little more than the frozen model's; off otherwise.
    activation_checkpointing: bool | None = None

    def resolved_epochs(self, n_train: int) -> int:
        if self.epochs:
            return self.epochs
        steps_per_epoch = max(1, math.ceil(n_train / self.batch_size))
        return int(min(self.max_epochs, max(3, math.ceil(self.min_steps / steps_per_epoch))))


@dataclass
class DataConfig:
    source: str = "tweets"
    text: str | None = None
    label: str = "label"
    features: list[str] | None = None
    test: str | None = None          # a separate test file; otherwise split off test_fraction
    test_fraction: float = 0.2
    max_test: int = 2000             # cap on a split-off test set (large built-ins)
    val_fraction: float = 0.2
    n_per_class: int | None = None
    seed: int = 0
    image_size: int | None = None    # images resized to N x N when read (a folder of mixed sizes needs it)


@dataclass
class SourceConfig:
    """The source task a fit should not forget (`--init RUN`, `--source-*`).

    Labelled source examples default to the --init run's own data, split exactly as that
    run split it, so "source accuracy before" is the run's own test accuracy. A
    self-supervised source is an unlabelled corpus for a masked-LM model folder."""
    data: str | None = None          # labelled source data (default: the --init run's)
    text: str | None = None          # its columns (default: the --init run's)
    label: str | None = None
    features: list[str] | None = None
    corpus: str | None = None        # unlabelled corpus of a masked-LM source (--source-corpus)
    max_test: int = 1000             # source examples (or held-out windows) scored before and after


@dataclass
class AdaptConfig:
    """Domain adaptation (`--adapt-to`, docs/adaptation.md): the target domain's data.

    Its rows are split once: `test_fraction` of them (stratified, when they have labels)
    become the target test set and never reach training; the rest are the unlabelled
    target examples the penalties align to (their labels, if any, are dropped), of which
    `labels` per class may be kept labelled for model selection."""
    data: str | None = None          # file or built-in name of the target domain
    test_fraction: float = 0.5       # of the target rows, held out (labelled) for the target test
    labels: int = 0                  # target labels per class used to choose the epoch (0: none)
    select: str = "auto"             # source-val | weighted-val | target-labels (auto: target-labels if labels)
    max_rows: int = 5000             # cap on unlabelled target rows (a random sample)


@dataclass
class FitConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: str = "minilm-l6"
    strategy: str = "linear-probe"
    task: str = "auto"
    pooling: str | None = None
    max_length: int = 128
    train: TrainConfig = field(default_factory=TrainConfig)
    init: str | None = None          # start from this run's weights; its head becomes the source head
    penalties: list[str] = field(default_factory=list)  # "l2sp:0.01", "ewc:1000", ...
    source: SourceConfig = field(default_factory=SourceConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)

    def to_yaml(self) -> str:
        return yaml.safe_dump(asdict(self), sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict) -> "FitConfig":
        d = dict(d)
        data = DataConfig(**d.pop("data", {}))
        train = TrainConfig(**d.pop("train", {}))
        source = SourceConfig(**(d.pop("source", None) or {}))
        adapt = AdaptConfig(**(d.pop("adapt", None) or {}))
        d["penalties"] = list(d.get("penalties") or [])
        return cls(data=data, train=train, source=source, adapt=adapt, **d)

    @classmethod
    def load(cls, path: Path) -> "FitConfig":
        try:
            return cls.from_dict(yaml.safe_load(Path(path).read_text()))
        except (OSError, yaml.YAMLError, TypeError) as e:
            raise ExaptError(f"{path}: not a readable exapt config ({str(e).splitlines()[0]})") from None


def apply_override(cfg: FitConfig, assignment: str) -> None:
    """`train.lr=1e-4`, `data.val_fraction=0`, `max_length=64`: typed by the field."""
    key, sep, raw = assignment.partition("=")
    if not sep:
        raise ExaptError(f"--set {assignment!r}: write key=value, e.g. train.lr=1e-4")
    target, parts = cfg, key.strip().split(".")
    for part in parts[:-1]:
        target = getattr(target, part, None)
        if not dataclasses.is_dataclass(target):
            raise ExaptError(f"--set {assignment!r}: unknown section {part!r}")
    fields = {f.name: f for f in dataclasses.fields(target)}
    name = parts[-1]
    if name not in fields:
        raise ExaptError(f"--set {assignment!r}: unknown option {name!r}; options: {', '.join(fields)}")
    allowed = _allowed_types(typing.get_type_hints(type(target))[name])
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if float in allowed and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-4 (no dot) as a string; it is the way people write a learning rate
            value = float(value)
        except ValueError:
            pass
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        names = " or ".join("none" if t is type(None) else t.__name__ for t in allowed)
        raise ExaptError(f"--set {assignment!r}: {name} must be {names}")
    setattr(target, name, value)


def _allowed_types(hint) -> tuple[type, ...]:
    """`int | None` -> (int, NoneType); `list[str] | None` -> (list, NoneType)."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    return tuple(typing.get_origin(a) or a for a in args)
