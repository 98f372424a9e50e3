"""`baseline-cnn`: a small 1-D CNN trained from scratch on one-hot letters (the `seqcnn`
backbone), the deep classical baseline for DNA and protein sequences. Whatever --model
says, it fits `seqcnn` (`seqcnn:F1,F2` with `filters=F1+F2`), every weight trained at
its own learning rate (1e-3: random weights need larger steps than pretrained ones).

    exapt compare splice --strategies baseline,baseline-cnn,lp-ft --model MODEL
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..registry import STRATEGIES
from .base import Strategy


@STRATEGIES.register("baseline-cnn")
@dataclass
class BaselineCNN(Strategy):
    filters: str = "64+64"
    summary = "1-D CNN over one-hot letters, trained from scratch (DNA / protein baseline)"
    default_lr = 1e-3
    uses_pretrained = False

    def __post_init__(self):
        if not re.fullmatch(r"[1-9]\d*(\+[1-9]\d*)*", self.filters.strip()):
            raise ValueError(f"filters must be whole numbers >= 1 joined by + (e.g. 64+64), got {self.filters!r}")

    def own_model(self) -> str:
        widths = self.filters.strip().replace("+", ",")
        return "seqcnn" if widths == "64,64" else f"seqcnn:{widths}"
