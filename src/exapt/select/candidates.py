"""`exapt rank`'s candidates: what ``--models`` and ``--layers`` name, resolved from
configs alone (no weights are loaded here).

A candidate is ``MODEL`` (an alias, a Hugging Face folder, ``scratch:NAME``), ``MODEL@K``
(its first K layers), an earlier run's folder, or a strategy with features of its own
(``baseline``: the classical features, so rank says where they stand among the encoders); a `Source` is the model or run behind
one or more candidates (every layer of one model shares one source, so one forward pass).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..backbones import ALIASES, family_of, resolve_alias, split_scratch
from ..backbones.hf import sentence_transformers_pooling
from ..errors import ExaptError
from ..run_folder import RunFolder
from ..registry import STRATEGIES
from ..strategies import model_for, parse_strategy


@dataclass
class Source:
    """One model (alias, folder, scratch twin) or run, resolved without loading weights."""
    spec: str                      # as written by the user
    kind: str                      # "pretrained" | "scratch" | "classifier" | "run"
    folder: Path                   # the Hugging Face folder (a run: its base model's)
    load_spec: str                 # what load_backbone takes (a run: its config's model)
    n_layers: int
    pooling: str                   # the pooling its features use
    normalize: bool
    run: Path | None = None
    source_classes: list[str] | None = None   # classes of a classification head, if any
    key: str = ""                  # cache key (set by `_source_key`)
    image: bool = False            # an image backbone: layer K = the features after its block K
    classical: bool = False        # a strategy's own features (baseline): computed, read any data kind

    @property
    def input_kind(self) -> str | None:
        """What the candidate reads: text, image, or None (the classical features: any kind)."""
        return None if self.classical else ("image" if self.image else "text")

    @property
    def has_head(self) -> bool:
        return self.source_classes is not None


@dataclass
class Candidate:
    name: str
    source: Source
    layer: int                     # 1..n_layers (n_layers = the whole encoder)
    explicit_layer: bool           # written as SPEC@K (or expanded by --layers)

    @property
    def truncated(self) -> bool:
        return self.layer < self.source.n_layers

    @property
    def has_head(self) -> bool:    # a head reads the last layer only
        return self.source.has_head and not self.truncated


def _is_run(path: Path) -> bool:
    return path.is_dir() and RunFolder(path).is_run()


def _n_layers(folder: Path, spec: str) -> int:
    from transformers import AutoConfig  # heavy: imported on first use

    try:
        cfg = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except Exception as e:  # transformers raises many types for a broken folder
        reason = str(e).splitlines()[0][:200]
        raise ExaptError(f"--models {spec!r}: cannot read {folder}/config.json ({reason})") from None
    for attr in ("num_hidden_layers", "n_layers", "num_layers"):
        n = getattr(cfg, attr, None)
        if isinstance(n, int) and n > 0:
            return n
    raise ExaptError(f"--models {spec!r}: {folder}/config.json names no layer count; it is not a supported encoder")


def _classifier_classes(folder: Path) -> list[str] | None:
    """Class names of a Hugging Face ...ForSequenceClassification checkpoint, else None."""
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not any(str(a).endswith("ForSequenceClassification") for a in cfg.get("architectures") or []):
        return None
    if cfg.get("problem_type") in ("regression", "multi_label_classification"):
        return None
    id2label = cfg.get("id2label") or {}
    n = len(id2label) or int(cfg.get("num_labels", 0) or 0)
    if n < 2:
        return None
    return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]


def _model_folder(spec: str, what: str) -> tuple[Path, bool, str]:
    """(folder, scratch, the spec without scratch:) of a model spec; ExaptError when unknown."""
    base, scratch = split_scratch(spec)
    family = family_of(base)
    if not family.pretrained:
        raise ExaptError(f"{what} {spec!r}: the {family.name} backbone has no pretrained weights to rank; exapt rank "
                         "compares text encoders, efficientnet-lite0 and runs (a cnn run included)")
    if base in ALIASES:
        return resolve_alias(base), scratch, base
    folder = Path(base).expanduser()
    if not folder.exists():
        raise ExaptError(f"{what} {spec!r}: no such alias, model folder or run folder "
                         f"(aliases: {', '.join(ALIASES)}; see `exapt models`)")
    if not folder.is_dir() or not (folder / "config.json").exists():
        raise ExaptError(f"{what} {spec!r}: {folder} is neither a Hugging Face model folder (no config.json) "
                         "nor a run folder (no config.yaml)")
    return folder, scratch, base


def _image_layers(model_spec: str) -> int | None:
    """How many blocks an image model spec has (its candidate layers); None for other specs."""
    base, _ = split_scratch(model_spec)
    family = family_of(base)
    return family.block_count(base) if family.input_kind == "image" else None


def _image_source(spec: str) -> Source | None:
    """A pretrained image model (`efficientnet-lite0[:SIZE]`) or its scratch twin -> a
    `Source` whose layers are the network's blocks; None for any other spec (an image
    family without pretrained weights, a bare `cnn`, is refused by `_model_folder`)."""
    base, scratch = split_scratch(spec)
    family = family_of(base)
    if family.input_kind != "image" or not family.pretrained:
        return None
    family.check_name(base)            # a bad SIZE is refused here, before any work
    weights = family.weights_file(base)
    if weights is None and not scratch:
        raise ExaptError(f"--models {spec!r}: its weights are not installed ({family.install})")
    # folder: where the weights live (image sources key their cache on the weights file, not a folder)
    return Source(spec, "scratch" if scratch else "pretrained", (weights or Path(".")).parent, spec,
                  family.block_count(base), "mean", False, image=True)


def resolve_source(spec: str) -> Source:
    """A model spec or run folder -> `Source` (reads configs only, never weights)."""
    spec = str(spec).strip()
    path = Path(spec).expanduser()
    if _is_run(path):
        return _resolve_run(spec, path)
    classical = _classical_source(spec, path)
    if classical is not None:
        return classical
    image = _image_source(spec)
    if image is not None:
        return image
    folder, scratch, _ = _model_folder(spec, "--models")
    mode, norm = sentence_transformers_pooling(folder)
    classes = None if scratch else _classifier_classes(folder)
    kind = "scratch" if scratch else ("classifier" if classes else "pretrained")
    return Source(spec, kind, folder, spec, _n_layers(folder, spec), mode or "mean", norm, source_classes=classes)


def _classical_source(spec: str, path: Path) -> Source | None:
    """`baseline[:OPTIONS]` -> the features of the model that strategy fits (`model_for`, the
    rule fit and compare use), one "layer"; None for anything else (`scratch:NAME` is a
    model, not the scratch strategy)."""
    if path.exists() or spec.partition(":")[0].strip() not in STRATEGIES.names():
        return None
    try:
        own = model_for(parse_strategy(spec), None)
    except ExaptError:
        return None
    return Source(spec, "classical", Path("."), own, 1, "none", False, classical=True) if own else None


def _resolve_run(spec: str, path: Path) -> Source:
    run = RunFolder(path)
    if not run.is_complete():
        raise ExaptError(f"--models {spec!r}: {path} is not a complete run (no {run.METRICS}); "
                         "finish it with `exapt fit --resume` first")
    cfg = run.read_config()
    try:
        labels = run.read_labels()
    except (OSError, ValueError) as e:
        raise ExaptError(f"--models {spec!r}: {run.labels} unreadable ({str(e).splitlines()[0]})") from None
    try:
        strategy = parse_strategy(cfg.strategy)
    except ExaptError as e:
        raise ExaptError(f"--models {spec!r}: {e}") from None
    check_plain_strategy(strategy, spec)
    classes = [str(c) for c in labels.get("classes", [])] if labels.get("task") == "classification" else None
    classes = classes if classes and len(classes) >= 2 else None
    n_image = _image_layers(cfg.model)
    if n_image is not None:   # a run of an image model (a cnn trained on a source data set, say)
        return Source(spec, "run", path, cfg.model, n_image, "mean", False, run=path, source_classes=classes,
                      image=True)
    folder, _, _ = _model_folder(cfg.model, f"--models {spec!r}: its model")
    mode, norm = sentence_transformers_pooling(folder)
    return Source(spec, "run", folder, cfg.model, _n_layers(folder, spec), cfg.pooling or mode or "mean", norm,
                  run=path, source_classes=classes)


def check_plain_strategy(strategy, spec: str) -> None:
    """Runs whose encoder is plain weights (after merging LoRA / IA3) can be ranked."""
    if not strategy.plain_encoder:
        raise ExaptError(f"--models {spec!r}: a run trained with {strategy.spec()} adds modules that are not part "
                         "of an encoder's layers, so it cannot be ranked or fine-tuned as a source model "
                         "(runs of lora and ia3 can: they are merged first)")


_LAYER_SPEC = re.compile(r"^(?P<spec>.+)@(?P<layer>[^@/\\]*)$")


def _split_layer(item: str) -> tuple[str, int | None]:
    m = _LAYER_SPEC.match(item)
    if not m or Path(item).expanduser().exists():
        return item, None
    raw = m.group("layer").strip()
    if not raw.isdigit():
        raise ExaptError(f"--models {item!r}: write MODEL@K with K a layer number (1 = the first layer)")
    return m.group("spec").strip(), int(raw)


def parse_list(value, option: str) -> list[str]:
    if value is None:
        return []
    items = [s.strip() for s in value.split(",")] if isinstance(value, str) else [str(s).strip() for s in value]
    items = [s for s in items if s]
    return items


def parse_layers(layers) -> str | list[int] | None:
    """None, "all", "1,3,6", or a list of ints -> None | "all" | sorted unique ints."""
    if layers is None:
        return None
    if isinstance(layers, str):
        text = layers.strip().lower()
        if text in ("", "none"):
            return None
        if text == "all":
            return "all"
        parts = [p.strip() for p in text.split(",") if p.strip()]
    elif isinstance(layers, int):
        parts = [str(layers)]
    else:
        parts = [str(p).strip() for p in layers]
    out = []
    for p in parts:
        if not p.isdigit() or int(p) < 1:
            raise ExaptError(f"--layers {layers!r}: write all, or layer numbers >= 1 separated by commas (e.g. 1,3,6)")
        out.append(int(p))
    if not out:
        raise ExaptError(f"--layers {layers!r}: no layer given")
    return sorted(set(out))


def parse_candidates(models, layers=None) -> list[Candidate]:
    """`--models` and `--layers` -> candidates, every layer checked against its model's depth."""
    items = parse_list(models, "--models")
    if not items:
        raise ExaptError("--models: name at least one candidate (an alias, model folder, scratch:NAME, MODEL@K "
                         "or run folder)")
    wanted = parse_layers(layers)
    sources: dict[str, Source] = {}
    out: dict[str, Candidate] = {}
    for item in items:
        spec, layer = _split_layer(item)
        if spec not in sources:
            sources[spec] = resolve_source(spec)
        src = sources[spec]
        if layer is not None:
            ks, explicit = [layer], True
        elif wanted == "all":
            ks, explicit = list(range(1, src.n_layers + 1)), True
        elif wanted:
            ks, explicit = wanted, True
        else:
            ks, explicit = [src.n_layers], False
        for k in ks:
            if not 1 <= k <= src.n_layers:
                raise ExaptError(f"--models {spec}@{k}: layer {k} is out of range; {spec} has {src.n_layers} layers "
                                 f"(1..{src.n_layers})")
            name = f"{spec}@{k}" if explicit else spec
            out.setdefault(name, Candidate(name, src, k, explicit))
    return list(out.values())

