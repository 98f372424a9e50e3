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

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..errors import ExaptError
from ..files import WriteError, load_tensors, remove_stale_temporaries
from ..run_folder import RunFolder
from .attention import set_attention_dropout
from .batches import Step, epoch_batches, eval_batches
from .checkpoint import optimizer_from_tensors, set_rng_state
from .dropout import cheap_dropout
from .memory import checkpointing_needed
from .optim import fused_adamw, linear_warmup_decay, release_freed_memory, training_heap
from .privacy import PrivatePlan, PrivateTraining, batchnorm_eval, frozen_for_privacy
from .state import NonFiniteLoss, retune
from .state import copy_into as _copy_into
from .state import diverged as _diverged
from .state import save_checkpoint as _checkpoint
from .state import state_of as _state_of  # tests patch loop._state_of


@dataclass
class Split:
    """Prepared items (token ids, feature rows, or cached prefix states) and targets."""
    items: list
    targets: torch.Tensor
    lengths: list[int]
    # Importance weights of validation rows (IWCV, Sugiyama et al. 2007): with them the
    # epoch is chosen on the weighted loss, an estimate of the *target* domain's loss.
    weights: torch.Tensor | None = None
    # Loss weights of training rows (synthetic rows weigh ALPHA, docs/augment.md); None: all 1.
    loss_weights: torch.Tensor | None = None

    @classmethod
    def prepare(cls, backbone, inputs, targets: torch.Tensor) -> "Split":
        """Raw inputs through the backbone's `prepare_inputs` (tokenised once), with targets."""
        items = backbone.prepare_inputs(inputs)
        return cls(items, targets, [backbone.item_length(x) for x in items])


@torch.no_grad()
def prefix_split(bb, split: Split, k: int) -> Split:
    """Replace token ids by the frozen prefix's output, computed once, in eval mode (how
    `freeze:k` and the like skip the blocks that never train)."""
    was = bb.training
    bb.eval()
    states = []
    for start in range(0, len(split.items), 64):
        batch = bb.collate(split.items[start:start + 64])
        states += bb.forward_prefix(batch, k)
    bb.train(was)
    return Split(states, split.targets, split.lengths, split.weights, split.loss_weights)


def device_batch(model, split: Split, idx, device) -> tuple[dict, torch.Tensor]:
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
        batch, _ = device_batch(model, split, idx, device)
        logits = forward(batch).float().cpu()
        if len(out) != len(split.items):
            out = torch.empty(len(split.items), logits.shape[-1])
        out[torch.as_tensor(idx)] = logits
    model.train(was)
    return out


@dataclass
class _Loop:
    """What the epochs of one `train` call share: built once by `_setup`, then read and
    updated epoch by epoch (history, best, bad_epochs)."""
    accelerator: object
    rank: int
    world: int
    device: object
    epochs: int
    steps_per_epoch: int
    ever_trainable: set
    ddp_model: object
    optimizer: object
    scheduler: object
    aux: dict
    lr: float
    head_lr: float
    ckpt_path: Path
    history: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"score": None, "epoch": -1, "state": None})
    start_epoch: int = 0
    bad_epochs: int = 0
    earlier_seconds: float = 0.0   # training time of the processes before a resume
    started: float = 0.0
    private: PrivateTraining | None = None  # --privacy: per-sample clipping, noise, accountant
    stopped_by_time: int | None = None      # the epoch after which train.time_limit stopped it

    def seconds(self) -> float:
        """Training time so far, summed over the processes of a resumed run."""
        return round(self.earlier_seconds + time.perf_counter() - self.started, 3)


def train(model, strategy, task, train_split: Split, val_split: Split | None, cfg: TrainConfig,
          run_dir: Path, resume: bool = False, progress: bool = True, log=print, penalties=None, privacy=None) -> dict:
    """`privacy`: a PrivacySpec (config.py) for DP-SGD (train/privacy.py), or None."""
    loop = _setup(model, strategy, train_split, cfg, run_dir, log, penalties, privacy)
    if resume:
        _resume(loop, model, cfg, run_dir, log)
    loop.started = time.perf_counter()
    masks = cheap_dropout(model) if cfg.cheap_dropout else nullcontext()  # dropout.py says why
    with training_heap(), masks:  # big tensors stay on the heap between steps (optim.py says why)
        _run_epochs(loop, model, strategy, task, train_split, val_split, cfg, progress, log, penalties)
    return _finish(loop, model)


def _run_epochs(loop: _Loop, model, strategy, task, train_split: Split, val_split: Split | None, cfg: TrainConfig,
                progress: bool, log, penalties) -> None:
    """Train, validate, checkpoint, epoch by epoch, until the last epoch or early stopping."""
    for epoch in range(loop.start_epoch, loop.epochs):
        record = _train_epoch(loop, model, strategy, task, train_split, cfg, epoch, progress, penalties)
        if val_split is not None and len(val_split.items):
            _validate(loop, model, task, val_split, record, epoch)
        loop.history.append(record)
        if progress and loop.rank == 0:
            shown = {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in record.items() if k != "seconds"}
            log(" ".join(f"{k}={v}" for k, v in shown.items()))
        _save(loop, model, epoch + 1, record["seconds"])
        release_freed_memory()  # once an epoch: lengths vary, and a fragmented heap creeps up
        loop.accelerator.wait_for_everyone()
        if cfg.patience and loop.bad_epochs >= cfg.patience:
            if loop.rank == 0:
                log(f"early stop: no validation gain for {cfg.patience} epochs")
            break
        if _past_time_limit(loop, cfg) and epoch + 1 < loop.epochs:
            loop.stopped_by_time = epoch + 1
            if loop.rank == 0:
                log(f"time limit: stopped after epoch {epoch + 1} of {loop.epochs} ({cfg.time_limit:g} s)")
            break


def _setup(model, strategy, train_split: Split, cfg: TrainConfig, run_dir, log, penalties, privacy=None) -> _Loop:
    """Accelerator, epochs, trainable parameters, optimiser and schedule, in the order that
    fixes the run's random draws."""
    from accelerate import Accelerator, DistributedDataParallelKwargs  # heavy: imported on first use

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
    lr, head_lr = strategy.learning_rates(cfg)

    # Every parameter that will train in some epoch enters the optimiser (and DDP) now.
    ever_trainable = set().union(*(strategy.trainable_names(model, e) for e in range(epochs)))
    if privacy is not None:  # embeddings and BatchNorm stay frozen (train/privacy.py says why)
        ever_trainable -= frozen_for_privacy(model)
    for n, p in model.named_parameters():
        p.requires_grad_(n in ever_trainable)
    checkpointing = cfg.activation_checkpointing
    if checkpointing is None and strategy.checkpoints_activations:  # only where memory needs it (memory.py)
        checkpointing, why = checkpointing_needed(model.backbone, cfg.batch_size, max(train_split.lengths, default=1))
        if checkpointing and rank == 0:
            log(why)
    if cfg.attention_dropout is not None:
        set_attention_dropout(model, cfg.attention_dropout)
    # (not under --privacy: Opacus' hooks would see the recomputed forward pass, not the first)
    if checkpointing and privacy is None and hasattr(model.backbone, "enable_activation_checkpointing"):
        model.backbone.enable_activation_checkpointing()
    model.to(device)
    groups = strategy.param_groups(model, lr, head_lr, cfg.weight_decay)
    if privacy is not None:  # only what trains: the DP optimiser wants a per-sample gradient of each
        groups = [g for g in ({**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups)
                  if g["params"]]
    aux = penalties.modules() if penalties else {}  # e.g. dann's domain classifier
    if aux:
        groups.append({"params": [p for m in aux.values() for p in m.parameters()], "lr": head_lr,
                       "lr_scale": head_lr / lr, "weight_decay": 0.0})
    optimizer = fused_adamw(groups)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(epochs * steps_per_epoch, cfg.warmup))
    ddp_model, optimizer = accelerator.prepare(model, optimizer)
    private = None
    if privacy is not None:
        private = PrivateTraining(PrivatePlan(privacy, len(train_split.items), cfg.batch_size, epochs), model, optimizer)
        ddp_model, optimizer, steps_per_epoch = private.module, private.optimizer, private.plan.steps_per_epoch
    return _Loop(accelerator, rank, world, device, epochs, steps_per_epoch, ever_trainable, ddp_model, optimizer,
                 scheduler, aux, lr, head_lr, RunFolder(run_dir).checkpoint, private=private)


def _resume(loop: _Loop, model, cfg: TrainConfig, run_dir, log) -> None:
    """Continue after the last checkpoint (if any); a killed write's temporary goes."""
    if loop.rank == 0:
        remove_stale_temporaries(run_dir)
    if not loop.ckpt_path.exists():
        return
    fresh = [(g["initial_lr"], g["weight_decay"]) for g in loop.optimizer.param_groups]
    (loop.start_epoch, loop.history, loop.best, loop.bad_epochs,
     loop.earlier_seconds, privacy) = _restore(loop.ckpt_path, model, loop.optimizer, loop.scheduler, loop.aux)
    if loop.private is not None:  # the accountant goes on from the steps already taken
        loop.private.plan.history = [tuple(h) for h in privacy or []]
    restored = [(g["initial_lr"], g["weight_decay"]) for g in loop.optimizer.param_groups]
    if fresh != restored:  # `--resume --set train.lr=...`: the new rates from here on
        retune(loop.optimizer, loop.scheduler, fresh)
        if loop.rank == 0:
            log(f"continuing with lr {loop.lr:g}, head lr {loop.head_lr:g}, weight decay {cfg.weight_decay:g}")
    if loop.rank == 0:
        log(f"resumed from {loop.ckpt_path} after epoch {loop.start_epoch}")


def _train_epoch(loop: _Loop, model, strategy, task, train_split: Split, cfg: TrainConfig, epoch: int,
                 progress: bool, penalties) -> dict:
    """One pass over the training batches; returns the epoch's record (losses, lr, time)."""
    strategy.apply(model, epoch)
    model.train()
    for m in strategy.frozen_modules(model, epoch):
        m.eval()  # frozen blocks: no dropout, so they act as a fixed feature map
    if loop.private is not None:
        for n, p in model.named_parameters():
            p.requires_grad_(n in loop.ever_trainable)
        batchnorm_eval(model)
        batches = loop.private.plan.batches(cfg.seed, epoch)  # Poisson sampling
    else:
        batches = epoch_batches(train_split.lengths, cfg.batch_size, cfg.seed, epoch)
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{loop.epochs}", leave=False, disable=not progress or loop.rank != 0)
    total_loss, seen, penalty_sums = 0.0, 0, {}
    for number, idx in enumerate(bar):
        idx = idx[loop.rank::loop.world] if loop.world > 1 else idx
        task_loss = _step(loop, model, task, train_split, idx, cfg, epoch, number, penalties, penalty_sums)
        total_loss += task_loss * len(idx)  # (a private run's empty batch adds nothing)
        seen += len(idx)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}")
        if _past_time_limit(loop, cfg):
            break  # an epoch may outlast the limit: validate what trained so far, then stop
    bar.close()
    return {"epoch": epoch + 1, "train_loss": total_loss / max(seen, 1),
            **{f"penalty_{k}": v / max(seen, 1) for k, v in penalty_sums.items()},
            "lr": loop.scheduler.get_last_lr()[0], "seconds": loop.seconds()}


def _past_time_limit(loop: _Loop, cfg: TrainConfig) -> bool:
    """train.time_limit passed (single process only: ranks whose clocks disagree would
    leave each other waiting in a collective)."""
    return bool(cfg.time_limit) and loop.world == 1 and loop.seconds() - loop.earlier_seconds >= cfg.time_limit


def _step(loop: _Loop, model, task, train_split: Split, idx, cfg: TrainConfig, epoch: int, number: int,
          penalties, penalty_sums: dict) -> float:
    """Forward, backward, clip, optimiser and schedule step for one batch; its task loss."""
    if loop.private is not None:
        return _private_step(loop, model, task, train_split, idx, epoch, number)
    batch, targets = device_batch(model, train_split, idx, loop.device)
    weights = train_split.loss_weights
    weights = weights[torch.as_tensor(idx)].to(loop.device) if weights is not None else None
    if penalties:  # single process (fit refuses more): the penalties read the features too
        features = model.features(batch)
        task_loss = task.loss(model.head(features), targets, weight=weights)
        extra, parts = penalties(model, Step(idx, features, epoch, number))
        loss = task_loss + extra
        for name, value in parts.items():
            penalty_sums[name] = penalty_sums.get(name, 0.0) + value * len(idx)
    else:
        loss = task_loss = task.loss(loop.ddp_model(batch), targets, weight=weights)
    _check_finite(loop, loss, f"epoch {epoch + 1}, step {number + 1} of {loop.steps_per_epoch}")
    loop.accelerator.backward(loss)
    if cfg.clip:
        loop.accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.clip)
        for m in loop.aux.values():
            torch.nn.utils.clip_grad_norm_(m.parameters(), cfg.clip)
    if penalties:
        penalties.before_step(loop.optimizer)  # decoupled pulls (l2sp-decoupled)
    loop.optimizer.step()
    loop.scheduler.step()
    loop.optimizer.zero_grad(set_to_none=True)
    return task_loss.item()


def _private_step(loop: _Loop, model, task, train_split: Split, idx, epoch: int, number: int) -> float:
    """DP-SGD's step: per-sample gradients, each clipped, the sum noised (train/privacy.py);
    an empty Poisson batch still takes its noisy step, as the accountant assumes."""
    task_loss = 0.0
    if len(idx):
        batch, targets = device_batch(model, train_split, idx, loop.device)
        loss = task.loss(loop.ddp_model(batch), targets)
        _check_finite(loop, loss, f"epoch {epoch + 1}, step {number + 1} of {loop.steps_per_epoch}")
        loss.backward()
        task_loss = loss.item()
    loop.private.step(empty=not len(idx))
    loop.scheduler.step()
    loop.optimizer.zero_grad(set_to_none=True)
    return task_loss


def _validate(loop: _Loop, model, task, val_split: Split, record: dict, epoch: int) -> None:
    """Validation metrics into `record`; keeps the best epoch's weights (early stopping)."""
    logits = predict_logits(model, val_split, device=loop.device)
    if not torch.isfinite(logits).all():
        raise NonFiniteLoss(_diverged("the validation outputs are not finite", f"the end of epoch {epoch + 1}", loop))
    metrics = task.metrics(logits, val_split.targets)
    val_loss = float(task.loss(logits, val_split.targets))
    record.update({f"val_{k}": v for k, v in metrics.items()}, val_loss=val_loss)
    sign = 1 if task.higher_is_better else -1
    score = (sign * metrics[task.primary_metric], -val_loss)
    if val_split.weights is not None:
        iw = importance_weighted(logits, val_split.targets, val_split.weights)
        record.update({f"val_iw_{k}": v for k, v in iw.items()})
        score = (iw["accuracy"], -iw["loss"])
    if loop.best["score"] is None or score > tuple(loop.best["score"]):
        loop.best = {"score": list(score), "epoch": epoch + 1, "state": _state_of(model, loop.ever_trainable)}
        loop.bad_epochs = 0
    else:
        loop.bad_epochs += 1


def _finish(loop: _Loop, model) -> dict:
    privacy = None
    if loop.private is not None:
        loop.private.close()
        privacy = loop.private.plan.record()
    if loop.best["state"] is not None:
        _copy_into(model, loop.best["state"])
    model.to("cpu")
    loop.accelerator.free_memory()
    return {"history": loop.history, "epochs": loop.epochs, "ever_trainable": sorted(loop.ever_trainable),
            "best_epoch": loop.best["epoch"] if loop.best["state"] is not None else len(loop.history),
            "earlier_seconds": loop.earlier_seconds, **({"privacy": privacy} if privacy else {}),
            **({"stopped_by_time_limit_after_epoch": loop.stopped_by_time} if loop.stopped_by_time else {})}


def _check_finite(loop: _Loop, loss: torch.Tensor, where: str) -> None:
    """Stop at the step whose loss is inf / NaN, before it reaches the weights. Under
    several processes every rank learns of any rank's bad loss, so all stop together."""
    bad = not bool(torch.isfinite(loss.detach()).all())
    if loop.world > 1:
        bad = bool(loop.accelerator.reduce(torch.tensor([float(bad)], device=loop.device), "sum").item())
    if bad:
        raise NonFiniteLoss(_diverged(f"the training loss is {float(loss.detach()):g}", where, loop))


def _save(loop: _Loop, model, epoch: int, seconds: float) -> None:
    """The epoch's checkpoint, unless the weights went non-finite (then the last good one stays)."""
    if any(not bool(torch.isfinite(p).all()) for n, p in model.named_parameters() if n in loop.ever_trainable):
        raise NonFiniteLoss(_diverged("the weights are not finite", f"the end of epoch {epoch}", loop))
    if loop.rank != 0:
        return
    try:
        _checkpoint(loop.ckpt_path, model, loop.ever_trainable, loop.optimizer, loop.scheduler, epoch, loop.history,
                    loop.best, loop.bad_epochs, loop.aux, seconds,
                    privacy=loop.private.plan.history if loop.private is not None else None)
    except WriteError as e:
        raise ExaptError(f"{e}; the run keeps its last complete checkpoint: free space, then continue with "
                         f"`exapt fit --resume {loop.ckpt_path.parent}`") from None


def importance_weighted(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> dict[str, float]:
    """Accuracy and cross-entropy with each row weighted by w = p_target(x) / p_source(x)."""
    w = weights.float() / weights.float().sum()
    loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    return {"accuracy": float((w * (logits.argmax(-1) == targets).float()).sum()), "loss": float((w * loss).sum())}


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
    return meta["epoch"], history, best, meta["bad_epochs"], seconds, meta.get("privacy_history")
