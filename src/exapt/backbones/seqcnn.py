"""A small 1-D CNN over one-hot letters, trained from scratch (the `seqcnn` backbone): the
classical deep baseline for DNA and protein sequences (`--strategy baseline-cnn`).

    load_backbone("seqcnn")            # 2 conv layers of 64 filters, width 9 -> 128-d features
    load_backbone("seqcnn:32,32")      # other filter counts

Each letter A..Z is a one-hot channel (26 channels, so DNA, proteins and any alphabet need
no vocabulary; other characters are all-zero columns). Blocks: conv1d (width 9, same
padding) -> ReLU -> dropout, the first followed by a max-pool of 2; the features are the
global max and the global mean over positions of the last block, concatenated. Motif
detectors are what k-mer counts approximate, and they see the letters around a motif too.

No pretrained weights: `seqcnn` and `scratch:seqcnn` are the same random network.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import ExaptError
from ..registry import BACKBONES
from .base import Backbone, BackboneFamily, LoadOptions

DEFAULT_FILTERS = (64, 64)
WIDTH = 9
LETTERS = 26


class SeqCNNBackbone(Backbone):
    input_kind = "text"

    def __init__(self, filters: tuple[int, ...] = DEFAULT_FILTERS, max_length: int = 128, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.filters, self.max_length, self.seed = tuple(filters), max_length, seed
        layers, c = [], LETTERS
        for i, f in enumerate(self.filters):
            pool = [nn.MaxPool1d(2, ceil_mode=True)] if i == 0 and len(self.filters) > 1 else []
            layers.append(nn.Sequential(nn.Conv1d(c, f, WIDTH, padding=WIDTH // 2), nn.ReLU(), nn.Dropout(0.1), *pool))
            c = f
        self.layers = nn.ModuleList(layers)
        self.feature_dim = 2 * c

    def prepare_inputs(self, inputs) -> list:
        """Letter codes 0..25 per position (-1: not a letter), cut at max_length."""
        out = []
        for text in inputs:
            codes = np.frombuffer("".join(str(text).split()).upper().encode("ascii", "replace"), dtype=np.uint8)
            codes = codes.astype(np.int64)[:self.max_length] - ord("A")
            out.append(np.where((codes >= 0) & (codes < LETTERS), codes, -1))
        return out

    def item_length(self, item) -> int:
        return len(item)

    def collate(self, items: list) -> dict[str, torch.Tensor]:
        length = max(1, max(len(x) for x in items))
        codes = torch.full((len(items), length), -1, dtype=torch.int64)
        mask = torch.zeros(len(items), length, dtype=torch.bool)
        for i, x in enumerate(items):
            codes[i, :len(x)] = torch.as_tensor(x)
            mask[i, :len(x)] = True
        return {"codes": codes, "mask": mask}

    def forward(self, batch):
        codes, keep = batch["codes"], batch["mask"]
        x = nn.functional.one_hot(codes.clamp(min=0), LETTERS).float() * (codes >= 0).unsqueeze(-1)
        h = x.transpose(1, 2)                       # [B, 26, L]
        for layer in self.layers:
            h = layer(h)
            if h.shape[-1] < keep.shape[-1]:        # pooled: a window is real when its first position is
                keep = keep[:, ::2][:, :h.shape[-1]]
            # padding stays zero, so a sequence's features do not depend on its batch's longest one
            h = h * keep.unsqueeze(1)
        mask = keep.unsqueeze(1)
        peak = h.masked_fill(~mask, float("-inf")).amax(-1)
        mean = h.sum(-1) / mask.sum(-1).clamp(min=1)
        return torch.cat([peak, mean], dim=-1)

    def blocks(self):
        return [(f"layers.{i}", layer) for i, layer in enumerate(self.layers)]

    def identity(self):
        return {"model": "seqcnn" if self.filters == DEFAULT_FILTERS else "seqcnn:" + ",".join(map(str, self.filters)),
                "family": "seqcnn", "max_length": self.max_length, "seed": self.seed, "sha256": None, "scratch": True}


@BACKBONES.register("seqcnn")
class SeqCNNFamily(BackboneFamily):
    """`seqcnn` (64, 64 filters) or `seqcnn:F1,F2,...`."""
    input_kind = "text"
    pretrained = False

    def check_name(self, base: str) -> None:
        _filters(base)

    def load(self, base: str, options: LoadOptions) -> SeqCNNBackbone:
        if options.n_inputs is not None:
            raise ExaptError("the seqcnn backbone reads sequences (text), not numeric columns or images")
        return SeqCNNBackbone(_filters(base), options.max_length, options.seed)

    def rows(self) -> list[dict]:
        return [{"name": "seqcnn[:F1,F2,...]", "installed": True,
                 "description": "1-D CNN over one-hot letters for DNA / protein sequences (random init; "
                                "--strategy baseline-cnn)"}]


def _filters(base: str) -> tuple[int, ...]:
    option = base.partition(":")[2].strip()
    if not option:
        return DEFAULT_FILTERS
    try:
        filters = tuple(int(f) for f in option.split(","))
    except ValueError:
        filters = ()
    if not filters or min(filters) < 1:
        raise ExaptError(f"--model {base!r}: write seqcnn:F1,F2 with whole numbers of filters >= 1")
    return filters
