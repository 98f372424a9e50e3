"""A training run's state on disk and back: the epoch checkpoint that `resume` continues
from, the best-epoch snapshot, and new learning rates for a resumed run.

Split out of loop.py, which reads top to bottom; these are the pieces it calls.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import ExaptError
from .checkpoint import (atomic_save_tensors, load_tensors, optimizer_from_tensors, optimizer_to_tensors, rng_state,
                         set_rng_state)


def _saved_buffers(model) -> dict[str, torch.Tensor]:
    """The model's persistent buffers (what its state_dict holds beside parameters), e.g.
    BatchNorm running statistics, which training changes without a gradient: a checkpoint
    and the best-epoch snapshot must carry them, or a resumed or early-stopped model pairs
    one epoch's weights with another epoch's statistics."""
    persistent = model.state_dict(keep_vars=True).keys()
    return {n: b for n, b in model.named_buffers() if n in persistent}


def _state_of(model, names) -> dict[str, torch.Tensor]:
    state = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}
    state.update({n: b.detach().clone() for n, b in _saved_buffers(model).items()})
    return state


def _copy_into(model, state: dict[str, torch.Tensor]) -> None:
    """Copy a snapshot of parameters and buffers (by name) back into the model."""
    tensors = {**dict(model.named_parameters()), **_saved_buffers(model)}
    with torch.no_grad():
        for n, v in state.items():
            tensors[n].copy_(v)


def retune(optimizer, scheduler, rates: list[tuple[float, float]]) -> None:
    """New (initial lr, weight decay) per group after a restore: the schedule then goes on
    from its current step with the new base rates."""
    for group, (initial, decay) in zip(optimizer.param_groups, rates):
        group["initial_lr"], group["weight_decay"] = initial, decay
    scheduler.base_lrs = [initial for initial, _ in rates]
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def _checkpoint(path, model, trainable, optimizer, scheduler, epoch, history, best, bad_epochs, aux=None,
                seconds: float = 0.0) -> None:
    tensors = {f"model.{n}": p for n, p in model.named_parameters() if n in trainable}
    tensors.update({f"model.{n}": b for n, b in _saved_buffers(model).items()})
    for name, module in (aux or {}).items():
        tensors.update({f"aux.{name}.{k}": v for k, v in module.state_dict().items()})
    if best["state"] is not None:
        tensors.update({f"best.{n}": v for n, v in best["state"].items()})
    opt_tensors, opt_meta = optimizer_to_tensors(optimizer)
    rng_tensors, rng_meta = rng_state()
    tensors.update(opt_tensors)
    tensors.update(rng_tensors)
    meta = {"epoch": epoch, "history": history, "best_score": best["score"], "best_epoch": best["epoch"],
            "bad_epochs": bad_epochs, "optimizer": opt_meta, "scheduler": scheduler.state_dict(), "rng": rng_meta,
            "seconds": seconds}
    atomic_save_tensors(tensors, path, json.loads(json.dumps(meta, default=float)))


def _restore(path, model, optimizer, scheduler, aux=None):
    """Load a checkpoint into the model, optimiser, schedule and RNGs; a damaged file is
    said in one line (safetensors raises its own error types)."""
    try:
        tensors, meta = load_tensors(path)
        _copy_into(model, {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        for name, module in (aux or {}).items():
            prefix = f"aux.{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        optimizer_from_tensors(optimizer, tensors, meta["optimizer"])
        scheduler.load_state_dict(meta["scheduler"])
        set_rng_state(tensors, meta["rng"])
    except Exception as e:  # noqa: BLE001 - any failure here means the file is not a checkpoint we wrote
        message = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ExaptError(f"{path}: the checkpoint is damaged ({message}); delete it to train again from the first "
                         f"epoch with `exapt fit --resume {Path(path).parent}`, or start over with --overwrite") from None
    best_state = {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")} or None
    best = {"score": meta["best_score"], "epoch": meta["best_epoch"], "state": best_state}
    history = meta["history"]
    # checkpoints written before the time was kept: the last epoch's record has it
    seconds = meta.get("seconds", history[-1]["seconds"] if history else 0.0)
    return meta["epoch"], history, best, meta["bad_epochs"], seconds
