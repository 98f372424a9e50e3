"""The shared shape of parameter-efficient strategies: new modules train, the
pretrained weights stay frozen (optionally except the top blocks).

Learning rates: the new modules train at `lr` (default 1e-3: they start at or near
zero and need big steps) without weight decay, scaled by `layer_decay ** (blocks
above)` when layer-wise decay is asked for; pretrained blocks unfrozen with
`unfreeze_top` train at PRETRAINED_LR (5e-5, the `full` default) under the same
scaling; the head at the head lr. So these strategies compose with layer-wise
learning rates without a class of their own.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from ..errors import ExaptError, StrategyDoesNotFit
from .base import Strategy

PRETRAINED_LR = 5e-5


@dataclass
class NewModuleStrategy(Strategy):
    default_lr: ClassVar[float] = 1e-3
    new_param_tags: ClassVar[tuple[str, ...]] = ()  # substrings naming the new parameters
    # Few trainable weights: optimiser state is small, so stored activations dominate
    # memory; recomputing them is what makes these methods light.
    checkpoints_activations: ClassVar[bool] = True

    def __post_init__(self):
        if not 0 < self.block_decay() <= 1:
            raise ValueError("layer_decay must be in (0, 1]")
        if self.top_unfrozen() < 0:
            raise ValueError("unfreeze_top must be >= 0")

    def is_new(self, name: str) -> bool:
        return any(tag in name for tag in self.new_param_tags)

    def runs_on(self, backbone) -> bool:
        """The new modules go into Hugging Face transformer layers."""
        return hasattr(backbone, "tokenizer")

    def needs(self) -> str:
        return "a Hugging Face backbone"

    def check_backbone(self, backbone, spec: str, model: str) -> None:
        super().check_backbone(backbone, spec, model)
        if not self.runs_on(backbone):
            raise StrategyDoesNotFit(f"--strategy {self.name} needs {self.needs()} "
                                     f"(got {backbone.identity()['model']})")

    def checked_backbone(self, model: nn.Module):
        """The model's backbone, once check_backbone has passed it."""
        bb = model.backbone
        self.check_backbone(bb, self.spec(), bb.identity()["model"])
        return bb

    # The two options most subclasses offer as fields, `layer_decay` and `unfreeze_top`;
    # a subclass with the field returns it here (each keeps its own option order, and
    # prompt / prefix have neither).
    def block_decay(self) -> float:
        """The lr factor per block below the top (1: one lr for every block)."""
        return 1.0

    def top_unfrozen(self) -> int:
        """How many top pretrained blocks train in full beside the new modules."""
        return 0

    def unfrozen_blocks(self, n_blocks: int) -> int:
        return min(self.top_unfrozen(), n_blocks)

    def trainable_names(self, model: nn.Module, epoch: int) -> set[str]:
        blocks = self.block_names(model)
        top = {n for b in blocks[len(blocks) - self.unfrozen_blocks(len(blocks)):] for n in b}
        names = {n for n, _ in model.named_parameters() if self.is_new(n)}
        return names | top | set(model.head_parameter_names())

    def frozen_modules(self, model, epoch):
        return []  # the frozen weights sit inside the same modules as the new ones

    def cacheable_prefix(self, model) -> int:
        return 0

    def param_groups(self, model, lr, head_lr, weight_decay):
        params = dict(model.named_parameters())
        blocks = self.block_names(model)
        n = len(blocks)
        decay = self.block_decay()
        placed, groups = set(), []
        for i, names in enumerate(blocks):
            new = [params[x] for x in names if self.is_new(x)]
            old = [params[x] for x in names if not self.is_new(x)] if i >= n - self.unfrozen_blocks(n) else []
            scale = decay ** (n - 1 - i)
            if new:
                groups.append({"params": new, "lr": lr * scale, "lr_scale": scale, "weight_decay": 0.0})
            s = PRETRAINED_LR / lr * scale
            for ps, wd in (([p for p in old if p.ndim > 1], weight_decay), ([p for p in old if p.ndim <= 1], 0.0)):
                if ps:  # as in `full`: matrices decay, biases and LayerNorm weights do not
                    groups.append({"params": ps, "lr": lr * s, "lr_scale": s, "weight_decay": wd})
            placed |= set(names)
        rest = [p for x, p in params.items() if self.is_new(x) and x not in placed]  # e.g. prompt embeddings
        if rest:
            groups.append({"params": rest, "lr": lr, "lr_scale": 1.0, "weight_decay": 0.0})
        head = [params[x] for x in model.head_parameter_names()]
        groups.append({"params": head, "lr": head_lr, "lr_scale": head_lr / lr, "weight_decay": 0.0})
        return groups


@dataclass
class PeftStrategy(NewModuleStrategy):
    """A method Hugging Face PEFT implements: its config, injected with get_peft_model."""

    targets = ""  # module names, `query+value` ("": PEFT's default); a field where offered

    def peft_config(self, backbone):
        raise NotImplementedError

    on_convolutions: ClassVar[bool] = False  # also for a backbone naming its `peft_targets` (images)

    def runs_on(self, backbone) -> bool:
        return super().runs_on(backbone) or bool(self.on_convolutions and getattr(backbone, "peft_targets", None))

    def needs(self) -> str:
        return super().needs() + (" or an image backbone that names its LoRA targets (efficientnet-lite0)"
                                  if self.on_convolutions else "")

    def inject(self, model: nn.Module) -> None:
        from peft import get_peft_model  # heavy: imported on first use

        bb = self.checked_backbone(model)
        try:
            with warnings.catch_warnings():
                # PEFT still asks transformers for the deprecated `is_gradient_checkpointing`
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                bb.model = get_peft_model(bb.model, self.peft_config(bb))
        except ValueError as e:  # e.g. target modules that the model does not have
            raise ExaptError(f"--strategy {self.spec()}: {str(e).splitlines()[0][:300]}") from None
        self._check_targets(bb)

    def _check_targets(self, bb) -> None:
        """PEFT only complains when no target matches; a misspelt one among several must not pass silently."""
        wanted = split_targets(self.targets)
        if not wanted:
            return
        hit = list(getattr(bb.model.base_model, "targeted_module_names", []))
        missing = [t for t in wanted if not any(n == t or n.endswith("." + t) for n in hit)]
        if missing:
            raise ExaptError(f"--strategy {self.spec()}: no module of {bb.identity()['model']} is called "
                             f"{', '.join(map(repr, missing))}")

    def export(self, model: nn.Module, folder) -> None:
        """The adapter as PEFT saves it: `PeftModel.from_pretrained(base, folder)` loads it."""
        model.backbone.model.save_pretrained(str(folder))


def split_targets(targets: str) -> list[str] | None:
    """`query+value` -> ["query", "value"]; "" -> None (PEFT's default for the model family)."""
    out = [t.strip() for t in targets.split("+") if t.strip()]
    return out or None


@dataclass
class VirtualTokenStrategy(PeftStrategy):
    """Prompt and prefix tuning: `tokens` trainable virtual tokens, a PEFT prompt-learning config."""

    tokens: int = 20
    new_param_tags: ClassVar[tuple[str, ...]] = ("prompt_encoder",)

    @property
    def reserved_positions(self) -> int:
        return self.tokens
    default_lr: ClassVar[float] = 3e-3
    peft_config_name: ClassVar[str] = ""  # PromptTuningConfig / PrefixTuningConfig
    checkpoints_activations: ClassVar[bool] = False  # prefixes travel as cached keys/values
    plain_encoder: ClassVar[bool] = False  # virtual tokens sit outside the encoder's layers

    def __post_init__(self):
        super().__post_init__()
        if self.tokens < 1:
            raise ValueError("tokens must be >= 1")

    def inject(self, model: nn.Module) -> None:
        bb = self.checked_backbone(model)
        limit = getattr(bb.model.config, "max_position_embeddings", None)
        if limit and bb.max_length + self.tokens > limit:  # refused before any folder exists
            raise ExaptError(f"--strategy {self.spec()}: {self.tokens} virtual tokens + --max-length {bb.max_length} "
                             f"exceed the model's {limit} positions; use --max-length {limit - self.tokens} or fewer tokens")
        super().inject(model)

    def peft_config(self, backbone):
        import peft  # heavy: imported on first use

        return getattr(peft, self.peft_config_name)(num_virtual_tokens=self.tokens,
                                                    task_type=peft.TaskType.FEATURE_EXTRACTION)
