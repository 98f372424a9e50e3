"""`exapt rank`: choose the source model and layer before fine-tuning.

    from exapt.select.rank import rank
    table = rank("tweets.csv", ["minilm-l6", "scratch:minilm-l6"], layers="all", test="test.csv")
    table = rank("tweets.csv", "minilm-l6@3,minilm-l6,runs/sst2-full", scores="logme,leep,nce")
    table = rank(..., validate=True, strategy="lp-ft", out="rank")   # also fine-tune each one
    pd.DataFrame(table.attrs["tau"])                                # score vs. accuracy reached

A candidate is

- ``MODEL``: an alias (``minilm-l6``), a Hugging Face model folder, or ``scratch:NAME``;
- ``MODEL@K``: the first K transformer layers of MODEL, features = the hidden state
  after layer K, pooled exactly as MODEL pools its last layer (the backbone's own
  pooling / normalisation, `exapt.backbones.pool`); ``layers="all"`` or ``"1,3,6"``
  turns every candidate without an ``@`` into one candidate per layer;
- a run folder of an earlier ``exapt fit`` (metrics.json + config.yaml): that run's
  encoder. If the run has a classification head, its softmax outputs on the target
  inputs give LEEP and NCE (source classes = the run's classes); so does a Hugging
  Face ``...ForSequenceClassification`` checkpoint folder.

All layers of one model come from ONE forward pass (``output_hidden_states``) and are
cached on disk under ``$EXAPT_CACHE/rank/<model key>/`` per example (keyed by a hash
of the text, like `exapt.train.features`), so ranking again, on a subset, or other
layers of the same model encodes nothing. The scored examples are exactly the
training examples `exapt.fit` would train on with the same data options (the same
`fit._splits`), so ``validate=True`` fine-tunes every candidate on them, measures test
accuracy on the held-out split, and reports the weighted Kendall tau between each
score and that accuracy. ``MODEL@K`` is fine-tuned as a truncated copy of the model
folder (`truncated_model_folder`); a run as a folder of its encoder's weights.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import ExaptError
from .scores import FEATURE_SCORE_TASKS, SCORES, SOURCE_SCORE_TASKS, SOURCE_SCORES, kendall_tau, weighted_kendall_tau
from ..figures import png_bytes

DEFAULT_SCORES = ("logme", "h-score", "knn", "linear-probe-cv")
ALL_SCORES = tuple(SCORES) + tuple(SOURCE_SCORES)
SCORE_TASKS = {**FEATURE_SCORE_TASKS, **SOURCE_SCORE_TASKS}
CACHE_VERSION = 1
META = "rank.json"
OUTPUT_FILES = ("rank.csv", "tau.csv", "rank.png", "rank.md", META)
FINETUNE_DIR = "finetune"
ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
_SMALL_FILE = 5 << 20          # folder files below this size are hashed into the cache key


# ============================================================================ candidates
@dataclass
class Source:
    """One model (alias, folder, scratch twin) or run, resolved without loading weights."""
    spec: str                      # as written by the user
    kind: str                      # "pretrained" | "scratch" | "classifier" | "run"
    folder: Path                   # the Hugging Face folder (a run: its base model's)
    load_spec: str                 # what load_backbone takes (a run: its config's model)
    n_layers: int
    pooling: str                   # the pooling its features use
    normalize: bool
    run: Path | None = None
    source_classes: list[str] | None = None   # classes of a classification head, if any
    key: str = ""                  # cache key (set by `_source_key`)

    @property
    def has_head(self) -> bool:
        return self.source_classes is not None


@dataclass
class Candidate:
    name: str
    source: Source
    layer: int                     # 1..n_layers (n_layers = the whole encoder)
    explicit_layer: bool           # written as SPEC@K (or expanded by --layers)

    @property
    def truncated(self) -> bool:
        return self.layer < self.source.n_layers

    @property
    def has_head(self) -> bool:    # a head reads the last layer only
        return self.source.has_head and not self.truncated


def _is_run(path: Path) -> bool:
    return path.is_dir() and (path / "config.yaml").exists()


def _n_layers(folder: Path, spec: str) -> int:
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except Exception as e:  # transformers raises many types for a broken folder
        reason = str(e).splitlines()[0][:200]
        raise ExaptError(f"--models {spec!r}: cannot read {folder}/config.json ({reason})") from None
    for attr in ("num_hidden_layers", "n_layers", "num_layers"):
        n = getattr(cfg, attr, None)
        if isinstance(n, int) and n > 0:
            return n
    raise ExaptError(f"--models {spec!r}: {folder}/config.json names no layer count; it is not a supported encoder")


def _classifier_classes(folder: Path) -> list[str] | None:
    """Class names of a Hugging Face ...ForSequenceClassification checkpoint, else None."""
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not any(str(a).endswith("ForSequenceClassification") for a in cfg.get("architectures") or []):
        return None
    if cfg.get("problem_type") in ("regression", "multi_label_classification"):
        return None
    id2label = cfg.get("id2label") or {}
    n = len(id2label) or int(cfg.get("num_labels", 0) or 0)
    if n < 2:
        return None
    return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]


def _model_folder(spec: str, what: str) -> tuple[Path, bool, str]:
    """(folder, scratch, the spec without scratch:) of a model spec; ExaptError when unknown."""
    from ..backbones import ALIASES, SCRATCH_PREFIX, resolve_alias

    base = spec[len(SCRATCH_PREFIX):] if spec.startswith(SCRATCH_PREFIX) else spec
    scratch = base != spec
    if base == "mlp" or base.startswith("mlp:"):
        raise ExaptError(f"{what} {spec!r}: exapt rank compares text encoders; the mlp backbone has no pretrained "
                         "weights to rank")
    if base in ALIASES:
        return resolve_alias(base), scratch, base
    folder = Path(base).expanduser()
    if not folder.exists():
        raise ExaptError(f"{what} {spec!r}: no such alias, model folder or run folder "
                         f"(aliases: {', '.join(ALIASES)}; see `exapt models`)")
    if not folder.is_dir() or not (folder / "config.json").exists():
        raise ExaptError(f"{what} {spec!r}: {folder} is neither a Hugging Face model folder (no config.json) "
                         "nor a run folder (no config.yaml)")
    return folder, scratch, base


def resolve_source(spec: str) -> Source:
    """A model spec or run folder -> `Source` (reads configs only, never weights)."""
    from ..backbones.hf import sentence_transformers_pooling

    spec = str(spec).strip()
    path = Path(spec).expanduser()
    if _is_run(path):
        return _resolve_run(spec, path)
    folder, scratch, _ = _model_folder(spec, "--models")
    mode, norm = sentence_transformers_pooling(folder)
    classes = None if scratch else _classifier_classes(folder)
    kind = "scratch" if scratch else ("classifier" if classes else "pretrained")
    return Source(spec, kind, folder, spec, _n_layers(folder, spec), mode or "mean", norm, source_classes=classes)


def _resolve_run(spec: str, path: Path) -> Source:
    from ..backbones.hf import sentence_transformers_pooling
    from ..config import FitConfig
    from ..run import COMPLETE_MARKER, is_complete
    from ..strategies import parse_strategy

    if not is_complete(path):
        raise ExaptError(f"--models {spec!r}: {path} is not a complete run (no {COMPLETE_MARKER}); "
                         "finish it with `exapt fit --resume` first")
    cfg = FitConfig.load(path / "config.yaml")
    try:
        labels = json.loads((path / "labels.json").read_text())
    except (OSError, ValueError) as e:
        raise ExaptError(f"--models {spec!r}: {path / 'labels.json'} unreadable ({str(e).splitlines()[0]})") from None
    try:
        strategy = parse_strategy(cfg.strategy)
    except ExaptError as e:
        raise ExaptError(f"--models {spec!r}: {e}") from None
    _check_plain_strategy(strategy, spec)
    folder, _, _ = _model_folder(cfg.model, f"--models {spec!r}: its model")
    mode, norm = sentence_transformers_pooling(folder)
    classes = [str(c) for c in labels.get("classes", [])] if labels.get("task") == "classification" else None
    return Source(spec, "run", folder, cfg.model, _n_layers(folder, spec), cfg.pooling or mode or "mean", norm,
                  run=path, source_classes=classes if classes and len(classes) >= 2 else None)


def _check_plain_strategy(strategy, spec: str) -> None:
    """Runs whose encoder is plain weights (after merging LoRA / IA3) can be ranked."""
    from ..strategies.adapter import BottleneckAdapter
    from ..strategies.new_modules import VirtualTokenStrategy

    if isinstance(strategy, (BottleneckAdapter, VirtualTokenStrategy)):
        raise ExaptError(f"--models {spec!r}: a run trained with {strategy.spec()} adds modules that are not part "
                         "of an encoder's layers, so it cannot be ranked or fine-tuned as a source model "
                         "(runs of lora and ia3 can: they are merged first)")


_LAYER_SPEC = re.compile(r"^(?P<spec>.+)@(?P<layer>[^@/\\]*)$")


def _split_layer(item: str) -> tuple[str, int | None]:
    m = _LAYER_SPEC.match(item)
    if not m or Path(item).expanduser().exists():
        return item, None
    raw = m.group("layer").strip()
    if not raw.isdigit():
        raise ExaptError(f"--models {item!r}: write MODEL@K with K a layer number (1 = the first layer)")
    return m.group("spec").strip(), int(raw)


def _parse_list(value, option: str) -> list[str]:
    if value is None:
        return []
    items = [s.strip() for s in value.split(",")] if isinstance(value, str) else [str(s).strip() for s in value]
    items = [s for s in items if s]
    return items


def parse_layers(layers) -> str | list[int] | None:
    """None, "all", "1,3,6", or a list of ints -> None | "all" | sorted unique ints."""
    if layers is None:
        return None
    if isinstance(layers, str):
        text = layers.strip().lower()
        if text in ("", "none"):
            return None
        if text == "all":
            return "all"
        parts = [p.strip() for p in text.split(",") if p.strip()]
    elif isinstance(layers, int):
        parts = [str(layers)]
    else:
        parts = [str(p).strip() for p in layers]
    out = []
    for p in parts:
        if not p.isdigit() or int(p) < 1:
            raise ExaptError(f"--layers {layers!r}: write all, or layer numbers >= 1 separated by commas (e.g. 1,3,6)")
        out.append(int(p))
    if not out:
        raise ExaptError(f"--layers {layers!r}: no layer given")
    return sorted(set(out))


def parse_candidates(models, layers=None) -> list[Candidate]:
    """`--models` and `--layers` -> candidates, every layer checked against its model's depth."""
    items = _parse_list(models, "--models")
    if not items:
        raise ExaptError("--models: name at least one candidate (an alias, model folder, scratch:NAME, MODEL@K "
                         "or run folder)")
    wanted = parse_layers(layers)
    sources: dict[str, Source] = {}
    out: dict[str, Candidate] = {}
    for item in items:
        spec, layer = _split_layer(item)
        if spec not in sources:
            sources[spec] = resolve_source(spec)
        src = sources[spec]
        if layer is not None:
            ks, explicit = [layer], True
        elif wanted == "all":
            ks, explicit = list(range(1, src.n_layers + 1)), True
        elif wanted:
            ks, explicit = wanted, True
        else:
            ks, explicit = [src.n_layers], False
        for k in ks:
            if not 1 <= k <= src.n_layers:
                raise ExaptError(f"--models {spec}@{k}: layer {k} is out of range; {spec} has {src.n_layers} layers "
                                 f"(1..{src.n_layers})")
            name = f"{spec}@{k}" if explicit else spec
            out.setdefault(name, Candidate(name, src, k, explicit))
    return list(out.values())


def parse_scores(scores) -> list[str]:
    if scores is None:
        return list(DEFAULT_SCORES)
    items = _parse_list(scores, "--scores")
    if [s.lower() for s in items] == ["all"]:
        return list(ALL_SCORES)
    if not items:
        raise ExaptError("--scores: name at least one score")
    bad = [s for s in items if s not in ALL_SCORES]
    if bad:
        raise ExaptError(f"--scores: unknown score {bad[0]!r}; known: {', '.join(ALL_SCORES)} (or all)")
    return list(dict.fromkeys(items))


# ============================================================================ cache keys
def _file_sha256(path: Path) -> str:
    from ..backbones.hf import file_sha256

    return file_sha256(path)


def _folder_fingerprint(folder: Path, weights: bool) -> dict:
    """Hashes of a model folder's small files (config, tokenizer, pooling) and its weights."""
    from ..backbones.hf import weights_sha256

    small = {}
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.stat().st_size < _SMALL_FILE and not f.name.endswith((".safetensors", ".bin", ".md")):
            small[str(f.relative_to(folder))] = _file_sha256(f)
    return {"files": small, "weights": weights_sha256(folder) if weights else None}


def _source_key(src: Source, max_length: int, seed: int) -> str:
    ident = {"version": CACHE_VERSION, "kind": src.kind,
             "folder": _folder_fingerprint(src.folder, weights=src.kind != "scratch"),
             "seed": seed if src.kind == "scratch" else None, "pooling": src.pooling, "normalize": src.normalize,
             "max_length": int(max_length), "torch": torch.__version__.split("+")[0]}
    if src.run is not None:
        from ..config import FitConfig
        from ..run import WEIGHTS

        cfg = FitConfig.load(src.run / "config.yaml")
        ident["run"] = {"weights": _file_sha256(src.run / WEIGHTS), "model": cfg.model, "strategy": cfg.strategy,
                        "seed": cfg.data.seed, "classes": src.source_classes}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def _cache_dir() -> Path:
    from ..train.features import cache_root

    return cache_root() / "rank"


# ============================================================================ encoding
@dataclass
class _Encoder:
    backbone: object               # the HFBackbone: tokenizer, collate, pooling
    net: torch.nn.Module           # what runs: the backbone's HF model, or a classifier model
    head: torch.nn.Module | None = None   # a run's classification head (on the last layer)
    classifier: bool = False       # net returns logits (a ...ForSequenceClassification model)


def _load_encoder(src: Source, max_length: int, seed: int) -> _Encoder:
    """Load the weights of one source (the only expensive step a cache hit skips)."""
    from ..backbones import load_backbone

    if src.run is not None:
        from ..run import Run

        run = Run.load(src.run)
        bb = run.model.backbone
        _make_plain(bb, run.config.strategy, src.spec)
        bb.max_length = int(max_length)
        bb.eval()
        return _Encoder(bb, bb.model, run.model.head.eval() if src.has_head else None)
    bb = load_backbone(src.load_spec, max_length=max_length, seed=seed)
    bb.eval()
    if src.kind == "classifier":
        from transformers import AutoModelForSequenceClassification

        try:
            net = AutoModelForSequenceClassification.from_pretrained(src.folder, trust_remote_code=False)
        except Exception as e:  # transformers raises many types for a broken folder
            reason = str(e).splitlines()[0][:200]
            raise ExaptError(f"--models {src.spec!r}: cannot load its classifier ({reason})") from None
        return _Encoder(bb, net.eval(), classifier=True)
    return _Encoder(bb, bb.model)


def _make_plain(bb, strategy_spec: str, spec: str) -> None:
    """Fold LoRA / IA3 into plain weights, so hidden states and saved folders are ordinary."""
    from ..strategies import parse_strategy

    strategy = parse_strategy(strategy_spec)
    _check_plain_strategy(strategy, spec)
    if getattr(strategy, "mergeable", False) and hasattr(bb.model, "merge_and_unload"):
        bb.model = bb.model.merge_and_unload()


@torch.no_grad()
def _encode(enc: _Encoder, texts: list[str], n_layers: int, batch_size: int = 64,
            progress: bool = False, desc: str = "encoding") -> dict[str, torch.Tensor]:
    """Pooled features after every layer (and source probabilities) in one forward pass per batch."""
    from tqdm.auto import tqdm

    from ..backbones import pool
    from ..train.batches import eval_batches

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
            out[f"layer.{k}"][rows] = pool(h, mask, bb.pooling, bb.normalize).float()
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

    def __init__(self, src: Source, max_length: int, seed: int):
        if not src.key:
            src.key = _source_key(src, max_length, seed)
        self.src, self.max_length, self.seed = src, int(max_length), seed
        self.dir = _cache_dir() / src.key
        self.hits = self.misses = 0
        self.encoded_seconds = 0.0

    def _names(self) -> list[str]:
        names = [f"layer.{k}" for k in range(1, self.src.n_layers + 1)]
        return names + (["probs"] if self.src.has_head else [])

    def _read(self, names: list[str]) -> tuple[dict[bytes, tuple[int, int]], list[dict[str, torch.Tensor]]]:
        from safetensors import safe_open

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
        from ..train.checkpoint import atomic_save_tensors
        from ..train.features import _item_key

        names = list(names or self._names())
        keys = [_item_key(t) for t in texts]
        index, shards = self._read(names)        # only the tensors asked for are read from disk
        todo = list(dict.fromkeys(k for k in keys if k not in index))
        self.hits, self.misses = len(keys) - sum(k not in index for k in keys), len(todo)
        if todo:
            started = time.perf_counter()
            first = {}
            for t, k in zip(texts, keys):
                first.setdefault(k, t)
            if log:
                log(f"  encoding {len(todo)} texts with {self.src.spec} ({self.src.n_layers} layers, one pass)")
            enc = _load_encoder(self.src, self.max_length, self.seed)
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
                   batch_size: int = 64, progress: bool = False) -> dict[int, np.ndarray]:
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
    got = LayerCache(src, max_length, seed).get(list(texts), [f"layer.{k}" for k in ks], progress, batch_size)
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
    from ..backbones.hf import _layer_list

    layers = _layer_list(model)
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


def _materialize(src: Source, k: int | None, max_length: int, seed: int, dest: Path | None = None) -> Path:
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
    return _materialize(src, int(k), max_length, seed, dest)


# ============================================================================ ranking
def _quiet(*_a, **_k) -> None:
    pass


def _ranks(values: pd.Series) -> pd.Series:
    return values.rank(ascending=False, method="min").astype("Int64")


def _settings(data, test, text, label, task, n_per_class, seed, val_fraction, test_fraction, max_test,
              max_length, strategy, epochs, batch_size) -> dict:
    return {"data": str(data), "test": None if test is None else str(test), "text": text, "label": label,
            "task": task, "n_per_class": n_per_class, "seed": seed, "val_fraction": val_fraction,
            "test_fraction": test_fraction, "max_test": max_test, "max_length": max_length,
            "strategy": strategy, "epochs": epochs, "batch_size": batch_size}


DATA_SETTINGS = ("data", "test", "text", "label", "task", "n_per_class", "seed", "val_fraction", "test_fraction",
                 "max_test", "max_length")


def _check_out(out: Path, settings: dict, overwrite: bool) -> bool:
    """A folder rank may write to: new, empty, or an earlier rank output of the same data
    (any other earlier rank output only with --overwrite, which also drops its fine-tuning
    results; without it, results of the same settings are reused). True: clear it first."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise ExaptError(f"--out {out} is a file, not a folder")
    if not any(out.iterdir()):
        return False
    meta = out / META
    try:
        old = json.loads(meta.read_text()) if meta.exists() else None
    except (OSError, ValueError):
        old = None
    if not isinstance(old, dict) or "exapt_rank" not in old:
        raise ExaptError(f"--out {out} is a non-empty folder that is not an earlier `exapt rank` output; "
                         "choose another")
    before = old.get("settings") or {}
    changed = [k for k in DATA_SETTINGS if before.get(k) != settings.get(k)]
    if changed and not overwrite:
        raise ExaptError(f"--out {out} holds a rank of other data or options ({', '.join(changed)}); "
                         "pass --overwrite to replace it or choose another --out")
    return overwrite


def _clear_out(out: Path) -> None:
    for name in OUTPUT_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / FINETUNE_DIR, ignore_errors=True)


def _atomic_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@dataclass
class _Data:
    train: object                  # the Table that is scored (= fit's training split)
    test: object
    task: object
    y: np.ndarray
    n_val: int = 0


def _load_split(settings: dict, batch_size: int, epochs) -> _Data:
    from ..config import DataConfig, FitConfig
    from ..data import load_data
    from ..fit import _check_options, _splits
    from ..tasks import Task
    from ..train.loop import TrainConfig

    s = settings
    cfg = FitConfig(data=DataConfig(source=s["data"], text=s["text"], label=s["label"], test=s["test"],
                                    test_fraction=s["test_fraction"], max_test=s["max_test"],
                                    val_fraction=s["val_fraction"], n_per_class=s["n_per_class"], seed=s["seed"]),
                    task=s["task"], max_length=s["max_length"],
                    train=TrainConfig(epochs=epochs, batch_size=batch_size, seed=s["seed"]))
    _check_options(cfg)
    table = load_data(cfg.data.source, text=cfg.data.text, label=cfg.data.label)
    if table.kind != "text":
        raise ExaptError(f"{table.source}: exapt rank compares text encoders; this data has numeric features")
    task = Task.from_labels(cfg.task, table.labels, table.source)
    train, val, test = _splits(cfg, table, task.kind)
    task = Task.from_labels(task.kind, train.labels, f"{table.source} (training split)")
    y = task.encode(train.labels, train.rows, train.source).numpy()
    return _Data(train, test, task, y, len(val))


def _check_scores(scores: list[str], kind: str, explicit: bool, candidates: list[Candidate], log) -> list[str]:
    keep = []
    for s in scores:
        if kind not in SCORE_TASKS[s]:
            if explicit:
                raise ExaptError(f"--scores {s}: does not support a {kind} task (it supports: "
                                 f"{', '.join(SCORE_TASKS[s])}); LogME supports every task")
            log(f"  ({s} skipped: it does not support a {kind} task)")
            continue
        keep.append(s)
    source = [s for s in keep if s in SOURCE_SCORES]
    if source and not any(c.has_head for c in candidates):
        names = ", ".join(c.name for c in candidates[:5]) + (", ..." if len(candidates) > 5 else "")
        raise ExaptError(f"--scores {','.join(source)}: none of the candidates ({names}) has a source classifier; "
                         "LEEP and NCE need a run folder of a classification fit or a ...ForSequenceClassification "
                         "checkpoint (at its last layer)")
    if not keep:
        raise ExaptError(f"--scores: none of {', '.join(scores)} supports a {kind} task; use logme")
    return keep


def rank(data, models, layers=None, scores=DEFAULT_SCORES, n_per_class: int | None = None, seed: int = 0,
         validate: bool = False, strategy: str = "linear-probe", out: str | Path | None = None, *,
         text=None, label: str = "label", task: str = "auto", test: str | None = None,
         val_fraction: float = 0.0, test_fraction: float = 0.2, max_test: int = 2000, max_length: int = 128,
         epochs: int | None = None, batch_size: int = 16, overwrite: bool = False, progress: bool = True,
         log=print) -> pd.DataFrame:
    """Score every candidate's frozen features on the training examples; optionally fine-tune each.

    Returns one row per candidate: each score and its rank (1 = best), the seconds spent
    scoring it, and with ``validate`` the test metric fine-tuning reached and its seconds.
    ``.attrs`` holds ``tau`` (with ``validate``: one record per score, the weighted Kendall
    tau against the test metric and the candidate it picks; ``pd.DataFrame(attrs["tau"])``),
    ``meta`` (settings, timings) and ``files`` (what was written to ``out``).
    Data options mean what they mean for `exapt.fit`; ``val_fraction`` defaults to 0 here,
    so every labelled training example is scored and the fine-tuning runs its full schedule.
    """
    from ..strategies import parse_strategy
    from ..threads import configure_threads

    log = log or _quiet
    started = time.perf_counter()
    if isinstance(text, str) and "," in text:
        text = [c.strip() for c in text.split(",") if c.strip()]
    listed = tuple(_parse_list(scores, "--scores")) if scores is not None else DEFAULT_SCORES
    explicit_scores = listed != DEFAULT_SCORES and [x.lower() for x in listed] != ["all"]
    score_names = parse_scores(scores)
    if validate:
        parse_strategy(strategy)
    settings = _settings(data, test, text, label, task, n_per_class, seed, val_fraction, test_fraction, max_test,
                         max_length, strategy, epochs, batch_size)
    candidates = parse_candidates(models, layers)
    if validate and len(candidates) < 2:
        raise ExaptError("--validate needs at least 2 candidates to correlate scores with accuracy")
    out = Path(out) if out is not None else None
    clear = out is not None and _check_out(out, settings, overwrite)
    configure_threads()
    d = _load_split(settings, batch_size, epochs)
    kind = d.task.kind
    score_names = _check_scores(score_names, kind, explicit_scores, candidates, log)
    if clear:   # every user error is behind us: only now replace an earlier output
        _clear_out(out)
    if out is not None and not (out / META).exists():
        # mark the folder as ours before any fine-tuning, so an interrupted --validate can resume in it
        _atomic_bytes(out / META, json.dumps({"exapt_rank": 1, "settings": settings, "complete": False}).encode())
    texts = list(d.train.inputs)
    log(f"rank {len(candidates)} candidate(s) on {len(texts)} training examples of {d.train.source} ({kind}): "
        f"{', '.join(score_names)}")

    # -- features and scores: one pass per source, cached --------------------------------
    rows, feature_seconds = [], {}
    by_source: dict[int, list[Candidate]] = {}
    for c in candidates:
        by_source.setdefault(id(c.source), []).append(c)
    for group in by_source.values():
        src = group[0].source
        t0 = time.perf_counter()
        cache = LayerCache(src, max_length, seed)
        names = sorted({f"layer.{c.layer}" for c in group}) + (["probs"] if any(c.has_head for c in group) else [])
        feats = cache.get(texts, names, progress, log=log)
        share = (time.perf_counter() - t0) / len(group)   # one pass serves every layer of this source
        for c in group:
            t1 = time.perf_counter()
            f = feats[f"layer.{c.layer}"].astype(np.float64)
            row = {"candidate": c.name, "model": src.spec, "layer": c.layer, "n_layers": src.n_layers,
                   "kind": src.kind, "source_head": c.has_head}
            for s in score_names:
                if s in SOURCE_SCORES:
                    row[s] = SOURCE_SCORES[s](feats["probs"], d.y, kind) if c.has_head else float("nan")
                else:
                    row[s] = SCORES[s](f, d.y, kind)
            row["score_seconds"] = round(share + time.perf_counter() - t1, 4)
            row["cache_hits"] = cache.hits
            rows.append(row)
            log(f"  {c.name}: " + ", ".join(f"{s} {row[s]:.4g}" for s in score_names))
        feature_seconds[src.spec] = cache.encoded_seconds
    rank_seconds = time.perf_counter() - started
    frame = pd.DataFrame(rows)
    for s in score_names:
        frame[f"{s}_rank"] = _ranks(frame[s])

    # -- validation: fine-tune each candidate on the same examples -----------------------
    metric = d.task.primary_metric
    tau = None
    finetune_total = 0.0
    if validate:
        results = _validate(candidates, settings, d, out, max_length, seed, epochs, batch_size, log)
        frame[f"test_{metric}"] = [r["metrics"].get(metric, float("nan")) for r in results]
        frame["finetune_seconds"] = [round(r["seconds"], 2) for r in results]
        finetune_total = float(sum(r["seconds"] for r in results))
        truth = frame[f"test_{metric}"] * (1.0 if d.task.higher_is_better else -1.0)
        frame[f"test_{metric}_rank"] = _ranks(truth)
        tau = _tau_table(frame, score_names, truth, metric)
    columns = (["candidate", "model", "layer", "n_layers", "kind", "source_head"]
               + [x for s in score_names for x in (s, f"{s}_rank")]
               + ([f"test_{metric}", f"test_{metric}_rank", "finetune_seconds"] if validate else [])
               + ["score_seconds", "cache_hits"])
    frame = frame[columns]
    meta = {"exapt_rank": 1, "settings": settings, "task": kind, "classes": d.task.classes, "metric": metric,
            "n_train": len(d.train), "n_val": d.n_val, "n_test": len(d.test), "scores": score_names,
            "candidates": [c.name for c in candidates], "rank_seconds": round(rank_seconds, 3),
            "encode_seconds": {k: round(v, 3) for k, v in feature_seconds.items()}}
    if validate:
        meta.update(finetune_seconds=round(finetune_total, 2), strategy=strategy,
                    rank_to_finetune_ratio=round(rank_seconds / finetune_total, 5) if finetune_total > 0 else None)
    frame.attrs["meta"] = meta
    # plain records, not a DataFrame: pandas compares attrs (pd.concat), and a DataFrame has no truth value
    frame.attrs["tau"] = None if tau is None else tau.to_dict("records")
    frame.attrs["files"] = {}
    if validate:
        r = meta["rank_to_finetune_ratio"]
        log(f"ranking took {rank_seconds:.1f} s, fine-tuning {finetune_total:.1f} s"
            + (f" (ranking = {r:.1%} of fine-tuning)" if r is not None else ""))
    if out is not None:
        frame.attrs["files"] = write_outputs(out, frame, tau, meta)
    return frame


def _tau_table(frame: pd.DataFrame, score_names: list[str], truth: pd.Series, metric: str) -> pd.DataFrame:
    rows = []
    for s in score_names:
        ok = frame[s].notna() & truth.notna()
        n = int(ok.sum())
        wt = kt = float("nan")
        if n >= 2:
            wt = weighted_kendall_tau(frame.loc[ok, s].to_numpy(), truth[ok].to_numpy())
            kt = kendall_tau(frame.loc[ok, s].to_numpy(), truth[ok].to_numpy())
        pick = frame.loc[frame.loc[ok, s].idxmax()] if n else None
        best = frame.loc[truth[ok].idxmax()] if n else None
        rows.append({"score": s, "weighted_tau": wt, "kendall_tau": kt, "n_candidates": n,
                     "pick": None if pick is None else pick["candidate"],
                     f"pick_test_{metric}": float("nan") if pick is None else float(pick[f"test_{metric}"]),
                     "best": None if best is None else best["candidate"],
                     f"best_test_{metric}": float("nan") if best is None else float(best[f"test_{metric}"]),
                     "picks_best": None if pick is None else bool(truth[pick.name] == truth[ok].max())})
    return pd.DataFrame(rows)


def _slug(name: str) -> str:
    short = re.sub(r"[^A-Za-z0-9_.@-]+", "-", name).strip("-")[-60:]
    return f"{short}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _validate(candidates, settings, d: _Data, out: Path | None, max_length: int, seed: int, epochs,
              batch_size: int, log) -> list[dict]:
    """Fine-tune each candidate with `exapt.fit` on the scored examples; metrics + seconds.

    With ``out``, each result is kept in out/finetune/<candidate>.json and reused by a
    later call with the same settings (so an interrupted --validate picks up where it stopped)."""
    from ..fit import fit

    results = []
    with tempfile.TemporaryDirectory(prefix="exapt-rank-") as work:
        for i, c in enumerate(candidates):
            src = c.source
            record = out / FINETUNE_DIR / f"{_slug(c.name)}.json" if out is not None else None
            ident = {"candidate": c.name, "source_key": src.key, "layer": c.layer, "settings": settings}
            if record is not None and record.exists():
                try:
                    saved = json.loads(record.read_text())
                except (OSError, ValueError):
                    saved = {}
                if saved.get("identity") == ident:
                    results.append(saved)
                    log(f"  fine-tuned {c.name} before: test {d.task.primary_metric} "
                        f"{saved['metrics'].get(d.task.primary_metric, float('nan')):.4f}")
                    continue
            t0 = time.perf_counter()
            plain = src.kind in ("pretrained", "scratch", "classifier") and not c.truncated
            model = src.spec if plain else str(_materialize(src, c.layer, max_length, seed))
            pooling = None if plain else src.pooling
            log(f"  fine-tuning {c.name} ({settings['strategy']}) [{i + 1}/{len(candidates)}]")
            try:
                run = fit(settings["data"], settings["strategy"], model, text=settings["text"], label=settings["label"],
                          task=settings["task"], test=settings["test"], n_per_class=settings["n_per_class"],
                          seed=seed, val_fraction=settings["val_fraction"], test_fraction=settings["test_fraction"],
                          max_test=settings["max_test"], pooling=pooling, max_length=max_length, epochs=epochs,
                          batch_size=batch_size, out=Path(work) / f"run-{i}", progress=False, log=_quiet)
            except ExaptError as e:
                raise ExaptError(f"--validate: fine-tuning {c.name}: {e}") from None
            seconds = time.perf_counter() - t0
            m = run.metrics
            if m.get("n_train") != len(d.train):   # fit must train on exactly what was scored
                raise ExaptError(f"--validate: fine-tuning {c.name} trained on {m.get('n_train')} examples, "
                                 f"but {len(d.train)} were scored")
            result = {"identity": ident, "candidate": c.name, "metrics": m["test"], "seconds": seconds,
                      "train_seconds": m.get("train_seconds"), "n_train": m.get("n_train"), "n_test": m.get("n_test"),
                      "model": model}
            shutil.rmtree(run.path, ignore_errors=True)
            del run
            if record is not None:
                from ..train.checkpoint import atomic_write_text

                atomic_write_text(record, json.dumps(result, indent=2) + "\n")
            log(f"    test {d.task.primary_metric} {m['test'].get(d.task.primary_metric, float('nan')):.4f} "
                f"in {seconds:.1f} s")
            results.append(result)
    return results


# ============================================================================ outputs
def write_outputs(out: Path, frame: pd.DataFrame, tau: pd.DataFrame | None, meta: dict) -> dict[str, Path]:
    """rank.csv, tau.csv (with validation), rank.png, rank.md, rank.json; each written atomically."""
    from ..train.checkpoint import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"csv": out / "rank.csv", "png": out / "rank.png", "md": out / "rank.md", "json": out / META}
    atomic_write_text(files["csv"], frame.to_csv(index=False))
    if tau is not None:
        files["tau"] = out / "tau.csv"
        atomic_write_text(files["tau"], tau.to_csv(index=False))
    else:
        (out / "tau.csv").unlink(missing_ok=True)   # from an earlier --validate: no longer this table's
    _atomic_bytes(files["png"], figure_png(frame, meta))
    atomic_write_text(files["md"], markdown(frame, tau, meta))
    clean = json.loads(json.dumps(meta, default=str))
    if tau is not None:
        clean["tau"] = json.loads(tau.to_json(orient="records"))
    atomic_write_text(files["json"], json.dumps(clean, indent=2) + "\n")
    return files


_KIND_COLOURS = {"pretrained": "#3465a4", "classifier": "#75507b", "run": "#4e9a06", "scratch": "#a0a0a0"}


def _mpl(text) -> str:
    return str(text).replace("$", r"\$")


def _short(name: str, width: int = 34) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]


def figure_png(frame: pd.DataFrame, meta: dict) -> bytes:
    """One panel per score (and the test metric, with validation): candidates sorted, best on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(s, s) for s in meta["scores"]]
    metric = meta.get("metric", "accuracy")
    if f"test_{metric}" in frame.columns:
        panels.append((f"test_{metric}", f"test {metric} ({meta.get('strategy', '')})"))
    n = len(panels)
    cols = min(n, 3)
    nrows = math.ceil(n / cols)
    height = max(2.2, 0.28 * len(frame) + 1.2)
    with plt.rc_context({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False}):
        fig, axes = plt.subplots(nrows, cols, figsize=(4.4 * cols, height * nrows), squeeze=False)
        for ax, (col, title) in zip(axes.ravel(), panels):
            lower_better = col.startswith("test_") and metric == "rmse"
            s = frame.set_index("candidate")[col].astype(float).dropna()
            s = s.sort_values(ascending=not lower_better)            # barh draws bottom-up: best on top
            kinds = frame.set_index("candidate").loc[s.index, "kind"]
            if len(s):
                lo, hi = float(s.min()), float(s.max())
                span = (hi - lo) or (abs(hi) or 1.0)
                base = lo - 0.15 * span
                ax.barh(range(len(s)), s.to_numpy() - base, left=base,
                        color=[_KIND_COLOURS.get(k, "#3465a4") for k in kinds])
                for i, v in enumerate(s.to_numpy()):
                    ax.text(v, i, f" {v:.3g}", va="center", fontsize=8)
                ax.set_xlim(base, hi + 0.25 * span)
                ax.set_yticks(range(len(s)))
                ax.set_yticklabels([_mpl(_short(c)) for c in s.index])
            else:
                ax.text(0.5, 0.5, "no candidate has this score", ha="center", va="center", transform=ax.transAxes)
                ax.set_yticks([])
            ax.set_title(_mpl(title) + (" (lower is better)" if lower_better else ""))
        for ax in axes.ravel()[n:]:
            ax.axis("off")
        from matplotlib.patches import Patch

        kinds = [k for k in _KIND_COLOURS if k in set(frame["kind"])]
        if len(kinds) > 1:
            fig.legend(handles=[Patch(color=_KIND_COLOURS[k], label=k) for k in kinds], loc="lower right",
                       ncol=len(kinds), frameon=False, fontsize=8)
        fig.tight_layout(rect=(0, 0.04 if len(kinds) > 1 else 0, 1, 1))
        return png_bytes(fig)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)) or v is pd.NA:
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return str(v)


def markdown(frame: pd.DataFrame, tau: pd.DataFrame | None, meta: dict) -> str:
    s = meta["settings"]
    scores = meta["scores"]
    metric = meta.get("metric", "accuracy")
    lines = ["# exapt rank", "",
             f"Data: `{s['data']}`" + (f", test `{s['test']}`" if s.get("test") else "")
             + f"; {meta['n_train']} scored training examples ({meta['task']}"
             + (f": {', '.join(map(str, meta['classes']))}" if meta.get("classes") else "") + f"); seed {s['seed']}, "
             f"max length {s['max_length']}.", "",
             "Scores are computed on frozen features (pooled hidden state after the candidate's last layer); "
             "higher is better for every score; rank 1 = best.", "",
             "![scores](rank.png)", ""]
    head = ["candidate"] + [f"{x} (rank)" for x in scores]
    validated = f"test_{metric}" in frame.columns
    if validated:
        head.append(f"test {metric} (rank)")
    head.append("scoring s")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in frame.iterrows():
        cells = [f"`{r['candidate']}`"] + [f"{_fmt(r[x])} ({_fmt(r[x + '_rank'])})" for x in scores]
        if validated:
            cells.append(f"{_fmt(r[f'test_{metric}'])} ({_fmt(r[f'test_{metric}_rank'])})")
        cells.append(f"{r['score_seconds']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for x in scores:
        ok = frame[x].notna()
        if ok.any():
            lines.append(f"- best by {x}: `{frame.loc[frame.loc[ok, x].idxmax(), 'candidate']}`")
    missing = [x for x in scores if frame[x].isna().any()]
    if missing:
        lines += ["", f"n/a: {', '.join(missing)} need a source classifier (a run of a classification fit or a "
                  "...ForSequenceClassification checkpoint, at its last layer); other candidates have none."]
    if tau is not None:
        lines += ["", f"## Scores against fine-tuning ({meta.get('strategy')})", "",
                  f"Each candidate fine-tuned with `{meta.get('strategy')}` on the same {meta['n_train']} examples, "
                  f"tested on {meta['n_test']} held-out examples. Weighted Kendall tau (Vigna 2015, hyperbolic "
                  "weights: the top of the ranking counts most) between each score and the test "
                  f"{metric}: 1 = the same order, -1 = reversed.", "",
                  "| score | weighted tau | Kendall tau | picks | its test " + metric + " | best |",
                  "|---|---|---|---|---|---|"]
        for _, r in tau.iterrows():
            lines.append(f"| {r['score']} | {_fmt(r['weighted_tau'])} | {_fmt(r['kendall_tau'])} | `{r['pick']}` | "
                         f"{_fmt(r[f'pick_test_{metric}'])} | `{r['best']}` ({_fmt(r[f'best_test_{metric}'])}) |")
        ratio = meta.get("rank_to_finetune_ratio")
        lines += ["", f"Ranking took {meta['rank_seconds']:.1f} s; fine-tuning every candidate "
                  f"{meta['finetune_seconds']:.1f} s" + (f" (ranking = {ratio:.1%} of it)." if ratio else ".")]
    else:
        lines += ["", f"Ranking took {meta['rank_seconds']:.1f} s. `exapt rank --validate --strategy S` also "
                  "fine-tunes each candidate and reports how well each score predicted the accuracy reached."]
    return "\n".join(lines) + "\n"
