"""`prompt`: soft prompt tuning (Lester et al. 2021) through Hugging Face PEFT: trainable
virtual-token embeddings are prepended to every input; the encoder stays frozen.
Pooling ignores the virtual positions."""
from dataclasses import dataclass

from ..registry import STRATEGIES
from .new_modules import PeftStrategy, check_positions


@STRATEGIES.register("prompt")
@dataclass
class PromptTuning(PeftStrategy):
    tokens: int = 20
    name = "prompt"
    summary = "soft prompt tuning: trainable virtual tokens before the input (PEFT)"
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
        from peft import PromptTuningConfig, TaskType

        return PromptTuningConfig(num_virtual_tokens=self.tokens, task_type=TaskType.FEATURE_EXTRACTION)
