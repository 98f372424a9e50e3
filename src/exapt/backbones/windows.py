"""`--long chunk`: inputs longer than a model's window, read whole.

An input's tokens are cut into windows whose starts are STRIDE tokens apart (the last
one ends at the input's end), each framed by the tokenizer's special tokens; the
backbone encodes every window and pools their embeddings into one per input, so
`forward(batch)` stays [B, D] and training, prediction, the feature cache and `rank`
all see one vector per input.
"""
from __future__ import annotations

import torch

from ..errors import ExaptError


class Windows(list):
    """With --long: the windows (token id lists) of one input, as one prepared item."""


def cut_windows(ids: list[int], content: int, stride: int, frame: tuple[list[int], list[int]]) -> Windows:
    """An input's token ids (no special tokens) as windows of `content` tokens, starts
    `stride` apart, the last ending at the input's end; `frame`: the special tokens."""
    starts = [0] if len(ids) <= content else [*range(0, len(ids) - content, stride), len(ids) - content]
    head, tail = frame
    return Windows([*head, *ids[s:s + content], *tail] for s in starts)


def owners(items: list[Windows]) -> torch.Tensor:
    """For the windows of `items` laid side by side: the item each one belongs to."""
    return torch.repeat_interleave(torch.arange(len(items)), torch.tensor([len(w) for w in items]))


def special_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after one input ([CLS] / [SEP])."""
    plain = tokenizer("A", add_special_tokens=False)["input_ids"]
    framed = tokenizer("A")["input_ids"]
    for i in range(len(framed) - len(plain) + 1):
        if framed[i:i + len(plain)] == plain:
            return framed[:i], framed[i + len(plain):]
    raise ExaptError("--long: cannot tell where this tokenizer puts its special tokens")


def pool_windows(emb: torch.Tensor, owner: torch.Tensor, n_items: int, mode: str) -> torch.Tensor:
    """[W, D] window embeddings -> [n_items, D]: the mean of each item's windows, or
    (`attention`) their softmax-weighted mean, each window weighted by its agreement with
    the item's mean window (scaled dot product; no parameters, so a frozen encoder's
    features, the feature cache and `rank` get it too)."""
    counts = torch.bincount(owner, minlength=n_items).clamp(min=1).to(emb.dtype).unsqueeze(1)
    mean = torch.zeros(n_items, emb.shape[1], dtype=emb.dtype, device=emb.device).index_add(0, owner, emb) / counts
    if mode == "mean":
        return mean
    scores = (emb * mean[owner]).sum(1) / emb.shape[1] ** 0.5
    peak = torch.full((n_items,), -torch.inf, dtype=emb.dtype, device=emb.device).scatter_reduce(
        0, owner, scores, reduce="amax")
    weights = torch.exp(scores - peak[owner])
    total = torch.zeros(n_items, dtype=emb.dtype, device=emb.device).index_add(0, owner, weights)
    weights = (weights / total[owner]).unsqueeze(1)
    return torch.zeros_like(mean).index_add(0, owner, emb * weights)
