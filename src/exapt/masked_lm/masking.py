"""BERT masking (Devlin et al. 2019): pick 15% of the real tokens as targets; of those,
80% become [MASK], 10% a random token, 10% stay as they are.

Done on a whole padded batch at once with tensor ops (no per-example Python), which is
part of why exapt's pre-training loop outpaces a Trainer fed by
DataCollatorForLanguageModeling. Random replacements are drawn from the ordinary
vocabulary only (never [PAD]/[CLS]/...), unlike the collator, which draws from all ids.

With overlapping k-mer tokens a lone masked token is given away by its neighbours
(each base appears in k tokens), so `span=k` masks runs of k adjacent tokens instead
(as DNABERT does), keeping the expected masked share at `probability`.
"""
from __future__ import annotations

import torch

IGNORE = -100


def mask_tokens(ids: torch.Tensor, special: torch.Tensor, *, mask_id: int, normal_ids: torch.Tensor,
                probability: float = 0.15, span: int = 1, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked inputs, labels) for a batch; labels are IGNORE where no prediction is asked.

    ids: (batch, length) token ids; special: bool mask of tokens never chosen ([CLS],
    [SEP], padding); normal_ids: 1-D tensor of the ids random replacements come from.
    """
    if not 0 < probability < 1:
        raise ValueError(f"masking probability must be in (0, 1), got {probability}")
    eligible = ~special
    if span > 1:
        # choose span starts with probability p/span, then widen each start to `span` tokens
        starts = (torch.rand(ids.shape, generator=generator) < probability / span) & eligible
        chosen = _shift_cover(starts, span) & eligible  # a start covers itself and span-1 after
    else:
        chosen = (torch.rand(ids.shape, generator=generator) < probability) & eligible
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    roll = torch.rand(ids.shape, generator=generator)
    to_mask = chosen & (roll < 0.8)
    to_random = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs = ids.clone()
    inputs[to_mask] = mask_id
    n_random = int(to_random.sum())
    if n_random:
        pick = torch.randint(len(normal_ids), (n_random,), generator=generator)
        inputs[to_random] = normal_ids[pick].to(inputs.dtype)
    return inputs, labels


def _shift_cover(starts: torch.Tensor, span: int) -> torch.Tensor:
    """Positions covered by a span of `span` tokens beginning at any True of `starts`."""
    cover = starts.clone()
    for shift in range(1, span):
        cover[:, shift:] |= starts[:, :-shift]
    return cover
