"""`ia3`: learned rescaling vectors on keys, values and the feed-forward output
(Liu et al. 2022), through Hugging Face PEFT. The fewest parameters of all; mergeable."""
from dataclasses import dataclass

from ..registry import STRATEGIES
from .new_modules import PeftStrategy, split_targets


@STRATEGIES.register("ia3")
@dataclass
class IA3(PeftStrategy):
    targets: str = ""
    feedforward: str = ""
    layer_decay: float = 1.0
    unfreeze_top: int = 0
    summary = "learned rescaling of keys, values, feed-forward (PEFT); mergeable"
    new_param_tags = ("ia3_",)
    mergeable = True
    default_lr = 3e-3

    def block_decay(self) -> float:
        return self.layer_decay

    def top_unfrozen(self) -> int:
        return self.unfreeze_top

    def peft_config(self, backbone):
        from peft import IA3Config, TaskType  # heavy: imported on first use

        return IA3Config(target_modules=split_targets(self.targets), feedforward_modules=split_targets(self.feedforward),
                         task_type=TaskType.FEATURE_EXTRACTION)
