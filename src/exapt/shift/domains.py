"""The two domains of `exapt shift`: loaded, checked, subsampled, and turned into features.

SOURCE and TARGET are files or built-in names, read by `exapt.data.load_data` with the
same --text/--label/--features options as `exapt fit`. Rows are subsampled *uniformly*
(never per class: the class shares are what label shift is about). The random-split
control (`--control`, or the same data named twice) draws twice that many rows from one
domain and cuts them in two halves at random: whatever the diagnosis says then is noise.

Features: text goes through a frozen encoder (default minilm-l6) and the on-disk feature
cache that `exapt fit` uses, so a fit or a second diagnosis encodes nothing again; numeric
data and images default to their raw values (``--model raw``), standardised later.

    from exapt.shift.domains import load_domains, domain_features
    pair = load_domains("tweets-airline", "tweets-self-driving", max_per_domain=2000)
    xs, xt = domain_features(pair, model="minilm-l6")
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..backbones import family_of, load_backbone
from ..data import load_data
from ..errors import ExaptError
from ..tasks import infer_task_kind, natural_key
from ..train.features import FeatureCache, encode

RAW = "raw"
DEFAULT_TEXT_MODEL = "minilm-l6"


@dataclass
class Domains:
    source: object                 # exapt.data Table (subsampled)
    target: object
    source_name: str
    target_name: str
    control: bool                  # a random split of one domain
    classes: list[str] | None      # the source's classes (None: no usable labels)
    source_y: np.ndarray | None    # class indices into `classes`
    target_y: np.ndarray | None    # None when TARGET has no labels
    sizes: dict = field(default_factory=dict)   # rows before subsampling
    notes: list[str] = field(default_factory=list)


def _load(name: str, text, label, features):
    return load_data(name, text=text, label=label, features=features, require_label=False)


def _subsample(table, n: int, rng: np.random.Generator):
    if len(table) <= n:
        return table
    return table.subset(np.sort(rng.choice(len(table), n, replace=False)))


def _check_inputs(source, target) -> None:
    if source.kind != target.kind:
        raise ExaptError(f"{target.source}: has {target.kind} inputs but {source.source} has {source.kind}; "
                         "both domains need the same kind of input")
    if source.kind != "text":  # numeric features or images: one shape per row on both sides
        ws, wt = np.asarray(source.inputs).shape[1:], np.asarray(target.inputs).shape[1:]
        if ws != wt:
            raise ExaptError(f"{target.source}: its inputs have shape {tuple(wt)} per row but {source.source}'s have "
                             f"{tuple(ws)}; both domains need the same feature columns")


def _classes(source, target, notes: list[str]) -> tuple[list[str] | None, np.ndarray | None, np.ndarray | None]:
    """Source classes and both label vectors; a TARGET label the source lacks is an error."""
    if source.labels is None:
        notes.append(f"{source.source} has no label column: label and concept shift are skipped")
        return None, None, None
    if infer_task_kind(source.labels) != "classification":
        notes.append(f"{source.source}: its labels are not single-label classes: label and concept shift are skipped")
        return None, None, None
    classes = sorted({str(v) for v in source.labels}, key=natural_key)
    if len(classes) < 2:
        notes.append(f"{source.source}: a single class ({classes[0]}): label and concept shift are skipped")
        return None, None, None
    index = {c: i for i, c in enumerate(classes)}
    source_y = np.array([index[str(v)] for v in source.labels])
    if target.labels is None:
        return classes, source_y, None
    if any(isinstance(v, list) for v in target.labels):
        raise ExaptError(f"{target.source}: its labels are lists (multi-label); exapt shift needs single-label classes")
    foreign = sorted({str(v) for v in target.labels} - set(classes), key=natural_key)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ExaptError(f"{target.source}: labels {shown} are not classes of {source.source} "
                         f"({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''}); the label sets must match")
    missing = [c for c in classes if c not in {str(v) for v in target.labels}]
    if missing:
        notes.append(f"{target.source} has no rows of class {', '.join(missing)}")
    return classes, source_y, np.array([index[str(v)] for v in target.labels])


def load_domains(source: str, target: str | None = None, *, control: bool = False, text=None, label="label",
                 features=None, max_per_domain: int = 2000, seed: int = 0) -> Domains:
    """Load, check and subsample both domains (or split one, for the control)."""
    if max_per_domain < 10:
        raise ExaptError(f"--max-per-domain {max_per_domain}: use at least 10 rows per domain")
    same = target is None or str(target) == str(source)
    if control and not same:
        raise ExaptError("--control splits SOURCE in two at random; drop TARGET (or name the same data twice)")
    if target is None and not control:
        raise ExaptError("exapt shift needs SOURCE and TARGET (or --control to split SOURCE in two)")
    rng = np.random.default_rng(seed)
    notes: list[str] = []
    if same:
        table = _load(source, text, label, features)
        if len(table) < 20:
            raise ExaptError(f"{table.source}: {len(table)} rows; the random-split control needs at least 20")
        pool = _subsample(table, 2 * max_per_domain, rng)
        order = rng.permutation(len(pool))
        half = len(pool) // 2
        src, tgt = pool.subset(np.sort(order[:half])), pool.subset(np.sort(order[half:2 * half]))
        sizes = {"source": len(table), "target": len(table)}
        notes.append(f"control: two random halves of {table.source}; any shift found here is noise")
        names = (f"{table.source} (half A)", f"{table.source} (half B)")
    else:
        full_src, full_tgt = _load(source, text, label, features), _load(target, text, label, features)
        _check_inputs(full_src, full_tgt)
        for t in (full_src, full_tgt):
            if len(t) < 10:
                raise ExaptError(f"{t.source}: {len(t)} rows; exapt shift needs at least 10 per domain")
        sizes = {"source": len(full_src), "target": len(full_tgt)}
        src, tgt = _subsample(full_src, max_per_domain, rng), _subsample(full_tgt, max_per_domain, rng)
        names = (full_src.source, full_tgt.source)
    classes, source_y, target_y = _classes(src, tgt, notes)
    for side, n in sizes.items():
        kept = len(src) if side == "source" else len(tgt)
        if kept < n and not same:
            notes.append(f"{side}: {kept:,} of {n:,} rows drawn at random (--max-per-domain)")
    return Domains(src, tgt, names[0], names[1], same, classes, source_y, target_y, sizes, notes)


def resolve_model(model: str | None, kind: str) -> str:
    """--model, or the default for the data: minilm-l6 for text, the raw inputs otherwise."""
    if model is None:
        return DEFAULT_TEXT_MODEL if kind == "text" else RAW
    model = str(model).strip()
    family = family_of(model)
    if family.input_kind == "features" and not family.pretrained:  # the mlp
        raise ExaptError(f"--model {model}: the {family.name} backbone has random weights, so its features show "
                         "nothing about the data; use --model raw for numeric inputs")
    if model == RAW and kind == "text":
        raise ExaptError("--model raw: text has no raw numeric values; name a text encoder (default: minilm-l6)")
    return model


def _raw(table) -> np.ndarray:
    x = np.asarray(table.inputs, dtype=np.float64)
    return x.reshape(len(x), -1)


def domain_features(domains: Domains, model: str | None = None, *, max_length: int = 128, progress: bool = True,
                    backbone=None) -> tuple[np.ndarray, np.ndarray]:
    """Frozen features of both domains (rows in the order of `domains.source` / `.target`).

    `backbone` (optional) is an already loaded one, e.g. a run's encoder."""
    kind = domains.source.kind
    model = resolve_model(model, kind)
    if model == RAW and backbone is None:
        return _raw(domains.source), _raw(domains.target)
    bb = backbone if backbone is not None else load_backbone(model, max_length=max_length)
    if bb.input_kind != kind:
        raise ExaptError(f"--model {model}: takes {bb.input_kind} inputs but the data has {kind}")
    out = []
    for side, table in (("source", domains.source), ("target", domains.target)):
        prepared = bb.prepare_inputs(table.inputs)
        if kind == "text":
            feats = FeatureCache(bb).features(table.inputs, prepared, progress=progress)
        else:
            feats = encode(bb, prepared, desc=f"encoding {side}", progress=progress)
        out.append(feats.numpy().astype(np.float64))
    return out[0], out[1]
