"""`linear-probe`: frozen encoder, features computed once (and cached on disk), a linear
head fitted to convergence with L-BFGS on an L2-regularised loss.

`C` has scikit-learn's meaning (inverse regularisation: loss*C + ||W||²/2), so
`linear-probe:1.0` fits the same model as `LogisticRegression(C=1.0)`.

`names=R` adds each class's name, as text, R times to the probe's training examples
(data/class_names.py): free examples where a sentence encoder puts that class.
"""
from dataclasses import dataclass

from ..data.class_names import class_name_table
from ..registry import STRATEGIES
from .base import Strategy, single_label_only


@STRATEGIES.register("linear-probe")
@dataclass
class LinearProbe(Strategy):
    C: float = 1.0
    names: int = 0
    summary = "frozen encoder + linear head fitted to convergence on cached features"
    trains_encoder = False

    def __post_init__(self):
        if self.C <= 0:
            raise ValueError("C must be > 0")
        if self.names < 0:
            raise ValueError("names must be >= 0 (copies of each class name added to the probe's examples)")

    def first_trainable(self, n_blocks, epoch):
        return n_blocks

    @property
    def probe_C(self) -> float:
        return self.C

    def check_task(self, kind, spec):
        if self.names:
            single_label_only(spec, kind, "names= needs")

    def extra_probe_examples(self, train, classes, spec):
        return class_name_table(train, classes, self.names, spec) if self.names else None
