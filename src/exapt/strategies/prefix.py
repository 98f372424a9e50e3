"""`prefix`: prefix tuning (Li & Liang 2021) through Hugging Face PEFT: trainable key/value
prefixes at every attention layer; the encoder stays frozen."""
from dataclasses import dataclass

from ..registry import STRATEGIES
from .new_modules import PeftStrategy, check_positions


@STRATEGIES.register("prefix")
@dataclass
class PrefixTuning(PeftStrategy):
    tokens: int = 20
    name = "prefix"
    summary = "prefix tuning: trainable key/value prefixes in every layer (PEFT)"
    new_param_tags = ("prompt_encoder",)
    default_lr = 3e-3

    def __post_init__(self):
        super().__post_init__()
        if self.tokens < 1:
            raise ValueError("tokens must be >= 1")

    def inject(self, model):
        check_positions(self, model.backbone)
        super().inject(model)

    def peft_config(self, backbone):
        from peft import PrefixTuningConfig, TaskType

        return PrefixTuningConfig(num_virtual_tokens=self.tokens, task_type=TaskType.FEATURE_EXTRACTION)
