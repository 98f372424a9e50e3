"""`prompt`: soft prompt tuning (Lester et al. 2021) through Hugging Face PEFT: trainable
virtual-token embeddings are prepended to every input; the encoder stays frozen.
Pooling ignores the virtual positions."""
from dataclasses import dataclass

from ..registry import STRATEGIES
from .new_modules import VirtualTokenStrategy


@STRATEGIES.register("prompt")
@dataclass
class PromptTuning(VirtualTokenStrategy):
    summary = "soft prompt tuning: trainable virtual tokens before the input (PEFT)"
    peft_config_name = "PromptTuningConfig"
