"""`lora`: low-rank updates W + (alpha/r) B A on the target linear layers (Hu et al. 2021),
through Hugging Face PEFT. Default targets are PEFT's for the model family (BERT:
query, value); `targets=query+key+value+dense` widens them. On an image backbone that
names its `peft_targets` (efficientnet-lite0: the 1x1 convolutions) the updates are
low-rank 1x1 convolutions there. Mergeable: `exapt merge`."""
from dataclasses import dataclass
from typing import ClassVar

from ..registry import STRATEGIES
from .new_modules import PeftStrategy, split_targets


@STRATEGIES.register("lora")
@dataclass
class LoRA(PeftStrategy):
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    targets: str = ""
    layer_decay: float = 1.0
    unfreeze_top: int = 0
    summary = "low-rank adapters on attention (PEFT); base frozen, mergeable"
    new_param_tags = ("lora_",)
    mergeable = True
    on_convolutions: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        if self.r < 1:
            raise ValueError("r must be >= 1")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")

    def block_decay(self) -> float:
        return self.layer_decay

    def top_unfrozen(self) -> int:
        return self.unfreeze_top

    def peft_config(self, backbone):
        from peft import LoraConfig, TaskType  # heavy: imported on first use

        targets = split_targets(self.targets) or list(getattr(backbone, "peft_targets", ())) or None
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=targets, task_type=TaskType.FEATURE_EXTRACTION)
