"""A small MLP for numeric feature columns, or images flattened (the `mlp` backbone).

Inputs are standardised with statistics taken from the training rows (kept as buffers,
so a saved run predicts on raw columns). There is no pretrained MLP: its blocks start
random, so `mlp` and `scratch:mlp` are the same network.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import ExaptError
from ..registry import BACKBONES
from .base import Backbone, BackboneFamily, LoadOptions


class MLPBackbone(Backbone):
    input_kind = "features"
    also_accepts = ("image",)  # [N, C, H, W] images arrive flattened to C*H*W inputs

    def __init__(self, n_inputs: int, hidden: tuple[int, ...] = (256, 256), dropout: float = 0.1, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.hidden = tuple(hidden)
        self.n_inputs = n_inputs
        self.register_buffer("mean", torch.zeros(n_inputs))
        self.register_buffer("std", torch.ones(n_inputs))
        layers, width = [], n_inputs
        for h in hidden:
            layers.append(nn.Sequential(nn.Linear(width, h), nn.GELU(), nn.Dropout(dropout)))
            width = h
        self.layers = nn.ModuleList(layers)
        self.feature_dim = width
        self.seed = seed

    def fit_input_stats(self, x: np.ndarray) -> None:
        x = torch.as_tensor(np.asarray(x, dtype=np.float32).reshape(len(x), -1))
        self.mean.copy_(x.mean(0))
        # A column constant in training (an image border) keeps its scale, as scikit-learn's
        # StandardScaler does: dividing by a floored ~0 std would turn any other value it
        # takes later (another domain's border pixel) into a number in the tens of thousands.
        std = x.std(0)
        self.std.copy_(torch.where(std < 1e-6, torch.ones_like(std), std))

    def prepare_inputs(self, inputs) -> list:
        x = np.asarray(inputs, dtype=np.float32).reshape(len(inputs), -1)
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise ExaptError(f"the mlp backbone expects {self.n_inputs} inputs (feature columns, or pixels of "
                             f"an image), got {x.shape[-1]}")
        return list(x)

    def collate(self, items):
        return {"x": torch.as_tensor(np.stack(items))}

    def forward(self, batch):
        h = (batch["x"] - self.mean) / self.std
        for layer in self.layers:
            h = layer(h)
        return h

    def blocks(self):
        return [(f"layers.{i}", layer) for i, layer in enumerate(self.layers)]

    def identity(self):
        return {"model": "mlp:" + ",".join(map(str, self.hidden)), "family": "mlp", "n_inputs": self.n_inputs,
                "seed": self.seed, "sha256": None, "scratch": True}


@BACKBONES.register("mlp")
class MLPFamily(BackboneFamily):
    """`mlp` (two layers of 256) or `mlp:H1,H2,...`."""
    input_kind = "features"
    pretrained = False

    def load(self, base: str, options: LoadOptions) -> MLPBackbone:
        n_inputs = options.n_inputs
        if n_inputs is None:
            raise ExaptError("the mlp backbone takes numeric --features columns or images, not text")
        if not isinstance(n_inputs, int):  # images: the pixels, flattened
            n_inputs = int(np.prod(n_inputs))
        hidden = (256, 256)
        if ":" in base:
            try:
                hidden = tuple(int(h) for h in base.split(":", 1)[1].split(","))
            except ValueError:
                raise ExaptError(f"--model {base!r}: write mlp:H1,H2 with integer widths") from None
        return MLPBackbone(n_inputs, hidden, seed=options.seed)

    def rows(self) -> list[dict]:
        return [{"name": "mlp[:H1,H2,...]", "installed": True,
                 "description": "MLP for numeric --features columns or images, flattened (random init)"}]
