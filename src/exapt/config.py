"""The configuration of one `fit`: a typed dataclass, written to `config.yaml`.

Everything needed to rebuild, resume or reproduce a run is here; nothing is read from
globals. `--set key=value` overrides are parsed against the field types.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .checks import (allowed_types, option, parse_class_weight, parse_loss, parse_target_recall, seed_option,
                     validate)
from .errors import ExaptError


@dataclass
class TrainConfig:
    # None: enough epochs for `min_steps` optimiser steps
    epochs: int | None = option(None, lo=1, flag="--epochs")
    min_steps: int = option(120, lo=1)
    max_epochs: int = option(40, lo=1)
    batch_size: int = option(16, lo=1, flag="--batch-size")
    lr: float | None = option(None, lo=0, lo_open=True, flag="--lr")  # None: the strategy's default
    # None: the strategy's default (3e-3 for a new head)
    head_lr: float | None = option(None, lo=0, lo_open=True)
    weight_decay: float = option(0.01, lo=0)
    warmup: float = option(0.1, lo=0, hi=1)       # a fraction of all steps
    clip: float = option(1.0, lo=0)               # gradient-norm clip; 0: off
    # epochs without validation gain before stopping; 0: off
    patience: int = option(5, lo=0, flag="--patience")
    # seconds of training after which it stops, after the current step, validating what it
    # has (the best epoch's weights are kept, as with early stopping); None: no limit.
    # `--strategy auto` gives each fit what is left of its budget. Single-process fits only
    time_limit: float | None = option(None, lo=0, lo_open=True)
    seed: int = seed_option()
    cache_prefix: bool = option(True)
    # Recompute activations in the backward pass instead of keeping them. None: for
    # strategies that train new modules only (lora, adapters...), on when the batch's
    # activations would pass a quarter of free memory (train/memory.py); off otherwise.
    activation_checkpointing: bool | None = option(None)
    # Dropout on attention probabilities while training. None: the model's own (0.1 for
    # BERTs). 0 lets PyTorch run its fused attention kernel (docs/benchmarks.md: 1.6x a
    # step at 256 tokens); it changes the regulariser, so results change.
    attention_dropout: float | None = option(None, lo=0, hi=1)
    # Dropout masks from 16 random bits per element instead of PyTorch's per-element draw
    # (train/dropout.py): the same distribution, another random stream, so a seeded run
    # differs from one with this off; off reproduces runs of exapt before 2026-12.
    cheap_dropout: bool = option(True)

    def __post_init__(self):
        validate(self, "train")

    def resolved_epochs(self, n_train: int) -> int:
        if self.epochs:
            return self.epochs
        steps_per_epoch = max(1, math.ceil(n_train / self.batch_size))
        return int(min(self.max_epochs, max(3, math.ceil(self.min_steps / steps_per_epoch))))


LONG_POOLS = ("mean", "attention")


@dataclass(frozen=True)
class LongInputs:
    """`--long chunk[:STRIDE][,pool=mean|attention]`: an input longer than the window is cut
    into windows whose starts are STRIDE tokens apart (default: half a window, so they
    overlap), and their embeddings are pooled into one (backbones/hf.py does it)."""
    stride: int | None = None   # None: half the window
    pool: str = "mean"

    @classmethod
    def parse(cls, spec) -> "LongInputs | None":
        if spec is None:
            return None
        if not isinstance(spec, str):
            raise ExaptError(f"--long must be a spec such as chunk or chunk:64,pool=attention (got {spec!r})")
        head, _, rest = spec.strip().partition(":")
        if head != "chunk":
            raise ExaptError(f"--long {spec!r}: the only way is chunk[:STRIDE][,pool=mean|attention]")
        stride, pool = None, "mean"
        for part in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, value = part.partition("=")
            if eq and key.strip() == "pool":
                pool = value.strip()
                if pool not in LONG_POOLS:
                    raise ExaptError(f"--long {spec!r}: unknown pooling {pool!r} (choose {' or '.join(LONG_POOLS)})")
            elif not eq and part.isdigit() and int(part) >= 1:
                stride = int(part)
            else:
                raise ExaptError(f"--long {spec!r}: {part!r} is neither a stride (a whole number of tokens >= 1) "
                                 "nor pool=mean|attention")
        return cls(stride, pool)


PRIVACY_KEYS = ("epsilon", "delta", "clip")


@dataclass(frozen=True)
class PrivacySpec:
    """`--privacy epsilon=E[,delta=D,clip=C]`: train with DP-SGD (train/privacy.py) to an
    (E, D)-DP guarantee; D defaults to 1/(10 n) for n training rows, C (the per-example
    gradient-norm bound) to 1. `none` (or no flag): an ordinary fit."""
    epsilon: float
    delta: float | None = None
    clip: float = 1.0

    @classmethod
    def parse(cls, spec) -> "PrivacySpec | None":
        if spec is None or str(spec).strip().lower() in ("none", "inf"):
            return None
        values = {}
        for part in filter(None, (p.strip() for p in str(spec).split(","))):
            key, eq, raw = part.partition("=")
            key = key.strip() if eq else "epsilon"  # `--privacy 8` reads as epsilon=8
            raw = raw if eq else part
            if key not in PRIVACY_KEYS:
                raise ExaptError(f"--privacy {spec!r}: unknown key {key!r} (use epsilon=E[,delta=D,clip=C])")
            try:
                values[key] = float(raw)
            except ValueError:
                raise ExaptError(f"--privacy {spec!r}: {key} must be a number (got {raw.strip()!r})") from None
        if "epsilon" not in values:
            raise ExaptError(f"--privacy {spec!r}: give epsilon=E (e.g. epsilon=8)")
        eps, delta, clip = values["epsilon"], values.get("delta"), values.get("clip", 1.0)
        if not math.isfinite(eps) or eps <= 0:
            raise ExaptError(f"--privacy {spec!r}: epsilon must be a finite number > 0 (got {eps:g}); "
                             "--privacy none trains without privacy")
        if delta is not None and not 0 < delta < 1:
            raise ExaptError(f"--privacy {spec!r}: delta must be in (0, 1) (got {delta:g})")
        if not math.isfinite(clip) or clip <= 0:
            raise ExaptError(f"--privacy {spec!r}: clip must be a finite number > 0 (got {clip:g})")
        return cls(eps, delta, clip)


MAX_IMAGE_SIZE = 4096  # beyond it a resize asks for more memory than any machine has


@dataclass
class DataConfig:
    source: str = "tweets"
    text: str | None = None
    label: str = "label"
    features: list[str] | None = None
    test: str | None = None          # a separate test file; otherwise split off test_fraction
    test_fraction: float = option(0.2, flag="--test-fraction")  # its range depends on `test`: below
    max_test: int = option(2000, lo=1, flag="--max-test")  # cap on a split-off test set (large built-ins)
    val_fraction: float = option(0.2, lo=0, hi=1, hi_open=True, flag="--val-fraction")
    n_per_class: int | None = option(None, lo=1, flag="--n-per-class")
    seed: int = seed_option()
    # images resized to N x N when read (a folder of mixed sizes needs it)
    image_size: int | None = option(None, lo=1, flag="option image_size",
                                    message="{name} must be a whole number of pixels >= 1 (got {value!r})")
    # synthetic training rows (`exapt augment`, docs/augment.md): their loss weighted by ALPHA; a
    # list "0,0.3,1" fits once per ALPHA and keeps the one best on validation
    synthetic: str | None = option(None, flag="--synthetic")
    synthetic_weight: str = option("1", flag="--synthetic-weight", parse=lambda v: parse_synthetic_weights(v))

    def __post_init__(self):
        validate(self, "data")
        if self.image_size is not None and self.image_size > MAX_IMAGE_SIZE:  # N x N floats per image
            raise ExaptError(f"option image_size must be at most {MAX_IMAGE_SIZE} pixels (got {self.image_size})")
        if not (0 < self.test_fraction < 1 or (self.test and self.test_fraction == 0)):
            raise ExaptError(f"--test-fraction must be in (0, 1) when no --test file is given (got {self.test_fraction})")
        if self.synthetic is None and parse_synthetic_weights(self.synthetic_weight) != [1.0]:
            raise ExaptError("--synthetic-weight weighs the rows of a --synthetic FILE; give the file too")


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
    # source examples (or held-out windows) scored before and after
    max_test: int = option(1000, lo=1, flag="--source-max-test")

    def __post_init__(self):
        validate(self, "source")


@dataclass
class AdaptConfig:
    """Domain adaptation (`--adapt-to`, docs/adaptation.md): the target domain's data.

    Its rows are split once: `test_fraction` of them (stratified, when they have labels)
    become the target test set and never reach training; the rest are the unlabelled
    target examples the penalties align to (their labels, if any, are dropped), of which
    `labels` per class may be kept labelled for model selection."""
    data: str | None = None          # file or built-in name of the target domain
    # of the target rows, held out (labelled) for the target test
    test_fraction: float = option(0.5, lo=0, hi=1, hi_open=True, flag="--target-test-fraction")
    # target labels per class used to choose the epoch (0: none)
    labels: int = option(0, lo=0, flag="--target-labels")
    # source-val | weighted-val | target-labels (auto: target-labels if labels)
    select: str = option("auto", choices=("auto", "source-val", "weighted-val", "target-labels"), flag="--select",
                         message="{name} {value!r}: choose one of source-val, weighted-val, target-labels")
    max_rows: int = option(5000, lo=2)  # cap on unlabelled target rows (a random sample)

    def __post_init__(self):
        validate(self, "adapt")


@dataclass
class ClassesConfig:
    """Rare classes (docs/rare-classes.md): the training loss's class weights and focal
    term, and the decision rule tuned on validation after training. The defaults are
    plain cross-entropy and argmax."""
    class_weight: str | None = option(None, flag="--class-weight")  # balanced | CLASS=W,...
    loss: str = option("cross-entropy", flag="--loss")               # cross-entropy | focal[:gamma]
    # argmax | calibrated (temperature + the data's class frequencies) | macro-f1 (+ class offsets)
    decision: str = option("argmax", choices=("argmax", "calibrated", "macro-f1"), flag="--decision")
    target_recall: str | None = option(None, flag="--target-recall")  # CLASS=R: that recall on validation

    def __post_init__(self):
        validate(self, "classes")
        parse_class_weight(self.class_weight)
        parse_loss(self.loss)
        parse_target_recall(self.target_recall)

    def target_recall_values(self) -> dict[str, float]:
        return parse_target_recall(self.target_recall)

    @property
    def tunes_rule(self) -> bool:
        """Whether a decision rule is fitted on validation after training."""
        return self.decision != "argmax" or self.target_recall is not None


@dataclass
class FitConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: str = "minilm-l6"
    strategy: str = "linear-probe"
    task: str = "auto"
    pooling: str | None = None
    # tokens per input; None: the model's own (its family answers: backbones/), resolved
    # by fit before config.yaml is written, so a run reloads with the length it used
    max_length: int | None = option(None, lo=8, flag="--max-length")
    long: str | None = option(None, flag="--long", parse=LongInputs.parse)  # chunk[:STRIDE]
    # epsilon=E[,delta=D,clip=C]: DP-SGD (train/privacy.py); None: not private
    privacy: str | None = option(None, flag="--privacy", parse=PrivacySpec.parse)
    train: TrainConfig = field(default_factory=TrainConfig)
    init: str | None = None          # start from this run's weights; its head becomes the source head
    penalties: list[str] = field(default_factory=list)  # "l2sp:0.01", "ewc:1000", ...
    source: SourceConfig = field(default_factory=SourceConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    classes: ClassesConfig = field(default_factory=ClassesConfig)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Every field of every section (each section checks itself the same way)."""
        validate(self)
        for section in ("data", "train", "source", "adapt", "classes"):
            part = getattr(self, section)
            part.__post_init__()

    def to_yaml(self) -> str:
        return yaml.safe_dump(asdict(self), sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict) -> "FitConfig":
        d = dict(d)
        data = DataConfig(**d.pop("data", {}))
        train = TrainConfig(**d.pop("train", {}))
        source = SourceConfig(**(d.pop("source", None) or {}))
        adapt = AdaptConfig(**(d.pop("adapt", None) or {}))
        classes = ClassesConfig(**(d.pop("classes", None) or {}))  # runs made before it: the defaults
        d["penalties"] = list(d.get("penalties") or [])
        return cls(data=data, train=train, source=source, adapt=adapt, classes=classes, **d)

    @classmethod
    def from_options(cls, data, *, overrides=(), **options) -> "FitConfig":
        """The one way flat options become a config: `exapt.fit`, `exapt.compare`, rank,
        transfer-map and the command line all build theirs here. An option names a field
        of FitConfig, of its data section (text, label, test, n_per_class...) or of its
        train section (epochs, lr, batch_size...) or of its classes section (class_weight, loss,
        decision, target_recall); `seed` seeds both sections; `text` and
        `features` may be comma-separated; `source` and `adapt` take a section or a dict of
        its fields. `overrides` are `--set key=value` assignments, applied last. Every value
        is checked against its field (checks.py) as the sections are built."""
        data_fields = {f.name for f in dataclasses.fields(DataConfig)}
        train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
        classes_fields = {f.name for f in dataclasses.fields(ClassesConfig)}
        top_fields = {f.name for f in dataclasses.fields(cls)} - {"data", "train", "classes"}
        parts: dict[str, dict] = {"data": {"source": str(data)} if data is not None else {}, "train": {}, "top": {},
                                  "classes": {}}
        for key, value in options.items():
            if key in ("text", "features"):
                value = split_columns(value, always_list=key == "features")
            if key == "seed":
                parts["data"]["seed"] = parts["train"]["seed"] = value
            elif key in top_fields:  # first: `source` is the source section; the data's file is `data`
                parts["top"][key] = value
            elif key in data_fields:
                parts["data"][key] = value
            elif key in train_fields:
                parts["train"][key] = value
            elif key in classes_fields:
                parts["classes"][key] = value
            else:
                raise TypeError(f"unknown option {key!r}")
        top = parts["top"]
        top["init"] = str(top["init"]) if top.get("init") else None
        penalties = top.pop("penalties", None) or []
        top["penalties"] = [penalties] if isinstance(penalties, str) else list(penalties)
        for name, section in (("source", SourceConfig), ("adapt", AdaptConfig)):
            given = top.pop(name, None)
            top[name] = given if isinstance(given, section) else section(**(given or {}))
        cfg = cls(data=DataConfig(**parts["data"]), train=TrainConfig(**parts["train"]),
                  classes=ClassesConfig(**parts["classes"]), **top)
        for assignment in overrides:
            apply_override(cfg, assignment)
        return cfg

    @classmethod
    def load(cls, path: Path) -> "FitConfig":
        try:
            loaded = yaml.safe_load(Path(path).read_text())
            if not isinstance(loaded, dict):
                raise TypeError(f"expected a mapping of options, found {type(loaded).__name__}")
            return cls.from_dict(loaded)
        except (OSError, yaml.YAMLError, TypeError, AttributeError, ValueError) as e:
            raise ExaptError(f"{path}: not a readable exapt config ({str(e).splitlines()[0]})") from None
        except ExaptError as e:  # a value out of its field's range: say which file holds it
            raise ExaptError(f"{path}: {e}") from None


def parse_synthetic_weights(spec) -> list[float]:
    """`--synthetic-weight 0.3` or `0,0.3,1` -> sorted distinct ALPHAs, each a finite number >= 0."""
    parts = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
    values = []
    for part in parts:
        try:
            value = float(part)
        except (TypeError, ValueError):
            value = float("nan")
        if isinstance(part, bool) or not math.isfinite(value) or value < 0:
            raise ExaptError(f"--synthetic-weight {spec!r}: each ALPHA must be a finite number >= 0 "
                             f"(got {str(part).strip()!r})")
        values.append(value)
    if not values:
        raise ExaptError("--synthetic-weight needs at least one ALPHA")
    return sorted(set(values))


def split_columns(value, always_list: bool = False):
    """`"a,b"` -> ["a", "b"]: a list of columns written the way the command line takes it;
    one name stays a string unless `always_list` (numeric features are always a list)."""
    if value is None or isinstance(value, (list, tuple)):
        return list(value) if value is not None else None
    names = [c.strip() for c in str(value).split(",") if c.strip()]
    return names if always_list or len(names) > 1 else (names[0] if names else str(value))


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
    allowed = allowed_types(typing.get_type_hints(type(target))[name])
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
    before = getattr(target, name)
    setattr(target, name, value)
    try:  # the field's declared range, as on construction
        cfg.validate()
    except ExaptError as e:
        setattr(target, name, before)
        raise ExaptError(f"--set {assignment!r}: {e}") from None


# what `fit --resume RUN --set ...` may change: the optimiser's settings, which the
# checkpoint's weights do not depend on (data, model and schedule length stay the run's)
RESUMABLE = ("train.lr", "train.head_lr", "train.weight_decay", "train.clip", "train.patience")


def resume_overrides(cfg: FitConfig, assignments) -> None:
    for assignment in assignments:
        key = assignment.partition("=")[0].strip()
        if key not in RESUMABLE:
            raise ExaptError(f"--set {assignment!r} with --resume: a resumed run can change only "
                             f"{', '.join(RESUMABLE)}; start a new run for other options")
        apply_override(cfg, assignment)

