"""Frozen-encoder features, cached on disk per example.

The cache lives in `$EXAPT_CACHE/features/<model key>/` (default ~/.cache/exapt); the key
hashes the backbone's identity (weights sha256, pooling, max length), and each example is
keyed by a hash of its text. So a probe over any subset, size or seed of a data set
encodes each text once, ever; a probe repeated on the same data encodes nothing.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import uuid
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..files import atomic_save_tensors, load_tensors
from .batches import eval_batches


def cache_root() -> Path:
    return Path(os.environ.get("EXAPT_CACHE", Path.home() / ".cache" / "exapt"))


def _model_key(backbone) -> str:
    ident = {k: v for k, v in backbone.identity().items() if k != "path"}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def item_key(item) -> bytes:
    data = item.encode("utf-8") if isinstance(item, str) else np.asarray(item, dtype=np.float32).tobytes()
    return hashlib.sha1(data).digest()


@torch.no_grad()
def encode(backbone, prepared: list, batch_size: int = 64, desc: str = "encoding", progress: bool = True,
           device: str | torch.device = "cpu") -> torch.Tensor:
    """Features of prepared items, in order, with the backbone in eval mode."""
    was_training = backbone.training
    backbone.eval()
    lengths = [backbone.item_length(x) for x in prepared]
    out = torch.empty(len(prepared), backbone.feature_dim)
    bar = tqdm(total=len(prepared), desc=desc, unit="ex", disable=not progress, leave=False)
    for idx in eval_batches(lengths, batch_size):
        batch = {k: v.to(device) for k, v in backbone.collate([prepared[i] for i in idx]).items()}
        out[torch.as_tensor(idx)] = backbone(batch).float().cpu()
        bar.update(len(idx))
    bar.close()
    backbone.train(was_training)
    return out


class FeatureCache:
    def __init__(self, backbone, root: Path | None = None):
        self.backbone = backbone
        self.dir = (root or cache_root()) / "features" / _model_key(backbone)
        self.hits = self.misses = 0

    def _load(self) -> dict[bytes, torch.Tensor]:
        table: dict[bytes, torch.Tensor] = {}
        for shard in sorted(self.dir.glob("shard-*.safetensors")):
            try:
                tensors, _ = load_tensors(shard)
            except Exception:  # a damaged shard is ignored, never fatal
                continue
            keys = tensors["keys"].numpy()
            for i in range(len(keys)):
                table[keys[i].tobytes()] = tensors["features"][i]
        return table

    @contextlib.contextmanager
    def _locked(self):
        """Processes sharing this cache folder (Ray workers of one node, or of every node when
        $EXAPT_CACHE is on a shared disk) take turns: the second finds what the first encoded,
        so each text is encoded once per cache folder, not once per worker."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def features(self, raw_inputs, prepared: list, batch_size: int = 64, progress: bool = True) -> torch.Tensor:
        with self._locked():
            return self._features(raw_inputs, prepared, batch_size, progress)

    def _features(self, raw_inputs, prepared: list, batch_size: int, progress: bool) -> torch.Tensor:
        keys = [item_key(x) for x in raw_inputs]
        table = self._load() if self.dir.exists() else {}
        missing = [i for i, k in enumerate(keys) if k not in table]
        todo = list(dict.fromkeys(keys[i] for i in missing))  # unique keys, in order
        self.hits, self.misses = len(keys) - len(missing), len(todo)
        if todo:
            first = {}
            for i in missing:
                first.setdefault(keys[i], i)
            new = encode(self.backbone, [prepared[first[k]] for k in todo], batch_size, progress=progress)
            key_tensor = torch.tensor(np.frombuffer(b"".join(todo), dtype=np.uint8).reshape(len(todo), -1))
            atomic_save_tensors({"keys": key_tensor, "features": new},
                                self.dir / f"shard-{uuid.uuid4().hex}.safetensors",
                                {"identity": self.backbone.identity()})
            for k, f in zip(todo, new):
                table[k] = f
        return torch.stack([table[k] for k in keys]) if keys else torch.empty(0, self.backbone.feature_dim)
