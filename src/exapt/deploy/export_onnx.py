"""A run's model as one ONNX graph, and what onnxruntime does to it (int8, fusion).

The graph holds backbone and head and has two outputs: the head's logits and the pooled
backbone features under them (`serve`'s drift monitor reads those). It is written with
torch 2.13's default exporter (dynamo) from a batch of at least two examples: a dynamic
dimension whose example size is 0 or 1 would be fixed by the exporter. If that exporter
cannot trace a model, the TorchScript one is tried, and export.json says which wrote it.

int8 (export_int8.py) is onnxruntime's dynamic quantization of the matrix products
(weights int8 per output channel, activations quantised at run time) with the embedding
tables int8 per row. Without VNNI (AVX-512 VNNI or AVX-VNNI) the u8 x s8 multiply-add
saturates, so there weights use 7 bits (`reduce_range`), as onnxruntime's documentation
advises; the instruction set is read at export time, not assumed.
"""
from __future__ import annotations

import contextlib
import io
import logging
import platform
import warnings
from pathlib import Path

import torch
from torch import nn

from ..backbones import MLPBackbone
from ..errors import ExaptError

OPSET = 18
OUTPUTS = {"logits": "logits", "embedding": "features"}  # "embedding" clashes with a node name in the graph
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


class ArrayGraph(nn.Module):
    """What the graph computes for feature rows and images: x -> (logits, pooled features)."""
    kind = "array"

    def __init__(self, model, flatten: bool = False):
        super().__init__()
        self.model, self.flatten = model, flatten  # the mlp takes images flattened, as its prepare_inputs does

    def forward(self, x):
        features = self.model.backbone({"x": x.reshape(x.shape[0], -1) if self.flatten else x})
        return self.model.head(features), features


class TextGraph(nn.Module):
    """Token ids and mask -> (logits, pooled features)."""
    kind = "text"

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        features = self.model.backbone({"input_ids": input_ids, "attention_mask": attention_mask})
        return self.model.head(features), features


def graph_model(model, kind: str) -> nn.Module:
    if kind == "text":
        return TextGraph(model)
    return ArrayGraph(model, flatten=kind == "image" and isinstance(model.backbone, MLPBackbone))


def input_names(kind: str) -> list[str]:
    return ["input_ids", "attention_mask"] if kind == "text" else ["x"]


def example_inputs(backbone, kind: str, inputs) -> tuple[torch.Tensor, ...]:
    """A few examples (at least 2, of different lengths when text) in the graph's layout."""
    if kind == "text":
        items = backbone.prepare_inputs(list(inputs[:8]))
        batch = backbone.collate(items[:4] if len(items) >= 2 else items * 2)
        return batch["input_ids"], batch["attention_mask"]
    x = torch.as_tensor(inputs[:4] if len(inputs) >= 2 else list(inputs) * 2).float()
    return (x,)


def _dynamic(kind: str, dynamo: bool, max_length: int | None):
    if kind != "text":
        return {"x": {0: torch.export.Dim("batch")}} if dynamo else {"x": {0: "batch"}}
    if dynamo:  # the sequence is at most the tokenizer's truncation length (the position table bounds it)
        b, s = torch.export.Dim("batch"), torch.export.Dim("sequence", min=2, max=max_length)
        return {"input_ids": {0: b, 1: s}, "attention_mask": {0: b, 1: s}}
    return {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            **{name: {0: "batch"} for name in OUTPUTS.values()}}


def write_graph(graph: nn.Module, example: tuple, path: Path, max_length: int | None = None) -> dict:
    """Export to `path` (weights inline); the exporter's own chatter is kept off the terminal."""
    graph.eval()
    kind = graph.kind
    names = input_names(kind)
    errors = []
    for dynamo in (True, False):
        try:
            kwargs = ({"dynamic_shapes": _dynamic(kind, True, max_length), "external_data": False} if dynamo
                      else {"dynamic_axes": _dynamic(kind, False, max_length)})
            with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" etc.
                torch.onnx.export(graph, example, str(path), input_names=names, output_names=list(OUTPUTS.values()),
                                  opset_version=OPSET if dynamo else 17, dynamo=dynamo, **kwargs)
            return {"exporter": "dynamo" if dynamo else "torchscript", "opset": OPSET if dynamo else 17,
                    **({"dynamo_error": errors[0]} if errors else {})}
        except Exception as e:  # the exporters raise many types; the message says which step failed
            errors.append(f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}")
            for f in path.parent.glob(path.name + "*"):
                f.unlink()
    raise ExaptError(f"cannot export this model to ONNX ({errors[0]}; the TorchScript exporter: {errors[1]})")


@contextlib.contextmanager
def quiet_logging():
    """onnxruntime's quantiser and optimiser log warnings meant for their developers."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def cpu_instructions() -> dict:
    """What the CPU offers int8 kernels, read now (never assumed): /proc/cpuinfo's flags."""
    try:
        flags = set()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags |= set(line.split(":", 1)[1].split())
    except OSError:
        flags = None
    if not flags:
        return {"machine": platform.machine(), "vnni": None, "flags": None, "source": "unknown"}
    found = [f for f in ("avx2", "fma", "avx512f", "avx512bw", *VNNI_FLAGS) if f in flags]
    return {"machine": platform.machine(), "vnni": any(f in flags for f in VNNI_FLAGS), "flags": found,
            "source": "/proc/cpuinfo"}


def optimize_graph(src: Path, dst: Path, backbone) -> dict:
    """onnxruntime's transformer optimiser (fused attention, LayerNorm, GELU) for BERT-like
    text encoders; other models keep their graph (onnxruntime optimises at load anyway)."""
    config = getattr(getattr(backbone, "model", None), "config", None)
    if config is None or not hasattr(config, "num_attention_heads"):
        return {"applied": False, "why": "not a transformer encoder: onnxruntime optimises it when it loads"}
    from onnxruntime.transformers.optimizer import (
        optimize_model,  # heavy: imported on first use
    )

    with quiet_logging(), contextlib.redirect_stdout(io.StringIO()):  # its warnings and prints are not the user's
        opt = optimize_model(str(src), model_type="bert", num_heads=int(config.num_attention_heads),
                             hidden_size=int(config.hidden_size), opt_level=1)
        opt.save_model_to_file(str(dst))
    fused = {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}
    return {"applied": True, "optimizer": "onnxruntime.transformers (bert)", "fused": fused}
