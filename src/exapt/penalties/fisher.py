"""The diagonal Fisher information of the source task, for `ewc`.

    F_i = 1/N * sum_n E_{y ~ p(y | x_n)} [ (d log p(y | x_n) / d theta_i)^2 ]

- A labelled classification source (`--init RUN`): N source training examples, the
  expectation over y taken exactly (one backward pass per class) under the source
  head's own predictions, as Kirkpatrick et al. define it. Other source tasks
  (multi-label, regression) use the observed labels (the "empirical" Fisher).
- A self-supervised source (`--source-corpus` with a masked-LM model): N corpus windows,
  15% of tokens masked (fixed seed), y the masked tokens as written (empirical Fisher:
  an exact expectation over a 30k-token vocabulary would cost 30k backward passes).

One example per backward pass: the squares must be of per-example gradients, not of a
batch mean. The model is in eval mode (no dropout): the Fisher of the start model as it
is. The result is keyed by a hash of the start weights, the source and N; it is saved in
the run folder and in the cache (`$EXAPT_CACHE/fisher/`), so a resumed run or another
fit from the same start reads it back instead of recomputing it.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
from tqdm.auto import tqdm

from ..files import atomic_save_tensors, load_tensors
from ..masked_lm.masking import mask_tokens
from ..masked_lm.objective import mlm_loss
from ..run_folder import RunFolder
from ..train.features import cache_root

MASK_SEED = 4321


def load_or_estimate(ctx, names: list[str], samples: int) -> dict[str, torch.Tensor]:
    key = fisher_key(ctx, names, samples)
    run_file = RunFolder(ctx.run_dir).fisher
    cached = cache_root() / "fisher" / f"{key}.safetensors"
    for path in (run_file, cached):
        fisher = _read(path, key, names)
        if fisher is not None:
            ctx.log(f"ewc: Fisher information read from {path}")
            if path != run_file:
                _write(run_file, fisher, key, ctx)
            return fisher
    fisher = estimate(ctx, names, samples)
    _write(run_file, fisher, key, ctx)
    _write(cached, fisher, key, ctx)
    return fisher


def fisher_key(ctx, names: list[str], samples: int) -> str:
    """Start weights (and source head) + which source + how many samples -> a hash."""
    h = hashlib.sha256()
    params = dict(ctx.model.named_parameters())
    for n in list(names) + list(ctx.model.source_head_parameter_names()):
        h.update(n.encode())
        h.update(params[n].detach().contiguous().cpu().numpy().tobytes())
    if ctx.source is not None:
        rows = ctx.source.train.rows[_rows(ctx.source, samples)]
        src = {"kind": "labelled", "data": ctx.source.name, "rows": np.asarray(rows).tolist()}
    else:
        windows = ctx.mlm.train.ids[:samples]  # the token ids themselves: a tokenizer change is a new key
        src = {"kind": "mlm", "corpus": ctx.mlm.corpus, "ids": hashlib.sha256(windows.tobytes()).hexdigest()}
    h.update(json.dumps({"source": src, "samples": samples, "max_length": ctx.cfg.max_length},
                        sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


def estimate(ctx, names: list[str], samples: int) -> dict[str, torch.Tensor]:
    model = ctx.model
    params = dict(model.named_parameters())
    chosen = [params[n] for n in names]
    flags = [p.requires_grad for p in chosen]
    was = model.training
    model.eval()
    for p in chosen:
        p.requires_grad_(True)
    total = [torch.zeros_like(p) for p in chosen]
    try:
        if ctx.source is not None:
            n = _labelled(model, ctx.source, chosen, total, samples, ctx.progress)
        else:
            n = _masked_lm(model, ctx.mlm, chosen, total, samples, ctx.progress)
    finally:
        for p, f in zip(chosen, flags):
            p.requires_grad_(f)
        model.train(was)
    return {name: t / max(n, 1) for name, t in zip(names, total)}


def _accumulate(total, grads, scale=1.0) -> None:
    for t, g in zip(total, grads):
        if g is not None:
            t.add_(g.detach() ** 2, alpha=scale)


def _rows(source, samples: int) -> np.ndarray:
    """A fixed random sample of the source training examples (they may be sorted by class)."""
    n = len(source.train)
    return np.sort(np.random.default_rng(0).permutation(n)[:samples])


def _labelled(model, source, params, total, samples: int, progress: bool) -> int:
    bb = model.backbone
    rows = _rows(source, samples)
    items = bb.prepare_inputs([source.train.inputs[i] for i in rows])
    targets = source.train_targets
    classification = source.task.kind == "classification"
    for i in tqdm(range(len(items)), desc="ewc: Fisher", unit="ex", leave=False, disable=not progress):
        logits = model.source_head(bb(bb.collate([items[i]])))
        if classification:
            logp = torch.log_softmax(logits, -1)[0]
            probs = logp.detach().exp()
            for y in range(len(logp)):
                grads = torch.autograd.grad(logp[y], params, retain_graph=y < len(logp) - 1, allow_unused=True)
                _accumulate(total, grads, float(probs[y]))
        else:  # empirical Fisher: the observed label's loss
            loss = source.task.loss(logits, targets[rows[i]:rows[i] + 1])
            _accumulate(total, torch.autograd.grad(loss, params, allow_unused=True))
    return len(items)


def _masked_lm(model, mlm, params, total, samples: int, progress: bool) -> int:
    head = mlm.with_head(model)
    gen = torch.Generator().manual_seed(MASK_SEED)
    n = min(samples, len(mlm.train))
    used = 0
    for i in tqdm(range(n), desc="ewc: Fisher (masked LM)", unit="win", leave=False, disable=not progress):
        ids = torch.from_numpy(mlm.train.ids[i:i + 1, :int(mlm.train.lengths[i])].astype(np.int64))
        inputs, labels = mask_tokens(ids, torch.isin(ids, mlm.tok_ids["special"]), mask_id=mlm.tok_ids["mask"],
                                     normal_ids=mlm.tok_ids["normal"], span=mlm.span, generator=gen)
        loss, _, k = mlm_loss(head, inputs, labels, None)
        if loss is None:
            continue
        _accumulate(total, torch.autograd.grad(loss, params, allow_unused=True))
        used += 1
    return used


def _read(path, key: str, names: list[str]) -> dict[str, torch.Tensor] | None:
    if not path.exists():
        return None
    try:
        tensors, meta = load_tensors(path)
    except Exception:  # a damaged cache file is recomputed, never trusted
        return None
    if meta.get("key") != key or not set(names) <= set(tensors):
        return None
    return {n: tensors[n] for n in names}


def _write(path, fisher: dict, key: str, ctx) -> None:
    src = ctx.source.name if ctx.source is not None else ctx.mlm.corpus
    atomic_save_tensors(fisher, path, {"key": key, "source": src})
