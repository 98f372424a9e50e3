"""Features for `exapt rank`: every layer of a source in one forward pass, cached on disk
per example, and plain (optionally truncated) copies of a source's encoder for
fine-tuning ``MODEL@K``.

The cache lives under ``$EXAPT_CACHE/rank/<source key>/``; the key hashes the model
folder's small files and weights (a run: its weights file), pooling, max length and
torch version, so a changed model never reuses stale features.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from ..backbones import family_of, load_backbone, pool, split_scratch
from ..backbones.hf import file_sha256, layer_list, weights_sha256
from ..errors import ExaptError
from ..files import atomic_save_tensors
from ..run import Run
from ..run_folder import RunFolder
from ..strategies import parse_strategy
from ..train.batches import eval_batches
from ..train.features import cache_root, item_key
from .candidates import Source, check_plain_strategy, parse_layers, resolve_source

CACHE_VERSION = 1
ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
_SMALL_FILE = 5 << 20          # folder files below this size are hashed into the cache key


def _folder_fingerprint(folder: Path, weights: bool) -> dict:
    """Hashes of a model folder's small files (config, tokenizer, pooling) and its weights."""
    small = {}
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.stat().st_size < _SMALL_FILE and not f.name.endswith((".safetensors", ".bin", ".md")):
            small[str(f.relative_to(folder))] = file_sha256(f)
    return {"files": small, "weights": weights_sha256(folder) if weights else None}


def _source_key(src: Source, max_length: int, seed: int, long: str | None = None) -> str:
    ident = {"version": CACHE_VERSION, "kind": src.kind, "seed": seed if src.kind == "scratch" else None,
             "torch": torch.__version__.split("+")[0]}
    if src.image:   # keyed on the weight files: the base network's (ImageNet) and a run's own
        base, scratch = split_scratch(src.load_spec)
        weights = None if scratch else family_of(base).weights_file(base)
        ident.update(image=src.load_spec, weights=file_sha256(weights) if weights is not None else None,
                     run=file_sha256(RunFolder(src.run).weights) if src.run is not None else None)
    else:
        ident.update(folder=_folder_fingerprint(src.folder, weights=src.kind != "scratch"), pooling=src.pooling,
                     normalize=src.normalize, max_length=int(max_length))
        if long is not None:  # only when set: every other cache keeps its key
            ident["long"] = long
        if src.run is not None:
            run = RunFolder(src.run)
            cfg = run.read_config()
            ident["run"] = {"weights": file_sha256(run.weights), "model": cfg.model,
                            "strategy": cfg.strategy, "seed": cfg.data.seed, "classes": src.source_classes}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def _own_max_length(src: Source) -> int:
    """A source's default --max-length: a run's own, else the model's (128 if it cannot say)."""
    if src.run is not None and not src.image:
        own = RunFolder(src.run).read_config().max_length
        if own:
            return int(own)
    base, _ = split_scratch(src.load_spec)
    return family_of(base).max_length(base) or 128


def _cache_dir() -> Path:
    return cache_root() / "rank"


# ============================================================================ encoding
@dataclass
class _Encoder:
    backbone: object               # the HFBackbone: tokenizer, collate, pooling
    net: torch.nn.Module           # what runs: the backbone's HF model, or a classifier model
    head: torch.nn.Module | None = None   # a run's classification head (on the last layer)
    classifier: bool = False       # net returns logits (a ...ForSequenceClassification model)


def _load_encoder(src: Source, max_length: int, seed: int, long: str | None = None) -> _Encoder:
    """Load the weights of one source (the only expensive step a cache hit skips)."""
    if src.run is not None:
        run = Run.load(src.run)
        bb = run.model.backbone
        head = run.model.head.eval() if src.has_head else None
        if src.image:
            return _Encoder(bb.eval(), bb, head)
        _make_plain(bb, run.config.strategy, src.spec)
        bb.max_length = int(max_length)
        bb.set_long(long)
        bb.eval()
        return _Encoder(bb, bb.model, head)
    if src.image:
        bb = load_backbone(src.load_spec, seed=seed).eval()
        return _Encoder(bb, bb)
    bb = load_backbone(src.load_spec, max_length=max_length, seed=seed, long=long)
    bb.eval()
    if src.kind == "classifier":
        from transformers import AutoModelForSequenceClassification  # heavy: imported on first use

        try:
            net = AutoModelForSequenceClassification.from_pretrained(src.folder, trust_remote_code=False)
        except Exception as e:  # transformers raises many types for a broken folder
            reason = str(e).splitlines()[0][:200]
            raise ExaptError(f"--models {src.spec!r}: cannot load its classifier ({reason})") from None
        return _Encoder(bb, net.eval(), classifier=True)
    return _Encoder(bb, bb.model)


def _make_plain(bb, strategy_spec: str, spec: str) -> None:
    """Fold LoRA / IA3 into plain weights, so hidden states and saved folders are ordinary."""
    strategy = parse_strategy(strategy_spec)
    check_plain_strategy(strategy, spec)
    if strategy.mergeable and hasattr(bb.model, "merge_and_unload"):
        bb.model = bb.model.merge_and_unload()


@torch.no_grad()
def _encode_images(bb, images: list, n_layers: int, batch_size: int = 64, progress: bool = False,
                   desc: str = "encoding", head=None) -> dict[str, torch.Tensor]:
    """Features after every block of an image backbone in one forward pass per batch.

    Layer K (K < n_layers) is what block K+1 receives, read by a hook on that block's
    first module (so an activation applied between blocks is included), averaged over
    the image; the last layer is the backbone's own output. Widths differ per layer."""
    blocks = [m for _, m in bb.blocks()]
    if len(blocks) != n_layers:
        raise ExaptError(f"{bb.spec()}: expected {n_layers} blocks, got {len(blocks)}")
    seen: dict[int, torch.Tensor] = {}

    def grab(k):
        def hook(_module, args):
            seen[k] = args[0].float().mean(dim=(2, 3))
        return hook

    firsts = [b[0] if isinstance(b, torch.nn.ModuleList) else b for b in blocks[1:]]
    handles = [m.register_forward_pre_hook(grab(k)) for k, m in enumerate(firsts, start=1)]
    out: dict[str, torch.Tensor] = {}
    bar = tqdm(total=len(images), desc=desc, unit="ex", disable=not progress, leave=False)
    try:
        for start in range(0, len(images), batch_size):
            rows = torch.arange(start, min(start + batch_size, len(images)))
            seen.clear()
            seen[n_layers] = bb(bb.collate([images[i] for i in rows])).float()
            if head is not None:   # a run's classification head reads the last layer: LEEP, NCE
                seen["probs"] = torch.softmax(head(seen[n_layers]).float(), dim=-1)
            for k in [*range(1, n_layers + 1), *(["probs"] if head is not None else [])]:
                name = k if k == "probs" else f"layer.{k}"
                if name not in out:
                    out[name] = torch.empty(len(images), seen[k].shape[1])
                out[name][rows] = seen[k]
            bar.update(len(rows))
    finally:
        for h in handles:
            h.remove()
        bar.close()
    return out


@torch.no_grad()
def _encode(enc: _Encoder, texts: list, n_layers: int, batch_size: int = 64,
            progress: bool = False, desc: str = "encoding") -> dict[str, torch.Tensor]:
    """Pooled features after every layer (and source probabilities) in one forward pass per batch."""
    if getattr(enc.backbone, "input_kind", "text") == "image":
        return _encode_images(enc.backbone, enc.backbone.prepare_inputs(texts), n_layers, batch_size, progress,
                              desc, enc.head)


    bb = enc.backbone
    items = bb.prepare_inputs(texts)
    lengths = [bb.item_length(x) for x in items]
    out = {f"layer.{k}": torch.empty(len(items), bb.feature_dim) for k in range(1, n_layers + 1)}
    probs = None
    bar = tqdm(total=len(items), desc=desc, unit="ex", disable=not progress, leave=False)
    for idx in eval_batches(lengths, batch_size):
        batch = bb.collate([items[i] for i in idx])
        mask = batch["attention_mask"]
        o = enc.net(input_ids=batch["input_ids"], attention_mask=mask, output_hidden_states=True)
        hidden = o.hidden_states
        if hidden is None or len(hidden) != n_layers + 1:
            raise ExaptError(f"{bb.name}: expected {n_layers + 1} hidden states (embeddings + {n_layers} layers), "
                             f"got {0 if hidden is None else len(hidden)}")
        rows = torch.as_tensor(idx)
        for k in range(1, n_layers + 1):
            # the last layer as the backbone itself sees it (a model's final norm included)
            h = o.last_hidden_state if (k == n_layers and not enc.classifier) else hidden[k]
            out[f"layer.{k}"][rows] = bb.pool_items(pool(h, mask, bb.pooling, bb.normalize), batch).float()
        if enc.classifier:
            logits = o.logits
        else:
            logits = enc.head(out[f"layer.{n_layers}"][rows]) if enc.head is not None else None
        if logits is not None:
            if probs is None:
                probs = torch.empty(len(items), logits.shape[-1])
            probs[rows] = torch.softmax(logits.float(), dim=-1)
        bar.update(len(idx))
    bar.close()
    if probs is not None:
        out["probs"] = probs
    return out


class LayerCache:
    """Per-example features of every layer of one source (+ its head's probabilities), on disk.

    ``$EXAPT_CACHE/rank/<key>/shard-*.safetensors``: each shard holds ``keys`` (a hash of
    each text) and one tensor per layer (``layer.1`` ...) plus ``probs`` for a source
    with a classification head; written atomically, a damaged shard is ignored.
    """

    def __init__(self, src: Source, max_length: int | None, seed: int, long: str | None = None):
        """`max_length` None: the model's own (a run's: the length it was trained with);
        `long`: `--long chunk...`, windows pooled per text."""
        max_length = max_length or _own_max_length(src)
        if not src.key:
            src.key = _source_key(src, max_length, seed, long)
        self.src, self.max_length, self.seed, self.long = src, int(max_length), seed, long
        self.dir = _cache_dir() / src.key
        self.hits = self.misses = 0
        self.encoded_seconds = 0.0

    def _names(self) -> list[str]:
        names = [f"layer.{k}" for k in range(1, self.src.n_layers + 1)]
        return names + (["probs"] if self.src.has_head else [])

    def _read(self, names: list[str]) -> tuple[dict[bytes, tuple[int, int]], list[dict[str, torch.Tensor]]]:
        index, shards = {}, []
        for shard in sorted(self.dir.glob("shard-*.safetensors")) if self.dir.exists() else []:
            try:
                with safe_open(str(shard), framework="pt") as f:
                    tensors = {n: f.get_tensor(n) for n in ["keys", *names]}
            except Exception:  # a damaged or foreign shard is ignored, never fatal
                continue
            s = len(shards)
            shards.append(tensors)
            keys = tensors["keys"].numpy()
            for i in range(len(keys)):
                index[keys[i].tobytes()] = (s, i)
        return index, shards

    def get(self, texts: list[str], names: Sequence[str] | None = None, progress: bool = False,
            batch_size: int = 64, log=None) -> dict[str, np.ndarray]:
        """{name: (n, d) float32 array} for the texts, encoding only texts never seen before."""
        names = list(names or self._names())
        keys = [item_key(t) for t in texts]
        index, shards = self._read(names)        # only the tensors asked for are read from disk
        todo = list(dict.fromkeys(k for k in keys if k not in index))
        self.hits, self.misses = len(keys) - sum(k not in index for k in keys), len(todo)
        if todo:
            started = time.perf_counter()
            first = {}
            for t, k in zip(texts, keys):
                first.setdefault(k, t)
            if log:
                what = "images" if self.src.image else "texts"
                log(f"  encoding {len(todo)} {what} with {self.src.spec} ({self.src.n_layers} layers, one pass)")
            enc = _load_encoder(self.src, self.max_length, self.seed, self.long)
            new = _encode(enc, [first[k] for k in todo], self.src.n_layers, batch_size, progress,
                          desc=f"encoding {self.src.spec}")
            new["keys"] = torch.tensor(np.frombuffer(b"".join(todo), dtype=np.uint8).reshape(len(todo), -1))
            atomic_save_tensors(new, self.dir / f"shard-{uuid.uuid4().hex}.safetensors",
                                {"source": self.src.spec, "kind": self.src.kind, "max_length": self.max_length})
            s = len(shards)
            shards.append(new)
            for i, k in enumerate(todo):
                index[k] = (s, i)
            self.encoded_seconds = time.perf_counter() - started
        where = [index[k] for k in keys]
        out = {}
        for n in names:
            out[n] = (torch.stack([shards[s][n][i] for s, i in where]).numpy() if where
                      else np.empty((0, 0), np.float32))
        return out


def layer_features(model: str, texts: Sequence[str], layers=None, *, max_length: int = 128, seed: int = 0,
                   batch_size: int = 64, progress: bool = False, long: str | None = None) -> dict[int, np.ndarray]:
    """{K: (n, d) array}: the pooled hidden state after layer K of ``model`` for each text.

    ``layers``: None (the last layer), "all", or layer numbers. The same pooling and
    normalisation as the model's own output, so the last layer equals what
    ``load_backbone(model)`` produces. Cached on disk; all layers in one pass.
    """
    src = resolve_source(model)
    ks = parse_layers(layers)
    ks = [src.n_layers] if ks is None else (list(range(1, src.n_layers + 1)) if ks == "all" else ks)
    for k in ks:
        if not 1 <= k <= src.n_layers:
            raise ExaptError(f"layer {k} is out of range; {model} has {src.n_layers} layers (1..{src.n_layers})")
    got = LayerCache(src, max_length, seed, long).get(list(texts), [f"layer.{k}" for k in ks], progress, batch_size)
    return {k: got[f"layer.{k}"] for k in ks}


def source_probabilities(model: str, texts: Sequence[str], *, max_length: int = 128, seed: int = 0) -> np.ndarray:
    """(n, Z) softmax outputs of a run's classification head / a classifier checkpoint."""
    src = resolve_source(model)
    if not src.has_head:
        raise ExaptError(_no_head_message(src.spec))
    return LayerCache(src, max_length, seed).get(list(texts), ["probs"])["probs"]


def _no_head_message(spec: str) -> str:
    return (f"{spec!r} has no source classifier: LEEP and NCE need a run folder of a classification fit "
            "or a ...ForSequenceClassification checkpoint")


# ============================================================================ truncated copies
def _layer_path(model: torch.nn.Module) -> str:
    layers = layer_list(model)
    for name, module in model.named_modules():
        if module is layers:
            return name
    raise ExaptError(f"cannot find the layer list of {type(model).__name__}")


def _truncate(model: torch.nn.Module, k: int) -> None:
    path = _layer_path(model)
    parent_name, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, torch.nn.ModuleList(list(getattr(parent, attr))[:k]))
    for name in ("num_hidden_layers", "n_layers", "num_layers"):
        if isinstance(getattr(model.config, name, None), int):
            setattr(model.config, name, k)


def _copy_sentence_transformers_files(src: Path, dest: Path) -> None:
    """modules.json, its module folders (pooling, normalise) and the ST configs."""
    for name in ST_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, dest / name)
    try:
        entries = json.loads((src / "modules.json").read_text()) if (src / "modules.json").exists() else []
    except (OSError, ValueError):
        entries = []
    for e in entries:
        sub = str(e.get("path") or "")
        if sub and (src / sub).is_dir() and not (dest / sub).exists():
            shutil.copytree(src / sub, dest / sub)


def materialize(src: Source, k: int | None, max_length: int, seed: int, dest: Path | None = None) -> Path:
    """A plain Hugging Face folder of the source's encoder, truncated to k layers if asked.

    Kept under ``$EXAPT_CACHE/rank/models/`` (or ``dest``); written to a temporary folder
    and renamed, so a folder that exists is complete."""
    if not src.key:
        src.key = _source_key(src, max_length, seed)
    k = src.n_layers if k is None else k
    dest = Path(dest) if dest is not None else _cache_dir() / "models" / f"{src.key}-L{k}"
    if (dest / "config.json").exists():
        return dest
    enc = _load_encoder(src, max_length, seed)
    bb = enc.backbone
    net = bb.model
    if k < src.n_layers:
        _truncate(net, k)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        net.save_pretrained(tmp)
        bb.tokenizer.save_pretrained(tmp)
        _copy_sentence_transformers_files(src.folder, tmp)
        try:
            os.replace(tmp, dest)
        except OSError:
            if not (dest / "config.json").exists():  # not another process's identical copy
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def truncated_model_folder(model: str, k: int, dest=None, *, max_length: int = 128, seed: int = 0) -> Path:
    """A Hugging Face folder holding the first k layers of ``model`` (config num_hidden_layers=k,
    tokenizer and sentence-transformers pooling files copied): what ``MODEL@K`` is fine-tuned
    as. Its features equal ``layer_features(model, texts, [k])``. ``model`` may be a run
    folder (its encoder's weights) or ``scratch:NAME`` (the same random weights the scores saw)."""
    src = resolve_source(model)
    if not 1 <= int(k) <= src.n_layers:
        raise ExaptError(f"layer {k} is out of range; {model} has {src.n_layers} layers (1..{src.n_layers})")
    return materialize(src, int(k), max_length, seed, dest)

