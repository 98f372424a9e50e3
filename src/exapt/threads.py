"""CPU threads: one pool per process, sized to the cores this process may use.

PyTorch defaults to every core, which oversubscribes the machine as soon as two
processes train side by side (torchrun, accelerate launch). We give each local process
its share, and respect OMP_NUM_THREADS when the user set it.
"""
from __future__ import annotations

import os

import torch


def configure_threads() -> int:
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    n = max(1, cores // local)
    torch.set_num_threads(n)
    return n
