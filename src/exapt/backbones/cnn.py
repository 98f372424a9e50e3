"""A small CNN for small grey or colour images (the `cnn` backbone).

    load_backbone("cnn", n_inputs=(1, 28, 28))           # widths 32, 64, 128 -> 128-d features
    load_backbone("cnn:16,32", n_inputs=(3, 32, 32))     # two blocks, 32-d features

Each block is conv3x3 -> GroupNorm -> ReLU -> conv3x3 -> GroupNorm -> ReLU -> 2x2 max-pool,
and a global average pool gives one vector per image, so any input size works (8x8
digits and 28x28 MNIST alike: a CNN trained on one can start a fit on the other).

GroupNorm, not BatchNorm: it has no running statistics, so what a run saves (its
parameters) is all there is to the model, resume is exact, frozen blocks stay frozen,
and a batch of 4 trains like a batch of 64.

There are no pretrained weights of its own: `cnn` and `scratch:cnn` are the same random
network. The pretrained small CNN is a run:
`exapt fit mnist --model cnn --strategy full --out runs/mnist-cnn`, then
`exapt fit optdigits --init runs/mnist-cnn` (docs/images.md).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import ExaptError
from ..registry import BACKBONES
from .base import Backbone, BackboneFamily, LoadOptions

DEFAULT_WIDTHS = (32, 64, 128)


def _groups(width: int) -> int:
    """8 channels per group where the width allows it (GroupNorm needs groups | width)."""
    for g in (width // 8, 4, 2, 1):
        if g >= 1 and width % g == 0:
            return g
    return 1


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.GroupNorm(_groups(c_out), c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.GroupNorm(_groups(c_out), c_out), nn.ReLU(inplace=True),
        nn.MaxPool2d(2, ceil_mode=True),  # ceil: odd sizes keep their edge; a 1x1 map stays 1x1
    )


class CNNBackbone(Backbone):
    input_kind = "image"
    supports_prefix = True

    def __init__(self, n_inputs: tuple[int, int, int], widths: tuple[int, ...] = DEFAULT_WIDTHS, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.n_inputs = tuple(int(d) for d in n_inputs)
        self.channels = self.n_inputs[0]
        self.widths = tuple(int(w) for w in widths)
        layers, c = [], self.channels
        for w in self.widths:
            layers.append(_conv_block(c, w))
            c = w
        self.layers = nn.ModuleList(layers)
        self.feature_dim = c
        self.seed = seed

    # -- inputs ---------------------------------------------------------------------
    def prepare_inputs(self, inputs) -> list:
        x = np.asarray(inputs, dtype=np.float32)
        if len(x) == 0:
            return []
        if x.ndim != 4 or x.shape[1] != self.channels:
            got = f"{x.shape[1]} channels" if x.ndim == 4 else f"inputs of shape {x.shape[1:]}"
            raise ExaptError(f"the cnn was built for images with {self.channels} channel(s), got {got}")
        return list(x)

    def collate(self, items):
        return {"x": torch.as_tensor(np.stack(items))}

    # -- computation ----------------------------------------------------------------
    def _run(self, h: torch.Tensor, start: int, stop: int | None = None) -> torch.Tensor:
        for layer in self.layers[start:stop]:
            h = layer(h)
        return h

    def forward(self, batch):
        return self._run(batch["x"], 0).mean(dim=(2, 3))

    def blocks(self):
        return [(f"layers.{i}", layer) for i, layer in enumerate(self.layers)]

    def forward_prefix(self, batch, k):
        h = self._run(batch["x"], 0, k)
        return [{"hidden": h[i].clone()} for i in range(len(h))]

    def collate_prefix(self, states):
        return {"hidden": torch.stack([s["hidden"] for s in states])}

    def forward_suffix(self, state, k):
        return self._run(state["hidden"], k).mean(dim=(2, 3))

    # -- identity -------------------------------------------------------------------
    def identity(self):
        return {"model": "cnn:" + ",".join(map(str, self.widths)), "family": "cnn", "n_inputs": list(self.n_inputs),
                "seed": self.seed, "sha256": None, "scratch": True}

    def describe(self):
        n = sum(p.numel() for p in self.parameters()) / 1e6
        return f"cnn ({len(self.layers)} conv blocks, widths {','.join(map(str, self.widths))}, {n:.2f}M parameters)"


def cnn_widths(spec: str) -> tuple[int, ...]:
    """`cnn` -> the default widths, `cnn:8,16` -> (8, 16): one conv block per width."""
    if ":" not in spec:
        return DEFAULT_WIDTHS
    try:
        widths = tuple(int(w) for w in spec.split(":", 1)[1].split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise ExaptError(f"--model {spec!r}: write cnn:W1,W2,... with positive integer widths")
    return widths


@BACKBONES.register("cnn")
class CNNFamily(BackboneFamily):
    """`cnn` (widths 32, 64, 128) or `cnn:W1,W2,...`; random init (a run of it is the pretrained one)."""
    input_kind = "image"
    pretrained = False

    def load(self, base: str, options: LoadOptions) -> CNNBackbone:
        n_inputs = options.n_inputs
        if not isinstance(n_inputs, (tuple, list)) or len(n_inputs) != 3:
            kind = "text" if n_inputs is None else "numeric --features (they need --model mlp)"
            raise ExaptError(f"--model {base!r} takes images, not {kind}")
        return CNNBackbone(tuple(n_inputs), cnn_widths(base), seed=options.seed)

    def check_name(self, base: str) -> None:
        cnn_widths(base)

    def block_count(self, base: str) -> int:
        return len(cnn_widths(base))

    def rows(self) -> list[dict]:
        return [{"name": "cnn[:W1,W2,...]", "installed": True,
                 "description": "small CNN for small images (widths 32,64,128 -> 128-d; random init: pre-train it "
                                "with a fit, then --init RUN)"}]
