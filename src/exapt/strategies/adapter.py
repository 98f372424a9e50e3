"""`adapter`: bottleneck adapters after the attention and feed-forward sublayers of every
layer (Houlsby et al. 2019): h <- h + W_up GELU(W_down h), with W_up starting at zero so
training starts exactly from the pretrained function.

Written here because Hugging Face PEFT has no bottleneck adapter (its LoRA, IA3, LoHa,
OFT... change weights, not the residual stream), and the `adapters` package would
replace the model classes we load. The adapter wraps each sublayer's output projection
(`attention.output.dense`, `output.dense`: BERT, RoBERTa, ELECTRA and kin).
"""
from dataclasses import dataclass

from torch import nn

from ..errors import ExaptError
from ..registry import STRATEGIES
from .new_modules import NewModuleStrategy


class Bottleneck(nn.Module):
    def __init__(self, dim: int, size: int):
        super().__init__()
        self.down = nn.Linear(dim, size)
        self.up = nn.Linear(size, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h):
        return h + self.up(nn.functional.gelu(self.down(h)))


class WithAdapter(nn.Module):
    """A frozen projection followed by a trainable bottleneck."""

    def __init__(self, base: nn.Linear, size: int):
        super().__init__()
        self.base = base
        self.adapter = Bottleneck(base.out_features, size)

    def forward(self, x):
        return self.adapter(self.base(x))


@STRATEGIES.register("adapter")
@dataclass
class BottleneckAdapter(NewModuleStrategy):
    size: int = 64
    layer_decay: float = 1.0
    unfreeze_top: int = 0
    summary = "bottleneck adapters after attention and feed-forward (Houlsby)"
    new_param_tags = (".adapter.",)
    plain_encoder = False  # bottlenecks are modules of their own inside each layer

    def __post_init__(self):
        super().__post_init__()
        if self.size < 1:
            raise ValueError("size must be >= 1")

    def block_decay(self) -> float:
        return self.layer_decay

    def top_unfrozen(self) -> int:
        return self.unfreeze_top

    def inject(self, model: nn.Module) -> None:
        bb = self.checked_backbone(model)
        for layer in bb.layers:
            attn_out = getattr(getattr(layer, "attention", None), "output", None)
            ffn_out = getattr(layer, "output", None)
            if not (isinstance(getattr(attn_out, "dense", None), nn.Linear) and isinstance(getattr(ffn_out, "dense", None), nn.Linear)):
                raise ExaptError(f"--strategy adapter: {type(layer).__name__} is not a BERT-style layer "
                                 "(no attention.output.dense / output.dense); try lora")
            attn_out.dense = WithAdapter(attn_out.dense, self.size)
            ffn_out.dense = WithAdapter(ffn_out.dense, self.size)
