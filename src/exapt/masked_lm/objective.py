"""The masked-LM forward, batching of pre-tokenized windows, and the held-out evaluation
that `exapt pretrain` (and the MLM source check) share."""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from .masking import IGNORE, mask_tokens

EVAL_MASK_SEED = 1234  # the held-out slice is masked the same way at every evaluation
PREDICT_BUCKET = 256


def mlm_loss(model, inputs: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None):
    """(loss, number correct, number predicted). BERT models run their prediction head
    only on the masked positions; others fall back to the full forward."""
    predicted = labels != IGNORE
    n = int(predicted.sum())
    if n == 0:
        return None, 0, 0
    flat_labels = labels.reshape(-1)
    # The positions to predict, padded up to a multiple of PREDICT_BUCKET with ignored
    # ones: their count changes every batch, and a new matrix shape each step made
    # the CPU kernels re-plan and the allocator fragment (steps 4x slower, RSS 3 GB).
    where = predicted.reshape(-1).nonzero().squeeze(1)
    extra = -n % PREDICT_BUCKET
    if extra:
        where = torch.cat([where, torch.zeros(extra, dtype=where.dtype, device=where.device)])
        target = torch.cat([flat_labels[where[:n]],
                            torch.full((extra,), IGNORE, dtype=labels.dtype, device=labels.device)])
    else:
        target = flat_labels[where]
    with autocast(inputs.device):
        if hasattr(model, "bert") and hasattr(model, "cls"):
            hidden = model.bert(input_ids=inputs, attention_mask=attention_mask).last_hidden_state
            logits = model.cls(hidden.reshape(-1, hidden.shape[-1])[where])
        else:
            logits = model(input_ids=inputs, attention_mask=attention_mask).logits
            logits = logits.reshape(-1, logits.shape[-1])[where]
    loss = F.cross_entropy(logits.float(), target, ignore_index=IGNORE)
    correct = int((logits[:n].argmax(-1) == target[:n]).sum())
    return loss, correct, n


def training_device() -> torch.device:
    """A GPU when torch sees one (as `exapt fit` does through Accelerate), else the CPU.
    CUDA_VISIBLE_DEVICES="" keeps a run on the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device):
    """bf16 autocast on a GPU (the loss is taken in fp32 either way); nothing on the CPU,
    where bf16 matrix products are slower than fp32 on most processors."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(device: torch.device, *tensors):
    return tuple(None if t is None else t.to(device, non_blocking=True) for t in tensors)


class Batcher:
    """Turns window rows into (input_ids, attention_mask or None) trimmed to the batch's longest."""

    def __init__(self, windows, pad_id: int):
        self.ids = torch.from_numpy(windows.ids.astype(np.int64))
        self.lengths = torch.from_numpy(windows.lengths.astype(np.int64))
        self.pad_id = pad_id

    def __call__(self, rows):
        lengths = self.lengths[rows]
        width = int(lengths.max())
        ids = self.ids[rows, :width]
        if bool((lengths == width).all()):
            return ids, None  # no padding: let attention skip the mask
        mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
        return ids, mask


def special_mask(ids: torch.Tensor, special_ids: torch.Tensor) -> torch.Tensor:
    return torch.isin(ids, special_ids)


@torch.no_grad()
def evaluate(model, windows, pad_id: int, tokenizer_ids: dict, *, batch_size: int = 64, probability: float = 0.15,
             span: int = 1, limit: int = 1024) -> dict:
    """Masked-LM loss and accuracy on the held-out windows, masked the same way every time."""
    model.eval()
    device = next(model.parameters()).device
    batcher = Batcher(windows, pad_id)
    gen = torch.Generator().manual_seed(EVAL_MASK_SEED)
    total_loss, correct, count = 0.0, 0, 0
    n = min(len(windows), limit)
    for start in range(0, n, batch_size):
        rows = torch.arange(start, min(n, start + batch_size))
        ids, mask = batcher(rows)
        inputs, labels = mask_tokens(ids, special_mask(ids, tokenizer_ids["special"]), mask_id=tokenizer_ids["mask"],
                                     normal_ids=tokenizer_ids["normal"], probability=probability, span=span,
                                     generator=gen)
        inputs, labels, mask = to_device(device, inputs, labels, mask)
        loss, c, k = mlm_loss(model, inputs, labels, mask)
        if loss is not None:
            total_loss += float(loss) * k
            correct += c
            count += k
    model.train()
    if count == 0:
        return {"loss": float("nan"), "accuracy": float("nan"), "perplexity": float("nan"), "predicted": 0}
    loss = total_loss / count
    return {"loss": loss, "accuracy": correct / count, "perplexity": math.exp(min(loss, 50)), "predicted": count}
