"""The training loop: reads top to bottom.

AdamW over the strategy's parameter groups, linear warm-up then linear decay, gradient
clipping, validation every epoch with early stopping on the task's primary metric, the
best weights restored at the end, and an atomic checkpoint every epoch that `resume`
continues from to the same result as an uninterrupted run.

It runs on Hugging Face Accelerate: under `accelerate launch` or `torchrun` each
process takes its share of every batch (the global batch is unchanged) and DDP averages
the gradients, so N processes reproduce the single-process run up to float rounding.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..config import TrainConfig  # noqa: F401  (callers build the loop's options from here)
from .batches import Step, epoch_batches, eval_batches
from .checkpoint import (atomic_save_tensors, load_tensors, optimizer_from_tensors, optimizer_to_tensors,
                         rng_state, set_rng_state)

CHECKPOINT = "checkpoint.safetensors"


@dataclass
class Split:
    """Prepared items (token ids, feature rows, or cached prefix states) and targets."""
    items: list
    targets: torch.Tensor
    lengths: list[int]
    # Importance weights of validation rows (IWCV, Sugiyama et al. 2007): with them the
    # epoch is chosen on the weighted loss, an estimate of the *target* domain's loss.
    weights: torch.Tensor | None = None

    @classmethod
    def prepare(cls, backbone, inputs, targets: torch.Tensor) -> "Split":
        """Raw inputs through the backbone's `prepare_inputs` (tokenised once), with targets."""
        items = backbone.prepare_inputs(inputs)
        return cls(items, targets, [backbone.item_length(x) for x in items])


def _batch(model, split: Split, idx, device) -> tuple[dict, torch.Tensor]:
    items = [split.items[i] for i in idx]
    bb = model.backbone
    batch = bb.collate_prefix(items) if model.prefix_k else bb.collate(items)
    return {k: v.to(device) for k, v in batch.items()}, split.targets[torch.as_tensor(idx)].to(device)


@torch.no_grad()
def predict_logits(model, split: Split, batch_size: int = 64, device="cpu", forward=None) -> torch.Tensor:
    """Logits in the split's order, in eval mode; `forward` (default: the model) may name
    another head's forward, e.g. `model.source_logits`."""
    was = model.training
    model.eval()
    forward = forward or model
    out = torch.empty(0, model.head.out_features)
    for idx in eval_batches(split.lengths, batch_size):
        batch, _ = _batch(model, split, idx, device)
        logits = forward(batch).float().cpu()
        if len(out) != len(split.items):
            out = torch.empty(len(split.items), logits.shape[-1])
        out[torch.as_tensor(idx)] = logits
    model.train(was)
    return out


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS after each step (glibc): batches of varying
    length otherwise fragment the heap and the process's RSS creeps up step after step."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc():
    import ctypes
    import ctypes.util

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


def train(model, strategy, task, train_split: Split, val_split: Split | None, cfg: TrainConfig,
          run_dir: Path, resume: bool = False, progress: bool = True, log=print, penalties=None) -> dict:
    from accelerate import Accelerator, DistributedDataParallelKwargs

    # Gradual unfreezing leaves some registered parameters without gradients early on.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=strategy.changes_over_epochs)
    # Without a GPU, Accelerate only forms a (gloo) process group when told it is on CPU.
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp])
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    if world > 1 and rank == 0:
        log(f"data-parallel over {world} processes ({accelerator.distributed_type}); each takes 1/{world} of every batch")
    torch.manual_seed(cfg.seed)
    epochs = cfg.resolved_epochs(len(train_split.items))
    steps_per_epoch = math.ceil(len(train_split.items) / cfg.batch_size)
    lr = cfg.lr or strategy.default_lr
    head_lr = cfg.head_lr or strategy.default_head_lr or lr

    # Every parameter that will train in some epoch enters the optimiser (and DDP) now.
    ever_trainable = set().union(*(strategy.trainable_names(model, e) for e in range(epochs)))
    for n, p in model.named_parameters():
        p.requires_grad_(n in ever_trainable)
    checkpointing = cfg.activation_checkpointing
    if checkpointing is None:
        checkpointing = strategy.checkpoints_activations
    if checkpointing and hasattr(model.backbone, "enable_activation_checkpointing"):
        model.backbone.enable_activation_checkpointing()
    model.to(device)
    groups = strategy.param_groups(model, lr, head_lr, cfg.weight_decay)
    aux = penalties.modules() if penalties else {}  # e.g. dann's domain classifier
    if aux:
        groups.append({"params": [p for m in aux.values() for p in m.parameters()], "lr": head_lr,
                       "lr_scale": head_lr / lr, "weight_decay": 0.0})
    optimizer = fused_adamw(groups)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(epochs * steps_per_epoch, cfg.warmup))
    ddp_model, optimizer = accelerator.prepare(model, optimizer)

    history: list[dict] = []
    best = {"score": None, "epoch": -1, "state": None}
    start_epoch, bad_epochs = 0, 0
    ckpt_path = Path(run_dir) / CHECKPOINT
    if resume and ckpt_path.exists():
        start_epoch, history, best, bad_epochs = _restore(ckpt_path, model, optimizer, scheduler, aux)
        if rank == 0:
            log(f"resumed from {ckpt_path} after epoch {start_epoch}")

    started = time.perf_counter()
    for epoch in range(start_epoch, epochs):
        strategy.apply(model, epoch)
        model.train()
        for m in strategy.frozen_modules(model, epoch):
            m.eval()  # frozen blocks: no dropout, so they act as a fixed feature map
        batches = epoch_batches(train_split.lengths, cfg.batch_size, cfg.seed, epoch)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not progress or rank != 0)
        total_loss, seen, penalty_sums = 0.0, 0, {}
        for number, idx in enumerate(bar):
            idx = idx[rank::world] if world > 1 else idx
            batch, targets = _batch(model, train_split, idx, device)
            if penalties:  # single process (fit refuses more): the penalties read the features too
                features = model.features(batch)
                task_loss = task.loss(model.head(features), targets)
                extra, parts = penalties(model, Step(idx, features, epoch, number))
                loss = task_loss + extra
                for name, value in parts.items():
                    penalty_sums[name] = penalty_sums.get(name, 0.0) + value * len(idx)
            else:
                loss = task_loss = task.loss(ddp_model(batch), targets)
            accelerator.backward(loss)
            if cfg.clip:
                accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.clip)
                for m in aux.values():
                    torch.nn.utils.clip_grad_norm_(m.parameters(), cfg.clip)
            if penalties:
                penalties.before_step(optimizer)  # decoupled pulls (l2sp-decoupled)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            release_freed_memory()
            total_loss += task_loss.item() * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}")
        bar.close()
        record = {"epoch": epoch + 1, "train_loss": total_loss / max(seen, 1),
                  **{f"penalty_{k}": v / max(seen, 1) for k, v in penalty_sums.items()},
                  "lr": scheduler.get_last_lr()[0], "seconds": round(time.perf_counter() - started, 3)}
        if val_split is not None and len(val_split.items):
            logits = predict_logits(model, val_split, device=device)
            metrics = task.metrics(logits, val_split.targets)
            val_loss = float(task.loss(logits, val_split.targets))
            record.update({f"val_{k}": v for k, v in metrics.items()}, val_loss=val_loss)
            sign = 1 if task.higher_is_better else -1
            score = (sign * metrics[task.primary_metric], -val_loss)
            if val_split.weights is not None:
                iw = importance_weighted(logits, val_split.targets, val_split.weights)
                record.update({f"val_iw_{k}": v for k, v in iw.items()})
                score = (iw["accuracy"], -iw["loss"])
            if best["score"] is None or score > tuple(best["score"]):
                best = {"score": list(score), "epoch": epoch + 1, "state": _state_of(model, ever_trainable)}
                bad_epochs = 0
            else:
                bad_epochs += 1
        history.append(record)
        if progress and rank == 0:
            shown = {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in record.items() if k != "seconds"}
            log(" ".join(f"{k}={v}" for k, v in shown.items()))
        if rank == 0:
            _checkpoint(ckpt_path, model, ever_trainable, optimizer, scheduler, epoch + 1, history, best, bad_epochs,
                        aux)
        accelerator.wait_for_everyone()
        if cfg.patience and bad_epochs >= cfg.patience:
            if rank == 0:
                log(f"early stop: no validation gain for {cfg.patience} epochs")
            break

    if best["state"] is not None:
        _copy_into(model, best["state"])
    model.to("cpu")
    accelerator.free_memory()
    return {"history": history, "best_epoch": best["epoch"] if best["state"] is not None else len(history),
            "epochs": epochs, "ever_trainable": sorted(ever_trainable)}


def importance_weighted(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> dict[str, float]:
    """Accuracy and cross-entropy with each row weighted by w = p_target(x) / p_source(x)."""
    w = weights.float() / weights.float().sum()
    loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    return {"accuracy": float((w * (logits.argmax(-1) == targets).float()).sum()), "loss": float((w * loss).sum())}


def _checkpoint(path, model, trainable, optimizer, scheduler, epoch, history, best, bad_epochs, aux=None) -> None:
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
            "bad_epochs": bad_epochs, "optimizer": opt_meta, "scheduler": scheduler.state_dict(), "rng": rng_meta}
    atomic_save_tensors(tensors, path, json.loads(json.dumps(meta, default=float)))


def _restore(path, model, optimizer, scheduler, aux=None):
    tensors, meta = load_tensors(path)
    _copy_into(model, {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    for name, module in (aux or {}).items():
        prefix = f"aux.{name}."
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    optimizer_from_tensors(optimizer, tensors, meta["optimizer"])
    scheduler.load_state_dict(meta["scheduler"])
    set_rng_state(tensors, meta["rng"])
    best_state = {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")} or None
    best = {"score": meta["best_score"], "epoch": meta["best_epoch"], "state": best_state}
    return meta["epoch"], meta["history"], best, meta["bad_epochs"]
