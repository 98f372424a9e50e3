"""A backbone with a task head on top: the thing every strategy trains.

A model started from an earlier run (`fit --init RUN`) also carries that run's head as
`source_head`, beside the new one: it never trains (it is the yardstick of what the
encoder still knows of the source task) and it is saved with the run."""
from __future__ import annotations

import torch
from torch import nn

from .backbones import Backbone


class TransferModel(nn.Module):
    def __init__(self, backbone: Backbone, head: nn.Module, source_head: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.source_head = source_head
        if source_head is not None:
            source_head.requires_grad_(False)
        # When > 0, batches carry the cached output of the first `prefix_k` blocks
        # (freeze:k with a frozen, deterministic prefix) instead of raw inputs.
        self.prefix_k = 0

    def features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.prefix_k:
            return self.backbone.forward_suffix(batch, self.prefix_k)
        return self.backbone(batch)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.features(batch))

    def source_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.source_head(self.features(batch))

    def blocks(self) -> list[tuple[str, nn.Module]]:
        return self.backbone.blocks()

    def block_parameter_names(self) -> list[list[str]]:
        """Full parameter names of each backbone block, input side first."""
        ids = {id(p): n for n, p in self.named_parameters()}
        return [[ids[id(p)] for p in m.parameters()] for _, m in self.blocks()]

    def head_parameter_names(self) -> list[str]:
        return [f"head.{n}" for n, _ in self.head.named_parameters()]

    def source_head_parameter_names(self) -> list[str]:
        if self.source_head is None:
            return []
        return [f"source_head.{n}" for n, _ in self.source_head.named_parameters()]
