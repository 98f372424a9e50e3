"""`exapt prune RUN --heads FRACTION | --layers K`: structured pruning, so the model is
really smaller and faster on a CPU's dense kernels, then a short distillation from the
unpruned run to recover (distil.py).

Heads: the importance of head h is Michel, Levy & Neubig's (2019, "Are Sixteen Heads
Really Better than One?", eq. 2) expected sensitivity of the loss to a gate xi_h on the
head's output,

    I_h = E_x | dL(x) / d xi_h |   at xi = 1,

taken over the run's training rows with the task's own loss and labels (the absolute
value per batch, as the authors' code accumulates it), then normalised per layer by its
L2 norm (their default, which lets scores of different layers be ranked together). The
FRACTION of heads with the lowest scores go, every layer keeping at least one. Removing
a head slices it out of the query/key/value and output projections (backbones/shape.py).

Layers: the bottom K layers stay (the input side; the top ones go), as DistilBERT-style
students keep them.

Unstructured (magnitude) sparsity is not offered: zeros in a dense matrix cost the same
time on a CPU.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..backbones.hf import HFBackbone
from ..backbones.shape import (
    Shape,
    attention_parts,
    head_counts_of,
    keep_heads,
    keep_layers,
    shape_of,
    split_shape,
)
from ..data import fit_splits, load_table
from ..errors import ExaptError
from ..run import Run
from ..run_folder import RunFolder
from ..train.batches import eval_batches
from ..train.loop import Split, device_batch
from .distil import (
    DistilSettings,
    copy_of_teacher,
    default_out,
    distil_into,
    load_teacher,
    student_config,
)


def check_request(heads: float | None, layers: int | None) -> None:
    if (heads is None) == (layers is None):
        raise ExaptError("prune needs one of --heads FRACTION or --layers K")
    if heads is not None and not (0 < heads < 1):
        raise ExaptError(f"--heads {heads}: the fraction of heads to remove must be above 0 and below 1 "
                         "(0 removes none, 1 would remove every head)")
    if layers is not None and layers < 1:
        raise ExaptError(f"--layers {layers}: keep at least 1 layer")


def prunable_backbone(teacher: Run) -> HFBackbone:
    bb = teacher.model.backbone
    if not isinstance(bb, HFBackbone):
        raise ExaptError(f"{teacher.path}: prune works on transformer encoders; this run's model is "
                         f"{bb.identity().get('model')}")
    if bb.long is not None:
        raise ExaptError(f"{teacher.path}: a run with --long is not pruned (its windows are pooled per input)")
    return bb


def head_importance(model, backbone: HFBackbone, split: Split, task, batch_size: int = 32) -> torch.Tensor:
    """[layers, heads] scores I_h (module docstring), each layer's row L2-normalised."""
    counts = [head_counts_of(layer) for layer in backbone.layers]
    gates = [torch.ones(n, requires_grad=True) for n in counts]
    hooks = [attention_parts(layer)[0].register_forward_hook(gate_hook(gate)) for layer, gate in zip(backbone.layers, gates)]
    scores = [torch.zeros(n) for n in counts]
    was = model.training
    model.eval()  # no dropout: the sensitivity of the model as it predicts
    try:
        for idx in eval_batches(split.lengths, batch_size):
            batch, targets = device_batch(model, split, idx, "cpu")
            loss = task.loss(model(batch), targets)
            grads = torch.autograd.grad(loss, gates)
            for s, g in zip(scores, grads):
                s += g.abs() * len(idx)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
        model.zero_grad(set_to_none=True)
    width = max(counts)
    out = torch.full((len(counts), width), float("nan"))
    for i, s in enumerate(scores):
        s = s / len(split.items)
        out[i, :len(s)] = s / s.norm().clamp(min=1e-12)
    return out


def gate_hook(gate: torch.Tensor):
    """A forward hook multiplying each head's share of the attention output by its gate."""
    def hook(_module, _args, output):
        attn = output[0] if isinstance(output, tuple) else output
        shape = attn.shape
        gated = (attn.view(*shape[:-1], len(gate), -1) * gate.view(*([1] * (len(shape) - 1)), -1, 1)).view(shape)
        return (gated, *output[1:]) if isinstance(output, tuple) else gated
    return hook


def heads_to_keep(importance: torch.Tensor, fraction: float) -> list[list[int]]:
    """Per layer, the heads kept: the `fraction` of all heads with the lowest scores go
    (rounded to a whole head, at least one), never a layer's last head."""
    counts = [int((~torch.isnan(row)).sum()) for row in importance]
    total = sum(counts)
    n_remove = max(1, round(fraction * total))
    if n_remove > total - len(counts):
        raise ExaptError(f"--heads {fraction}: removes {n_remove} of {total} heads, but each of the {len(counts)} "
                         f"layers keeps one; at most {(total - len(counts)) / total:.2f} (or use --layers)")
    order = sorted(((float(importance[i, h]), i, h) for i, n in enumerate(counts) for h in range(n)))
    keep = [set(range(n)) for n in counts]
    removed = 0
    for _, i, h in order:
        if removed == n_remove:
            break
        if len(keep[i]) > 1:
            keep[i].discard(h)
            removed += 1
    return [sorted(k) for k in keep]


def prune(run_dir, heads: float | None = None, layers: int | None = None, settings: DistilSettings | None = None,
          out=None, overwrite: bool = False, progress: bool = True, log=print) -> Run:
    """Prune the run's encoder, recover by distillation from the unpruned run, save as a run."""
    check_request(heads, layers)
    settings = settings or DistilSettings(epochs=3)
    settings.check()
    teacher = load_teacher(run_dir)
    bb = prunable_backbone(teacher)
    n_layers = len(bb.layers)
    if layers is not None and layers >= n_layers:
        raise ExaptError(f"--layers {layers}: the run's encoder has {n_layers} layers; keep fewer (1..{n_layers - 1})")
    stem = split_shape(teacher.config.model)[0]
    out = Path(out) if out else default_out(teacher.path, f"prune-heads{heads:g}" if heads else f"prune-layers{layers}")
    RunFolder(out).check_new(overwrite)
    student = copy_of_teacher(teacher)
    if layers is not None:
        keep_layers(student.backbone, layers)
        record = {"method": "layers", "layers_kept": layers, "layers_before": n_layers}
    else:
        keep, importance = _choose_heads(teacher, bb, heads, log)
        for layer, kept in zip(student.backbone.layers, keep):
            keep_heads(layer, kept)
        record = {"method": "heads", "fraction": heads, "heads_kept": keep,
                  "importance": [[round(float(v), 6) for v in row if not math.isnan(v)] for row in importance]}
    shape = shape_of(student.backbone)
    full = bb.model.config.num_attention_heads
    spec = (shape if any(n != full for n in shape.heads) else Shape(shape.layers)).spec(stem)
    student.backbone.name = spec
    record.update(heads_before=sum(head_counts_of(layer) for layer in bb.layers), heads_after=sum(shape.heads))
    settings.record = {"prune": record}
    cfg = student_config(teacher, spec, settings, same_base=True)
    log(f"pruned {teacher.path}: {record['method']} -> {spec}; recovering by distillation from the unpruned run")
    return distil_into(teacher, cfg, student, settings, out, overwrite, progress, log)


def _choose_heads(teacher: Run, bb: HFBackbone, fraction: float, log) -> tuple[list[list[int]], torch.Tensor]:
    """Head importance on the run's training split (rebuilt from its config), then the pick."""
    cfg, task = teacher.config, teacher.task
    train_table = fit_splits(cfg.data, load_table(cfg.data), task.kind)[0]
    targets = task.encode(train_table.labels, train_table.rows, train_table.source)
    split = Split.prepare(bb, train_table.inputs, targets)
    importance = head_importance(teacher.model, bb, split, task)
    keep = heads_to_keep(importance, fraction)
    log(f"head importance (Michel et al. 2019) on {len(split.items)} training rows; kept per layer: "
        f"{[len(k) for k in keep]}")
    return keep, importance
