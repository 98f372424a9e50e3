"""The Backbone interface every encoder family implements.

A backbone turns raw inputs (texts, numeric rows) into one vector per example, and
exposes its parameters as ordered `blocks()`, input side first: freezing the first k,
layer-wise learning rates and gradual unfreezing all act on that list.

Backbones that can run in two halves (`supports_prefix`) let `freeze:k` compute the
frozen prefix once and train only the top.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Backbone(nn.Module):
    input_kind: str = "text"  # or "features"
    feature_dim: int
    supports_prefix: bool = False

    # -- inputs ---------------------------------------------------------------------
    def prepare_inputs(self, inputs) -> list:
        """Raw inputs -> per-example items (e.g. token id lists), done once per data set."""
        return list(inputs)

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
