"""The optimiser, its schedule and the heap hygiene every training step shares (the main
loop and the contrastive stage)."""
from __future__ import annotations

import ctypes
import ctypes.util
from contextlib import contextmanager

import torch


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc): batches of varying length otherwise
    fragment the heap and the process's RSS creeps up epoch after epoch."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


# glibc's mallopt parameters and their defaults (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM, _DEFAULT_MMAP_MAX = 128 * 1024, 65536


@contextmanager
def training_heap():
    """While training, big tensors come from the heap and stay there between steps.

    glibc serves a block over its mmap threshold (at most 32 MB) with a fresh mmap and
    unmaps it on free, so every step's large activations (attention matrices: 100 MB each
    at 256 tokens) fault in zeroed pages again; trimming after every step did the same to
    the rest. Measured on MiniLM-L6 at 256 tokens (benchmarks/lever_micro.py 256 trim
    default keepheap): a step took 5.40 s trimming each step, 4.79 s with glibc's defaults
    and 4.16 s with blocks kept on the heap, for a 10% higher peak; a later run, when page
    faults cost twice as much on this virtual machine, 9.2 / 10.3 / 4.29 s. The heap is trimmed at the end of each epoch
    (the loop) and when training ends; then glibc's defaults come back."""
    if _LIBC is None or not hasattr(_LIBC, "mallopt"):
        yield
        return
    _LIBC.mallopt(_M_MMAP_MAX, 0)
    # -1: no automatic trim at all (a 256-token batch frees gigabytes at the top of the
    # heap: any fixed threshold could hand them back after a step); the loop trims per epoch
    _LIBC.mallopt(_M_TRIM_THRESHOLD, -1)
    try:
        yield
    finally:
        _LIBC.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        _LIBC.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM)
        release_freed_memory()


def _load_libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _load_libc()


def fused_adamw(groups: list[dict]) -> torch.optim.AdamW:
    """The fused kernel: on CPU, PyTorch's default (one tensor at a time) AdamW costs
    ~1 s per step on a 22M-parameter model; fused does the same update in ~0.04 s."""
    try:
        return torch.optim.AdamW(groups, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(groups, foreach=True)


def linear_warmup_decay(total: int, warmup: float):
    """A LambdaLR factor: linear warm-up over the first `warmup` of `total` steps, then
    linear decay to 0 (the main loop's schedule; the contrastive stage uses it too)."""
    warm = int(total * warmup)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        return max(0.0, (total - step) / max(1, total - warm))

    return f
