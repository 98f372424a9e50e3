"""Activation checkpointing only where memory needs it.

Recomputing every block's forward in the backward pass (activation checkpointing) trades
compute for memory. For parameter-efficient strategies it was always on, and it made
`lora` slower than `full`: profiled on MiniLM-L6, batch 32, a LoRA step took 1.2x a full
step at <= 64 tokens and 2.1x at 256 (docs/speed.md), because every matmul and every
dropout mask ran twice. Turned off, a LoRA epoch took 0.59x the time
(benchmarks/lever_fit.py lora-ckpt-on lora-ckpt-off).

So a strategy that asks for it (`checkpoints_activations`) gets it only when the batch's
stored activations would take more than a quarter of the memory available now. The
estimate is Korthikanti et al. (2022, "Reducing Activation Recomputation in Large
Transformer Models", eq. 1) for fp32: per layer, s * b * h * (68 + 10 * a * s / h) bytes
(sequence s, batch b, width h, heads a), which counts the attention matrices that grow
with s^2. `--set train.activation_checkpointing=true|false` decides by hand.
"""
from __future__ import annotations

import os

BUDGET_SHARE = 0.25  # of available memory: room for the weights, optimiser state and the OS


def activation_bytes(config, batch: int, length: int) -> int:
    """Stored activations of one training batch through a transformer encoder, fp32."""
    h, a, layers = int(config.hidden_size), int(config.num_attention_heads), int(config.num_hidden_layers)
    return int(layers * length * batch * h * (68 + 10 * a * length / h))


def available_bytes() -> int | None:
    """Memory the process can take without swapping (Linux); None where unknown."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def checkpointing_needed(backbone, batch: int, length: int) -> tuple[bool, str]:
    """(on?, why) for a strategy that would checkpoint activations to save memory."""
    config = getattr(getattr(backbone, "model", None), "config", None)
    free = available_bytes()
    if config is None or not hasattr(config, "num_attention_heads") or free is None:
        return True, "activation checkpointing on (no estimate of this model's activations)"
    need = activation_bytes(config, batch, length)
    gb = f"~{need / 2**30:.2f} GiB of activations per batch of {batch} x {length} tokens"
    if need > BUDGET_SHARE * free:
        return True, f"activation checkpointing on: {gb}, over a quarter of the {free / 2**30:.1f} GiB available"
    return False, f"activation checkpointing off: {gb} fit in memory (faster)"
