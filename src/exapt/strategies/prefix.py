"""`prefix`: prefix tuning (Li & Liang 2021) through Hugging Face PEFT: trainable key/value
prefixes at every attention layer; the encoder stays frozen."""
from dataclasses import dataclass

from ..registry import STRATEGIES
from .new_modules import VirtualTokenStrategy


@STRATEGIES.register("prefix")
@dataclass
class PrefixTuning(VirtualTokenStrategy):
    summary = "prefix tuning: trainable key/value prefixes in every layer (PEFT)"
    peft_config_name = "PrefixTuningConfig"
