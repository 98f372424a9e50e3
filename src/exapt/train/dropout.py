"""Dropout with cheaper masks, for training (issue 25's "cheaper dropout masks" lever).

PyTorch's CPU dropout draws one random number per element (`bernoulli_`), turns the mask
into floats, divides it by 1 - p and multiplies: four passes over memory, and it keeps a
float mask for the backward pass. Here the mask comes from 16 random bits per element,
drawn 64 at a time from the same seeded generator (`random_` over the full int64 range:
one draw gives four 16-bit numbers), and an element is kept when its 16-bit number clears
a threshold. The kept elements are scaled in the same pass (`where`), and the backward
pass keeps a one-byte mask.

What changes: the random stream (a seeded run draws other masks than before) and p itself,
rounded to a multiple of 1/65536 (0.1 becomes 0.100006); the scale is 1 / (1 - that p), so
every element's expectation is unchanged. The distribution of masks is otherwise the same:
independent per element. Runs stay reproducible: the draws come from torch's default
generator, so `torch.manual_seed` fixes them and activation checkpointing's recompute,
which restores that generator's state, replays them.

`cheap_dropout(model)` swaps every `nn.Dropout` inside the model for this one, and, for a
Hugging Face model on PyTorch's scaled-dot-product attention, routes attention through
`attention_with_cheap_dropout` (dropout on the attention probabilities by the same mask;
with dropout 0, as in eval mode, it is the `sdpa` function itself). Both are undone on exit.
On a GPU both hand over to PyTorch's own kernels, which are fused there already.
Measured on one MiniLM-L6 step (benchmarks/lever_micro.py) and in benchmarks/speed.py;
docs/speed.md has the figures.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

_LEVELS = 1 << 16  # a 16-bit number per element: p is kept to 1/65536
_ATTENTION = "exapt_sdpa"


def keep_mask(shape, p: float) -> tuple[torch.Tensor, float]:
    """A boolean mask that keeps each element with probability 1 - p' (p' = p rounded to
    1/65536), and the scale 1 / (1 - p') that keeps the expectation."""
    dropped = round(p * _LEVELS)
    n = math.prod(shape)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)
    numbers = bits.view(torch.int16)[:n].view(shape)  # uniform on [-32768, 32767]
    return numbers >= dropped - _LEVELS // 2, _LEVELS / (_LEVELS - dropped)


class _KeepAndScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, keep, scale):
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.where(keep, x * scale, 0.0)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad * ctx.scale, 0.0), None, None


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`F.dropout` with the cheaper mask (module docstring)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":  # GPUs have a fused dropout kernel already
        return F.dropout(x, p, True)
    if round(p * _LEVELS) >= _LEVELS:  # p within 1/131072 of 1: everything dropped
        return x * 0.0
    keep, scale = keep_mask(x.shape, p)
    return _KeepAndScale.apply(x, keep, scale)


_cheap = dropout  # the attention function below takes an argument of that name


class CheapDropout(nn.Dropout):
    """An `nn.Dropout` (same `p`, so code that sets `.p` still works) with the cheaper mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def attention_with_cheap_dropout(module, query, key, value, attention_mask, dropout: float = 0.0,
                                 scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    """Hugging Face's attention-function signature. With dropout, PyTorch's math path (the
    one its `scaled_dot_product_attention` takes on CPU whenever dropout is on) with the
    cheaper mask; otherwise, and for what this path does not cover (causal or grouped
    attention, position bias), Hugging Face's `sdpa` function unchanged. (Models pass
    dropout 0 in eval mode, as they do to `sdpa`.)"""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward  # heavy: imported on first use

    plain = (dropout == 0.0 or query.device.type != "cpu" or is_causal or kwargs.get("position_bias") is not None
             or getattr(module, "num_key_value_groups", 1) > 1 or query.shape[-1] != key.shape[-1])
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query * scale, key.transpose(-2, -1))  # scaling the small operand: one pass fewer
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # True: attend (as sdpa); additive, as PyTorch's math path makes it
            attention_mask = torch.zeros(attention_mask.shape, dtype=scores.dtype).masked_fill_(
                ~attention_mask, torch.finfo(scores.dtype).min)
        scores.add_(attention_mask)  # in place: matmul's backward needs its inputs, not its output
    out = torch.matmul(_cheap(torch.softmax(scores, dim=-1), dropout), value)
    return out.transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    from transformers import AttentionInterface  # heavy: imported on first use
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask  # heavy: as above

    AttentionInterface.register(_ATTENTION, attention_with_cheap_dropout)
    ALL_MASK_ATTENTION_FUNCTIONS.register(_ATTENTION, sdpa_mask)  # the same boolean masks as sdpa


def _sdpa_configs(model: nn.Module) -> list:
    """The configs of Hugging Face (sub)models running on `sdpa` attention."""
    seen, configs = set(), []
    for m in model.modules():
        config = getattr(m, "config", None)
        if config is not None and id(config) not in seen and getattr(config, "_attn_implementation", None) == "sdpa":
            seen.add(id(config))
            configs.append(config)
    return configs


@contextmanager
def cheap_dropout(model: nn.Module):
    """Within the block, `model` drops out with the cheaper masks (module docstring)."""
    swapped = []
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                cheap = CheapDropout(child.p, child.inplace)
                cheap.train(child.training)
                setattr(parent, name, cheap)
                swapped.append((parent, name, child, cheap))
    configs = _sdpa_configs(model)
    if configs:
        _register_attention()
    for config in configs:
        config._attn_implementation = _ATTENTION
    try:
        yield
    finally:
        for config in configs:
            config._attn_implementation = "sdpa"
        for parent, name, original, cheap in swapped:
            original.p = cheap.p  # `train.attention_dropout` may have set it meanwhile
            original.train(cheap.training)
            setattr(parent, name, original)
