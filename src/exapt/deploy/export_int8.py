"""exapt's int8 recipe for an exported graph, and the alternatives measured against it.

onnxruntime's dynamic quantization handles a Gather of an embedding table as an
*activation*: the whole table gets one uint8 scale and zero point, although the rows of a
word-embedding table (MiniLM: 30,522 x 384, half the model's weights) differ in norm.
onnxruntime has no per-row int8 Gather (its block-wise GatherBlockQuantized takes 4 bits
only), so the recipe `rowwise` writes the table as int8 with one scale per row by hand, as
three plain ONNX ops any runtime runs:

    Gather(table_int8, ids) -> Cast(float) -> Mul(Gather(row_scale, ids))

Recipes (export.json's quantize.recipe names the one used):

- `dynamic` (the default): onnxruntime's quantize_dynamic, int8 weights per output
  channel, its default op types (tables per tensor).
- `rowwise`: tables int8 per row as above, MatMuls dynamic int8 per channel.
- `gather4`: tables 4-bit in blocks of 32 (onnxruntime's GatherBlockQuantized), MatMuls
  dynamic int8.

On MiniLM-L6 tweet runs (docs/ship.md, "int8: what was tried") no recipe reached 99%
label agreement: the flips come from the matrix products' run-time activation
quantisation across the encoder, not from the table, so `dynamic` stays the default and
the gate keeps refusing such runs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .export_onnx import quiet_logging

RECIPES = ("rowwise", "dynamic", "gather4")
DEFAULT_RECIPE = "dynamic"
MIN_TABLE_ROWS = 64   # smaller tables (token types) stay fp32: their bytes do not matter


def embedding_gathers(graph) -> list:
    """Gather nodes that look rows up in a float 2-D initializer along axis 0."""
    import onnx  # heavy: imported on first use

    inits = {i.name: i for i in graph.initializer}
    found = []
    for node in graph.node:
        if node.op_type != "Gather" or node.input[0] not in inits:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        table = inits[node.input[0]]
        if axis == 0 and len(table.dims) == 2 and table.dims[0] >= MIN_TABLE_ROWS \
                and table.data_type == onnx.TensorProto.FLOAT:
            found.append(node)
    return found


def quantize_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row: q = round(w / s), s = max|w_row| / 127 (an all-zero row: s = 1)."""
    scale = np.abs(table).max(axis=1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(table / scale), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def rowwise_tables(model) -> list[str]:
    """Rewrite every embedding Gather of `model` (an onnx ModelProto, in place) as an int8
    table with a per-row scale; returns the tables rewritten."""
    from onnx import helper, numpy_helper  # heavy: imported on first use

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    users = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    done, new_nodes = [], []
    for node in embedding_gathers(graph):
        name = node.input[0]
        if users.get(name, 0) != 1:   # a table also read elsewhere (tied weights) stays fp32
            continue
        q, scale = quantize_rows(numpy_helper.to_array(inits[name]).astype(np.float32))
        graph.initializer.remove(inits[name])
        graph.initializer.extend([numpy_helper.from_array(q, name + "_int8"),
                                  numpy_helper.from_array(scale, name + "_row_scale")])
        out, ids = node.output[0], node.input[1]
        node.input[0], node.output[0] = name + "_int8", out + "_int8"
        new_nodes.append((node, [
            helper.make_node("Cast", [out + "_int8"], [out + "_float"], to=1, name=f"{node.name}_cast"),
            helper.make_node("Gather", [name + "_row_scale", ids], [out + "_scale"], axis=0, name=f"{node.name}_scale"),
            helper.make_node("Mul", [out + "_float", out + "_scale"], [out], name=f"{node.name}_dequant")]))
        done.append(name)
    for node, extra in new_nodes:   # right after their Gather: the node list stays topologically sorted
        at = list(graph.node).index(node) + 1
        for k, n in enumerate(extra):
            graph.node.insert(at + k, n)
    return done


def gather4_tables(src: Path, dst: Path) -> None:
    import onnx  # heavy: imported on first use
    from onnxruntime.quantization.matmul_nbits_quantizer import (  # heavy: imported on first use
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    config = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, bits=4, op_types_to_quantize=("Gather",),
                                          quant_axes=(("Gather", 1),))
    q = MatMulNBitsQuantizer(onnx.load(str(src)), algo_config=config)
    q.process()
    q.model.save_model_to_file(str(dst))


def quantize_int8(src: Path, dst: Path, isa: dict, recipe: str = DEFAULT_RECIPE, exclude: list[str] | None = None) -> dict:
    """`src` (fp32 ONNX) -> `dst` int8 by `recipe`; reduce_range unless the CPU has VNNI."""
    import onnx  # heavy: imported on first use
    from onnxruntime.quantization import (  # heavy: imported on first use
        QuantType,
        quantize_dynamic,
    )

    settings = {"recipe": recipe, "method": "onnxruntime dynamic", "weight_type": "QInt8", "per_channel": True,
                "reduce_range": not isa.get("vnni")}
    work, ops = Path(str(dst) + ".tables"), None
    if recipe == "rowwise":
        model = onnx.load(str(src))
        settings["tables_int8_per_row"] = rowwise_tables(model)
        onnx.save(model, str(work))
        ops = ["MatMul"]
    elif recipe == "gather4":
        gather4_tables(src, work)
        settings["tables_4bit_blocks_of"] = 32
        ops = ["MatMul"]
    else:
        work = Path(src)
    if exclude:
        settings["kept_fp32"] = list(exclude)
    try:
        with quiet_logging():
            quantize_dynamic(str(work), str(dst), op_types_to_quantize=ops, weight_type=QuantType.QInt8,
                             per_channel=True, reduce_range=settings["reduce_range"], nodes_to_exclude=exclude)
    finally:
        if work != Path(src):
            work.unlink(missing_ok=True)
    return settings
