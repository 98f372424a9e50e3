"""A training run's state: the epoch checkpoint that `resume` continues from, the
best-epoch snapshot, new learning rates for a resumed run, and what a diverged run says.

Split out of loop.py, which reads top to bottom; these are the pieces it calls.
"""
from __future__ import annotations

import json

import torch

from ..errors import ExaptError
from ..files import atomic_save_tensors
from .checkpoint import optimizer_to_tensors, rng_state


def saved_buffers(model) -> dict[str, torch.Tensor]:
    """The model's persistent buffers (what its state_dict holds beside parameters), e.g.
    BatchNorm running statistics, which training changes without a gradient: a checkpoint
    and the best-epoch snapshot must carry them, or a resumed or early-stopped model pairs
    one epoch's weights with another epoch's statistics."""
    persistent = model.state_dict(keep_vars=True).keys()
    return {n: b for n, b in model.named_buffers() if n in persistent}


def state_of(model, names) -> dict[str, torch.Tensor]:
    state = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}
    state.update({n: b.detach().clone() for n, b in saved_buffers(model).items()})
    return state


def copy_into(model, state: dict[str, torch.Tensor]) -> None:
    """Copy a snapshot of parameters and buffers (by name) back into the model."""
    tensors = {**dict(model.named_parameters()), **saved_buffers(model)}
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


def save_checkpoint(path, model, trainable, optimizer, scheduler, epoch, history, best, bad_epochs, aux=None,
                seconds: float = 0.0, privacy: list | None = None) -> None:
    """`privacy`: a private run's accountant history (train/privacy.py), so a resumed run
    counts the steps taken before it."""
    tensors = {f"model.{n}": p for n, p in model.named_parameters() if n in trainable}
    tensors.update({f"model.{n}": b for n, b in saved_buffers(model).items()})
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
    if privacy is not None:
        meta["privacy_history"] = [list(h) for h in privacy]
    atomic_save_tensors(tensors, path, json.loads(json.dumps(meta, default=float)))


class NonFiniteLoss(ExaptError):
    """Training diverged (a loss or weight became inf / NaN): stopped where it happened."""


def diverged(what: str, where: str, loop) -> str:
    run = loop.ckpt_path.parent
    if where.startswith("epoch 1, step 1 "):  # before any update: not the learning rate
        return (f"{what} at {where}, before any update: the inputs or the starting weights hold values out of "
                "range (inf, NaN or huge numbers); check the data")
    return (f"{what} at {where}: the learning rate is likely too high (lr {loop.lr:g}, head lr {loop.head_lr:g}); "
            f"lower it and continue from the last good epoch with `exapt fit --resume {run} --set train.lr=...` "
            "(or train.head_lr=...)")
