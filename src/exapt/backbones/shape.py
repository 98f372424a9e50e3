"""A smaller shape of a Hugging Face encoder, written in the model's name, so that a run
of a distilled or pruned model reloads from its config.yaml alone:

    minilm-l6@3                          the first (input-side) 3 layers of minilm-l6
    minilm-l6@6:heads=12-8-8-6-12-12     all 6 layers, with that many attention heads each

`exapt distil --student minilm-l6@3` and `exapt prune` write such names. Loading one
builds the named model, keeps its bottom layers and slices every layer's attention to
the given number of heads (the first ones: the run's weights file then holds the real,
trained tensors of the heads that were kept). Transformers 5 no longer has
`prune_heads`, so the slicing is done here: query/key/value lose the rows of the removed
heads, the attention's output projection loses the matching columns, and the layer
computes with fewer heads (BERT-family attention reshapes by head size, not count).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ExaptError
from ..registry import BACKBONES
from .base import BackboneFamily, LoadOptions
from .hf import HFBackbone, HuggingFaceFamily

_SHAPE = re.compile(r"^(?P<base>.+)@(?P<layers>\d+)(?::heads=(?P<heads>\d+(?:-\d+)*))?$")


@dataclass(frozen=True)
class Shape:
    layers: int
    heads: tuple[int, ...] | None = None  # heads kept per layer (None: all)

    def spec(self, base: str) -> str:
        heads = f":heads={'-'.join(map(str, self.heads))}" if self.heads else ""
        return f"{base}@{self.layers}{heads}"


def split_shape(name: str) -> tuple[str, Shape | None]:
    """`minilm-l6@3` -> ("minilm-l6", Shape(3)); a name without a shape -> (name, None).
    A folder whose own name holds an `@` stays a folder."""
    m = _SHAPE.match(str(name))
    if m is None or Path(name).expanduser().exists():
        return str(name), None
    heads = tuple(int(h) for h in m["heads"].split("-")) if m["heads"] else None
    return m["base"], Shape(int(m["layers"]), heads)


def attention_parts(layer: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """(self-attention with query/key/value, output projection) of a BERT-family layer."""
    att = getattr(layer, "attention", None)
    self_att, out = getattr(att, "self", None), getattr(getattr(att, "output", None), "dense", None)
    if self_att is None or out is None or not all(hasattr(self_att, n) for n in ("query", "key", "value")):
        raise ExaptError(f"head pruning needs a BERT-family encoder (attention.self.query/key/value); "
                         f"{type(layer).__name__} is not one")
    return self_att, out


def _sliced(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    weight = linear.weight.detach().index_select(dim, index).clone()
    bias = linear.bias
    if bias is not None and dim == 0:
        bias = bias.detach().index_select(0, index).clone()
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias.detach())
    return new


def keep_heads(layer: nn.Module, keep: list[int]) -> None:
    """Keep only the heads `keep` (indices into the layer's current heads) of one layer."""
    self_att, out = attention_parts(layer)
    d = self_att.attention_head_size
    if not keep:
        raise ExaptError("every layer keeps at least one attention head (to drop a layer, use --layers)")
    index = torch.cat([torch.arange(h * d, (h + 1) * d) for h in sorted(keep)])
    for name in ("query", "key", "value"):
        setattr(self_att, name, _sliced(getattr(self_att, name), index, 0))
    layer.attention.output.dense = _sliced(out, index, 1)
    self_att.num_attention_heads = len(keep)
    self_att.all_head_size = len(keep) * d


def keep_layers(backbone: HFBackbone, k: int) -> None:
    """Keep the bottom (input-side) k layers."""
    n = len(backbone.layers)
    if not 1 <= k <= n:
        raise ExaptError(f"{backbone.name}: {k} layers asked of a model with {n} (1..{n})")
    model = backbone.model
    for path in ("encoder.layer", "encoder.layers", "layers", "transformer.layer"):
        *parents, attr = path.split(".")
        obj = model
        for part in parents:
            obj = getattr(obj, part, None)
        if isinstance(getattr(obj, attr, None), nn.ModuleList):
            setattr(obj, attr, nn.ModuleList(list(getattr(obj, attr))[:k]))
            break
    for field in ("num_hidden_layers", "n_layers", "num_layers"):
        if hasattr(model.config, field):
            setattr(model.config, field, k)


def apply_shape(backbone: HFBackbone, shape: Shape) -> None:
    keep_layers(backbone, shape.layers)
    if shape.heads is None:
        return
    if len(shape.heads) != shape.layers:
        raise ExaptError(f"{backbone.name}: heads= names {len(shape.heads)} layers, the shape has {shape.layers}")
    for layer, n in zip(backbone.layers, shape.heads):
        have = head_counts_of(layer)
        if not 1 <= n <= have:
            raise ExaptError(f"{backbone.name}: {n} heads asked of a layer with {have}")
        keep_heads(layer, list(range(n)))


def head_counts_of(layer: nn.Module) -> int:
    self_att, _ = attention_parts(layer)
    return self_att.query.out_features // self_att.attention_head_size


def shape_of(backbone: HFBackbone) -> Shape:
    """The backbone's current shape (after pruning), for its name."""
    return Shape(len(backbone.layers), tuple(head_counts_of(layer) for layer in backbone.layers))


@BACKBONES.register("shaped")
class ShapedFamily(BackboneFamily):
    """Names `NAME@K[:heads=...]` of a Hugging Face encoder (alias or folder)."""

    def matches(self, base: str) -> bool:
        stem, shape = split_shape(base)
        if shape is None:
            return False
        others = [cls() for name, cls in BACKBONES.items() if cls is not ShapedFamily]
        return not any(not f.catch_all and f.matches(stem) for f in others)

    def load(self, base: str, options: LoadOptions) -> HFBackbone:
        stem, shape = split_shape(base)
        backbone = HuggingFaceFamily().load(stem, options)
        apply_shape(backbone, shape)
        backbone.name = base
        return backbone

    def max_length(self, base: str, reserve: int = 0) -> int | None:
        return HuggingFaceFamily().max_length(split_shape(base)[0], reserve)
