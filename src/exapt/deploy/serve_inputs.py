"""A request's inputs, checked and decoded as the CLI checks a data file: texts, feature
rows (lists or objects keyed by feature name), images as base64 PNG/JPEG. Errors are
ExaptErrors in the CLI's wording, which the server answers with 422.
"""
from __future__ import annotations

import base64
import binascii
import io

import numpy as np
import pandas as pd

from ..data.columns import select_columns
from ..data.images import as_images
from ..errors import ExaptError

SOURCE = "request"  # how a request's inputs are named in error messages ("request: row 2, ...")


def text_inputs(inputs: list) -> list[str]:
    for i, v in enumerate(inputs, start=1):
        if not isinstance(v, str):  # a number would pass as its decimal text: the caller meant something else
            raise ExaptError(f"{SOURCE}: row {i}, column 'text': expected text, got a {_json_type(v)}")
    return select_columns(pd.DataFrame({"text": inputs}), source=SOURCE, text="text", label=None,
                          require_label=False).inputs


def feature_inputs(inputs: list, names: list[str]) -> np.ndarray:
    rows = []
    for i, v in enumerate(inputs, start=1):
        if isinstance(v, dict):
            unknown = sorted(set(v) - set(names))
            if unknown:
                raise ExaptError(f"{SOURCE}: row {i}: unknown feature {unknown[0]!r} (the run takes {', '.join(names[:10])})")
            v = [v.get(n) for n in names]
        if not isinstance(v, list):
            raise ExaptError(f"{SOURCE}: row {i}: expected a list of {len(names)} numbers, got a {_json_type(v)}")
        if len(v) != len(names):
            raise ExaptError(f"{SOURCE}: row {i} has {len(v)} values; the run takes {len(names)} features "
                             f"({', '.join(names[:10])}{', ...' if len(names) > 10 else ''})")
        if any(isinstance(x, (list, dict, bool)) for x in v):
            raise ExaptError(f"{SOURCE}: row {i}: features must be numbers")
        rows.append(v)
    df = pd.DataFrame(rows, columns=names, dtype=object)
    return select_columns(df, source=SOURCE, features=list(names), label=None, require_label=False).inputs


def image_inputs(inputs: list, shape: tuple[int, int, int] | None) -> np.ndarray:
    """Base64 PNG/JPEG strings -> float32 [N, C, H, W] in [0, 1], in the run's channels and size."""
    from PIL import Image  # heavy: imported on first use

    mode = "L" if shape is not None and shape[0] == 1 else "RGB"
    arrays = []
    for i, v in enumerate(inputs, start=1):
        if not isinstance(v, str) or not v.strip():
            raise ExaptError(f"{SOURCE}: row {i}: expected an image as a base64 PNG or JPEG string")
        try:
            raw = base64.b64decode(v.split(",", 1)[-1] if v.startswith("data:") else v, validate=True)
            with Image.open(io.BytesIO(raw)) as im:
                if im.format not in ("PNG", "JPEG"):
                    raise ValueError(f"{im.format} is not PNG or JPEG")
                im = im.convert(mode)
                if shape is not None and im.size != (shape[2], shape[1]):
                    im = im.resize((shape[2], shape[1]), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except (binascii.Error, ValueError, OSError, Image.DecompressionBombError) as e:
            raise ExaptError(f"{SOURCE}: row {i}: not a readable image ({str(e).splitlines()[0][:120]})") from None
        arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    sizes = {a.shape for a in arrays}
    if len(sizes) > 1:
        raise ExaptError(f"{SOURCE}: images differ in size ({', '.join(str(s[1:]) for s in sorted(sizes))}); "
                         "send images of one size")
    return as_images(np.stack(arrays), SOURCE, "inputs")


def _json_type(v) -> str:
    return {dict: "JSON object", list: "list", type(None): "null", bool: "boolean", int: "number",
            float: "number", str: "string"}.get(type(v), type(v).__name__)
