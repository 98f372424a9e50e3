"""`train.attention_dropout`: the dropout on attention probabilities, set for training.

In training, a BERT layer hands its attention dropout to PyTorch's scaled-dot-product
attention; with dropout above 0 no fused CPU kernel applies, so PyTorch takes the math
path: it materialises the batch x heads x length x length probabilities, draws a dropout
mask over them and keeps both for the backward pass. At 256 tokens that path and its
masks were about half of a MiniLM-L6 step (docs/speed.md); with dropout 0 the fused
kernel runs and `full` trained 1.54x the examples per second (benchmarks/speed.py). The
mask is a regulariser, so results change (benchmarks/lever_accuracy.py measures by how much).
"""
from __future__ import annotations

from torch import nn

from ..errors import ExaptError


def set_attention_dropout(model: nn.Module, p: float) -> int:
    """Set every self-attention block's dropout probability to `p`; the number set.
    BERT-style blocks (`...attention.self`) read it from their `dropout` at each call."""
    blocks = [m for name, m in model.named_modules()
              if name.endswith("attention.self") and isinstance(getattr(m, "dropout", None), nn.Dropout)]
    if not blocks:
        raise ExaptError("--set train.attention_dropout: this model has no BERT-style self-attention "
                         "whose dropout exapt can set")
    for m in blocks:
        m.dropout.p = float(p)
    return len(blocks)
