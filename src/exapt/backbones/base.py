"""The Backbone interface every encoder family implements.

A backbone turns raw inputs (texts, numeric rows) into one vector per example, and
exposes its parameters as ordered `blocks()`, input side first: freezing the first k,
layer-wise learning rates and gradual unfreezing all act on that list.

Backbones that can run in two halves (`supports_prefix`) let `freeze:k` compute the
frozen prefix once and train only the top.

A `BackboneFamily` is what a model name leads to: one file per family (hf.py, mlp.py,
cnn.py, efficientnet.py) registers one with `@BACKBONES.register(name)`, and says how its
names look, how one loads, and what `exapt rank` and `exapt shift` ask of it (its input
kind, whether it has pretrained weights, its blocks), so no module outside backbones/
reads a model's name. A new family is one file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn


class Backbone(nn.Module):
    input_kind: str = "text"  # or "image", "features"
    also_accepts: tuple[str, ...] = ()  # other data kinds it takes (the mlp: images, flattened)
    feature_dim: int
    supports_prefix: bool = False
    long = None  # how inputs longer than the window are taken (HF backbones: `--long`); None: truncated

    # -- inputs ---------------------------------------------------------------------
    def prepare_inputs(self, inputs) -> list:
        """Raw inputs -> per-example items (e.g. token id lists), done once per data set."""
        return list(inputs)

    def n_too_long(self, inputs, items) -> int:
        """How many of `inputs` (prepared as `items`) are longer than the backbone takes."""
        return 0

    def item_length(self, item) -> int:
        """Cost of one prepared item, used to group similar lengths into batches."""
        return 1

    def collate(self, items: list) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # -- computation ----------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:  # [B, D]
        raise NotImplementedError

    def blocks(self) -> list[tuple[str, nn.Module]]:
        raise NotImplementedError

    def forward_prefix(self, batch: dict, k: int) -> dict[str, torch.Tensor]:
        """Outputs of the first k blocks (k >= 1), per example, for caching."""
        raise NotImplementedError

    def forward_suffix(self, state: dict, k: int) -> torch.Tensor:
        """Blocks k.. and pooling applied to `forward_prefix(batch, k)`."""
        raise NotImplementedError

    def collate_prefix(self, states: list[dict]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # -- identity -------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """What the base weights are: recorded in every run, checked when it is loaded."""
        raise NotImplementedError

    def describe(self) -> str:
        ident = self.identity()
        return f"{ident.get('model')} ({sum(p.numel() for p in self.parameters()) / 1e6:.1f}M parameters)"


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str, normalize: bool) -> torch.Tensor:
    """Mean over real tokens, or the first ([CLS]) token; optionally L2-normalised."""
    if mode == "cls":
        out = hidden[:, 0]
    else:
        m = mask.unsqueeze(-1).to(hidden.dtype)
        out = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if normalize:
        out = nn.functional.normalize(out, p=2, dim=-1)
    return out


@dataclass(frozen=True)
class LoadOptions:
    """What `load_backbone` passes on to a family; each family reads the ones it needs."""
    scratch: bool = False                       # the random twin
    n_inputs: int | tuple[int, ...] | None = None  # feature columns, or (C, H, W) of images; None: text
    pooling: str | None = None
    normalize: bool | None = None
    max_length: int | None = 128                # None: the model's own (BackboneFamily.max_length)
    seed: int = 0
    long: str | None = None                     # --long chunk[:STRIDE][,pool=...] (text models)


class BackboneFamily:
    """One family of backbones, registered with `@BACKBONES.register(name)`. Its model
    names are `name` or `name:OPTIONS` (`cnn`, `cnn:16,32`), each with a `scratch:` twin;
    the catch-all family takes every name no other family claims (aliases, folders)."""
    name: ClassVar[str] = ""             # set by @BACKBONES.register(name)
    input_kind: ClassVar[str] = "text"   # text (DNA / protein sequences too), image, or features
    # False: random weights only, so `scratch:NAME` is the same network, its features say
    # nothing of pretraining (rank refuses it; shift does not default to it)
    pretrained: ClassVar[bool] = True
    catch_all: ClassVar[bool] = False
    install: ClassVar[str] = ""          # how to install its weights, for messages

    def matches(self, base: str) -> bool:
        """Whether `base` (a model name without `scratch:`) is one of this family's."""
        return base == self.name or base.startswith(self.name + ":")

    def load(self, base: str, options: LoadOptions) -> Backbone:
        raise NotImplementedError

    def rows(self) -> list[dict]:
        """Its lines of `exapt models`: name, installed, description."""
        return []

    def check_name(self, base: str) -> None:
        """Refuse a malformed name (a bad size, bad widths) before any work; `load` does too."""

    def block_count(self, base: str) -> int | None:
        """Image families: how many `blocks()` a model of this name has, known without
        loading it; `exapt rank` reads the features after each block. None: rank reads the
        hidden states of a Hugging Face folder instead."""
        return None

    def max_length(self, base: str, reserve: int = 0) -> int | None:
        """The input length, in tokens, a model of this name was made for (the default
        --max-length), leaving `reserve` of its positions free (prompt tuning's virtual
        tokens); None: its inputs are not token sequences, or it cannot say."""
        return None

    def weights_file(self, base: str) -> Path | None:
        """The installed file of pretrained weights this name loads (None: it has none,
        or they are not installed); rank keys its feature cache on it."""
        return None
